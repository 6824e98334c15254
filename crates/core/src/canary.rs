//! The canary slice: a run sends a first slice of its audience, holds the rest until the
//! slice's feedback is in, and goes on only if the slice's bounce and complaint rates are
//! within the campaign's guardrails; otherwise the run pauses with the figures.
//!
//! The fan-out gives every recipient of a canary run its place in the audience
//! ([`JobRecipient::position`]) and enqueues everyone as usual. A sender sends the recipients
//! placed inside the slice and puts the others back on the queue, delayed, until the wait is
//! over; the first job to look after that judges the slice from the run's feedback counters
//! (which then count the slice alone) and records the verdict on the run. The queue is the
//! timer: nothing has to be woken up.
//!
//! A slice is a count or a share of the audience. A share is known once the fan-out has read
//! the whole audience; until then, the share of what it has read so far is surely inside.
//! The wait counts from the end of the fan-out, when the slice is known and enqueued.
//!
//! Without a `[canary]` table, a run whose audience is larger than [`DEFAULT_ABOVE`] gets a
//! slice of [`DEFAULT_SIZE`] and a wait of [`DEFAULT_WAIT_MINUTES`]: enough sends for the
//! default guardrails to judge, a wait that sees bounces (seconds to minutes) and the first
//! complaints, and no delay at all for a smaller audience, whose first 1,000 are sent at once
//! either way.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::feedback::{FeedbackCounts, Guardrails};
use crate::job::JobRecipient;
use crate::run::RunRecord;

/// Audiences larger than this get the default canary.
pub const DEFAULT_ABOVE: u64 = 10_000;
/// The default slice.
pub const DEFAULT_SIZE: u64 = 1_000;
pub const DEFAULT_WAIT_MINUTES: f64 = 30.0;
/// The longest wait: a day.
pub const MAX_WAIT_MINUTES: f64 = 1_440.0;
/// SQS delays a message by at most 15 minutes: a longer hold is several.
const MAX_QUEUE_DELAY: Duration = Duration::from_secs(900);
/// How often the judge looks again while the slice's feedback is short.
const INCOMPLETE_RECHECK: chrono::Duration = chrono::Duration::seconds(60);

/// The `[canary]` table as written. Without it the default canary applies to large
/// audiences; `enabled = false` turns that off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryDefinition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Recipients in the slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Or a share of the audience, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// Minutes to hold the rest after the fan-out, for the slice's feedback to arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_minutes: Option<f64>,
    /// Only audiences larger than this get the canary; absent: every audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<u64>,
}

/// How large the slice is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SliceSize {
    Count(u64),
    Share(f64),
}

/// A run's canary, copied onto the run when it starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryPlan {
    pub slice: SliceSize,
    pub wait_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<u64>,
}

impl CanaryPlan {
    /// The plan of a `[canary]` table, the default plan without one, `None` when it is
    /// turned off or invalid; each problem is reported with its field.
    pub fn from_definition(
        definition: Option<&CanaryDefinition>,
        problem: &mut impl FnMut(&str, String),
    ) -> Option<CanaryPlan> {
        let Some(def) = definition else {
            return Some(CanaryPlan {
                slice: SliceSize::Count(DEFAULT_SIZE),
                wait_secs: wait_secs(DEFAULT_WAIT_MINUTES),
                above: Some(DEFAULT_ABOVE),
            });
        };
        if def.enabled == Some(false) {
            let set: Vec<&str> = [
                ("size", def.size.is_some()),
                ("share", def.share.is_some()),
                ("wait_minutes", def.wait_minutes.is_some()),
                ("above", def.above.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect();
            if !set.is_empty() {
                problem(
                    "canary.enabled",
                    format!(
                        "is false, so {} would mean nothing: remove them or `enabled`",
                        set.join(", ")
                    ),
                );
            }
            return None;
        }
        let mut valid = true;
        let slice = match (def.size, def.share) {
            (Some(_), Some(_)) => {
                problem(
                    "canary.share",
                    "give `size` or `share`, not both".to_owned(),
                );
                valid = false;
                SliceSize::Count(DEFAULT_SIZE)
            }
            (Some(0), None) => {
                problem("canary.size", "must be at least 1 recipient".to_owned());
                valid = false;
                SliceSize::Count(DEFAULT_SIZE)
            }
            (Some(size), None) => SliceSize::Count(size),
            (None, Some(share)) if share > 0.0 && share < 1.0 => SliceSize::Share(share),
            (None, Some(share)) => {
                problem(
                    "canary.share",
                    format!(
                        "{share} is not a share between 0 and 1 (exclusive), e.g. 0.05 for 5% of the audience"
                    ),
                );
                valid = false;
                SliceSize::Count(DEFAULT_SIZE)
            }
            (None, None) => SliceSize::Count(DEFAULT_SIZE),
        };
        let minutes = def.wait_minutes.unwrap_or(DEFAULT_WAIT_MINUTES);
        if !(minutes.is_finite() && minutes > 0.0 && minutes <= MAX_WAIT_MINUTES) {
            problem(
                "canary.wait_minutes",
                format!(
                    "{minutes} is not a number of minutes above 0 and at most {MAX_WAIT_MINUTES}"
                ),
            );
            valid = false;
        }
        valid.then(|| CanaryPlan {
            slice,
            wait_secs: wait_secs(minutes),
            above: def.above,
        })
    }

    pub fn wait(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.wait_secs).unwrap_or(i64::MAX))
    }

