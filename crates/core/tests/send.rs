//! The sender's work on jobs against in-memory ports: once, nothing lost, consent, and each
//! class of SES error handled as DESIGN.md says.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use common::*;
use hikyaku_core::fakes::*;
use hikyaku_core::ids::{CampaignId, RunId, RunRef};
use hikyaku_core::job::{JobRecipient, SendJob};
use hikyaku_core::ledger::{DeliveryRecord, DeliveryState};
use hikyaku_core::ports::*;
use hikyaku_core::run::{RunRecord, RunState};
use hikyaku_core::send::*;

struct World {
    campaigns: FakeCampaigns,
    runs: FakeRuns,
    ledger: FakeLedger,
    suppressions: FakeSuppressions,
    contacts: FakeContacts,
    sender: FakeSender,
    queue: FakeQueue,
    budget: FakeBudgetStore,
    account: FakeAccount,
    throttle: Throttle,
    cache: CampaignCache,
    settings: SendSettings,
}

fn run() -> RunRef {
    RunRef::new(
        CampaignId::parse("spring").unwrap(),
        RunId::from_scheduled_time(at()),
    )
}

impl World {
    async fn new() -> World {
        let world = World {
            campaigns: FakeCampaigns::default(),
            runs: FakeRuns::default(),
            ledger: FakeLedger::default(),
            suppressions: FakeSuppressions::default(),
            contacts: FakeContacts::default(),
            sender: FakeSender::default(),
            queue: FakeQueue::default(),
            budget: FakeBudgetStore::default(),
            account: FakeAccount::default(),
            throttle: Throttle::new(4),
            cache: CampaignCache::default(),
            settings: SendSettings::default(),
        };
        world.campaigns.create(&definition()).await.unwrap();
        let mut record = RunRecord::new(run(), list(), at());
        record.state = RunState::Sending;
        world.runs.start(&record).await.unwrap();
        world
    }

    fn ports(&self) -> SendPorts<'_> {
        SendPorts {
            campaigns: &self.campaigns,
            runs: &self.runs,
            ledger: &self.ledger,
            suppressions: &self.suppressions,
            contacts: &self.contacts,
            sender: &self.sender,
            queue: &self.queue,
            budget: &self.budget,
            account: &self.account,
        }
    }

    fn budget_state(&self) -> hikyaku_core::budget::BudgetState {
        self.budget.items.lock().unwrap()["default"].clone()
    }

    fn run_record(&self) -> RunRecord {
        self.runs.runs.lock().unwrap()[&run()].clone()
    }

    async fn process(&self, job: SendJob, token: &str) -> Result<JobReport, JobError> {
        self.process_with_time(job, token, Duration::from_secs(600))
            .await
    }

    async fn process_with_time(
        &self,
        job: SendJob,
        token: &str,
        left: Duration,
    ) -> Result<JobReport, JobError> {
        self.process_at(job, token, left, &Utc::now).await
    }

    async fn process_at(
        &self,
        job: SendJob,
        token: &str,
        left: Duration,
        now: &(dyn Fn() -> chrono::DateTime<Utc> + Send + Sync),
    ) -> Result<JobReport, JobError> {
        let time_left = move || left;
        let ctx = JobContext {
            token,
            time_left: &time_left,
            now,
        };
        process_job(
            &self.ports(),
            &self.settings,
            &self.throttle,
            &self.cache,
            job,
            &ctx,
        )
        .await
    }

    /// Processes requeued jobs until none is left, as the queue would over time.
    async fn drain_requeued(&self) -> usize {
        let mut rounds = 0;
        loop {
            let delayed = self.queue.take_delayed();
            if delayed.is_empty() {
                return rounds;
            }
            rounds += 1;
            assert!(rounds < 50, "requeueing never ends");
            for (i, (job, delay)) in delayed.into_iter().enumerate() {
                assert!(delay >= self.settings.retry_base);
                self.process(job, &format!("retry-{rounds}-{i}"))
                    .await
                    .unwrap();
            }
        }
    }

    fn sent_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for to in self.sender.sent_to() {
            *counts.entry(to.to_string()).or_default() += 1;
        }
        counts
    }

    fn state(&self, address: &str) -> Option<DeliveryState> {
        self.ledger.state(&run(), &email(address))
    }
}

fn job(addresses: &[&str]) -> SendJob {
    SendJob::new(
        &run(),
        0,
        addresses
            .iter()
            .map(|a| JobRecipient {
                email: email(a),
                attributes: [(
                    "first_name".to_owned(),
                    hikyaku_core::contact::AttrValue::Str("Kenji".into()),
                )]
                .into(),
                position: None,
            })
            .collect(),
    )
}

