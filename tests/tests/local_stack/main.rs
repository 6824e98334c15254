//! Integration tests against the local stack: moto, the SES v2 emulator behind its fault
//! proxy, and the real Lambda binaries under `cargo lambda watch`. `make test` starts the
//! stack, runs these one at a time (`--test-threads=1`: they share the send queue) and stops
//! it. Each test seeds a list and campaign of its own and counts at the SES emulator's store.

mod budget;
mod canary;
#[path = "../support/chromium.rs"]
mod chromium;
mod cross_account;
mod doctor;
mod feedback;
mod frequency_cap;
mod helpers;
mod lifecycle;
mod report;
mod resend;
mod schedule;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use helpers::*;
use hikyaku_core::fanout::{FanoutError, FanoutPorts, FanoutRequest, FanoutSettings, fan_out};
use hikyaku_core::ids::RunRef;
use hikyaku_core::job::SendJob;
use hikyaku_core::ledger::DeliveryState;
use hikyaku_core::ports::{CampaignStore, ContactStore, JobQueue, Ledger, QueueError};
use hikyaku_local::pump::DuplicateDelivery;
use hikyaku_local::ses_proxy::Faults;

const LIMIT: Duration = Duration::from_secs(600);

/// Counts of a run's ledger, as the assertions read them.
fn states(status: &hikyaku_core::run::RunStatus) -> (u64, u64, u64, u64, u64) {
    let c = &status.counts;
    (c.sent, c.failed, c.suppressed, c.uncertain, c.claimed)
}

#[tokio::test]
async fn a_run_of_1000_mails_each_eligible_recipient_exactly_once() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            filtered_every: 10,
            suppressed_every: 37,
            ..ScenarioSpec::plain("full", 1_100)
        },
    )
    .await;
    let (run, answer) = stack.start_run(&scenario).await;
    assert!(
        matches!(answer["status"].as_str(), Some("completed" | "continue")),
        "{answer}"
    );
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    let eligible = scenario.eligible.len() as u64;
    assert!(eligible >= 950, "at least ~1,000 recipients: {eligible}");
    assert_eq!(
        states(&status),
        (eligible, 0, scenario.suppressed.len() as u64, 0, 0)
    );
    assert_eq!(
        status.record.progress.filtered,
        scenario.filtered.len() as u64
    );
    assert_eq!(
        status.record.progress.selected,
        eligible + scenario.suppressed.len() as u64
    );
    // What the SES emulator does not keep, the proxy recorded: tags, configuration set and
    // list management on every message of this run.
    let sends: Vec<_> = stack
        .proxy
        .sends()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| {
            s.tag("hikyaku-run") == Some(run.run_id.as_str())
                && s.tag("hikyaku-campaign") == Some(run.campaign_id.as_str())
        })
        .collect();
    assert_eq!(sends.len() as u64, eligible);
    assert!(sends.iter().all(|s| {
        s.configuration_set_name.as_deref() == Some("hikyaku")
            && s.list_management_options.as_ref().is_some_and(|l| {
                l.contact_list_name == "newsletter" && l.topic_name.as_deref() == Some("weekly")
            })
            && s.destination.to_addresses.len() == 1
    }));
}

#[tokio::test]
async fn when_every_message_is_delivered_twice_nobody_gets_two_emails() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            filtered_every: 10,
            suppressed_every: 41,
            ..ScenarioSpec::plain("twice", 1_100)
        },
    )
    .await;
    let (run, _) = stack.start_run(&scenario).await;
    let mut config = stack.pump_config();
    config.duplicate_delivery = DuplicateDelivery::Concurrent;
    let (stats, status) = stack.pump_until_finished(config, &run, LIMIT).await;
    assert!(stats.invocations >= 2 * stats.batches, "{stats:?}");
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!(
        states(&status),
        (
            scenario.eligible.len() as u64,
            0,
            scenario.suppressed.len() as u64,
            0,
            0
        )
    );
}

/// A queue that dies part-way through a page, after enqueueing some of its jobs and before
/// the fan-out could checkpoint: the worst moment for a Lambda to be killed.
struct DyingQueue<'a> {
    inner: &'a dyn JobQueue,
    calls_before_death: std::sync::Mutex<u32>,
}

#[async_trait]
impl JobQueue for DyingQueue<'_> {
    async fn enqueue(&self, jobs: &[SendJob]) -> Result<(), QueueError> {
        let dies_now = {
            let mut left = self.calls_before_death.lock().unwrap();
            let now = *left == 0;
            *left = left.saturating_sub(1);
            now
        };
        if dies_now {
            // Half the page reaches the queue, then the process dies.
            self.inner.enqueue(&jobs[..jobs.len() / 2]).await?;
            return Err(QueueError {
                message: "killed mid-page".into(),
                source: None,
            });
        }
        self.inner.enqueue(jobs).await
    }

    async fn enqueue_delayed(&self, job: &SendJob, delay: Duration) -> Result<(), QueueError> {
        self.inner.enqueue_delayed(job, delay).await
    }
}

