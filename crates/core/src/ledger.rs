//! The delivery ledger: one record per (run, recipient). Its rules are what make "once" hold:
//! a recipient is sent to only after a claim that no one else holds, and a claim whose holder
//! vanished is never re-sent but becomes `uncertain`, because SES may have accepted it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::email::EmailAddress;
use crate::feedback::Marks;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// A sender holds this recipient and may be talking to SES right now.
    Claimed,
    /// SES accepted the message; the record carries its message id.
    Sent,
    /// SES refused this message for good (or it could not be rendered); carries the reason.
    Failed,
    /// Consent said no at send time: a suppressed or unsubscribed address.
    Suppressed,
    /// A claim was abandoned mid-send: SES may or may not have the message. Never resent.
    Uncertain,
    /// The run was cancelled before this recipient was sent to; it never will be.
    Cancelled,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Claimed,
        DeliveryState::Sent,
        DeliveryState::Failed,
        DeliveryState::Suppressed,
        DeliveryState::Uncertain,
        DeliveryState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, DeliveryState::Claimed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Claimed => "claimed",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
            DeliveryState::Suppressed => "suppressed",
            DeliveryState::Uncertain => "uncertain",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// The transitions the ledger allows. `None` is "no record yet". Everything not listed is
    /// refused, and in particular nothing leaves a terminal state: that is the "once" rule.
    pub fn may_follow(from: Option<DeliveryState>, to: DeliveryState) -> bool {
        use DeliveryState::*;
        matches!(
            (from, to),
            (None, Claimed)
                | (None, Suppressed)
                | (None, Cancelled)
                | (Some(Claimed), Sent)
                | (Some(Claimed), Failed)
                | (Some(Claimed), Uncertain)
        )
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown delivery state '{s}'"))
    }
}

/// A ledger record as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub email: EmailAddress,
    pub state: DeliveryState,
    /// Who holds (or last held) the claim: the invocation's request id.
    pub claim_token: Option<String>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub ses_message_id: Option<String>,
    pub reason: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// What SES reported about the message afterwards (delivered, opened, bounced, ...).
    #[serde(default)]
    pub marks: Marks,
    /// The latest bad news's detail: a bounce's diagnostic, a complaint's feedback type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_detail: Option<String>,
}

/// The final word on a claimed recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent { ses_message_id: String },
    Failed { reason: String },
}

impl Outcome {
    pub fn state(&self) -> DeliveryState {
        match self {
            Outcome::Sent { .. } => DeliveryState::Sent,
            Outcome::Failed { .. } => DeliveryState::Failed,
        }
    }
}

/// What a sender does when its claim finds a record already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingClaim {
    /// The claim is this attempt's own (its write was retried after a lost answer).
    Ours,
    /// Done before (a redelivered or duplicated message): nothing to do.
    AlreadyDone(DeliveryState),
    /// Another sender holds it and may still be sending: try again later.
    HeldElsewhere,
    /// The holder has been gone longer than any sender lives: SES may have the message, so
    /// record `uncertain` rather than risk a second copy.
    Abandoned,
}

/// Decides about an existing record. `claim_timeout` must exceed the sender's function
/// timeout, so a live holder is never taken for an abandoned one.
pub fn judge_existing(
    existing: &DeliveryRecord,
    token: &str,
    now: DateTime<Utc>,
    claim_timeout: Duration,
) -> ExistingClaim {
    if existing.state.is_terminal() {
        return ExistingClaim::AlreadyDone(existing.state);
    }
    if existing.claim_token.as_deref() == Some(token) {
        return ExistingClaim::Ours;
    }
    let claimed_at = existing.claimed_at.unwrap_or(existing.updated_at);
    if now - claimed_at >= claim_timeout {
        ExistingClaim::Abandoned
    } else {
        ExistingClaim::HeldElsewhere
    }
}

/// Counts per state of one run's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCounts {
    pub claimed: u64,
    pub sent: u64,
    pub failed: u64,
    pub suppressed: u64,
    pub uncertain: u64,
    #[serde(default)]
    pub cancelled: u64,
    pub first_sent_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
}

