//! What SES's feedback means for hikyaku: which addresses are suppressed, what a recipient's
//! ledger record learns, which run counters move, and when a run has hurt the account enough
//! to pause itself. Pure rules here; `feedback_flow` applies them through the ports.

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::email::EmailAddress;
use crate::notification::{Details, Notification};

/// How SES classed a bounce, as far as policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceClass {
    /// `Permanent`, any sub-type: the address will never take mail.
    Hard,
    /// `Transient` other than `General`: mailbox full, message too large, content rejected.
    Soft,
    /// `Transient`/`General`: an auto-reply (out of office). Not a failure; not counted.
    AutoReply,
    /// `Undetermined`: SES could not tell. Recorded and counted, never suppressing.
    Undetermined,
}

impl BounceClass {
    pub fn of(bounce_type: &str, sub_type: &str) -> BounceClass {
        match (bounce_type, sub_type) {
            ("Permanent", _) => BounceClass::Hard,
            ("Transient", "General") => BounceClass::AutoReply,
            ("Transient", _) => BounceClass::Soft,
            _ => BounceClass::Undetermined,
        }
    }
}

/// What one notification says about one recipient of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feedback {
    Delivered,
    Opened,
    Clicked {
        link: Option<String>,
    },
    Bounced {
        class: BounceClass,
        /// `Permanent/General`, `Transient/MailboxFull`, ...
        kind: String,
        diagnostic: Option<String>,
    },
    Complained {
        feedback_type: Option<String>,
    },
    Rejected {
        reason: Option<String>,
    },
    RenderingFailed {
        error: Option<String>,
    },
    Delayed {
        delay_type: Option<String>,
    },
}

/// The per-recipient facts a ledger record keeps, each at most once (the first time it was
/// seen). Recording a mark is commutative, so events arriving out of order or at the same time
/// never undo each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    Delivered,
    Opened,
    Clicked,
    HardBounced,
    SoftBounced,
    AutoReplied,
    UndeterminedBounce,
    Complained,
    Rejected,
    RenderingFailed,
    Delayed,
}

