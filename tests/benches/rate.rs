//! The send-rate benchmark (`make bench`): how close the shared send budget comes to the
//! account's rate without ever going over it, measured from the SES side's own timestamps
//! (the SES proxy's receipt of each SendEmail).
//!
//! The budget, with four sender instances in this process: the real send use case, the real
//! budget item in DynamoDB (moto), real SES calls to the proxy, which plays an account of 100
//! emails/s and answers SES's own 429 beyond it; the ledger, consent and contacts in memory, so
//! the store behind them is not what is measured.
//! 1. One run of 5,000 recipients at a budget of 100 emails/s.
//! 2. Two runs of 2,500 started together, sharing the same budget.
//!
//! End to end: one run of 5,000 through the real functions (fan-out, SQS, four sender
//! instances under `cargo lambda watch`, every ledger write on moto), which shows what the
//! local stack itself sustains.
//!
//! It prints, per scenario: the achieved rate as a fraction of the budget, the most recipients
//! SES received in any one-second window, the throttling errors SES answered, and the budget
//! item's writes per email. The stack must be up with the account at 100/s and no headroom
//! (`make bench` does that).

#[allow(dead_code)]
#[path = "../tests/local_stack/helpers.rs"]
mod helpers;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use helpers::*;
use hikyaku_aws::ses::SesSender;
use hikyaku_core::budget::{BudgetSettings, BudgetStore};
use hikyaku_core::campaign::CampaignDefinition;
use hikyaku_core::contact::{AttrValue, Attributes};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::fakes::*;
use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
use hikyaku_core::job::{JobRecipient, SendJob};
use hikyaku_core::ports::{CampaignStore, RunStore};
use hikyaku_core::run::{RunRecord, RunState, RunStatus};
use hikyaku_core::send::{
    CampaignCache, JobContext, SendPorts, SendSettings, Throttle, process_job,
};
use hikyaku_local::pump::{Pump, PumpConfig};
use hikyaku_local::ses_proxy::{AccountQuota, RecordedSend};

const BUDGET: f64 = 100.0;
const INSTANCES: usize = 4;
const LIMIT: Duration = Duration::from_secs(900);
/// Slots the in-process senders gave up (not ready in time).
static MISSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Measured {
    name: String,
    emails: usize,
    seconds: f64,
    rate: f64,
    busiest: usize,
    throttled: u64,
    writes: u64,
}

