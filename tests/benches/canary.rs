//! The canary's cost (`make bench`): the SQS messages a run's jobs make when the canary
//! holds part of its audience, against the same run without a canary, and the bytes the
//! recipients' places add to the job bodies. Needs no stack: the real send use case works
//! through the jobs on in-memory ports, on a virtual clock the benchmark moves from one due
//! message to the next, so a 30-minute wait takes no time.
//!
//! The fan-out is played at 500 contacts a page and 0.1 s a page (a DynamoDB query and the
//! page's SendMessageBatch calls): its jobs arrive while it reads, and the run's record
//! moves on after each page, as the real checkpoints do. Each send is delivered at once
//! (its feedback counted on the run), so the judge finds the slice resolved.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hikyaku_core::campaign::{Campaign, CampaignDefinition};
use hikyaku_core::canary::CanaryOutcome;
use hikyaku_core::contact::{AttrValue, Attributes};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::fakes::*;
use hikyaku_core::feedback::FeedbackCounts;
use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
use hikyaku_core::job::{JobRecipient, SendJob};
use hikyaku_core::ports::{CampaignStore, RunStore};
use hikyaku_core::run::{RunRecord, RunState};
use hikyaku_core::send::{
    CampaignCache, JobContext, SendPorts, SendSettings, Throttle, process_job,
};

const PAGE: u64 = 500;
const PAGE_MS: i64 = 100;
const PER_JOB: usize = 50;

/// Milliseconds the virtual clock is ahead of the real one.
static AHEAD_MS: AtomicI64 = AtomicI64::new(0);

fn now() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(AHEAD_MS.load(Ordering::Relaxed))
}

/// Moves the virtual clock on to `at`, if it is later.
fn advance_to(at: DateTime<Utc>) {
    let gap = (at - now()).num_milliseconds();
    if gap > 0 {
        AHEAD_MS.fetch_add(gap, Ordering::Relaxed);
    }
}

struct Scenario {
    name: &'static str,
    audience: u64,
    /// The campaign's `[canary]` table; `None`: none (the default canary applies).
    canary: Option<&'static str>,
}

struct Measured {
    messages: u64,
    jobs: u64,
    /// From the end of the fan-out to the last send.
    last_send_after_fanout_s: f64,
    verdict: String,
    bytes_placed: usize,
    bytes_unplaced: usize,
    wall: Duration,
}

fn definition(id: &str, canary: Option<&str>) -> CampaignDefinition {
    let toml = format!(
        r#"
id = "{id}"
list = "{id}"
subject = "Bench {{{{first_name}}}}"
html = "<p>Hello {{{{first_name}}}}</p>"
[from]
address = "news@hikyaku.example"
{}
"#,
        canary.unwrap_or_default()
    );
    CampaignDefinition::from_toml_str(&toml, None).expect("valid campaign")
}

