//! The account-wide send budget: one shared schedule of send slots for every sender instance
//! and every run, at the account's SES rate (`MaxSendRate` from `GetAccount`, less a headroom
//! for other mail), slowed at once on throttling and recovered gradually, within the daily
//! quota, and only while the account is healthy.
//!
//! The schedule is a GCRA clock kept in one stored item: a grant takes `count` consecutive
//! slots `spacing` apart from `next_slot` on, so the slots of all grants together never come
//! closer than the pacing rate allows, whoever holds them. A sender instance takes a chunk of
//! slots per write (a fraction of a second's worth), which keeps the store's cost far below
//! one write per email. Each concurrent run has a lane that holds it to its fair share (and
//! to its campaign's own cap), so two runs split the budget instead of the first one taking
//! it all.
//!
//! Everything here is pure; [`Budget`] drives it through the [`BudgetStore`] and
//! [`AccountSource`] ports, and [`Pacer`] hands slots out to one instance's sends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::campaign::SendingAccount;
use crate::ids::RunRef;
use crate::ports::StoreError;

const MICROS: f64 = 1_000_000.0;
/// How many chunks a run's lane may take ahead of its fair share.
const LANE_AHEAD_CHUNKS: f64 = 4.0;
/// The SES 24-hour quota window.
const DAY_SECS: i64 = 24 * 3600;

/// How the budget behaves. The defaults are what production wants; tests shorten the times.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSettings {
    /// Share of `MaxSendRate`, in percent, left for other mail from the account.
    pub headroom_percent: f64,
    /// Slots are laid this much below the budget, so that the small delays between a slot and
    /// SES's receipt of the request never put more than the budget into any one second.
    pub pacing_margin: f64,
    /// A slot not used within this time after it is due is given up (a late send could land
    /// next to the following slots and crowd a second).
    pub late_tolerance: Duration,
    /// Slots per grant: this long at the lane's rate.
    pub chunk: Duration,
    /// A grant's first slot is at least this far ahead, so the claim and rendering of the
    /// message fit before it.
    pub lead: Duration,
    /// How long an account snapshot (`GetAccount`) is trusted; SES allows that call once a
    /// second account-wide, and once a minute is plenty.
    pub account_ttl: Duration,
    /// A run that took slots this recently still counts for the fair shares.
    pub fair_window: Duration,
    /// How long a run waiting for the daily quota waits before looking again, at most.
    pub quota_recheck: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            headroom_percent: 10.0,
            pacing_margin: 0.022,
            late_tolerance: Duration::from_millis(10),
            chunk: Duration::from_millis(250),
            lead: Duration::from_millis(250),
            account_ttl: Duration::from_secs(60),
            fair_window: Duration::from_secs(2),
            quota_recheck: Duration::from_secs(600),
        }
    }
}

/// The additive-increase, multiplicative-decrease rules applied on throttling.
pub mod aimd {
    /// A throttling answer multiplies the rate by this.
    pub const DECREASE: f64 = 0.5;
    /// The rate never falls below this share of the budget.
    pub const FLOOR: f64 = 0.05;
    /// Share of the budget won back per second without throttling (0.5 → 1.0 in 10 s).
    pub const RECOVERY_PER_SEC: f64 = 0.05;
    /// Throttling answers this close to the last decrease belong to the same episode (the
    /// sends already in flight at the old rate) and do not decrease again.
    pub const EPISODE_SECS: f64 = 1.0;
}

/// The account as `GetAccount` describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountSnapshot {
    /// Recipients per second.
    pub max_send_rate: f64,
    /// Recipients per rolling 24 hours; negative means unlimited.
    pub max_24_hour_send: f64,
    pub sent_last_24_hours: f64,
    pub sending_enabled: bool,
    /// `HEALTHY`, `PROBATION` or `SHUTDOWN`.
    pub enforcement_status: String,
    pub production_access: bool,
    pub fetched_at: DateTime<Utc>,
}

impl AccountSnapshot {
    /// Why the account must not send now, if it must not.
    pub fn problem(&self) -> Option<String> {
        if !self.sending_enabled {
            return Some("SES reports that sending is disabled for the account".to_owned());
        }
        if !self.enforcement_status.eq_ignore_ascii_case("HEALTHY") {
            return Some(format!(
                "SES enforcement status of the account is {}",
                self.enforcement_status
            ));
        }
        if self.max_send_rate <= 0.0 {
            return Some("SES reports a maximum send rate of 0".to_owned());
        }
        None
    }

    /// Recipients left in the 24-hour quota at the time of the snapshot; `None`: unlimited.
    pub fn quota_left(&self) -> Option<f64> {
        (self.max_24_hour_send >= 0.0)
            .then(|| (self.max_24_hour_send - self.sent_last_24_hours).max(0.0))
    }
}

