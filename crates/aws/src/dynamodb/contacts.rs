//! The contacts table: partition key `list_id` (S), sort key `sk` (S). Three kinds of item
//! share a list's partition:
//!
//! | item | `sk` | attributes |
//! |---|---|---|
//! | contact | `c#{email}` | `email` S, `attrs` M, `updated_at` S |
//! | delivery activity | `a#{email}` | `email` S, `last_sent_at` S, `last_result` S, `last_campaign` S, `last_run` S |
//! | list schema | `#schema` | `schema` M (attribute name → `bool` / `int` / `float` / `str`), `version` N, `updated_at` S |
//!
//! `attrs` holds typed values: `Bool` as BOOL, `Int` and `Float` as N, `Str` as S. A number
//! reads back as `Float` when its text has a `.`, `e` or `E`, else as `Int`. DynamoDB trims a
//! number's trailing zeros, so a whole `Float` such as `2.0` reads back as `Int(2)`; the list
//! schema still says `float`, and `AttrValue::widened_to` restores the kind where it matters.
//!
//! The activity item is kept apart from the contact so a re-import, which rewrites the
//! contact item whole, never erases it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use chrono::{DateTime, Utc};
use hikyaku_core::contact::{AttrKind, AttrValue, Attributes, Contact, ListSchema};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
use hikyaku_core::logging::shown;
use hikyaku_core::ports::{ContactPage, ContactStore, LastSent, PutReport, StoreError};

use super::item::{Item, ItemError, Stored, get_s, get_time, item, n, opt_map, opt_n, s, time};
use super::write::{Update, put_if, put_if_absent};
use crate::error::store_error;
use crate::retry::Backoff;

const LIST_ID: &str = "list_id";
const SK: &str = "sk";
const EMAIL: &str = "email";
const ATTRS: &str = "attrs";
const UPDATED_AT: &str = "updated_at";
const SCHEMA: &str = "schema";
const VERSION: &str = "version";

const CONTACT_PREFIX: &str = "c#";
const ACTIVITY_PREFIX: &str = "a#";
const LAST_SENT_AT: &str = "last_sent_at";
const LAST_CAMPAIGN: &str = "last_campaign";
const LAST_RUN: &str = "last_run";
const SCHEMA_SK: &str = "#schema";

/// BatchWriteItem's limit on requests per call.
const BATCH_WRITE_MAX: usize = 25;

/// DynamoDB numbers have magnitudes below 1E+126 and, unless zero, at least 1E-130.
const NUMBER_LIMIT: f64 = 1e126;
const NUMBER_MIN: f64 = 1e-130;

/// [`ContactStore`] on the contacts table.
#[derive(Clone, Debug)]
pub struct DynamoContacts {
    client: Client,
    table: String,
    backoff: Backoff,
}

impl DynamoContacts {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &[
        "dynamodb:BatchWriteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
    ];

