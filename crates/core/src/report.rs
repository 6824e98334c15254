//! Reports on runs: what a run did, built from its record and from every record of its ledger.
//!
//! - [`RunSummary`]: one line per run (`hikyaku campaign runs`), from the run record and the
//!   ledger's counts.
//! - [`RunReport`]: the whole account of one run (`hikyaku campaign report`): the audience,
//!   each terminal delivery state, what SES reported per recipient, the bounce and complaint
//!   rates against the campaign's guardrails, and the send rate over time in buckets of the
//!   ledger's send times. It renders itself as CSV ([`RunReport::to_csv`]) and as one
//!   self-contained HTML page ([`html::render`]).
//! - [`RecipientState`] and [`RecipientLine`]: who is in a state, when and why
//!   (`hikyaku campaign recipients`).
//!
//! The ledger is read through [`LedgerReader`], one record at a time, so a report of a run of
//! millions never holds the run's records in memory: [`Tally`] keeps counts and a per-second
//! histogram of send times only.

pub mod html;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::email::EmailAddress;
use crate::feedback::{FeedbackCounts, Guardrails, Mark};
use crate::ids::{CampaignId, ListId, RunId, RunRef};
use crate::ledger::{DeliveryRecord, DeliveryState, LedgerCounts};
use crate::ports::StoreError;
use crate::run::{RunRecord, RunState, RunStatus};

/// Reads a run's whole ledger, record by record: what reports are made from.
///
/// Lives here rather than in `ports` because only reports need it: the send and feedback paths
/// read one record at a time.
#[async_trait]
pub trait LedgerReader: Send + Sync {
    /// Calls `visit` with every ledger record of `run`, in the store's order, as the store's
    /// pages arrive; the number of records visited. A report may trail the latest writes by
    /// the store's replication delay (reads need not be strongly consistent).
    async fn each_record(
        &self,
        run: &RunRef,
        visit: &mut (dyn FnMut(DeliveryRecord) + Send),
    ) -> Result<u64, StoreError>;
}

#[cfg(any(test, feature = "fakes"))]
#[async_trait]
impl LedgerReader for crate::fakes::FakeLedger {
    async fn each_record(
        &self,
        run: &RunRef,
        visit: &mut (dyn FnMut(DeliveryRecord) + Send),
    ) -> Result<u64, StoreError> {
        use crate::ports::Ledger;
        let records = self.records(run).await?;
        let n = records.len() as u64;
        records.into_iter().for_each(visit);
        Ok(n)
    }
}

/// RFC 3339 in whole seconds, as reports show times.
pub fn report_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn ratio(count: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| count as f64 / of as f64)
}

/// Whether a `suppressed` ledger record's reason is an unsubscribe (the sender records the
/// reason the consent check gave, [`crate::feedback::list_unsubscribe_reason`] or
/// [`crate::feedback::topic_unsubscribe_reason`]) rather than a suppression.
pub fn is_unsubscribe_reason(reason: &str) -> bool {
    reason.starts_with("unsubscribed from ")
}

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------

/// When a run started, sent and ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub started_at: DateTime<Utc>,
    /// The first and last send SES accepted (the ledger's `sent` records).
    pub first_sent_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
    /// A finished or cancelled run's end: its last send, or the end of its fan-out if that came
    /// later. `None` while the run goes on (or is paused, or waits for quota).
    pub ended_at: Option<DateTime<Utc>>,
    /// From the start to the end, or to now for a run that has not ended.
    pub elapsed_seconds: f64,
}

