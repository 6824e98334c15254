//! The sender's work on one job: consent, claim, render, send, record. Every recipient ends
//! in a terminal ledger state or goes back to the queue; none is sent twice and none is lost.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::budget::{
    AccountGate, AccountSource, AccountVerdict, Budget, BudgetError, BudgetSettings, BudgetStore,
    NoSlot, Pacer, sleep_until_us,
};
use crate::campaign::{Campaign, SendingAccount};
use crate::canary::{self, CanaryOutcome, Delay, Gate, Judgement};
use crate::email::EmailAddress;
use crate::ids::{CampaignId, RunRef};
use crate::job::{JobRecipient, SendJob};
use crate::ledger::{DeliveryRecord, ExistingClaim, Outcome, judge_existing};
use crate::logging::shown;
use crate::ports::{
    CampaignStore, ClaimResult, ContactStore, EmailSender, JobQueue, Ledger, OutboundEmail,
    QueueError, RunStore, SendError, SendErrorClass, StoreError, SuppressionList,
};
use crate::run::{RunRecord, RunState};

/// The `EmailTags` names that tie every SES event back to its campaign and run.
pub const CAMPAIGN_TAG: &str = "hikyaku-campaign";
pub const RUN_TAG: &str = "hikyaku-run";

#[derive(Clone, Debug)]
pub struct SendSettings {
    /// Longer than the sender's function timeout: a claim older than this has no live holder.
    pub claim_timeout: chrono::Duration,
    /// First delay before recipients put back by throttling are tried again; doubled per
    /// attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Time to keep in hand: with less left, recipients not yet sent go back to the queue.
    pub reserve: Duration,
    /// How long a loaded campaign is trusted before it is read again.
    pub campaign_ttl: Duration,
    /// How long a paused run's job waits on the queue before it looks again: the longest a
    /// resume takes to reach it.
    pub paused_recheck: Duration,
    /// How often a job in progress looks at its run again: the longest a pause or cancel
    /// takes to stop it.
    pub run_recheck: Duration,
    /// The account-wide send budget.
    pub budget: BudgetSettings,
}

impl Default for SendSettings {
    fn default() -> Self {
        SendSettings {
            claim_timeout: chrono::Duration::seconds(900),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            reserve: Duration::from_secs(5),
            campaign_ttl: Duration::from_secs(60),
            paused_recheck: Duration::from_secs(60),
            run_recheck: Duration::from_secs(1),
            budget: BudgetSettings::default(),
        }
    }
}

impl SendSettings {
    /// Delay before attempt `attempt` (1-based) of recipients put back.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }

    /// Delay before recipients of a run waiting for quota are looked at again: until SES
    /// should have room, but no longer than the recheck interval (and SQS's 15 minutes).
    pub fn quota_delay(&self, resume_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
        let until = (resume_at - now).to_std().unwrap_or_default();
        until
            .min(self.budget.quota_recheck)
            .min(Duration::from_secs(900))
            .max(self.retry_base)
    }
}

/// Per-instance state kept for the life of the container: how many recipients are worked on
/// at once, and this instance's slots of the shared send budget.
pub struct Throttle {
    concurrency: Semaphore,
    pacer: Pacer,
}

impl Throttle {
    pub fn new(concurrency: usize) -> Throttle {
        Throttle {
            concurrency: Semaphore::new(concurrency.max(1)),
            pacer: Pacer::default(),
        }
    }
}

/// Throttling answers one recipient may meet in one attempt before it goes back to the queue.
const THROTTLED_SENDS_PER_ATTEMPT: u32 = 3;

/// Campaigns loaded by this container, trusted for `campaign_ttl`.
#[derive(Default)]
pub struct CampaignCache {
    entries: Mutex<HashMap<CampaignId, (Arc<Campaign>, Instant)>>,
}