/// One run's share of the schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lane {
    /// The run may take slots again from here on (microseconds since the epoch).
    pub next_us: i64,
    /// When it last took slots.
    pub seen_us: i64,
    /// Its campaign's own limit, recipients per second.
    pub cap: Option<f64>,
}

/// The shared state, stored as one item and replaced under its `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetState {
    pub version: u64,
    /// The first slot no grant holds yet (microseconds since the epoch).
    pub next_slot_us: i64,
    /// The share of the budget in force at `factor_since_us`; it recovers from there.
    pub factor: f64,
    pub factor_since_us: i64,
    /// By run key (`campaign#run`).
    pub lanes: BTreeMap<String, Lane>,
    pub account: Option<AccountSnapshot>,
    /// Slots granted since the account snapshot was taken (SES's count lags behind).
    pub granted_since_account: u64,
    /// Slots granted per hour (hours since the epoch), for the last day: when the quota frees.
    pub hourly: BTreeMap<i64, u64>,
    /// SES refused a send for the daily quota at this time; trusted over a snapshot taken
    /// before it.
    pub quota_refused_at: Option<DateTime<Utc>>,
    /// A failed `GetAccount` is not tried again before this time.
    pub account_retry_at: Option<DateTime<Utc>>,
    /// Totals since the item was created, for operators and benchmarks.
    pub granted: u64,
    pub throttles: u64,
}

impl Default for BudgetState {
    fn default() -> Self {
        BudgetState {
            version: 0,
            next_slot_us: 0,
            factor: 1.0,
            factor_since_us: 0,
            lanes: BTreeMap::new(),
            account: None,
            granted_since_account: 0,
            hourly: BTreeMap::new(),
            quota_refused_at: None,
            account_retry_at: None,
            granted: 0,
            throttles: 0,
        }
    }
}

/// A request for slots.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantRequest {
    pub run: RunRef,
    /// The campaign's own limit, recipients per second.
    pub cap: Option<f64>,
    /// Recipients waiting for a slot.
    pub want: u32,
}

/// Slots `first_us + i * spacing_us` for `i` in `0..count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub first_us: i64,
    pub spacing_us: i64,
    pub count: u32,
}

