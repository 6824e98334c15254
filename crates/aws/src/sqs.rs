//! [`JobQueue`] on an SQS queue: send jobs as message bodies, in batches SQS accepts.
//!
//! SendMessageBatch takes at most 10 entries and 1 MiB (1,048,576 bytes) of bodies in all, and
//! answers HTTP 200 even when some entries fail: every `Failed` entry is looked at. Entries
//! failed by the service (`SenderFault = false`) and calls failed for a retryable reason are
//! tried again with [`Backoff`]; entries the service calls the sender's fault would fail the
//! same way again and are not.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use hikyaku_core::job::SendJob;
use hikyaku_core::ports::{JobQueue, QueueError};

use crate::error::{service_message, status_of, status_retryable, transport_retryable};
use crate::retry::Backoff;

/// SendMessageBatch's limit on entries per call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// SendMessageBatch's limit on the sum of the bodies of one call, and on one body.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// SQS's longest message delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// The send queue.
#[derive(Clone, Debug)]
pub struct SqsJobQueue {
    client: Client,
    queue_url: String,
    backoff: Backoff,
}

/// Why some entries of a batch were not sent.
struct BatchFailure {
    unsent: usize,
    reason: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// An SQS call's error, classified by type: throttling (`RequestThrottled`, `KmsThrottled`),
/// timeouts, connection failures and 5xx are worth retrying; a missing queue, KMS or
/// permission problems and malformed requests are not.
fn classify<E>(
    err: SdkError<E, HttpResponse>,
) -> (bool, String, Box<dyn std::error::Error + Send + Sync>)
where
    E: std::error::Error + Send + Sync + 'static,
    aws_sdk_sqs::Error: From<SdkError<E, HttpResponse>>,
{
    use aws_sdk_sqs::Error as Sqs;

    if let Some(retryable) = transport_retryable(&err) {
        return (
            retryable,
            DisplayErrorContext(&err).to_string(),
            Box::new(err),
        );
    }
    let status = status_of(&err);
    let service = Sqs::from(err);
    let retryable = match &service {
        Sqs::RequestThrottled(_) | Sqs::KmsThrottled(_) => true,
        Sqs::QueueDoesNotExist(_)
        | Sqs::InvalidAddress(_)
        | Sqs::InvalidSecurity(_)
        | Sqs::UnsupportedOperation(_)
        | Sqs::KmsAccessDenied(_)
        | Sqs::KmsDisabled(_)
        | Sqs::KmsInvalidKeyUsage(_)
        | Sqs::KmsInvalidState(_)
        | Sqs::KmsNotFound(_)
        | Sqs::KmsOptInRequired(_)
        | Sqs::InvalidMessageContents(_)
        | Sqs::BatchEntryIdsNotDistinct(_)
        | Sqs::BatchRequestTooLong(_)
        | Sqs::EmptyBatchRequest(_)
        | Sqs::InvalidBatchEntryId(_)
        | Sqs::TooManyEntriesInBatchRequest(_) => false,
        _ => status_retryable(status),
    };
    (retryable, service_message(&service), Box::new(service))
}

/// Splits bodies into consecutive batches of at most 10 entries and 1 MiB; `Err(index)` names
/// a body that is too large to send at all.
fn batches(bodies: &[String]) -> Result<Vec<Range<usize>>, usize> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, body) in bodies.iter().enumerate() {
        if body.len() > MAX_BATCH_BYTES {
            return Err(index);
        }
        if index - start == MAX_BATCH_ENTRIES || bytes + body.len() > MAX_BATCH_BYTES {
            batches.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        batches.push(start..bodies.len());
    }
    Ok(batches)
}

impl SqsJobQueue {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// SendMessageBatch is authorised by `sqs:SendMessage`. `OPERATIONS` is kept true by a test
    /// that reads this module's source.
    pub const OPERATIONS: &[&str] = &["sqs:SendMessage"];