impl Timing {
    pub fn of(status: &RunStatus, now: DateTime<Utc>) -> Timing {
        let record = &status.record;
        let ended = status.is_finished() || record.state == RunState::Cancelled;
        let ended_at = ended.then(|| {
            [status.counts.last_sent_at, record.fanout_completed_at]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(record.started_at)
        });
        let end = ended_at.unwrap_or(now);
        Timing {
            started_at: record.started_at,
            first_sent_at: status.counts.first_sent_at,
            last_sent_at: status.counts.last_sent_at,
            ended_at,
            elapsed_seconds: (end - record.started_at).num_milliseconds().max(0) as f64 / 1000.0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// runs
// ---------------------------------------------------------------------------------------------

/// One run as `hikyaku campaign runs` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: RunId,
    /// The stored state, or `completed` once every recipient is done.
    pub phase: String,
    pub pause_reason: Option<String>,
    pub timing: Timing,
    /// Recipients the segment selected.
    pub audience: u64,
    pub fanout_complete: bool,
    pub sent: u64,
    pub failed: u64,
    /// Not mailed because of a suppression or an unsubscribe.
    pub suppressed: u64,
    pub uncertain: u64,
    /// Not mailed: the run was cancelled first.
    #[serde(default)]
    pub cancelled: u64,
    pub in_flight: u64,
    /// Selected recipients not in a terminal state yet.
    pub outstanding: u64,
    /// SES's feedback so far, from the run's counters.
    pub delivered: u64,
    pub hard_bounced: u64,
    pub soft_bounced: u64,
    pub complained: u64,
    /// Emails a second between the first and the last send.
    pub send_rate: Option<f64>,
}

impl RunSummary {
    pub fn new(status: &RunStatus, now: DateTime<Utc>) -> RunSummary {
        let record = &status.record;
        let c = &status.counts;
        let f = &record.feedback;
        RunSummary {
            run_id: record.run.run_id.clone(),
            phase: status.phase().to_owned(),
            pause_reason: record.pause_reason.clone(),
            timing: Timing::of(status, now),
            audience: record.progress.selected,
            fanout_complete: record.fanout_complete,
            sent: c.sent,
            failed: c.failed,
            suppressed: c.suppressed,
            uncertain: c.uncertain,
            cancelled: c.cancelled,
            in_flight: c.claimed,
            outstanding: status.outstanding(),
            delivered: f.delivered,
            hard_bounced: f.hard_bounced,
            soft_bounced: f.soft_bounced,
            complained: f.complained,
            send_rate: c.send_rate(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tally of a ledger
// ---------------------------------------------------------------------------------------------

/// What a report keeps of a run's ledger records: counts, and sends per second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub states: LedgerCounts,
    /// `suppressed` records whose reason is an unsubscribe.
    pub unsubscribed: u64,
    /// Per recipient, the marks SES reported (`opens` and `clicks`, which count events, stay
    /// zero: the ledger keeps one mark per recipient).
    pub marks: FeedbackCounts,
    /// Sends (the `sent` records' time) per second since the epoch.
    pub sends_per_second: BTreeMap<i64, u64>,
}

impl Tally {
    pub fn add(&mut self, record: &DeliveryRecord) {
        self.states.add(record.state);
        match record.state {
            DeliveryState::Sent => {
                self.states.observe_sent_at(record.updated_at);
                *self
                    .sends_per_second
                    .entry(record.updated_at.timestamp())
                    .or_default() += 1;
            }
            DeliveryState::Suppressed
                if record.reason.as_deref().is_some_and(is_unsubscribe_reason) =>
            {
                self.unsubscribed += 1;
            }
            _ => {}
        }
        for (mark, _) in &record.marks.0 {
            count_mark(&mut self.marks, *mark);
        }
    }

    /// The tally of `records`.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a DeliveryRecord>) -> Tally {
        let mut tally = Tally::default();
        records.into_iter().for_each(|r| tally.add(r));
        tally
    }
}

fn count_mark(counts: &mut FeedbackCounts, mark: Mark) {
    let counter = match mark {
        Mark::Delivered => &mut counts.delivered,
        Mark::Opened => &mut counts.opened,
        Mark::Clicked => &mut counts.clicked,
        Mark::HardBounced => &mut counts.hard_bounced,
        Mark::SoftBounced => &mut counts.soft_bounced,
        Mark::AutoReplied => &mut counts.auto_replied,
        Mark::UndeterminedBounce => &mut counts.undetermined_bounced,
        Mark::Complained => &mut counts.complained,
        Mark::Rejected => &mut counts.rejected,
        Mark::RenderingFailed => &mut counts.rendering_failed,
        Mark::Delayed => &mut counts.delayed,
    };
    *counter += 1;
}

// ---------------------------------------------------------------------------------------------
// Send rate over time
// ---------------------------------------------------------------------------------------------

/// The widths a report's time buckets may have, in seconds: the narrowest that keeps the
/// run's span within [`MAX_BUCKETS`] is taken.
pub const BUCKET_WIDTHS: [i64; 18] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];
/// The most buckets a report holds (a run longer than 60 days gets wider buckets than a day).
pub const MAX_BUCKETS: i64 = 60;

/// Sends in one bucket of time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub sent: u64,
}

/// How fast a run sent: on average, at its busiest bucket, and bucket by bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendRate {
    /// Emails a second between the first and the last send.
    pub average_per_second: Option<f64>,
    /// The busiest bucket's sends over its width.
    pub peak_per_second: Option<f64>,
    pub bucket_seconds: i64,
    /// Every bucket from the first send's to the last send's, empty ones included; each
    /// starts at a multiple of `bucket_seconds` since the epoch.
    pub buckets: Vec<Bucket>,
}

/// The bucket width for sends spanning `first..=last` (seconds since the epoch).
pub fn bucket_width(first: i64, last: i64) -> i64 {
    let span = (last - first).max(0);
    BUCKET_WIDTHS
        .into_iter()
        .find(|width| span / width + 2 <= MAX_BUCKETS)
        .unwrap_or_else(|| (span / (MAX_BUCKETS - 2)).max(1) + 1)
}

impl SendRate {
    /// Buckets of `sends_per_second` (seconds since the epoch → sends).
    pub fn of(sends_per_second: &BTreeMap<i64, u64>, average_per_second: Option<f64>) -> SendRate {
        let (Some((&first, _)), Some((&last, _))) = (
            sends_per_second.first_key_value(),
            sends_per_second.last_key_value(),
        ) else {
            return SendRate {
                average_per_second,
                peak_per_second: None,
                bucket_seconds: BUCKET_WIDTHS[0],
                buckets: Vec::new(),
            };
        };
        let width = bucket_width(first, last);
        let origin = first.div_euclid(width) * width;
        let n = (last.div_euclid(width) * width - origin) / width + 1;
        let mut counts = vec![0u64; n as usize];
        for (&second, &sent) in sends_per_second {
            counts[((second - origin) / width) as usize] += sent;
        }
        let peak = counts.iter().copied().max().unwrap_or(0);
        SendRate {
            average_per_second,
            peak_per_second: Some(peak as f64 / width as f64),
            bucket_seconds: width,
            buckets: counts
                .into_iter()
                .enumerate()
                .map(|(i, sent)| Bucket {
                    start: Utc
                        .timestamp_opt(origin + i as i64 * width, 0)
                        .single()
                        .unwrap_or_default(),
                    sent,
                })
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report of a run
// ---------------------------------------------------------------------------------------------

/// What the fan-out read and selected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Audience {
    pub contacts_read: u64,
    /// The run's audience: the contacts the segment selected.
    pub selected: u64,
    pub filtered: u64,
    pub segment_errors: u64,
    pub unreadable: u64,
    pub fanout_complete: bool,
}

/// Where each recipient of the audience stands in the ledger. The terminal states (`sent`,
/// `failed`, `suppressed`, `unsubscribed`, `uncertain`, `cancelled`), `in_flight` and
/// `outstanding` add up to the audience.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deliveries {
    /// SES accepted the message.
    pub sent: u64,
    /// SES refused it for good, or it could not be rendered.
    pub failed: u64,
    /// Not mailed: the address is suppressed.
    pub suppressed: u64,
    /// Not mailed: the contact unsubscribed from the campaign's contact list or topic.
    pub unsubscribed: u64,
    /// SES may or may not have the message (a sender vanished mid-send); never resent.
    pub uncertain: u64,
    /// Not mailed: the run was cancelled first.
    #[serde(default)]
    pub cancelled: u64,
    /// Held by a sender right now.
    pub in_flight: u64,
    /// Selected but without a ledger record yet (queued, or held by a pause).
    pub outstanding: u64,
}

/// What SES reported, in recipients (each counted once per outcome), except `opens` and
/// `clicks`, which count every event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub delivered: u64,
    pub opened: u64,
    pub clicked: u64,
    pub opens: u64,
    pub clicks: u64,
    /// Hard, soft and undetermined bounces.
    pub bounced: u64,
    pub hard_bounced: u64,
    pub soft_bounced: u64,
    pub undetermined_bounced: u64,
    pub auto_replied: u64,
    pub complained: u64,
    pub rejected: u64,
    pub rendering_failed: u64,
    pub delayed: u64,
}

/// The run's rates, the reputation ones against the campaign's guardrails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Sends whose fate SES reported (delivered or bounced): the reputation rates' denominator.
    pub resolved_sends: u64,
    /// Hard bounces over resolved sends.
    pub bounce_rate: Option<f64>,
    /// Complaints over resolved sends.
    pub complaint_rate: Option<f64>,
    pub max_bounce_rate: f64,
    pub max_complaint_rate: f64,
    /// The rates are judged from this many resolved sends on.
    pub min_sends: u64,
    /// Whether enough sends are resolved for the guardrails to judge.
    pub judged: bool,
    pub bounce_over_limit: bool,
    pub complaint_over_limit: bool,
    /// Delivered over sent.
    pub delivery_rate: Option<f64>,
    /// Opened and clicked over delivered.
    pub open_rate: Option<f64>,
    pub click_rate: Option<f64>,
}