fn addresses(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i:02}@example.com")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn when_a_job_is_sent_then_each_recipient_gets_one_tagged_single_recipient_email() {
    let world = World::new().await;
    let all = addresses(50);
    let report = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert_eq!(report.sent, 50);
    let sent = world.sender.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 50);
    let first = &sent[0];
    assert_eq!(first.subject, "Hello Kenji");
    assert!(first.html.contains("{{amazonSESUnsubscribeUrl}}"));
    assert_eq!(first.configuration_set.as_deref(), Some("hikyaku"));
    assert_eq!(
        first.list_management,
        Some(("members".into(), Some("monthly".into())))
    );
    assert!(first.tags.contains(&(CAMPAIGN_TAG.into(), "spring".into())));
    assert!(
        first
            .tags
            .contains(&(RUN_TAG.into(), "20261224T090000Z".into()))
    );
    assert_eq!(first.from, "\"Hikyaku News\" <news@hikyaku.example>");
    assert!(
        all.iter()
            .all(|a| world.state(a) == Some(DeliveryState::Sent))
    );
    assert_eq!(world.contacts.last_sent.lock().unwrap().len(), 50);
}

#[tokio::test]
async fn when_a_job_is_delivered_twice_then_nobody_is_sent_twice() {
    let world = World::new().await;
    let all = addresses(20);
    world.process(job(&refs(&all)), "t1").await.unwrap();
    let again = world.process(job(&refs(&all)), "t2").await.unwrap();
    assert_eq!(again.already_done, 20);
    assert_eq!(again.sent, 0);
    assert!(world.sent_counts().values().all(|&n| n == 1));
}

#[tokio::test]
async fn when_two_deliveries_run_at_once_then_the_loser_puts_its_recipients_back() {
    let world = World::new().await;
    let all = addresses(30);
    let (a, b) = tokio::join!(
        world.process(job(&refs(&all)), "t1"),
        world.process(job(&refs(&all)), "t2")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.sent + b.sent, 30);
    world.drain_requeued().await;
    assert_eq!(world.sent_counts().len(), 30);
    assert!(world.sent_counts().values().all(|&n| n == 1));
}

#[tokio::test]
async fn when_an_address_is_suppressed_then_it_is_recorded_and_never_sent() {
    let world = World::new().await;
    world
        .suppressions
        .add(&Suppression {
            email: email("r01@example.com"),
            reason: "complaint".into(),
            source: "manual".into(),
            at: at(),
        })
        .await
        .unwrap();
    let all = addresses(3);
    let report = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert_eq!((report.sent, report.suppressed), (2, 1));
    assert_eq!(
        world.state("r01@example.com"),
        Some(DeliveryState::Suppressed)
    );
    assert!(!world.sent_counts().contains_key("r01@example.com"));
}

#[tokio::test]
async fn when_ses_throttles_then_recipients_are_retried_later_and_none_fails() {
    let world = World::new().await;
    *world.sender.throttle_every.lock().unwrap() = Some(3);
    let all = addresses(50);
    let first = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert_eq!(first.failed, 0);
    // Every instance slows down: the shared budget recorded the throttling and backed off.
    let budget = world.budget_state();
    assert!(budget.throttles > 0);
    assert!(budget.factor < 1.0);
    world.drain_requeued().await;
    let counts = world.sent_counts();
    assert_eq!(counts.len(), 50, "nothing lost");
    assert!(counts.values().all(|&n| n == 1), "nothing twice");
    assert!(
        all.iter()
            .all(|a| world.state(a) == Some(DeliveryState::Sent))
    );
}

#[tokio::test]
async fn when_ses_rejects_a_message_then_it_fails_with_the_reason_and_is_not_retried() {
    let world = World::new().await;
    world.sender.refuse.lock().unwrap().insert(
        email("r02@example.com"),
        FakeSender::error(SendErrorClass::Permanent, "MessageRejected"),
    );
    let all = addresses(5);
    let report = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert_eq!((report.sent, report.failed, report.requeued), (4, 1, 0));
    let records = world.ledger.records(&run()).await.unwrap();
    let failed = records
        .iter()
        .find(|r| r.email.as_str() == "r02@example.com")
        .unwrap();
    assert_eq!(failed.state, DeliveryState::Failed);
    assert!(
        failed
            .reason
            .as_deref()
            .unwrap()
            .contains("MessageRejected")
    );
    assert!(world.queue.take_delayed().is_empty());
}