impl Mark {
    pub const ALL: [Mark; 11] = [
        Mark::Delivered,
        Mark::Opened,
        Mark::Clicked,
        Mark::HardBounced,
        Mark::SoftBounced,
        Mark::AutoReplied,
        Mark::UndeterminedBounce,
        Mark::Complained,
        Mark::Rejected,
        Mark::RenderingFailed,
        Mark::Delayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Delivered => "delivered",
            Mark::Opened => "opened",
            Mark::Clicked => "clicked",
            Mark::HardBounced => "hard_bounced",
            Mark::SoftBounced => "soft_bounced",
            Mark::AutoReplied => "auto_replied",
            Mark::UndeterminedBounce => "undetermined_bounce",
            Mark::Complained => "complained",
            Mark::Rejected => "rejected",
            Mark::RenderingFailed => "rendering_failed",
            Mark::Delayed => "delayed",
        }
    }

    /// The outcome a report shows when several marks are present: the worst news wins, so a
    /// late `Delivery` never hides a bounce and a complaint outranks everything.
    fn rank(self) -> u8 {
        match self {
            Mark::Opened | Mark::Clicked | Mark::AutoReplied => 0,
            Mark::Delayed => 1,
            Mark::Delivered => 2,
            Mark::UndeterminedBounce => 3,
            Mark::SoftBounced => 4,
            Mark::RenderingFailed | Mark::Rejected => 5,
            Mark::HardBounced => 6,
            Mark::Complained => 7,
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Feedback {
    pub fn mark(&self) -> Mark {
        match self {
            Feedback::Delivered => Mark::Delivered,
            Feedback::Opened => Mark::Opened,
            Feedback::Clicked { .. } => Mark::Clicked,
            Feedback::Bounced { class, .. } => match class {
                BounceClass::Hard => Mark::HardBounced,
                BounceClass::Soft => Mark::SoftBounced,
                BounceClass::AutoReply => Mark::AutoReplied,
                BounceClass::Undetermined => Mark::UndeterminedBounce,
            },
            Feedback::Complained { .. } => Mark::Complained,
            Feedback::Rejected { .. } => Mark::Rejected,
            Feedback::RenderingFailed { .. } => Mark::RenderingFailed,
            Feedback::Delayed { .. } => Mark::Delayed,
        }
    }

    /// The detail worth keeping on the record: a bounce's kind and diagnostic, a complaint's
    /// type, a rejection's reason, a clicked link.
    pub fn detail(&self) -> Option<String> {
        match self {
            Feedback::Bounced {
                kind, diagnostic, ..
            } => Some(match diagnostic {
                Some(diagnostic) => format!("{kind}: {diagnostic}"),
                None => kind.clone(),
            }),
            Feedback::Complained { feedback_type } => feedback_type.clone(),
            Feedback::Rejected { reason } => reason.clone(),
            Feedback::RenderingFailed { error } => error.clone(),
            Feedback::Clicked { link } => link.clone(),
            Feedback::Delayed { delay_type } => delay_type.clone(),
            Feedback::Delivered | Feedback::Opened => None,
        }
    }
}

impl Feedback {
    /// The detail a ledger record keeps: only bad news explains an outcome (a bounce's
    /// diagnostic, a complaint's type, a rejection's reason); opens and clicks keep none.
    pub fn kept_detail(&self) -> Option<String> {
        match self {
            Feedback::Bounced { .. }
            | Feedback::Complained { .. }
            | Feedback::Rejected { .. }
            | Feedback::RenderingFailed { .. } => self.detail(),
            _ => None,
        }
    }
}

/// The marks a ledger record holds, with when each was first seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks(pub Vec<(Mark, DateTime<Utc>)>);

impl Marks {
    /// Adds `mark` first seen `at`; a mark already held keeps its first time.
    pub fn record(&mut self, mark: Mark, at: DateTime<Utc>) {
        if !self.has(mark) {
            self.0.push((mark, at));
        }
    }

    pub fn has(&self, mark: Mark) -> bool {
        self.0.iter().any(|(m, _)| *m == mark)
    }

    pub fn at(&self, mark: Mark) -> Option<DateTime<Utc>> {
        self.0.iter().find(|(m, _)| *m == mark).map(|(_, at)| *at)
    }

    /// The recipient's outcome as a report states it, if SES has said anything yet.
    pub fn outcome(&self) -> Option<Mark> {
        self.0
            .iter()
            .map(|(mark, _)| *mark)
            .filter(|mark| mark.rank() > 0)
            .max_by_key(|mark| mark.rank())
    }
}

/// A run's feedback counters. Recipient counters (`delivered`, `opened`, ...) count each
/// recipient once; `opens` and `clicks` count every event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackCounts {
    pub delivered: u64,
    pub opened: u64,
    pub clicked: u64,
    pub opens: u64,
    pub clicks: u64,
    pub hard_bounced: u64,
    pub soft_bounced: u64,
    pub auto_replied: u64,
    pub undetermined_bounced: u64,
    pub complained: u64,
    pub rejected: u64,
    pub rendering_failed: u64,
    pub delayed: u64,
}

impl FeedbackCounts {
    /// Every counter by name, for storage and display.
    pub fn fields(&self) -> [(&'static str, u64); 13] {
        [
            ("delivered", self.delivered),
            ("opened", self.opened),
            ("clicked", self.clicked),
            ("opens", self.opens),
            ("clicks", self.clicks),
            ("hard_bounced", self.hard_bounced),
            ("soft_bounced", self.soft_bounced),
            ("auto_replied", self.auto_replied),
            ("undetermined_bounced", self.undetermined_bounced),
            ("complained", self.complained),
            ("rejected", self.rejected),
            ("rendering_failed", self.rendering_failed),
            ("delayed", self.delayed),
        ]
    }

    /// Sets a counter by its name in [`fields`](Self::fields); `false` for an unknown name.
    pub fn set(&mut self, name: &str, value: u64) -> bool {
        let slot = match name {
            "delivered" => &mut self.delivered,
            "opened" => &mut self.opened,
            "clicked" => &mut self.clicked,
            "opens" => &mut self.opens,
            "clicks" => &mut self.clicks,
            "hard_bounced" => &mut self.hard_bounced,
            "soft_bounced" => &mut self.soft_bounced,
            "auto_replied" => &mut self.auto_replied,
            "undetermined_bounced" => &mut self.undetermined_bounced,
            "complained" => &mut self.complained,
            "rejected" => &mut self.rejected,
            "rendering_failed" => &mut self.rendering_failed,
            "delayed" => &mut self.delayed,
            _ => return false,
        };
        *slot = value;
        true
    }

    /// Adds every counter of `other`.
    pub fn add(&mut self, other: &FeedbackCounts) {
        for (name, value) in other.fields() {
            let current = self
                .fields()
                .into_iter()
                .find_map(|(n, v)| (n == name).then_some(v))
                .unwrap_or(0);
            self.set(name, current.saturating_add(value));
        }
    }

    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|(_, value)| *value == 0)
    }

    /// What recording `feedback` moves, given the marks the recipient had before: a recipient
    /// counter moves the first time its mark appears; opens and clicks count every event.
    pub fn delta(feedback: &Feedback, before: &Marks) -> FeedbackCounts {
        let mut delta = FeedbackCounts::default();
        match feedback {
            Feedback::Opened => delta.opens = 1,
            Feedback::Clicked { .. } => delta.clicks = 1,
            _ => {}
        }
        let mark = feedback.mark();
        if !before.has(mark) {
            let name = match mark {
                Mark::Delivered => "delivered",
                Mark::Opened => "opened",
                Mark::Clicked => "clicked",
                Mark::HardBounced => "hard_bounced",
                Mark::SoftBounced => "soft_bounced",
                Mark::AutoReplied => "auto_replied",
                Mark::UndeterminedBounce => "undetermined_bounced",
                Mark::Complained => "complained",
                Mark::Rejected => "rejected",
                Mark::RenderingFailed => "rendering_failed",
                Mark::Delayed => "delayed",
            };
            delta.set(name, 1);
        }
        delta
    }

    /// Sends whose fate SES has reported: the denominator of the rates. Messages still in
    /// flight are left out, so early in a run the rates are not diluted by mail that may yet
    /// bounce, and a guardrail trips sooner rather than later.
    pub fn resolved_sends(&self) -> u64 {
        self.delivered
            .max(self.complained)
            .saturating_add(self.hard_bounced)
            .saturating_add(self.soft_bounced)
            .saturating_add(self.undetermined_bounced)
            .saturating_add(self.rejected)
    }

    /// Hard bounces over resolved sends: SES's own bounce rate counts hard bounces only.
    pub fn bounce_rate(&self) -> Option<f64> {
        rate(self.hard_bounced, self.resolved_sends())
    }

    pub fn complaint_rate(&self) -> Option<f64> {
        rate(self.complained, self.resolved_sends())
    }
}

