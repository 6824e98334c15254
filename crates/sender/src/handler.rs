//! Translates an SQS batch into core send jobs and their results into a partial batch
//! response: a message that must be tried again is a batch item failure; a malformed one is
//! recorded and acknowledged, and never takes the rest of its batch down with it.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use hikyaku_aws::dynamodb::{
    DynamoBudget, DynamoCampaigns, DynamoContacts, DynamoLedger, DynamoRejects, DynamoRuns,
    DynamoSuppressions,
};
use hikyaku_aws::lambda::InvocationClock;
use hikyaku_aws::ses::{SesAccount, SesSender};
use hikyaku_aws::sqs::SqsJobQueue;
use hikyaku_core::job::SendJob;
use hikyaku_core::ports::{RejectLog, RejectedInput};
use hikyaku_core::send::{
    CampaignCache, JobContext, JobError, JobReport, SendPorts, SendSettings, Throttle, process_job,
};
use lambda_runtime::{Error, LambdaEvent};

pub(crate) struct Deps {
    pub campaigns: DynamoCampaigns,
    pub runs: DynamoRuns,
    pub ledger: DynamoLedger,
    pub rejects: DynamoRejects,
    pub suppressions: DynamoSuppressions,
    pub contacts: DynamoContacts,
    pub budget: DynamoBudget,
    pub account: SesAccount,
    pub sender: SesSender,
    pub queue: SqsJobQueue,
    pub throttle: Throttle,
    pub cache: CampaignCache,
    pub settings: SendSettings,
}

/// What became of one SQS message.
#[derive(Debug, PartialEq)]
pub(crate) enum Disposition {
    Done(JobReport),
    /// Unusable input, recorded for the operator and acknowledged.
    Rejected(String),
    /// Deliver again: a batch item failure.
    Retry(String),
}

pub(crate) async fn handle_message(
    ports: &SendPorts<'_>,
    rejects: &dyn RejectLog,
    deps_settings: (&SendSettings, &Throttle, &CampaignCache),
    message: &SqsMessage,
    request_id: &str,
    time_left: &(dyn Fn() -> Duration + Send + Sync),
) -> Disposition {
    let (settings, throttle, cache) = deps_settings;
    let message_id = message.message_id.clone().unwrap_or_default();
    let body = message.body.as_deref().unwrap_or_default();
    let rejected = match SendJob::from_body(body) {
        Ok(job) => {
            let token = format!("{request_id}:{message_id}");
            let ctx = JobContext {
                token: &token,
                time_left,
                now: &chrono::Utc::now,
            };
            match process_job(ports, settings, throttle, cache, job, &ctx).await {
                Ok(report) => return Disposition::Done(report),
                Err(JobError::Retry(failure)) => return Disposition::Retry(failure.to_string()),
                Err(JobError::Reject(rejection)) => rejection.to_string(),
            }
        }
        Err(err) => err.to_string(),
    };
    tracing::error!(message_id = %message_id, reason = %rejected, "send job rejected");
    let record = RejectedInput::new(
        "send-queue",
        message_id,
        rejected.clone(),
        body,
        chrono::Utc::now(),
    );
    match rejects.record(&record).await {
        Ok(()) => Disposition::Rejected(rejected),
        // Not recorded: let SQS deliver it again, and after its receive limit the
        // dead-letter queue keeps it.
        Err(err) => Disposition::Retry(format!("rejected input not recorded: {err}")),
    }
}

pub(crate) async fn function_handler(
    deps: &Deps,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let (event, context) = event.into_parts();
    let ports = SendPorts {
        campaigns: &deps.campaigns,
        runs: &deps.runs,
        ledger: &deps.ledger,
        suppressions: &deps.suppressions,
        contacts: &deps.contacts,
        sender: &deps.sender,
        queue: &deps.queue,
        budget: &deps.budget,
        account: &deps.account,
    };
    let clock = InvocationClock::new(context.deadline);
    let time_left = move || clock.time_left();
    tracing::info!(
        messages = event.records.len(),
        deadline_ms = context.deadline,
        time_left_ms = time_left().as_millis() as u64,
        "batch received"
    );
    let results = join_all(event.records.iter().map(|message| {
        handle_message(
            &ports,
            &deps.rejects,
            (&deps.settings, &deps.throttle, &deps.cache),
            message,
            &context.request_id,
            &time_left,
        )
    }))
    .await;
    Ok(batch_response(&event.records, results))
}

