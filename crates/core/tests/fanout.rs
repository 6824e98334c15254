//! The fan-out against in-memory ports: pages, segment, chunks, checkpoints, continuation
//! and the "a second invocation adds no second copy" rule.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use common::*;
use hikyaku_core::fakes::*;
use hikyaku_core::fanout::*;
use hikyaku_core::ids::CampaignId;
use hikyaku_core::ports::{CampaignStore, RunStore};
use hikyaku_core::run::RunState;

struct World {
    campaigns: FakeCampaigns,
    runs: FakeRuns,
    contacts: FakeContacts,
    queue: FakeQueue,
    gate: FakeGate,
}

impl World {
    async fn new(n: usize) -> World {
        let world = World {
            campaigns: FakeCampaigns::default(),
            runs: FakeRuns::default(),
            contacts: FakeContacts::with(&list(), contacts(n)),
            queue: FakeQueue::default(),
            gate: FakeGate::default(),
        };
        world.campaigns.create(&definition()).await.unwrap();
        world
    }

    fn ports(&self) -> FanoutPorts<'_> {
        FanoutPorts {
            campaigns: &self.campaigns,
            runs: &self.runs,
            contacts: &self.contacts,
            queue: &self.queue,
            account: &self.gate,
        }
    }
}

fn request() -> FanoutRequest {
    FanoutRequest {
        campaign_id: CampaignId::parse("spring").unwrap(),
        scheduled_time: at(),
    }
}

fn settings(page_size: u32) -> FanoutSettings {
    FanoutSettings {
        page_size,
        recipients_per_job: 50,
        reserve: Duration::from_secs(20),
    }
}

fn plenty() -> Duration {
    Duration::from_secs(600)
}

/// Recipients per address over every job enqueued.
fn enqueued(world: &World) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for job in world.queue.jobs.lock().unwrap().iter() {
        assert!(job.recipients.len() <= 50);
        for r in &job.recipients {
            *seen.entry(r.email.to_string()).or_default() += 1;
        }
    }
    seen
}