    /// Where a run stands that has selected `selected` recipients so far, its fan-out done at
    /// `fanout_done` (`None`: still reading).
    pub fn standing(&self, selected: u64, fanout_done: Option<DateTime<Utc>>) -> Standing {
        let complete = fanout_done.is_some();
        let applies = match self.above {
            None => Some(true),
            Some(above) if selected > above => Some(true),
            Some(_) if complete => Some(false),
            Some(_) => None,
        };
        let admit_below = match self.slice {
            SliceSize::Count(count) => count,
            SliceSize::Share(share) => {
                let of_read = share * selected as f64;
                if complete {
                    (of_read.ceil() as u64).max(1)
                } else {
                    // Everything below the share of what is read so far is surely inside.
                    of_read.floor() as u64
                }
            }
        };
        let wait = match (applies, fanout_done) {
            (Some(false), _) => return Standing::Open,
            (_, Some(_)) if admit_below >= selected => return Standing::Open,
            (None, _) => Wait::Undecided,
            (Some(true), None) => Wait::FanningOut,
            (Some(true), Some(done)) => Wait::Until(done + self.wait()),
        };
        Standing::Holding {
            admit_below,
            slice: admit_below.min(selected),
            wait,
        }
    }

    /// [`standing`](Self::standing) of a run as its record has it.
    fn standing_of(&self, record: &RunRecord) -> Standing {
        let done = record
            .fanout_complete
            .then(|| record.fanout_completed_at.unwrap_or(record.started_at));
        self.standing(record.progress.selected, done)
    }
}

fn wait_secs(minutes: f64) -> u64 {
    ((minutes * 60.0).round() as u64).max(1)
}

/// A run's canary before its verdict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Standing {
    /// Nothing is held: the audience is not larger than `above`, or fits in the slice.
    Open,
    /// Recipients placed below `admit_below` are in the slice of `slice` recipients; the
    /// others wait.
    Holding {
        admit_below: u64,
        slice: u64,
        wait: Wait,
    },
}

/// What the held recipients wait for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wait {
    /// Whether the audience is large enough for a canary is not known yet.
    Undecided,
    /// The fan-out is still reading: the wait has not begun.
    FanningOut,
    /// The end of the wait.
    Until(DateTime<Utc>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryOutcome {
    /// The slice's rates were within the guardrails: the rest is sent.
    Passed,
    /// They were not, or the slice's feedback did not arrive: the run is paused.
    Failed,
    /// The operator resumed the run after a failed or finished canary: the rest is sent.
    Released,
}

impl CanaryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryOutcome::Passed => "passed",
            CanaryOutcome::Failed => "failed",
            CanaryOutcome::Released => "released",
        }
    }
}

/// The slice's verdict, recorded on the run once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryVerdict {
    pub outcome: CanaryOutcome,
    pub at: DateTime<Utc>,
    /// The figures it was judged by, or why it was released.
    pub detail: String,
}

impl fmt::Display for CanaryVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.outcome.as_str(), self.detail)
    }
}

/// What a sender does with the held part of a job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Gate {
    /// Send everyone.
    Open,
    /// Send those placed below `admit_below`; the others look again after `delay`.
    Hold { admit_below: u64, delay: Delay },
    /// The wait is over and the slice has no verdict: judge it.
    Due {
        admit_below: u64,
        slice: u64,
        until: DateTime<Utc>,
    },
}

