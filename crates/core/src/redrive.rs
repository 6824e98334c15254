//! `resend-failed`: a new attempt for a run's recipients that failed for a transient reason.
//!
//! Such recipients are the ones of jobs the dead-letter queue holds: a transient failure
//! (throttling, an outage, a store that would not answer) puts a job back on the queue, and
//! after the redrive policy's receive count SQS moves it to the dead-letter queue. A permanent
//! failure is never there: it is recorded `failed` in the ledger. So the run's dead letters go
//! back to the send queue, each as a first attempt; the ledger keeps the sender from sending
//! to anyone already `sent`, `suppressed`, `failed`, `uncertain` or `cancelled`.

use async_trait::async_trait;
use serde::Serialize;

use crate::ids::RunRef;
use crate::job::SendJob;
use crate::ports::{JobQueue, QueueError};

/// A message received from the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub body: String,
    /// What deletes or releases it.
    pub receipt: String,
}

#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to 10 messages, hidden from other readers for a while; empty when none came.
    async fn receive(&self) -> Result<Vec<DeadLetter>, QueueError>;
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
    /// Makes a message visible again at once.
    async fn release(&self, receipt: &str) -> Result<(), QueueError>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// The run's jobs put back on the send queue.
    pub jobs: u64,
    /// Their recipients.
    pub recipients: u64,
    /// Dead letters of other runs, left where they were.
    pub other_runs: u64,
    /// Dead letters that are no readable job, left for a person to look at.
    pub unreadable: u64,
}

/// Empty answers in a row that end the reading: SQS may answer empty while a few remain.
const EMPTY_ANSWERS: u32 = 2;

/// Moves `run`'s dead letters back to `queue`, each enqueued before it is deleted (a crash in
/// between leaves a copy in both, which the ledger makes harmless).
pub async fn resend_failed(
    dead_letters: &dyn DeadLetters,
    queue: &dyn JobQueue,
    run: &RunRef,
) -> Result<Redriven, QueueError> {
    let mut redriven = Redriven::default();
    let mut left = Vec::new();
    let mut empty = 0;
    let outcome = loop {
        let letters = match dead_letters.receive().await {
            Ok(letters) => letters,
            Err(err) => break Err(err),
        };
        if letters.is_empty() {
            empty += 1;
            if empty >= EMPTY_ANSWERS {
                break Ok(());
            }
            continue;
        }
        empty = 0;
        let mut failed = None;
        for letter in letters {
            let job = match SendJob::from_body(&letter.body) {
                Ok(job) => job,
                Err(err) => {
                    tracing::warn!(error = %err, "unreadable dead letter left in place");
                    redriven.unreadable += 1;
                    left.push(letter.receipt);
                    continue;
                }
            };
            if &job.run() != run {
                redriven.other_runs += 1;
                left.push(letter.receipt);
                continue;
            }
            let again = SendJob::new(run, 0, job.recipients);
            if let Err(err) = queue.enqueue(std::slice::from_ref(&again)).await {
                left.push(letter.receipt);
                failed = Some(err);
                break;
            }
            if let Err(err) = dead_letters.delete(&letter.receipt).await {
                failed = Some(err);
                break;
            }
            redriven.jobs += 1;
            redriven.recipients += again.recipients.len() as u64;
        }
        if let Some(err) = failed {
            break Err(err);
        }
    };
    // What is not this run's goes back as it was, for the next reader.
    for receipt in &left {
        if let Err(err) = dead_letters.release(receipt).await {
            tracing::warn!(error = %err, "dead letter not released; it reappears after its timeout");
        }
    }
    outcome.map(|()| redriven)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::EmailAddress;
    use crate::fakes::FakeQueue;
    use crate::ids::{CampaignId, RunId};
    use crate::job::JobRecipient;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeDeadLetters {
        /// (body, receipt, visible)
        letters: Mutex<Vec<(String, String, bool)>>,
        deleted: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl DeadLetters for FakeDeadLetters {
        async fn receive(&self) -> Result<Vec<DeadLetter>, QueueError> {
            let mut letters = self.letters.lock().unwrap();
            Ok(letters
                .iter_mut()
                .filter(|(_, _, visible)| *visible)
                .take(10)
                .map(|(body, receipt, visible)| {
                    *visible = false;
                    DeadLetter {
                        body: body.clone(),
                        receipt: receipt.clone(),
                    }
                })
                .collect())
        }
        async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
            self.letters
                .lock()
                .unwrap()
                .retain(|(_, r, _)| r != receipt);
            self.deleted.lock().unwrap().push(receipt.to_owned());
            Ok(())
        }
        async fn release(&self, receipt: &str) -> Result<(), QueueError> {
            for letter in self.letters.lock().unwrap().iter_mut() {
                if letter.1 == receipt {
                    letter.2 = true;
                }
            }
            Ok(())
        }
    }

    fn run(campaign: &str) -> RunRef {
        RunRef::new(
            CampaignId::parse(campaign).unwrap(),
            RunId::parse("20261224T090000Z").unwrap(),
        )
    }

    fn job(run: &RunRef, n: usize, attempt: u32) -> String {
        let recipients = (0..n)
            .map(|i| JobRecipient {
                email: EmailAddress::parse(&format!("r{i}@example.com")).unwrap(),
                attributes: Default::default(),
                position: None,
            })
            .collect();
        SendJob::new(run, attempt, recipients).to_body()
    }

    #[tokio::test]
    async fn only_the_runs_dead_letters_go_back_as_first_attempts() {
        let ours = run("winter");
        let dead = FakeDeadLetters::default();
        {
            let mut letters = dead.letters.lock().unwrap();
            for i in 0..23 {
                letters.push((job(&ours, 3, 7), format!("ours-{i}"), true));
            }
            letters.push((job(&run("spring"), 2, 1), "theirs".into(), true));
            letters.push(("{not a job".into(), "garbage".into(), true));
        }
        let queue = FakeQueue::default();
        let redriven = resend_failed(&dead, &queue, &ours).await.unwrap();
        assert_eq!(
            redriven,
            Redriven {
                jobs: 23,
                recipients: 69,
                other_runs: 1,
                unreadable: 1
            }
        );
        let jobs = queue.take_jobs();
        assert_eq!(jobs.len(), 23);
        assert!(jobs.iter().all(|j| j.attempt == 0 && j.run() == ours));
        // The others are still there, visible again.
        let letters = dead.letters.lock().unwrap();
        assert_eq!(letters.len(), 2);
        assert!(letters.iter().all(|(_, _, visible)| *visible));
        assert_eq!(dead.deleted.lock().unwrap().len(), 23);
    }
}
