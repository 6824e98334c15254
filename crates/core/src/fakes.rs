//! In-memory implementations of the ports, for unit tests of the use cases and handlers.
//! They keep the same conditional rules the real stores enforce.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::campaign::CampaignDefinition;
use crate::canary::{CanaryOutcome, CanaryVerdict};
use crate::contact::{Contact, ListSchema};
use crate::email::EmailAddress;
use crate::feedback::{
    AddressHistory, AddressOutcome, Feedback, FeedbackCounts, Marks, PreferenceChange,
    SoftBouncePolicy, list_unsubscribe_reason, next_history, topic_unsubscribe_reason,
    unsubscribe_reason,
};
use crate::ids::{CampaignId, ListId, RunRef};
use crate::job::SendJob;
use crate::ledger::{DeliveryRecord, DeliveryState, LedgerCounts, Outcome};
use crate::ports::*;
use crate::run::{FanoutProgress, RunRecord, RunState};

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().expect("fake store lock")
}

/// A contact's last send as the fake keeps it: the run, its result and when.
pub type RecordedSend = (RunRef, String, DateTime<Utc>);

#[derive(Default)]
pub struct FakeContacts {
    pub lists: Mutex<BTreeMap<ListId, BTreeMap<EmailAddress, Contact>>>,
    /// Per address: the run, its result and when.
    pub last_sent: Mutex<HashMap<EmailAddress, RecordedSend>>,
    pub schemas: Mutex<HashMap<ListId, ListSchema>>,
}

impl FakeContacts {
    pub fn with(list: &ListId, contacts: Vec<Contact>) -> FakeContacts {
        let fake = FakeContacts::default();
        locked(&fake.lists).insert(
            list.clone(),
            contacts.into_iter().map(|c| (c.email.clone(), c)).collect(),
        );
        fake
    }
}

#[async_trait]
impl ContactStore for FakeContacts {
    async fn page(
        &self,
        list: &ListId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ContactPage, StoreError> {
        let lists = locked(&self.lists);
        let Some(contacts) = lists.get(list) else {
            return Ok(ContactPage::default());
        };
        let after = cursor.map(str::to_owned);
        let mut page: Vec<Contact> = contacts
            .values()
            .filter(|c| after.as_deref().is_none_or(|a| c.email.as_str() > a))
            .take(limit as usize + 1)
            .cloned()
            .collect();
        let next = if page.len() > limit as usize {
            page.pop();
            page.last().map(|c| c.email.as_str().to_owned())
        } else {
            None
        };
        Ok(ContactPage {
            contacts: page,
            unreadable: Vec::new(),
            next,
        })
    }

    async fn get(
        &self,
        list: &ListId,
        email: &EmailAddress,
    ) -> Result<Option<Contact>, StoreError> {
        Ok(locked(&self.lists)
            .get(list)
            .and_then(|contacts| contacts.get(email))
            .cloned())
    }

    async fn put_many(&self, list: &ListId, contacts: &[Contact]) -> Result<PutReport, StoreError> {
        let mut lists = locked(&self.lists);
        let stored = lists.entry(list.clone()).or_default();
        for contact in contacts {
            stored.insert(contact.email.clone(), contact.clone());
        }
        Ok(PutReport {
            written: contacts.len() as u64,
            retried: 0,
        })
    }

    async fn record_last_sent(
        &self,
        _list: &ListId,
        email: &EmailAddress,
        run: &RunRef,
        result: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        locked(&self.last_sent).insert(email.clone(), (run.clone(), result.to_owned(), at));
        Ok(())
    }

    async fn last_sent(
        &self,
        _list: &ListId,
        emails: &[EmailAddress],
    ) -> Result<HashMap<EmailAddress, crate::ports::LastSent>, StoreError> {
        let last_sent = locked(&self.last_sent);
        Ok(emails
            .iter()
            .filter_map(|email| {
                let (run, _, at) = last_sent.get(email)?;
                Some((
                    email.clone(),
                    crate::ports::LastSent {
                        at: *at,
                        run: run.clone(),
                    },
                ))
            })
            .collect())
    }

    async fn schema(&self, list: &ListId) -> Result<Option<ListSchema>, StoreError> {
        Ok(locked(&self.schemas).get(list).cloned())
    }

    async fn merge_schema(&self, list: &ListId, observed: &ListSchema) -> Result<(), StoreError> {
        locked(&self.schemas)
            .entry(list.clone())
            .or_default()
            .merge(observed);
        Ok(())
    }
}

#[derive(Default)]
pub struct FakeCampaigns {
    pub campaigns: Mutex<HashMap<CampaignId, CampaignDefinition>>,
}

#[async_trait]
impl CampaignStore for FakeCampaigns {
    async fn create(&self, definition: &CampaignDefinition) -> Result<bool, StoreError> {
        let id = CampaignId::parse(&definition.id)
            .map_err(|err| StoreError::new("create campaign", err.to_string(), false))?;
        let mut campaigns = locked(&self.campaigns);
        if campaigns.contains_key(&id) {
            return Ok(false);
        }
        campaigns.insert(id, definition.clone());
        Ok(true)
    }