fn busiest_second(times: &[u64]) -> usize {
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

/// Accepted sends of these runs, by the proxy's receipt time.
fn times_of(sends: &[RecordedSend], runs: &[RunRef]) -> Vec<u64> {
    let mut times: Vec<u64> = sends
        .iter()
        .filter(|s| {
            runs.iter().any(|run| {
                s.tag(hikyaku_core::send::RUN_TAG) == Some(run.run_id.as_str())
                    && s.tag(hikyaku_core::send::CAMPAIGN_TAG) == Some(run.campaign_id.as_str())
            })
        })
        .map(|s| s.received_at_ms)
        .collect();
    times.sort_unstable();
    times
}

/// Recipients per second between the first and the last send.
fn rate(times: &[u64]) -> (f64, f64) {
    let span = (times.last().unwrap_or(&0) - times.first().unwrap_or(&0)) as f64 / 1000.0;
    let rate = if span > 0.0 {
        (times.len() - 1) as f64 / span
    } else {
        0.0
    };
    (span, rate)
}

async fn budget_version(stack: &Stack) -> u64 {
    stack
        .budget
        .load("default")
        .await
        .expect("budget readable")
        .map_or(0, |state| state.version)
}

fn pump_config(stack: &Stack) -> PumpConfig {
    let mut config = stack.pump_config();
    config.batch_size = 2;
    config.max_concurrency = INSTANCES;
    config
}

/// What the in-process senders share besides the budget and SES: the stores, in memory.
#[derive(Default)]
struct Stores {
    campaigns: FakeCampaigns,
    runs: FakeRuns,
    ledger: FakeLedger,
    suppressions: FakeSuppressions,
    contacts: FakeContacts,
    queue: FakeQueue,
}

fn campaign(id: &str) -> CampaignDefinition {
    let toml = format!(
        r#"
id = "{id}"
list = "{id}"
subject = "Bench {{{{first_name}}}}"
html = "<p>Hello {{{{first_name}}}}</p>"
[from]
address = "news@hikyaku.example"
[ses]
configuration_set = "hikyaku"
"#
    );
    CampaignDefinition::from_toml_str(&toml, None).expect("valid campaign")
}

/// Runs of `sizes` recipients, their jobs of 50 interleaved as concurrent fan-outs would
/// enqueue them, sent by four in-process instances sharing the real budget.
async fn in_process_runs(stack: &Stack, name: &str, sizes: &[usize]) -> Vec<RunRef> {
    let stores = Stores::default();
    let unique = chrono::Utc::now().format("%H%M%S%3f").to_string();
    let name: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    let mut per_run = Vec::new();
    let mut runs = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let id = format!("bench-{name}-{i}-{unique}");
        stores.campaigns.create(&campaign(&id)).await.unwrap();
        let run = RunRef::new(
            CampaignId::parse(&id).unwrap(),
            RunId::from_scheduled_time(chrono::Utc::now()),
        );
        let mut record =
            RunRecord::new(run.clone(), ListId::parse(&id).unwrap(), chrono::Utc::now());
        record.state = RunState::Sending;
        record.fanout_complete = true;
        record.progress.selected = *size as u64;
        stores.runs.start(&record).await.unwrap();
        let recipients: Vec<JobRecipient> = (0..*size)
            .map(|n| {
                let mut attributes = Attributes::new();
                attributes.insert("first_name".into(), AttrValue::Str(format!("Reader {n}")));
                JobRecipient {
                    email: EmailAddress::parse(&format!("{id}-{n:05}@example.com")).unwrap(),
                    attributes,
                    position: None,
                }
            })
            .collect();
        per_run.push(
            recipients
                .chunks(50)
                .map(|chunk| SendJob::new(&run, 0, chunk.to_vec()))
                .collect::<VecDeque<_>>(),
        );
        runs.push(run);
    }
    let mut jobs = VecDeque::new();
    while per_run.iter().any(|q| !q.is_empty()) {
        for queue in &mut per_run {
            jobs.extend(queue.pop_front());
        }
    }
    let jobs = Mutex::new(jobs);
    let sender = SesSender::from_client(aws_sdk_sesv2::Client::from_conf(
        aws_sdk_sesv2::config::Builder::from(&stack.sdk)
            .endpoint_url(&stack.vars["AWS_ENDPOINT_URL_SESV2"])
            .build(),
    ));
    let settings = SendSettings {
        budget: BudgetSettings {
            headroom_percent: 0.0,
            ..BudgetSettings::default()
        },
        ..SendSettings::default()
    };
    let ports = SendPorts {
        campaigns: &stores.campaigns,
        runs: &stores.runs,
        ledger: &stores.ledger,
        suppressions: &stores.suppressions,
        contacts: &stores.contacts,
        sender: &sender,
        queue: &stores.queue,
        budget: &stack.budget,
        account: &stack.ses_account,
    };
    let instance = |n: usize| {
        let (ports, settings, jobs, stores) = (&ports, &settings, &jobs, &stores);
        async move {
            // Each instance keeps its own slots and campaign cache, as a Lambda container does.
            let throttle = Throttle::new(16);
            let cache = CampaignCache::default();
            let mut invocation = 0;
            loop {
                let next = jobs.lock().unwrap().pop_front();
                let job = match next {
                    Some(job) => job,
                    None => match stores.queue.take_delayed().pop() {
                        Some((job, _)) => job,
                        None => return,
                    },
                };
                invocation += 1;
                let token = format!("bench-{n}-{invocation}");
                let time_left = || Duration::from_secs(600);
                let ctx = JobContext {
                    token: &token,
                    time_left: &time_left,
                    now: &chrono::Utc::now,
                };
                let report = process_job(ports, settings, &throttle, &cache, job, &ctx)
                    .await
                    .expect("job processed");
                MISSED.fetch_add(
                    u64::from(report.missed_slots),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    };
    futures::future::join_all((0..INSTANCES).map(instance)).await;
    for run in &runs {
        let counts = hikyaku_core::ports::Ledger::counts(&stores.ledger, run)
            .await
            .unwrap();
        assert_eq!(counts.terminal(), counts.sent, "{counts:?}");
    }
    runs
}

async fn measure_in_process(
    stack: &Stack,
    name: &str,
    sizes: &[usize],
) -> (Measured, Vec<Measured>) {
    let version = budget_version(stack).await;
    let before = stack.proxy.counters().await.expect("proxy reachable");
    let runs = in_process_runs(stack, name, sizes).await;
    let after = stack.proxy.counters().await.expect("proxy reachable");
    let writes = budget_version(stack).await - version;
    let sends = stack.proxy.sends().await.expect("proxy reachable");
    let total: usize = sizes.iter().sum();
    measured(
        name,
        &runs,
        &sends,
        after.throttled - before.throttled,
        writes,
        total,
    )
}

fn measured(
    name: &str,
    runs: &[RunRef],
    sends: &[RecordedSend],
    throttled: u64,
    writes: u64,
    expected: usize,
) -> (Measured, Vec<Measured>) {
    let all = times_of(sends, runs);
    assert_eq!(all.len(), expected, "every recipient sent once");
    let (seconds, total_rate) = rate(&all);
    let total = Measured {
        name: name.to_owned(),
        emails: all.len(),
        seconds,
        rate: total_rate,
        busiest: busiest_second(&all),
        throttled,
        writes,
    };
    let per_run = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let times = times_of(sends, std::slice::from_ref(run));
            let (seconds, run_rate) = rate(&times);
            Measured {
                name: format!("{name}, run {}", i + 1),
                emails: times.len(),
                seconds,
                rate: run_rate,
                busiest: busiest_second(&times),
                throttled: 0,
                writes: 0,
            }
        })
        .collect();
    (total, per_run)
}

/// Pumps until every run is finished.
async fn pump_until_all_finished(stack: &Stack, runs: &[RunRef]) -> Vec<RunStatus> {
    let lambda = aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(&stack.sdk)
            .endpoint_url(&stack.watch_url)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let pump = Pump::from_clients(
        stack.sqs.clone(),
        lambda,
        stack.vars["AWS_REGION"].clone(),
        pump_config(stack),
    )
    .expect("pump config valid");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let deadline = Instant::now() + LIMIT;
    let watcher = async {
        loop {
            let mut statuses = Vec::new();
            for run in runs {
                statuses.push(stack.status(run).await);
            }
            if statuses.iter().all(RunStatus::is_finished) || Instant::now() > deadline {
                let _ = stop_tx.send(());
                return statuses;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let (stats, statuses) = tokio::join!(
        pump.run_until(async move {
            let _ = stop_rx.await;
        }),
        watcher
    );
    stats.expect("pump runs");
    for status in &statuses {
        assert!(status.is_finished(), "unfinished: {status:#?}");
    }
    statuses
}

async fn measure_end_to_end(
    stack: &Stack,
    name: &str,
    sizes: &[usize],
) -> (Measured, Vec<Measured>) {
    let mut scenarios = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let label = format!("e2e-{i}");
        scenarios.push(Scenario::seed(stack, ScenarioSpec::plain(&label, *size)).await);
    }
    let version = budget_version(stack).await;
    let before = stack.proxy.counters().await.expect("proxy reachable");
    let mut runs = Vec::new();
    for scenario in &scenarios {
        runs.push(stack.start_run(scenario).await.0);
    }
    let statuses = pump_until_all_finished(stack, &runs).await;
    let after = stack.proxy.counters().await.expect("proxy reachable");
    let writes = budget_version(stack).await - version;
    let sends = stack.proxy.sends().await.expect("proxy reachable");
    for (scenario, status) in scenarios.iter().zip(&statuses) {
        assert_eq!(status.counts.sent, scenario.eligible.len() as u64);
    }
    scenario_sent_once(stack, &scenarios).await;
    let total: usize = sizes.iter().sum();
    measured(
        name,
        &runs,
        &sends,
        after.throttled - before.throttled,
        writes,
        total,
    )
}

async fn scenario_sent_once(stack: &Stack, scenarios: &[Scenario]) {
    for scenario in scenarios {
        scenario.assert_each_eligible_got_exactly_one(stack).await;
    }
}

fn row(m: &Measured, with_budget_columns: bool) -> String {
    let extra = if with_budget_columns {
        format!(
            " {} | {} | {:.4} |",
            m.busiest,
            m.throttled,
            m.writes as f64 / m.emails.max(1) as f64
        )
    } else {
        format!(" {} | | |", m.busiest)
    };
    format!(
        "| {} | {} | {:.1} s | {:.1}/s | {:.3} |{extra}",
        m.name,
        m.emails,
        m.seconds,
        m.rate,
        m.rate / BUDGET
    )
}

#[tokio::main]
async fn main() {
    let stack = Stack::connect().await;
    stack
        .proxy
        .set_account(&AccountQuota {
            max_send_rate: BUDGET,
            max_24_hour_send: -1.0,
            ..AccountQuota::default()
        })
        .await
        .expect("proxy reachable");
    stack.proxy.reset().await.expect("proxy reachable");
    let started = Instant::now();
    let (single, _) = measure_in_process(&stack, "one run of 5,000", &[5_000]).await;
    let (shared, runs) = measure_in_process(&stack, "two runs of 2,500", &[2_500, 2_500]).await;
    // `cargo bench ... -- --budget-only`: the in-process scenarios alone.
    let e2e = if std::env::args().any(|arg| arg == "--budget-only") {
        None
    } else {
        Some(
            measure_end_to_end(&stack, "end to end, one run of 5,000", &[5_000])
                .await
                .0,
        )
    };
    println!("budget {BUDGET} emails/s, {INSTANCES} sender instances; measured at the SES proxy");
    println!();
    println!(
        "| scenario | emails | span | achieved | of budget | busiest second | throttled | budget writes per email |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!("{}", row(&single, true));
    println!("{}", row(&shared, true));
    for run in &runs {
        println!("{}", row(run, false));
    }
    if let Some(e2e) = &e2e {
        println!("{}", row(e2e, true));
    }
    println!();
    println!(
        "slots given up by the in-process senders: {}",
        MISSED.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("finished in {:.0} s", started.elapsed().as_secs_f64());
}
