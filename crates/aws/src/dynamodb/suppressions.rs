//! The suppressions table: partition key `email` (S), one item per address holding its
//! entries of each kind apart, so that removing one leaves the others standing.
//!
//! | attribute | type | |
//! |---|---|---|
//! | `manual_reason`, `manual_source`, `manual_at` | S | an entry made by hand |
//! | `auto_reason`, `auto_diagnostic`, `auto_run`, `auto_at` | S | a hard bounce, complaint or soft bounces |
//! | `auto_count` | N | suppressing events seen |
//! | `auto_events` | SS | their ids, so a redelivered event counts once |
//! | `unsub#<list>` | S | when the address unsubscribed from the whole SES contact list |
//! | `optout#<list>#<topic>` | S | when it opted out of one topic |
//! | `pref_at#<list>` | S | the time of the Subscription event last mirrored for the list |
//! | `history`, `history_events`, `history_version` | S, L, N | the soft-bounce history |
//!
//! List and topic names are SES names (`[A-Za-z0-9_-]`), so they are safe in attribute names.
//! The consent check reads, per address, only the attributes that can forbid this campaign.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::feedback::{
    AddressHistory, AddressOutcome, PreferenceChange, SoftBouncePolicy, list_unsubscribe_reason,
    next_history, topic_unsubscribe_reason, unsubscribe_reason,
};
use hikyaku_core::logging::shown;
use hikyaku_core::ports::{
    AutomaticSuppression, ListTopic, StoreError, Suppression, SuppressionEntry, SuppressionKind,
    SuppressionList,
};

use super::item::{
    Item, ItemError, get_s, get_time, item, n, opt_n, opt_s, parse_time, s, time, truncated,
};
use super::write::{Update, update_if, update_returning};
use crate::error::store_error;
use crate::retry::Backoff;

const EMAIL: &str = "email";
const MANUAL_REASON: &str = "manual_reason";
const MANUAL_SOURCE: &str = "manual_source";
const MANUAL_AT: &str = "manual_at";
const AUTO_REASON: &str = "auto_reason";
const AUTO_DIAGNOSTIC: &str = "auto_diagnostic";
const AUTO_RUN: &str = "auto_run";
const AUTO_AT: &str = "auto_at";
const AUTO_COUNT: &str = "auto_count";
const AUTO_EVENTS: &str = "auto_events";
const HISTORY: &str = "history";
const HISTORY_EVENTS: &str = "history_events";
const HISTORY_VERSION: &str = "history_version";
const UNSUBSCRIBED_PREFIX: &str = "unsub#";
const OPTED_OUT_PREFIX: &str = "optout#";
const PREFERENCES_AT_PREFIX: &str = "pref_at#";

/// BatchGetItem's limit on keys per call.
const BATCH_GET_MAX: usize = 100;
/// Longest diagnostic kept (SES's can run to kilobytes of SMTP transcript).
const DIAGNOSTIC_MAX_BYTES: usize = 1024;
/// Attempts at a soft-bounce history update that loses a race with another event.
const HISTORY_ATTEMPTS: u32 = 5;

fn unsubscribed_attribute(list: &str) -> String {
    format!("{UNSUBSCRIBED_PREFIX}{list}")
}

fn opted_out_attribute(list: &str, topic: &str) -> String {
    format!("{OPTED_OUT_PREFIX}{list}#{topic}")
}

/// [`SuppressionList`] on the suppressions table.
#[derive(Clone, Debug)]
pub struct DynamoSuppressions {
    client: Client,
    table: String,
    backoff: Backoff,
}

impl DynamoSuppressions {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &[
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Scan",
        "dynamodb:UpdateItem",
    ];

