//! The feedback loop on the local stack: the SES proxy's mailbox simulator publishes the
//! events of every accepted send to the SNS topic, the SNS pump delivers them to the real
//! feedback function, and what it stored is read back from DynamoDB.

use std::collections::HashMap;
use std::time::Duration;

use hikyaku_core::email::EmailAddress;
use hikyaku_core::feedback::{FeedbackCounts, Mark, PreferenceChange};
use hikyaku_core::ids::RunRef;
use hikyaku_core::ledger::{DeliveryRecord, DeliveryState};
use hikyaku_core::ports::{
    CampaignStore, Ledger, ListTopic, RunStore, Suppression, SuppressionKind, SuppressionList,
};
use hikyaku_core::run::RunState;
use hikyaku_local::ses_proxy::Faults;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);
/// How long the feedback of a finished run may take to arrive.
const FEEDBACK_LIMIT: Duration = Duration::from_secs(600);

/// The fixtures' recipients, their SES message ids and the ledger mark each fixture leaves.
const FIXTURE_MARKS: &[(&str, &str, Option<Mark>)] = &[
    ("send", "send", None),
    ("delivery", "delivery", Some(Mark::Delivered)),
    (
        "bounce-permanent",
        "bounce-permanent",
        Some(Mark::HardBounced),
    ),
    (
        "bounce-no-email",
        "bounce-no-email",
        Some(Mark::HardBounced),
    ),
    (
        "bounce-on-account-suppression-list",
        "bounce-on-account-suppression-list",
        Some(Mark::HardBounced),
    ),
    (
        "bounce-transient-mailbox-full",
        "bounce-transient-mailbox-full",
        Some(Mark::SoftBounced),
    ),
    (
        "bounce-auto-reply",
        "bounce-auto-reply",
        Some(Mark::AutoReplied),
    ),
    (
        "bounce-undetermined",
        "bounce-undetermined",
        Some(Mark::UndeterminedBounce),
    ),
    ("complaint", "complaint", Some(Mark::Complained)),
    (
        "complaint-not-spam",
        "complaint-not-spam",
        Some(Mark::Complained),
    ),
    ("open", "open", Some(Mark::Opened)),
    ("click", "click", Some(Mark::Clicked)),
    ("reject", "reject", Some(Mark::Rejected)),
    (
        "rendering-failure",
        "rendering-failure",
        Some(Mark::RenderingFailed),
    ),
    ("delivery-delay", "delivery-delay", Some(Mark::Delayed)),
    (
        "subscription-unsubscribe-all",
        "subscription-unsubscribe-all",
        None,
    ),
    (
        "subscription-topic-opt-out",
        "subscription-topic-opt-out",
        None,
    ),
    (
        "identity-bounce",
        "identity-bounce",
        Some(Mark::HardBounced),
    ),
    (
        "identity-complaint-a",
        "identity-complaint",
        Some(Mark::Complained),
    ),
    (
        "identity-delivery",
        "identity-delivery",
        Some(Mark::Delivered),
    ),
    ("unknown-event-type", "unknown-event-type", None),
    ("batch-a", "batch-a", Some(Mark::Delivered)),
    ("batch-b", "batch-b", Some(Mark::HardBounced)),
];

fn fixture_email(local: &str) -> EmailAddress {
    EmailAddress::parse(&format!("{local}@example.com")).unwrap()
}

fn marks(record: &DeliveryRecord) -> Vec<Mark> {
    record.marks.0.iter().map(|(mark, _)| *mark).collect()
}

async fn records(stack: &Stack, run: &RunRef) -> HashMap<EmailAddress, DeliveryRecord> {
    stack
        .ledger
        .records(run)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.email.clone(), r))
        .collect()
}

