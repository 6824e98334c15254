//! Translates SNS records of SES notifications into core's feedback flow. A record that is not
//! a usable SES notification is recorded and acknowledged, so SNS never retries what cannot
//! succeed; a storage failure fails the invocation, so Lambda's asynchronous retries deliver it
//! again (the flow is idempotent per SNS message id).

use aws_lambda_events::event::sns::{SnsEvent, SnsRecord};
use hikyaku_aws::dynamodb::{
    DynamoCampaigns, DynamoLedger, DynamoRejects, DynamoRuns, DynamoSuppressions,
};
use hikyaku_core::feedback_flow::{
    FeedbackPorts, FeedbackSettings, NotificationReport, handle_notification,
};
use hikyaku_core::notification::{Details, Notification};
use hikyaku_core::ports::{RejectLog, RejectedInput};
use hikyaku_core::send::CampaignCache;
use lambda_runtime::{Error, LambdaEvent};

pub(crate) struct Deps {
    pub campaigns: DynamoCampaigns,
    pub runs: DynamoRuns,
    pub ledger: DynamoLedger,
    pub rejects: DynamoRejects,
    pub suppressions: DynamoSuppressions,
    pub cache: CampaignCache,
    pub settings: FeedbackSettings,
}

/// Where unusable notifications are kept (`rejected#feedback-topic` in the ledger table).
const REJECT_SOURCE: &str = "feedback-topic";

/// What became of one SNS record.
#[derive(Debug, PartialEq)]
pub(crate) enum Disposition {
    Handled(NotificationReport),
    /// An SES event type hikyaku does not act on (a new one, or `Send`): acknowledged.
    Ignored(String),
    /// Not a usable SES notification: recorded for the operator and acknowledged.
    Rejected(String),
    /// Try again later (storage failure): the invocation fails.
    Retry(String),
}

pub(crate) async fn handle_record(
    ports: &FeedbackPorts<'_>,
    rejects: &dyn RejectLog,
    settings: &FeedbackSettings,
    cache: &CampaignCache,
    record: &SnsRecord,
) -> Disposition {
    let sns_id = record.sns.message_id.as_str();
    let message = record.sns.message.as_str();
    let notification = match Notification::parse(message) {
        Ok(notification) => notification,
        Err(err) => return reject(rejects, sns_id, message, err.to_string()).await,
    };
    if let Details::Unknown(name) = &notification.details {
        let reason = format!("event type '{name}' is not one hikyaku acts on");
        tracing::warn!(sns_message_id = %sns_id, event_type = %name, "notification acknowledged: unknown event type");
        return Disposition::Ignored(reason);
    }
    let now = chrono::Utc::now();
    match handle_notification(ports, settings, cache, sns_id, &notification, now).await {
        Ok(report) => {
            tracing::info!(
                sns_message_id = %sns_id,
                event_type = %notification.kind,
                ses_message_id = notification.ses_message_id().unwrap_or_default(),
                run = report.run.as_deref().unwrap_or_default(),
                recorded = report.recorded,
                duplicates = report.duplicates,
                unknown_recipients = report.unknown_recipients,
                suppressed = report.suppressed,
                soft_bounces_counted = report.soft_bounces_counted,
                preferences_mirrored = report.preferences_mirrored,
                unreadable_addresses = ?report.unreadable_addresses,
                paused = report.paused.as_deref().unwrap_or_default(),
                "notification handled"
            );
            Disposition::Handled(report)
        }
        Err(err) => {
            tracing::warn!(sns_message_id = %sns_id, error = %err, "notification to be delivered again");
            Disposition::Retry(err.to_string())
        }
    }
}

async fn reject(
    rejects: &dyn RejectLog,
    sns_id: &str,
    message: &str,
    reason: String,
) -> Disposition {
    tracing::error!(sns_message_id = %sns_id, reason = %reason, "notification acknowledged unread");
    let rejected = RejectedInput::new(
        REJECT_SOURCE,
        sns_id,
        reason.clone(),
        message,
        chrono::Utc::now(),
    );
    match rejects.record(&rejected).await {
        Ok(()) => Disposition::Rejected(reason),
        Err(err) => Disposition::Retry(format!("unreadable notification not recorded: {err}")),
    }
}