#[tokio::test]
async fn a_fanout_killed_half_way_and_invoked_again_loses_and_duplicates_nobody() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            filtered_every: 7,
            ..ScenarioSpec::plain("killed", 1_000)
        },
    )
    .await;
    let scheduled = chrono::Utc::now();
    let request = FanoutRequest {
        campaign_id: scenario.campaign_id.clone(),
        scheduled_time: chrono::DateTime::parse_from_rfc3339(
            &scheduled.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
        .unwrap()
        .into(),
    };
    let dying = DyingQueue {
        inner: &stack.queue,
        calls_before_death: std::sync::Mutex::new(3),
    };
    let ports = FanoutPorts {
        campaigns: &stack.campaigns,
        runs: &stack.runs,
        contacts: &stack.contacts,
        queue: &dying,
        account: &stack.account_gate(),
    };
    let settings = FanoutSettings {
        page_size: 100,
        ..FanoutSettings::default()
    };
    // The killed invocation's clock lies an hour back, so its lease has long lapsed when the
    // next invocation arrives, as after a crash that gave nothing back.
    let an_hour_ago = || chrono::Utc::now() - chrono::Duration::hours(1);
    let plenty = || Duration::from_secs(600);
    let err = fan_out(&ports, &request, &settings, "killed", &plenty, &an_hour_ago)
        .await
        .unwrap_err();
    assert!(matches!(err, FanoutError::Queue(_)), "{err}");
    let run = request.run();
    let halfway = stack.status(&run).await;
    assert_eq!(halfway.record.progress.pages, 3);
    assert!(!halfway.record.fanout_complete);

    // Invoked again, through the real function: it continues from the checkpoint.
    let (again, answer) = stack.start_run_at(&scenario, scheduled).await;
    assert_eq!(again, run);
    assert!(
        matches!(answer["status"].as_str(), Some("completed" | "continue")),
        "{answer}"
    );
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!(status.counts.sent, scenario.eligible.len() as u64);
    assert_eq!(status.record.progress.contacts_read, 1_000);
}

#[tokio::test]
async fn a_malformed_message_is_recorded_and_the_rest_of_its_batch_is_sent() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("malformed", 120)).await;
    let mut malformed_ids = Vec::new();
    for body in [
        "this is not a send job",
        r#"{"v":1,"campaign_id":"x y","recipients":[]}"#,
    ] {
        let sent = stack
            .sqs
            .send_message()
            .queue_url(&stack.resources.send_queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
        malformed_ids.push(sent.message_id().unwrap().to_owned());
    }
    let (run, _) = stack.start_run(&scenario).await;
    let mut config = stack.pump_config();
    // One batch holds the malformed messages and the run's jobs together.
    config.batch_size = 10;
    config.batching_window = Duration::from_secs(1);
    let (stats, _) = stack.pump_until_finished(config, &run, LIMIT).await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!(stats.function_errors, 0, "{stats:?}");
    for id in malformed_ids {
        let item = stack
            .dynamodb
            .get_item()
            .table_name(&stack.resources.deliveries_table)
            .key(
                "run_key",
                aws_sdk_dynamodb::types::AttributeValue::S("rejected#send-queue".into()),
            )
            .key(
                "email",
                aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let item = item
            .item()
            .unwrap_or_else(|| panic!("malformed message {id} recorded"));
        let reason = item["reason"].as_s().unwrap();
        assert!(reason.contains("send job"), "{reason}");
    }
    // Acknowledged, not left to redeliver forever.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attributes = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.resources.send_queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attributes.attributes().unwrap();
    let count = |name| attrs[&name].parse::<u64>().unwrap();
    assert_eq!(
        count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        0
    );
}

#[tokio::test]
async fn when_ses_throttles_sends_are_retried_later_and_none_is_lost_or_failed() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("throttled", 300)).await;
    let before = stack.proxy.counters().await.unwrap();
    let _faults = FaultGuard::set(
        &stack,
        Faults {
            throttle_every: Some(4),
            ..Faults::default()
        },
    )
    .await;
    let (run, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    let after = stack.proxy.counters().await.unwrap();
    assert!(
        after.throttled - before.throttled >= 50,
        "SES throttled: {}",
        after.throttled - before.throttled
    );
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!(states(&status), (300, 0, 0, 0, 0));
}