#[tokio::test]
async fn every_feedback_fixture_through_the_function_leaves_its_state_in_dynamodb() {
    let stack = Stack::connect().await;
    let definition = hikyaku_core::campaign::CampaignDefinition::from_toml_str(
        r#"
id = "fixture-campaign"
list = "fixture-list"
subject = "Winter news"
html = "<p>Hello</p><a href=\"{{amazonSESUnsubscribeUrl}}\">unsubscribe</a>"
[from]
address = "news@hikyaku.example"
[ses]
configuration_set = "hikyaku"
contact_list = "hikyaku-newsletter"
topic = "newsletter"
[limits]
max_bounce_rate = 0.9
max_complaint_rate = 0.9
"#,
        None,
    )
    .unwrap();
    stack.campaigns.create(&definition).await.unwrap();
    let run = RunRef::from_key("fixture-campaign#20261224T090000Z").unwrap();
    let at = run.run_id.scheduled_time();
    let mut record = hikyaku_core::run::RunRecord::new(
        run.clone(),
        hikyaku_core::ids::ListId::parse("fixture-list").unwrap(),
        at,
    );
    record.state = RunState::Sending;
    stack.runs.start(&record).await.unwrap();
    // The ledger as the sender left it: every recipient sent, with its SES message id.
    for (local, message, _) in FIXTURE_MARKS {
        let email = fixture_email(local);
        stack
            .ledger
            .claim(&run, &email, "fixture", at)
            .await
            .unwrap();
        let sent = hikyaku_core::ledger::Outcome::Sent {
            ses_message_id: format!("0100019a-{message}-000000"),
        };
        stack
            .ledger
            .complete(&run, &email, "fixture", &sent, at)
            .await
            .unwrap();
    }

    let dir = workspace_root().join("events/feedback");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 24, "{} fixtures", files.len());
    for file in &files {
        let answer = stack.invoke_fixture("hikyaku-feedback", file).await;
        assert!(answer.is_null(), "{}: {answer}", file.display());
    }
    // A notification delivered twice changes nothing the second time.
    let counters_once = stack.status(&run).await.record.feedback;
    stack
        .invoke_fixture("hikyaku-feedback", &dir.join("bounce-permanent.json"))
        .await;
    assert_eq!(stack.status(&run).await.record.feedback, counters_once);

    let ledger = records(&stack, &run).await;
    for (local, _, mark) in FIXTURE_MARKS {
        let record = &ledger[&fixture_email(local)];
        assert_eq!(record.state, DeliveryState::Sent, "{local}");
        assert_eq!(
            marks(record),
            mark.iter().copied().collect::<Vec<_>>(),
            "{local}"
        );
    }
    assert!(
        ledger[&fixture_email("bounce-permanent")]
            .feedback_detail
            .as_deref()
            .is_some_and(|d| d.contains("550 5.1.1")),
        "the bounce's diagnostic is kept"
    );

    let topic = ListTopic {
        contact_list: "hikyaku-newsletter".into(),
        topic: Some("newsletter".into()),
    };
    let everyone: Vec<EmailAddress> = FIXTURE_MARKS
        .iter()
        .map(|(local, _, _)| fixture_email(local))
        .chain([fixture_email("identity-complaint-b")])
        .collect();
    let blocked = stack
        .suppressions
        .check(&everyone, Some(&topic))
        .await
        .unwrap();
    let mut blocked_names: Vec<&str> = blocked
        .keys()
        .map(|e| e.as_str().trim_end_matches("@example.com"))
        .collect();
    blocked_names.sort();
    assert_eq!(
        blocked_names,
        [
            "batch-b",
            "bounce-no-email",
            "bounce-on-account-suppression-list",
            "bounce-permanent",
            "complaint",
            "identity-bounce",
            "identity-complaint-a",
            "identity-complaint-b",
            "subscription-topic-opt-out",
            "subscription-unsubscribe-all",
        ]
    );
    assert_eq!(
        blocked[&fixture_email("subscription-topic-opt-out")],
        "unsubscribed from topic newsletter of hikyaku-newsletter"
    );
    let entries = stack.suppressions.list().await.unwrap();
    let bounce = entries
        .iter()
        .find(|e| {
            e.email == fixture_email("bounce-permanent") && e.kind == SuppressionKind::Automatic
        })
        .expect("the hard bounce is an automatic entry");
    assert_eq!(
        (
            bounce.reason.as_str(),
            bounce.count,
            bounce.source_run.as_deref()
        ),
        ("hard bounce", 1, Some("fixture-campaign#20261224T090000Z"))
    );
    // The transient bounce is counted toward the policy, not suppressing yet.
    assert!(!blocked.contains_key(&fixture_email("bounce-transient-mailbox-full")));

    let counters = stack.status(&run).await.record.feedback;
    assert_eq!(
        counters,
        FeedbackCounts {
            delivered: 3,
            opened: 1,
            clicked: 1,
            opens: 1,
            clicks: 1,
            hard_bounced: 5,
            soft_bounced: 1,
            auto_replied: 1,
            undetermined_bounced: 1,
            complained: 3,
            rejected: 1,
            rendering_failed: 1,
            delayed: 1,
        }
    );
    // Unreadable records are kept with their reason, beside the good ones of their batch.
    for (id, expected) in [
        ("c0ffee00-ee98-5cb9-9903-4c221d41eb5e", "not JSON"),
        (
            "9a234d2b-e11a-51fe-97f5-6fcc7ca54823",
            "not an SES notification",
        ),
        ("4b203f6f-91ab-5f5b-83ce-d4927ad0c8a2", "not JSON"),
        (
            "dd9e3ebb-f3d7-573d-9048-e9cab682195b",
            "not an SES notification",
        ),
    ] {
        let reason = stack
            .rejected_reason("feedback-topic", id)
            .await
            .unwrap_or_else(|| panic!("{id} recorded"));
        assert!(reason.contains(expected), "{id}: {reason}");
    }
    assert_eq!(
        stack.status(&run).await.record.state,
        RunState::Sending,
        "the limits of 90% are not crossed"
    );
}

