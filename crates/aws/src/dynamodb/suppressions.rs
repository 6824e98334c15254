//! The suppressions table: partition key `email` (S); attributes `reason` (S), `source` (S)
//! and `at` (S, RFC 3339).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use hikyaku_core::email::EmailAddress;
use hikyaku_core::ports::{StoreError, Suppression, SuppressionList};

use super::item::{Item, ItemError, Stored, get_s, get_time, item, s, time};
use crate::error::store_error;
use crate::retry::Backoff;

const EMAIL: &str = "email";
const REASON: &str = "reason";
const SOURCE: &str = "source";
const AT: &str = "at";

/// BatchGetItem's limit on keys per call.
const BATCH_GET_MAX: usize = 100;

/// [`SuppressionList`] on the suppressions table.
#[derive(Clone, Debug)]
pub struct DynamoSuppressions {
    client: Client,
    table: String,
    backoff: Backoff,
}

impl DynamoSuppressions {
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

    /// One BatchGetItem of ≤ 100 keys, retrying unprocessed keys; the items found.
    async fn get_batch(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        const OP: &str = "check suppressions";
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .projection_expression("#email, #reason")
            .expression_attribute_names("#email", EMAIL)
            .expression_attribute_names("#reason", REASON)
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
}

impl TryFrom<Stored> for Suppression {
    type Error = ItemError;

    fn try_from(Stored(stored): Stored) -> Result<Suppression, ItemError> {
        Ok(Suppression {
            email: EmailAddress::parse(get_s(&stored, EMAIL)?)
                .map_err(|err| ItemError::invalid(EMAIL, err))?,
            reason: get_s(&stored, REASON)?.to_owned(),
            source: get_s(&stored, SOURCE)?.to_owned(),
            at: get_time(&stored, AT)?,
        })
    }
}

#[async_trait]
impl SuppressionList for DynamoSuppressions {
    /// BatchGetItem in chunks of 100 distinct addresses, projecting `email` and `reason`,
    /// retrying unprocessed keys with [`Backoff`].
    #[tracing::instrument(skip_all, fields(addresses = emails.len()), err)]
    async fn check(
        &self,
        emails: &[EmailAddress],
    ) -> Result<HashMap<EmailAddress, String>, StoreError> {
        let mut seen = HashSet::with_capacity(emails.len());
        let wanted: HashMap<&str, &EmailAddress> = emails
            .iter()
            .filter(|email| seen.insert(*email))
            .map(|email| (email.as_str(), email))
            .collect();
        let keys: Vec<Item> = wanted
            .keys()
            .map(|address| item([(EMAIL, s(*address))]))
            .collect();
        let mut suppressed = HashMap::new();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            for stored in self.get_batch(chunk.to_vec()).await? {
                // Any item found means "do not mail": consent fails closed, even when the
                // stored reason cannot be read.
                let Some(email) = get_s(&stored, EMAIL)
                    .ok()
                    .and_then(|address| wanted.get(address))
                else {
                    continue;
                };
                let reason = get_s(&stored, REASON).unwrap_or("suppressed");
                suppressed.insert((*email).clone(), reason.to_owned());
            }
        }
        Ok(suppressed)
    }

    /// PutItem: a later suppression of the same address replaces the earlier one.
    #[tracing::instrument(skip_all, fields(reason = %suppression.reason, source = %suppression.source), err)]
    async fn add(&self, suppression: &Suppression) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item([
                (EMAIL, s(suppression.email.as_str())),
                (REASON, s(suppression.reason.as_str())),
                (SOURCE, s(suppression.source.as_str())),
                (AT, time(suppression.at)),
            ])))
            .send()
            .await
            .map_err(|err| store_error("add suppression", err))?;
        Ok(())
    }

    /// Scan to the end. An unreadable entry is skipped with a warning rather than hiding the
    /// whole list.
    #[tracing::instrument(skip_all, err)]
    async fn list(&self) -> Result<Vec<Suppression>, StoreError> {
        const OP: &str = "list suppressions";
        let mut suppressions = Vec::new();
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
                match Suppression::try_from(Stored(stored)) {
                    Ok(suppression) => suppressions.push(suppression),
                    Err(err) => tracing::warn!(error = %err, "unreadable suppression skipped"),
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(suppressions);
            }
        }
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
        item([(EMAIL, s(address(i).as_str())), (REASON, s("hard bounce"))])
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

        let suppressed = store.check(&emails).await.unwrap();

        assert_eq!(suppressed.len(), 3);
        assert_eq!(suppressed[&address(99)], "hard bounce");
        assert_eq!(first.num_calls() + retry.num_calls() + rest.num_calls(), 3);
    }
}