pub(crate) async fn function_handler(
    deps: &Deps,
    event: LambdaEvent<SnsEvent>,
) -> Result<(), Error> {
    let ports = FeedbackPorts {
        ledger: &deps.ledger,
        runs: &deps.runs,
        campaigns: &deps.campaigns,
        suppressions: &deps.suppressions,
    };
    handle_event(
        &ports,
        &deps.rejects,
        &deps.settings,
        &deps.cache,
        &event.payload,
    )
    .await
}

/// Every record is handled, one after the other (SNS sends one a call; a batch of them is a
/// test's). If any must be tried again the invocation fails, naming them; the others are
/// safe to handle twice.
pub(crate) async fn handle_event(
    ports: &FeedbackPorts<'_>,
    rejects: &dyn RejectLog,
    settings: &FeedbackSettings,
    cache: &CampaignCache,
    event: &SnsEvent,
) -> Result<(), Error> {
    let mut retry = Vec::new();
    for record in &event.records {
        if let Disposition::Retry(reason) =
            handle_record(ports, rejects, settings, cache, record).await
        {
            retry.push(format!("{}: {reason}", record.sns.message_id));
        }
    }
    if retry.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} notifications must be delivered again: {}",
            retry.len(),
            event.records.len(),
            retry.join("; ")
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use hikyaku_core::campaign::CampaignDefinition;
    use hikyaku_core::email::EmailAddress;
    use hikyaku_core::fakes::*;
    use hikyaku_core::feedback::Mark;
    use hikyaku_core::ids::{ListId, RunRef};
    use hikyaku_core::ledger::{DeliveryRecord, DeliveryState};
    use hikyaku_core::ports::{CampaignStore, ListTopic, RunStore, SuppressionList};
    use hikyaku_core::run::{RunRecord, RunState};

    const CAMPAIGN: &str = r#"
