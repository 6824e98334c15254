//! The ports: what the use cases need from the outside world, one narrow trait per
//! capability. `hikyaku-aws` implements them on DynamoDB, SQS and SES; `fakes` in memory.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::campaign::CampaignDefinition;
use crate::canary::{CanaryOutcome, CanaryVerdict};
use crate::contact::{Contact, ListSchema};
use crate::email::EmailAddress;
use crate::feedback::{
    AddressOutcome, Feedback, FeedbackCounts, Marks, PreferenceChange, SoftBouncePolicy,
};
use crate::ids::{CampaignId, ListId, RunRef};
use crate::job::SendJob;
use crate::ledger::{DeliveryRecord, LedgerCounts, Outcome};
use crate::run::{FanoutProgress, RunRecord};

/// A storage call that did not do its job. `retryable` says whether trying again later may
/// work (throttling, timeouts, service errors) or not (a missing table, bad permissions).
#[derive(thiserror::Error, Debug)]
#[error("{operation} failed: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub message: String,
    pub retryable: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(operation: &'static str, message: impl Into<String>, retryable: bool) -> Self {
        StoreError {
            operation,
            message: message.into(),
            retryable,
            source: None,
        }
    }
}

/// One page of a contact list. `unreadable` lists stored items that are not valid contacts
/// (key and reason), so they are counted and reported instead of stopping the fan-out.
#[derive(Clone, Debug, Default)]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    pub unreadable: Vec<(String, String)>,
    /// Token of the next page; `None` at the end of the list.
    pub next: Option<String>,
}

/// A contact's latest delivery: when, and by which run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastSent {
    pub at: DateTime<Utc>,
    pub run: RunRef,
}

/// What a bulk contact write did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutReport {
    pub written: u64,
    /// Batch items the store left unprocessed and that were written on a later try.
    pub retried: u64,
}