fn rate(count: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| count as f64 / of as f64)
}

/// A run's reputation limits: the campaign's rates, judged once enough sends are resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guardrails {
    pub max_bounce_rate: f64,
    pub max_complaint_rate: f64,
    /// Below this many resolved sends one event moves a rate too much to judge by.
    pub min_sends: u64,
}

/// A limit a run went over: what pauses it, with the figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Breach {
    pub metric: &'static str,
    pub count: u64,
    pub sends: u64,
    pub rate: f64,
    pub limit: f64,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:.2}% ({} of {} resolved sends) is above the campaign's limit of {:.2}%",
            self.metric,
            self.rate * 100.0,
            self.count,
            self.sends,
            self.limit * 100.0
        )
    }
}

impl Guardrails {
    /// The first limit `counts` goes over, complaints first (the account's tighter limit).
    pub fn breach(&self, counts: &FeedbackCounts) -> Option<Breach> {
        let sends = counts.resolved_sends();
        if sends < self.min_sends.max(1) {
            return None;
        }
        [
            ("complaint rate", counts.complained, self.max_complaint_rate),
            ("bounce rate", counts.hard_bounced, self.max_bounce_rate),
        ]
        .into_iter()
        .find_map(|(metric, count, limit)| {
            let rate = count as f64 / sends as f64;
            (rate > limit).then_some(Breach {
                metric,
                count,
                sends,
                rate,
                limit,
            })
        })
    }
}