#[derive(thiserror::Error, Debug)]
pub enum CampaignLoadError {
    #[error("campaign '{0}' does not exist")]
    Unknown(CampaignId),
    #[error("campaign '{id}' is not valid: {errors}")]
    Invalid {
        id: CampaignId,
        errors: crate::campaign::CampaignErrors,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CampaignCache {
    pub async fn load(
        &self,
        store: &dyn CampaignStore,
        id: &CampaignId,
        ttl: Duration,
    ) -> Result<Arc<Campaign>, CampaignLoadError> {
        if let Some((campaign, loaded)) = self.entries.lock().expect("cache lock").get(id)
            && loaded.elapsed() < ttl
        {
            return Ok(campaign.clone());
        }
        let definition = store
            .get(id)
            .await?
            .ok_or_else(|| CampaignLoadError::Unknown(id.clone()))?;
        let campaign = Arc::new(
            Campaign::from_definition(definition, None).map_err(|errors| {
                CampaignLoadError::Invalid {
                    id: id.clone(),
                    errors,
                }
            })?,
        );
        self.entries
            .lock()
            .expect("cache lock")
            .insert(id.clone(), (campaign.clone(), Instant::now()));
        Ok(campaign)
    }
}

pub struct SendPorts<'a> {
    pub campaigns: &'a dyn CampaignStore,
    pub runs: &'a dyn RunStore,
    pub ledger: &'a dyn Ledger,
    pub suppressions: &'a dyn SuppressionList,
    pub contacts: &'a dyn ContactStore,
    pub sender: &'a dyn EmailSender,
    pub queue: &'a dyn JobQueue,
    pub budget: &'a dyn BudgetStore,
    pub account: &'a dyn AccountSource,
}

/// What happened to a job's recipients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobReport {
    pub sent: u32,
    pub failed: u32,
    pub suppressed: u32,
    /// Already in a terminal state (a redelivered or duplicated message).
    pub already_done: u32,
    pub uncertain: u32,
    /// Put back on the queue for a later attempt (throttling, transient errors, time).
    pub requeued: u32,
    /// Not sent because the run is paused or waits for quota (kept on the queue until it
    /// sends again), or because they are beyond the canary slice (kept until its verdict).
    pub held: u32,
    /// Recorded `cancelled`: the run was cancelled before they were sent to.
    pub cancelled: u32,
    /// Accepted by SES but the ledger could not record it: left `claimed`, so it turns
    /// `uncertain`, never resent.
    pub unrecorded: u32,
    /// Budget slots given up because the send was not ready in time for them.
    pub missed_slots: u32,
    /// The latest a send left after its slot, in milliseconds (within the tolerance).
    pub max_lateness_ms: u32,
}

impl JobReport {
    fn absorb(&mut self, step: Step) {
        match step {
            Step::Sent => self.sent += 1,
            Step::Failed => self.failed += 1,
            Step::Suppressed => self.suppressed += 1,
            Step::AlreadyDone => self.already_done += 1,
            Step::Uncertain => self.uncertain += 1,
            Step::Held => self.held += 1,
            Step::Unrecorded => {
                self.unrecorded += 1;
                self.requeued += 1;
            }
            Step::Retry => self.requeued += 1,
            Step::Broken(_) => {}
        }
    }
}

/// Why a job must be delivered again as a whole (an SQS batch item failure).
#[derive(thiserror::Error, Debug)]
pub enum JobFailure {
    #[error("run {run} could not be read: {source}")]
    RunUnreadable { run: RunRef, source: StoreError },
    #[error("campaign could not be loaded: {0}")]
    Campaign(StoreError),
    #[error("consent check failed: {0}")]
    Consent(StoreError),
    #[error("recipients to retry could not be put back: {0}")]
    Requeue(QueueError),
    #[error("the ledger refused a write: {0}")]
    Ledger(String),
    #[error("the account check failed: {0}")]
    Account(BudgetError),
    #[error("a run waiting for quota could not be resumed: {0}")]
    Resume(StoreError),
    #[error("the canary slice's verdict could not be recorded: {0}")]
    Canary(StoreError),
}

/// The job names something that does not exist: it is recorded and acknowledged, not retried.
#[derive(thiserror::Error, Debug)]
pub enum JobRejection {
    #[error("run {0} does not exist")]
    UnknownRun(RunRef),
    #[error(transparent)]
    Campaign(CampaignLoadError),
}

#[derive(thiserror::Error, Debug)]
pub enum JobError {
    #[error(transparent)]
    Retry(#[from] JobFailure),
    #[error(transparent)]
    Reject(#[from] JobRejection),
}

pub struct JobContext<'a> {
    /// Unique per attempt at this job: the claim token.
    pub token: &'a str,
    pub time_left: &'a (dyn Fn() -> Duration + Send + Sync),
    pub now: &'a (dyn Fn() -> DateTime<Utc> + Send + Sync),
}

enum Step {
    /// The ledger refused for good (not a passing outage): the whole message fails.
    Broken(String),
    Sent,
    Failed,
    Suppressed,
    AlreadyDone,
    Uncertain,
    Held,
    Unrecorded,
    Retry,
}

struct Shared<'a> {
    ports: &'a SendPorts<'a>,
    settings: &'a SendSettings,
    throttle: &'a Throttle,
    ctx: &'a JobContext<'a>,
    run: RunRef,
    campaign: &'a Campaign,
    sending: SendingAccount,
    /// Set when SES says the account or settings stop all sending, or the run was paused or
    /// cancelled meanwhile: no further call this job.
    stopped: AtomicBool,
    /// The run's state as last read, and when.
    run_state: tokio::sync::Mutex<(DateTime<Utc>, RunState)>,
    /// Set when the daily quota is used up: when SES should have room again.
    quota_until: Mutex<Option<DateTime<Utc>>>,
    /// Set when SES itself refused a send for the quota: slots already held are no good.
    quota_refused: AtomicBool,
    missed_slots: AtomicU32,
    max_lateness_us: AtomicU32,
}