#[tokio::test]
async fn when_the_audience_fits_the_time_then_every_selected_contact_is_enqueued_once() {
    let world = World::new(1_000).await;
    let outcome = fan_out(
        &world.ports(),
        &request(),
        &settings(128),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let FanoutOutcome::Completed { progress, .. } = outcome else {
        panic!("expected completion, got {outcome:?}");
    };
    let selected = (0..1_000).filter(|i| i % 3 != 2).count() as u64;
    assert_eq!(progress.selected, selected);
    assert_eq!(progress.filtered, 1_000 - selected);
    assert_eq!(progress.contacts_read, 1_000);
    let seen = enqueued(&world);
    assert_eq!(seen.len() as u64, selected);
    assert!(seen.values().all(|&n| n == 1));
    // Only the attributes the template reads travel.
    let job = world.queue.jobs.lock().unwrap()[0].clone();
    assert!(job.recipients[0].attributes.contains_key("first_name"));
    assert!(!job.recipients[0].attributes.contains_key("city"));
    let record = world.runs.get(&request().run()).await.unwrap().unwrap();
    assert!(record.fanout_complete);
    assert_eq!(record.state, RunState::Sending);
}

#[tokio::test]
async fn when_the_run_is_complete_then_a_second_invocation_enqueues_nothing() {
    let world = World::new(300).await;
    fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let before = world.queue.take_jobs().len();
    let again = fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-2",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(matches!(again, FanoutOutcome::AlreadyComplete { .. }));
    assert!(before > 0);
    assert!(world.queue.take_jobs().is_empty());
}

#[tokio::test]
async fn when_time_runs_short_then_it_hands_over_and_the_continuation_finishes_without_duplicates()
{
    let world = World::new(1_000).await;
    let short = || Duration::from_secs(1);
    let mut continuations = 0;
    loop {
        let outcome = fan_out(
            &world.ports(),
            &request(),
            &settings(100),
            &format!("inv-{continuations}"),
            &short,
            &Utc::now,
        )
        .await
        .unwrap();
        match outcome {
            FanoutOutcome::Continue { .. } => continuations += 1,
            FanoutOutcome::Completed { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(continuations, 9, "one page per invocation");
    let seen = enqueued(&world);
    assert_eq!(seen.len(), (0..1_000).filter(|i| i % 3 != 2).count());
    assert!(seen.values().all(|&n| n == 1));
}

#[tokio::test]
async fn when_a_fanout_dies_mid_run_then_the_next_one_continues_from_the_checkpoint() {
    let world = World::new(1_000).await;
    // The queue fails on its fourth call: three pages are enqueued and checkpointed.
    *world.queue.fail_after_calls.lock().unwrap() = Some(3);
    let err = fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FanoutError::Queue(_)), "{err}");
    let record = world.runs.get(&request().run()).await.unwrap().unwrap();
    assert_eq!(record.progress.pages, 3);
    *world.queue.fail_after_calls.lock().unwrap() = None;
    // The failed invocation gave its lease back: Lambda's retry (another request id) carries
    // on from the checkpoint at once.
    let done = fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-2",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(matches!(done, FanoutOutcome::Completed { .. }), "{done:?}");
    let seen = enqueued(&world);
    assert_eq!(seen.len(), (0..1_000).filter(|i| i % 3 != 2).count());
    assert!(seen.values().all(|&n| n == 1), "nothing enqueued twice");
}

#[tokio::test]
async fn when_the_store_returns_whole_floats_as_integers_then_the_schema_restores_their_kind() {
    use hikyaku_core::contact::{AttrKind, AttrValue, ListSchema};
    use hikyaku_core::ports::ContactStore;
    let world = World::new(3).await;
    let mut schema = ListSchema::default();
    schema
        .attributes
        .insert("mail_allowed".into(), AttrKind::Float);
    schema.attributes.insert("first_name".into(), AttrKind::Str);
    world.contacts.merge_schema(&list(), &schema).await.unwrap();
    // The segment `mail_allowed == 1` reads a double now; CEL compares numbers by value.
    let outcome = fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let FanoutOutcome::Completed { progress, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!((progress.selected, progress.segment_errors), (2, 0));
    assert!(matches!(
        world.queue.jobs.lock().unwrap()[0].recipients[0].attributes["first_name"],
        AttrValue::Str(_)
    ));
}

#[tokio::test]
async fn when_another_invocation_holds_the_run_then_this_one_is_busy_until_the_lease_lapses() {
    let world = World::new(300).await;
    world
        .runs
        .start(&hikyaku_core::run::RunRecord::new(
            request().run(),
            list(),
            at(),
        ))
        .await
        .unwrap();
    let until = Utc::now() + chrono::Duration::minutes(5);
    assert!(
        world
            .runs
            .acquire_lease(&request().run(), "live", until, Utc::now())
            .await
            .unwrap()
    );
    let busy = fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-2",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(matches!(busy, FanoutOutcome::Busy { .. }));
    assert!(world.queue.take_jobs().is_empty());
    // A holder killed without a word: its lease lapses and a later retry takes over.
    let later = || Utc::now() + chrono::Duration::hours(1);
    let done = fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-3",
        &plenty,
        &later,
    )
    .await
    .unwrap();
    assert!(matches!(done, FanoutOutcome::Completed { .. }), "{done:?}");
}

#[tokio::test]
async fn when_the_run_is_paused_then_the_fanout_stops() {
    let world = World::new(10).await;
    world
        .runs
        .start(&hikyaku_core::run::RunRecord::new(
            request().run(),
            list(),
            at(),
        ))
        .await
        .unwrap();
    world
        .runs
        .pause(&request().run(), "operator", at())
        .await
        .unwrap();
    let outcome = fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(matches!(
        outcome,
        FanoutOutcome::Stopped {
            state: RunState::Paused,
            ..
        }
    ));
}

#[tokio::test]
async fn when_the_campaign_is_unknown_then_the_error_names_it() {
    let world = World::new(0).await;
    let mut unknown = request();
    unknown.campaign_id = CampaignId::parse("autumn").unwrap();
    let err = fan_out(
        &world.ports(),
        &unknown,
        &settings(100),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("'autumn'"), "{err}");
}

#[tokio::test]
async fn when_the_account_is_unhealthy_then_the_run_is_paused_with_the_reason_and_nothing_enqueued()
{
    let world = World::new(100).await;
    *world.gate.verdict.lock().unwrap() = hikyaku_core::budget::AccountVerdict::Unhealthy {
        reason: "SES enforcement status of the account is SHUTDOWN".into(),
    };
    let outcome = fan_out(
        &world.ports(),
        &request(),
        &settings(50),
        "f1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    assert!(matches!(
        outcome,
        FanoutOutcome::Stopped {
            state: RunState::Paused,
            ..
        }
    ));
    let record = world.runs.get(&request().run()).await.unwrap().unwrap();
    assert_eq!(record.state, RunState::Paused);
    assert!(record.pause_reason.unwrap().contains("SHUTDOWN"));
    assert!(enqueued(&world).is_empty());
}

#[tokio::test]
async fn when_the_daily_quota_is_used_up_then_the_audience_is_enqueued_and_the_run_waits() {
    let world = World::new(100).await;
    let resume_at = Utc::now() + chrono::Duration::hours(3);
    *world.gate.verdict.lock().unwrap() =
        hikyaku_core::budget::AccountVerdict::QuotaExhausted { resume_at };
    fan_out(
        &world.ports(),
        &request(),
        &settings(50),
        "f1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let record = world.runs.get(&request().run()).await.unwrap().unwrap();
    assert_eq!(record.state, RunState::WaitingForQuota);
    assert_eq!(record.resume_at, Some(resume_at));
    assert!(record.fanout_complete);
    assert_eq!(enqueued(&world).len() as u64, record.progress.selected);
}

#[tokio::test]
async fn a_campaign_sending_through_another_accounts_role_leaves_its_account_to_the_sender() {
    let world = World::new(100).await;
    let toml = CAMPAIGN_TOML.replace("id = \"spring\"", "id = \"partner\"")
        + "sending_role_arn = \"arn:aws:iam::111122223333:role/hikyaku-sending\"\n";
    let definition =
        hikyaku_core::campaign::CampaignDefinition::from_toml_str(&toml, None).unwrap();
    world.campaigns.create(&definition).await.unwrap();
    // The fan-out's own account is unhealthy: that says nothing of the role's account.
    *world.gate.verdict.lock().unwrap() = hikyaku_core::budget::AccountVerdict::Unhealthy {
        reason: "SES enforcement status of the account is SHUTDOWN".into(),
    };
    let request = FanoutRequest {
        campaign_id: CampaignId::parse("partner").unwrap(),
        scheduled_time: at(),
    };
    fan_out(
        &world.ports(),
        &request,
        &settings(50),
        "f1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let record = world.runs.get(&request.run()).await.unwrap().unwrap();
    assert_eq!(record.state, RunState::Sending);
    assert_eq!(enqueued(&world).len() as u64, record.progress.selected);
    assert_eq!(
        world.gate.calls.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn contacts_another_run_mailed_within_the_cap_are_left_out() {
    let world = World::new(30).await;
    let toml = CAMPAIGN_TOML.replace("id = \"spring\"", "id = \"capped\"")
        + "[limits]\nskip_mailed_within_days = 7\n";
    let definition =
        hikyaku_core::campaign::CampaignDefinition::from_toml_str(&toml, None).unwrap();
    world.campaigns.create(&definition).await.unwrap();
    let request = FanoutRequest {
        campaign_id: CampaignId::parse("capped").unwrap(),
        scheduled_time: at(),
    };
    let other = hikyaku_core::ids::RunRef::new(
        CampaignId::parse("spring").unwrap(),
        hikyaku_core::ids::RunId::from_scheduled_time(at()),
    );
    let now = Utc::now();
    let allowed: Vec<_> = contacts(30)
        .into_iter()
        .filter(|c| c.attributes["mail_allowed"] == hikyaku_core::contact::AttrValue::Int(1))
        .map(|c| c.email)
        .collect();
    {
        let mut last_sent = world.contacts.last_sent.lock().unwrap();
        // Mailed by another run two days ago: left out.
        last_sent.insert(
            allowed[0].clone(),
            (
                other.clone(),
                "sent".into(),
                now - chrono::Duration::days(2),
            ),
        );
        // Ten days ago: outside the cap.
        last_sent.insert(
            allowed[1].clone(),
            (other, "sent".into(), now - chrono::Duration::days(10)),
        );
        // By this very run (a page read again after a crash): kept.
        last_sent.insert(allowed[2].clone(), (request.run(), "sent".into(), now));
    }
    fan_out(
        &world.ports(),
        &request,
        &settings(50),
        "f1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let record = world.runs.get(&request.run()).await.unwrap().unwrap();
    assert_eq!(record.progress.recently_mailed, 1);
    assert_eq!(record.progress.selected, allowed.len() as u64 - 1);
    let seen = enqueued(&world);
    assert!(!seen.contains_key(allowed[0].as_str()));
    assert!(seen.contains_key(allowed[1].as_str()));
    assert!(seen.contains_key(allowed[2].as_str()));
}

#[tokio::test]
async fn every_recipient_gets_one_place_in_the_audience_even_across_a_crash() {
    let world = World::new(1_000).await;
    *world.queue.fail_after_calls.lock().unwrap() = Some(3);
    fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap_err();
    *world.queue.fail_after_calls.lock().unwrap() = None;
    fan_out(
        &world.ports(),
        &request(),
        &settings(100),
        "inv-2",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let mut places: Vec<u64> = world
        .queue
        .jobs
        .lock()
        .unwrap()
        .iter()
        .flat_map(|job| job.recipients.iter().map(|r| r.position.expect("placed")))
        .collect();
    places.sort_unstable();
    let selected = (0..1_000).filter(|i| i % 3 != 2).count() as u64;
    assert_eq!(places, (0..selected).collect::<Vec<_>>());
    // Without a [canary] table the run carries the default canary.
    let record = world.runs.get(&request().run()).await.unwrap().unwrap();
    let plan = record.canary.expect("the default canary");
    assert_eq!(plan.above, Some(hikyaku_core::canary::DEFAULT_ABOVE));
}

#[tokio::test]
async fn a_campaign_without_a_canary_places_nobody() {
    let world = World::new(20).await;
    let toml =
        CAMPAIGN_TOML.replace("id = \"spring\"", "id = \"plain\"") + "[canary]\nenabled = false\n";
    let definition =
        hikyaku_core::campaign::CampaignDefinition::from_toml_str(&toml, None).unwrap();
    world.campaigns.create(&definition).await.unwrap();
    let request = FanoutRequest {
        campaign_id: CampaignId::parse("plain").unwrap(),
        scheduled_time: at(),
    };
    fan_out(
        &world.ports(),
        &request,
        &settings(100),
        "inv-1",
        &plenty,
        &Utc::now,
    )
    .await
    .unwrap();
    let jobs = world.queue.jobs.lock().unwrap();
    assert!(!jobs.is_empty());
    assert!(
        jobs.iter()
            .flat_map(|job| &job.recipients)
            .all(|r| r.position.is_none())
    );
}