    /// The adapter of the contacts table `table`, with the default [`Backoff`] for unprocessed
    /// batch items.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoContacts {
        DynamoContacts {
            client,
            table: table.into(),
            backoff: Backoff::default(),
        }
    }

    /// Replaces the backoff used for unprocessed batch items and schema write conflicts.
    pub fn with_backoff(mut self, backoff: Backoff) -> DynamoContacts {
        self.backoff = backoff;
        self
    }

    fn key(list: &ListId, sk: String) -> Item {
        item([(LIST_ID, s(list.as_str())), (SK, s(sk))])
    }

    fn contact_sk(email: &EmailAddress) -> String {
        format!("{CONTACT_PREFIX}{}", email.as_str())
    }

    /// Writes one chunk (≤ 25 requests), retrying what DynamoDB leaves unprocessed; returns how
    /// many requests were sent again.
    async fn write_chunk(&self, mut pending: Vec<WriteRequest>) -> Result<u64, StoreError> {
        const OP: &str = "put contacts";
        let mut retried = 0;
        for retry in 0..=self.backoff.retries {
            if retry > 0 {
                retried += pending.len() as u64;
                self.backoff.wait(retry).await;
            }
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(|err| store_error(OP, err))?;
            pending = output
                .unprocessed_items
                .and_then(|mut tables| {
                    // Keyed by the table as the request named it; take the only entry if the
                    // service spelled it differently (name versus ARN).
                    tables
                        .remove(&self.table)
                        .or_else(|| tables.into_values().next())
                })
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(retried);
            }
            tracing::debug!(
                unprocessed = pending.len(),
                retry,
                "contacts left unprocessed"
            );
        }
        Err(StoreError::new(
            OP,
            format!(
                "{} contacts were still unprocessed after {} retries",
                pending.len(),
                self.backoff.retries
            ),
            true,
        ))
    }

    /// The stored schema and its version (0 when there is none).
    async fn read_schema(&self, list: &ListId) -> Result<Option<(ListSchema, u64)>, StoreError> {
        const OP: &str = "read list schema";
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(list, SCHEMA_SK.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error(OP, err))?;
        output
            .item
            .map(|stored| {
                let version = opt_n::<u64>(&stored, VERSION)?.unwrap_or(0);
                let schema = ListSchema::try_from(&Stored(stored))?;
                Ok((schema, version))
            })
            .transpose()
            .map_err(|err: ItemError| err.into_store(OP, &format!("schema of list {list}")))
    }
}

/// A contact item as written: the whole contact, replacing any earlier one.
fn contact_item(list: &ListId, contact: &Contact, now: DateTime<Utc>) -> Result<Item, ItemError> {
    let attrs = contact
        .attributes
        .iter()
        .map(|(name, value)| Ok((name.clone(), attr_to_dynamo(name, value)?)))
        .collect::<Result<HashMap<_, _>, ItemError>>()?;
    Ok(item([
        (LIST_ID, s(list.as_str())),
        (SK, s(DynamoContacts::contact_sk(&contact.email))),
        (EMAIL, s(contact.email.as_str())),
        (ATTRS, AttributeValue::M(attrs)),
        (UPDATED_AT, time(now)),
    ]))
}

fn attr_to_dynamo(name: &str, value: &AttrValue) -> Result<AttributeValue, ItemError> {
    Ok(match value {
        AttrValue::Bool(b) => AttributeValue::Bool(*b),
        AttrValue::Int(i) => n(i),
        AttrValue::Float(f) => {
            let magnitude = f.abs();
            if !f.is_finite()
                || magnitude >= NUMBER_LIMIT
                || (magnitude != 0.0 && magnitude < NUMBER_MIN)
            {
                return Err(ItemError::invalid(
                    format!("{ATTRS}.{name}"),
                    format!("{f} cannot be stored as a DynamoDB number"),
                ));
            }
            // Debug keeps a '.' or an exponent (`2.0`, `1e300`), so the text says "float".
            AttributeValue::N(format!("{f:?}"))
        }
        AttrValue::Str(text) => s(text.as_str()),
    })
}

fn attr_from_dynamo(name: &str, value: &AttributeValue) -> Result<AttrValue, ItemError> {
    let path = || format!("{ATTRS}.{name}");
    match value {
        AttributeValue::Bool(b) => Ok(AttrValue::Bool(*b)),
        AttributeValue::S(text) => Ok(AttrValue::Str(text.clone())),
        AttributeValue::N(number) if number.contains(['.', 'e', 'E']) => number
            .parse::<f64>()
            .map(AttrValue::Float)
            .map_err(|err| ItemError::invalid(path(), format!("'{number}': {err}"))),
        AttributeValue::N(number) => number.parse::<i64>().map(AttrValue::Int).map_err(|err| {
            ItemError::invalid(path(), format!("'{number}' is not a 64-bit integer: {err}"))
        }),
        _ => Err(ItemError::WrongType {
            name: path(),
            expected: "BOOL, N or S",
        }),
    }
}