#[tokio::test]
async fn when_ses_stops_the_account_then_the_run_pauses_and_the_rest_is_held() {
    let world = World::new().await;
    world.sender.refuse.lock().unwrap().insert(
        email("r00@example.com"),
        FakeSender::error(SendErrorClass::Fatal, "SendingPausedException"),
    );
    let all = addresses(10);
    let report = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert!(report.held >= 1);
    let record = world.runs.get(&run()).await.unwrap().unwrap();
    assert_eq!(record.state, RunState::Paused);
    assert!(
        record
            .pause_reason
            .unwrap()
            .contains("SendingPausedException")
    );
    // Held recipients have no ledger record and wait on the queue until the run is resumed.
    assert_eq!(world.state("r00@example.com"), None);
    let delayed = world.queue.take_delayed();
    assert_eq!(delayed.len(), 1);
    assert_eq!(delayed[0].0.recipients.len() as u32, report.held);
    assert_eq!(delayed[0].1, world.settings.paused_recheck);
    // A job of the paused run that arrives later is held whole, and kept.
    let later = world.process(job(&refs(&all)), "t2").await.unwrap();
    assert_eq!(later.held, 10);
    let kept = world.queue.take_delayed();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].0.recipients.len(), 10);
    assert!(world.sender.sent_to().is_empty());
}

#[tokio::test]
async fn when_a_suppressed_recipient_has_an_abandoned_claim_then_it_ends_uncertain() {
    let world = World::new().await;
    let long_ago = Utc::now() - chrono::Duration::hours(2);
    world.ledger.insert(
        &run(),
        DeliveryRecord {
            email: email("r00@example.com"),
            state: DeliveryState::Claimed,
            claim_token: Some("crashed".into()),
            claimed_at: Some(long_ago),
            ses_message_id: None,
            reason: None,
            updated_at: long_ago,
            marks: Default::default(),
            feedback_detail: None,
        },
    );
    world
        .suppressions
        .add(&Suppression {
            email: email("r00@example.com"),
            reason: "bounce".into(),
            source: "feedback".into(),
            at: at(),
        })
        .await
        .unwrap();
    let report = world
        .process(job(&["r00@example.com"]), "t1")
        .await
        .unwrap();
    assert_eq!(report.uncertain, 1);
    assert_eq!(
        world.state("r00@example.com"),
        Some(DeliveryState::Uncertain)
    );
}

#[tokio::test]
async fn when_the_claim_found_is_our_own_then_the_recipient_is_sent() {
    let world = World::new().await;
    // A claim write whose answer was lost and that the SDK sent again finds itself.
    world.ledger.insert(
        &run(),
        DeliveryRecord {
            email: email("r00@example.com"),
            state: DeliveryState::Claimed,
            claim_token: Some("t1".into()),
            claimed_at: Some(Utc::now()),
            ses_message_id: None,
            reason: None,
            updated_at: Utc::now(),
            marks: Default::default(),
            feedback_detail: None,
        },
    );
    let report = world
        .process(job(&["r00@example.com"]), "t1")
        .await
        .unwrap();
    assert_eq!(report.sent, 1);
    assert_eq!(world.state("r00@example.com"), Some(DeliveryState::Sent));
}

#[tokio::test]
async fn when_the_ledger_refuses_for_good_then_the_message_fails_instead_of_cycling() {
    let world = World::new().await;
    world
        .ledger
        .permanent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    world.ledger.failing.lock().unwrap().insert("claim");
    let err = world
        .process(job(&refs(&addresses(3))), "t1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobError::Retry(JobFailure::Ledger(_))),
        "{err}"
    );
    assert!(world.queue.take_delayed().is_empty());
}

#[tokio::test]
async fn when_ses_gives_no_answer_then_the_recipient_is_uncertain_and_never_resent() {
    let world = World::new().await;
    world.sender.refuse.lock().unwrap().insert(
        email("r00@example.com"),
        FakeSender::error(SendErrorClass::OutcomeUnknown, "TimeoutError"),
    );
    let report = world
        .process(job(&refs(&addresses(2))), "t1")
        .await
        .unwrap();
    assert_eq!((report.sent, report.uncertain, report.requeued), (1, 1, 0));
    assert_eq!(
        world.state("r00@example.com"),
        Some(DeliveryState::Uncertain)
    );
    let again = world
        .process(job(&refs(&addresses(2))), "t2")
        .await
        .unwrap();
    assert_eq!(again.already_done, 2);
}

#[tokio::test]
async fn when_ses_refuses_for_the_daily_quota_then_the_run_waits_for_quota() {
    let world = World::new().await;
    world.sender.refuse.lock().unwrap().insert(
        email("r00@example.com"),
        FakeSender::error(SendErrorClass::QuotaExhausted, "LimitExceededException"),
    );
    let report = world
        .process(job(&refs(&addresses(2))), "t1")
        .await
        .unwrap();
    // Once SES says the day's quota is gone, the rest of the job does not call SES either.
    assert_eq!((report.sent, report.requeued, report.failed), (0, 2, 0));
    let delayed = world.queue.take_delayed();
    assert_eq!(delayed.len(), 1);
    let recheck = world.settings.budget.quota_recheck;
    assert!(delayed[0].1 <= recheck && delayed[0].1 > recheck - Duration::from_secs(5));
    assert_eq!(world.run_record().state, RunState::WaitingForQuota);
    assert!(world.run_record().resume_at.is_some());
    assert!(world.budget_state().quota_refused_at.is_some());
    assert_eq!(world.state("r00@example.com"), None, "claim released");
    assert_eq!(world.state("r01@example.com"), None, "never claimed");
}