/// 1,100 contacts, among them SES mailbox simulator addresses by the hundred: 5 bounce, 1
/// complaint, 3 out-of-office, 1 on the account's suppression list, 5 plainly successful.
fn simulator_mix(i: usize) -> Option<&'static str> {
    match i % 100 {
        0..=4 => Some("bounce"),
        5 => Some("complaint"),
        6..=8 => Some("ooto"),
        9 => Some("suppressionlist"),
        10..=14 => Some("success"),
        _ => None,
    }
}

fn mailbox_of(email: &EmailAddress) -> Option<&str> {
    let local = email.as_str().strip_suffix("@simulator.amazonses.com")?;
    local.split('+').next()
}

#[tokio::test]
async fn a_run_with_simulator_addresses_records_what_the_simulator_said_and_the_next_run_skips_them()
 {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            simulator: Some(simulator_mix),
            // This test counts every event; the guardrails have their own test.
            extra_toml: "[limits]\nmax_bounce_rate = 0.5\nmax_complaint_rate = 0.5\n",
            ..ScenarioSpec::plain("mailboxes", 1_100)
        },
    )
    .await;
    let by_box = |name: &str| -> Vec<EmailAddress> {
        scenario
            .eligible
            .iter()
            .filter(|e| mailbox_of(e) == Some(name))
            .cloned()
            .collect()
    };
    let (bounces, complaints, ootos, listed) = (
        by_box("bounce"),
        by_box("complaint"),
        by_box("ooto"),
        by_box("suppressionlist"),
    );
    assert_eq!(
        (bounces.len(), complaints.len(), ootos.len(), listed.len()),
        (55, 11, 33, 11)
    );
    let audience = scenario.eligible.len() as u64;
    let hard = (bounces.len() + listed.len()) as u64;

    let (run, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    assert_eq!(status.counts.sent, audience);
    scenario.assert_each_eligible_got_exactly_one(&stack).await;

    // Everyone but the hard bounces is delivered; out-of-office replies and complaints follow
    // their delivery.
    let record = stack
        .wait_for_feedback(&run, FEEDBACK_LIMIT, |f| {
            f.delivered == audience - hard
                && f.hard_bounced == hard
                && f.complained == complaints.len() as u64
                && f.auto_replied == ootos.len() as u64
        })
        .await;
    assert_eq!(record.state, RunState::Sending);
    assert_eq!(
        (record.feedback.soft_bounced, record.feedback.rejected),
        (0, 0)
    );

    let ledger = records(&stack, &run).await;
    for email in &scenario.eligible {
        let expected: &[Mark] = match mailbox_of(email) {
            Some("bounce" | "suppressionlist") => &[Mark::HardBounced],
            Some("complaint") => &[Mark::Delivered, Mark::Complained],
            Some("ooto") => &[Mark::Delivered, Mark::AutoReplied],
            _ => &[Mark::Delivered],
        };
        let mut found = marks(&ledger[email]);
        found.sort();
        assert_eq!(found, expected, "{email}");
    }

    let must_not_mail: Vec<EmailAddress> = bounces
        .iter()
        .chain(&listed)
        .chain(&complaints)
        .cloned()
        .collect();
    let blocked = stack
        .suppressions
        .check(&scenario.eligible, None)
        .await
        .unwrap();
    let mut blocked: Vec<&EmailAddress> = blocked.keys().collect();
    blocked.sort();
    let mut expected: Vec<&EmailAddress> = must_not_mail.iter().collect();
    expected.sort();
    assert_eq!(blocked, expected, "exactly the hard bounces and complaints");
    let entries = stack.suppressions.list().await.unwrap();
    for email in &must_not_mail {
        let entry = entries
            .iter()
            .find(|e| &e.email == email && e.kind == SuppressionKind::Automatic)
            .unwrap_or_else(|| panic!("{email} has an automatic entry"));
        assert_eq!(entry.source_run.as_deref(), Some(run.key().as_str()));
    }

    // A second run of the same audience: nothing for the suppressed addresses.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (second, _) = stack.start_run(&scenario).await;
    assert_ne!(second, run);
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &second, LIMIT)
        .await;
    assert_eq!(
        (status.counts.sent, status.counts.suppressed),
        (
            audience - must_not_mail.len() as u64,
            must_not_mail.len() as u64
        )
    );
    let counts = stack.ses_store_counts().await;
    for email in &scenario.eligible {
        let expected = if must_not_mail.contains(email) { 1 } else { 2 };
        assert_eq!(
            counts.get(email.as_str()).copied().unwrap_or(0),
            expected,
            "{email}"
        );
    }
}

