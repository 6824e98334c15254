//! The operator's reports of a real run: a small campaign with SES mailbox simulator addresses
//! is sent on the local stack and its feedback awaited; then the `hikyaku` binary itself (built
//! by `make test`) reports on it: `campaign runs`, `campaign report` in JSON, CSV and HTML (the
//! HTML drawn by headless Chromium), and `campaign recipients`, each checked against what was
//! sent, delivered, bounced and complained.

use std::collections::BTreeSet;
use std::time::Duration;

use hikyaku_core::email::EmailAddress;
use hikyaku_core::ids::RunRef;
use serde_json::Value;

use crate::chromium;
use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);
const FEEDBACK_LIMIT: Duration = Duration::from_secs(600);

/// 60 contacts: per 20, two `bounce`, one `complaint`, one `ooto`, one `suppressionlist` and
/// two `success` simulator addresses; the rest plain (delivered).
fn mix(i: usize) -> Option<&'static str> {
    match i % 20 {
        0 | 1 => Some("bounce"),
        2 => Some("complaint"),
        3 => Some("ooto"),
        4 => Some("suppressionlist"),
        5 | 6 => Some("success"),
        _ => None,
    }
}

fn mailbox(email: &EmailAddress) -> Option<&str> {
    let local = email.as_str().strip_suffix("@simulator.amazonses.com")?;
    local.split('+').next()
}

fn set_of(values: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    values.into_iter().collect()
}