/// An address to suppress, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuppressionOrder {
    /// `hard bounce`, `complaint`, `soft bounces`.
    pub reason: String,
    /// The bounce's kind and diagnostic, or the complaint's type.
    pub diagnostic: Option<String>,
}

/// What the rules say to do with one recipient's feedback, before any history is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressRule {
    Suppress(SuppressionOrder),
    /// Count toward the soft-bounce policy.
    SoftBounce,
    /// A delivery: clears the way in the soft-bounce history.
    Delivered,
    Nothing,
}

pub fn address_rule(feedback: &Feedback) -> AddressRule {
    match feedback {
        Feedback::Bounced {
            class: BounceClass::Hard,
            kind,
            diagnostic,
        } => AddressRule::Suppress(SuppressionOrder {
            reason: "hard bounce".into(),
            diagnostic: Some(match diagnostic {
                Some(diagnostic) => format!("{kind}: {diagnostic}"),
                None => kind.clone(),
            }),
        }),
        Feedback::Bounced {
            class: BounceClass::Soft,
            ..
        } => AddressRule::SoftBounce,
        Feedback::Complained { feedback_type } => {
            if feedback_type.as_deref() == Some("not-spam") {
                AddressRule::Nothing
            } else {
                AddressRule::Suppress(SuppressionOrder {
                    reason: "complaint".into(),
                    diagnostic: Some(format!(
                        "feedback type {}",
                        feedback_type.as_deref().unwrap_or("unspecified")
                    )),
                })
            }
        }
        Feedback::Delivered => AddressRule::Delivered,
        _ => AddressRule::Nothing,
    }
}

/// The soft-bounce policy: suppress an address once `limit` of its last `window` resolved sends
/// bounced softly. A delivery in between pushes old bounces out of the window, so a mailbox
/// that was full for a day recovers, while one that keeps bouncing is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftBouncePolicy {
    pub limit: u32,
    pub window: u32,
}

impl Default for SoftBouncePolicy {
    fn default() -> Self {
        SoftBouncePolicy {
            limit: 3,
            window: 5,
        }
    }
}

impl SoftBouncePolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.limit == 0 || self.window == 0 {
            return Err("the soft-bounce limit and window must be at least 1".into());
        }
        if self.limit > self.window {
            return Err(format!(
                "the soft-bounce limit ({}) cannot exceed its window ({})",
                self.limit, self.window
            ));
        }
        if self.window > 50 {
            return Err(format!(
                "the soft-bounce window ({}) is above 50 sends",
                self.window
            ));
        }
        Ok(())
    }
}

/// One resolved send in an address's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressOutcome {
    Delivered,
    SoftBounce,
}

/// An address's recent outcomes, newest last, and the event ids already counted (so a
/// duplicate notification is not counted twice). Stored as text: `D` delivered, `S` soft
/// bounce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressHistory {
    pub recent: VecDeque<AddressOutcome>,
    pub events: VecDeque<String>,
}

/// Event ids remembered per address.
const HISTORY_EVENTS_KEPT: usize = 20;

impl AddressHistory {
    pub fn encode(&self) -> String {
        self.recent
            .iter()
            .map(|outcome| match outcome {
                AddressOutcome::Delivered => 'D',
                AddressOutcome::SoftBounce => 'S',
            })
            .collect()
    }

    pub fn decode(text: &str, events: Vec<String>) -> AddressHistory {
        AddressHistory {
            recent: text
                .chars()
                .filter_map(|c| match c {
                    'D' => Some(AddressOutcome::Delivered),
                    'S' => Some(AddressOutcome::SoftBounce),
                    _ => None,
                })
                .collect(),
            events: events.into(),
        }
    }

    pub fn soft_bounces(&self) -> usize {
        self.recent
            .iter()
            .filter(|o| **o == AddressOutcome::SoftBounce)
            .count()
    }

