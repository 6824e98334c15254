//! `hikyaku doctor` against the local stack: what the emulators answer is checked, what they
//! cannot is skipped and said so; a broken part fails with its fix and stops `campaign start`.

use hikyaku_core::ports::RunStore;

use crate::helpers::*;

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[tokio::test]
async fn the_doctor_checks_what_the_local_stack_answers_and_blocks_a_broken_start() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("doctor", 3)).await;
    let id = scenario.campaign_id.as_str();
    let report = hikyaku_json(&stack, &["doctor", "--campaign", id, "--json"]).await;
    assert_eq!(report["blocking_failures"], 0, "{report:#}");
    for passing in [
        "SES account",
        "SES daily quota",
        "feedback subscription",
        "contacts table",
        "runs table",
        "send queue",
    ] {
        assert_eq!(
            check(&report, passing)["verdict"],
            "pass",
            "{passing}: {report:#}"
        );
    }
    // Other tests leave dead letters behind on purpose: then it warns with the count, which
    // never blocks.
    let dead = check(&report, "dead-letter queue");
    match dead["verdict"].as_str() {
        Some("pass") => assert_eq!(dead["detail"], "empty"),
        Some("warn") => assert!(
            dead["detail"].as_str().unwrap().contains("messages"),
            "{dead:#}"
        ),
        other => panic!("dead-letter queue: {other:?} in {dead:#}"),
    }
    // Every SES resource check either passed or says why it was skipped.
    for ses in [
        "sending identity",
        "configuration set",
        "contact list and topic",
    ] {
        let c = check(&report, ses);
        match c["verdict"].as_str() {
            Some("pass") => {}
            Some("skipped") => assert!(
                c["detail"].as_str().unwrap().contains("does not answer"),
                "{c:#}"
            ),
            other => panic!("{ses}: {other:?} in {c:#}"),
        }
    }

    // A table that is not there: the check fails with its fix, and a start is refused.
    let mut broken = stack.vars.clone();
    broken.insert(
        "HIKYAKU_SUPPRESSIONS_TABLE".into(),
        "hikyaku-no-such-table".into(),
    );
    let output = tokio::process::Command::new(cli_binary())
        .args(["campaign", "start", id])
        .envs(&broken)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("suppressions table: table hikyaku-no-such-table does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(
        stack
            .runs
            .list(&scenario.campaign_id)
            .await
            .unwrap()
            .is_empty(),
        "no run started"
    );
}