impl TryFrom<&Stored> for Contact {
    type Error = ItemError;

    fn try_from(Stored(stored): &Stored) -> Result<Contact, ItemError> {
        let email = EmailAddress::parse(get_s(stored, EMAIL)?)
            .map_err(|err| ItemError::invalid(EMAIL, err))?;
        let attributes = opt_map(stored, ATTRS)?
            .into_iter()
            .flatten()
            .map(|(name, value)| Ok((name.clone(), attr_from_dynamo(name, value)?)))
            .collect::<Result<Attributes, ItemError>>()?;
        Ok(Contact { email, attributes })
    }
}

fn kind_named(name: &str) -> Option<AttrKind> {
    [
        AttrKind::Bool,
        AttrKind::Int,
        AttrKind::Float,
        AttrKind::Str,
    ]
    .into_iter()
    .find(|kind| kind.as_str() == name)
}

impl TryFrom<&Stored> for ListSchema {
    type Error = ItemError;

    fn try_from(Stored(stored): &Stored) -> Result<ListSchema, ItemError> {
        let attributes = opt_map(stored, SCHEMA)?
            .into_iter()
            .flatten()
            .map(|(name, kind)| {
                let path = format!("{SCHEMA}.{name}");
                let AttributeValue::S(kind) = kind else {
                    return Err(ItemError::WrongType {
                        name: path,
                        expected: "S",
                    });
                };
                let kind = kind_named(kind).ok_or_else(|| {
                    ItemError::invalid(path, format!("'{kind}' is not bool, int, float or str"))
                })?;
                Ok((name.clone(), kind))
            })
            .collect::<Result<BTreeMap<_, _>, ItemError>>()?;
        Ok(ListSchema { attributes })
    }
}

fn schema_value(schema: &ListSchema) -> AttributeValue {
    AttributeValue::M(
        schema
            .attributes
            .iter()
            .map(|(name, kind)| (name.clone(), s(kind.as_str())))
            .collect(),
    )
}

