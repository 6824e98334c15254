//! The account-wide send budget on the local stack: the SES proxy plays the account (its
//! GetAccount answer, its send rate and daily quota, answered with SES's own errors), the real
//! sender instances share the budget item in DynamoDB, and every count is taken at the proxy.

use std::time::Duration;

use hikyaku_core::budget::BudgetStore;
use hikyaku_core::ids::RunRef;
use hikyaku_core::run::{RunState, RunStatus};
use hikyaku_local::ses_proxy::{AccountQuota, RecordedSend, SesProxyClient};

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);
/// Longer than the account snapshot's life in the test stack (`HIKYAKU_ACCOUNT_CACHE_SECS=1`):
/// after it, every function sees a changed account.
const SNAPSHOT_LIFE: Duration = Duration::from_millis(1_500);

/// Changes the account the proxy plays and waits until the functions see it.
async fn change_account(stack: &Stack, quota: &AccountQuota) {
    stack.proxy.set_account(quota).await.unwrap();
    tokio::time::sleep(SNAPSHOT_LIFE).await;
}

/// Sets the account the SES proxy plays for the length of a test, and puts the default back
/// whatever happens.
struct AccountGuard {
    proxy_url: String,
}

impl AccountGuard {
    async fn set(stack: &Stack, quota: AccountQuota) -> AccountGuard {
        change_account(stack, &quota).await;
        AccountGuard {
            proxy_url: stack.vars["AWS_ENDPOINT_URL_SESV2"].clone(),
        }
    }
}

impl Drop for AccountGuard {
    fn drop(&mut self) {
        let url = self.proxy_url.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(SesProxyClient::new(url).set_account(&AccountQuota::default()))
        })
        .join()
        .unwrap()
        .unwrap();
        std::thread::sleep(SNAPSHOT_LIFE);
    }
}

/// The proxy's record of the run's accepted sends.
async fn sends_of(stack: &Stack, run: &RunRef) -> Vec<RecordedSend> {
    let run_id = run.run_id.to_string();
    let campaign = run.campaign_id.to_string();
    stack
        .proxy
        .sends()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| {
            s.tag(hikyaku_core::send::RUN_TAG) == Some(run_id.as_str())
                && s.tag(hikyaku_core::send::CAMPAIGN_TAG) == Some(campaign.as_str())
        })
        .collect()
}