#[tokio::test]
async fn the_report_of_a_simulator_run_matches_what_was_sent_delivered_bounced_and_complained() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            simulator: Some(mix),
            suppressed_every: 25,
            // Counted here, not paused: the guardrails have tests of their own.
            extra_toml: "[limits]\nmax_bounce_rate = 0.6\nmax_complaint_rate = 0.6\nmin_sends = 10\n",
            ..ScenarioSpec::plain("report", 60)
        },
    )
    .await;
    let of_box = |name: &str| -> Vec<String> {
        scenario
            .eligible
            .iter()
            .filter(|e| mailbox(e) == Some(name))
            .map(|e| e.as_str().to_owned())
            .collect()
    };
    let hard: BTreeSet<String> = of_box("bounce")
        .into_iter()
        .chain(of_box("suppressionlist"))
        .collect();
    let complaints = of_box("complaint");
    let ootos = of_box("ooto");
    let sent = scenario.eligible.len() as u64;
    let suppressed = scenario.suppressed.len() as u64;
    assert!(hard.len() >= 6 && !complaints.is_empty() && suppressed >= 2);

    let (run, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    assert_eq!(status.counts.sent, sent);
    let delivered = sent - hard.len() as u64;
    stack
        .wait_for_feedback(&run, FEEDBACK_LIMIT, |f| {
            f.delivered == delivered
                && f.hard_bounced == hard.len() as u64
                && f.complained == complaints.len() as u64
                && f.auto_replied == ootos.len() as u64
        })
        .await;
    let id = run.campaign_id.as_str();
    let run_id = run.run_id.as_str();

    // runs: this campaign's one run, with its counts.
    let runs = hikyaku_json(&stack, &["campaign", "runs", id, "--json"]).await;
    assert_eq!(runs["total"], 1);
    let listed = &runs["runs"][0];
    assert_eq!(listed["run_id"], run_id);
    assert_eq!(listed["phase"], "completed");
    assert_eq!(listed["sent"], sent);
    assert_eq!(listed["suppressed"], suppressed);
    assert_eq!(listed["hard_bounced"], hard.len());
    assert!(listed["timing"]["ended_at"].is_string(), "{listed}");

    // report --format json: the counts are what was sent and what SES said.
    let report = hikyaku_json(
        &stack,
        &[
            "campaign", "report", id, "--run", run_id, "--format", "json",
        ],
    )
    .await;
    assert_report_counts(
        &report,
        &run,
        sent,
        suppressed,
        delivered,
        &hard,
        &complaints,
        &ootos,
    );
    // --json alone, and the latest run without --run: the same report.
    let latest = hikyaku_json(&stack, &["campaign", "report", id, "--json"]).await;
    assert_eq!(latest["deliveries"], report["deliveries"]);
    assert_eq!(latest["outcomes"], report["outcomes"]);

    // The CSV rendering holds the same figures.
    let csv = hikyaku(&stack, &["campaign", "report", id, "--format", "csv"]).await;
    assert!(csv.status.success());
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with("section,name,value\n"), "{csv}");
    assert!(
        csv.contains(&format!("\ndeliveries,sent,{sent}\n")),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("\noutcomes,hard_bounced,{}\n", hard.len())),
        "{csv}"
    );

    // recipients --state bounced: exactly the hard-bouncing addresses, with their diagnostics.
    let bounced = hikyaku_json(
        &stack,
        &[
            "campaign",
            "recipients",
            id,
            "--run",
            run_id,
            "--state",
            "bounced",
            "--json",
        ],
    )
    .await;
    let lines = bounced["recipients"].as_array().unwrap();
    assert_eq!(
        set_of(
            lines
                .iter()
                .map(|l| l["email"].as_str().unwrap().to_owned())
        ),
        hard
    );
    assert!(
        lines.iter().all(|l| l["state"] == "hard_bounced"),
        "{bounced}"
    );
    assert!(
        lines.iter().all(|l| l["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Permanent/"))),
        "{bounced}"
    );
    let csv = hikyaku(
        &stack,
        &[
            "campaign",
            "recipients",
            id,
            "--run",
            run_id,
            "--state",
            "bounced",
            "--csv",
        ],
    )
    .await;
    assert!(csv.status.success());
    assert!(csv.stderr.is_empty(), "addresses are shown, never logged");
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("email,state,at,reason,ses_message_id"));
    assert_eq!(
        set_of(rows.map(|row| row.split(',').next().unwrap().to_owned())),
        hard
    );
    let complained = hikyaku_json(
        &stack,
        &[
            "campaign",
            "recipients",
            id,
            "--run",
            run_id,
            "--state",
            "complained",
            "--json",
        ],
    )
    .await;
    assert_eq!(
        set_of(
            complained["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["email"].as_str().unwrap().to_owned())
        ),
        set_of(complaints.clone())
    );
    let suppressed_list = hikyaku_json(
        &stack,
        &[
            "campaign",
            "recipients",
            id,
            "--run",
            run_id,
            "--state",
            "suppressed",
            "--json",
        ],
    )
    .await;
    assert_eq!(
        set_of(
            suppressed_list["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["email"].as_str().unwrap().to_owned())
        ),
        set_of(scenario.suppressed.iter().map(|e| e.as_str().to_owned()))
    );

    // report --format html: Chromium draws both charts with the report's figures.
    let dir = chromium::tempfile_dir("hikyaku-stack-report");
    let page = dir.join("report.html");
    let written = hikyaku_json(
        &stack,
        &[
            "campaign",
            "report",
            id,
            "--run",
            run_id,
            "--format",
            "html",
            "--out",
            page.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(written["format"], "html");
    assert_eq!(written["report"]["deliveries"], report["deliveries"]);
    let dom = chromium::dump_dom(&page);
    chromium::assert_charts_drawn(&dom, &report);
    assert_eq!(
        chromium::svg(&dom, "send-rate-chart")["data-total"],
        sent.to_string()
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Errors say what is wrong and what to do, on stderr, with a failing exit status.
    for (args, status, says) in [
        (
            vec!["campaign", "report", "no-such-campaign"],
            1,
            "campaign 'no-such-campaign' does not exist",
        ),
        (
            vec!["campaign", "report", id, "--run", "20200101T000000Z"],
            1,
            "has no run 20200101T000000Z",
        ),
        (
            vec![
                "campaign",
                "recipients",
                id,
                "--run",
                run_id,
                "--state",
                "lost",
            ],
            2,
            "invalid value 'lost'",
        ),
        (
            vec!["campaign", "report", id, "--format", "csv", "--json"],
            1,
            "--json prints the report as JSON",
        ),
    ] {
        let output = hikyaku(&stack, &args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: errors stay off stdout");
        if status == 1 {
            assert!(stderr.contains("hint: "), "{args:?}: {stderr}");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn assert_report_counts(
    report: &Value,
    run: &RunRef,
    sent: u64,
    suppressed: u64,
    delivered: u64,
    hard: &BTreeSet<String>,
    complaints: &[String],
    ootos: &[String],
) {
    assert_eq!(report["campaign"], run.campaign_id.as_str());
    assert_eq!(report["run_id"], run.run_id.as_str());
    assert_eq!(report["phase"], "completed");
    assert_eq!(report["audience"]["selected"], sent + suppressed);
    let d = &report["deliveries"];
    assert_eq!(d["sent"], sent);
    assert_eq!(d["suppressed"], suppressed);
    for zero in [
        "failed",
        "unsubscribed",
        "uncertain",
        "in_flight",
        "outstanding",
    ] {
        assert_eq!(d[zero], 0, "{zero}");
    }
    let o = &report["outcomes"];
    assert_eq!(o["delivered"], delivered);
    assert_eq!(o["hard_bounced"], hard.len());
    assert_eq!(o["bounced"], hard.len());
    assert_eq!(o["soft_bounced"], 0);
    assert_eq!(o["complained"], complaints.len());
    assert_eq!(o["auto_replied"], ootos.len());
    let r = &report["rates"];
    let resolved = delivered + hard.len() as u64;
    assert_eq!(r["resolved_sends"], resolved);
    let bounce_rate = r["bounce_rate"].as_f64().unwrap();
    assert!((bounce_rate - hard.len() as f64 / resolved as f64).abs() < 1e-9);
    assert_eq!(r["max_bounce_rate"], 0.6);
    assert_eq!(r["min_sends"], 10);
    assert_eq!(r["judged"], true);
    assert_eq!(r["bounce_over_limit"], false);
    let t = &report["timing"];
    assert!(t["ended_at"].is_string() && t["elapsed_seconds"].as_f64().unwrap() > 0.0);
    let buckets = report["send_rate"]["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty());
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["sent"].as_u64().unwrap())
            .sum::<u64>(),
        sent,
        "every send is in a bucket"
    );
}