impl Rates {
    pub fn new(outcomes: &Outcomes, sent: u64, guardrails: Guardrails) -> Rates {
        let counts = FeedbackCounts {
            delivered: outcomes.delivered,
            hard_bounced: outcomes.hard_bounced,
            soft_bounced: outcomes.soft_bounced,
            undetermined_bounced: outcomes.undetermined_bounced,
            complained: outcomes.complained,
            rejected: outcomes.rejected,
            ..FeedbackCounts::default()
        };
        let resolved = counts.resolved_sends();
        let judged = resolved >= guardrails.min_sends.max(1);
        let bounce_rate = counts.bounce_rate();
        let complaint_rate = counts.complaint_rate();
        Rates {
            resolved_sends: resolved,
            bounce_rate,
            complaint_rate,
            max_bounce_rate: guardrails.max_bounce_rate,
            max_complaint_rate: guardrails.max_complaint_rate,
            min_sends: guardrails.min_sends,
            judged,
            bounce_over_limit: judged
                && bounce_rate.is_some_and(|rate| rate > guardrails.max_bounce_rate),
            complaint_over_limit: judged
                && complaint_rate.is_some_and(|rate| rate > guardrails.max_complaint_rate),
            delivery_rate: ratio(outcomes.delivered, sent),
            open_rate: ratio(outcomes.opened, outcomes.delivered),
            click_rate: ratio(outcomes.clicked, outcomes.delivered),
        }
    }
}

/// One bar of the outcomes chart: a count of recipients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeBar {
    pub key: &'static str,
    pub label: &'static str,
    pub value: u64,
}

/// The whole account of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub campaign: CampaignId,
    pub run_id: RunId,
    pub list: ListId,
    /// The stored state, or `completed` once every recipient is done.
    pub phase: String,
    pub pause_reason: Option<String>,
    /// Where the run's canary slice stands (`crate::canary::describe`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    pub finished: bool,
    pub timing: Timing,
    pub audience: Audience,
    pub deliveries: Deliveries,
    pub outcomes: Outcomes,
    pub rates: Rates,
    pub send_rate: SendRate,
}

impl RunReport {
    /// The report of `record` from the tally of its whole ledger. Recipient counts come from
    /// the ledger; `opens` and `clicks` (events, not recipients) from the run's counters.
    pub fn new(
        record: RunRecord,
        tally: &Tally,
        guardrails: Guardrails,
        now: DateTime<Utc>,
    ) -> RunReport {
        let status = RunStatus {
            record,
            counts: tally.states.clone(),
        };
        let record = &status.record;
        let c = &tally.states;
        let m = &tally.marks;
        let outcomes = Outcomes {
            delivered: m.delivered,
            opened: m.opened,
            clicked: m.clicked,
            opens: record.feedback.opens,
            clicks: record.feedback.clicks,
            bounced: m.hard_bounced + m.soft_bounced + m.undetermined_bounced,
            hard_bounced: m.hard_bounced,
            soft_bounced: m.soft_bounced,
            undetermined_bounced: m.undetermined_bounced,
            auto_replied: m.auto_replied,
            complained: m.complained,
            rejected: m.rejected,
            rendering_failed: m.rendering_failed,
            delayed: m.delayed,
        };
        let p = &record.progress;
        RunReport {
            campaign: record.run.campaign_id.clone(),
            run_id: record.run.run_id.clone(),
            list: record.list.clone(),
            phase: status.phase().to_owned(),
            pause_reason: record.pause_reason.clone(),
            canary: crate::canary::describe(record, now),
            finished: status.is_finished(),
            timing: Timing::of(&status, now),
            audience: Audience {
                contacts_read: p.contacts_read,
                selected: p.selected,
                filtered: p.filtered,
                segment_errors: p.segment_errors,
                unreadable: p.unreadable,
                fanout_complete: record.fanout_complete,
            },
            deliveries: Deliveries {
                sent: c.sent,
                failed: c.failed,
                suppressed: c.suppressed.saturating_sub(tally.unsubscribed),
                unsubscribed: tally.unsubscribed,
                uncertain: c.uncertain,
                cancelled: c.cancelled,
                in_flight: c.claimed,
                outstanding: p.selected.saturating_sub(c.terminal() + c.claimed),
            },
            rates: Rates::new(&outcomes, c.sent, guardrails),
            outcomes,
            send_rate: SendRate::of(&tally.sends_per_second, c.send_rate()),
        }
    }