#[async_trait]
impl ContactStore for DynamoContacts {
    /// Query `list_id = :list AND begins_with(sk, "c#")` in key order. The cursor is the last
    /// read contact's `sk`; a page the service returns empty but unfinished is skipped over.
    #[tracing::instrument(skip_all, fields(list = %list, limit = limit), err)]
    async fn page(
        &self,
        list: &ListId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ContactPage, StoreError> {
        const OP: &str = "read contacts";
        if let Some(cursor) = cursor
            && !cursor.starts_with(CONTACT_PREFIX)
        {
            return Err(StoreError::new(
                OP,
                format!("cursor '{cursor}' is not a contact key of this store"),
                false,
            ));
        }
        let mut start = cursor.map(|sk| Self::key(list, sk.to_owned()));
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#list = :list AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#list", LIST_ID)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":list", s(list.as_str()))
                .expression_attribute_values(":prefix", s(CONTACT_PREFIX))
                .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| store_error(OP, err))?;
            let next = output
                .last_evaluated_key
                .as_ref()
                .and_then(|key| get_s(key, SK).ok())
                .map(str::to_owned);
            let items = output.items.unwrap_or_default();
            if items.is_empty()
                && let Some(next) = next
            {
                start = Some(Self::key(list, next));
                continue;
            }
            let mut page = ContactPage {
                next,
                ..ContactPage::default()
            };
            for stored in items {
                let stored = Stored(stored);
                match Contact::try_from(&stored) {
                    Ok(contact) => page.contacts.push(contact),
                    Err(reason) => {
                        let key = get_s(&stored.0, SK).unwrap_or("(no sk)").to_owned();
                        page.unreadable.push((key, reason.to_string()));
                    }
                }
            }
            return Ok(page);
        }
    }

    #[tracing::instrument(skip_all, fields(list = %list, to = %shown(email)), err)]
    async fn get(
        &self,
        list: &ListId,
        email: &EmailAddress,
    ) -> Result<Option<Contact>, StoreError> {
        const OP: &str = "read contact";
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(list, Self::contact_sk(email))))
            .send()
            .await
            .map_err(|err| store_error(OP, err))?;
        output
            .item
            .map(|stored| Contact::try_from(&Stored(stored)))
            .transpose()
            .map_err(|err| err.into_store(OP, &format!("contact {} of list {list}", shown(email))))
    }

    /// BatchWriteItem in chunks of 25, retrying unprocessed items with [`Backoff`]. A repeated
    /// address is written once, its last occurrence winning; `written` counts every contact
    /// given.
    #[tracing::instrument(skip_all, fields(list = %list, contacts = contacts.len()), err)]
    async fn put_many(&self, list: &ListId, contacts: &[Contact]) -> Result<PutReport, StoreError> {
        const OP: &str = "put contacts";
        let now = Utc::now();
        let mut latest: HashMap<&EmailAddress, &Contact> = HashMap::with_capacity(contacts.len());
        for contact in contacts {
            latest.insert(&contact.email, contact);
        }
        let mut requests = Vec::with_capacity(latest.len());
        for contact in latest.into_values() {
            let stored = contact_item(list, contact, now).map_err(|err| {
                StoreError::new(
                    OP,
                    format!("contact {} cannot be stored: {err}", shown(&contact.email)),
                    false,
                )
            })?;
            let put = PutRequest::builder()
                .set_item(Some(stored))
                .build()
                .map_err(|err| StoreError::new(OP, err.to_string(), false))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let mut retried = 0;
        let mut chunks = requests.into_iter().peekable();
        while chunks.peek().is_some() {
            let chunk: Vec<WriteRequest> = chunks.by_ref().take(BATCH_WRITE_MAX).collect();
            retried += self.write_chunk(chunk).await?;
        }
        Ok(PutReport {
            written: contacts.len() as u64,
            retried,
        })
    }

    /// Query `list_id = :list AND sk BETWEEN a#{first} AND a#{last}` over the addresses'
    /// range (a page of the list is contiguous in key order, so this reads little more than
    /// the page's own activity items), keeping those asked for.
    #[tracing::instrument(skip_all, fields(list = %list, emails = emails.len()), err)]
    async fn last_sent(
        &self,
        list: &ListId,
        emails: &[EmailAddress],
    ) -> Result<HashMap<EmailAddress, LastSent>, StoreError> {
        const OP: &str = "read last sends";
        let (Some(first), Some(last)) = (emails.iter().min(), emails.iter().max()) else {
            return Ok(HashMap::new());
        };
        let wanted: std::collections::HashSet<&str> = emails.iter().map(|e| e.as_str()).collect();
        let mut found = HashMap::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#list = :list AND #sk BETWEEN :first AND :last")
                .expression_attribute_names("#list", LIST_ID)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":list", s(list.as_str()))
                .expression_attribute_values(
                    ":first",
                    s(format!("{ACTIVITY_PREFIX}{}", first.as_str())),
                )
                .expression_attribute_values(
                    ":last",
                    s(format!("{ACTIVITY_PREFIX}{}", last.as_str())),
                )
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| store_error(OP, err))?;
            for stored in output.items.unwrap_or_default() {
                let what = || format!("activity item of list {list}");
                let email = get_s(&stored, EMAIL).map_err(|err| err.into_store(OP, &what()))?;
                if !wanted.contains(email) {
                    continue;
                }
                let email = EmailAddress::parse(email)
                    .map_err(|err| StoreError::new(OP, format!("{}: {err}", what()), false))?;
                let at =
                    get_time(&stored, LAST_SENT_AT).map_err(|err| err.into_store(OP, &what()))?;
                let campaign =
                    get_s(&stored, LAST_CAMPAIGN).map_err(|err| err.into_store(OP, &what()))?;
                let run_id = get_s(&stored, LAST_RUN).map_err(|err| err.into_store(OP, &what()))?;
                let run = match (CampaignId::parse(campaign), RunId::parse(run_id)) {
                    (Ok(campaign), Ok(run_id)) => RunRef::new(campaign, run_id),
                    _ => {
                        return Err(StoreError::new(
                            OP,
                            format!(
                                "{} names the run '{campaign}/{run_id}', which is not one",
                                what()
                            ),
                            false,
                        ));
                    }
                };
                found.insert(email, LastSent { at, run });
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }

    #[tracing::instrument(skip_all, fields(list = %list, run = %run, to = %shown(email)), err)]
    async fn record_last_sent(
        &self,
        list: &ListId,
        email: &EmailAddress,
        run: &RunRef,
        result: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item([
                (LIST_ID, s(list.as_str())),
                (SK, s(format!("{ACTIVITY_PREFIX}{}", email.as_str()))),
                (EMAIL, s(email.as_str())),
                (LAST_SENT_AT, time(at)),
                ("last_result", s(result)),
                (LAST_CAMPAIGN, s(run.campaign_id.as_str())),
                (LAST_RUN, s(run.run_id.as_str())),
            ])))
            .send()
            .await
            .map_err(|err| store_error("record last sent", err))?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(list = %list), err)]
    async fn schema(&self, list: &ListId) -> Result<Option<ListSchema>, StoreError> {
        Ok(self.read_schema(list).await?.map(|(schema, _)| schema))
    }

    /// Read, merge, and write back conditioned on the version read, retrying (with
    /// [`Backoff`]) when another import wrote in between, so kinds widen correctly under
    /// concurrent imports.
    #[tracing::instrument(skip_all, fields(list = %list), err)]
    async fn merge_schema(&self, list: &ListId, observed: &ListSchema) -> Result<(), StoreError> {
        const OP: &str = "merge list schema";
        for retry in 0..=self.backoff.retries {
            if retry > 0 {
                self.backoff.wait(retry).await;
            }
            let current = self.read_schema(list).await?;
            let mut merged = current
                .as_ref()
                .map(|(schema, _)| schema.clone())
                .unwrap_or_default();
            merged.merge(observed);
            let record = item([
                (LIST_ID, s(list.as_str())),
                (SK, s(SCHEMA_SK)),
                (SCHEMA, schema_value(&merged)),
                (
                    VERSION,
                    n(current.as_ref().map_or(0, |(_, version)| *version) + 1),
                ),
                (UPDATED_AT, time(Utc::now())),
            ]);
            let written = match &current {
                Some((schema, _)) if *schema == merged => return Ok(()),
                Some((_, version)) => {
                    let mut condition = Update::default();
                    let name = condition.name(VERSION);
                    let value = condition.value(VERSION, n(version));
                    condition.condition = format!("{name} = {value}");
                    put_if(&self.client, &self.table, OP, record, condition, None).await?
                }
                None => put_if_absent(&self.client, &self.table, OP, SK, record, None).await?,
            };
            if written.is_ok() {
                return Ok(());
            }
            tracing::debug!(retry, "list schema changed meanwhile; merging again");
        }
        Err(StoreError::new(
            OP,
            format!(
                "the schema of list {list} kept changing during {} attempts",
                self.backoff.retries + 1
            ),
            true,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb::testing::dynamo_client;
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_smithy_mocks::mock;

    fn list() -> ListId {
        ListId::parse("newsletter").unwrap()
    }

    fn contact(i: usize) -> Contact {
        let mut attributes = Attributes::new();
        attributes.insert("first_name".into(), AttrValue::Str(format!("N{i}")));
        attributes.insert("score".into(), AttrValue::Int(i as i64));
        attributes.insert("ratio".into(), AttrValue::Float(0.5));
        attributes.insert("vip".into(), AttrValue::Bool(i.is_multiple_of(2)));
        Contact {
            email: EmailAddress::parse(&format!("r{i}@example.com")).unwrap(),
            attributes,
        }
    }

    fn unprocessed(requests: &[WriteRequest]) -> BatchWriteItemOutput {
        BatchWriteItemOutput::builder()
            .unprocessed_items("contacts", requests.to_vec())
            .build()
    }

    #[test]
    fn when_a_contact_is_stored_then_it_reads_back_with_typed_attributes() {
        let original = contact(2);
        let stored = contact_item(&list(), &original, Utc::now()).unwrap();
        assert_eq!(stored[SK], s("c#r2@example.com"));
        let AttributeValue::M(attrs) = &stored[ATTRS] else {
            panic!("attrs is a map")
        };
        assert_eq!(attrs["score"], AttributeValue::N("2".into()));
        assert_eq!(attrs["ratio"], AttributeValue::N("0.5".into()));
        assert_eq!(attrs["vip"], AttributeValue::Bool(true));
        assert_eq!(Contact::try_from(&Stored(stored)).unwrap(), original);
    }

    #[test]
    fn when_a_number_has_a_point_or_exponent_then_it_reads_as_a_float() {
        for (text, expected) in [
            ("2", AttrValue::Int(2)),
            ("-7", AttrValue::Int(-7)),
            ("2.5", AttrValue::Float(2.5)),
            ("1E+3", AttrValue::Float(1000.0)),
            ("1e-3", AttrValue::Float(0.001)),
        ] {
            assert_eq!(
                attr_from_dynamo("x", &AttributeValue::N(text.into())),
                Ok(expected),
                "{text}"
            );
        }
        assert_eq!(
            attr_to_dynamo("x", &AttrValue::Float(2.0)),
            Ok(AttributeValue::N("2.0".into()))
        );
        assert!(attr_to_dynamo("x", &AttrValue::Float(f64::NAN)).is_err());
        assert!(attr_from_dynamo("x", &AttributeValue::N("99999999999999999999".into())).is_err());
    }

    #[test]
    fn schemas_round_trip_and_unknown_kinds_are_named() {
        let mut schema = ListSchema::default();
        schema.attributes.insert("score".into(), AttrKind::Float);
        schema.attributes.insert("vip".into(), AttrKind::Bool);
        let stored = item([(SCHEMA, schema_value(&schema))]);
        assert_eq!(ListSchema::try_from(&Stored(stored)).unwrap(), schema);
        let bad = item([(
            SCHEMA,
            AttributeValue::M([("x".to_owned(), s("date"))].into()),
        )]);
        let err = ListSchema::try_from(&Stored(bad)).unwrap_err().to_string();
        assert!(err.contains("schema.x") && err.contains("'date'"), "{err}");
    }

    #[tokio::test]
    async fn when_items_are_left_unprocessed_then_they_are_retried_and_counted() {
        let first = mock!(Client::batch_write_item)
            .match_requests(|req| req.request_items().unwrap()["contacts"].len() == 3)
            .then_compute_output(|req| {
                let sent = &req.request_items().unwrap()["contacts"];
                unprocessed(&sent[1..])
            });
        let second = mock!(Client::batch_write_item)
            .match_requests(|req| req.request_items().unwrap()["contacts"].len() == 2)
            .then_compute_output(|req| {
                let sent = &req.request_items().unwrap()["contacts"];
                unprocessed(&sent[1..])
            });
        let third = mock!(Client::batch_write_item)
            .match_requests(|req| req.request_items().unwrap()["contacts"].len() == 1)
            .then_output(|| BatchWriteItemOutput::builder().build());
        let client = dynamo_client!(&first, &second, &third);
        let store = DynamoContacts::new(client, "contacts").with_backoff(Backoff::immediate(3));

        let report = store
            .put_many(&list(), &[contact(1), contact(2), contact(3)])
            .await
            .unwrap();

        assert_eq!(
            report,
            PutReport {
                written: 3,
                retried: 3
            }
        );
        assert_eq!(
            first.num_calls() + second.num_calls() + third.num_calls(),
            3
        );
    }

    #[tokio::test]
    async fn when_items_stay_unprocessed_then_put_many_fails_retryably() {
        let stuck = mock!(Client::batch_write_item)
            .then_compute_output(|req| unprocessed(&req.request_items().unwrap()["contacts"]));
        let client = aws_smithy_mocks::mock_client!(
            aws_sdk_dynamodb,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&stuck]
        );
        let store = DynamoContacts::new(client, "contacts").with_backoff(Backoff::immediate(2));

        let err = store.put_many(&list(), &[contact(1)]).await.unwrap_err();

        assert!(err.retryable);
        assert!(
            err.message.contains("1 contacts were still unprocessed"),
            "{err}"
        );
        assert_eq!(stuck.num_calls(), 3);
    }

    #[tokio::test]
    async fn when_more_than_25_contacts_are_put_then_they_go_in_chunks_of_25() {
        let accept = mock!(Client::batch_write_item)
            .match_requests(|req| req.request_items().unwrap()["contacts"].len() <= 25)
            .then_output(|| BatchWriteItemOutput::builder().build());
        let client = aws_smithy_mocks::mock_client!(
            aws_sdk_dynamodb,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&accept]
        );
        let store = DynamoContacts::new(client, "contacts");
        let mut contacts: Vec<Contact> = (0..60).map(contact).collect();
        contacts.push(contact(0));

        let report = store.put_many(&list(), &contacts).await.unwrap();

        assert_eq!(report.written, 61);
        assert_eq!(accept.num_calls(), 3);
    }

    #[tokio::test]
    async fn when_a_page_holds_an_unreadable_item_then_it_is_reported_not_fatal() {
        let page = mock!(Client::query)
            .match_requests(|req| {
                req.exclusive_start_key().map(|key| key[SK].clone()) == Some(s("c#a@example.com"))
            })
            .then_output(|| {
                QueryOutput::builder()
                    .items(contact_item(&list(), &contact(1), Utc::now()).unwrap())
                    .items(item([
                        (LIST_ID, s("newsletter")),
                        (SK, s("c#broken")),
                        (EMAIL, s("not an address")),
                    ]))
                    .last_evaluated_key(LIST_ID, s("newsletter"))
                    .last_evaluated_key(SK, s("c#broken"))
                    .build()
            });
        let client = dynamo_client!(&page);
        let store = DynamoContacts::new(client, "contacts");

        let page = store
            .page(&list(), Some("c#a@example.com"), 2)
            .await
            .unwrap();

        assert_eq!(page.contacts, vec![contact(1)]);
        assert_eq!(page.unreadable.len(), 1);
        assert_eq!(page.unreadable[0].0, "c#broken");
        assert!(
            page.unreadable[0].1.contains("email"),
            "{:?}",
            page.unreadable
        );
        assert_eq!(page.next.as_deref(), Some("c#broken"));
    }

    #[tokio::test]
    async fn when_a_page_comes_back_empty_but_unfinished_then_reading_continues() {
        let empty = mock!(Client::query).then_output(|| {
            QueryOutput::builder()
                .last_evaluated_key(LIST_ID, s("newsletter"))
                .last_evaluated_key(SK, s("c#m@example.com"))
                .build()
        });
        let rest = mock!(Client::query)
            .match_requests(|req| {
                req.exclusive_start_key().map(|key| key[SK].clone()) == Some(s("c#m@example.com"))
            })
            .then_output(|| {
                QueryOutput::builder()
                    .items(contact_item(&list(), &contact(7), Utc::now()).unwrap())
                    .build()
            });
        let client = dynamo_client!(&empty, &rest);
        let store = DynamoContacts::new(client, "contacts");

        let page = store.page(&list(), None, 10).await.unwrap();

        assert_eq!(page.contacts, vec![contact(7)]);
        assert_eq!(page.next, None);
        assert_eq!(rest.num_calls(), 1);
    }
}
