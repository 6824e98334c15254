//! A schedule's firing as the fan-out gets it: the target input with the scheduled time filled
//! in. The same firing delivered twice (Scheduler retrying, Lambda's asynchronous retries) is
//! one run with one copy of the work; another scheduled time is another run.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use hikyaku_core::fakes::*;
use hikyaku_core::fanout::*;
use hikyaku_core::ids::CampaignId;
use hikyaku_core::ports::CampaignStore;
use hikyaku_core::schedule::{input_for_firing, target_input};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().into()
}

/// Recipients per address over every job enqueued.
fn enqueued(queue: &FakeQueue) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for job in queue.jobs.lock().unwrap().iter() {
        for r in &job.recipients {
            *seen.entry(r.email.to_string()).or_default() += 1;
        }
    }
    seen
}

#[tokio::test]
async fn a_firing_delivered_twice_is_one_run_and_the_next_firing_another() {
    let campaigns = FakeCampaigns::default();
    campaigns.create(&definition()).await.unwrap();
    let runs = FakeRuns::default();
    let contacts = FakeContacts::with(&list(), contacts(120));
    let queue = FakeQueue::default();
    let gate = FakeGate::default();
    let ports = FanoutPorts {
        campaigns: &campaigns,
        runs: &runs,
        contacts: &contacts,
        queue: &queue,
        account: &gate,
    };
    let campaign = CampaignId::parse("spring").unwrap();
    let input = target_input(&campaign);
    let fire = |at: DateTime<Utc>| {
        let request: FanoutRequest =
            serde_json::from_str(&input_for_firing(&input, at)).expect("the fan-out's request");
        request
    };
    let plenty = || Duration::from_secs(600);
    let first = fire(utc("2026-12-24T00:00:00Z"));
    let outcome = fan_out(
        &ports,
        &first,
        &FanoutSettings::default(),
        "scheduler",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, FanoutOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let once = enqueued(&queue);
    assert!(!once.is_empty());
    assert!(once.values().all(|n| *n == 1));

    // Scheduler's retry of the same firing.
    let retry = fire(utc("2026-12-24T00:00:00Z"));
    assert_eq!(retry.run(), first.run());
    let outcome = fan_out(
        &ports,
        &retry,
        &FanoutSettings::default(),
        "scheduler-retry",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, FanoutOutcome::AlreadyComplete { .. }),
        "{outcome:?}"
    );
    assert_eq!(enqueued(&queue), once, "no second copy of the work");

    // The next week's firing is a run of its own.
    let next = fire(utc("2026-12-31T00:00:00Z"));
    assert_ne!(next.run(), first.run());
    assert_eq!(next.run().run_id.as_str(), "20261231T000000Z");
    let outcome = fan_out(
        &ports,
        &next,
        &FanoutSettings::default(),
        "scheduler",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(
        matches!(outcome, FanoutOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert!(enqueued(&queue).values().all(|n| *n == 2));
}