#[async_trait]
pub trait ContactStore: Send + Sync {
    /// One page of the list, in a stable order, starting after `cursor`.
    async fn page(
        &self,
        list: &ListId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ContactPage, StoreError>;
    async fn get(&self, list: &ListId, email: &EmailAddress)
    -> Result<Option<Contact>, StoreError>;
    /// Writes contacts as they are (a second write of the same contact changes nothing),
    /// retrying what the store leaves unprocessed.
    async fn put_many(&self, list: &ListId, contacts: &[Contact]) -> Result<PutReport, StoreError>;
    /// The contact's latest delivery: kept apart from its attributes so a re-import never
    /// erases it.
    async fn record_last_sent(
        &self,
        list: &ListId,
        email: &EmailAddress,
        run: &RunRef,
        result: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The latest delivery recorded for each of `emails` that has one.
    async fn last_sent(
        &self,
        list: &ListId,
        emails: &[EmailAddress],
    ) -> Result<HashMap<EmailAddress, LastSent>, StoreError>;
    async fn schema(&self, list: &ListId) -> Result<Option<ListSchema>, StoreError>;
    /// Merges what an import observed into the list's stored schema.
    async fn merge_schema(&self, list: &ListId, observed: &ListSchema) -> Result<(), StoreError>;
}

#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Stores a new campaign; `Ok(false)` when one with this id exists already.
    async fn create(&self, definition: &CampaignDefinition) -> Result<bool, StoreError>;
    async fn get(&self, id: &CampaignId) -> Result<Option<CampaignDefinition>, StoreError>;
}

#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates the run if it does not exist; returns the stored record either way.
    async fn start(&self, record: &RunRecord) -> Result<RunRecord, StoreError>;
    async fn get(&self, run: &RunRef) -> Result<Option<RunRecord>, StoreError>;
    /// Takes the fan-out lease if it is free or expired. `Ok(false)`: someone else holds it.
    async fn acquire_lease(
        &self,
        run: &RunRef,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Saves the cursor and totals after a page, only while `owner` holds the lease
    /// (`Ok(false)` when it does not). `complete` ends the fan-out and moves the run to
    /// `sending` (unless it was paused meanwhile).
    async fn checkpoint(
        &self,
        run: &RunRef,
        owner: &str,
        cursor: Option<&str>,
        progress: &FanoutProgress,
        complete: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Gives the lease back, so a continuation can take it at once.
    async fn release_lease(&self, run: &RunRef, owner: &str) -> Result<(), StoreError>;
    /// Pauses a run that is fanning out or sending, with the reason.
    async fn pause(&self, run: &RunRef, reason: &str, now: DateTime<Utc>)
    -> Result<(), StoreError>;
    /// Moves a run that is fanning out or sending to `waiting_for_quota`, with the reason and
    /// the time SES should have room again; any other run is left as it is.
    async fn wait_for_quota(
        &self,
        run: &RunRef,
        reason: &str,
        resume_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Moves a run waiting for quota back to `sending` (or `fanning_out` when its fan-out is
    /// not complete); `Ok(false)` when it was not waiting.
    async fn resume_after_quota(
        &self,
        run: &RunRef,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Moves a paused run back to `sending` (or `fanning_out` when its fan-out is not
    /// complete), clearing the reason; `Ok(false)` when it was not paused.
    async fn resume(&self, run: &RunRef, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Cancels a run for good, with the reason; `Ok(false)` when there is no such run or it
    /// was cancelled already.
    async fn cancel(
        &self,
        run: &RunRef,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Records the canary's verdict when the run has none, or when the one it has is
    /// `replacing`; `Ok(false)` when another verdict stands (someone judged first).
    async fn settle_canary(
        &self,
        run: &RunRef,
        verdict: &CanaryVerdict,
        replacing: Option<CanaryOutcome>,
    ) -> Result<bool, StoreError>;
    /// Adds `sent` to the run's count of canary-slice sends.
    async fn count_canary_sends(&self, run: &RunRef, sent: u64) -> Result<(), StoreError>;
    /// The campaign's runs, newest first.
    async fn list(&self, campaign: &CampaignId) -> Result<Vec<RunRecord>, StoreError>;
    /// Adds `delta` to the run's feedback counters; the run as it stands afterwards, or `None`
    /// when there is no such run (nothing is written then).
    async fn add_feedback(
        &self,
        run: &RunRef,
        delta: &FeedbackCounts,
    ) -> Result<Option<RunRecord>, StoreError>;
}

/// Result of trying to claim a recipient.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimResult {
    Claimed,
    Existing(DeliveryRecord),
}

#[async_trait]
pub trait Ledger: Send + Sync {
    /// Creates a `claimed` record held by `token`, only if the recipient has no record.
    async fn claim(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError>;
    /// Records a recipient refused by consent, only if the recipient has no record;
    /// `ClaimResult::Claimed` when this call wrote it, else the record found.
    async fn record_suppressed(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError>;
    /// Records a recipient of a cancelled run, only if the recipient has no record;
    /// `ClaimResult::Claimed` when this call wrote it, else the record found.
    async fn record_cancelled(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError>;
    /// Ends the claim held by `token` with its outcome; `Ok(false)` if the claim was no
    /// longer `token`'s.
    async fn complete(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Deletes the claim held by `token` (nothing reached SES), so a later attempt may claim.
    async fn release(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
    ) -> Result<(), StoreError>;
    /// Turns an abandoned claim (still held by `stale_token`) into `uncertain`.
    async fn mark_uncertain(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        stale_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    async fn counts(&self, run: &RunRef) -> Result<LedgerCounts, StoreError>;
    async fn records(&self, run: &RunRef) -> Result<Vec<DeliveryRecord>, StoreError>;
}

/// What recording one recipient's feedback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedbackApplied {
    /// Recorded; the marks the record held before, from which the counters move.
    Applied { before: Marks },
    /// This event was recorded before (a notification delivered twice): nothing changed.
    Duplicate,
    /// The run has no record of this recipient: nothing was written.
    NoRecord,
}

/// The ledger as feedback sees it.
#[async_trait]
pub trait FeedbackLedger: Send + Sync {
    /// The run and recipient a message id belongs to (for notifications without tags).
    async fn find_by_message_id(
        &self,
        ses_message_id: &str,
    ) -> Result<Option<(RunRef, EmailAddress)>, StoreError>;
    /// Records `feedback` on the recipient's record once per `event_id`, without disturbing
    /// its delivery state or marks recorded by concurrent events.
    async fn apply_feedback(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        event_id: &str,
        feedback: &Feedback,
        at: DateTime<Utc>,
    ) -> Result<FeedbackApplied, StoreError>;
}

/// A suppression entered by hand (`hikyaku suppression add`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppression {
    pub email: EmailAddress,
    pub reason: String,
    pub source: String,
    pub at: DateTime<Utc>,
}

/// A suppression the feedback function records: a hard bounce, a complaint, soft bounces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutomaticSuppression {
    pub email: EmailAddress,
    pub reason: String,
    pub diagnostic: Option<String>,
    /// The run whose mail caused it, when known.
    pub run: Option<RunRef>,
    pub at: DateTime<Utc>,
}

/// The kinds of entries kept per address, apart from each other: removing a manual entry
/// leaves an automatic one standing, and the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionKind {
    Manual,
    Automatic,
    /// Unsubscribed from a contact list or topic (mirrored from SES Subscription events).
    Unsubscribed,
}

impl SuppressionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionKind::Manual => "manual",
            SuppressionKind::Automatic => "automatic",
            SuppressionKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// One entry of the suppression list as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SuppressionEntry {
    pub email: EmailAddress,
    pub kind: SuppressionKind,
    pub reason: String,
    pub diagnostic: Option<String>,
    /// The run that caused it (`campaign#run`), for automatic entries.
    pub source_run: Option<String>,
    pub at: DateTime<Utc>,
    /// Suppressing events seen for the address (automatic entries).
    pub count: u64,
}

impl SuppressionEntry {
    /// An unsubscribe as the list shows it.
    pub fn unsubscribed(email: EmailAddress, reason: String, at: DateTime<Utc>) -> Self {
        SuppressionEntry {
            email,
            kind: SuppressionKind::Unsubscribed,
            reason,
            diagnostic: None,
            source_run: None,
            at,
            count: 1,
        }
    }
}

/// The SES contact list and topic a campaign sends under: unsubscribes from either count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListTopic {
    pub contact_list: String,
    pub topic: Option<String>,
}

#[async_trait]
pub trait SuppressionList: Send + Sync {
    /// The addresses among `emails` that must not be mailed (at most 100 per call to the
    /// store), with the reason: any suppression, or an unsubscribe from `topic`'s contact list
    /// or topic.
    async fn check(
        &self,
        emails: &[EmailAddress],
        topic: Option<&ListTopic>,
    ) -> Result<HashMap<EmailAddress, String>, StoreError>;
    /// Adds the address's manual entry; `Ok(false)` when it had one already (left as it was).
    async fn add(&self, suppression: &Suppression) -> Result<bool, StoreError>;
    /// Adds or refreshes the address's automatic entry, counting `event_id` once.
    async fn suppress(
        &self,
        suppression: &AutomaticSuppression,
        event_id: &str,
    ) -> Result<(), StoreError>;
    /// Removes the address's entry of `kind`; `Ok(false)` when it had none.
    async fn remove(&self, email: &EmailAddress, kind: SuppressionKind)
    -> Result<bool, StoreError>;
    /// Every entry, of every kind.
    async fn list(&self) -> Result<Vec<SuppressionEntry>, StoreError>;
    /// Mirrors a contact's subscription preferences.
    async fn set_preferences(&self, change: &PreferenceChange) -> Result<(), StoreError>;
    /// Adds `outcome` (for `event_id`) to the address's soft-bounce history under `policy`.
    /// A delivery is recorded only for addresses that have a history. `Ok(Some(true))` when
    /// the address is now to be suppressed; `Ok(None)` when nothing was recorded.
    async fn record_outcome(
        &self,
        email: &EmailAddress,
        event_id: &str,
        outcome: AddressOutcome,
        policy: &SoftBouncePolicy,
    ) -> Result<Option<bool>, StoreError>;
}

#[derive(thiserror::Error, Debug)]
#[error("enqueue failed: {message}")]
pub struct QueueError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueues every job (in batches the queue allows), retrying entries the queue refused;
    /// an error means some job may not be enqueued.
    async fn enqueue(&self, jobs: &[SendJob]) -> Result<(), QueueError>;
    /// Enqueues one job to be delivered after `delay` (at most 15 minutes).
    async fn enqueue_delayed(&self, job: &SendJob, delay: Duration) -> Result<(), QueueError>;
}

/// A message ready for SES: one recipient, so SES adds the unsubscribe header and link.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundEmail {
    /// The account and region to send from.
    pub sending: crate::campaign::SendingAccount,
    pub from: String,
    pub to: EmailAddress,
    pub reply_to: Vec<EmailAddress>,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub configuration_set: Option<String>,
    /// (contact list, topic) for SES `ListManagementOptions`.
    pub list_management: Option<(String, Option<String>)>,
    pub tags: Vec<(String, String)>,
}

/// How a refused send is handled: the classes of DESIGN.md "Sending, in detail".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendErrorClass {
    /// Rate exceeded: slow down and try again; never a failure of the recipient.
    Throttled,
    /// Refused before SES could accept it (connection failures, service errors): try again
    /// later.
    Transient,
    /// The call may have reached SES, but no answer came back (a timeout, an unreadable
    /// response): the recipient is recorded `uncertain` and never sent again.
    OutcomeUnknown,
    /// The account's 24-hour quota is used up: try again after a long wait.
    QuotaExhausted,
    /// This message will never go (rejected content, bad parameter): the recipient fails.
    Permanent,
    /// The account or the campaign's settings stop every send (paused, suspended, domain not
    /// verified, configuration set missing): pause the run.
    Fatal,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct SendError {
    pub class: SendErrorClass,
    /// The SES error's name, e.g. `MessageRejected`.
    pub code: String,
    pub message: String,
}

#[async_trait]
pub trait EmailSender: Send + Sync {
    /// Sends one message; the SES message id on success.
    async fn send(&self, email: &OutboundEmail) -> Result<String, SendError>;
}

/// A record of an input that could not be used (a malformed queue message): kept for the
/// operator instead of being retried forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedInput {
    pub source: String,
    pub id: String,
    pub reason: String,
    /// The start of the input, for diagnosis.
    pub excerpt: String,
    pub at: DateTime<Utc>,
}

impl RejectedInput {
    /// The most of a rejected input kept for diagnosis, in characters.
    pub const EXCERPT_CHARS: usize = 2048;

    /// A rejected input from `source` (`send-queue`, `feedback-topic`), keeping the start of it.
    pub fn new(
        source: &str,
        id: impl Into<String>,
        reason: impl Into<String>,
        input: &str,
        at: DateTime<Utc>,
    ) -> Self {
        RejectedInput {
            source: source.to_owned(),
            id: id.into(),
            reason: reason.into(),
            excerpt: input.chars().take(Self::EXCERPT_CHARS).collect(),
            at,
        }
    }
}

#[async_trait]
pub trait RejectLog: Send + Sync {
    async fn record(&self, rejected: &RejectedInput) -> Result<(), StoreError>;
}