#[tokio::test]
async fn when_a_claim_was_abandoned_then_the_recipient_becomes_uncertain_not_resent() {
    let world = World::new().await;
    let long_ago = Utc::now() - chrono::Duration::hours(2);
    world.ledger.insert(
        &run(),
        DeliveryRecord {
            email: email("r00@example.com"),
            state: DeliveryState::Claimed,
            claim_token: Some("crashed".into()),
            claimed_at: Some(long_ago),
            ses_message_id: None,
            reason: None,
            updated_at: long_ago,
            marks: Default::default(),
            feedback_detail: None,
        },
    );
    let report = world
        .process(job(&["r00@example.com"]), "t1")
        .await
        .unwrap();
    assert_eq!(report.uncertain, 1);
    assert_eq!(
        world.state("r00@example.com"),
        Some(DeliveryState::Uncertain)
    );
    assert!(world.sender.sent_to().is_empty());
}

#[tokio::test]
async fn when_the_ledger_is_down_then_recipients_go_back_to_the_queue() {
    let world = World::new().await;
    world.ledger.failing.lock().unwrap().insert("claim");
    let report = world
        .process(job(&refs(&addresses(4))), "t1")
        .await
        .unwrap();
    assert_eq!(report.requeued, 4);
    assert!(world.sender.sent_to().is_empty());
    world.ledger.failing.lock().unwrap().clear();
    world.drain_requeued().await;
    assert_eq!(world.sent_counts().len(), 4);
}

#[tokio::test]
async fn when_the_outcome_cannot_be_recorded_then_the_recipient_is_never_resent() {
    let world = World::new().await;
    world.ledger.failing.lock().unwrap().insert("complete");
    let report = world
        .process(job(&["r00@example.com"]), "t1")
        .await
        .unwrap();
    assert_eq!(report.unrecorded, 1);
    world.ledger.failing.lock().unwrap().clear();
    // Redelivered while the claim is fresh: put back again, not sent.
    let (retry, _) = world.queue.take_delayed().pop().unwrap();
    let fresh = world.process(retry.clone(), "t2").await.unwrap();
    assert_eq!(fresh.requeued, 1);
    // Redelivered once the claim is older than any sender lives: uncertain, still not sent.
    let later = || Utc::now() + chrono::Duration::hours(3);
    let stale = world
        .process_at(retry, "t3", Duration::from_secs(600), &later)
        .await
        .unwrap();
    assert_eq!(stale.uncertain, 1);
    assert_eq!(
        world.state("r00@example.com"),
        Some(DeliveryState::Uncertain)
    );
    assert_eq!(world.sent_counts().get("r00@example.com"), Some(&1));
}

