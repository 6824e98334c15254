//! A run: one execution of a campaign, and the fan-out's progress through its audience.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::canary::{CanaryPlan, CanaryVerdict};
use crate::feedback::FeedbackCounts;
use crate::ids::{ListId, RunRef};
use crate::ledger::LedgerCounts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// The fan-out is reading the audience and enqueueing it.
    FanningOut,
    /// Everything is enqueued; senders are working through the queue.
    Sending,
    /// The account's 24-hour SES quota is used up: nothing is sent until it has room again
    /// (`resume_at` says when that is expected); then the run carries on by itself.
    WaitingForQuota,
    /// Stopped with a reason; nothing is sent until it is resumed.
    Paused,
    /// Stopped for good.
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::FanningOut => "fanning_out",
            RunState::Sending => "sending",
            RunState::WaitingForQuota => "waiting_for_quota",
            RunState::Paused => "paused",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Whether senders may send for a run in this state.
    pub fn allows_sending(self) -> bool {
        matches!(self, RunState::FanningOut | RunState::Sending)
    }

    /// Whether the fan-out carries on enqueueing: a run waiting for quota is still enqueued,
    /// its messages wait on the queue.
    pub fn allows_fanout(self) -> bool {
        self.allows_sending() || self == RunState::WaitingForQuota
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            RunState::FanningOut,
            RunState::Sending,
            RunState::WaitingForQuota,
            RunState::Paused,
            RunState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| format!("unknown run state '{s}'"))
    }
}

/// What the fan-out has done so far. Saved with the cursor after each page, so totals never
/// count a page twice even when a page is enqueued again after a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutProgress {
    pub pages: u64,
    /// Contacts read from the list.
    pub contacts_read: u64,
    /// Contacts the segment selected: the run's audience.
    pub selected: u64,
    /// Contacts the segment left out.
    pub filtered: u64,
    /// Contacts the segment could not judge (an attribute it needs is missing or mistyped).
    pub segment_errors: u64,
    /// Stored items that are not readable contacts.
    pub unreadable: u64,
    /// Contacts the segment selected that another run mailed within the campaign's
    /// `skip_mailed_within_days`: left out of the audience.
    #[serde(default)]
    pub recently_mailed: u64,
    /// SQS messages written.
    pub messages: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: RunRef,
    pub list: ListId,
    pub state: RunState,
    pub pause_reason: Option<String>,
    /// For a run waiting for quota: when SES should have room again.
    #[serde(default)]
    pub resume_at: Option<DateTime<Utc>>,
    pub progress: FanoutProgress,
    /// Where the fan-out continues: an opaque page token of the contact store.
    pub cursor: Option<String>,
    pub fanout_complete: bool,
    pub started_at: DateTime<Utc>,
    pub fanout_completed_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// What SES has reported about the run's mail so far.
    #[serde(default)]
    pub feedback: FeedbackCounts,
    /// The run's canary slice, copied from its campaign at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPlan>,
    /// Sends of the canary slice so far, counted by the senders for its judge.
    #[serde(default)]
    pub canary_sent: u64,
    /// The slice's verdict, once judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_verdict: Option<CanaryVerdict>,
}

impl RunRecord {
    pub fn new(run: RunRef, list: ListId, now: DateTime<Utc>) -> RunRecord {
        RunRecord {
            run,
            list,
            state: RunState::FanningOut,
            pause_reason: None,
            resume_at: None,
            progress: FanoutProgress::default(),
            cursor: None,
            fanout_complete: false,
            started_at: now,
            fanout_completed_at: None,
            lease_owner: None,
            lease_until: None,
            feedback: FeedbackCounts::default(),
            canary: None,
            canary_sent: 0,
            canary_verdict: None,
        }
    }

    /// The same record, with the canary slice `plan`.
    pub fn with_canary(mut self, plan: Option<CanaryPlan>) -> RunRecord {
        self.canary = plan;
        self
    }
}

/// A run as an operator sees it: the fan-out's record with the ledger's counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub record: RunRecord,
    pub counts: LedgerCounts,
}

impl RunStatus {
    /// Every selected recipient has reached a terminal state.
    pub fn is_finished(&self) -> bool {
        self.record.fanout_complete && self.counts.terminal() >= self.record.progress.selected
    }

    /// Recipients not yet in a terminal state (queued, in flight, or held by a pause).
    pub fn outstanding(&self) -> u64 {
        self.record
            .progress
            .selected
            .saturating_sub(self.counts.terminal())
    }

    /// A one-word summary: the stored state, or `completed` once every recipient is done.
    pub fn phase(&self) -> &'static str {
        if self.record.state.allows_sending() && self.is_finished() {
            "completed"
        } else {
            self.record.state.as_str()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CampaignId, RunId};

    fn status(selected: u64, sent: u64, complete: bool) -> RunStatus {
        let run = RunRef::new(
            CampaignId::parse("c").unwrap(),
            RunId::from_scheduled_time(Utc::now()),
        );
        let mut record = RunRecord::new(run, ListId::parse("l").unwrap(), Utc::now());
        record.progress.selected = selected;
        record.fanout_complete = complete;
        record.state = RunState::Sending;
        let counts = LedgerCounts {
            sent,
            ..LedgerCounts::default()
        };
        RunStatus { record, counts }
    }

    #[test]
    fn a_run_is_finished_only_when_the_fanout_is_done_and_every_recipient_is_terminal() {
        assert!(!status(10, 10, false).is_finished());
        assert!(!status(10, 9, true).is_finished());
        assert!(status(10, 10, true).is_finished());
        assert_eq!(status(10, 10, true).phase(), "completed");
        assert_eq!(status(10, 4, true).outstanding(), 6);
    }

    #[test]
    fn paused_and_cancelled_runs_do_not_send() {
        assert!(RunState::FanningOut.allows_sending());
        assert!(RunState::Sending.allows_sending());
        assert!(!RunState::Paused.allows_sending());
        assert!(!RunState::Cancelled.allows_sending());
        assert_eq!("paused".parse::<RunState>(), Ok(RunState::Paused));
        assert!(!RunState::WaitingForQuota.allows_sending());
        assert!(RunState::WaitingForQuota.allows_fanout());
        assert!(!RunState::Paused.allows_fanout());
        assert_eq!(
            "waiting_for_quota".parse::<RunState>(),
            Ok(RunState::WaitingForQuota)
        );
    }
}