/// How long held recipients stay on the queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Delay {
    /// The canary may yet turn out not to apply: soon.
    Soon,
    /// As a paused run's jobs (the canary failed and the run is being paused).
    Stopped,
    Exactly(Duration),
}

impl Delay {
    /// The delay to put on the queue: `soon` and `stopped` are the sender's settings, and
    /// none is longer than SQS allows or shorter than a second.
    pub fn resolve(self, soon: Duration, stopped: Duration) -> Duration {
        match self {
            Delay::Soon => soon,
            Delay::Stopped => stopped,
            Delay::Exactly(delay) => delay,
        }
        .clamp(Duration::from_secs(1), MAX_QUEUE_DELAY)
    }

    fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Delay {
        Delay::Exactly((at - now).to_std().unwrap_or_default())
    }
}

/// Where `record`'s canary leaves its senders at `now`.
pub fn gate(record: &RunRecord, now: DateTime<Utc>) -> Gate {
    let Some(plan) = &record.canary else {
        return Gate::Open;
    };
    match record
        .canary_verdict
        .as_ref()
        .map(|verdict| verdict.outcome)
    {
        Some(CanaryOutcome::Passed | CanaryOutcome::Released) => return Gate::Open,
        Some(CanaryOutcome::Failed) => {
            return Gate::Hold {
                admit_below: 0,
                delay: Delay::Stopped,
            };
        }
        None => {}
    }
    let Standing::Holding {
        admit_below,
        slice,
        wait,
    } = plan.standing_of(record)
    else {
        return Gate::Open;
    };
    match wait {
        Wait::Undecided => Gate::Hold {
            admit_below,
            delay: Delay::Soon,
        },
        // A share's bound grows with every page the fan-out reads: look again soon, so the
        // slice is not held past the fan-out.
        Wait::FanningOut if matches!(plan.slice, SliceSize::Share(_)) => Gate::Hold {
            admit_below,
            delay: Delay::Soon,
        },
        // The wait begins when the fan-out ends, so it is at least this long.
        Wait::FanningOut => Gate::Hold {
            admit_below,
            delay: Delay::Exactly(plan.wait().to_std().unwrap_or_default()),
        },
        Wait::Until(until) if now < until => Gate::Hold {
            admit_below,
            delay: Delay::until(until, now),
        },
        Wait::Until(until) => Gate::Due {
            admit_below,
            slice,
            until,
        },
    }
}

/// Splits recipients into those the canary lets through (placed below `admit_below`, or
/// with no place: not part of a canary) and those it holds.
pub fn split(
    recipients: Vec<JobRecipient>,
    admit_below: u64,
) -> (Vec<JobRecipient>, Vec<JobRecipient>) {
    recipients
        .into_iter()
        .partition(|recipient| recipient.position.is_none_or(|place| place < admit_below))
}

/// The judge's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    Decided(CanaryVerdict),
    /// Too little of the slice's feedback is in; look again then.
    Short {
        look_again_at: DateTime<Utc>,
    },
}

/// What the judge reads: the slice's size, how many of it were sent (those suppressed,
/// failed or unknown never bring feedback), and the run's feedback counters, which during the
/// hold are the slice's.
#[derive(Clone, Copy, Debug)]
pub struct SliceFigures<'a> {
    pub slice: u64,
    pub sent: u64,
    pub feedback: &'a FeedbackCounts,
}