pub(crate) fn batch_response(
    records: &[SqsMessage],
    results: Vec<Disposition>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (message, disposition) in records.iter().zip(results) {
        let id = message.message_id.clone().unwrap_or_default();
        match disposition {
            Disposition::Done(report) => {
                tracing::info!(message_id = %id, sent = report.sent, failed = report.failed, suppressed = report.suppressed, already_done = report.already_done, uncertain = report.uncertain, requeued = report.requeued, held = report.held, cancelled = report.cancelled, missed_slots = report.missed_slots, max_lateness_ms = report.max_lateness_ms, "job done");
            }
            Disposition::Rejected(_) => {}
            Disposition::Retry(reason) => {
                tracing::warn!(message_id = %id, reason = %reason, "job to be delivered again");
                response.add_failure(id);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use hikyaku_core::campaign::CampaignDefinition;
    use hikyaku_core::fakes::*;
    use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
    use hikyaku_core::ports::{CampaignStore, RunStore};
    use hikyaku_core::run::{RunRecord, RunState};

    const CAMPAIGN: &str = r#"
id = "winter-newsletter"
list = "newsletter"
subject = "Hello {{first_name}}"
html = "<p>{{first_name}} in {{city}}</p>"
[from]
address = "news@hikyaku.example"
"#;

    struct World {
        campaigns: FakeCampaigns,
        runs: FakeRuns,
        ledger: FakeLedger,
        suppressions: FakeSuppressions,
        contacts: FakeContacts,
        sender: FakeSender,
        queue: FakeQueue,
        budget: FakeBudgetStore,
        account: FakeAccount,
        rejects: FakeRejects,
        settings: SendSettings,
        throttle: Throttle,
        cache: CampaignCache,
    }

    impl World {
        async fn new() -> World {
            let world = World {
                campaigns: FakeCampaigns::default(),
                runs: FakeRuns::default(),
                ledger: FakeLedger::default(),
                suppressions: FakeSuppressions::default(),
                contacts: FakeContacts::default(),
                sender: FakeSender::default(),
                queue: FakeQueue::default(),
                budget: FakeBudgetStore::default(),
                account: FakeAccount::default(),
                rejects: FakeRejects::default(),
                settings: SendSettings::default(),
                throttle: Throttle::new(4),
                cache: CampaignCache::default(),
            };
            let definition = CampaignDefinition::from_toml_str(CAMPAIGN, None).unwrap();
            world.campaigns.create(&definition).await.unwrap();
            let run = RunRef::new(
                CampaignId::parse("winter-newsletter").unwrap(),
                RunId::parse("20261224T090000Z").unwrap(),
            );
            let mut record = RunRecord::new(
                run,
                ListId::parse("newsletter").unwrap(),
                chrono::Utc::now(),
            );
            record.state = RunState::Sending;
            world.runs.start(&record).await.unwrap();
            world
        }

        async fn handle(&self, fixture: &str) -> (Vec<SqsMessage>, Vec<Disposition>) {
            let event: SqsEvent = serde_json::from_str(fixture).expect("fixture is an SQS event");
            let ports = SendPorts {
                campaigns: &self.campaigns,
                runs: &self.runs,
                ledger: &self.ledger,
                suppressions: &self.suppressions,
                contacts: &self.contacts,
                sender: &self.sender,
                queue: &self.queue,
                budget: &self.budget,
                account: &self.account,
            };
            let time_left = || Duration::from_secs(600);
            let mut results = Vec::new();
            for message in &event.records {
                results.push(
                    handle_message(
                        &ports,
                        &self.rejects,
                        (&self.settings, &self.throttle, &self.cache),
                        message,
                        "req-1",
                        &time_left,
                    )
                    .await,
                );
            }
            (event.records, results)
        }
    }

    #[tokio::test]
    async fn when_a_batch_holds_two_jobs_then_all_three_recipients_are_sent() {
        let world = World::new().await;
        let (records, results) = world
            .handle(include_str!("../../../events/sender/two-jobs.json"))
            .await;
        assert!(results.iter().all(|d| matches!(d, Disposition::Done(_))));
        assert_eq!(world.sender.sent_to().len(), 3);
        assert!(
            batch_response(&records, results)
                .batch_item_failures
                .is_empty()
        );
    }

    #[tokio::test]
    async fn when_a_body_is_malformed_then_it_is_recorded_and_the_rest_is_sent() {
        let world = World::new().await;
        let (records, results) = world
            .handle(include_str!(
                "../../../events/sender/malformed-amid-good.json"
            ))
            .await;
        assert!(matches!(results[0], Disposition::Done(_)));
        assert!(
            matches!(&results[1], Disposition::Rejected(why) if why.contains("not a send job"))
        );
        assert!(matches!(results[2], Disposition::Done(_)));
        assert_eq!(world.sender.sent_to().len(), 2);
        let rejected = world.rejects.rejected.lock().unwrap().clone();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].id, "1b0c8f6e-0000-4000-8000-000000000002");
        // Recorded and acknowledged: not a batch item failure.
        assert!(
            batch_response(&records, results)
                .batch_item_failures
                .is_empty()
        );
    }

    #[tokio::test]
    async fn when_recipients_cannot_be_put_back_then_only_their_message_fails() {
        let world = World::new().await;
        *world.sender.throttle_every.lock().unwrap() = Some(1);
        *world.queue.fail_after_calls.lock().unwrap() = Some(0);
        let (records, results) = world
            .handle(include_str!("../../../events/sender/two-jobs.json"))
            .await;
        let response = batch_response(&records, results);
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(
            failed,
            vec![
                "059f36b4-87a3-44ab-83d2-661975830a7d".to_owned(),
                "2e1424d4-f796-459a-8184-9c92662be6da".to_owned()
            ]
        );
    }
}