    async fn get(&self, id: &CampaignId) -> Result<Option<CampaignDefinition>, StoreError> {
        Ok(locked(&self.campaigns).get(id).cloned())
    }
}

#[derive(Default)]
pub struct FakeRuns {
    pub runs: Mutex<HashMap<RunRef, RunRecord>>,
}

impl FakeRuns {
    /// Moves a run in `from` back to sending (or fanning out), as the store's resumes do.
    fn resume_from(&self, run: &RunRef, from: RunState) -> bool {
        let mut runs = locked(&self.runs);
        let Some(record) = runs.get_mut(run) else {
            return false;
        };
        if record.state != from {
            return false;
        }
        record.state = if record.fanout_complete {
            RunState::Sending
        } else {
            RunState::FanningOut
        };
        record.pause_reason = None;
        record.resume_at = None;
        true
    }
}

#[async_trait]
impl RunStore for FakeRuns {
    async fn start(&self, record: &RunRecord) -> Result<RunRecord, StoreError> {
        Ok(locked(&self.runs)
            .entry(record.run.clone())
            .or_insert_with(|| record.clone())
            .clone())
    }

    async fn get(&self, run: &RunRef) -> Result<Option<RunRecord>, StoreError> {
        Ok(locked(&self.runs).get(run).cloned())
    }

    async fn acquire_lease(
        &self,
        run: &RunRef,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut runs = locked(&self.runs);
        let Some(record) = runs.get_mut(run) else {
            return Ok(false);
        };
        let free = record.lease_until.is_none_or(|held| held < now)
            || record.lease_owner.as_deref() == Some(owner);
        if free {
            record.lease_owner = Some(owner.to_owned());
            record.lease_until = Some(until);
        }
        Ok(free)
    }

    async fn checkpoint(
        &self,
        run: &RunRef,
        owner: &str,
        cursor: Option<&str>,
        progress: &FanoutProgress,
        complete: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut runs = locked(&self.runs);
        let Some(record) = runs.get_mut(run) else {
            return Ok(false);
        };
        if record.lease_owner.as_deref() != Some(owner) {
            return Ok(false);
        }
        record.cursor = cursor.map(str::to_owned);
        record.progress = progress.clone();
        if complete {
            record.fanout_complete = true;
            record.fanout_completed_at = Some(now);
            record.lease_owner = None;
            record.lease_until = None;
            if record.state == RunState::FanningOut {
                record.state = RunState::Sending;
            }
        }
        Ok(true)
    }

    async fn release_lease(&self, run: &RunRef, owner: &str) -> Result<(), StoreError> {
        if let Some(record) = locked(&self.runs).get_mut(run)
            && record.lease_owner.as_deref() == Some(owner)
        {
            record.lease_owner = None;
            record.lease_until = None;
        }
        Ok(())
    }