impl Grant {
    pub fn slots(&self) -> impl Iterator<Item = i64> + '_ {
        (0..i64::from(self.count)).map(|i| self.first_us + i * self.spacing_us)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Granted(Grant),
    /// The run has had its share for now: ask again at `until_us`.
    Wait {
        until_us: i64,
    },
    /// The account snapshot is missing or too old: fetch it, then decide again.
    RefreshAccount,
    /// The daily quota is used up; SES should have room again around `resume_at`.
    QuotaExhausted {
        resume_at: DateTime<Utc>,
    },
    /// The account must not send (sending disabled, enforcement not healthy).
    Unhealthy {
        reason: String,
    },
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn duration_us(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Max-min fair shares of `total` among lanes with these caps: a lane capped below an equal
/// share keeps its cap and leaves the rest to the others. The share of lane `mine`.
pub fn fair_share(total: f64, caps: &[Option<f64>], mine: usize) -> f64 {
    let mut order: Vec<usize> = (0..caps.len()).collect();
    let cap = |i: usize| caps[i].unwrap_or(f64::INFINITY);
    order.sort_by(|&a, &b| cap(a).total_cmp(&cap(b)));
    let mut left = total;
    for (done, &lane) in order.iter().enumerate() {
        let equal = left / (caps.len() - done) as f64;
        let share = cap(lane).min(equal);
        if lane == mine {
            return share;
        }
        left -= share;
    }
    0.0
}

impl BudgetState {
    /// The share of the budget in force at `now_us`: after a decrease it grows back linearly.
    pub fn factor_at(&self, now_us: i64) -> f64 {
        let elapsed = (now_us - self.factor_since_us).max(0) as f64 / MICROS;
        (self.factor + aimd::RECOVERY_PER_SEC * elapsed).min(1.0)
    }

    /// The budget before throttling backs it off: `MaxSendRate` less the headroom.
    pub fn budget_rate(&self, settings: &BudgetSettings) -> Option<f64> {
        let account = self.account.as_ref()?;
        let headroom = settings.headroom_percent.clamp(0.0, 100.0) / 100.0;
        Some(account.max_send_rate * (1.0 - headroom))
    }

    /// The rate slots are laid at now: the budget, backed off, less the pacing margin.
    pub fn pacing_rate(&self, now_us: i64, settings: &BudgetSettings) -> Option<f64> {
        let margin = settings.pacing_margin.clamp(0.0, 0.5);
        self.budget_rate(settings)
            .map(|rate| rate * self.factor_at(now_us) * (1.0 - margin))
    }

    pub fn needs_account(&self, now: DateTime<Utc>, settings: &BudgetSettings) -> bool {
        let stale = match &self.account {
            None => return true,
            Some(account) => {
                now - account.fetched_at
                    > chrono::Duration::from_std(settings.account_ttl).unwrap_or_default()
            }
        };
        stale && self.account_retry_at.is_none_or(|at| now >= at)
    }

    pub fn set_account(&mut self, account: AccountSnapshot) {
        self.granted_since_account = 0;
        self.account_retry_at = None;
        self.account = Some(account);
    }

    /// `GetAccount` failed: keep the old snapshot, and do not ask again for `pause`.
    pub fn account_failed(&mut self, now: DateTime<Utc>, pause: Duration) {
        self.account_retry_at = Some(now + chrono::Duration::from_std(pause).unwrap_or_default());
    }

    /// Recipients left today as far as the budget knows; `None`: unlimited.
    pub fn quota_left(&self) -> Option<f64> {
        let account = self.account.as_ref()?;
        if self
            .quota_refused_at
            .is_some_and(|refused| refused >= account.fetched_at)
        {
            return Some(0.0);
        }
        account
            .quota_left()
            .map(|left| (left - self.granted_since_account as f64).max(0.0))
    }

    /// When the 24-hour window should have room again: a day after the oldest hour in which
    /// this budget granted slots (mail from elsewhere is unknown), and never sooner than the
    /// next snapshot could show it.
    pub fn quota_free_at(&self, now: DateTime<Utc>, settings: &BudgetSettings) -> DateTime<Utc> {
        let recheck = now + chrono::Duration::from_std(settings.account_ttl).unwrap_or_default();
        let day_ago_hour = (now.timestamp() - DAY_SECS).div_euclid(3600);
        self.hourly
            .iter()
            .find(|(hour, count)| **hour >= day_ago_hour && **count > 0)
            .and_then(|(hour, _)| DateTime::from_timestamp((hour + 1) * 3600 + DAY_SECS, 0))
            .map_or(
                now + chrono::Duration::from_std(settings.quota_recheck).unwrap_or_default(),
                |free| free.max(recheck),
            )
    }

    /// Whether the account may send now, from the snapshot (which must be fresh enough).
    pub fn verdict(&self, now: DateTime<Utc>, settings: &BudgetSettings) -> Option<Decision> {
        let account = self.account.as_ref()?;
        if let Some(reason) = account.problem() {
            return Some(Decision::Unhealthy { reason });
        }
        if self.quota_left().is_some_and(|left| left < 1.0) {
            return Some(Decision::QuotaExhausted {
                resume_at: self.quota_free_at(now, settings),
            });
        }
        None
    }

    /// Decides a request for slots at `now`, updating the schedule when it grants.
    pub fn decide(
        &mut self,
        request: &GrantRequest,
        now: DateTime<Utc>,
        settings: &BudgetSettings,
    ) -> Decision {
        if self.needs_account(now, settings) {
            return Decision::RefreshAccount;
        }
        if let Some(stop) = self.verdict(now, settings) {
            return stop;
        }
        let now_us = micros(now);
        let pace = self.pacing_rate(now_us, settings).unwrap_or(0.0);
        if pace <= 0.0 {
            return Decision::Unhealthy {
                reason: "the send budget is 0 (headroom takes the whole rate)".to_owned(),
            };
        }
        self.forget_idle(now_us, settings);
        let key = request.run.to_string();
        let active_since = now_us - duration_us(settings.fair_window);
        let mut caps = Vec::new();
        let mut mine = 0;
        for (run, lane) in &self.lanes {
            if *run == key {
                mine = caps.len();
                caps.push(request.cap);
            } else if lane.seen_us >= active_since {
                caps.push(lane.cap);
            }
        }
        if !self.lanes.contains_key(&key) {
            mine = caps.len();
            caps.push(request.cap);
        }
        let lane_rate = fair_share(pace, &caps, mine).min(pace);
        if lane_rate <= 0.0 {
            return Decision::Unhealthy {
                reason: "the campaign's send rate is 0".to_owned(),
            };
        }
        let lead_us = duration_us(settings.lead);
        let start = self.next_slot_us.max(now_us + lead_us);
        let chunk_secs = settings.chunk.as_secs_f64();
        // A lane may run up to a second ahead of its share, so that a lane whose partner is
        // slow to ask does not leave the schedule idle; over seconds each keeps to its share.
        let tolerance = (LANE_AHEAD_CHUNKS * chunk_secs * MICROS) as i64;
        let quota_left = self.quota_left();
        let lane = self.lanes.entry(key).or_default();
        if lane.next_us > start + tolerance {
            return Decision::Wait {
                until_us: now_us + (lane.next_us - start - tolerance),
            };
        }
        let per_chunk = (lane_rate * chunk_secs).round().max(1.0);
        let mut count = f64::from(request.want.max(1)).min(per_chunk);
        if let Some(left) = quota_left {
            count = count.min(left.floor());
        }
        let count = count as u32;
        let spacing_us = (MICROS / pace).round().max(1.0) as i64;
        self.next_slot_us = start + i64::from(count) * spacing_us;
        lane.next_us = lane.next_us.max(start) + (f64::from(count) * MICROS / lane_rate) as i64;
        lane.seen_us = now_us;
        lane.cap = request.cap;
        self.granted_since_account += u64::from(count);
        self.granted += u64::from(count);
        *self
            .hourly
            .entry(now.timestamp().div_euclid(3600))
            .or_default() += u64::from(count);
        Decision::Granted(Grant {
            first_us: start,
            spacing_us,
            count,
        })
    }

    /// Drops lanes of runs that stopped asking and hours older than a day.
    fn forget_idle(&mut self, now_us: i64, settings: &BudgetSettings) {
        let idle_before = now_us - 30 * duration_us(settings.fair_window);
        self.lanes
            .retain(|_, lane| lane.seen_us >= idle_before || lane.next_us > now_us);
        let oldest_hour = (now_us / 1_000_000 - DAY_SECS).div_euclid(3600) - 1;
        self.hourly.retain(|hour, _| *hour >= oldest_hour);
    }

    /// SES answered `TooManyRequestsException`: back off now. `false` when this belongs to a
    /// decrease already made.
    pub fn throttled(&mut self, now: DateTime<Utc>) -> bool {
        let now_us = micros(now);
        self.throttles += 1;
        let since = (now_us - self.factor_since_us) as f64 / MICROS;
        if self.factor_since_us != 0 && since < aimd::EPISODE_SECS {
            return false;
        }
        self.factor = (self.factor_at(now_us) * aimd::DECREASE).max(aimd::FLOOR);
        self.factor_since_us = now_us;
        // Slots handed out at the old rate are not taken back; the next grants start later
        // by what they would have spread over.
        true
    }

    /// SES refused a send for the daily quota.
    pub fn quota_refused(&mut self, now: DateTime<Utc>) {
        self.quota_refused_at = Some(now);
    }
}

/// Why the budget could not answer.
#[derive(thiserror::Error, Debug)]
pub enum BudgetError {
    #[error("send budget: {0}")]
    Store(#[from] StoreError),
    #[error("SES GetAccount failed: {0}")]
    Account(#[from] AccountError),
    #[error("send budget: the budget item stayed contended after {0} attempts")]
    Contention(u32),
}

impl BudgetError {
    /// Whether waiting and trying again may help.
    pub fn retryable(&self) -> bool {
        match self {
            BudgetError::Store(err) => err.retryable,
            BudgetError::Account(err) => err.retryable,
            BudgetError::Contention(_) => true,
        }
    }
}

#[derive(thiserror::Error, Debug, Clone)]
#[error("{code}: {message}")]
pub struct AccountError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// Where the budget is stored, per `scope` ([`SendingAccount::scope`]: quotas are per
/// account and region).
#[async_trait]
pub trait BudgetStore: Send + Sync {
    async fn load(&self, scope: &str) -> Result<Option<BudgetState>, StoreError>;
    /// Stores `state` if the stored version is still `expected` (0: no item yet); `Ok(false)`
    /// when another writer came first.
    async fn save(
        &self,
        scope: &str,
        state: &BudgetState,
        expected: u64,
    ) -> Result<bool, StoreError>;
}

/// SES `GetAccount` of a sending account.
#[async_trait]
pub trait AccountSource: Send + Sync {
    async fn account(
        &self,
        sending: &SendingAccount,
        now: DateTime<Utc>,
    ) -> Result<AccountSnapshot, AccountError>;
}

/// Whether a run may send now, judged from the account.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountVerdict {
    Ready,
    Unhealthy { reason: String },
    QuotaExhausted { resume_at: DateTime<Utc> },
}

/// The account check the fan-out runs before it enqueues, and a waiting run before it resumes.
#[async_trait]
pub trait AccountGate: Send + Sync {
    async fn verdict(
        &self,
        sending: &SendingAccount,
        now: DateTime<Utc>,
    ) -> Result<AccountVerdict, BudgetError>;
}

/// The budget, driven through its ports.
pub struct Budget<'a> {
    pub store: &'a dyn BudgetStore,
    pub account: &'a dyn AccountSource,
    pub settings: &'a BudgetSettings,
}

/// Writers the budget item tolerates before giving up one request.
const MAX_CONFLICTS: u32 = 16;
/// A failed `GetAccount` is not repeated sooner than this (SES allows 1 a second).
const ACCOUNT_RETRY: Duration = Duration::from_secs(5);

fn no_snapshot() -> BudgetError {
    BudgetError::Account(AccountError {
        code: "NoSnapshot".to_owned(),
        message: "no account snapshot is available".to_owned(),
        retryable: true,
    })
}

impl Budget<'_> {
    /// Loads the state, refreshing the account snapshot when it is due; whether it changed.
    async fn load_fresh(
        &self,
        sending: &SendingAccount,
        now: DateTime<Utc>,
    ) -> Result<(BudgetState, bool), BudgetError> {
        let mut state = self.store.load(&sending.scope()).await?.unwrap_or_default();
        if !state.needs_account(now, self.settings) {
            return Ok((state, false));
        }
        match self.account.account(sending, now).await {
            Ok(snapshot) => state.set_account(snapshot),
            Err(err) if state.account.is_some() && err.retryable => {
                tracing::warn!(error = %err, "GetAccount failed; the last snapshot stays in use");
                state.account_failed(now, ACCOUNT_RETRY);
            }
            Err(err) => return Err(err.into()),
        }
        Ok((state, true))
    }

    /// Applies `change` to the stored state under its version, retrying on conflicts; the
    /// change's answer. `change` says whether it modified the state (nothing is written if not).
    async fn update<T>(
        &self,
        sending: &SendingAccount,
        now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
        mut change: impl FnMut(&mut BudgetState, DateTime<Utc>) -> (T, bool) + Send,
    ) -> Result<T, BudgetError> {
        for _ in 0..MAX_CONFLICTS {
            let at = now();
            let (mut state, refreshed) = self.load_fresh(sending, at).await?;
            let expected = state.version;
            let (answer, changed) = change(&mut state, at);
            if !changed && !refreshed {
                return Ok(answer);
            }
            state.version = expected + 1;
            if self.store.save(&sending.scope(), &state, expected).await? {
                return Ok(answer);
            }
        }
        Err(BudgetError::Contention(MAX_CONFLICTS))
    }

    /// Asks for slots for `request`'s run.
    pub async fn acquire(
        &self,
        sending: &SendingAccount,
        request: &GrantRequest,
        now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> Result<Decision, BudgetError> {
        let settings = self.settings;
        let decision = self
            .update(sending, now, |state, at| {
                let decision = state.decide(request, at, settings);
                let changed = matches!(decision, Decision::Granted(_));
                (decision, changed)
            })
            .await?;
        if decision == Decision::RefreshAccount {
            // Only when GetAccount failed and no snapshot exists: there is nothing to go by.
            return Err(no_snapshot());
        }
        Ok(decision)
    }

    /// SES throttled a send: the budget backs off for every instance.
    pub async fn throttled(
        &self,
        sending: &SendingAccount,
        now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> Result<(), BudgetError> {
        self.update(sending, now, |state, at| ((), state.throttled(at)))
            .await
    }

    /// SES refused a send for the daily quota.
    pub async fn quota_refused(
        &self,
        sending: &SendingAccount,
        now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> Result<(), BudgetError> {
        self.update(sending, now, |state, at| {
            state.quota_refused(at);
            ((), true)
        })
        .await
    }
}

#[async_trait]
impl AccountGate for Budget<'_> {
    async fn verdict(
        &self,
        sending: &SendingAccount,
        now: DateTime<Utc>,
    ) -> Result<AccountVerdict, BudgetError> {
        let settings = self.settings;
        let clock = move || now;
        let verdict = self
            .update(sending, &clock, |state, at| {
                let verdict = match state.verdict(at, settings) {
                    Some(Decision::Unhealthy { reason }) => AccountVerdict::Unhealthy { reason },
                    Some(Decision::QuotaExhausted { resume_at }) => {
                        AccountVerdict::QuotaExhausted { resume_at }
                    }
                    _ => AccountVerdict::Ready,
                };
                (verdict, false)
            })
            .await?;
        Ok(verdict)
    }
}

/// Why a send got no slot.
#[derive(Debug)]
pub enum NoSlot {
    QuotaExhausted {
        resume_at: DateTime<Utc>,
    },
    Unhealthy {
        reason: String,
    },
    /// No slot before the deadline the caller gave.
    Deadline,
    Budget(BudgetError),
}

/// One run's slots in this instance.
#[derive(Default)]
struct LocalLane {
    slots: Mutex<VecDeque<i64>>,
    /// Sends waiting for a slot: the size of the next grant.
    waiting: AtomicU32,
    /// One grant request at a time per run and instance.
    asking: tokio::sync::Mutex<()>,
}

/// Hands the budget's slots to one instance's sends, taking them from the store in chunks.
/// Kept for the life of the instance.
#[derive(Default)]
pub struct Pacer {
    lanes: Mutex<HashMap<RunRef, Arc<LocalLane>>>,
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pacer {
    fn lane(&self, run: &RunRef) -> Arc<LocalLane> {
        let mut lanes = self.lanes.lock().expect("pacer lock");
        lanes.retain(|_, lane| Arc::strong_count(lane) > 1 || !lane_empty(lane));
        lanes.entry(run.clone()).or_default().clone()
    }

    /// Drops the slots this instance holds for `run` (after throttling: they were laid at the
    /// old rate).
    pub fn forget(&self, run: &RunRef) {
        if let Some(lane) = self.lanes.lock().expect("pacer lock").get(run) {
            lane.slots.lock().expect("lane lock").clear();
        }
    }

    /// A slot for one send of `run` (microseconds since the epoch), due no later than
    /// `deadline_us`. Slots already too late to use are given up.
    pub async fn slot(
        &self,
        budget: &Budget<'_>,
        sending: &SendingAccount,
        run: &RunRef,
        cap: Option<f64>,
        deadline_us: i64,
        now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> Result<i64, NoSlot> {
        let lane = self.lane(run);
        lane.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&lane.waiting);
        let late_us = duration_us(budget.settings.late_tolerance);
        loop {
            if let Some(slot) = take_slot(&lane, micros(now()) - late_us) {
                return if slot > deadline_us {
                    Err(NoSlot::Deadline)
                } else {
                    Ok(slot)
                };
            }
            let _asking = lane.asking.lock().await;
            // Another send may have fetched slots while this one waited to ask.
            if !lane_empty(&lane) {
                continue;
            }
            let request = GrantRequest {
                run: run.clone(),
                cap,
                want: lane.waiting.load(Ordering::Relaxed),
            };
            match budget
                .acquire(sending, &request, now)
                .await
                .map_err(NoSlot::Budget)?
            {
                Decision::Granted(grant) => {
                    lane.slots.lock().expect("lane lock").extend(grant.slots());
                }
                Decision::Wait { until_us } => {
                    if until_us > deadline_us {
                        return Err(NoSlot::Deadline);
                    }
                    sleep_until_us(until_us, now).await;
                }
                Decision::QuotaExhausted { resume_at } => {
                    return Err(NoSlot::QuotaExhausted { resume_at });
                }
                Decision::Unhealthy { reason } => return Err(NoSlot::Unhealthy { reason }),
                Decision::RefreshAccount => return Err(NoSlot::Budget(no_snapshot())),
            }
        }
    }
}

fn lane_empty(lane: &LocalLane) -> bool {
    lane.slots.lock().expect("lane lock").is_empty()
}

/// The earliest slot not older than `oldest_us`; older ones are dropped.
fn take_slot(lane: &LocalLane, oldest_us: i64) -> Option<i64> {
    let mut slots = lane.slots.lock().expect("lane lock");
    while let Some(slot) = slots.pop_front() {
        if slot >= oldest_us {
            return Some(slot);
        }
    }
    None
}

/// Sleeps until the wall clock `now` reaches `at_us`.
pub async fn sleep_until_us(at_us: i64, now: &(dyn Fn() -> DateTime<Utc> + Send + Sync)) {
    let wait = at_us - micros(now());
    if wait > 0 {
        tokio::time::sleep(Duration::from_micros(wait as u64)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CampaignId, RunId};

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn run(name: &str) -> RunRef {
        RunRef::new(
            CampaignId::parse(name).unwrap(),
            RunId::from_scheduled_time(at(0)),
        )
    }

    fn account(rate: f64, day: f64, sent: f64, now: DateTime<Utc>) -> AccountSnapshot {
        AccountSnapshot {
            max_send_rate: rate,
            max_24_hour_send: day,
            sent_last_24_hours: sent,
            sending_enabled: true,
            enforcement_status: "HEALTHY".into(),
            production_access: true,
            fetched_at: now,
        }
    }

    fn settings() -> BudgetSettings {
        BudgetSettings {
            headroom_percent: 0.0,
            pacing_margin: 0.0,
            lead: Duration::ZERO,
            ..BudgetSettings::default()
        }
    }

    fn state(rate: f64) -> BudgetState {
        BudgetState {
            account: Some(account(rate, -1.0, 0.0, at(0))),
            ..BudgetState::default()
        }
    }

    fn ask(run: &RunRef, want: u32) -> GrantRequest {
        GrantRequest {
            run: run.clone(),
            cap: None,
            want,
        }
    }

    fn granted(decision: Decision) -> Grant {
        match decision {
            Decision::Granted(grant) => grant,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    /// Every slot granted to anyone, sorted.
    fn all_slots(grants: &[Grant]) -> Vec<i64> {
        let mut slots: Vec<i64> = grants
            .iter()
            .flat_map(|g| g.slots().collect::<Vec<_>>())
            .collect();
        slots.sort_unstable();
        slots
    }

    fn max_in_any_second(slots: &[i64]) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..slots.len() {
            while slots[end] - slots[start] >= 1_000_000 {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[test]
    fn a_grant_is_a_chunk_of_consecutive_slots_at_the_pacing_rate() {
        let mut s = state(100.0);
        let g = granted(s.decide(&ask(&run("a"), 500), at(0), &settings()));
        assert_eq!(g.count, 25, "250 ms at 100/s");
        assert_eq!(g.spacing_us, 10_000);
        assert_eq!(g.first_us, at(0).timestamp_micros());
        let next = granted(s.decide(&ask(&run("a"), 500), at(1), &settings()));
        assert_eq!(
            next.first_us,
            g.first_us + 25 * 10_000,
            "slots never overlap"
        );
        assert_eq!(s.granted, 50);
    }

    #[test]
    fn a_grant_is_no_larger_than_the_waiting_sends() {
        let mut s = state(100.0);
        assert_eq!(
            granted(s.decide(&ask(&run("a"), 3), at(0), &settings())).count,
            3
        );
    }

    #[test]
    fn headroom_and_margin_lower_the_pace() {
        let s = state(200.0);
        let settings = BudgetSettings {
            headroom_percent: 10.0,
            pacing_margin: 0.02,
            ..settings()
        };
        let pace = s.pacing_rate(at(0).timestamp_micros(), &settings).unwrap();
        assert!((pace - 200.0 * 0.9 * 0.98).abs() < 1e-9);
    }

    #[test]
    fn many_instances_asking_at_random_never_put_more_than_the_rate_in_any_second() {
        let mut s = state(100.0);
        let mut grants = Vec::new();
        let mut t = 0;
        // Instances ask whenever they like, often far more often than the rate allows.
        for i in 0..2_000 {
            t += (i * 7919) % 23;
            if let Decision::Granted(g) =
                s.decide(&ask(&run("a"), 1 + (i % 40) as u32), at(t), &settings())
            {
                grants.push(g);
            }
        }
        let slots = all_slots(&grants);
        assert!(slots.len() > 1000);
        assert!(
            max_in_any_second(&slots) <= 100,
            "{}",
            max_in_any_second(&slots)
        );
    }

    #[test]
    fn a_throttle_halves_the_rate_once_per_episode_and_it_recovers_gradually() {
        let mut s = state(100.0);
        let t0 = at(10_000);
        assert!(s.throttled(t0));
        assert!(!s.throttled(at(10_500)), "same episode");
        let us = |ms| at(ms).timestamp_micros();
        assert!((s.factor_at(us(10_000)) - 0.5).abs() < 1e-9);
        assert!((s.factor_at(us(15_000)) - 0.75).abs() < 1e-9);
        assert!((s.factor_at(us(30_000)) - 1.0).abs() < 1e-9);
        assert!(s.throttled(at(12_000)), "a new episode halves again");
        assert!((s.factor_at(us(12_000)) - 0.3).abs() < 1e-9, "0.6 halved");
        for i in 0..20 {
            s.throttled(at(20_000 + i * 2_000));
        }
        assert!(s.factor_at(s.factor_since_us) >= aimd::FLOOR);
        assert_eq!(s.throttles, 23);
    }

    #[test]
    fn after_a_throttle_grants_are_spread_at_the_lower_rate() {
        let mut s = state(100.0);
        s.throttled(at(0));
        let g = granted(s.decide(&ask(&run("a"), 500), at(0), &settings()));
        assert_eq!(g.spacing_us, 20_000, "50/s");
    }

    #[test]
    fn two_runs_share_the_rate_equally() {
        let mut s = state(100.0);
        let (a, b) = (run("a"), run("b"));
        let mut counts = HashMap::new();
        let mut t = 0;
        for i in 0..400 {
            t += 20;
            let r = if i % 3 == 0 { &b } else { &a }; // a asks twice as often
            if let Decision::Granted(g) = s.decide(&ask(r, 500), at(t), &settings()) {
                *counts.entry(r.to_string()).or_insert(0u32) += g.count;
            }
        }
        let (ca, cb) = (counts[&a.to_string()], counts[&b.to_string()]);
        let ratio = f64::from(ca) / f64::from(cb);
        assert!((0.8..1.25).contains(&ratio), "a {ca}, b {cb}");
    }

    #[test]
    fn a_lone_run_gets_the_whole_rate() {
        let mut s = state(100.0);
        let a = run("a");
        let mut total = 0;
        for i in 1..=40 {
            if let Decision::Granted(g) = s.decide(&ask(&a, 500), at(i * 250), &settings()) {
                total += g.count;
            }
        }
        assert_eq!(total, 1000, "10 s at 100/s");
    }

    #[test]
    fn a_campaign_cap_holds_its_run_and_leaves_the_rest_to_others() {
        assert!((fair_share(100.0, &[Some(10.0), None], 1) - 90.0).abs() < 1e-9);
        assert!((fair_share(100.0, &[Some(10.0), None], 0) - 10.0).abs() < 1e-9);
        assert!((fair_share(100.0, &[None, None], 0) - 50.0).abs() < 1e-9);
        assert!((fair_share(100.0, &[Some(80.0), Some(80.0)], 0) - 50.0).abs() < 1e-9);
        let mut s = state(100.0);
        let capped = GrantRequest {
            cap: Some(20.0),
            ..ask(&run("a"), 500)
        };
        let g = granted(s.decide(&capped, at(0), &settings()));
        assert_eq!(g.count, 5, "250 ms at 20/s");
        // Asking every 10 ms for 10 s: its cap, and no more than its lane's lead ahead of it.
        let (mut total, mut waits) = (g.count, 0);
        for i in 1..=1_000 {
            match s.decide(&capped, at(i * 10), &settings()) {
                Decision::Granted(g) => total += g.count,
                Decision::Wait { .. } => waits += 1,
                other => panic!("{other:?}"),
            }
        }
        let ahead = (20.0 * LANE_AHEAD_CHUNKS * 0.25) as u32;
        assert!((200..=200 + ahead + 5).contains(&total), "{total}");
        assert!(waits > 900, "{waits}");
    }

    #[test]
    fn grants_stop_at_the_daily_quota_and_say_when_it_frees() {
        let mut s = BudgetState {
            account: Some(account(100.0, 1000.0, 990.0, at(0))),
            ..BudgetState::default()
        };
        let g = granted(s.decide(&ask(&run("a"), 500), at(0), &settings()));
        assert_eq!(g.count, 10);
        match s.decide(&ask(&run("a"), 500), at(100), &settings()) {
            Decision::QuotaExhausted { resume_at } => {
                let hour_end = (at(0).timestamp().div_euclid(3600) + 1) * 3600;
                assert_eq!(resume_at.timestamp(), hour_end + DAY_SECS);
            }
            other => panic!("{other:?}"),
        }
        // A fresh snapshot with room lets it go on.
        s.set_account(account(100.0, 2000.0, 1000.0, at(200)));
        assert!(matches!(
            s.decide(&ask(&run("a"), 5), at(200), &settings()),
            Decision::Granted(_)
        ));
    }

    #[test]
    fn a_quota_refusal_from_ses_stops_grants_until_a_newer_snapshot() {
        let mut s = state(100.0);
        s.quota_refused(at(5));
        assert!(matches!(
            s.decide(&ask(&run("a"), 5), at(10), &settings()),
            Decision::QuotaExhausted { .. }
        ));
        s.set_account(account(100.0, -1.0, 0.0, at(20)));
        assert!(matches!(
            s.decide(&ask(&run("a"), 5), at(20), &settings()),
            Decision::Granted(_)
        ));
    }

    #[test]
    fn an_unhealthy_account_gets_no_slots() {
        let mut s = state(100.0);
        s.account.as_mut().unwrap().enforcement_status = "PROBATION".into();
        assert!(matches!(
            s.decide(&ask(&run("a"), 5), at(0), &settings()),
            Decision::Unhealthy { reason } if reason.contains("PROBATION")
        ));
        s.account.as_mut().unwrap().enforcement_status = "HEALTHY".into();
        s.account.as_mut().unwrap().sending_enabled = false;
        assert!(matches!(
            s.decide(&ask(&run("a"), 5), at(0), &settings()),
            Decision::Unhealthy { reason } if reason.contains("disabled")
        ));
    }

    #[test]
    fn an_old_snapshot_is_refreshed_but_a_failed_refresh_is_not_repeated_at_once() {
        let mut s = state(100.0);
        let later = at(61_000);
        assert_eq!(
            s.decide(&ask(&run("a"), 5), later, &settings()),
            Decision::RefreshAccount
        );
        s.account_failed(later, Duration::from_secs(5));
        assert!(matches!(
            s.decide(&ask(&run("a"), 5), later, &settings()),
            Decision::Granted(_)
        ));
        assert_eq!(
            s.decide(&ask(&run("a"), 5), at(66_000), &settings()),
            Decision::RefreshAccount
        );
    }

    #[test]
    fn the_state_survives_its_stored_form() {
        let mut s = state(100.0);
        s.decide(&ask(&run("a"), 5), at(0), &settings());
        s.throttled(at(3));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<BudgetState>(&json).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<BudgetState>("{}").unwrap(),
            BudgetState::default()
        );
    }
}