    /// Records `outcome` for `event_id`; `None` when that event was counted already, else
    /// whether the address is now to be suppressed.
    pub fn record(
        &mut self,
        event_id: &str,
        outcome: AddressOutcome,
        policy: &SoftBouncePolicy,
    ) -> Option<bool> {
        if self.events.iter().any(|seen| seen == event_id) {
            return None;
        }
        self.events.push_back(event_id.to_owned());
        while self.events.len() > HISTORY_EVENTS_KEPT {
            self.events.pop_front();
        }
        self.recent.push_back(outcome);
        while self.recent.len() > policy.window as usize {
            self.recent.pop_front();
        }
        Some(outcome == AddressOutcome::SoftBounce && self.soft_bounces() >= policy.limit as usize)
    }
}

/// Applies `outcome` to `history` (absent: a new one); the decision and the history to store.
/// Shared by the suppression stores so the rule is in one place.
pub fn next_history(
    history: Option<AddressHistory>,
    event_id: &str,
    outcome: AddressOutcome,
    policy: &SoftBouncePolicy,
) -> Option<(AddressHistory, bool)> {
    if history.is_none() && outcome == AddressOutcome::Delivered {
        return None;
    }
    let mut history = history.unwrap_or_default();
    let suppress = history.record(event_id, outcome, policy)?;
    Some((history, suppress))
}

/// Why an address that unsubscribed must not get a campaign sent under `topic`, if it must
/// not: unsubscribing from the whole contact list covers every topic of it.
pub fn unsubscribe_reason(
    topic: &crate::ports::ListTopic,
    unsubscribed_all: bool,
    opted_out_of_topic: bool,
) -> Option<String> {
    if unsubscribed_all {
        return Some(list_unsubscribe_reason(&topic.contact_list));
    }
    match &topic.topic {
        Some(name) if opted_out_of_topic => {
            Some(topic_unsubscribe_reason(&topic.contact_list, name))
        }
        _ => None,
    }
}

/// The reason an unsubscribe from a whole contact list is shown with.
pub fn list_unsubscribe_reason(contact_list: &str) -> String {
    format!("unsubscribed from contact list {contact_list}")
}

/// The reason an opt-out of one topic is shown with.
pub fn topic_unsubscribe_reason(contact_list: &str, topic: &str) -> String {
    format!("unsubscribed from topic {topic} of {contact_list}")
}

/// A contact's subscription preferences for one SES contact list, as a Subscription event
/// states them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferenceChange {
    pub email: EmailAddress,
    pub contact_list: String,
    pub unsubscribe_all: bool,
    pub opted_in: Vec<String>,
    pub opted_out: Vec<String>,
    pub at: DateTime<Utc>,
}

/// Per-recipient feedback a notification carries, with addresses as SES wrote them, and what
/// could not be read. A notification naming several recipients yields one entry each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub feedback: Vec<(String, Feedback)>,
    pub preferences: Option<(String, crate::notification::Subscription)>,
}

/// What a notification says per recipient. Send events say nothing the ledger does not know
/// already (the sender recorded the send), so they yield nothing and cost no write.
pub fn read_feedback(notification: &Notification) -> Reading {
    let everyone = || notification.mail.destination.clone();
    // ISPs often redact who complained, and delays may not say whom: then it is every
    // recipient of the message.
    let named_or_everyone = |named: Vec<String>| {
        if named.is_empty() { everyone() } else { named }
    };
    let each = |addresses: Vec<String>, feedback: Feedback| -> Vec<(String, Feedback)> {
        addresses
            .into_iter()
            .map(|address| (address, feedback.clone()))
            .collect()
    };
    let feedback = match &notification.details {
        Details::Bounce(bounce) => {
            let class = BounceClass::of(&bounce.bounce_type, &bounce.bounce_sub_type);
            let kind = format!("{}/{}", bounce.bounce_type, bounce.bounce_sub_type);
            bounce
                .bounced_recipients
                .iter()
                .map(|r| {
                    (
                        r.email_address.clone(),
                        Feedback::Bounced {
                            class,
                            kind: kind.clone(),
                            diagnostic: r.diagnostic_code.clone().or_else(|| r.status.clone()),
                        },
                    )
                })
                .collect()
        }
        Details::Complaint(complaint) => {
            let named = complaint
                .complained_recipients
                .iter()
                .map(|r| r.email_address.clone())
                .collect();
            each(
                named_or_everyone(named),
                Feedback::Complained {
                    feedback_type: complaint.complaint_feedback_type.clone(),
                },
            )
        }
        Details::Delivery(delivery) => each(
            named_or_everyone(delivery.recipients.clone()),
            Feedback::Delivered,
        ),
        Details::Open(_) => each(everyone(), Feedback::Opened),
        Details::Click(click) => each(
            everyone(),
            Feedback::Clicked {
                link: click.link.clone(),
            },
        ),
        Details::Reject(reject) => each(
            everyone(),
            Feedback::Rejected {
                reason: reject.reason.clone(),
            },
        ),
        Details::RenderingFailure(failure) => each(
            everyone(),
            Feedback::RenderingFailed {
                error: failure.error_message.clone(),
            },
        ),
        Details::DeliveryDelay(delay) => {
            let named = delay
                .delayed_recipients
                .iter()
                .map(|r| r.email_address.clone())
                .collect();
            each(
                named_or_everyone(named),
                Feedback::Delayed {
                    delay_type: delay.delay_type.clone(),
                },
            )
        }
        Details::Subscription(subscription) => {
            return Reading {
                feedback: Vec::new(),
                preferences: notification
                    .mail
                    .destination
                    .first()
                    .map(|address| (address.clone(), subscription.clone())),
            };
        }
        Details::Send | Details::Unknown(_) => Vec::new(),
    };
    Reading {
        feedback,
        preferences: None,
    }
}