    /// The adapter of the suppressions table `table`, with the default [`Backoff`] for
    /// unprocessed keys.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoSuppressions {
        DynamoSuppressions {
            client,
            table: table.into(),
            backoff: Backoff::default(),
        }
    }

    /// Replaces the backoff used for unprocessed keys.
    pub fn with_backoff(mut self, backoff: Backoff) -> DynamoSuppressions {
        self.backoff = backoff;
        self
    }

    /// One BatchGetItem of ≤ 100 keys reading `attributes`, retrying unprocessed keys; the
    /// items found.
    async fn get_batch(
        &self,
        keys: Vec<Item>,
        attributes: &[String],
    ) -> Result<Vec<Item>, StoreError> {
        const OP: &str = "check suppressions";
        let placeholders: Vec<String> = (0..attributes.len()).map(|i| format!("#a{i}")).collect();
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .projection_expression(placeholders.join(", "))
            .set_expression_attribute_names(Some(
                placeholders
                    .into_iter()
                    .zip(attributes.iter().cloned())
                    .collect(),
            ))
            .build()
            .map_err(|err| StoreError::new(OP, err.to_string(), false))?;
        let mut found = Vec::new();
        for retry in 0..=self.backoff.retries {
            if retry > 0 {
                self.backoff.wait(retry).await;
            }
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|err| store_error(OP, err))?;
            if let Some(mut responses) = output.responses {
                let items = responses
                    .remove(&self.table)
                    .or_else(|| responses.into_values().next());
                found.extend(items.unwrap_or_default());
            }
            match output.unprocessed_keys.and_then(|mut tables| {
                tables
                    .remove(&self.table)
                    .or_else(|| tables.into_values().next())
            }) {
                Some(unprocessed) if !unprocessed.keys().is_empty() => {
                    tracing::debug!(
                        unprocessed = unprocessed.keys().len(),
                        retry,
                        "suppression keys left unprocessed"
                    );
                    request = unprocessed;
                }
                _ => return Ok(found),
            }
        }
        Err(StoreError::new(
            OP,
            format!(
                "{} addresses were still unprocessed after {} retries",
                request.keys().len(),
                self.backoff.retries
            ),
            true,
        ))
    }

    fn key(email: &EmailAddress) -> Item {
        item([(EMAIL, s(email.as_str()))])
    }

    /// One UpdateItem of the address's item under `update`'s condition; `true` when made.
    async fn update(
        &self,
        operation: &'static str,
        email: &EmailAddress,
        update: Update,
    ) -> Result<bool, StoreError> {
        update_if(
            &self.client,
            &self.table,
            operation,
            Self::key(email),
            update,
        )
        .await
        .map(|answer| answer.is_ok())
    }

    /// The address's item, strongly consistent.
    async fn read(
        &self,
        operation: &'static str,
        email: &EmailAddress,
    ) -> Result<Option<Item>, StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(email)))
            .consistent_read(true)
            .send()
            .await
            .map(|output| output.item)
            .map_err(|err| store_error(operation, err))
    }
}

/// The entries one stored item holds, of every kind.
fn entries_of(stored: &Item) -> Result<Vec<SuppressionEntry>, ItemError> {
    let email =
        EmailAddress::parse(get_s(stored, EMAIL)?).map_err(|err| ItemError::invalid(EMAIL, err))?;
    let mut entries = Vec::new();
    if let Some(reason) = opt_s(stored, MANUAL_REASON)? {
        entries.push(SuppressionEntry {
            email: email.clone(),
            kind: SuppressionKind::Manual,
            reason: reason.to_owned(),
            diagnostic: opt_s(stored, MANUAL_SOURCE)?.map(|source| format!("source {source}")),
            source_run: None,
            at: get_time(stored, MANUAL_AT)?,
            count: 1,
        });
    }
    if let Some(reason) = opt_s(stored, AUTO_REASON)? {
        entries.push(SuppressionEntry {
            email: email.clone(),
            kind: SuppressionKind::Automatic,
            reason: reason.to_owned(),
            diagnostic: opt_s(stored, AUTO_DIAGNOSTIC)?.map(str::to_owned),
            source_run: opt_s(stored, AUTO_RUN)?.map(str::to_owned),
            at: get_time(stored, AUTO_AT)?,
            count: opt_n(stored, AUTO_COUNT)?.unwrap_or(1),
        });
    }
    let mut unsubscribes: Vec<(&String, &AttributeValue)> = stored
        .iter()
        .filter(|(name, _)| {
            name.starts_with(UNSUBSCRIBED_PREFIX) || name.starts_with(OPTED_OUT_PREFIX)
        })
        .collect();
    unsubscribes.sort_by_key(|(name, _)| *name);
    for (name, value) in unsubscribes {
        let at = match value {
            AttributeValue::S(at) => parse_time(name, at)?,
            _ => {
                return Err(ItemError::WrongType {
                    name: name.clone(),
                    expected: "S",
                });
            }
        };
        let reason = match name.strip_prefix(UNSUBSCRIBED_PREFIX) {
            Some(list) => list_unsubscribe_reason(list),
            None => {
                let rest = &name[OPTED_OUT_PREFIX.len()..];
                let (list, topic) = rest.split_once('#').unwrap_or((rest, "?"));
                topic_unsubscribe_reason(list, topic)
            }
        };
        entries.push(SuppressionEntry::unsubscribed(email.clone(), reason, at));
    }
    Ok(entries)
}