#[tokio::test]
async fn when_time_runs_out_then_unsent_recipients_go_back() {
    let world = World::new().await;
    let report = world
        .process_with_time(job(&refs(&addresses(3))), "t1", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(report.requeued, 3);
    assert!(world.sender.sent_to().is_empty());
    // Claims were released, so the next attempt sends.
    world.drain_requeued().await;
    assert_eq!(world.sent_counts().len(), 3);
}

#[tokio::test]
async fn when_the_queue_refuses_the_retry_then_the_whole_job_is_delivered_again() {
    let world = World::new().await;
    *world.sender.throttle_every.lock().unwrap() = Some(1);
    *world.queue.fail_after_calls.lock().unwrap() = Some(0);
    let err = world
        .process(job(&["r00@example.com"]), "t1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobError::Retry(JobFailure::Requeue(_))),
        "{err}"
    );
}

#[tokio::test]
async fn when_the_run_does_not_exist_then_the_job_is_rejected() {
    let world = World::new().await;
    let mut stray = job(&["r00@example.com"]);
    stray.run_id = RunId::parse("20200101T000000Z").unwrap();
    let err = world.process(stray, "t1").await.unwrap_err();
    assert!(
        matches!(err, JobError::Reject(JobRejection::UnknownRun(_))),
        "{err}"
    );
}

#[tokio::test]
async fn when_a_contact_lacks_a_template_variable_then_only_that_recipient_fails() {
    let world = World::new().await;
    let mut mixed = job(&["r00@example.com", "r01@example.com"]);
    mixed.recipients[1].attributes.clear();
    let report = world.process(mixed, "t1").await.unwrap();
    assert_eq!((report.sent, report.failed), (1, 1));
    let records = world.ledger.records(&run()).await.unwrap();
    let failed = records
        .iter()
        .find(|r| r.state == DeliveryState::Failed)
        .unwrap();
    assert!(failed.reason.as_deref().unwrap().starts_with("template:"));
}

#[test]
fn retry_delays_double_up_to_the_maximum() {
    let settings = SendSettings::default();
    assert_eq!(settings.retry_delay(1), Duration::from_secs(2));
    assert_eq!(settings.retry_delay(2), Duration::from_secs(4));
    assert_eq!(settings.retry_delay(30), Duration::from_secs(300));
}

/// As if the snapshot's minute had passed.
fn expire_account_snapshot(world: &World) {
    let mut items = world.budget.items.lock().unwrap();
    let account = items.get_mut("default").unwrap().account.as_mut().unwrap();
    account.fetched_at -= chrono::Duration::hours(1);
}

fn set_account(world: &World, change: impl FnOnce(&mut hikyaku_core::budget::AccountSnapshot)) {
    change(&mut world.account.snapshot.lock().unwrap());
}

#[tokio::test]
async fn sends_stop_at_the_daily_quota_and_the_run_resumes_by_itself_when_it_has_room() {
    let world = World::new().await;
    set_account(&world, |a| {
        a.max_24_hour_send = 1000.0;
        a.sent_last_24_hours = 990.0;
    });
    let all = addresses(30);
    let report = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert_eq!((report.sent, report.requeued, report.failed), (10, 20, 0));
    let record = world.run_record();
    assert_eq!(record.state, RunState::WaitingForQuota);
    let resume_at = record.resume_at.unwrap();
    assert!(
        resume_at > Utc::now() + chrono::Duration::hours(23),
        "{resume_at}"
    );

    // Still no room: the job is held again, nobody is sent.
    let delayed = world.queue.take_delayed();
    assert_eq!(delayed.len(), 1);
    let held = world.process(delayed[0].0.clone(), "t2").await.unwrap();
    assert_eq!((held.sent, held.held), (0, 20));
    assert_eq!(world.run_record().state, RunState::WaitingForQuota);

    // The window rolled on: the run resumes and sends the rest, each once.
    set_account(&world, |a| a.sent_last_24_hours = 0.0);
    expire_account_snapshot(&world);
    world.drain_requeued().await;
    assert!(world.run_record().state.allows_sending());
    assert_eq!(world.run_record().resume_at, None);
    let counts = world.sent_counts();
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|&n| n == 1), "nobody twice");
}

#[tokio::test]
async fn an_unhealthy_account_pauses_the_run_with_the_reason_and_sends_nothing() {
    let world = World::new().await;
    set_account(&world, |a| a.enforcement_status = "SHUTDOWN".into());
    let report = world
        .process(job(&refs(&addresses(5))), "t1")
        .await
        .unwrap();
    assert_eq!((report.sent, report.held), (0, 5));
    let record = world.run_record();
    assert_eq!(record.state, RunState::Paused);
    assert!(
        record.pause_reason.as_deref().unwrap().contains("SHUTDOWN"),
        "{:?}",
        record.pause_reason
    );
    assert!(world.sender.sent_to().is_empty());
}