/// The most recipients the proxy accepted in any one-second window.
fn busiest_second(sends: &[RecordedSend]) -> usize {
    let mut times: Vec<u64> = sends.iter().map(|s| s.received_at_ms).collect();
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= 1_000 {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Several sender instances at once: one message per invocation, four in flight.
fn four_instances(stack: &Stack) -> hikyaku_local::pump::PumpConfig {
    let mut config = stack.pump_config();
    config.batch_size = 1;
    config.max_concurrency = 4;
    config
}

#[tokio::test]
async fn four_sender_instances_sharing_the_budget_never_exceed_the_account_rate() {
    let stack = Stack::connect().await;
    let _account = AccountGuard::set(
        &stack,
        AccountQuota {
            max_send_rate: 40.0,
            ..AccountQuota::default()
        },
    )
    .await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("shared-budget", 400)).await;
    let before = stack.proxy.counters().await.unwrap();
    let (run, _) = stack.start_run(&scenario).await;
    let (pump, status) = stack
        .pump_until_finished(four_instances(&stack), &run, LIMIT)
        .await;
    let after = stack.proxy.counters().await.unwrap();
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!((status.counts.sent, status.counts.failed), (400, 0));
    assert!(pump.invocations >= 8, "{pump:#?}");
    let sends = sends_of(&stack, &run).await;
    assert_eq!(sends.len(), 400);
    let busiest = busiest_second(&sends);
    assert!(busiest <= 40, "{busiest} recipients in one second");
    assert_eq!(after.throttled - before.throttled, 0, "SES never throttled");
}

#[tokio::test]
async fn throttling_by_other_mail_slows_the_budget_down_and_nobody_is_lost_or_failed() {
    let stack = Stack::connect().await;
    // GetAccount says 60/s, but SES lets only 10/s through: other mail from the account takes
    // the rest. Only throttling can tell the senders.
    let _account = AccountGuard::set(
        &stack,
        AccountQuota {
            max_send_rate: 60.0,
            other_mail_rate: 50.0,
            ..AccountQuota::default()
        },
    )
    .await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("other-mail", 300)).await;
    let before = stack.proxy.counters().await.unwrap();
    let (run, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until_finished(four_instances(&stack), &run, LIMIT)
        .await;
    let after = stack.proxy.counters().await.unwrap();
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!(
        (
            status.counts.sent,
            status.counts.failed,
            status.counts.uncertain
        ),
        (300, 0, 0)
    );
    let throttled = after.throttled - before.throttled;
    assert!(throttled > 0, "SES must have throttled");
    // Backing off at once keeps the refusals below one per email: a sender that kept its
    // pace (53/s against 10/s) would be refused four times for every email that goes.
    assert!(
        throttled < 300,
        "SES throttled {throttled} times for 300 sends"
    );
    let budget = stack
        .budget
        .load("default")
        .await
        .unwrap()
        .expect("the budget item exists");
    assert!(budget.throttles > 0);
}

fn waiting(status: &RunStatus) -> bool {
    status.record.state == RunState::WaitingForQuota
}

#[tokio::test]
async fn a_used_up_daily_quota_makes_the_run_wait_and_it_resumes_by_itself_without_duplicates() {
    let stack = Stack::connect().await;
    stack.proxy.reset().await.unwrap();
    // 150 recipients per 20-second "day": the quota runs out mid-run, then the window rolls.
    let _account = AccountGuard::set(
        &stack,
        AccountQuota {
            max_24_hour_send: 150.0,
            window_secs: 20,
            ..AccountQuota::default()
        },
    )
    .await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("daily-quota", 300)).await;
    let (run, _) = stack.start_run(&scenario).await;
    let (_, held) = stack
        .pump_until(four_instances(&stack), &run, LIMIT, waiting)
        .await;
    assert!(waiting(&held), "{held:#?}");
    let resume_at = held
        .record
        .resume_at
        .expect("the run says when it expects to resume");
    assert!(resume_at > chrono::Utc::now());
    assert!(
        held.counts.sent <= 150,
        "{} sent within a quota of 150",
        held.counts.sent
    );

    let (_, status) = stack
        .pump_until_finished(four_instances(&stack), &run, LIMIT)
        .await;
    assert_eq!(status.record.state, RunState::Sending);
    assert_eq!(status.record.resume_at, None);
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!((status.counts.sent, status.counts.failed), (300, 0));
    let counters = stack.proxy.counters().await.unwrap();
    assert!(
        counters.get_account_calls > 0,
        "the senders read the account"
    );
}

#[tokio::test]
async fn an_account_that_turns_unhealthy_pauses_the_running_run_and_stops_new_ones() {
    let stack = Stack::connect().await;
    let slow = AccountQuota {
        max_send_rate: 30.0,
        ..AccountQuota::default()
    };
    let _account = AccountGuard::set(&stack, slow.clone()).await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("unhealthy", 600)).await;
    let (run, _) = stack.start_run(&scenario).await;
    let started = |s: &RunStatus| s.counts.sent >= 60;
    stack
        .pump_until(four_instances(&stack), &run, LIMIT, started)
        .await;
    change_account(
        &stack,
        &AccountQuota {
            enforcement_status: "PROBATION".into(),
            ..slow
        },
    )
    .await;
    let paused = |s: &RunStatus| s.record.state == RunState::Paused;
    let (_, status) = stack
        .pump_until(
            four_instances(&stack),
            &run,
            Duration::from_secs(60),
            paused,
        )
        .await;
    assert_eq!(status.record.state, RunState::Paused, "{status:#?}");
    let reason = status.record.pause_reason.clone().unwrap_or_default();
    assert!(reason.contains("PROBATION"), "{reason}");
    assert!(status.counts.sent < 600);
    // Nothing more goes out while the run is paused.
    let sent = sends_of(&stack, &run).await.len();
    let (_, later) = stack
        .pump_until(four_instances(&stack), &run, Duration::from_secs(5), |_| {
            false
        })
        .await;
    assert_eq!(sends_of(&stack, &run).await.len(), sent);
    assert_eq!(later.record.state, RunState::Paused);

    // A new run is not started: the fan-out pauses it at once with the reason.
    let other = Scenario::seed(&stack, ScenarioSpec::plain("unhealthy-new", 20)).await;
    let (new_run, answer) = stack.start_run(&other).await;
    assert_eq!(answer["status"], "stopped", "{answer}");
    let record = stack.status(&new_run).await.record;
    assert_eq!(record.state, RunState::Paused);
    assert!(
        record
            .pause_reason
            .unwrap_or_default()
            .contains("PROBATION")
    );
    assert_eq!(record.progress.messages, 0);
}