    /// The queue at `queue_url`, with the default [`Backoff`] for refused entries.
    pub fn new(client: Client, queue_url: impl Into<String>) -> SqsJobQueue {
        SqsJobQueue {
            client,
            queue_url: queue_url.into(),
            backoff: Backoff::default(),
        }
    }

    /// Replaces the backoff used for refused entries and retryable errors.
    pub fn with_backoff(mut self, backoff: Backoff) -> SqsJobQueue {
        self.backoff = backoff;
        self
    }

    /// Sends `bodies[batch]`, entry ids being the bodies' indexes (unique within the call).
    async fn send_batch(&self, bodies: &[String], batch: Range<usize>) -> Result<(), BatchFailure> {
        let mut pending: Vec<usize> = batch.collect();
        let mut given_up = 0;
        let mut reason = String::new();
        let mut source = None;
        for retry in 0..=self.backoff.retries {
            if retry > 0 {
                self.backoff.wait(retry).await;
            }
            let entries = pending
                .iter()
                .map(|&index| {
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(&bodies[index])
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| BatchFailure {
                    unsent: pending.len() + given_up,
                    reason: err.to_string(),
                    source: Some(Box::new(err)),
                })?;
            let result = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(output) => {
                    let mut refused = Vec::new();
                    for failed in output.failed() {
                        reason = format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or("no message")
                        );
                        source = None;
                        match failed.id().parse::<usize>() {
                            Ok(index) if pending.contains(&index) && !failed.sender_fault() => {
                                refused.push(index)
                            }
                            Ok(index) if pending.contains(&index) => given_up += 1,
                            _ => tracing::warn!(
                                id = failed.id(),
                                "SQS reported a failed entry it was not sent"
                            ),
                        }
                    }
                    pending = refused;
                    if pending.is_empty() {
                        break;
                    }
                    tracing::debug!(refused = pending.len(), retry, code = %reason, "SQS refused entries");
                }
                Err(err) => {
                    let (retryable, message, cause) = classify(err);
                    reason = message;
                    source = Some(cause);
                    if !retryable {
                        break;
                    }
                    tracing::debug!(retry, error = %reason, "SendMessageBatch failed; retrying");
                }
            }
        }
        let unsent = pending.len() + given_up;
        if unsent == 0 {
            Ok(())
        } else {
            Err(BatchFailure {
                unsent,
                reason,
                source,
            })
        }
    }
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    /// Batches of ≤ 10 entries and ≤ 1 MiB, sent in order. The first batch that cannot be
    /// sent whole ends the call with an error counting the jobs not enqueued (that batch's
    /// unsent entries and every later job).
    #[tracing::instrument(skip_all, fields(jobs = jobs.len()), err)]
    async fn enqueue(&self, jobs: &[SendJob]) -> Result<(), QueueError> {
        let bodies: Vec<String> = jobs.iter().map(SendJob::to_body).collect();
        let batches = batches(&bodies).map_err(|index| QueueError {
            message: format!(
                "job {} of run {} is {} bytes; an SQS message holds at most {MAX_BATCH_BYTES}",
                index + 1,
                jobs[index].run(),
                bodies[index].len()
            ),
            source: None,
        })?;
        for batch in batches {
            let later = bodies.len() - batch.end;
            if let Err(failure) = self.send_batch(&bodies, batch).await {
                return Err(QueueError {
                    message: format!(
                        "{} of {} jobs could not be enqueued: {}",
                        failure.unsent + later,
                        jobs.len(),
                        failure.reason
                    ),
                    source: failure.source,
                });
            }
        }
        Ok(())
    }

    /// SendMessage with `DelaySeconds` = `delay` clamped to 0..=900, retrying retryable errors
    /// with [`Backoff`].
    #[tracing::instrument(skip_all, fields(run = %job.run(), recipients = job.recipients.len(), delay_s = delay.as_secs()), err)]
    async fn enqueue_delayed(&self, job: &SendJob, delay: Duration) -> Result<(), QueueError> {
        let body = job.to_body();
        let delay_seconds = i32::try_from(delay.min(MAX_DELAY).as_secs()).unwrap_or(900);
        let mut retry = 0;
        loop {
            let result = self
                .client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(&body)
                .delay_seconds(delay_seconds)
                .send()
                .await;
            let Err(err) = result else {
                return Ok(());
            };
            let (retryable, message, source) = classify(err);
            if !retryable || retry >= self.backoff.retries {
                return Err(QueueError {
                    message: format!("the job could not be enqueued: {message}"),
                    source: Some(source),
                });
            }
            retry += 1;
            self.backoff.wait(retry).await;
        }
    }
}