#[tokio::test]
async fn the_budget_costs_far_less_than_one_write_per_email() {
    let world = World::new().await;
    set_account(&world, |a| a.max_send_rate = 2_000.0);
    let all = addresses(400);
    let report = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert_eq!(report.sent, 400);
    let writes = world
        .budget
        .writes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(writes * 10 < 400, "{writes} budget writes for 400 emails");
    assert_eq!(
        world
            .account
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A second campaign, "partner", sending through another account's role, with its run.
async fn add_role_campaign(world: &World) -> RunRef {
    let toml = CAMPAIGN_TOML.replace("id = \"spring\"", "id = \"partner\"")
        + "sending_role_arn = \"arn:aws:iam::111122223333:role/hikyaku-sending\"\n\
           external_id = \"partner-external-id\"\n";
    let definition =
        hikyaku_core::campaign::CampaignDefinition::from_toml_str(&toml, None).unwrap();
    world.campaigns.create(&definition).await.unwrap();
    let partner = RunRef::new(
        CampaignId::parse("partner").unwrap(),
        RunId::from_scheduled_time(at()),
    );
    let mut record = RunRecord::new(partner.clone(), list(), at());
    record.state = RunState::Sending;
    world.runs.start(&record).await.unwrap();
    partner
}

fn job_of(run: &RunRef, addresses: &[&str]) -> SendJob {
    let mut job = job(addresses);
    job.campaign_id = run.campaign_id.clone();
    job.run_id = run.run_id.clone();
    job
}

#[tokio::test]
async fn runs_through_another_accounts_role_keep_their_own_budget_and_health() {
    let world = World::new().await;
    let partner = add_role_campaign(&world).await;
    // The partner account is under review; the sender's own account is healthy.
    let mut unhealthy = world.account.snapshot.lock().unwrap().clone();
    unhealthy.enforcement_status = "PROBATION".into();
    world
        .account
        .by_scope
        .lock()
        .unwrap()
        .insert("111122223333/default".into(), unhealthy);

    let own = addresses(6);
    let theirs: Vec<String> = (0..6).map(|i| format!("p{i}@example.com")).collect();
    let (own_report, partner_report) = tokio::join!(
        world.process(job(&refs(&own)), "own"),
        world.process(job_of(&partner, &refs(&theirs)), "partner"),
    );
    let (own_report, partner_report) = (own_report.unwrap(), partner_report.unwrap());

    assert_eq!(own_report.sent, 6);
    assert_eq!((partner_report.sent, partner_report.held), (0, 6));
    assert_eq!(world.run_record().state, RunState::Sending);
    let partner_record = world.runs.runs.lock().unwrap()[&partner].clone();
    assert_eq!(partner_record.state, RunState::Paused);
    assert!(
        partner_record
            .pause_reason
            .as_deref()
            .unwrap()
            .contains("PROBATION"),
        "{:?}",
        partner_record.pause_reason
    );
    // One budget item per account; each account was asked about itself.
    let mut scopes: Vec<String> = world.budget.items.lock().unwrap().keys().cloned().collect();
    scopes.sort();
    assert_eq!(scopes, ["111122223333/default", "default"]);
    let mut asked = world.account.asked.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, ["111122223333/default", "default"]);
    // The own account's mail names no role.
    let sent = world.sender.sent.lock().unwrap();
    assert!(sent.iter().all(|email| email.sending.role.is_none()));
}

#[tokio::test]
async fn mail_through_a_role_names_the_role_and_its_external_id() {
    let world = World::new().await;
    let partner = add_role_campaign(&world).await;
    let theirs = ["p0@example.com", "p1@example.com"];
    let report = world
        .process(job_of(&partner, &theirs), "partner")
        .await
        .unwrap();
    assert_eq!(report.sent, 2);
    let sent = world.sender.sent.lock().unwrap();
    for email in sent.iter() {
        let role = email.sending.role.as_ref().unwrap();
        assert_eq!(role.arn, "arn:aws:iam::111122223333:role/hikyaku-sending");
        assert_eq!(role.external_id.as_deref(), Some("partner-external-id"));
        assert_eq!(email.sending.scope(), "111122223333/default");
    }
}

#[tokio::test]
async fn a_cancelled_runs_recipients_are_recorded_cancelled_and_the_sent_keep_their_state() {
    let world = World::new().await;
    let all = addresses(6);
    let first = world.process(job(&refs(&all[..2])), "t1").await.unwrap();
    assert_eq!(first.sent, 2);
    hikyaku_core::lifecycle::apply(
        &world.runs,
        &run(),
        hikyaku_core::lifecycle::Action::Cancel,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    // The whole job arrives again (a redelivery) with the rest.
    let report = world.process(job(&refs(&all)), "t2").await.unwrap();
    assert_eq!((report.sent, report.cancelled), (0, 4));
    assert_eq!(world.sender.sent_to().len(), 2);
    assert!(
        world.queue.take_delayed().is_empty(),
        "nothing kept on the queue"
    );
    assert_eq!(world.state(&all[0]), Some(DeliveryState::Sent));
    assert_eq!(world.state(&all[5]), Some(DeliveryState::Cancelled));
    let counts = world.ledger.counts(&run()).await.unwrap();
    assert_eq!(
        (counts.sent, counts.cancelled, counts.terminal()),
        (2, 4, 6)
    );
}

#[tokio::test]
async fn a_paused_runs_job_waits_on_the_queue_and_is_sent_once_after_the_resume() {
    let world = World::new().await;
    let all = addresses(5);
    let this_run = run();
    let lifecycle =
        |action| hikyaku_core::lifecycle::apply(&world.runs, &this_run, action, None, Utc::now());
    lifecycle(hikyaku_core::lifecycle::Action::Pause)
        .await
        .unwrap();
    let held = world.process(job(&refs(&all)), "t1").await.unwrap();
    assert_eq!((held.sent, held.held), (0, 5));
    let delayed = world.queue.take_delayed();
    assert_eq!(delayed.len(), 1);
    assert_eq!(delayed[0].1, world.settings.paused_recheck);

    lifecycle(hikyaku_core::lifecycle::Action::Resume)
        .await
        .unwrap();
    let report = world.process(delayed[0].0.clone(), "t2").await.unwrap();
    assert_eq!(report.sent, 5);
    assert!(world.sent_counts().values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_pause_reaches_a_job_in_progress_within_a_recheck() {
    let mut world = World::new().await;
    world.settings.run_recheck = Duration::ZERO;
    let account = world.account.snapshot.lock().unwrap().clone();
    // 40 a second: 40 recipients take about a second.
    *world.account.snapshot.lock().unwrap() = hikyaku_core::budget::AccountSnapshot {
        max_send_rate: 40.0,
        ..account
    };
    let all = addresses(40);
    let this_run = run();
    let pause_soon = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hikyaku_core::lifecycle::apply(
            &world.runs,
            &this_run,
            hikyaku_core::lifecycle::Action::Pause,
            None,
            Utc::now(),
        )
        .await
        .unwrap();
    };
    let (report, ()) = tokio::join!(world.process(job(&refs(&all)), "t1"), pause_soon);
    let report = report.unwrap();
    assert!(report.sent > 0 && report.sent < 30, "{report:?}");
    assert_eq!(report.sent + report.held, 40, "{report:?}");
    let delayed = world.queue.take_delayed();
    assert_eq!(delayed[0].1, world.settings.paused_recheck);
    assert_eq!(delayed[0].0.recipients.len() as u32, report.held);
}

mod canary {
    use super::*;
    use hikyaku_core::canary::{CanaryOutcome, CanaryPlan, SliceSize};
    use hikyaku_core::feedback::FeedbackCounts;
    use hikyaku_core::lifecycle::{Action, apply};

    /// The run gets a canary slice of `size` (above `above`), `selected` recipients so far,
    /// its fan-out done `done_secs_ago` seconds ago (`None`: still reading).
    fn with_canary(
        world: &World,
        size: u64,
        above: Option<u64>,
        selected: u64,
        done_secs_ago: Option<i64>,
    ) {
        let mut runs = world.runs.runs.lock().unwrap();
        let record = runs.get_mut(&run()).unwrap();
        record.canary = Some(CanaryPlan {
            slice: SliceSize::Count(size),
            wait_secs: 60,
            above,
        });
        record.progress.selected = selected;
        record.fanout_complete = done_secs_ago.is_some();
        record.fanout_completed_at =
            done_secs_ago.map(|ago| Utc::now() - chrono::Duration::seconds(ago));
    }

    /// A job of `all`, placed in the audience in that order.
    fn placed(all: &[String]) -> SendJob {
        let mut job = job(&refs(all));
        for (place, recipient) in (0..).zip(job.recipients.iter_mut()) {
            recipient.position = Some(place);
        }
        job
    }

    async fn feedback(world: &World, delivered: u64, complained: u64) {
        let delta = FeedbackCounts {
            delivered,
            complained,
            ..FeedbackCounts::default()
        };
        world.runs.add_feedback(&run(), &delta).await.unwrap();
    }

    fn a_minute_on() -> chrono::DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(61)
    }

    #[tokio::test]
    async fn the_slice_goes_first_and_the_rest_once_its_rates_pass() {
        let world = World::new().await;
        with_canary(&world, 4, None, 10, Some(1));
        let all = addresses(10);
        let first = world.process(placed(&all), "t1").await.unwrap();
        assert_eq!((first.sent, first.held), (4, 6));
        let delayed = world.queue.take_delayed();
        assert_eq!(delayed.len(), 1);
        let (held, delay) = &delayed[0];
        let places: Vec<_> = held.recipients.iter().map(|r| r.position).collect();
        assert_eq!(places, (4..10).map(Some).collect::<Vec<_>>());
        assert!(
            (Duration::from_secs(57)..=Duration::from_secs(59)).contains(delay),
            "held until the wait is over: {delay:?}"
        );
        // Too early, the held job goes back again.
        let early = world.process(held.clone(), "t2").await.unwrap();
        assert_eq!((early.sent, early.held), (0, 6));
        world.queue.take_delayed();

        feedback(&world, 4, 0).await;
        let rest = world
            .process_at(held.clone(), "t3", Duration::from_secs(600), &a_minute_on)
            .await
            .unwrap();
        assert_eq!((rest.sent, rest.held), (6, 0));
        let verdict = world.run_record().canary_verdict.unwrap();
        assert_eq!(verdict.outcome, CanaryOutcome::Passed);
        assert!(
            verdict
                .detail
                .contains("over 4 resolved sends (4 sent of a slice of 4)"),
            "{}",
            verdict.detail
        );
        assert_eq!(world.sent_counts().len(), 10);
        assert!(world.sent_counts().values().all(|&n| n == 1));
    }

    #[tokio::test]
    async fn a_slice_over_the_guardrails_pauses_the_run_with_its_figures_until_a_resume() {
        let world = World::new().await;
        with_canary(&world, 4, None, 10, Some(1));
        let all = addresses(10);
        world.process(placed(&all), "t1").await.unwrap();
        let (held, _) = world.queue.take_delayed().remove(0);
        feedback(&world, 4, 1).await;

        let judged = world
            .process_at(held.clone(), "t2", Duration::from_secs(600), &a_minute_on)
            .await
            .unwrap();
        assert_eq!((judged.sent, judged.held), (0, 6));
        let record = world.run_record();
        assert_eq!(record.state, RunState::Paused);
        let reason = record.pause_reason.unwrap();
        assert!(
            reason.contains("canary slice: complaint rate 25.00% (1 of 4 resolved sends)"),
            "{reason}"
        );
        assert_eq!(world.sender.sent_to().len(), 4, "nothing beyond the slice");

        let resumed = apply(&world.runs, &run(), Action::Resume, None, a_minute_on())
            .await
            .unwrap();
        assert!(resumed.changed);
        assert_eq!(
            resumed.record.canary_verdict.unwrap().outcome,
            CanaryOutcome::Released
        );
        let (held, _) = world.queue.take_delayed().remove(0);
        let rest = world
            .process_at(held, "t3", Duration::from_secs(600), &a_minute_on)
            .await
            .unwrap();
        assert_eq!(rest.sent, 6);
        assert!(world.sent_counts().values().all(|&n| n == 1));
    }

    #[tokio::test]
    async fn missing_feedback_is_waited_for_once_more_then_pauses_the_run() {
        let world = World::new().await;
        with_canary(&world, 4, None, 10, Some(1));
        let all = addresses(10);
        world.process(placed(&all), "t1").await.unwrap();
        let (held, _) = world.queue.take_delayed().remove(0);
        feedback(&world, 1, 0).await;

        let short = world
            .process_at(held.clone(), "t2", Duration::from_secs(600), &a_minute_on)
            .await
            .unwrap();
        assert_eq!((short.sent, short.held), (0, 6));
        assert_eq!(world.run_record().state, RunState::Sending);
        assert!(world.run_record().canary_verdict.is_none());
        let (held, delay) = world.queue.take_delayed().remove(0);
        assert!(delay <= Duration::from_secs(60), "{delay:?}");

        let two_minutes_on = || Utc::now() + chrono::Duration::seconds(122);
        world
            .process_at(held, "t3", Duration::from_secs(600), &two_minutes_on)
            .await
            .unwrap();
        let record = world.run_record();
        assert_eq!(record.state, RunState::Paused);
        let reason = record.pause_reason.unwrap();
        assert!(
            reason.contains("only 1 of its 4 sends have a reported fate"),
            "{reason}"
        );
        assert_eq!(
            record.canary_verdict.unwrap().outcome,
            CanaryOutcome::Failed
        );
    }

    #[tokio::test]
    async fn a_failed_verdict_whose_pause_was_lost_pauses_the_run_at_the_next_job() {
        let world = World::new().await;
        with_canary(&world, 4, None, 10, Some(100));
        world
            .runs
            .runs
            .lock()
            .unwrap()
            .get_mut(&run())
            .unwrap()
            .canary_verdict = Some(hikyaku_core::canary::CanaryVerdict {
            outcome: CanaryOutcome::Failed,
            at: Utc::now(),
            detail: "canary slice: complaint rate 25.00%".into(),
        });
        let all = addresses(10);
        let report = world.process(placed(&all[4..]), "t1").await.unwrap();
        assert_eq!((report.sent, report.held), (0, 6));
        let record = world.run_record();
        assert_eq!(record.state, RunState::Paused);
        assert_eq!(
            record.pause_reason.as_deref(),
            Some("canary slice: complaint rate 25.00%")
        );
        let (_, delay) = world.queue.take_delayed().remove(0);
        assert_eq!(delay, world.settings.paused_recheck);
    }

    #[tokio::test]
    async fn a_small_audience_is_held_only_until_the_fanout_knows_its_size() {
        let world = World::new().await;
        with_canary(&world, 4, Some(10), 8, None);
        let all = addresses(9);
        let first = world.process(placed(&all), "t1").await.unwrap();
        assert_eq!((first.sent, first.held), (4, 5));
        let (held, delay) = world.queue.take_delayed().remove(0);
        assert_eq!(delay, Duration::from_secs(10));

        // The fan-out ends at 9, not above 10: no canary, nothing waits.
        with_canary(&world, 4, Some(10), 9, Some(0));
        let rest = world.process(held, "t2").await.unwrap();
        assert_eq!((rest.sent, rest.held), (5, 0));
        assert!(world.run_record().canary_verdict.is_none());
    }
}