impl LedgerCounts {
    pub fn add(&mut self, state: DeliveryState) {
        match state {
            DeliveryState::Claimed => self.claimed += 1,
            DeliveryState::Sent => self.sent += 1,
            DeliveryState::Failed => self.failed += 1,
            DeliveryState::Suppressed => self.suppressed += 1,
            DeliveryState::Uncertain => self.uncertain += 1,
            DeliveryState::Cancelled => self.cancelled += 1,
        }
    }

    pub fn observe_sent_at(&mut self, at: DateTime<Utc>) {
        self.first_sent_at = Some(self.first_sent_at.map_or(at, |first| first.min(at)));
        self.last_sent_at = Some(self.last_sent_at.map_or(at, |last| last.max(at)));
    }

    /// Recipients in a terminal state.
    pub fn terminal(&self) -> u64 {
        self.sent + self.failed + self.suppressed + self.uncertain + self.cancelled
    }

    /// Emails per second between the first and the last accepted send.
    pub fn send_rate(&self) -> Option<f64> {
        let (first, last) = (self.first_sent_at?, self.last_sent_at?);
        let seconds = (last - first).num_milliseconds() as f64 / 1000.0;
        (seconds > 0.0).then(|| self.sent.saturating_sub(1) as f64 / seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryState::*;

    fn record(state: DeliveryState, claimed_secs_ago: i64, now: DateTime<Utc>) -> DeliveryRecord {
        DeliveryRecord {
            email: EmailAddress::parse("a@example.com").unwrap(),
            state,
            claim_token: Some("req-1".into()),
            claimed_at: Some(now - Duration::seconds(claimed_secs_ago)),
            ses_message_id: None,
            reason: None,
            updated_at: now - Duration::seconds(claimed_secs_ago),
            marks: Default::default(),
            feedback_detail: None,
        }
    }

    #[test]
    fn nothing_leaves_a_terminal_state() {
        for from in DeliveryState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in DeliveryState::ALL {
                assert!(
                    !DeliveryState::may_follow(Some(from), to),
                    "{from} -> {to} must be refused"
                );
            }
        }
    }

    #[test]
    fn a_claim_is_the_only_way_to_sent() {
        assert!(!DeliveryState::may_follow(None, Sent));
        assert!(DeliveryState::may_follow(None, Claimed));
        assert!(DeliveryState::may_follow(Some(Claimed), Sent));
        assert!(!DeliveryState::may_follow(Some(Claimed), Claimed));
        assert!(DeliveryState::may_follow(None, Suppressed));
    }

    #[test]
    fn when_the_record_is_terminal_the_recipient_is_skipped() {
        let now = Utc::now();
        for state in [Sent, Failed, Suppressed, Uncertain] {
            assert_eq!(
                judge_existing(
                    &record(state, 9999, now),
                    "req-2",
                    now,
                    Duration::seconds(120)
                ),
                ExistingClaim::AlreadyDone(state)
            );
        }
    }

    #[test]
    fn when_a_claim_is_fresh_it_is_left_to_its_holder() {
        let now = Utc::now();
        assert_eq!(
            judge_existing(
                &record(Claimed, 5, now),
                "req-2",
                now,
                Duration::seconds(120)
            ),
            ExistingClaim::HeldElsewhere
        );
    }

    #[test]
    fn when_the_claim_is_our_own_it_is_ours_to_send() {
        let now = Utc::now();
        assert_eq!(
            judge_existing(
                &record(Claimed, 5, now),
                "req-1",
                now,
                Duration::seconds(120)
            ),
            ExistingClaim::Ours
        );
    }

    #[test]
    fn when_a_claim_is_stale_it_becomes_uncertain_not_resent() {
        let now = Utc::now();
        assert_eq!(
            judge_existing(
                &record(Claimed, 120, now),
                "req-2",
                now,
                Duration::seconds(120)
            ),
            ExistingClaim::Abandoned
        );
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>(), Ok(state));
        }
        assert!("bounced".parse::<DeliveryState>().is_err());
    }

    #[test]
    fn counts_add_up_and_give_a_rate() {
        let mut counts = LedgerCounts::default();
        let t0 = Utc::now();
        for i in 0..11 {
            counts.add(Sent);
            counts.observe_sent_at(t0 + Duration::milliseconds(i * 100));
        }
        counts.add(Failed);
        counts.add(Claimed);
        assert_eq!(counts.terminal(), 12);
        let rate = counts.send_rate().unwrap();
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
    }
}