/// Records every recipient of the job without a record yet as `cancelled`; how many it
/// wrote. Those with one (sent, failed, ...) keep it. A store failure retries the job.
async fn cancel_recipients(
    ports: &SendPorts<'_>,
    job: &SendJob,
    now: DateTime<Utc>,
) -> Result<u32, JobFailure> {
    let run = job.run();
    let mut written = 0;
    for recipient in &job.recipients {
        match ports
            .ledger
            .record_cancelled(&run, &recipient.email, now)
            .await
        {
            Ok(ClaimResult::Claimed) => written += 1,
            Ok(ClaimResult::Existing(_)) => {}
            Err(err) => return Err(JobFailure::Ledger(err.to_string())),
        }
    }
    Ok(written)
}

/// The job's campaign: a store failure is retried, a missing or invalid campaign rejected.
async fn job_campaign(
    ports: &SendPorts<'_>,
    settings: &SendSettings,
    cache: &CampaignCache,
    job: &SendJob,
) -> Result<Arc<Campaign>, JobError> {
    match cache
        .load(ports.campaigns, &job.campaign_id, settings.campaign_ttl)
        .await
    {
        Ok(campaign) => Ok(campaign),
        Err(CampaignLoadError::Store(err)) => Err(JobFailure::Campaign(err).into()),
        Err(other) => Err(JobRejection::Campaign(other).into()),
    }
}

/// While a canary's run may not yet know whether it has a canary, its held recipients look
/// again this soon (or at the paused recheck, when that is shorter).
const CANARY_UNDECIDED_RECHECK: Duration = Duration::from_secs(10);

/// What the canary makes of a job.
struct Admission {
    /// The part to send now.
    admitted: Option<SendJob>,
    /// The part held back, and how long it waits on the queue; put back only once the
    /// admitted part is done, so a job that fails and is delivered again holds it once.
    held: Option<(SendJob, Duration)>,
    /// While the slice awaits its verdict: sends placed below this are the slice's, counted
    /// on the run for the judge.
    slice_below: Option<u64>,
}

/// Splits `job` by the run's canary. The first job to find the slice's wait over judges the
/// slice; a failed slice pauses the run with its figures (again by any job that finds the
/// run still sending, so a pause lost between the two writes is made up).
async fn canary_admits(
    ports: &SendPorts<'_>,
    settings: &SendSettings,
    campaign: &Campaign,
    record: &RunRecord,
    mut job: SendJob,
    now: DateTime<Utc>,
) -> Result<Admission, JobFailure> {
    let run = job.run();
    let mut record = Cow::Borrowed(record);
    let (admit_below, delay) = loop {
        match canary::gate(&record, now) {
            Gate::Open => {
                return Ok(Admission {
                    admitted: Some(job),
                    held: None,
                    slice_below: None,
                });
            }
            Gate::Hold { admit_below, delay } => break (admit_below, delay),
            Gate::Due {
                admit_below,
                slice,
                until,
            } => {
                let plan = record.canary.as_ref().expect("a due canary has a plan");
                let guardrails = campaign.limits.guardrails();
                let figures = canary::SliceFigures {
                    slice,
                    sent: record.canary_sent,
                    feedback: &record.feedback,
                };
                let verdict = match canary::judge(plan, &figures, &guardrails, until, now) {
                    Judgement::Short { look_again_at } => {
                        tracing::info!(run = %run, resolved = record.feedback.resolved_sends(), sent = record.canary_sent, slice, "canary slice's feedback is not in yet; the rest waits");
                        let wait = (look_again_at - now).to_std().unwrap_or_default();
                        break (admit_below, Delay::Exactly(wait));
                    }
                    Judgement::Decided(verdict) => verdict,
                };
                if ports
                    .runs
                    .settle_canary(&run, &verdict, None)
                    .await
                    .map_err(JobFailure::Canary)?
                {
                    tracing::info!(run = %run, verdict = %verdict, "canary slice judged");
                }
                // Judged here or by another job meanwhile: the stored verdict rules.
                let mut fresh = ports
                    .runs
                    .get(&run)
                    .await
                    .map_err(JobFailure::Canary)?
                    .unwrap_or_else(|| record.clone().into_owned());
                fresh.canary_verdict.get_or_insert(verdict);
                record = Cow::Owned(fresh);
            }
        }
    };
    if let Some(failed) = record
        .canary_verdict
        .as_ref()
        .filter(|verdict| verdict.outcome == CanaryOutcome::Failed)
    {
        // This job found the run sending: the verdict's pause is not (yet) in place.
        tracing::warn!(run = %run, verdict = %failed, "canary slice failed; run paused");
        ports
            .runs
            .pause(&run, &failed.detail, now)
            .await
            .map_err(JobFailure::Canary)?;
    }
    let (admitted, held) = canary::split(std::mem::take(&mut job.recipients), admit_below);
    let delay = delay.resolve(
        settings.paused_recheck.min(CANARY_UNDECIDED_RECHECK),
        settings.paused_recheck,
    );
    let held = (!held.is_empty()).then(|| (SendJob::new(&run, job.attempt, held), delay));
    let admitted = (!admitted.is_empty()).then(|| {
        job.recipients = admitted;
        job
    });
    Ok(Admission {
        admitted,
        held,
        slice_below: Some(admit_below),
    })
}