#[tokio::test]
async fn a_permanent_ses_rejection_is_recorded_with_its_reason_and_not_retried() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            odd_domain: Some((10, "reject.example.net")),
            ..ScenarioSpec::plain("rejected", 100)
        },
    )
    .await;
    let before = stack.proxy.counters().await.unwrap();
    let _faults = FaultGuard::set(
        &stack,
        Faults {
            reject_recipients: vec!["@reject.example.net".into()],
            ..Faults::default()
        },
    )
    .await;
    let (run, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    let after = stack.proxy.counters().await.unwrap();
    let rejected: Vec<_> = scenario
        .eligible
        .iter()
        .filter(|e| e.domain() == "reject.example.net")
        .collect();
    assert_eq!(rejected.len(), 10);
    // Each rejected recipient was tried once: a permanent error is not retried.
    assert_eq!(after.rejected - before.rejected, 10);
    assert_eq!(states(&status), (90, 10, 0, 0, 0));
    let records = stack.ledger.records(&run).await.unwrap();
    let reasons: HashMap<String, String> = records
        .into_iter()
        .filter(|r| r.state == DeliveryState::Failed)
        .map(|r| (r.email.to_string(), r.reason.unwrap_or_default()))
        .collect();
    for email in rejected {
        let reason = &reasons[email.as_str()];
        assert!(reason.contains("MessageRejected"), "{reason}");
    }
    let counts = stack.ses_store_counts().await;
    assert_eq!(
        Scenario::addresses(&scenario.eligible)
            .iter()
            .filter(|a| counts.get(*a) == Some(&1))
            .count(),
        90
    );
}

#[tokio::test]
async fn every_fanout_and_sender_fixture_is_invoked_through_cargo_lambda_and_does_its_work() {
    let stack = Stack::connect().await;
    // The fixtures' campaign, on a list of its own with nobody on it: the fan-out fixture
    // starts its run, then the sender fixtures' jobs belong to a run that is sending.
    let definition = hikyaku_core::campaign::CampaignDefinition::from_toml_str(
        r#"
id = "winter-newsletter"
list = "fixture-list"
subject = "Winter news for {{first_name}}"
html = "<p>Hello {{first_name}} in {{city}}</p>"
[from]
address = "news@hikyaku.example"
[ses]
configuration_set = "hikyaku"
"#,
        None,
    )
    .unwrap();
    stack.campaigns.create(&definition).await.unwrap();
    let mut attributes = hikyaku_core::contact::Attributes::new();
    for name in ["first_name", "city"] {
        attributes.insert(
            name.into(),
            hikyaku_core::contact::AttrValue::Str("x".into()),
        );
    }
    let mut schema = hikyaku_core::contact::ListSchema::default();
    schema.observe(&attributes);
    let list = hikyaku_core::ids::ListId::parse("fixture-list").unwrap();
    stack.contacts.merge_schema(&list, &schema).await.unwrap();
    let root = workspace_root();
    let events = root.join("events");

    let started = stack
        .invoke_fixture(FANOUT, &events.join("fanout/scheduled-run.json"))
        .await;
    assert!(
        matches!(
            started["status"].as_str(),
            Some("completed" | "already_complete")
        ),
        "{started}"
    );
    let refused = stack
        .invoke_fixture(FANOUT, &events.join("fanout/malformed.json"))
        .await;
    assert_eq!(refused["status"], "rejected", "{refused}");

    for fixture in ["sender/two-jobs.json", "sender/malformed-amid-good.json"] {
        let answer = stack.invoke_fixture(SENDER, &events.join(fixture)).await;
        assert_eq!(
            answer["batchItemFailures"].as_array().map(Vec::len),
            Some(0),
            "{fixture}: {answer}"
        );
    }
    let run = RunRef::from_key("winter-newsletter#20261224T090000Z").unwrap();
    for address in [
        "aiko@example.com",
        "ben@example.org",
        "chloe@example.net",
        "dai@example.com",
        "emi@example.com",
    ] {
        let email = hikyaku_core::email::EmailAddress::parse(address).unwrap();
        let record = stack
            .ledger
            .records(&run)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.email == email);
        assert_eq!(
            record.map(|r| r.state),
            Some(DeliveryState::Sent),
            "{address}"
        );
    }
    let counts = stack.ses_store_counts().await;
    assert_eq!(counts.get("aiko@example.com"), Some(&1));
    let reason = stack
        .rejected_reason("send-queue", "1b0c8f6e-0000-4000-8000-000000000002")
        .await
        .expect("the malformed body is recorded");
    assert!(!reason.is_empty());
}

impl Stack {
    /// Invokes the fan-out for a given scheduled time (the same run as an earlier start).
    async fn start_run_at(
        &self,
        scenario: &Scenario,
        scheduled: chrono::DateTime<chrono::Utc>,
    ) -> (RunRef, serde_json::Value) {
        let payload = serde_json::json!({
            "campaign_id": scenario.campaign_id.as_str(),
            "scheduled_time": scheduled.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        let answer = self
            .invoker
            .invoke(FANOUT, &payload)
            .await
            .expect("fan-out invocation");
        let run = FanoutRequest {
            campaign_id: scenario.campaign_id.clone(),
            scheduled_time: scheduled,
        }
        .run();
        (run, answer)
    }
}
