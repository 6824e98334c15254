//! A campaign scheduled through the `hikyaku` binary, fired by `hikyaku-local scheduler` (the
//! local stand-in for EventBridge Scheduler) at the real fan-out: one run, named by its
//! scheduled time, every eligible recipient mailed once; the one-time schedule deletes itself;
//! the same firing delivered again (Scheduler's and Lambda's retries) adds no run and no mail.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use hikyaku_core::ids::{RunId, RunRef};
use hikyaku_core::ports::RunStore;
use serde_json::{Value, json};

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);

/// The `hikyaku` binary: `HIKYAKU_CLI` (`make test` sets it), else the one beside `deps/`.
fn cli_binary() -> PathBuf {
    let path = std::env::var_os("HIKYAKU_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test binary path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("test binary in <target>/debug/deps")
                .join("hikyaku")
        });
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p hikyaku-cli` (`make test` does)",
        path.display()
    );
    path
}

async fn hikyaku(stack: &Stack, args: &[&str]) -> Output {
    tokio::process::Command::new(cli_binary())
        .args(args)
        .envs(&stack.vars)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("hikyaku runs")
}

async fn hikyaku_json(stack: &Stack, args: &[&str]) -> Value {
    let output = hikyaku(stack, args).await;
    assert!(
        output.status.success(),
        "hikyaku {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("hikyaku --json prints JSON")
}

/// The schedules `campaign schedules ID` lists.
async fn listed(stack: &Stack, id: &str) -> Vec<Value> {
    let list = hikyaku_json(stack, &["campaign", "schedules", id, "--json"]).await;
    list["schedules"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_scheduled_campaign_is_fired_once_and_a_second_firing_for_its_time_sends_nothing() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            filtered_every: 5,
            suppressed_every: 7,
            ..ScenarioSpec::plain("scheduled", 60)
        },
    )
    .await;
    let id = scenario.campaign_id.as_str();

    // Refused before Scheduler is called: a time in the past, an unknown campaign.
    let past = hikyaku(
        &stack,
        &["campaign", "schedule", id, "--at", "2020-01-01 09:00"],
    )
    .await;
    assert_eq!(past.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&past.stderr).contains("is in the past"));
    let unknown = hikyaku(
        &stack,
        &["campaign", "schedule", "nobody-at-all", "--rate", "1 day"],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("does not exist"));

    // About five seconds ahead, in Tokyo (UTC+9 all year).
    let tokyo = FixedOffset::east_opt(9 * 3600).unwrap();
    let at = (Utc::now() + chrono::Duration::seconds(6)).with_timezone(&tokyo);
    let at_text = at.format("%Y-%m-%d %H:%M:%S").to_string();
    let scheduled: DateTime<Utc> = DateTime::parse_from_rfc3339(
        &at.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    )
    .unwrap()
    .into();
    let made = hikyaku_json(
        &stack,
        &[
            "campaign",
            "schedule",
            id,
            "--at",
            &at_text,
            "--tz",
            "Asia/Tokyo",
            "--json",
        ],
    )
    .await;
    assert_eq!(made["schedule"], id);
    assert_eq!(made["action_after_completion"], "DELETE");
    assert_eq!(
        made["next_firing"],
        scheduled.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let again = hikyaku(&stack, &["campaign", "schedule", id, "--rate", "1 day"]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("has a schedule already"));

    // The scheduler fires it: the run is named by the scheduled time.
    let run = RunRef::new(
        scenario.campaign_id.clone(),
        RunId::from_scheduled_time(scheduled),
    );
    // The first invocation of a fresh stack may wait for `cargo lambda watch` to build the fan-out.
    let deadline = Instant::now() + Duration::from_secs(300);
    while stack.runs.get(&run).await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the schedule did not start run {run}; schedules: {:?}",
            listed(&stack, id).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!(status.counts.sent, scenario.eligible.len() as u64);
    assert_eq!(status.counts.suppressed, scenario.suppressed.len() as u64);

    // A one-time schedule with ActionAfterCompletion DELETE is gone after it fired.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = listed(&stack, id).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "schedule still there: {left:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The same firing again, as Scheduler's input for that time: one run, no second mail.
    let input = json!({
        "campaign_id": id,
        "scheduled_time": scheduled.to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    stack
        .invoker
        .invoke_async(FANOUT, &input)
        .await
        .expect("queued");
    let answer = stack
        .invoker
        .invoke(FANOUT, &input)
        .await
        .expect("fan-out answers");
    assert!(
        matches!(answer["status"].as_str(), Some("already_complete" | "busy")),
        "{answer}"
    );
    let (_, after) = stack
        .pump_until(stack.pump_config(), &run, Duration::from_secs(5), |_| false)
        .await;
    assert_eq!(after.counts.sent, status.counts.sent);
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    let runs = hikyaku_json(&stack, &["campaign", "runs", id, "--json"]).await;
    assert_eq!(runs["total"], 1, "{runs}");
    assert_eq!(runs["runs"][0]["run_id"], run.run_id.as_str(), "{runs}");
}