#[tokio::test]
async fn an_address_suppressed_after_the_fanout_gets_no_mail() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("late", 300)).await;
    // The fan-out enqueues everyone; nothing is sent yet (no pump runs).
    let (run, answer) = stack.start_run(&scenario).await;
    assert!(answer["status"].is_string(), "{answer}");
    let fanned_out = stack
        .wait_until(&run, LIMIT, |s| s.record.fanout_complete)
        .await;
    assert_eq!(fanned_out.record.progress.selected, 300);

    // Then, before any job is sent: a manual suppression, a hard bounce from another run,
    // an unsubscribe from the whole contact list and one from the campaign's topic.
    let late: Vec<EmailAddress> = scenario.eligible.iter().step_by(20).cloned().collect();
    assert_eq!(late.len(), 15);
    let now = chrono::Utc::now();
    for (i, email) in late.iter().enumerate() {
        match i % 4 {
            0 => {
                stack
                    .suppressions
                    .add(&Suppression {
                        email: email.clone(),
                        reason: "asked by phone".into(),
                        source: "manual".into(),
                        at: now,
                    })
                    .await
                    .unwrap();
            }
            1 => stack
                .suppressions
                .suppress(
                    &hikyaku_core::ports::AutomaticSuppression {
                        email: email.clone(),
                        reason: "hard bounce".into(),
                        diagnostic: None,
                        run: None,
                        at: now,
                    },
                    &format!("late-{i}"),
                )
                .await
                .unwrap(),
            2 | 3 => stack
                .suppressions
                .set_preferences(&PreferenceChange {
                    email: email.clone(),
                    contact_list: "newsletter".into(),
                    unsubscribe_all: i % 4 == 2,
                    opted_in: Vec::new(),
                    opted_out: if i % 4 == 3 {
                        vec!["weekly".into()]
                    } else {
                        Vec::new()
                    },
                    at: now,
                })
                .await
                .unwrap(),
            _ => unreachable!(),
        }
    }
    // An opt-out of another topic forbids nothing here.
    let other_topic = scenario.eligible[1].clone();
    stack
        .suppressions
        .set_preferences(&PreferenceChange {
            email: other_topic.clone(),
            contact_list: "newsletter".into(),
            unsubscribe_all: false,
            opted_in: Vec::new(),
            opted_out: vec!["monthly".into()],
            at: now,
        })
        .await
        .unwrap();

    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    assert_eq!((status.counts.sent, status.counts.suppressed), (285, 15));
    let counts = stack.ses_store_counts().await;
    for email in &late {
        assert!(
            !counts.contains_key(email.as_str()),
            "{email} must not be mailed"
        );
    }
    assert_eq!(counts.get(other_topic.as_str()), Some(&1));
    let ledger = records(&stack, &run).await;
    assert!(
        ledger[&late[2]]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("unsubscribed from contact list newsletter"))
    );
}