/// Judges a slice whose wait ended at `until`. The rates are judged from the guardrails'
/// `min_sends` resolved sends, or from every send of the slice when it sent fewer. When fewer
/// have a known fate, the judge waits for as long again as the wait, then fails the canary:
/// feedback that never arrives is a broken event destination, and going on blind is what a
/// canary is there to prevent.
pub fn judge(
    plan: &CanaryPlan,
    figures: &SliceFigures<'_>,
    guardrails: &Guardrails,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Judgement {
    let SliceFigures {
        slice,
        sent,
        feedback,
    } = *figures;
    let need = guardrails.min_sends.min(sent).max(1);
    let resolved = feedback.resolved_sends();
    if resolved >= need {
        let judged = Guardrails {
            min_sends: need,
            ..*guardrails
        };
        let (outcome, detail) = match judged.breach(feedback) {
            Some(breach) => (CanaryOutcome::Failed, format!("canary slice: {breach}")),
            None => (
                CanaryOutcome::Passed,
                format!(
                    "canary slice: bounce rate {:.2}% and complaint rate {:.2}% over {resolved} resolved sends ({sent} sent of a slice of {slice}), within the campaign's limits of {:.2}% and {:.2}%",
                    percent(feedback.hard_bounced, resolved),
                    percent(feedback.complained, resolved),
                    guardrails.max_bounce_rate * 100.0,
                    guardrails.max_complaint_rate * 100.0,
                ),
            ),
        };
        return Judgement::Decided(CanaryVerdict {
            outcome,
            at: now,
            detail,
        });
    }
    let deadline = until + plan.wait();
    if now < deadline {
        return Judgement::Short {
            look_again_at: deadline.min(now + INCOMPLETE_RECHECK),
        };
    }
    let detail = if sent == 0 {
        format!(
            "canary slice: none of its {slice} recipients was sent (suppressed, failed or refused), so there is nothing to judge it by; resume the run to send the rest without a verdict"
        )
    } else {
        format!(
            "canary slice: only {resolved} of its {sent} sends have a reported fate {} minutes after the fan-out, fewer than the {need} the rates are judged from; SES events may not reach the feedback function (see `hikyaku doctor`); resume the run to send the rest without a verdict",
            (plan.wait_secs * 2).div_ceil(60)
        )
    };
    Judgement::Decided(CanaryVerdict {
        outcome: CanaryOutcome::Failed,
        at: now,
        detail,
    })
}

fn percent(count: u64, of: u64) -> f64 {
    count as f64 * 100.0 / of.max(1) as f64
}

/// Whether an operator's resume releases the canary: only one that failed (the operator has
/// seen its figures). A canary without a verdict keeps running, and is judged after the
/// resume if its wait is over by then.
pub fn resume_releases(record: &RunRecord) -> bool {
    record
        .canary_verdict
        .as_ref()
        .is_some_and(|verdict| verdict.outcome == CanaryOutcome::Failed)
}

/// Where `record`'s canary stands, in a line for operators; `None` for a run without one.
pub fn describe(record: &RunRecord, now: DateTime<Utc>) -> Option<String> {
    let plan = record.canary.as_ref()?;
    if let Some(verdict) = &record.canary_verdict {
        return Some(verdict.to_string());
    }
    let selected = record.progress.selected;
    let minutes = plan.wait_secs.div_ceil(60);
    Some(match plan.standing_of(record) {
        Standing::Open => match plan.above {
            Some(above) if selected <= above => {
                format!("not needed: the audience is not larger than {above}")
            }
            _ => "not needed: the whole audience fits in the slice".to_owned(),
        },
        Standing::Holding {
            admit_below, wait, ..
        } => match wait {
            Wait::Undecided => format!(
                "the first {admit_below} are sent; the rest waits until the fan-out knows whether the audience is larger than {}",
                plan.above.unwrap_or_default()
            ),
            Wait::FanningOut => format!(
                "the slice (at least {admit_below}) is sent first; the rest is held until {minutes} min after the fan-out"
            ),
            Wait::Until(until) if now < until => format!(
                "the slice of {admit_below} is sent first; the rest is held until {}",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Wait::Until(_) => format!(
                "the slice of {admit_below} has waited its {minutes} min; the next held job judges it"
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::EmailAddress;
    use crate::ids::{CampaignId, ListId, RunId, RunRef};
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 24, 9, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn plan(def: Option<CanaryDefinition>) -> (Option<CanaryPlan>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let plan = CanaryPlan::from_definition(def.as_ref(), &mut |field: &str, p: String| {
            problems.push((field.to_owned(), p))
        });
        (plan, problems)
    }

    fn valid(def: CanaryDefinition) -> CanaryPlan {
        match plan(Some(def)) {
            (Some(plan), problems) if problems.is_empty() => plan,
            other => panic!("{other:?}"),
        }
    }

    fn record(plan: CanaryPlan, selected: u64, done_at: Option<i64>) -> RunRecord {
        let run = RunRef::new(
            CampaignId::parse("spring").unwrap(),
            RunId::from_scheduled_time(at(0)),
        );
        let mut record = RunRecord::new(run, ListId::parse("l").unwrap(), at(0));
        record.canary = Some(plan);
        record.progress.selected = selected;
        record.fanout_complete = done_at.is_some();
        record.fanout_completed_at = done_at.map(at);
        record
    }

    fn guardrails() -> Guardrails {
        Guardrails {
            max_bounce_rate: 0.05,
            max_complaint_rate: 0.001,
            min_sends: 200,
        }
    }

    #[test]
    fn without_a_table_large_audiences_get_the_default_canary() {
        let (default, problems) = plan(None);
        assert!(problems.is_empty());
        let default = default.unwrap();
        assert_eq!(default.slice, SliceSize::Count(1_000));
        assert_eq!(default.wait_secs, 1_800);
        assert_eq!(default.above, Some(10_000));
        // The demo's 756: nobody is held, even before the fan-out knows the audience.
        assert_eq!(
            default.standing(756, Some(at(1))),
            Standing::Open,
            "a small audience is not held"
        );
        assert!(matches!(
            default.standing(5_000, None),
            Standing::Holding {
                admit_below: 1_000,
                wait: Wait::Undecided,
                ..
            }
        ));
        assert_eq!(default.standing(5_000, Some(at(1))), Standing::Open);
        assert_eq!(
            default.standing(10_001, None),
            Standing::Holding {
                admit_below: 1_000,
                slice: 1_000,
                wait: Wait::FanningOut
            }
        );
        assert_eq!(
            default.standing(50_000, Some(at(10))),
            Standing::Holding {
                admit_below: 1_000,
                slice: 1_000,
                wait: Wait::Until(at(10 + 1_800))
            }
        );
    }

    #[test]
    fn a_share_admits_its_part_of_what_is_read_and_is_exact_at_the_end() {
        let share = valid(CanaryDefinition {
            share: Some(0.05),
            wait_minutes: Some(10.0),
            ..CanaryDefinition::default()
        });
        assert_eq!(share.above, None);
        assert!(matches!(
            share.standing(1_990, None),
            Standing::Holding {
                admit_below: 99,
                wait: Wait::FanningOut,
                ..
            }
        ));
        assert_eq!(
            share.standing(2_001, Some(at(5))),
            Standing::Holding {
                admit_below: 101,
                slice: 101,
                wait: Wait::Until(at(605))
            }
        );
        // A tiny audience still gets a slice of one.
        assert!(matches!(
            share.standing(3, Some(at(5))),
            Standing::Holding { admit_below: 1, .. }
        ));
    }

    #[test]
    fn a_share_looks_again_soon_while_the_fanout_reads() {
        let share = valid(CanaryDefinition {
            share: Some(0.1),
            ..CanaryDefinition::default()
        });
        // The first page is enqueued before its count is saved: nothing is surely inside
        // yet, and the slice must not wait for the whole wait.
        assert_eq!(
            gate(&record(share, 0, None), at(1)),
            Gate::Hold {
                admit_below: 0,
                delay: Delay::Soon
            }
        );
    }

    #[test]
    fn an_audience_that_fits_in_the_slice_is_not_held() {
        let count = valid(CanaryDefinition {
            size: Some(100),
            ..CanaryDefinition::default()
        });
        assert_eq!(count.standing(100, Some(at(1))), Standing::Open);
        assert!(matches!(
            count.standing(100, None),
            Standing::Holding {
                wait: Wait::FanningOut,
                ..
            }
        ));
    }

    #[test]
    fn bad_tables_are_refused_with_their_field() {
        let cases = [
            (
                CanaryDefinition {
                    size: Some(10),
                    share: Some(0.1),
                    ..CanaryDefinition::default()
                },
                "canary.share",
                "not both",
            ),
            (
                CanaryDefinition {
                    size: Some(0),
                    ..CanaryDefinition::default()
                },
                "canary.size",
                "at least 1",
            ),
            (
                CanaryDefinition {
                    share: Some(1.5),
                    ..CanaryDefinition::default()
                },
                "canary.share",
                "1.5 is not a share",
            ),
            (
                CanaryDefinition {
                    wait_minutes: Some(0.0),
                    ..CanaryDefinition::default()
                },
                "canary.wait_minutes",
                "0 is not a number of minutes",
            ),
            (
                CanaryDefinition {
                    wait_minutes: Some(2_000.0),
                    ..CanaryDefinition::default()
                },
                "canary.wait_minutes",
                "at most 1440",
            ),
            (
                CanaryDefinition {
                    enabled: Some(false),
                    size: Some(5),
                    ..CanaryDefinition::default()
                },
                "canary.enabled",
                "size would mean nothing",
            ),
        ];
        for (def, field, words) in cases {
            let (_, problems) = plan(Some(def.clone()));
            assert!(
                problems
                    .iter()
                    .any(|(f, p)| f == field && p.contains(words)),
                "{def:?}: {problems:?}"
            );
        }
        let (off, problems) = plan(Some(CanaryDefinition {
            enabled: Some(false),
            ..CanaryDefinition::default()
        }));
        assert_eq!((off, problems.len()), (None, 0));
        // Seconds for the impatient, never zero.
        assert_eq!(
            valid(CanaryDefinition {
                wait_minutes: Some(0.05),
                ..CanaryDefinition::default()
            })
            .wait_secs,
            3
        );
    }

    #[test]
    fn the_gate_holds_until_the_wait_is_over_then_asks_for_a_verdict() {
        let plan = valid(CanaryDefinition {
            size: Some(40),
            wait_minutes: Some(1.0),
            ..CanaryDefinition::default()
        });
        assert_eq!(
            gate(&record(plan.clone(), 100, None), at(3)),
            Gate::Hold {
                admit_below: 40,
                delay: Delay::Exactly(Duration::from_secs(60))
            }
        );
        assert_eq!(
            gate(&record(plan.clone(), 200, Some(10)), at(40)),
            Gate::Hold {
                admit_below: 40,
                delay: Delay::Exactly(Duration::from_secs(30))
            }
        );
        assert_eq!(
            gate(&record(plan.clone(), 200, Some(10)), at(70)),
            Gate::Due {
                admit_below: 40,
                slice: 40,
                until: at(70)
            }
        );
        let mut judged = record(plan.clone(), 200, Some(10));
        judged.canary_verdict = Some(CanaryVerdict {
            outcome: CanaryOutcome::Passed,
            at: at(71),
            detail: String::new(),
        });
        assert_eq!(gate(&judged, at(72)), Gate::Open);
        judged.canary_verdict.as_mut().unwrap().outcome = CanaryOutcome::Failed;
        assert_eq!(
            gate(&judged, at(72)),
            Gate::Hold {
                admit_below: 0,
                delay: Delay::Stopped
            }
        );
        assert!(resume_releases(&judged));
        assert!(!resume_releases(&record(plan, 200, Some(10))));
        let mut plain = record(valid(CanaryDefinition::default()), 200, Some(1));
        plain.canary = None;
        assert_eq!(gate(&plain, at(2)), Gate::Open);
    }

    #[test]
    fn operators_read_where_the_canary_stands() {
        let plan = valid(CanaryDefinition {
            size: Some(40),
            wait_minutes: Some(1.0),
            above: Some(100),
            ..CanaryDefinition::default()
        });
        let line = |selected, done, now| describe(&record(plan.clone(), selected, done), at(now));
        assert_eq!(
            line(50, Some(1), 2).unwrap(),
            "not needed: the audience is not larger than 100"
        );
        assert!(line(50, None, 2).unwrap().contains("the first 40 are sent"));
        assert!(
            line(500, None, 2)
                .unwrap()
                .contains("until 1 min after the fan-out")
        );
        assert!(
            line(500, Some(10), 20)
                .unwrap()
                .contains("held until 2026-12-24 09:01:10 UTC")
        );
        assert!(
            line(500, Some(10), 80)
                .unwrap()
                .contains("the next held job judges it")
        );
        let mut judged = record(plan, 500, Some(10));
        judged.canary_verdict = Some(CanaryVerdict {
            outcome: CanaryOutcome::Passed,
            at: at(80),
            detail: "canary slice: fine".into(),
        });
        assert_eq!(
            describe(&judged, at(90)).unwrap(),
            "passed: canary slice: fine"
        );
        judged.canary = None;
        assert_eq!(describe(&judged, at(90)), None);
    }

    #[test]
    fn delays_stay_within_what_sqs_allows() {
        let soon = Duration::from_secs(10);
        let stopped = Duration::from_secs(60);
        assert_eq!(Delay::Soon.resolve(soon, stopped), soon);
        assert_eq!(Delay::Stopped.resolve(soon, stopped), stopped);
        assert_eq!(
            Delay::Exactly(Duration::from_secs(3_600)).resolve(soon, stopped),
            Duration::from_secs(900)
        );
        assert_eq!(
            Delay::Exactly(Duration::ZERO).resolve(soon, stopped),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn split_keeps_recipients_without_a_place_and_those_inside_the_slice() {
        let recipient = |place: Option<u64>| JobRecipient {
            email: EmailAddress::parse(&format!("r{}@example.com", place.unwrap_or(999))).unwrap(),
            attributes: Default::default(),
            position: place,
        };
        let (admitted, held) = split(
            vec![
                recipient(Some(38)),
                recipient(Some(39)),
                recipient(Some(40)),
                recipient(None),
                recipient(Some(41)),
            ],
            40,
        );
        let places = |list: &[JobRecipient]| list.iter().map(|r| r.position).collect::<Vec<_>>();
        assert_eq!(places(&admitted), vec![Some(38), Some(39), None]);
        assert_eq!(places(&held), vec![Some(40), Some(41)]);
    }

    fn counts(delivered: u64, hard_bounced: u64, complained: u64) -> FeedbackCounts {
        FeedbackCounts {
            delivered,
            hard_bounced,
            complained,
            ..FeedbackCounts::default()
        }
    }

    fn figures(slice: u64, sent: u64, feedback: &FeedbackCounts) -> SliceFigures<'_> {
        SliceFigures {
            slice,
            sent,
            feedback,
        }
    }

    fn judged(plan: &CanaryPlan, figures: SliceFigures<'_>, now: i64) -> Judgement {
        judge(plan, &figures, &guardrails(), at(300), at(now))
    }

    fn decided(judgement: Judgement) -> CanaryVerdict {
        match judgement {
            Judgement::Decided(verdict) => verdict,
            other => panic!("not judged: {other:?}"),
        }
    }

    #[test]
    fn the_judge_passes_a_clean_slice_and_fails_a_bad_one_with_the_figures() {
        let plan = valid(CanaryDefinition {
            size: Some(100),
            wait_minutes: Some(5.0),
            ..CanaryDefinition::default()
        });
        // The slice is smaller than min_sends: it is judged from all of its sends.
        let pass = decided(judged(&plan, figures(100, 100, &counts(98, 2, 0)), 301));
        assert_eq!(pass.outcome, CanaryOutcome::Passed);
        assert!(pass.detail.contains("bounce rate 2.00%"), "{}", pass.detail);
        assert!(
            pass.detail
                .contains("over 100 resolved sends (100 sent of a slice of 100)"),
            "{}",
            pass.detail
        );
        // Five of the slice were suppressed: its 95 sends are all there is to judge by.
        let fewer = decided(judged(&plan, figures(100, 95, &counts(95, 0, 0)), 301));
        assert_eq!(fewer.outcome, CanaryOutcome::Passed);
        let fail = decided(judged(&plan, figures(100, 100, &counts(100, 0, 1)), 301));
        assert_eq!(fail.outcome, CanaryOutcome::Failed);
        assert!(
            fail.detail
                .contains("complaint rate 1.00% (1 of 100 resolved sends)"),
            "{}",
            fail.detail
        );
    }

    #[test]
    fn short_feedback_is_waited_for_as_long_again_then_fails_the_canary() {
        let plan = valid(CanaryDefinition {
            size: Some(100),
            wait_minutes: Some(5.0),
            ..CanaryDefinition::default()
        });
        let half = counts(50, 0, 0);
        assert_eq!(
            judged(&plan, figures(100, 100, &half), 310),
            Judgement::Short {
                look_again_at: at(370)
            }
        );
        assert_eq!(
            judged(&plan, figures(100, 100, &half), 590),
            Judgement::Short {
                look_again_at: at(600)
            }
        );
        let fail = decided(judged(&plan, figures(100, 100, &half), 600));
        assert_eq!(fail.outcome, CanaryOutcome::Failed);
        assert!(
            fail.detail
                .contains("only 50 of its 100 sends have a reported fate 10 minutes"),
            "{}",
            fail.detail
        );
        let none = decided(judged(&plan, figures(100, 0, &counts(0, 0, 0)), 600));
        assert!(
            none.detail.contains("none of its 100 recipients was sent"),
            "{}",
            none.detail
        );
    }
}