/// The send queue's dead-letter queue, read by `resend-failed`.
#[derive(Clone, Debug)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
}

/// How long a received dead letter stays hidden while `resend-failed` works on it.
const DEAD_LETTER_HOLD_SECS: i32 = 120;

impl SqsDeadLetters {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &[
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:ReceiveMessage",
    ];

    pub fn new(client: Client, queue_url: impl Into<String>) -> SqsDeadLetters {
        SqsDeadLetters {
            client,
            queue_url: queue_url.into(),
        }
    }
}

fn dead_letter_error<E>(operation: &str, err: SdkError<E, HttpResponse>) -> QueueError
where
    E: std::error::Error + Send + Sync + 'static,
    aws_sdk_sqs::Error: From<SdkError<E, HttpResponse>>,
{
    let (_, message, source) = classify(err);
    QueueError {
        message: format!("{operation} on the dead-letter queue: {message}"),
        source: Some(source),
    }
}

#[async_trait]
impl hikyaku_core::redrive::DeadLetters for SqsDeadLetters {
    async fn receive(&self) -> Result<Vec<hikyaku_core::redrive::DeadLetter>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(DEAD_LETTER_HOLD_SECS)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|err| dead_letter_error("ReceiveMessage", err))?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|m| {
                Some(hikyaku_core::redrive::DeadLetter {
                    body: m.body()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|err| dead_letter_error("DeleteMessage", err))?;
        Ok(())
    }

    async fn release(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|err| dead_letter_error("ChangeMessageVisibility", err))?;
        Ok(())
    }
}

/// The queues themselves, read by the preflight check: how many messages wait.
#[derive(Clone, Debug)]
pub struct SqsQueues {
    client: Client,
}

impl SqsQueues {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["sqs:GetQueueAttributes"];

    pub fn new(client: Client) -> SqsQueues {
        SqsQueues { client }
    }