/// The soft-bounce history and its version as stored (absent: none yet, version 0).
fn history_of(stored: Option<&Item>) -> Result<(Option<AddressHistory>, u64), ItemError> {
    let Some(stored) = stored else {
        return Ok((None, 0));
    };
    let version = opt_n(stored, HISTORY_VERSION)?.unwrap_or(0);
    let Some(text) = opt_s(stored, HISTORY)? else {
        return Ok((None, version));
    };
    let events = match stored.get(HISTORY_EVENTS) {
        None => Vec::new(),
        Some(AttributeValue::L(values)) => values
            .iter()
            .filter_map(|value| value.as_s().ok().cloned())
            .collect(),
        Some(_) => {
            return Err(ItemError::WrongType {
                name: HISTORY_EVENTS.to_owned(),
                expected: "L",
            });
        }
    };
    Ok((Some(AddressHistory::decode(text, events)), version))
}

#[async_trait]
impl SuppressionList for DynamoSuppressions {
    /// BatchGetItem in chunks of 100 distinct addresses, reading only the attributes that can
    /// forbid this campaign (manual and automatic entries, the list's and topic's
    /// unsubscribes), retrying unprocessed keys with [`Backoff`]. Any of them present means
    /// "do not mail", whatever its value: consent fails closed.
    #[tracing::instrument(skip_all, fields(addresses = emails.len()), err)]
    async fn check(
        &self,
        emails: &[EmailAddress],
        topic: Option<&ListTopic>,
    ) -> Result<HashMap<EmailAddress, String>, StoreError> {
        let mut seen = HashSet::with_capacity(emails.len());
        let wanted: HashMap<&str, &EmailAddress> = emails
            .iter()
            .filter(|email| seen.insert(*email))
            .map(|email| (email.as_str(), email))
            .collect();
        let keys: Vec<Item> = wanted.values().map(|email| Self::key(email)).collect();
        let unsubscribed = topic.map(|t| unsubscribed_attribute(&t.contact_list));
        let opted_out = topic.and_then(|t| {
            t.topic
                .as_deref()
                .map(|name| opted_out_attribute(&t.contact_list, name))
        });
        let mut attributes = vec![
            EMAIL.to_owned(),
            MANUAL_REASON.to_owned(),
            AUTO_REASON.to_owned(),
        ];
        attributes.extend(unsubscribed.clone());
        attributes.extend(opted_out.clone());
        let mut suppressed = HashMap::new();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            for stored in self.get_batch(chunk.to_vec(), &attributes).await? {
                let Some(email) = get_s(&stored, EMAIL)
                    .ok()
                    .and_then(|address| wanted.get(address))
                else {
                    continue;
                };
                let text = |name: &str| match stored.get(name) {
                    Some(AttributeValue::S(reason)) => Some(reason.clone()),
                    Some(_) => Some("suppressed (entry unreadable)".to_owned()),
                    None => None,
                };
                let present = |name: &Option<String>| {
                    name.as_deref()
                        .is_some_and(|name| stored.contains_key(name))
                };
                let reason = text(MANUAL_REASON)
                    .or_else(|| text(AUTO_REASON))
                    .or_else(|| {
                        unsubscribe_reason(topic?, present(&unsubscribed), present(&opted_out))
                    });
                if let Some(reason) = reason {
                    suppressed.insert((*email).clone(), reason);
                }
            }
        }
        Ok(suppressed)
    }

    /// UpdateItem of the manual entry, conditioned on the address having none: an entry made
    /// earlier keeps its reason and time.
    #[tracing::instrument(skip_all, fields(reason = %suppression.reason, source = %suppression.source), err)]
    async fn add(&self, suppression: &Suppression) -> Result<bool, StoreError> {
        let mut update = Update::default();
        update.set(MANUAL_REASON, s(suppression.reason.as_str()));
        update.set(MANUAL_SOURCE, s(suppression.source.as_str()));
        update.set(MANUAL_AT, time(suppression.at));
        let reason = update.name(MANUAL_REASON);
        update.condition = format!("attribute_not_exists({reason})");
        self.update("add suppression", &suppression.email, update)
            .await
    }

    /// UpdateItem of the automatic entry, counting the event once: `ADD` to the count and the
    /// event set, conditioned on the event not being in it yet.
    #[tracing::instrument(skip_all, fields(to = %shown(&suppression.email), reason = %suppression.reason), err)]
    async fn suppress(
        &self,
        suppression: &AutomaticSuppression,
        event_id: &str,
    ) -> Result<(), StoreError> {
        let mut update = Update::default();
        update.set(AUTO_REASON, s(suppression.reason.as_str()));
        update.set(AUTO_AT, time(suppression.at));
        if let Some(diagnostic) = &suppression.diagnostic {
            update.set(
                AUTO_DIAGNOSTIC,
                s(truncated(diagnostic, DIAGNOSTIC_MAX_BYTES)),
            );
        }
        if let Some(run) = &suppression.run {
            update.set(AUTO_RUN, s(run.key()));
        }
        update.add(AUTO_COUNT, n(1));
        update.add(AUTO_EVENTS, AttributeValue::Ss(vec![event_id.to_owned()]));
        let events = update.name(AUTO_EVENTS);
        let event = update.value("event", s(event_id));
        update.condition = format!("NOT contains({events}, {event})");
        // A failed condition is this event counted before: nothing to do.
        self.update("suppress address", &suppression.email, update)
            .await
            .map(|_| ())
    }

    /// UpdateItem removing the kind's attributes, conditioned on the entry existing.
    /// Removing the automatic entry also forgets the soft-bounce history, so the address
    /// starts afresh.
    #[tracing::instrument(skip_all, fields(to = %shown(email), kind = kind.as_str()), err)]
    async fn remove(
        &self,
        email: &EmailAddress,
        kind: SuppressionKind,
    ) -> Result<bool, StoreError> {
        const OP: &str = "remove suppression";
        let mut update = Update::default();
        let attributes: Vec<String> = match kind {
            SuppressionKind::Manual => [MANUAL_REASON, MANUAL_SOURCE, MANUAL_AT]
                .map(str::to_owned)
                .to_vec(),
            SuppressionKind::Automatic => [
                AUTO_REASON,
                AUTO_DIAGNOSTIC,
                AUTO_RUN,
                AUTO_AT,
                AUTO_COUNT,
                AUTO_EVENTS,
                HISTORY,
                HISTORY_EVENTS,
            ]
            .map(str::to_owned)
            .to_vec(),
            SuppressionKind::Unsubscribed => match self.read(OP, email).await? {
                Some(stored) => stored
                    .into_keys()
                    .filter(|name| {
                        name.starts_with(UNSUBSCRIBED_PREFIX) || name.starts_with(OPTED_OUT_PREFIX)
                    })
                    .collect(),
                None => Vec::new(),
            },
        };
        let Some(first) = attributes.first().cloned() else {
            return Ok(false);
        };
        for attribute in &attributes {
            update.remove(attribute);
        }
        let first = update.name(&first);
        update.condition = format!("attribute_exists({first})");
        self.update(OP, email, update).await
    }

    /// Scan to the end. An unreadable item is skipped with a warning rather than hiding the
    /// whole list.
    #[tracing::instrument(skip_all, err)]
    async fn list(&self) -> Result<Vec<SuppressionEntry>, StoreError> {
        const OP: &str = "list suppressions";
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|err| store_error(OP, err))?;
            for stored in output.items.unwrap_or_default() {
                match entries_of(&stored) {
                    Ok(found) => entries.extend(found),
                    Err(err) => tracing::warn!(error = %err, "unreadable suppression skipped"),
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                entries.sort_by(|a, b| (&a.email, a.kind).cmp(&(&b.email, b.kind)));
                return Ok(entries);
            }
        }
    }

    /// UpdateItem setting the list's unsubscribe-all and topic opt-outs as the event states
    /// them, conditioned on no later event for the list having been mirrored already
    /// (Subscription events can arrive out of order).
    #[tracing::instrument(skip_all, fields(to = %shown(&change.email), list = %change.contact_list), err)]
    async fn set_preferences(&self, change: &PreferenceChange) -> Result<(), StoreError> {
        let mut update = Update::default();
        let list = &change.contact_list;
        let at = time(change.at);
        if change.unsubscribe_all {
            update.set(&unsubscribed_attribute(list), at.clone());
        } else {
            update.remove(&unsubscribed_attribute(list));
        }
        for topic in &change.opted_out {
            update.set(&opted_out_attribute(list, topic), at.clone());
        }
        for topic in &change.opted_in {
            update.remove(&opted_out_attribute(list, topic));
        }
        let stamp_attribute = format!("{PREFERENCES_AT_PREFIX}{list}");
        update.set(&stamp_attribute, at);
        let stamp = update.name(&stamp_attribute);
        let now = update.value(&stamp_attribute, time(change.at));
        update.condition = format!("attribute_not_exists({stamp}) OR {stamp} <= {now}");
        if !self
            .update("mirror subscription", &change.email, update)
            .await?
        {
            tracing::info!("an older Subscription event than the one mirrored; ignored");
        }
        Ok(())
    }

    /// Read-modify-write of the history under its version (optimistic), retried when another
    /// event for the address won the race. A delivery to an address without a history writes
    /// nothing: the read is all it costs.
    #[tracing::instrument(skip_all, fields(to = %shown(email)), err)]
    async fn record_outcome(
        &self,
        email: &EmailAddress,
        event_id: &str,
        outcome: AddressOutcome,
        policy: &SoftBouncePolicy,
    ) -> Result<Option<bool>, StoreError> {
        const OP: &str = "record soft-bounce history";
        for _ in 0..HISTORY_ATTEMPTS {
            let stored = self.read(OP, email).await?;
            let (history, version) = history_of(stored.as_ref())
                .map_err(|err| err.into_store(OP, &format!("history of {}", shown(email))))?;
            let Some((history, suppress)) = next_history(history, event_id, outcome, policy) else {
                return Ok(None);
            };
            let mut update = Update::default();
            update.set(HISTORY, s(history.encode()));
            update.set(
                HISTORY_EVENTS,
                AttributeValue::L(history.events.iter().cloned().map(s).collect()),
            );
            update.set(HISTORY_VERSION, n(version + 1));
            let stored_version = update.name(HISTORY_VERSION);
            update.condition = if version == 0 {
                format!("attribute_not_exists({stored_version})")
            } else {
                let expected = update.value("expected", n(version));
                format!("{stored_version} = {expected}")
            };
            let answer = update_returning(
                &self.client,
                &self.table,
                OP,
                Self::key(email),
                update,
                ReturnValue::None,
            )
            .await?;
            if answer.is_ok() {
                return Ok(Some(suppress));
            }
        }
        Err(StoreError::new(
            OP,
            format!(
                "the history of {} kept changing under {HISTORY_ATTEMPTS} attempts",
                shown(email)
            ),
            true,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb::testing::dynamo_client;
    use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
    use aws_smithy_mocks::mock;

    fn address(i: usize) -> EmailAddress {
        EmailAddress::parse(&format!("r{i}@example.com")).unwrap()
    }

    fn found(i: usize) -> Item {
        item([
            (EMAIL, s(address(i).as_str())),
            (AUTO_REASON, s("hard bounce")),
        ])
    }

    #[tokio::test]
    async fn when_keys_are_left_unprocessed_then_they_are_asked_for_again() {
        let first = mock!(Client::batch_get_item)
            .match_requests(|req| req.request_items().unwrap()["suppressions"].keys().len() == 100)
            .then_compute_output(|req| {
                let asked = &req.request_items().unwrap()["suppressions"];
                let rest = KeysAndAttributes::builder()
                    .set_keys(Some(asked.keys()[98..].to_vec()))
                    .build()
                    .unwrap();
                BatchGetItemOutput::builder()
                    .responses("suppressions", vec![found(3)])
                    .unprocessed_keys("suppressions", rest)
                    .build()
            });
        let retry = mock!(Client::batch_get_item)
            .match_requests(|req| req.request_items().unwrap()["suppressions"].keys().len() == 2)
            .then_output(|| {
                BatchGetItemOutput::builder()
                    .responses("suppressions", vec![found(99)])
                    .build()
            });
        let rest = mock!(Client::batch_get_item)
            .match_requests(|req| req.request_items().unwrap()["suppressions"].keys().len() == 20)
            .then_output(|| {
                BatchGetItemOutput::builder()
                    .responses("suppressions", vec![found(110)])
                    .build()
            });
        let store = DynamoSuppressions::new(dynamo_client!(&first, &retry, &rest), "suppressions")
            .with_backoff(Backoff::immediate(2));
        let mut emails: Vec<EmailAddress> = (0..120).map(address).collect();
        emails.push(address(3));

        let suppressed = store.check(&emails, None).await.unwrap();

        assert_eq!(suppressed.len(), 3);
        assert_eq!(suppressed[&address(99)], "hard bounce");
        assert_eq!(first.num_calls() + retry.num_calls() + rest.num_calls(), 3);
    }
}