/// Puts the recipients the canary holds back on the queue.
async fn hold_back(
    ports: &SendPorts<'_>,
    held: Option<(SendJob, Duration)>,
    admitted: usize,
    report: &mut JobReport,
) -> Result<(), JobFailure> {
    let Some((back, delay)) = held else {
        return Ok(());
    };
    ports
        .queue
        .enqueue_delayed(&back, delay)
        .await
        .map_err(JobFailure::Requeue)?;
    report.held += back.recipients.len() as u32;
    tracing::info!(run = %back.run(), held = back.recipients.len(), admitted, delay_s = delay.as_secs(), "recipients beyond the canary slice held");
    Ok(())
}

pub async fn process_job(
    ports: &SendPorts<'_>,
    settings: &SendSettings,
    throttle: &Throttle,
    cache: &CampaignCache,
    job: SendJob,
    ctx: &JobContext<'_>,
) -> Result<JobReport, JobError> {
    let run = job.run();
    let mut record = ports
        .runs
        .get(&run)
        .await
        .map_err(|source| JobFailure::RunUnreadable {
            run: run.clone(),
            source,
        })?
        .ok_or_else(|| JobRejection::UnknownRun(run.clone()))?;
    let mut report = JobReport::default();
    if record.state == RunState::WaitingForQuota {
        let campaign = job_campaign(ports, settings, cache, &job).await?;
        let budget = Budget {
            store: ports.budget,
            account: ports.account,
            settings: &settings.budget,
        };
        let now = (ctx.now)();
        match budget
            .verdict(&campaign.ses.sending_account(), now)
            .await
            .map_err(JobFailure::Account)?
        {
            AccountVerdict::Ready => {
                if ports
                    .runs
                    .resume_after_quota(&run, now)
                    .await
                    .map_err(JobFailure::Resume)?
                {
                    tracing::info!(run = %run, "the SES quota has room again; run resumed");
                }
                record.state = RunState::Sending;
            }
            AccountVerdict::QuotaExhausted { resume_at } => {
                let delay = settings.quota_delay(resume_at, now);
                ports
                    .queue
                    .enqueue_delayed(&job, delay)
                    .await
                    .map_err(JobFailure::Requeue)?;
                report.held = job.recipients.len() as u32;
                tracing::info!(run = %run, resume_at = %resume_at, delay_s = delay.as_secs(), recipients = report.held, "waiting for quota; job held");
                return Ok(report);
            }
            AccountVerdict::Unhealthy { reason } => {
                if let Err(err) = ports.runs.pause(&run, &reason, now).await {
                    tracing::error!(run = %run, error = %err, "run could not be paused");
                }
                record.state = RunState::Paused;
            }
        }
    }
    if record.state == RunState::Cancelled {
        report.cancelled = cancel_recipients(ports, &job, (ctx.now)()).await?;
        tracing::info!(run = %run, cancelled = report.cancelled, recipients = job.recipients.len(), "run cancelled; recipients recorded cancelled");
        return Ok(report);
    }
    if !record.state.allows_sending() {
        report.held = job.recipients.len() as u32;
        // Kept on the queue until the run sends again; a resume reaches it within the delay.
        ports
            .queue
            .enqueue_delayed(&job, settings.paused_recheck)
            .await
            .map_err(JobFailure::Requeue)?;
        tracing::info!(run = %run, state = %record.state, recipients = report.held, "run not sending; job held");
        return Ok(report);
    }
    let campaign = job_campaign(ports, settings, cache, &job).await?;
    let now = (ctx.now)();
    let admission = canary_admits(ports, settings, &campaign, &record, job, now).await?;
    let Some(job) = admission.admitted else {
        hold_back(ports, admission.held, 0, &mut report).await?;
        return Ok(report);
    };
    let emails: Vec<EmailAddress> = job.recipients.iter().map(|r| r.email.clone()).collect();
    let suppressed = ports
        .suppressions
        .check(&emails, campaign.ses.list_topic().as_ref())
        .await
        .map_err(JobFailure::Consent)?;

    let shared = Shared {
        ports,
        settings,
        throttle,
        ctx,
        run: run.clone(),
        campaign: &campaign,
        sending: campaign.ses.sending_account(),
        stopped: AtomicBool::new(false),
        run_state: tokio::sync::Mutex::new(((ctx.now)(), record.state)),
        quota_until: Mutex::new(None),
        quota_refused: AtomicBool::new(false),
        missed_slots: AtomicU32::new(0),
        max_lateness_us: AtomicU32::new(0),
    };
    let steps = join_all(job.recipients.iter().map(|recipient| {
        let reason = suppressed.get(&recipient.email).map(String::as_str);
        shared.recipient(recipient, reason)
    }))
    .await;

    report.missed_slots = shared.missed_slots.load(Ordering::Relaxed);
    report.max_lateness_ms = shared.max_lateness_us.load(Ordering::Relaxed) / 1000;
    let mut retry = Vec::new();
    let mut held = false;
    let sent_steps: Vec<bool> = steps
        .iter()
        .map(|step| matches!(step, Step::Sent))
        .collect();
    for (recipient, step) in job.recipients.iter().zip(steps) {
        match &step {
            Step::Broken(problem) => {
                return Err(JobFailure::Ledger(problem.clone()).into());
            }
            // An unrecorded recipient goes back too: it will never be sent again (its claim
            // stands), but a later delivery turns the claim `uncertain`, a terminal state.
            Step::Retry | Step::Unrecorded => retry.push(recipient.clone()),
            Step::Held => {
                held = true;
                retry.push(recipient.clone());
            }
            _ => {}
        }
        report.absorb(step);
    }
    if !retry.is_empty() {
        let next = SendJob::new(&run, job.attempt + 1, retry);
        let quota_until = *shared.quota_until.lock().expect("quota lock");
        let delay = match quota_until {
            _ if held => settings.paused_recheck,
            Some(resume_at) => settings.quota_delay(resume_at, (ctx.now)()),
            None => settings.retry_delay(next.attempt),
        };
        ports
            .queue
            .enqueue_delayed(&next, delay)
            .await
            .map_err(JobFailure::Requeue)?;
        tracing::info!(run = %run, recipients = next.recipients.len(), attempt = next.attempt, delay_s = delay.as_secs(), "recipients put back for a later attempt");
    }
    hold_back(ports, admission.held, job.recipients.len(), &mut report).await?;
    if let Some(below) = admission.slice_below {
        let slice_sent = job
            .recipients
            .iter()
            .zip(&sent_steps)
            .filter(|(recipient, sent)| **sent && recipient.position.is_some_and(|p| p < below))
            .count() as u64;
        if slice_sent > 0
            && let Err(err) = ports.runs.count_canary_sends(&run, slice_sent).await
        {
            // The judge then asks for fewer resolved sends, never for more than were sent.
            tracing::warn!(run = %run, error = %err, "canary slice's sends not counted");
        }
    }
    Ok(report)
}