    /// Visible, in-flight and delayed messages of the queue at `url`.
    pub async fn depth(&self, url: &str) -> hikyaku_core::doctor::Probe<u64> {
        use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let counted = [
            Name::ApproximateNumberOfMessages,
            Name::ApproximateNumberOfMessagesNotVisible,
            Name::ApproximateNumberOfMessagesDelayed,
        ];
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(counted.to_vec()))
            .send()
            .await;
        match answer {
            Ok(output) => {
                let attributes = output.attributes().cloned().unwrap_or_default();
                let depth = counted
                    .iter()
                    .filter_map(|name| attributes.get(name)?.parse::<u64>().ok())
                    .sum();
                hikyaku_core::doctor::Probe::Found(depth)
            }
            Err(err) => crate::error::probe_failure(err, |e| {
                matches!(e, GetQueueAttributesError::QueueDoesNotExist(_))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message::{SendMessageError, SendMessageOutput};
    use aws_sdk_sqs::operation::send_message_batch::{
        SendMessageBatchError, SendMessageBatchOutput,
    };
    use aws_sdk_sqs::types::BatchResultErrorEntry;
    use aws_sdk_sqs::types::error::{QueueDoesNotExist, RequestThrottled};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use hikyaku_core::contact::{AttrValue, Attributes};
    use hikyaku_core::email::EmailAddress;
    use hikyaku_core::ids::{CampaignId, RunId, RunRef};
    use hikyaku_core::job::JobRecipient;

    macro_rules! sqs_client {
        ($mode:expr, $($rule:expr),* $(,)?) => {
            mock_client!(aws_sdk_sqs, $mode, [$($rule),*], |config| config
                .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled()))
        };
    }

    fn job(i: usize, padding: usize) -> SendJob {
        let run = RunRef::new(
            CampaignId::parse("winter").unwrap(),
            RunId::parse("20261224T090000Z").unwrap(),
        );
        let mut attributes = Attributes::new();
        if padding > 0 {
            attributes.insert("note".into(), AttrValue::Str("x".repeat(padding)));
        }
        SendJob::new(
            &run,
            0,
            vec![JobRecipient {
                email: EmailAddress::parse(&format!("r{i}@example.com")).unwrap(),
                attributes,
                position: None,
            }],
        )
    }

    fn jobs(count: usize) -> Vec<SendJob> {
        (0..count).map(|i| job(i, 0)).collect()
    }

    fn failed(id: &str, sender_fault: bool) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .sender_fault(sender_fault)
            .code("InternalError")
            .message("try again")
            .build()
            .unwrap()
    }

    fn output(failed: Vec<BatchResultErrorEntry>) -> SendMessageBatchOutput {
        SendMessageBatchOutput::builder()
            .set_successful(Some(Vec::new()))
            .set_failed(Some(failed))
            .build()
            .unwrap()
    }

    fn queue(client: Client) -> SqsJobQueue {
        SqsJobQueue::new(client, "https://sqs.example/123/send").with_backoff(Backoff::immediate(3))
    }

    fn entry_ids(
        req: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput,
    ) -> Vec<&str> {
        req.entries().iter().map(|entry| entry.id()).collect()
    }

    #[tokio::test]
    async fn when_some_entries_fail_then_only_they_are_sent_again() {
        let partial = mock!(Client::send_message_batch)
            .match_requests(|req| entry_ids(req) == ["0", "1", "2"])
            .then_output(|| output(vec![failed("1", false)]));
        let retry = mock!(Client::send_message_batch)
            .match_requests(|req| entry_ids(req) == ["1"])
            .then_output(|| output(Vec::new()));
        let queue = queue(sqs_client!(RuleMode::Sequential, &partial, &retry));

        queue.enqueue(&jobs(3)).await.unwrap();

        assert_eq!(partial.num_calls(), 1);
        assert_eq!(retry.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_entries_keep_failing_then_the_error_counts_the_jobs_not_enqueued() {
        let refuse = mock!(Client::send_message_batch).then_compute_output(|req| {
            output(
                req.entries()
                    .iter()
                    .map(|entry| failed(entry.id(), false))
                    .collect(),
            )
        });
        let queue = queue(sqs_client!(RuleMode::MatchAny, &refuse));

        let err = queue.enqueue(&jobs(13)).await.unwrap_err();

        // The first batch of 10 never goes through; the 3 after it are not attempted.
        assert!(err.message.contains("13 of 13 jobs"), "{err}");
        assert!(err.message.contains("InternalError"), "{err}");
        assert_eq!(refuse.num_calls(), 4);
    }

    #[tokio::test]
    async fn when_an_entry_is_the_senders_fault_then_it_is_not_retried() {
        let refuse =
            mock!(Client::send_message_batch).then_output(|| output(vec![failed("0", true)]));
        let queue = queue(sqs_client!(RuleMode::MatchAny, &refuse));

        let err = queue.enqueue(&jobs(2)).await.unwrap_err();

        assert!(err.message.contains("1 of 2 jobs"), "{err}");
        assert_eq!(refuse.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_sqs_throttles_the_call_then_it_is_retried() {
        let throttled = mock!(Client::send_message_batch).then_error(|| {
            SendMessageBatchError::RequestThrottled(RequestThrottled::builder().build())
        });
        let accepted = mock!(Client::send_message_batch).then_output(|| output(Vec::new()));
        let queue = queue(sqs_client!(RuleMode::Sequential, &throttled, &accepted));

        queue.enqueue(&jobs(4)).await.unwrap();

        assert_eq!(accepted.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_the_queue_does_not_exist_then_enqueue_fails_at_once() {
        let missing = mock!(Client::send_message_batch).then_error(|| {
            SendMessageBatchError::QueueDoesNotExist(QueueDoesNotExist::builder().build())
        });
        let queue = queue(sqs_client!(RuleMode::MatchAny, &missing));

        let err = queue.enqueue(&jobs(2)).await.unwrap_err();

        assert!(err.message.contains("2 of 2 jobs"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(missing.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_there_are_more_than_10_jobs_then_they_go_in_batches_of_10() {
        let accept = mock!(Client::send_message_batch)
            .match_requests(|req| req.entries().len() <= MAX_BATCH_ENTRIES)
            .then_output(|| output(Vec::new()));
        let queue = queue(sqs_client!(RuleMode::MatchAny, &accept));

        queue.enqueue(&jobs(23)).await.unwrap();

        assert_eq!(accept.num_calls(), 3);
    }

    #[tokio::test]
    async fn when_bodies_are_large_then_batches_stay_within_1_mib() {
        let within = mock!(Client::send_message_batch)
            .match_requests(|req| {
                req.entries()
                    .iter()
                    .map(|entry| entry.message_body().len())
                    .sum::<usize>()
                    <= MAX_BATCH_BYTES
            })
            .then_output(|| output(Vec::new()));
        let queue = queue(sqs_client!(RuleMode::MatchAny, &within));
        let big: Vec<SendJob> = (0..5).map(|i| job(i, 300_000)).collect();

        queue.enqueue(&big).await.unwrap();

        assert_eq!(within.num_calls(), 2);
    }

    #[test]
    fn batches_split_at_10_entries_and_at_1_mib() {
        let small = vec!["x".to_owned(); 23];
        assert_eq!(batches(&small), Ok(vec![0..10, 10..20, 20..23]));
        let big = vec!["x".repeat(400_000); 5];
        assert_eq!(batches(&big), Ok(vec![0..2, 2..4, 4..5]));
        let exact = vec!["x".repeat(MAX_BATCH_BYTES / 2); 3];
        assert_eq!(batches(&exact), Ok(vec![0..2, 2..3]));
        let huge = vec!["x".to_owned(), "x".repeat(MAX_BATCH_BYTES + 1)];
        assert_eq!(batches(&huge), Err(1));
        assert_eq!(batches(&[]), Ok(vec![]));
    }

    #[tokio::test]
    async fn when_a_job_is_put_back_then_its_delay_is_clamped_to_15_minutes() {
        let delayed = mock!(Client::send_message)
            .match_requests(|req| req.delay_seconds() == Some(900))
            .then_output(|| SendMessageOutput::builder().build());
        let queue = queue(sqs_client!(RuleMode::Sequential, &delayed));

        queue
            .enqueue_delayed(&job(1, 0), Duration::from_secs(3600))
            .await
            .unwrap();

        assert_eq!(delayed.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_a_delayed_send_is_throttled_then_it_is_retried() {
        let throttled = mock!(Client::send_message)
            .then_error(|| SendMessageError::RequestThrottled(RequestThrottled::builder().build()));
        let accepted = mock!(Client::send_message)
            .match_requests(|req| req.delay_seconds() == Some(30))
            .then_output(|| SendMessageOutput::builder().build());
        let queue = queue(sqs_client!(RuleMode::Sequential, &throttled, &accepted));

        queue
            .enqueue_delayed(&job(1, 0), Duration::from_secs(30))
            .await
            .unwrap();

        assert_eq!(accepted.num_calls(), 1);
    }
}