    /// The outcomes chart's bars, in the order shown: what SES reported, then the recipients
    /// that were never sent or whose fate is unknown.
    pub fn outcome_bars(&self) -> Vec<OutcomeBar> {
        let o = &self.outcomes;
        let d = &self.deliveries;
        [
            ("sent", "sent", d.sent),
            ("delivered", "delivered", o.delivered),
            ("opened", "opened", o.opened),
            ("clicked", "clicked", o.clicked),
            ("hard_bounced", "bounced (hard)", o.hard_bounced),
            ("soft_bounced", "bounced (soft)", o.soft_bounced),
            ("complained", "complained", o.complained),
            ("failed", "failed", d.failed),
            ("suppressed", "suppressed", d.suppressed),
            ("unsubscribed", "unsubscribed", d.unsubscribed),
            ("uncertain", "uncertain", d.uncertain),
            ("cancelled", "cancelled", d.cancelled),
        ]
        .into_iter()
        .map(|(key, label, value)| OutcomeBar { key, label, value })
        .collect()
    }

    /// Every figure as `section,name,value` rows (with a header); the send-rate buckets as
    /// rows of section `sent_per_bucket`, named by their start.
    pub fn to_csv(&self) -> String {
        let mut rows: Vec<(&str, String, String)> = Vec::new();
        let opt_time = |at: Option<DateTime<Utc>>| at.map(report_time).unwrap_or_default();
        let opt_f = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        let mut run = |name: &str, value: String| rows.push(("run", name.to_owned(), value));
        run("campaign", self.campaign.to_string());
        run("run_id", self.run_id.to_string());
        run("list", self.list.to_string());
        run("phase", self.phase.clone());
        run(
            "pause_reason",
            self.pause_reason.clone().unwrap_or_default(),
        );
        run("canary", self.canary.clone().unwrap_or_default());
        run("started_at", report_time(self.timing.started_at));
        run("first_sent_at", opt_time(self.timing.first_sent_at));
        run("last_sent_at", opt_time(self.timing.last_sent_at));
        run("ended_at", opt_time(self.timing.ended_at));
        run(
            "elapsed_seconds",
            format!("{:.3}", self.timing.elapsed_seconds),
        );
        let a = &self.audience;
        for (name, value) in [
            ("contacts_read", a.contacts_read),
            ("selected", a.selected),
            ("filtered", a.filtered),
            ("segment_errors", a.segment_errors),
            ("unreadable", a.unreadable),
        ] {
            rows.push(("audience", name.to_owned(), value.to_string()));
        }
        let d = &self.deliveries;
        for (name, value) in [
            ("sent", d.sent),
            ("failed", d.failed),
            ("suppressed", d.suppressed),
            ("unsubscribed", d.unsubscribed),
            ("uncertain", d.uncertain),
            ("cancelled", d.cancelled),
            ("in_flight", d.in_flight),
            ("outstanding", d.outstanding),
        ] {
            rows.push(("deliveries", name.to_owned(), value.to_string()));
        }
        let o = &self.outcomes;
        for (name, value) in [
            ("delivered", o.delivered),
            ("opened", o.opened),
            ("clicked", o.clicked),
            ("opens", o.opens),
            ("clicks", o.clicks),
            ("bounced", o.bounced),
            ("hard_bounced", o.hard_bounced),
            ("soft_bounced", o.soft_bounced),
            ("undetermined_bounced", o.undetermined_bounced),
            ("auto_replied", o.auto_replied),
            ("complained", o.complained),
            ("rejected", o.rejected),
            ("rendering_failed", o.rendering_failed),
            ("delayed", o.delayed),
        ] {
            rows.push(("outcomes", name.to_owned(), value.to_string()));
        }
        let r = &self.rates;
        for (name, value) in [
            ("resolved_sends", r.resolved_sends.to_string()),
            ("bounce_rate", opt_f(r.bounce_rate)),
            ("max_bounce_rate", opt_f(Some(r.max_bounce_rate))),
            ("bounce_over_limit", r.bounce_over_limit.to_string()),
            ("complaint_rate", opt_f(r.complaint_rate)),
            ("max_complaint_rate", opt_f(Some(r.max_complaint_rate))),
            ("complaint_over_limit", r.complaint_over_limit.to_string()),
            ("min_sends", r.min_sends.to_string()),
            ("judged", r.judged.to_string()),
            ("delivery_rate", opt_f(r.delivery_rate)),
            ("open_rate", opt_f(r.open_rate)),
            ("click_rate", opt_f(r.click_rate)),
        ] {
            rows.push(("rates", name.to_owned(), value));
        }
        let s = &self.send_rate;
        for (name, value) in [
            ("average_per_second", opt_f(s.average_per_second)),
            ("peak_per_second", opt_f(s.peak_per_second)),
            ("bucket_seconds", s.bucket_seconds.to_string()),
        ] {
            rows.push(("send_rate", name.to_owned(), value));
        }
        for bucket in &s.buckets {
            rows.push((
                "sent_per_bucket",
                report_time(bucket.start),
                bucket.sent.to_string(),
            ));
        }
        let mut out = csv::Writer::from_writer(Vec::new());
        let written = std::iter::once(("section", "name".to_owned(), "value".to_owned()))
            .chain(rows)
            .try_for_each(|(section, name, value)| out.write_record([section, &name, &value]));
        csv_text(written, out)
    }
}