/// The preference change a Subscription event states, for an address already parsed.
pub fn preference_change(
    email: EmailAddress,
    subscription: &crate::notification::Subscription,
    at: DateTime<Utc>,
) -> Result<PreferenceChange, String> {
    let contact_list = subscription
        .contact_list
        .clone()
        .filter(|list| !list.is_empty())
        .ok_or("the Subscription event names no contact list")?;
    let preferences = subscription
        .new_topic_preferences
        .clone()
        .ok_or("the Subscription event has no newTopicPreferences")?;
    let mut change = PreferenceChange {
        email,
        contact_list,
        unsubscribe_all: preferences.unsubscribe_all,
        opted_in: Vec::new(),
        opted_out: Vec::new(),
        at,
    };
    for topic in preferences.topic_subscription_status {
        // Events spell them OptIn/OptOut; the API OPT_IN/OPT_OUT. Accept both.
        match topic
            .subscription_status
            .to_ascii_lowercase()
            .replace('_', "")
            .as_str()
        {
            "optin" => change.opted_in.push(topic.topic_name),
            "optout" => change.opted_out.push(topic.topic_name),
            other => {
                return Err(format!(
                    "topic '{}' has an unknown subscription status '{other}'",
                    topic.topic_name
                ));
            }
        }
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::Notification;

    fn feedback_of(json: &str) -> Vec<(String, Feedback)> {
        read_feedback(&Notification::parse(json).unwrap()).feedback
    }

    const MAIL: &str =
        r#""mail":{"messageId":"m","destination":["a@example.com","b@example.com"]}"#;

    fn bounce(kind: &str, sub: &str) -> Feedback {
        feedback_of(&format!(
            r#"{{"eventType":"Bounce","bounce":{{"bounceType":"{kind}","bounceSubType":"{sub}","bouncedRecipients":[{{"emailAddress":"a@example.com","diagnosticCode":"smtp; 550"}}]}},{MAIL}}}"#
        ))
        .remove(0)
        .1
    }

    #[test]
    fn every_permanent_bounce_suppresses_with_its_kind_and_diagnostic() {
        for sub in [
            "General",
            "NoEmail",
            "Suppressed",
            "OnAccountSuppressionList",
        ] {
            let rule = address_rule(&bounce("Permanent", sub));
            assert_eq!(
                rule,
                AddressRule::Suppress(SuppressionOrder {
                    reason: "hard bounce".into(),
                    diagnostic: Some(format!("Permanent/{sub}: smtp; 550")),
                })
            );
        }
    }

    #[test]
    fn transient_bounces_count_but_auto_replies_do_not() {
        for sub in ["MailboxFull", "MessageTooLarge", "ContentRejected"] {
            assert_eq!(
                address_rule(&bounce("Transient", sub)),
                AddressRule::SoftBounce
            );
        }
        let auto_reply = bounce("Transient", "General");
        assert_eq!(auto_reply.mark(), Mark::AutoReplied);
        assert_eq!(address_rule(&auto_reply), AddressRule::Nothing);
    }

    #[test]
    fn undetermined_bounces_are_recorded_not_suppressed() {
        let undetermined = bounce("Undetermined", "Undetermined");
        assert_eq!(undetermined.mark(), Mark::UndeterminedBounce);
        assert_eq!(address_rule(&undetermined), AddressRule::Nothing);
        let delta = FeedbackCounts::delta(&undetermined, &Marks::default());
        assert_eq!(delta.undetermined_bounced, 1);
    }

    #[test]
    fn a_complaint_suppresses_every_named_recipient_unless_not_spam() {
        let complaint = |kind: &str, named: &str| {
            feedback_of(&format!(
                r#"{{"eventType":"Complaint","complaint":{{"complaintFeedbackType":"{kind}","complainedRecipients":[{named}]}},{MAIL}}}"#
            ))
        };
        let both = complaint(
            "abuse",
            r#"{"emailAddress":"a@example.com"},{"emailAddress":"b@example.com"}"#,
        );
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|(_, f)| matches!(
            address_rule(f),
            AddressRule::Suppress(ref order) if order.reason == "complaint"
        )));
        let not_spam = complaint("not-spam", r#"{"emailAddress":"a@example.com"}"#);
        assert_eq!(address_rule(&not_spam[0].1), AddressRule::Nothing);
        assert_eq!(not_spam[0].1.mark(), Mark::Complained);
        // Redacted: every recipient of the message.
        assert_eq!(complaint("abuse", "").len(), 2);
    }

    #[test]
    fn engagement_and_delivery_events_reach_each_recipient() {
        let open = feedback_of(&format!(r#"{{"eventType":"Open","open":{{}},{MAIL}}}"#));
        assert_eq!(open.len(), 2);
        assert_eq!(open[0].1, Feedback::Opened);
        let click = feedback_of(&format!(
            r#"{{"eventType":"Click","click":{{"link":"https://x.example/"}},{MAIL}}}"#
        ));
        assert_eq!(click[0].1.detail().as_deref(), Some("https://x.example/"));
        let delivery = feedback_of(&format!(
            r#"{{"eventType":"Delivery","delivery":{{"recipients":["b@example.com"]}},{MAIL}}}"#
        ));
        assert_eq!(
            delivery,
            vec![("b@example.com".into(), Feedback::Delivered)]
        );
        let send = feedback_of(&format!(r#"{{"eventType":"Send","send":{{}},{MAIL}}}"#));
        assert!(send.is_empty());
        for (kind, body, mark) in [
            (
                "Reject",
                r#""reject":{"reason":"Bad content"}"#,
                Mark::Rejected,
            ),
            (
                "Rendering Failure",
                r#""failure":{"errorMessage":"x"}"#,
                Mark::RenderingFailed,
            ),
            ("DeliveryDelay", r#""deliveryDelay":{}"#, Mark::Delayed),
        ] {
            let read = feedback_of(&format!(r#"{{"eventType":"{kind}",{body},{MAIL}}}"#));
            assert_eq!(read[0].1.mark(), mark, "{kind}");
        }
    }

    #[test]
    fn recipient_counters_move_once_and_totals_every_time() {
        let mut marks = Marks::default();
        let first = FeedbackCounts::delta(&Feedback::Opened, &marks);
        assert_eq!((first.opened, first.opens), (1, 1));
        marks.0.push((Mark::Opened, Utc::now()));
        let again = FeedbackCounts::delta(&Feedback::Opened, &marks);
        assert_eq!((again.opened, again.opens), (0, 1));
        let delivered_again = FeedbackCounts::delta(
            &Feedback::Delivered,
            &Marks(vec![(Mark::Delivered, Utc::now())]),
        );
        assert!(delivered_again.is_zero());
    }

    #[test]
    fn the_worst_news_is_the_outcome_whatever_the_order() {
        let now = Utc::now();
        let marks = Marks(vec![
            (Mark::HardBounced, now),
            (Mark::Delivered, now),
            (Mark::Opened, now),
        ]);
        assert_eq!(marks.outcome(), Some(Mark::HardBounced));
        let complained = Marks(vec![(Mark::Delivered, now), (Mark::Complained, now)]);
        assert_eq!(complained.outcome(), Some(Mark::Complained));
        assert_eq!(Marks(vec![(Mark::Opened, now)]).outcome(), None);
    }

    #[test]
    fn guardrails_wait_for_enough_sends_then_pause_on_the_first_breach() {
        let rails = Guardrails {
            max_bounce_rate: 0.05,
            max_complaint_rate: 0.001,
            min_sends: 100,
        };
        let mut counts = FeedbackCounts {
            delivered: 50,
            hard_bounced: 10,
            ..FeedbackCounts::default()
        };
        assert_eq!(rails.breach(&counts), None, "60 resolved sends: too few");
        counts.delivered = 90;
        let breach = rails.breach(&counts).unwrap();
        assert_eq!(breach.metric, "bounce rate");
        assert_eq!((breach.count, breach.sends), (10, 100));
        assert_eq!(
            breach.to_string(),
            "bounce rate 10.00% (10 of 100 resolved sends) is above the campaign's limit of 5.00%"
        );
        counts.hard_bounced = 5;
        counts.delivered = 95;
        assert_eq!(
            rails.breach(&counts),
            None,
            "exactly at the limit is not above it"
        );
        counts.complained = 1;
        assert_eq!(rails.breach(&counts).unwrap().metric, "complaint rate");
    }

    #[test]
    fn soft_bounces_suppress_at_three_of_the_last_five_and_deliveries_dilute_them() {
        let policy = SoftBouncePolicy::default();
        let mut history = AddressHistory::default();
        use AddressOutcome::*;
        assert_eq!(history.record("e1", SoftBounce, &policy), Some(false));
        assert_eq!(history.record("e2", SoftBounce, &policy), Some(false));
        assert_eq!(history.record("e2", SoftBounce, &policy), None, "duplicate");
        for (i, outcome) in [Delivered, Delivered, Delivered].into_iter().enumerate() {
            assert_eq!(
                history.record(&format!("d{i}"), outcome, &policy),
                Some(false)
            );
        }
        // S S D D D, then S: the window holds S D D D S: two.
        assert_eq!(history.record("e3", SoftBounce, &policy), Some(false));
        assert_eq!(history.encode(), "SDDDS");
        assert_eq!(
            history.record("e4", SoftBounce, &policy),
            Some(false),
            "DDDSS"
        );
        assert_eq!(
            history.record("e5", SoftBounce, &policy),
            Some(true),
            "DDSSS"
        );
        let decoded = AddressHistory::decode(&history.encode(), vec!["e5".into()]);
        assert_eq!(decoded.soft_bounces(), 3);
        assert!(
            SoftBouncePolicy {
                limit: 6,
                window: 5
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn subscription_events_become_preference_changes() {
        let n = Notification::parse(
            r#"{"eventType":"Subscription","mail":{"messageId":"m","destination":["a@example.com"]},"subscription":{"contactList":"news","newTopicPreferences":{"unsubscribeAll":false,"topicSubscriptionStatus":[{"topicName":"weekly","subscriptionStatus":"OptOut"},{"topicName":"offers","subscriptionStatus":"OPT_IN"}]}}}"#,
        )
        .unwrap();
        let (address, subscription) = read_feedback(&n).preferences.unwrap();
        assert_eq!(address, "a@example.com");
        let change = preference_change(
            EmailAddress::parse(&address).unwrap(),
            &subscription,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(change.contact_list, "news");
        assert_eq!(change.opted_out, vec!["weekly".to_owned()]);
        assert_eq!(change.opted_in, vec!["offers".to_owned()]);
        assert!(!change.unsubscribe_all);
        let mut broken = subscription.clone();
        broken.contact_list = None;
        assert!(
            preference_change(
                EmailAddress::parse("a@example.com").unwrap(),
                &broken,
                Utc::now()
            )
            .unwrap_err()
            .contains("contact list")
        );
    }
}