id = "fixture-campaign"
list = "members"
subject = "Winter news"
html = "<p>Hello</p><a href=\"{{amazonSESUnsubscribeUrl}}\">unsubscribe</a>"
[from]
address = "news@hikyaku.example"
[ses]
configuration_set = "hikyaku"
contact_list = "hikyaku-newsletter"
topic = "newsletter"
[limits]
min_sends = 1
max_bounce_rate = 0.5
max_complaint_rate = 0.5
"#;

    /// Every recipient the fixtures name, with the SES message id of its mail.
    const SENT: &[(&str, &str)] = &[
        ("send", "send"),
        ("delivery", "delivery"),
        ("bounce-permanent", "bounce-permanent"),
        ("bounce-no-email", "bounce-no-email"),
        (
            "bounce-on-account-suppression-list",
            "bounce-on-account-suppression-list",
        ),
        (
            "bounce-transient-mailbox-full",
            "bounce-transient-mailbox-full",
        ),
        ("bounce-auto-reply", "bounce-auto-reply"),
        ("bounce-undetermined", "bounce-undetermined"),
        ("complaint", "complaint"),
        ("complaint-not-spam", "complaint-not-spam"),
        ("open", "open"),
        ("click", "click"),
        ("reject", "reject"),
        ("rendering-failure", "rendering-failure"),
        ("delivery-delay", "delivery-delay"),
        (
            "subscription-unsubscribe-all",
            "subscription-unsubscribe-all",
        ),
        ("subscription-topic-opt-out", "subscription-topic-opt-out"),
        ("identity-bounce", "identity-bounce"),
        ("identity-complaint-a", "identity-complaint"),
        ("identity-delivery", "identity-delivery"),
        ("unknown-event-type", "unknown-event-type"),
        ("batch-a", "batch-a"),
        ("batch-b", "batch-b"),
    ];

    struct World {
        campaigns: FakeCampaigns,
        runs: FakeRuns,
        ledger: FakeLedger,
        suppressions: FakeSuppressions,
        rejects: FakeRejects,
        cache: CampaignCache,
        settings: FeedbackSettings,
    }

    fn run() -> RunRef {
        RunRef::from_key("fixture-campaign#20261224T090000Z").unwrap()
    }

    fn email(local: &str) -> EmailAddress {
        EmailAddress::parse(&format!("{local}@example.com")).unwrap()
    }

    impl World {
        async fn new() -> World {
            let world = World {
                campaigns: FakeCampaigns::default(),
                runs: FakeRuns::default(),
                ledger: FakeLedger::default(),
                suppressions: FakeSuppressions::default(),
                rejects: FakeRejects::default(),
                cache: CampaignCache::default(),
                settings: FeedbackSettings::default(),
            };
            let definition = CampaignDefinition::from_toml_str(CAMPAIGN, None).unwrap();
            world.campaigns.create(&definition).await.unwrap();
            let at = Utc.with_ymd_and_hms(2026, 12, 24, 9, 0, 0).unwrap();
            let mut record = RunRecord::new(run(), ListId::parse("members").unwrap(), at);
            record.state = RunState::Sending;
            world.runs.start(&record).await.unwrap();
            for (local, message) in SENT {
                world.ledger.insert(
                    &run(),
                    DeliveryRecord {
                        email: email(local),
                        state: DeliveryState::Sent,
                        claim_token: Some("req-1".into()),
                        claimed_at: Some(at),
                        ses_message_id: Some(format!("0100019a-{message}-000000")),
                        reason: None,
                        updated_at: at,
                        marks: Default::default(),
                        feedback_detail: None,
                    },
                );
            }
            world
        }

        fn ports(&self) -> FeedbackPorts<'_> {
            FeedbackPorts {
                ledger: &self.ledger,
                runs: &self.runs,
                campaigns: &self.campaigns,
                suppressions: &self.suppressions,
            }
        }

        /// Every record of the fixture, one after the other.
        async fn feed(&self, fixture: &str) -> Vec<Disposition> {
            let path = format!(
                "{}/../../events/feedback/{fixture}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let event: SnsEvent = serde_json::from_str(&text).expect("fixture is an SNS event");
            let mut out = Vec::new();
            for record in &event.records {
                out.push(
                    handle_record(
                        &self.ports(),
                        &self.rejects,
                        &self.settings,
                        &self.cache,
                        record,
                    )
                    .await,
                );
            }
            out
        }

        fn marks(&self, local: &str) -> Vec<Mark> {
            let records = self.ledger.records.lock().unwrap();
            let record = &records[&(run(), email(local))];
            record.marks.0.iter().map(|(mark, _)| *mark).collect()
        }

        async fn blocked(&self, local: &str) -> Option<String> {
            let topic = ListTopic {
                contact_list: "hikyaku-newsletter".into(),
                topic: Some("newsletter".into()),
            };
            self.suppressions
                .check(&[email(local)], Some(&topic))
                .await
                .unwrap()
                .remove(&email(local))
        }

        async fn counters(&self) -> hikyaku_core::feedback::FeedbackCounts {
            self.runs.get(&run()).await.unwrap().unwrap().feedback
        }
    }

    fn handled(dispositions: &[Disposition]) -> &NotificationReport {
        match dispositions {
            [Disposition::Handled(report)] => report,
            other => panic!("expected one handled notification, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_fixture_file_is_an_sns_event() {
        let dir = format!("{}/../../events/feedback", env!("CARGO_MANIFEST_DIR"));
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                let event: SnsEvent = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!event.records.is_empty(), "{}", path.display());
                count += 1;
            }
        }
        assert!(count >= 24, "{count} fixtures");
    }

    #[tokio::test]
    async fn permanent_bounces_of_every_sub_type_suppress_with_the_diagnostic() {
        let world = World::new().await;
        for name in [
            "bounce-permanent",
            "bounce-no-email",
            "bounce-on-account-suppression-list",
        ] {
            let report = handled(&world.feed(&format!("{name}.json")).await).clone();
            assert_eq!((report.recorded, report.suppressed), (1, 1), "{name}");
            assert_eq!(world.marks(name), [Mark::HardBounced], "{name}");
            assert_eq!(world.blocked(name).await.as_deref(), Some("hard bounce"));
            let entry = world.suppressions.address(&email(name));
            let (suppression, count) = entry.automatic.unwrap();
            assert!(
                suppression.diagnostic.unwrap().starts_with("Permanent/"),
                "{name}"
            );
            assert_eq!(suppression.run, Some(run()));
            assert_eq!(count, 1);
        }
        assert_eq!(world.counters().await.hard_bounced, 3);
    }

    #[tokio::test]
    async fn soft_auto_reply_and_undetermined_bounces_are_recorded_without_suppressing() {
        let world = World::new().await;
        for (name, mark) in [
            ("bounce-transient-mailbox-full", Mark::SoftBounced),
            ("bounce-auto-reply", Mark::AutoReplied),
            ("bounce-undetermined", Mark::UndeterminedBounce),
        ] {
            let report = handled(&world.feed(&format!("{name}.json")).await).clone();
            assert_eq!((report.recorded, report.suppressed), (1, 0), "{name}");
            assert_eq!(world.marks(name), [mark]);
            assert_eq!(world.blocked(name).await, None, "{name}");
        }
        let history = world
            .suppressions
            .address(&email("bounce-transient-mailbox-full"))
            .history
            .unwrap();
        assert_eq!(history.soft_bounces(), 1);
        assert!(
            world
                .suppressions
                .address(&email("bounce-auto-reply"))
                .history
                .is_none()
        );
        let counters = world.counters().await;
        assert_eq!(
            (
                counters.soft_bounced,
                counters.auto_replied,
                counters.undetermined_bounced
            ),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn complaints_suppress_unless_not_spam_and_identity_ones_find_their_run() {
        let world = World::new().await;
        handled(&world.feed("complaint.json").await);
        assert_eq!(
            world.blocked("complaint").await.as_deref(),
            Some("complaint")
        );
        handled(&world.feed("complaint-not-spam.json").await);
        assert_eq!(world.blocked("complaint-not-spam").await, None);
        assert_eq!(world.marks("complaint-not-spam"), [Mark::Complained]);

        // No tags: the run comes from the ledger's message id; both named recipients go.
        let report = handled(&world.feed("identity-complaint.json").await).clone();
        assert_eq!(
            report.run.as_deref(),
            Some("fixture-campaign#20261224T090000Z")
        );
        assert_eq!(report.suppressed, 2);
        assert_eq!((report.recorded, report.unknown_recipients), (1, 1));
        assert!(world.blocked("identity-complaint-b").await.is_some());
        assert_eq!(world.counters().await.complained, 3);
    }

    #[tokio::test]
    async fn engagement_and_delivery_events_mark_their_recipient_and_count() {
        let world = World::new().await;
        for (name, mark) in [
            ("delivery", Mark::Delivered),
            ("open", Mark::Opened),
            ("click", Mark::Clicked),
            ("reject", Mark::Rejected),
            ("rendering-failure", Mark::RenderingFailed),
            ("delivery-delay", Mark::Delayed),
            ("identity-delivery", Mark::Delivered),
        ] {
            let report = handled(&world.feed(&format!("{name}.json")).await).clone();
            assert_eq!(report.recorded, 1, "{name}");
            assert_eq!(world.marks(name), [mark], "{name}");
            assert_eq!(world.blocked(name).await, None, "{name}");
        }
        let counters = world.counters().await;
        assert_eq!(
            (
                counters.delivered,
                counters.opened,
                counters.opens,
                counters.clicked
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(
            (
                counters.rejected,
                counters.rendering_failed,
                counters.delayed
            ),
            (1, 1, 1)
        );
        let records = world.ledger.records.lock().unwrap();
        let rejected = &records[&(run(), email("reject"))];
        assert!(
            rejected.feedback_detail.is_some(),
            "the rejection's reason is kept"
        );
    }

    #[tokio::test]
    async fn subscription_events_are_mirrored_for_the_consent_check() {
        let world = World::new().await;
        let report = handled(&world.feed("subscription-topic-opt-out.json").await).clone();
        assert_eq!(report.preferences_mirrored, 1);
        assert_eq!(
            world.blocked("subscription-topic-opt-out").await.as_deref(),
            Some("unsubscribed from topic newsletter of hikyaku-newsletter")
        );
        handled(&world.feed("subscription-unsubscribe-all.json").await);
        assert_eq!(
            world
                .blocked("subscription-unsubscribe-all")
                .await
                .as_deref(),
            Some("unsubscribed from contact list hikyaku-newsletter")
        );
    }

    #[tokio::test]
    async fn send_events_cost_nothing_and_unknown_types_are_acknowledged() {
        let world = World::new().await;
        let report = handled(&world.feed("send.json").await).clone();
        assert_eq!(report.recorded, 0);
        assert!(world.marks("send").is_empty());
        assert!(matches!(
            world.feed("unknown-event-type.json").await.as_slice(),
            [Disposition::Ignored(reason)] if reason.contains("Quarantine")
        ));
        assert!(world.marks("unknown-event-type").is_empty());
        assert!(world.rejects.rejected.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unreadable_messages_are_recorded_and_acknowledged() {
        let world = World::new().await;
        for (name, expected) in [
            ("malformed.json", "not JSON"),
            ("not-ses.json", "not an SES"),
        ] {
            match world.feed(name).await.as_slice() {
                [Disposition::Rejected(reason)] => assert!(reason.contains(expected), "{reason}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let rejected = world.rejects.rejected.lock().unwrap();
        assert_eq!(rejected.len(), 2);
        assert!(rejected.iter().all(|r| r.source == "feedback-topic"));
    }

    #[tokio::test]
    async fn a_mixed_batch_handles_the_good_records_and_counts_a_duplicate_once() {
        let world = World::new().await;
        let out = world.feed("batch-mixed.json").await;
        assert_eq!(out.len(), 5);
        assert!(matches!(&out[0], Disposition::Handled(r) if r.recorded == 1));
        assert!(matches!(&out[1], Disposition::Rejected(_)));
        assert!(matches!(&out[2], Disposition::Handled(r) if r.suppressed == 1));
        assert!(matches!(&out[3], Disposition::Handled(r) if r.duplicates == 1 && r.recorded == 0));
        assert!(matches!(&out[4], Disposition::Rejected(_)));
        let counters = world.counters().await;
        assert_eq!((counters.delivered, counters.hard_bounced), (1, 1));
        assert!(world.blocked("batch-b").await.is_some());
    }

    #[tokio::test]
    async fn a_storage_failure_fails_the_invocation_so_lambda_retries_it() {
        let world = World::new().await;
        world
            .ledger
            .failing
            .lock()
            .unwrap()
            .insert("apply_feedback");
        let text = include_str!("../../../events/feedback/delivery.json");
        let event: SnsEvent = serde_json::from_str(text).unwrap();
        let err = handle_event(
            &world.ports(),
            &world.rejects,
            &world.settings,
            &world.cache,
            &event,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("2240c834"), "{err}");

        world.ledger.failing.lock().unwrap().clear();
        handle_event(
            &world.ports(),
            &world.rejects,
            &world.settings,
            &world.cache,
            &event,
        )
        .await
        .unwrap();
        assert_eq!(world.counters().await.delivered, 1);
    }

    #[tokio::test]
    async fn crossing_a_guardrail_pauses_the_run_with_the_figures() {
        let world = World::new().await;
        // min_sends 1 and a 50% limit: one delivery, then two hard bounces.
        handled(&world.feed("delivery.json").await);
        handled(&world.feed("bounce-permanent.json").await);
        assert_eq!(
            world.runs.get(&run()).await.unwrap().unwrap().state,
            RunState::Sending
        );
        let report = handled(&world.feed("bounce-no-email.json").await).clone();
        let reason = report.paused.expect("paused");
        assert!(
            reason.contains("bounce rate 66.67% (2 of 3 resolved sends)"),
            "{reason}"
        );
        let record = world.runs.get(&run()).await.unwrap().unwrap();
        assert_eq!(record.state, RunState::Paused);
        assert_eq!(record.pause_reason.as_deref(), Some(reason.as_str()));
    }
}