    async fn pause(
        &self,
        run: &RunRef,
        reason: &str,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(record) = locked(&self.runs).get_mut(run)
            && record.state.allows_fanout()
        {
            record.state = RunState::Paused;
            record.pause_reason = Some(reason.to_owned());
            record.resume_at = None;
        }
        Ok(())
    }

    async fn wait_for_quota(
        &self,
        run: &RunRef,
        reason: &str,
        resume_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if let Some(record) = locked(&self.runs).get_mut(run)
            && record.state.allows_sending()
        {
            record.state = RunState::WaitingForQuota;
            record.pause_reason = Some(reason.to_owned());
            record.resume_at = Some(resume_at);
        }
        Ok(())
    }

    async fn resume_after_quota(
        &self,
        run: &RunRef,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.resume_from(run, RunState::WaitingForQuota))
    }

    async fn resume(&self, run: &RunRef, _now: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.resume_from(run, RunState::Paused))
    }

    async fn count_canary_sends(&self, run: &RunRef, sent: u64) -> Result<(), StoreError> {
        if let Some(record) = locked(&self.runs).get_mut(run) {
            record.canary_sent += sent;
        }
        Ok(())
    }

    async fn settle_canary(
        &self,
        run: &RunRef,
        verdict: &CanaryVerdict,
        replacing: Option<CanaryOutcome>,
    ) -> Result<bool, StoreError> {
        let mut runs = locked(&self.runs);
        let Some(record) = runs.get_mut(run) else {
            return Ok(false);
        };
        let standing = record.canary_verdict.as_ref().map(|v| v.outcome);
        if standing.is_some() && standing != replacing {
            return Ok(false);
        }
        record.canary_verdict = Some(verdict.clone());
        Ok(true)
    }

    async fn cancel(
        &self,
        run: &RunRef,
        reason: &str,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut runs = locked(&self.runs);
        match runs.get_mut(run) {
            Some(record) if record.state != RunState::Cancelled => {
                record.state = RunState::Cancelled;
                record.pause_reason = Some(reason.to_owned());
                record.resume_at = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn add_feedback(
        &self,
        run: &RunRef,
        delta: &FeedbackCounts,
    ) -> Result<Option<RunRecord>, StoreError> {
        Ok(locked(&self.runs).get_mut(run).map(|record| {
            record.feedback.add(delta);
            record.clone()
        }))
    }

    async fn list(&self, campaign: &CampaignId) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs: Vec<RunRecord> = locked(&self.runs)
            .values()
            .filter(|r| &r.run.campaign_id == campaign)
            .cloned()
            .collect();
        runs.sort_by(|a, b| b.run.run_id.cmp(&a.run.run_id));
        Ok(runs)
    }
}

#[derive(Default)]
pub struct FakeLedger {
    pub records: Mutex<HashMap<(RunRef, EmailAddress), DeliveryRecord>>,
    /// Operations (by name) that fail, for store-outage tests.
    pub failing: Mutex<HashSet<&'static str>>,
    /// Whether those failures are for good (a missing table) rather than passing.
    pub permanent: std::sync::atomic::AtomicBool,
    /// Feedback event ids recorded per recipient.
    pub feedback_events: Mutex<HashSet<(RunRef, EmailAddress, String)>>,
}

impl FakeLedger {
    fn fail_if(&self, operation: &'static str) -> Result<(), StoreError> {
        if locked(&self.failing).contains(operation) {
            let retryable = !self.permanent.load(Ordering::SeqCst);
            return Err(StoreError::new(operation, "injected outage", retryable));
        }
        Ok(())
    }

    pub fn state(&self, run: &RunRef, email: &EmailAddress) -> Option<DeliveryState> {
        locked(&self.records)
            .get(&(run.clone(), email.clone()))
            .map(|r| r.state)
    }

    /// Puts a record as it would be left by someone else (e.g. a crashed sender).
    pub fn insert(&self, run: &RunRef, record: DeliveryRecord) {
        locked(&self.records).insert((run.clone(), record.email.clone()), record);
    }
}

impl FakeLedger {
    /// A record of a recipient never sent to, only if it has none.
    fn record_unsent(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        state: DeliveryState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> ClaimResult {
        let mut records = locked(&self.records);
        let key = (run.clone(), email.clone());
        if let Some(existing) = records.get(&key) {
            return ClaimResult::Existing(existing.clone());
        }
        records.insert(
            key,
            DeliveryRecord {
                email: email.clone(),
                state,
                claim_token: None,
                claimed_at: None,
                ses_message_id: None,
                reason: Some(reason.to_owned()),
                updated_at: now,
                marks: Marks::default(),
                feedback_detail: None,
            },
        );
        ClaimResult::Claimed
    }
}

#[async_trait]
impl Ledger for FakeLedger {
    async fn claim(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        self.fail_if("claim")?;
        let mut records = locked(&self.records);
        let key = (run.clone(), email.clone());
        if let Some(existing) = records.get(&key) {
            return Ok(ClaimResult::Existing(existing.clone()));
        }
        records.insert(
            key,
            DeliveryRecord {
                email: email.clone(),
                state: DeliveryState::Claimed,
                claim_token: Some(token.to_owned()),
                claimed_at: Some(now),
                ses_message_id: None,
                reason: None,
                updated_at: now,
                marks: Marks::default(),
                feedback_detail: None,
            },
        );
        Ok(ClaimResult::Claimed)
    }

    async fn record_suppressed(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        self.fail_if("record_suppressed")?;
        Ok(self.record_unsent(run, email, DeliveryState::Suppressed, reason, now))
    }

    async fn record_cancelled(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        self.fail_if("record_cancelled")?;
        Ok(self.record_unsent(run, email, DeliveryState::Cancelled, "run cancelled", now))
    }

    async fn complete(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.fail_if("complete")?;
        let mut records = locked(&self.records);
        let Some(record) = records.get_mut(&(run.clone(), email.clone())) else {
            return Ok(false);
        };
        if record.state != DeliveryState::Claimed || record.claim_token.as_deref() != Some(token) {
            return Ok(false);
        }
        record.state = outcome.state();
        record.updated_at = now;
        match outcome {
            Outcome::Sent { ses_message_id } => {
                record.ses_message_id = Some(ses_message_id.clone())
            }
            Outcome::Failed { reason } => record.reason = Some(reason.clone()),
        }
        Ok(true)
    }

    async fn release(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
    ) -> Result<(), StoreError> {
        self.fail_if("release")?;
        let mut records = locked(&self.records);
        let key = (run.clone(), email.clone());
        if records.get(&key).is_some_and(|r| {
            r.state == DeliveryState::Claimed && r.claim_token.as_deref() == Some(token)
        }) {
            records.remove(&key);
        }
        Ok(())
    }

    async fn mark_uncertain(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        stale_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.fail_if("mark_uncertain")?;
        let mut records = locked(&self.records);
        let Some(record) = records.get_mut(&(run.clone(), email.clone())) else {
            return Ok(false);
        };
        if record.claim_token.as_deref() != stale_token
            || !DeliveryState::may_follow(Some(record.state), DeliveryState::Uncertain)
        {
            return Ok(false);
        }
        record.state = DeliveryState::Uncertain;
        record.updated_at = now;
        Ok(true)
    }

    async fn counts(&self, run: &RunRef) -> Result<LedgerCounts, StoreError> {
        let mut counts = LedgerCounts::default();
        for ((r, _), record) in locked(&self.records).iter() {
            if r == run {
                counts.add(record.state);
                if record.state == DeliveryState::Sent {
                    counts.observe_sent_at(record.updated_at);
                }
            }
        }
        Ok(counts)
    }

    async fn records(&self, run: &RunRef) -> Result<Vec<DeliveryRecord>, StoreError> {
        Ok(locked(&self.records)
            .iter()
            .filter(|((r, _), _)| r == run)
            .map(|(_, record)| record.clone())
            .collect())
    }
}

#[async_trait]
impl FeedbackLedger for FakeLedger {
    async fn find_by_message_id(
        &self,
        ses_message_id: &str,
    ) -> Result<Option<(RunRef, EmailAddress)>, StoreError> {
        self.fail_if("find_by_message_id")?;
        Ok(locked(&self.records)
            .iter()
            .find(|(_, record)| record.ses_message_id.as_deref() == Some(ses_message_id))
            .map(|((run, email), _)| (run.clone(), email.clone())))
    }

    async fn apply_feedback(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        event_id: &str,
        feedback: &Feedback,
        at: DateTime<Utc>,
    ) -> Result<FeedbackApplied, StoreError> {
        self.fail_if("apply_feedback")?;
        let mut records = locked(&self.records);
        let Some(record) = records.get_mut(&(run.clone(), email.clone())) else {
            return Ok(FeedbackApplied::NoRecord);
        };
        let event = (run.clone(), email.clone(), event_id.to_owned());
        if !locked(&self.feedback_events).insert(event) {
            return Ok(FeedbackApplied::Duplicate);
        }
        let before = record.marks.clone();
        record.marks.record(feedback.mark(), at);
        if let Some(detail) = feedback.kept_detail() {
            record.feedback_detail = Some(detail);
        }
        Ok(FeedbackApplied::Applied { before })
    }
}

/// One address's entries, kept apart by kind as the real table keeps them.
#[derive(Clone, Debug, Default)]
pub struct FakeAddress {
    pub manual: Option<Suppression>,
    pub automatic: Option<(AutomaticSuppression, u64)>,
    pub automatic_events: HashSet<String>,
    /// Contact lists the address unsubscribed from entirely.
    pub unsubscribed_all: BTreeMap<String, DateTime<Utc>>,
    /// (contact list, topic) pairs the address opted out of.
    pub opted_out: BTreeMap<(String, String), DateTime<Utc>>,
    pub history: Option<AddressHistory>,
}

#[derive(Default)]
pub struct FakeSuppressions {
    pub addresses: Mutex<HashMap<EmailAddress, FakeAddress>>,
}

impl FakeSuppressions {
    pub fn address(&self, email: &EmailAddress) -> FakeAddress {
        locked(&self.addresses)
            .get(email)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl SuppressionList for FakeSuppressions {
    async fn check(
        &self,
        emails: &[EmailAddress],
        topic: Option<&ListTopic>,
    ) -> Result<HashMap<EmailAddress, String>, StoreError> {
        let addresses = locked(&self.addresses);
        Ok(emails
            .iter()
            .filter_map(|email| {
                let entry = addresses.get(email)?;
                let reason = if let Some(manual) = &entry.manual {
                    manual.reason.clone()
                } else if let Some((automatic, _)) = &entry.automatic {
                    automatic.reason.clone()
                } else {
                    let topic = topic?;
                    unsubscribe_reason(
                        topic,
                        entry.unsubscribed_all.contains_key(&topic.contact_list),
                        topic.topic.as_ref().is_some_and(|name| {
                            entry
                                .opted_out
                                .contains_key(&(topic.contact_list.clone(), name.clone()))
                        }),
                    )?
                };
                Some((email.clone(), reason))
            })
            .collect())
    }

    async fn add(&self, suppression: &Suppression) -> Result<bool, StoreError> {
        let mut addresses = locked(&self.addresses);
        let entry = addresses.entry(suppression.email.clone()).or_default();
        if entry.manual.is_some() {
            return Ok(false);
        }
        entry.manual = Some(suppression.clone());
        Ok(true)
    }

    async fn suppress(
        &self,
        suppression: &AutomaticSuppression,
        event_id: &str,
    ) -> Result<(), StoreError> {
        let mut addresses = locked(&self.addresses);
        let entry = addresses.entry(suppression.email.clone()).or_default();
        if !entry.automatic_events.insert(event_id.to_owned()) {
            return Ok(());
        }
        let count = entry.automatic.as_ref().map_or(0, |(_, count)| *count) + 1;
        entry.automatic = Some((suppression.clone(), count));
        Ok(())
    }

    async fn remove(
        &self,
        email: &EmailAddress,
        kind: SuppressionKind,
    ) -> Result<bool, StoreError> {
        let mut addresses = locked(&self.addresses);
        let Some(entry) = addresses.get_mut(email) else {
            return Ok(false);
        };
        Ok(match kind {
            SuppressionKind::Manual => entry.manual.take().is_some(),
            SuppressionKind::Automatic => {
                entry.automatic_events.clear();
                entry.automatic.take().is_some()
            }
            SuppressionKind::Unsubscribed => {
                let had = !entry.unsubscribed_all.is_empty() || !entry.opted_out.is_empty();
                entry.unsubscribed_all.clear();
                entry.opted_out.clear();
                had
            }
        })
    }

    async fn list(&self) -> Result<Vec<SuppressionEntry>, StoreError> {
        let mut entries = Vec::new();
        for (email, entry) in locked(&self.addresses).iter() {
            if let Some(manual) = &entry.manual {
                entries.push(SuppressionEntry {
                    email: email.clone(),
                    kind: SuppressionKind::Manual,
                    reason: manual.reason.clone(),
                    diagnostic: None,
                    source_run: None,
                    at: manual.at,
                    count: 1,
                });
            }
            if let Some((automatic, count)) = &entry.automatic {
                entries.push(SuppressionEntry {
                    email: email.clone(),
                    kind: SuppressionKind::Automatic,
                    reason: automatic.reason.clone(),
                    diagnostic: automatic.diagnostic.clone(),
                    source_run: automatic.run.as_ref().map(RunRef::key),
                    at: automatic.at,
                    count: *count,
                });
            }
            let unsubscribes = entry
                .unsubscribed_all
                .iter()
                .map(|(list, at)| (list_unsubscribe_reason(list), *at))
                .chain(
                    entry
                        .opted_out
                        .iter()
                        .map(|((list, topic), at)| (topic_unsubscribe_reason(list, topic), *at)),
                );
            for (reason, at) in unsubscribes {
                entries.push(SuppressionEntry::unsubscribed(email.clone(), reason, at));
            }
        }
        entries.sort_by(|a, b| (&a.email, a.kind).cmp(&(&b.email, b.kind)));
        Ok(entries)
    }

    async fn set_preferences(&self, change: &PreferenceChange) -> Result<(), StoreError> {
        let mut addresses = locked(&self.addresses);
        let entry = addresses.entry(change.email.clone()).or_default();
        if change.unsubscribe_all {
            entry
                .unsubscribed_all
                .insert(change.contact_list.clone(), change.at);
        } else {
            entry.unsubscribed_all.remove(&change.contact_list);
        }
        for topic in &change.opted_out {
            entry
                .opted_out
                .insert((change.contact_list.clone(), topic.clone()), change.at);
        }
        for topic in &change.opted_in {
            entry
                .opted_out
                .remove(&(change.contact_list.clone(), topic.clone()));
        }
        Ok(())
    }

    async fn record_outcome(
        &self,
        email: &EmailAddress,
        event_id: &str,
        outcome: AddressOutcome,
        policy: &SoftBouncePolicy,
    ) -> Result<Option<bool>, StoreError> {
        let mut addresses = locked(&self.addresses);
        let history = addresses.get(email).and_then(|entry| entry.history.clone());
        let Some((history, suppress)) = next_history(history, event_id, outcome, policy) else {
            return Ok(None);
        };
        addresses.entry(email.clone()).or_default().history = Some(history);
        Ok(Some(suppress))
    }
}

/// Records what is enqueued; can be told to fail after a number of successful calls.
#[derive(Default)]
pub struct FakeQueue {
    pub jobs: Mutex<Vec<SendJob>>,
    pub delayed: Mutex<Vec<(SendJob, Duration)>>,
    pub fail_after_calls: Mutex<Option<u64>>,
    calls: AtomicU64,
}

impl FakeQueue {
    fn call(&self) -> Result<(), QueueError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if locked(&self.fail_after_calls).is_some_and(|limit| n >= limit) {
            return Err(QueueError {
                message: "injected queue outage".into(),
                source: None,
            });
        }
        Ok(())
    }

    pub fn take_jobs(&self) -> Vec<SendJob> {
        std::mem::take(&mut *locked(&self.jobs))
    }

    pub fn take_delayed(&self) -> Vec<(SendJob, Duration)> {
        std::mem::take(&mut *locked(&self.delayed))
    }
}

#[async_trait]
impl JobQueue for FakeQueue {
    async fn enqueue(&self, jobs: &[SendJob]) -> Result<(), QueueError> {
        self.call()?;
        locked(&self.jobs).extend_from_slice(jobs);
        Ok(())
    }

    async fn enqueue_delayed(&self, job: &SendJob, delay: Duration) -> Result<(), QueueError> {
        self.call()?;
        locked(&self.delayed).push((job.clone(), delay));
        Ok(())
    }
}

/// An SES stand-in: accepts everything except what it is told to refuse.
#[derive(Default)]
pub struct FakeSender {
    pub sent: Mutex<Vec<OutboundEmail>>,
    /// Addresses answered with this error every time.
    pub refuse: Mutex<HashMap<EmailAddress, SendError>>,
    /// Every n-th call (1-based) is throttled.
    pub throttle_every: Mutex<Option<u64>>,
    calls: AtomicU64,
}

impl FakeSender {
    pub fn error(class: SendErrorClass, code: &str) -> SendError {
        SendError {
            class,
            code: code.to_owned(),
            message: format!("injected {code}"),
        }
    }

    pub fn sent_to(&self) -> Vec<EmailAddress> {
        locked(&self.sent).iter().map(|e| e.to.clone()).collect()
    }
}

#[async_trait]
impl EmailSender for FakeSender {
    async fn send(&self, email: &OutboundEmail) -> Result<String, SendError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if locked(&self.throttle_every).is_some_and(|every| n.is_multiple_of(every)) {
            return Err(FakeSender::error(
                SendErrorClass::Throttled,
                "TooManyRequestsException",
            ));
        }
        if let Some(err) = locked(&self.refuse).get(&email.to) {
            return Err(err.clone());
        }
        locked(&self.sent).push(email.clone());
        Ok(format!("fake-{n:08}"))
    }
}

#[derive(Default)]
pub struct FakeRejects {
    pub rejected: Mutex<Vec<RejectedInput>>,
}

#[async_trait]
impl RejectLog for FakeRejects {
    async fn record(&self, rejected: &RejectedInput) -> Result<(), StoreError> {
        locked(&self.rejected).push(rejected.clone());
        Ok(())
    }
}

/// The budget item in memory, with the same versioned writes as the real store.
#[derive(Default)]
pub struct FakeBudgetStore {
    pub items: Mutex<HashMap<String, crate::budget::BudgetState>>,
    pub writes: AtomicU64,
}

#[async_trait]
impl crate::budget::BudgetStore for FakeBudgetStore {
    async fn load(&self, scope: &str) -> Result<Option<crate::budget::BudgetState>, StoreError> {
        // A real store answers later: concurrent senders pile up meanwhile.
        tokio::task::yield_now().await;
        Ok(locked(&self.items).get(scope).cloned())
    }

    async fn save(
        &self,
        scope: &str,
        state: &crate::budget::BudgetState,
        expected: u64,
    ) -> Result<bool, StoreError> {
        let mut items = locked(&self.items);
        let stored = items.get(scope).map_or(0, |s| s.version);
        if stored != expected {
            return Ok(false);
        }
        items.insert(scope.to_owned(), state.clone());
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

/// `GetAccount` answering a snapshot the test sets; counts the calls.
pub struct FakeAccount {
    pub snapshot: Mutex<crate::budget::AccountSnapshot>,
    /// Other accounts' snapshots, by [`SendingAccount::scope`]; the others answer `snapshot`.
    ///
    /// [`SendingAccount::scope`]: crate::campaign::SendingAccount::scope
    pub by_scope: Mutex<HashMap<String, crate::budget::AccountSnapshot>>,
    /// The scopes asked, in order.
    pub asked: Mutex<Vec<String>>,
    pub calls: AtomicU64,
}

impl FakeAccount {
    /// A healthy production account with this rate and no daily limit.
    pub fn with_rate(max_send_rate: f64) -> FakeAccount {
        FakeAccount {
            snapshot: Mutex::new(crate::budget::AccountSnapshot {
                max_send_rate,
                max_24_hour_send: -1.0,
                sent_last_24_hours: 0.0,
                sending_enabled: true,
                enforcement_status: "HEALTHY".to_owned(),
                production_access: true,
                fetched_at: DateTime::<Utc>::UNIX_EPOCH,
            }),
            by_scope: Mutex::default(),
            asked: Mutex::default(),
            calls: AtomicU64::new(0),
        }
    }
}

impl Default for FakeAccount {
    fn default() -> Self {
        FakeAccount::with_rate(100_000.0)
    }
}

#[async_trait]
impl crate::budget::AccountSource for FakeAccount {
    async fn account(
        &self,
        sending: &crate::campaign::SendingAccount,
        now: DateTime<Utc>,
    ) -> Result<crate::budget::AccountSnapshot, crate::budget::AccountError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let scope = sending.scope();
        let other = locked(&self.by_scope).get(&scope).cloned();
        locked(&self.asked).push(scope);
        let mut snapshot = other.unwrap_or_else(|| locked(&self.snapshot).clone());
        snapshot.fetched_at = now;
        Ok(snapshot)
    }
}

/// An account check answering what the test sets (ready by default).
pub struct FakeGate {
    pub verdict: Mutex<crate::budget::AccountVerdict>,
    pub calls: AtomicU64,
}

impl Default for FakeGate {
    fn default() -> Self {
        FakeGate {
            verdict: Mutex::new(crate::budget::AccountVerdict::Ready),
            calls: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl crate::budget::AccountGate for FakeGate {
    async fn verdict(
        &self,
        _sending: &crate::campaign::SendingAccount,
        _now: DateTime<Utc>,
    ) -> Result<crate::budget::AccountVerdict, crate::budget::BudgetError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(locked(&self.verdict).clone())
    }
}

/// A preflight probe that answers the account it holds (none: unanswered) and nothing else,
/// as an emulator without those APIs would.
#[derive(Default)]
pub struct FakeSetupProbe {
    pub account: Mutex<Option<crate::budget::AccountSnapshot>>,
}

#[async_trait]
impl crate::doctor::SetupProbe for FakeSetupProbe {
    async fn account(&self) -> crate::doctor::Probe<crate::budget::AccountSnapshot> {
        match locked(&self.account).clone() {
            Some(account) => crate::doctor::Probe::Found(account),
            None => crate::doctor::Probe::Unanswered,
        }
    }
    async fn identity(&self, _: &str) -> crate::doctor::Probe<crate::doctor::IdentityState> {
        crate::doctor::Probe::Unanswered
    }
    async fn event_destinations(
        &self,
        _: &str,
    ) -> crate::doctor::Probe<Vec<crate::doctor::EventDestination>> {
        crate::doctor::Probe::Unanswered
    }
    async fn contact_list_topics(&self, _: &str) -> crate::doctor::Probe<Vec<String>> {
        crate::doctor::Probe::Unanswered
    }
    async fn subscriptions(
        &self,
        _: &str,
    ) -> crate::doctor::Probe<Vec<crate::doctor::Subscription>> {
        crate::doctor::Probe::Unanswered
    }
    async fn table(&self, _: &str) -> crate::doctor::Probe<()> {
        crate::doctor::Probe::Unanswered
    }
    async fn queue_depth(&self, _: &str) -> crate::doctor::Probe<u64> {
        crate::doctor::Probe::Unanswered
    }
}