async fn measure(scenario: &Scenario, index: usize) -> Measured {
    let wall = Instant::now();
    let id = format!("canary-bench-{index}");
    let campaigns = FakeCampaigns::default();
    let runs = FakeRuns::default();
    let ledger = FakeLedger::default();
    let suppressions = FakeSuppressions::default();
    let contacts = FakeContacts::default();
    let sender = FakeSender::default();
    let queue = FakeQueue::default();
    let budget = FakeBudgetStore::default();
    let account = FakeAccount::with_rate(1_000_000.0);
    let definition = definition(&id, scenario.canary);
    let campaign = Campaign::from_definition(definition.clone(), None).expect("valid");
    campaigns.create(&definition).await.unwrap();
    let start = now();
    let run = RunRef::new(
        CampaignId::parse(&id).unwrap(),
        RunId::from_scheduled_time(start),
    );
    let mut record = RunRecord::new(run.clone(), ListId::parse(&id).unwrap(), start)
        .with_canary(campaign.canary.clone());
    record.state = RunState::FanningOut;
    runs.start(&record).await.unwrap();
    let placed = record.canary.is_some();

    // The fan-out's jobs, each due when its page is read.
    let pages = scenario.audience.div_ceil(PAGE);
    let fanout_end = start + chrono::Duration::milliseconds(pages as i64 * PAGE_MS);
    let mut due: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut waiting: BTreeMap<u64, SendJob> = BTreeMap::new();
    let mut next_id = 0u64;
    let (mut bytes_placed, mut bytes_unplaced) = (0, 0);
    for page in 0..pages {
        let at = start + chrono::Duration::milliseconds(page as i64 * PAGE_MS);
        let first = page * PAGE;
        let last = (first + PAGE).min(scenario.audience);
        let recipients: Vec<JobRecipient> = (first..last)
            .map(|n| {
                let mut attributes = Attributes::new();
                attributes.insert("first_name".into(), AttrValue::Str(format!("Reader {n}")));
                JobRecipient {
                    email: EmailAddress::parse(&format!("reader-{n:07}@example.com")).unwrap(),
                    attributes,
                    position: placed.then_some(n),
                }
            })
            .collect();
        for chunk in recipients.chunks(PER_JOB) {
            let job = SendJob::new(&run, 0, chunk.to_vec());
            bytes_placed += serde_json::to_string(&job).unwrap().len();
            let mut unplaced = job.clone();
            unplaced
                .recipients
                .iter_mut()
                .for_each(|r| r.position = None);
            bytes_unplaced += serde_json::to_string(&unplaced).unwrap().len();
            due.push(Reverse((at.timestamp_millis(), next_id)));
            waiting.insert(next_id, job);
            next_id += 1;
        }
    }
    let jobs = next_id;

    let ports = SendPorts {
        campaigns: &campaigns,
        runs: &runs,
        ledger: &ledger,
        suppressions: &suppressions,
        contacts: &contacts,
        sender: &sender,
        queue: &queue,
        budget: &budget,
        account: &account,
    };
    // The budget's lead before a grant's first slot is real time; the clock here is not.
    let settings = SendSettings {
        budget: hikyaku_core::budget::BudgetSettings {
            lead: Duration::from_millis(1),
            ..Default::default()
        },
        ..SendSettings::default()
    };
    let throttle = Throttle::new(64);
    let cache = CampaignCache::default();
    let mut messages = 0u64;
    let mut last_send = start;
    let time_left = || Duration::from_secs(600);
    while let Some(Reverse((at_ms, message))) = due.pop() {
        let at = DateTime::<Utc>::from_timestamp_millis(at_ms).expect("a time");
        advance_to(at);
        // The record as the fan-out's checkpoints leave it at this time.
        {
            let mut stored = runs.runs.lock().unwrap();
            let record = stored.get_mut(&run).unwrap();
            let read = ((now() - start).num_milliseconds() / PAGE_MS).max(0) as u64;
            record.progress.selected = (read * PAGE).min(scenario.audience);
            if now() >= fanout_end && !record.fanout_complete {
                record.fanout_complete = true;
                record.fanout_completed_at = Some(fanout_end);
                record.progress.selected = scenario.audience;
                if record.state == RunState::FanningOut {
                    record.state = RunState::Sending;
                }
            }
        }
        let job = waiting.remove(&message).expect("a waiting message");
        messages += 1;
        let token = format!("m{message}");
        let ctx = JobContext {
            token: &token,
            time_left: &time_left,
            now: &now,
        };
        let report = process_job(&ports, &settings, &throttle, &cache, job, &ctx)
            .await
            .expect("the job is worked through");
        if report.sent > 0 {
            last_send = now();
            let delivered = FeedbackCounts {
                delivered: u64::from(report.sent),
                ..FeedbackCounts::default()
            };
            runs.add_feedback(&run, &delivered).await.unwrap();
        }
        for (back, delay) in queue.take_delayed() {
            let at = now() + chrono::Duration::from_std(delay).unwrap();
            due.push(Reverse((at.timestamp_millis(), next_id)));
            waiting.insert(next_id, back);
            next_id += 1;
        }
    }
    let record = runs.get(&run).await.unwrap().unwrap();
    assert_eq!(
        sender.sent_to().len() as u64,
        scenario.audience,
        "{}: everyone sent once",
        scenario.name
    );
    let verdict = match &record.canary_verdict {
        Some(v) => format!(
            "{} {:.0} s after the fan-out",
            match v.outcome {
                CanaryOutcome::Passed => "passed",
                CanaryOutcome::Failed => "failed",
                CanaryOutcome::Released => "released",
            },
            (v.at - fanout_end).num_milliseconds() as f64 / 1000.0
        ),
        None => "none".to_owned(),
    };
    Measured {
        messages,
        jobs,
        last_send_after_fanout_s: (last_send - fanout_end).num_milliseconds() as f64 / 1000.0,
        verdict,
        bytes_placed,
        bytes_unplaced,
        wall: wall.elapsed(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scenarios = [
        Scenario {
            name: "5,000, default (not above 10,000)",
            audience: 5_000,
            canary: None,
        },
        Scenario {
            name: "5,000, no canary",
            audience: 5_000,
            canary: Some("[canary]\nenabled = false"),
        },
        Scenario {
            name: "100,000, default canary",
            audience: 100_000,
            canary: None,
        },
        Scenario {
            name: "100,000, share 5%",
            audience: 100_000,
            canary: Some("[canary]\nshare = 0.05"),
        },
        Scenario {
            name: "100,000, no canary",
            audience: 100_000,
            canary: Some("[canary]\nenabled = false"),
        },
    ];
    println!(
        "canary cost: SQS messages the jobs make (first deliveries and the holds' re-enqueues); fan-out at {PAGE} a page, {PAGE_MS} ms a page; a 30-minute wait"
    );
    println!();
    println!(
        "| audience | jobs | SQS messages | per job | last send after the fan-out | verdict | body bytes with places / without | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (index, scenario) in scenarios.iter().enumerate() {
        let m = measure(scenario, index).await;
        println!(
            "| {} | {} | {} | {:.2} | {:.1} s | {} | {:.3} | {:.1} s |",
            scenario.name,
            m.jobs,
            m.messages,
            m.messages as f64 / m.jobs as f64,
            m.last_send_after_fanout_s,
            m.verdict,
            m.bytes_placed as f64 / m.bytes_unplaced as f64,
            m.wall.as_secs_f64(),
        );
    }
}
