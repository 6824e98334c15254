//! The canary slice on the local stack: real senders send the slice first, hold the rest on
//! the queue, and the feedback the simulator's events bring decides whether the rest goes.

use std::time::Duration;

use hikyaku_core::canary::CanaryOutcome;
use hikyaku_core::lifecycle::{Action, apply};
use hikyaku_core::ports::Ledger;
use hikyaku_core::run::RunState;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);
const SLICE: usize = 40;
/// A slice of 40, judged 12 seconds after the fan-out.
const CANARY: &str = "[canary]\nsize = 40\nwait_minutes = 0.2\n";
/// The same, judged from 30 resolved sends.
const CANARY_FROM_30: &str = "[limits]\nmin_sends = 30\n[canary]\nsize = 40\nwait_minutes = 0.2\n";

/// Every tenth contact complains: 10% against the default limit of 0.1%. The guardrails
/// judge from the default 200 resolved sends, more than the audience: only the canary can
/// stop this run.
fn every_tenth_complains(i: usize) -> Option<&'static str> {
    (i % 10 == 3).then_some("complaint")
}

/// The list is read in address order, so its first `SLICE` eligible addresses are the slice.
fn slice_and_rest(scenario: &Scenario) -> (Vec<String>, Vec<String>) {
    let mut all = Scenario::addresses(&scenario.eligible);
    all.sort();
    let rest = all.split_off(SLICE);
    (all, rest)
}

#[tokio::test]
async fn the_slice_is_sent_first_and_the_rest_only_after_its_verdict() {
    let stack = Stack::connect().await;
    stack.wait_for_quiet_feedback(LIMIT).await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            extra_toml: CANARY_FROM_30,
            ..ScenarioSpec::plain("canary-pass", 150)
        },
    )
    .await;
    let (run, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;

    let record = &status.record;
    let verdict = record.canary_verdict.clone().expect("the slice was judged");
    assert_eq!(verdict.outcome, CanaryOutcome::Passed, "{verdict}");
    assert!(
        verdict.detail.contains("(40 sent of a slice of 40)"),
        "{verdict}"
    );
    let done = record.fanout_completed_at.expect("fan-out complete");
    assert!(
        verdict.at >= done + chrono::Duration::seconds(12),
        "judged at {} before the wait after {done} was over",
        verdict.at
    );
    let (slice, rest) = slice_and_rest(&scenario);
    let records = stack.ledger.records(&run).await.unwrap();
    let claimed = |address: &str| {
        records
            .iter()
            .find(|r| r.email.as_str().eq_ignore_ascii_case(address))
            .and_then(|r| r.claimed_at)
            .unwrap_or_else(|| panic!("{address} has a claim"))
    };
    for address in &rest {
        assert!(
            claimed(address) >= verdict.at,
            "{address}, beyond the slice, was sent at {} before the verdict at {}",
            claimed(address),
            verdict.at
        );
    }
    let before = slice.iter().filter(|a| claimed(a) < verdict.at).count();
    println!(
        "verdict {:.1} s after the fan-out; {before} of the slice sent before it; {}",
        (verdict.at - done).num_milliseconds() as f64 / 1000.0,
        verdict.detail
    );
}

#[tokio::test]
async fn a_slice_with_complaints_pauses_the_run_with_its_figures_and_a_resume_sends_the_rest() {
    let stack = Stack::connect().await;
    stack.wait_for_quiet_feedback(LIMIT).await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            simulator: Some(every_tenth_complains),
            extra_toml: CANARY,
            local_prefix: "complaint+",
            ..ScenarioSpec::plain("canary-fail", 150)
        },
    )
    .await;
    let (run, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until(stack.pump_config(), &run, LIMIT, |s| {
            s.record.state == RunState::Paused || s.is_finished()
        })
        .await;
    assert_eq!(status.record.state, RunState::Paused, "{status:#?}");
    let reason = status.record.pause_reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("canary slice: complaint rate"),
        "{reason}"
    );
    assert!(
        reason.contains("above the campaign's limit of 0.10%"),
        "{reason}"
    );
    let verdict = status.record.canary_verdict.clone().expect("judged");
    assert_eq!(verdict.outcome, CanaryOutcome::Failed);

    // Paused, the run sends nothing beyond the slice.
    let (_, later) = stack
        .pump_until(stack.pump_config(), &run, Duration::from_secs(6), |_| false)
        .await;
    let counts = stack.ses_store_counts().await;
    let (slice, rest) = slice_and_rest(&scenario);
    let mailed = |list: &[String]| list.iter().filter(|a| counts.contains_key(*a)).count();
    assert_eq!(mailed(&rest), 0, "nothing beyond the slice was mailed");
    assert_eq!(mailed(&slice) as u64, later.counts.sent);
    println!(
        "paused with {} of the slice sent: {reason}",
        later.counts.sent
    );

    let resumed = apply(&stack.runs, &run, Action::Resume, None, chrono::Utc::now())
        .await
        .unwrap();
    assert!(resumed.changed);
    assert_eq!(
        resumed.record.canary_verdict.map(|v| v.outcome),
        Some(CanaryOutcome::Released)
    );
    stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
}