/// Every tenth contact a hard bounce: twice the campaign's limit of 5%.
fn every_tenth_bounces(i: usize) -> Option<&'static str> {
    (i % 10 == 3).then_some("bounce")
}

#[tokio::test]
async fn a_run_with_ten_percent_bounces_pauses_itself_and_sends_nothing_more() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            simulator: Some(every_tenth_bounces),
            extra_toml: "[limits]\nmax_bounce_rate = 0.05\nmin_sends = 50\n",
            local_prefix: "bounce+",
            ..ScenarioSpec::plain("bouncy", 1_000)
        },
    )
    .await;
    // The events of earlier tests are handled first; and SES answers in 200 ms here, so the
    // feedback keeps pace with the sending on this small machine as it does on AWS, where SNS
    // and Lambda scale out.
    stack.wait_for_quiet_feedback(FEEDBACK_LIMIT).await;
    let _slow = FaultGuard::set(
        &stack,
        Faults {
            delay_ms: Some(200),
            ..Faults::default()
        },
    )
    .await;
    let (run, _) = stack.start_run(&scenario).await;
    let mut config = stack.pump_config();
    config.max_concurrency = 1;
    config.batch_size = 1;
    let (_, status) = stack
        .pump_until(config.clone(), &run, LIMIT, |s| {
            s.record.state == RunState::Paused || s.is_finished()
        })
        .await;
    assert_eq!(status.record.state, RunState::Paused, "{status:#?}");
    let reason = status.record.pause_reason.clone().unwrap_or_default();
    assert!(reason.contains("bounce rate"), "{reason}");
    assert!(
        reason.contains("above the campaign's limit of 5.00%"),
        "{reason}"
    );

    // Whatever was in flight settles; then, paused, the run sends nothing more.
    let sent_at_pause = stack
        .wait_until(&run, LIMIT, |s| s.counts.claimed == 0)
        .await
        .counts
        .sent;
    assert!(
        sent_at_pause < scenario.eligible.len() as u64,
        "paused before the whole audience: {sent_at_pause} sent"
    );
    let (stats, later) = stack
        .pump_until(config, &run, Duration::from_secs(8), |_| false)
        .await;
    assert_eq!(later.counts.sent, sent_at_pause, "{stats:?}");
    assert_eq!(later.record.state, RunState::Paused);
    let mailed = stack
        .ses_store_counts()
        .await
        .keys()
        .filter(|a| a.contains(scenario.campaign_id.as_str()))
        .count() as u64;
    assert_eq!(mailed, sent_at_pause);
}