impl Shared<'_> {
    async fn permit(&self) -> SemaphorePermit<'_> {
        self.throttle
            .concurrency
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    fn quota_waiting(&self) -> bool {
        self.quota_until.lock().expect("quota lock").is_some()
    }

    /// Whether the run stopped sending (paused, cancelled, waiting for quota), reading it
    /// again when the last look is older than `run_recheck`: so a pause or cancel reaches a
    /// job in progress, not only the next one.
    async fn run_stopped(&self) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return true;
        }
        let mut seen = self.run_state.lock().await;
        let now = (self.ctx.now)();
        let recheck = chrono::Duration::from_std(self.settings.run_recheck).unwrap_or_default();
        if now - seen.0 >= recheck {
            match self.ports.runs.get(&self.run).await {
                Ok(Some(record)) => *seen = (now, record.state),
                Ok(None) => seen.0 = now,
                Err(err) => {
                    // The last state stands; the next look is a recheck away.
                    tracing::warn!(run = %self.run, error = %err, "run state not read again");
                    seen.0 = now;
                }
            }
        }
        if seen.1.allows_sending() {
            return false;
        }
        if !self.stopped.swap(true, Ordering::Relaxed) {
            tracing::info!(run = %self.run, state = %seen.1, "run stopped sending meanwhile; the rest of the job is held");
        }
        true
    }

    /// Whether to stop before taking a slot: the run stopped, the quota is used up, or the
    /// time left is too short.
    fn halt(&self) -> Option<Step> {
        if self.quota_waiting() {
            return Some(Step::Retry);
        }
        self.halt_holding_slot()
    }

    /// Whether to stop with a slot in hand: a slot is within the budget's quota, so only a
    /// stopped run, SES's own quota refusal or the time stop it.
    fn halt_holding_slot(&self) -> Option<Step> {
        if self.stopped.load(Ordering::Relaxed) {
            return Some(Step::Held);
        }
        if self.quota_refused.load(Ordering::Relaxed)
            || (self.ctx.time_left)() < self.settings.reserve
        {
            return Some(Step::Retry);
        }
        None
    }

    fn budget(&self) -> Budget<'_> {
        Budget {
            store: self.ports.budget,
            account: self.ports.account,
            settings: &self.settings.budget,
        }
    }

    /// A slot of the send budget, or the step to take when there is none to be had.
    async fn slot(&self) -> Result<i64, Step> {
        let usable = (self.ctx.time_left)().saturating_sub(self.settings.reserve);
        let deadline_us = (self.ctx.now)().timestamp_micros()
            + i64::try_from(usable.as_micros()).unwrap_or(i64::MAX);
        let slot = self
            .throttle
            .pacer
            .slot(
                &self.budget(),
                &self.sending,
                &self.run,
                self.campaign.limits.send_rate,
                deadline_us,
                self.ctx.now,
            )
            .await;
        match slot {
            Ok(slot) => Ok(slot),
            Err(NoSlot::Deadline) => Err(Step::Retry),
            Err(NoSlot::QuotaExhausted { resume_at }) => {
                self.wait_for_quota(resume_at).await;
                Err(Step::Retry)
            }
            Err(NoSlot::Unhealthy { reason }) => {
                self.stop_run(&format!("account not fit to send: {reason}"))
                    .await;
                Err(Step::Held)
            }
            Err(NoSlot::Budget(err)) => {
                // Never send unpaced: without the budget, the recipient waits.
                tracing::warn!(run = %self.run, error = %err, "send budget unavailable; recipient put back");
                Err(Step::Retry)
            }
        }
    }

    /// The first caller moves the run to `waiting_for_quota`; every later recipient of this
    /// job goes back to the queue.
    async fn wait_for_quota(&self, resume_at: DateTime<Utc>) {
        let first = {
            let mut until = self.quota_until.lock().expect("quota lock");
            let first = until.is_none();
            *until = Some(resume_at);
            first
        };
        if first {
            tracing::warn!(run = %self.run, resume_at = %resume_at, "the 24-hour SES quota is used up; run waits for quota");
            if let Err(err) = self
                .ports
                .runs
                .wait_for_quota(
                    &self.run,
                    "the account's 24-hour SES sending quota is used up",
                    resume_at,
                    (self.ctx.now)(),
                )
                .await
            {
                tracing::error!(run = %self.run, error = %err, "run could not be set to wait for quota");
            }
        }
    }

    /// The first caller pauses the run with `reason`; no further send goes out this job.
    async fn stop_run(&self, reason: &str) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            tracing::error!(run = %self.run, "pausing run: {reason}");
            if let Err(store) = self
                .ports
                .runs
                .pause(&self.run, reason, (self.ctx.now)())
                .await
            {
                tracing::error!(run = %self.run, error = %store, "run could not be paused");
            }
        }
    }

    async fn recipient(&self, recipient: &JobRecipient, suppressed: Option<&str>) -> Step {
        // Checked before any write: a claim that is released at once costs two writes.
        if let Some(step) = self.halt() {
            return step;
        }
        let email = &recipient.email;
        if let Some(reason) = suppressed {
            let _permit = self.permit().await;
            let now = (self.ctx.now)();
            return match self
                .ports
                .ledger
                .record_suppressed(&self.run, email, reason, now)
                .await
            {
                Ok(ClaimResult::Claimed) => Step::Suppressed,
                Ok(ClaimResult::Existing(existing)) => self.existing(email, &existing, now).await,
                Err(err) => self.store_trouble("record suppressed", email, &err),
            };
        }
        // The slot first: waiting for one holds neither a claim nor a permit.
        let mut slot = match self.slot().await {
            Ok(slot) => slot,
            Err(step) => return step,
        };
        // The claim just ahead of the slot, so the send can leave on time; permits are held
        // for the calls only, never across a wait for a slot.
        let lead_us = i64::try_from(self.settings.budget.lead.as_micros()).unwrap_or(0);
        sleep_until_us(slot - lead_us, self.ctx.now).await;
        {
            let _permit = self.permit().await;
            // Looked at with the permit in hand: sends queue for permits when the stores are
            // slow, and a pause must reach those too.
            if self.run_stopped().await {
                return Step::Held;
            }
            if let Some(step) = self.halt_holding_slot() {
                return step;
            }
            let now = (self.ctx.now)();
            match self
                .ports
                .ledger
                .claim(&self.run, email, self.ctx.token, now)
                .await
            {
                Ok(ClaimResult::Claimed) => {}
                Ok(ClaimResult::Existing(existing)) => {
                    if judge_existing(&existing, self.ctx.token, now, self.settings.claim_timeout)
                        != ExistingClaim::Ours
                    {
                        return self.existing(email, &existing, now).await;
                    }
                }
                Err(err) => return self.store_trouble("claim", email, &err),
            }
        }
        // From here on we hold the claim: every path ends it.
        let rendered = match self.campaign.template.render(email, &recipient.attributes) {
            Ok(rendered) => rendered,
            Err(err) => {
                let reason = format!("template: {err}");
                return self
                    .finish(email, &Outcome::Failed { reason }, Step::Failed)
                    .await;
            }
        };
        let outbound = self.outbound(email, rendered);
        let late_us = i64::try_from(self.settings.budget.late_tolerance.as_micros()).unwrap_or(0);
        let mut throttled = 0;
        loop {
            sleep_until_us(slot, self.ctx.now).await;
            let permit = self.permit().await;
            if self.run_stopped().await {
                return self.release(email, Step::Held).await;
            }
            let lateness = (self.ctx.now)().timestamp_micros() - slot;
            if lateness > late_us {
                // Too late for this slot: sent now, it could crowd the slots after it.
                self.missed_slots.fetch_add(1, Ordering::Relaxed);
                drop(permit);
                slot = match self.slot().await {
                    Ok(slot) => slot,
                    Err(step) => return self.release(email, step).await,
                };
                continue;
            }
            self.max_lateness_us.fetch_max(
                u32::try_from(lateness.max(0)).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
            // The wait may have used up the time, or another send stopped the run.
            if let Some(step) = self.halt_holding_slot() {
                return self.release(email, step).await;
            }
            match self.ports.sender.send(&outbound).await {
                Ok(ses_message_id) => return self.sent(email, ses_message_id).await,
                Err(err)
                    if err.class == SendErrorClass::Throttled
                        && throttled + 1 < THROTTLED_SENDS_PER_ATTEMPT =>
                {
                    throttled += 1;
                    drop(permit);
                    self.throttled(email, &err).await;
                    slot = match self.slot().await {
                        Ok(slot) => slot,
                        Err(step) => return self.release(email, step).await,
                    };
                }
                Err(err) => return self.refused(email, err).await,
            }
        }
    }

    /// SES throttled a send: every instance slows down, and this one drops the slots it
    /// holds at the old rate.
    async fn throttled(&self, email: &EmailAddress, err: &SendError) {
        tracing::info!(run = %self.run, to = %shown(email), code = %err.code, "send throttled; the budget backs off");
        self.throttle.pacer.forget(&self.run);
        if let Err(store) = self.budget().throttled(&self.sending, self.ctx.now).await {
            tracing::warn!(run = %self.run, error = %store, "throttling not recorded in the send budget");
        }
    }

    async fn sent(&self, email: &EmailAddress, ses_message_id: String) -> Step {
        let step = self
            .finish(email, &Outcome::Sent { ses_message_id }, Step::Sent)
            .await;
        if let Err(err) = self
            .ports
            .contacts
            .record_last_sent(
                &self.campaign.list,
                email,
                &self.run,
                "sent",
                (self.ctx.now)(),
            )
            .await
        {
            tracing::warn!(run = %self.run, to = %shown(email), error = %err, "last-sent not recorded on the contact");
        }
        step
    }

    /// A record was there before us: done already, someone else's live claim, or an
    /// abandoned one.
    async fn existing(
        &self,
        email: &EmailAddress,
        existing: &DeliveryRecord,
        now: DateTime<Utc>,
    ) -> Step {
        match judge_existing(existing, self.ctx.token, now, self.settings.claim_timeout) {
            ExistingClaim::AlreadyDone(_) => Step::AlreadyDone,
            // Ours only after a retried claim write; the caller sends. Elsewhere: later.
            ExistingClaim::Ours | ExistingClaim::HeldElsewhere => Step::Retry,
            ExistingClaim::Abandoned => match self
                .ports
                .ledger
                .mark_uncertain(&self.run, email, existing.claim_token.as_deref(), now)
                .await
            {
                Ok(true) => {
                    tracing::warn!(run = %self.run, to = %shown(email), "abandoned claim recorded as uncertain");
                    Step::Uncertain
                }
                Ok(false) => Step::Retry,
                Err(err) => self.store_trouble("mark uncertain", email, &err),
            },
        }
    }

    async fn refused(&self, email: &EmailAddress, err: SendError) -> Step {
        match err.class {
            SendErrorClass::Throttled => {
                self.throttled(email, &err).await;
                self.release(email, Step::Retry).await
            }
            SendErrorClass::Transient => {
                tracing::info!(run = %self.run, to = %shown(email), code = %err.code, "send deferred");
                self.release(email, Step::Retry).await
            }
            SendErrorClass::QuotaExhausted => {
                tracing::warn!(run = %self.run, to = %shown(email), code = %err.code, "SES refused the send for the daily quota");
                self.quota_refused.store(true, Ordering::Relaxed);
                let resume_at = (self.ctx.now)()
                    + chrono::Duration::from_std(self.settings.budget.quota_recheck)
                        .unwrap_or_default();
                self.wait_for_quota(resume_at).await;
                let budget = self.budget();
                if let Err(store) = budget.quota_refused(&self.sending, self.ctx.now).await {
                    tracing::warn!(run = %self.run, error = %store, "quota refusal not recorded in the send budget");
                }
                self.release(email, Step::Retry).await
            }
            SendErrorClass::OutcomeUnknown => {
                tracing::warn!(run = %self.run, to = %shown(email), code = %err.code, "no answer from SES; recorded uncertain");
                match self
                    .ports
                    .ledger
                    .mark_uncertain(&self.run, email, Some(self.ctx.token), (self.ctx.now)())
                    .await
                {
                    Ok(true) => Step::Uncertain,
                    Ok(false) => Step::Unrecorded,
                    Err(store) => {
                        tracing::error!(run = %self.run, to = %shown(email), error = %store, "uncertain outcome not recorded");
                        Step::Unrecorded
                    }
                }
            }
            SendErrorClass::Permanent => {
                tracing::warn!(run = %self.run, to = %shown(email), code = %err.code, "send refused for good");
                let reason = err.to_string();
                self.finish(email, &Outcome::Failed { reason }, Step::Failed)
                    .await
            }
            SendErrorClass::Fatal => {
                self.stop_run(&format!("SES refused sending: {err}")).await;
                self.release(email, Step::Held).await
            }
        }
    }

    fn outbound(
        &self,
        to: &EmailAddress,
        rendered: crate::template::RenderedMessage,
    ) -> OutboundEmail {
        let ses = &self.campaign.ses;
        OutboundEmail {
            sending: self.sending.clone(),
            from: self.campaign.from.header_value(),
            to: to.clone(),
            reply_to: self.campaign.reply_to.clone(),
            subject: rendered.subject,
            html: rendered.html,
            text: rendered.text,
            configuration_set: ses.configuration_set.clone(),
            list_management: ses
                .contact_list
                .clone()
                .map(|list| (list, ses.topic.clone())),
            tags: vec![
                (CAMPAIGN_TAG.to_owned(), self.run.campaign_id.to_string()),
                (RUN_TAG.to_owned(), self.run.run_id.to_string()),
            ],
        }
    }

    async fn finish(&self, email: &EmailAddress, outcome: &Outcome, step: Step) -> Step {
        match self
            .ports
            .ledger
            .complete(&self.run, email, self.ctx.token, outcome, (self.ctx.now)())
            .await
        {
            Ok(true) => step,
            Ok(false) => {
                tracing::warn!(run = %self.run, to = %shown(email), "claim was taken over before its outcome was recorded");
                Step::Unrecorded
            }
            Err(err) => {
                tracing::error!(run = %self.run, to = %shown(email), outcome = %outcome.state(), error = %err, "outcome not recorded; the claim will turn uncertain");
                Step::Unrecorded
            }
        }
    }

    async fn release(&self, email: &EmailAddress, step: Step) -> Step {
        if let Err(err) = self
            .ports
            .ledger
            .release(&self.run, email, self.ctx.token)
            .await
        {
            // Nothing reached SES, but the claim stays: a later attempt finds it and, once
            // stale, records `uncertain`: precision is lost, never the "once" rule.
            tracing::error!(run = %self.run, to = %shown(email), error = %err, "claim not released");
            return Step::Retry;
        }
        step
    }

    fn store_trouble(&self, operation: &str, email: &EmailAddress, err: &StoreError) -> Step {
        if err.retryable {
            tracing::warn!(run = %self.run, to = %shown(email), operation, error = %err, "ledger unavailable; recipient put back");
            Step::Retry
        } else {
            // A missing table or a denied permission will not heal by waiting: fail the
            // message, so SQS redelivers it and, in the end, the dead-letter queue keeps it.
            tracing::error!(run = %self.run, to = %shown(email), operation, error = %err, "ledger refused the write");
            Step::Broken(err.to_string())
        }
    }
}