/// The text a CSV writer over a `Vec` wrote. Writing to memory fails only if a record had a
/// different length, which the fixed columns here rule out; the error would still be shown.
fn csv_text(written: csv::Result<()>, out: csv::Writer<Vec<u8>>) -> String {
    match written.map_err(|err| err.to_string()).and_then(|()| {
        out.into_inner()
            .map_err(|err| err.to_string())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }) {
        Ok(text) => text,
        Err(err) => format!("cannot write CSV: {err}\n"),
    }
}

// ---------------------------------------------------------------------------------------------
// Recipients by state
// ---------------------------------------------------------------------------------------------

/// The states `hikyaku campaign recipients --state` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// The ledger says `sent`: SES accepted the message (whatever it reported later).
    Sent,
    /// SES reported the delivery.
    Delivered,
    Opened,
    Clicked,
    /// SES reported a hard, soft or undetermined bounce.
    Bounced,
    Complained,
    /// The ledger says `failed`.
    Failed,
    /// The ledger says `uncertain`.
    Uncertain,
    /// The ledger says `cancelled`: the run was cancelled first.
    Cancelled,
    /// Not mailed: suppressed.
    Suppressed,
    /// Not mailed: unsubscribed.
    Unsubscribed,
}

impl RecipientState {
    pub const ALL: [RecipientState; 11] = [
        RecipientState::Sent,
        RecipientState::Delivered,
        RecipientState::Opened,
        RecipientState::Clicked,
        RecipientState::Bounced,
        RecipientState::Complained,
        RecipientState::Failed,
        RecipientState::Uncertain,
        RecipientState::Cancelled,
        RecipientState::Suppressed,
        RecipientState::Unsubscribed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Sent => "sent",
            RecipientState::Delivered => "delivered",
            RecipientState::Opened => "opened",
            RecipientState::Clicked => "clicked",
            RecipientState::Bounced => "bounced",
            RecipientState::Complained => "complained",
            RecipientState::Failed => "failed",
            RecipientState::Uncertain => "uncertain",
            RecipientState::Cancelled => "cancelled",
            RecipientState::Suppressed => "suppressed",
            RecipientState::Unsubscribed => "unsubscribed",
        }
    }

    /// The recipient of `record` as listed under this state, if it is in it: the time the
    /// state was reached and the reason or detail recorded with it.
    pub fn line(self, record: &DeliveryRecord) -> Option<RecipientLine> {
        let marked = |mark: Mark| {
            record
                .marks
                .at(mark)
                .map(|at| (mark.as_str(), at, record.feedback_detail.clone()))
        };
        let in_state = |state: DeliveryState| {
            (record.state == state).then(|| (state.as_str(), record.updated_at, None))
        };
        let unsubscribed = record.state == DeliveryState::Suppressed
            && record.reason.as_deref().is_some_and(is_unsubscribe_reason);
        let (state, at, detail) = match self {
            RecipientState::Sent => in_state(DeliveryState::Sent),
            RecipientState::Delivered => marked(Mark::Delivered).map(|(s, at, _)| (s, at, None)),
            RecipientState::Opened => marked(Mark::Opened).map(|(s, at, _)| (s, at, None)),
            RecipientState::Clicked => marked(Mark::Clicked).map(|(s, at, _)| (s, at, None)),
            RecipientState::Bounced => [
                Mark::HardBounced,
                Mark::SoftBounced,
                Mark::UndeterminedBounce,
            ]
            .into_iter()
            .find_map(marked),
            RecipientState::Complained => marked(Mark::Complained),
            RecipientState::Failed => in_state(DeliveryState::Failed),
            RecipientState::Uncertain => in_state(DeliveryState::Uncertain),
            RecipientState::Cancelled => in_state(DeliveryState::Cancelled),
            RecipientState::Suppressed if !unsubscribed => in_state(DeliveryState::Suppressed),
            RecipientState::Unsubscribed if unsubscribed => {
                Some(("unsubscribed", record.updated_at, None))
            }
            RecipientState::Suppressed | RecipientState::Unsubscribed => None,
        }?;
        Some(RecipientLine {
            email: record.email.clone(),
            state: state.to_owned(),
            at,
            reason: detail.or_else(|| record.reason.clone()),
            ses_message_id: record.ses_message_id.clone(),
        })
    }
}

impl fmt::Display for RecipientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecipientState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RecipientState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RecipientState::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown recipient state '{s}'; one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// One recipient in a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecipientLine {
    pub email: EmailAddress,
    /// The state as precise as the ledger has it: `hard_bounced`, `soft_bounced` or
    /// `undetermined_bounce` for a bounce, else the state asked for.
    pub state: String,
    /// When the recipient reached the state.
    pub at: DateTime<Utc>,
    /// Why: a failure's or suppression's reason, a bounce's diagnostic, a complaint's type.
    pub reason: Option<String>,
    pub ses_message_id: Option<String>,
}

/// Collects the recipients of one state from a ledger, in order of time (then address).
#[derive(Clone, Debug)]
pub struct RecipientList {
    pub state: RecipientState,
    /// Ledger records looked at.
    pub records: u64,
    pub lines: Vec<RecipientLine>,
}

impl RecipientList {
    pub fn new(state: RecipientState) -> RecipientList {
        RecipientList {
            state,
            records: 0,
            lines: Vec::new(),
        }
    }

    pub fn add(&mut self, record: &DeliveryRecord) {
        self.records += 1;
        self.lines.extend(self.state.line(record));
    }

    pub fn finish(mut self) -> RecipientList {
        self.lines
            .sort_by(|a, b| (a.at, &a.email).cmp(&(b.at, &b.email)));
        self
    }

