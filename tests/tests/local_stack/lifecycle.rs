//! Pause, resume and cancel on the local stack, while real sender instances work through the
//! queue; every count is taken at the SES emulator's store.

use std::time::{Duration, Instant};

use hikyaku_core::ids::RunRef;
use hikyaku_core::lifecycle::{Action, Applied, apply};
use hikyaku_core::run::{RunState, RunStatus};
use serde_json::json;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);
/// How long a run must stay silent at the SES emulator to count as stopped.
const QUIET: Duration = Duration::from_secs(3);

/// Mail of `scenario` at the SES emulator.
async fn mailed(stack: &Stack, scenario: &Scenario) -> usize {
    let counts = stack.ses_store_counts().await;
    Scenario::addresses(&scenario.eligible)
        .iter()
        .map(|a| counts.get(a).copied().unwrap_or(0))
        .sum()
}

async fn act(stack: &Stack, run: &RunRef, action: Action) -> Applied {
    let applied = apply(&stack.runs, run, action, None, chrono::Utc::now())
        .await
        .unwrap();
    if applied.continue_fanout {
        // As `hikyaku campaign resume` does.
        let payload = json!({
            "campaign_id": run.campaign_id.as_str(),
            "scheduled_time": run.run_id.scheduled_time().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        stack.invoker.invoke(FANOUT, &payload).await.unwrap();
    }
    applied
}

/// Waits until nothing of the run is in flight and the emulator's count holds still; then
/// checks it stays so for [`QUIET`]. The count it stopped at.
async fn assert_stopped(stack: &Stack, run: &RunRef, scenario: &Scenario) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = mailed(stack, scenario).await;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = mailed(stack, scenario).await;
        let in_flight = stack.status(run).await.counts.claimed;
        if now == last && in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never stopped sending");
        last = now;
    }
    tokio::time::sleep(QUIET).await;
    let after = mailed(stack, scenario).await;
    assert_eq!(after, last, "mail sent while the run was stopped");
    last
}

/// A small xorshift: the pause points differ per run, and the seed is printed to replay one.
struct Points(u64);

impl Points {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

async fn wait_for_sent(stack: &Stack, run: &RunRef, at_least: u64) -> RunStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        let status = stack.status(run).await;
        if status.counts.sent >= at_least || status.is_finished() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{at_least} never sent: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn pausing_and_resuming_at_random_points_sends_everyone_exactly_once() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("pause-resume", 500)).await;
    let seed = chrono::Utc::now().timestamp_micros() as u64 | 1;
    println!("pause points seed {seed}");
    let mut points = Points(seed);
    let (run, _) = stack.start_run(&scenario).await;

    let controller = async {
        let mut paused_at = Vec::new();
        for _ in 0..4 {
            let sent = stack.status(&run).await.counts.sent;
            let status = wait_for_sent(&stack, &run, sent + 20 + points.next(60)).await;
            if status.is_finished() {
                break;
            }
            let applied = act(&stack, &run, Action::Pause).await;
            assert_eq!(applied.record.state, RunState::Paused);
            let stopped = assert_stopped(&stack, &run, &scenario).await;
            paused_at.push(stopped);
            let resumed = act(&stack, &run, Action::Resume).await;
            assert!(resumed.changed);
            assert!(resumed.record.state.allows_sending());
        }
        paused_at
    };
    let ((_, status), paused_at) = tokio::join!(
        stack.pump_until_finished(stack.pump_config(), &run, LIMIT),
        controller
    );
    println!("stopped at {paused_at:?} of {}", scenario.eligible.len());
    assert!(paused_at.len() >= 2, "paused only at {paused_at:?}");
    assert!(paused_at.windows(2).all(|w| w[0] < w[1]), "{paused_at:?}");
    assert_eq!(status.counts.sent as usize, scenario.eligible.len());
    assert_eq!(status.counts.cancelled, 0);
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
}

#[tokio::test]
async fn a_cancelled_run_sends_nothing_more_and_records_the_rest_cancelled() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("cancel", 400)).await;
    let (run, _) = stack.start_run(&scenario).await;
    let all_recorded = |s: &RunStatus| {
        s.record.state == RunState::Cancelled
            && s.counts.claimed == 0
            && s.counts.terminal() >= s.record.progress.selected
    };
    let controller = async {
        wait_for_sent(&stack, &run, 60).await;
        let cancelled = act(&stack, &run, Action::Cancel).await;
        assert!(cancelled.changed);
    };
    let ((_, status), ()) = tokio::join!(
        stack.pump_until(stack.pump_config(), &run, LIMIT, all_recorded),
        controller
    );
    assert!(all_recorded(&status), "{status:#?}");
    let mailed_then = assert_stopped(&stack, &run, &scenario).await;
    let counts = &status.counts;
    assert_eq!(
        mailed_then as u64, counts.sent,
        "the emulator has what the ledger says"
    );
    assert!(counts.sent >= 60 && counts.sent < 400, "{counts:?}");
    assert_eq!(
        counts.sent + counts.cancelled,
        scenario.eligible.len() as u64
    );
    // Nobody twice, and a resume is refused.
    let store = stack.ses_store_counts().await;
    assert!(
        Scenario::addresses(&scenario.eligible)
            .iter()
            .all(|a| store.get(a).copied().unwrap_or(0) <= 1)
    );
    let refused = apply(&stack.runs, &run, Action::Resume, None, chrono::Utc::now()).await;
    assert!(refused.is_err());
}