    /// `email,state,at,reason,ses_message_id`, one recipient a row, with a header.
    pub fn to_csv(&self) -> String {
        let mut out = csv::Writer::from_writer(Vec::new());
        let written = out
            .write_record(["email", "state", "at", "reason", "ses_message_id"])
            .and_then(|()| {
                self.lines.iter().try_for_each(|line| {
                    out.write_record([
                        line.email.as_str(),
                        &line.state,
                        &report_time(line.at),
                        line.reason.as_deref().unwrap_or_default(),
                        line.ses_message_id.as_deref().unwrap_or_default(),
                    ])
                })
            });
        csv_text(written, out)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::feedback::{Marks, list_unsubscribe_reason, topic_unsubscribe_reason};
    use crate::ledger::LedgerCounts;
    use crate::run::FanoutProgress;

    pub(crate) fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 24, 9, 0, 0).unwrap() + Duration::seconds(secs)
    }

    pub(crate) fn record(
        local: &str,
        state: DeliveryState,
        secs: i64,
        marks: &[(Mark, i64)],
    ) -> DeliveryRecord {
        let mut m = Marks::default();
        for (mark, s) in marks {
            m.record(*mark, at(*s));
        }
        DeliveryRecord {
            email: EmailAddress::parse(&format!("{local}@example.com")).unwrap(),
            state,
            claim_token: Some("t".into()),
            claimed_at: Some(at(secs)),
            ses_message_id: (state == DeliveryState::Sent).then(|| format!("m-{local}")),
            reason: None,
            updated_at: at(secs),
            marks: m,
            feedback_detail: None,
        }
    }

    fn run_record(selected: u64, complete: bool, state: RunState) -> RunRecord {
        let run = RunRef::new(
            CampaignId::parse("winter").unwrap(),
            RunId::from_scheduled_time(at(0)),
        );
        let mut record = RunRecord::new(run, ListId::parse("news").unwrap(), at(0));
        record.state = state;
        record.fanout_complete = complete;
        record.fanout_completed_at = complete.then(|| at(2));
        record.progress = FanoutProgress {
            pages: 1,
            contacts_read: selected + 3,
            selected,
            filtered: 3,
            ..FanoutProgress::default()
        };
        record
    }

    /// Ten recipients: six sent (one hard bounce, one soft, one complaint after delivery, the
    /// rest delivered, one of them opened and clicked), one failed, one suppressed, one
    /// unsubscribed, one uncertain.
    pub(crate) fn ledger() -> Vec<DeliveryRecord> {
        use DeliveryState::*;
        use Mark::*;
        let mut failed = record("f", Failed, 12, &[]);
        failed.reason = Some("MessageRejected: Email address is not verified".into());
        let mut suppressed = record("s", Suppressed, 3, &[]);
        suppressed.reason = Some("hard bounce".into());
        let mut unsubscribed = record("u", Suppressed, 4, &[]);
        unsubscribed.reason = Some(list_unsubscribe_reason("newsletter"));
        let mut hard = record("b", Sent, 10, &[(HardBounced, 20)]);
        hard.feedback_detail = Some("Permanent/General: 550 5.1.1 user unknown".into());
        let mut complaint = record("c", Sent, 11, &[(Delivered, 15), (Complained, 40)]);
        complaint.feedback_detail = Some("abuse".into());
        vec![
            record(
                "a1",
                Sent,
                10,
                &[(Delivered, 14), (Opened, 30), (Clicked, 31)],
            ),
            record("a2", Sent, 10, &[(Delivered, 16)]),
            record("a3", Sent, 72, &[(Delivered, 80)]),
            record("d", Sent, 13, &[(SoftBounced, 25)]),
            hard,
            complaint,
            failed,
            suppressed,
            unsubscribed,
            record("x", Uncertain, 30, &[]),
        ]
    }

    fn guardrails() -> Guardrails {
        Guardrails {
            max_bounce_rate: 0.05,
            max_complaint_rate: 0.001,
            min_sends: 4,
        }
    }

    #[test]
    fn the_report_counts_every_state_and_outcome_of_the_ledger() {
        let tally = Tally::of(&ledger());
        let mut record = run_record(11, true, RunState::Sending);
        record.feedback.opens = 3;
        record.feedback.clicks = 2;
        let report = RunReport::new(record, &tally, guardrails(), at(500));
        let d = &report.deliveries;
        assert_eq!(
            (
                d.sent,
                d.failed,
                d.suppressed,
                d.unsubscribed,
                d.uncertain,
                d.in_flight
            ),
            (6, 1, 1, 1, 1, 0)
        );
        // Eleven selected, ten in the ledger: one still to come.
        assert_eq!(d.outstanding, 1);
        assert!(!report.finished);
        assert_eq!(report.phase, "sending");
        let o = &report.outcomes;
        assert_eq!(
            (o.delivered, o.opened, o.clicked, o.opens, o.clicks),
            (4, 1, 1, 3, 2)
        );
        assert_eq!(
            (o.bounced, o.hard_bounced, o.soft_bounced, o.complained),
            (2, 1, 1, 1)
        );
        assert_eq!(report.audience.selected, 11);
        assert_eq!(report.audience.filtered, 3);
        // Terminal states, in flight and outstanding add up to the audience.
        assert_eq!(
            d.sent
                + d.failed
                + d.suppressed
                + d.unsubscribed
                + d.uncertain
                + d.in_flight
                + d.outstanding,
            report.audience.selected
        );
    }

    #[test]
    fn rates_are_judged_against_the_campaigns_guardrails() {
        let tally = Tally::of(&ledger());
        let report = RunReport::new(
            run_record(10, true, RunState::Sending),
            &tally,
            guardrails(),
            at(500),
        );
        let r = &report.rates;
        // Resolved: 4 delivered + 1 hard + 1 soft bounce.
        assert_eq!(r.resolved_sends, 6);
        assert!((r.bounce_rate.unwrap() - 1.0 / 6.0).abs() < 1e-12);
        assert!((r.complaint_rate.unwrap() - 1.0 / 6.0).abs() < 1e-12);
        assert!(r.judged && r.bounce_over_limit && r.complaint_over_limit);
        assert!((r.delivery_rate.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.open_rate, Some(0.25));
        assert_eq!(r.max_bounce_rate, 0.05);

        let lenient = Guardrails {
            max_bounce_rate: 0.5,
            max_complaint_rate: 0.5,
            min_sends: 4,
        };
        let r = RunReport::new(
            run_record(10, true, RunState::Sending),
            &tally,
            lenient,
            at(500),
        )
        .rates;
        assert!(r.judged && !r.bounce_over_limit && !r.complaint_over_limit);

        let too_few = Guardrails {
            min_sends: 200,
            ..guardrails()
        };
        let r = RunReport::new(
            run_record(10, true, RunState::Sending),
            &tally,
            too_few,
            at(500),
        )
        .rates;
        assert!(
            !r.judged && !r.bounce_over_limit,
            "not judged below min_sends"
        );
    }

    #[test]
    fn a_finished_run_ends_at_its_last_send_and_a_running_one_is_timed_to_now() {
        let tally = Tally::of(&ledger());
        let done = RunReport::new(
            run_record(10, true, RunState::Sending),
            &tally,
            guardrails(),
            at(500),
        );
        assert!(done.finished);
        assert_eq!(done.phase, "completed");
        assert_eq!(done.timing.first_sent_at, Some(at(10)));
        assert_eq!(done.timing.last_sent_at, Some(at(72)));
        assert_eq!(done.timing.ended_at, Some(at(72)));
        assert_eq!(done.timing.elapsed_seconds, 72.0);

        let paused = RunReport::new(
            run_record(20, true, RunState::Paused),
            &tally,
            guardrails(),
            at(500),
        );
        assert_eq!(paused.phase, "paused");
        assert_eq!(paused.timing.ended_at, None);
        assert_eq!(paused.timing.elapsed_seconds, 500.0);

        let cancelled = RunReport::new(
            run_record(20, false, RunState::Cancelled),
            &tally,
            guardrails(),
            at(500),
        );
        assert_eq!(cancelled.timing.ended_at, Some(at(72)));
    }

    #[test]
    fn sends_are_bucketed_by_the_narrowest_width_that_fits_and_empty_buckets_are_kept() {
        let tally = Tally::of(&ledger());
        let rate = &RunReport::new(
            run_record(10, true, RunState::Sending),
            &tally,
            guardrails(),
            at(500),
        )
        .send_rate;
        // Sends at 10, 10, 10, 11, 13 and 72 s: 62 seconds need 2-second buckets.
        assert_eq!(rate.bucket_seconds, 2);
        assert_eq!(rate.buckets.first().unwrap().start, at(10));
        assert_eq!(rate.buckets.last().unwrap().start, at(72));
        assert_eq!(rate.buckets.len(), 32);
        let sent: Vec<u64> = rate.buckets.iter().map(|b| b.sent).collect();
        assert_eq!(&sent[..3], &[4, 1, 0]);
        assert_eq!(sent.iter().sum::<u64>(), 6);
        assert_eq!(rate.peak_per_second, Some(2.0));
        // 5 sends after the first, over 62 seconds.
        assert!((rate.average_per_second.unwrap() - 5.0 / 62.0).abs() < 1e-12);
    }

    #[test]
    fn bucket_widths_grow_with_the_span_and_stay_within_the_limit() {
        assert_eq!(bucket_width(0, 0), 1);
        assert_eq!(bucket_width(0, 58), 1);
        assert_eq!(bucket_width(0, 59), 2);
        assert_eq!(bucket_width(0, 3_600), 120);
        assert_eq!(bucket_width(0, 86_400), 1800);
        for span in [
            0,
            1,
            59,
            60,
            61,
            599,
            3_599,
            86_399,
            86_400 * 59,
            86_400 * 400,
        ] {
            let width = bucket_width(1_000, 1_000 + span);
            let mut per_second = BTreeMap::new();
            *per_second.entry(1_000).or_default() += 1;
            *per_second.entry(1_000 + span).or_default() += 1;
            let rate = SendRate::of(&per_second, None);
            assert_eq!(rate.bucket_seconds, width);
            assert!(
                rate.buckets.len() as i64 <= MAX_BUCKETS,
                "span {span}: {} buckets of {width} s",
                rate.buckets.len()
            );
            assert_eq!(rate.buckets.iter().map(|b| b.sent).sum::<u64>(), 2);
            assert!(rate.buckets[0].start.timestamp() % width == 0);
        }
        let none = SendRate::of(&BTreeMap::new(), None);
        assert!(none.buckets.is_empty() && none.peak_per_second.is_none());
    }

    #[test]
    fn unsubscribes_are_told_from_suppressions_by_the_reason_the_consent_check_gives() {
        assert!(is_unsubscribe_reason(&list_unsubscribe_reason("news")));
        assert!(is_unsubscribe_reason(&topic_unsubscribe_reason(
            "news", "weekly"
        )));
        assert!(!is_unsubscribe_reason("hard bounce"));
        assert!(!is_unsubscribe_reason("complaint"));
    }

    #[test]
    fn recipients_are_listed_per_state_with_time_and_reason() {
        let records = ledger();
        let list = |state: RecipientState| {
            let mut list = RecipientList::new(state);
            records.iter().for_each(|r| list.add(r));
            list.finish()
        };
        let emails = |l: &RecipientList| -> Vec<String> {
            l.lines.iter().map(|l| l.email.to_string()).collect()
        };
        let bounced = list(RecipientState::Bounced);
        assert_eq!(emails(&bounced), ["b@example.com", "d@example.com"]);
        assert_eq!(bounced.records, 10);
        assert_eq!(bounced.lines[0].state, "hard_bounced");
        assert_eq!(bounced.lines[0].at, at(20));
        assert_eq!(
            bounced.lines[0].reason.as_deref(),
            Some("Permanent/General: 550 5.1.1 user unknown")
        );
        assert_eq!(bounced.lines[1].state, "soft_bounced");
        assert_eq!(
            emails(&list(RecipientState::Sent)),
            [
                "a1@example.com",
                "a2@example.com",
                "b@example.com",
                "c@example.com",
                "d@example.com",
                "a3@example.com"
            ]
        );
        assert_eq!(
            emails(&list(RecipientState::Delivered)),
            [
                "a1@example.com",
                "c@example.com",
                "a2@example.com",
                "a3@example.com"
            ]
        );
        let complained = list(RecipientState::Complained);
        assert_eq!(emails(&complained), ["c@example.com"]);
        assert_eq!(complained.lines[0].reason.as_deref(), Some("abuse"));
        assert_eq!(complained.lines[0].at, at(40));
        let failed = list(RecipientState::Failed);
        assert_eq!(
            failed.lines[0].reason.as_deref(),
            Some("MessageRejected: Email address is not verified")
        );
        assert_eq!(emails(&list(RecipientState::Suppressed)), ["s@example.com"]);
        let unsubscribed = list(RecipientState::Unsubscribed);
        assert_eq!(emails(&unsubscribed), ["u@example.com"]);
        assert_eq!(
            unsubscribed.lines[0].reason.as_deref(),
            Some("unsubscribed from contact list newsletter")
        );
        assert_eq!(emails(&list(RecipientState::Uncertain)), ["x@example.com"]);
        assert_eq!(emails(&list(RecipientState::Opened)), ["a1@example.com"]);
        assert_eq!(emails(&list(RecipientState::Clicked)), ["a1@example.com"]);
    }

    #[test]
    fn recipient_states_parse_by_name_and_a_wrong_name_lists_the_right_ones() {
        for state in RecipientState::ALL {
            assert_eq!(state.as_str().parse::<RecipientState>(), Ok(state));
        }
        let err = "bounce".parse::<RecipientState>().unwrap_err();
        assert!(
            err.contains("'bounce'") && err.contains("bounced, complained"),
            "{err}"
        );
    }

    #[test]
    fn recipients_csv_quotes_what_needs_quoting() {
        let records = ledger();
        let mut list = RecipientList::new(RecipientState::Failed);
        records.iter().for_each(|r| list.add(r));
        let mut line = list.finish().lines.remove(0);
        line.reason = Some("rejected, \"bad\" content".into());
        let csv = RecipientList {
            state: RecipientState::Failed,
            records: 1,
            lines: vec![line],
        }
        .to_csv();
        assert_eq!(
            csv,
            "email,state,at,reason,ses_message_id\n\
             f@example.com,failed,2026-12-24T09:00:12Z,\"rejected, \"\"bad\"\" content\",\n"
        );
    }

    #[test]
    fn the_report_csv_has_one_row_per_figure_and_bucket() {
        let tally = Tally::of(&ledger());
        let report = RunReport::new(
            run_record(10, true, RunState::Sending),
            &tally,
            guardrails(),
            at(500),
        );
        let csv = report.to_csv();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(reader.headers().unwrap(), vec!["section", "name", "value"]);
        let rows: Vec<(String, String, String)> = reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].to_owned(), r[1].to_owned(), r[2].to_owned())
            })
            .collect();
        let value = |section: &str, name: &str| {
            rows.iter()
                .find(|(s, n, _)| s == section && n == name)
                .map(|(_, _, v)| v.clone())
                .unwrap_or_else(|| panic!("{section},{name} missing"))
        };
        assert_eq!(value("run", "run_id"), "20261224T090000Z");
        assert_eq!(value("run", "ended_at"), "2026-12-24T09:01:12Z");
        assert_eq!(value("deliveries", "sent"), "6");
        assert_eq!(value("deliveries", "unsubscribed"), "1");
        assert_eq!(value("outcomes", "hard_bounced"), "1");
        assert_eq!(value("rates", "bounce_over_limit"), "true");
        assert_eq!(value("rates", "max_complaint_rate"), "0.001000");
        assert_eq!(value("send_rate", "bucket_seconds"), "2");
        assert_eq!(value("sent_per_bucket", "2026-12-24T09:00:10Z"), "4");
        let buckets = rows
            .iter()
            .filter(|(s, _, _)| s == "sent_per_bucket")
            .count();
        assert_eq!(buckets, report.send_rate.buckets.len());
    }

    #[test]
    fn run_summaries_carry_counts_and_timings() {
        let mut record = run_record(10, true, RunState::Sending);
        record.feedback.delivered = 4;
        record.feedback.hard_bounced = 1;
        let counts = LedgerCounts {
            sent: 6,
            failed: 1,
            suppressed: 2,
            uncertain: 1,
            first_sent_at: Some(at(10)),
            last_sent_at: Some(at(70)),
            ..LedgerCounts::default()
        };
        let summary = RunSummary::new(&RunStatus { record, counts }, at(500));
        assert_eq!(summary.phase, "completed");
        assert_eq!(summary.timing.ended_at, Some(at(70)));
        assert_eq!(summary.timing.elapsed_seconds, 70.0);
        assert_eq!((summary.sent, summary.outstanding), (6, 0));
        assert_eq!((summary.delivered, summary.hard_bounced), (4, 1));
        assert_eq!(summary.send_rate, Some(5.0 / 60.0));
    }

    #[tokio::test]
    async fn the_fake_ledger_hands_every_record_to_the_reader() {
        use crate::fakes::FakeLedger;
        let ledger_fake = FakeLedger::default();
        let run = RunRef::new(
            CampaignId::parse("winter").unwrap(),
            RunId::from_scheduled_time(at(0)),
        );
        for r in ledger() {
            ledger_fake.insert(&run, r);
        }
        let mut tally = Tally::default();
        let n = ledger_fake
            .each_record(&run, &mut |r| tally.add(&r))
            .await
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(tally, Tally::of(&ledger()));
    }
}
