//! The deliveries table (the ledger): partition key `run_key` (S, `RunRef::key()`,
//! `campaign#run`), sort key `email` (S).
//!
//! | attribute | type | |
//! |---|---|---|
//! | `state` | S | `DeliveryState::as_str` |
//! | `claim_token` | S | who holds (or last held) the claim |
//! | `claimed_at` | S | RFC 3339 |
//! | `ses_message_id` | S | once sent; the `by_message_id` index is on it |
//! | `reason` | S | why failed or suppressed |
//! | `updated_at` | S | RFC 3339, the last transition |
//! | `fb_<mark>` | S | RFC 3339: when SES first reported `delivered`, `opened`, `hard_bounced`, ... |
//! | `feedback_detail` | S | the latest bounce diagnostic, complaint type or rejection reason |
//! | `fb_events` | SS | ids of the feedback events recorded, so a redelivered one changes nothing |
//!
//! Malformed inputs ([`RejectLog`]) share the table in partitions of their own:
//! `run_key = rejected#{source}`, `email` = the input's id (e.g. the SQS message id), with
//! `reason` (S), `excerpt` (S, at most 2 KB) and `at` (S).
//!
//! Every transition is one conditional write, so the ledger's rules hold across concurrent
//! senders: a claim only where no record exists, an outcome only for the token holding the
//! claim, and nothing ever leaves a terminal state.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::feedback::{Feedback, Mark, Marks};
use hikyaku_core::ids::RunRef;
use hikyaku_core::ledger::{DeliveryRecord, DeliveryState, LedgerCounts, Outcome};
use hikyaku_core::logging::shown;
use hikyaku_core::ports::{
    ClaimResult, FeedbackApplied, FeedbackLedger, Ledger, RejectLog, RejectedInput, StoreError,
};
use hikyaku_core::report::LedgerReader;

use super::item::{
    Item, ItemError, Stored, get_parsed, get_s, get_time, item, opt_s, opt_time, s, time, truncated,
};
use super::write::{Conditional, Update, delete_if, put_if_absent, update_if, update_returning};
use crate::error::store_error;

const RUN_KEY: &str = "run_key";
const EMAIL: &str = "email";
const STATE: &str = "state";
const CLAIM_TOKEN: &str = "claim_token";
const CLAIMED_AT: &str = "claimed_at";
const SES_MESSAGE_ID: &str = "ses_message_id";
const REASON: &str = "reason";
const UPDATED_AT: &str = "updated_at";
const FEEDBACK_DETAIL: &str = "feedback_detail";
const FEEDBACK_EVENTS: &str = "fb_events";
/// The index of the ledger on `ses_message_id` (keys only).
const BY_MESSAGE_ID: &str = "by_message_id";

/// The attribute holding when `mark` was first reported.
fn mark_attribute(mark: Mark) -> String {
    format!("fb_{}", mark.as_str())
}

/// The most of a rejected input kept for diagnosis.
const EXCERPT_MAX_BYTES: usize = 2048;

/// [`Ledger`] on the deliveries table.
#[derive(Clone, Debug)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// Query includes the `by_message_id` index. `OPERATIONS` is kept true by a test that reads
    /// this module's source.
    pub const OPERATIONS: &[&str] = &[
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ];

    /// The adapter of the deliveries table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoLedger {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    fn key(run: &RunRef, email: &EmailAddress) -> Item {
        item([(RUN_KEY, s(run.key())), (EMAIL, s(email.as_str()))])
    }

    /// Writes `record` only where the recipient has none; otherwise the record found (from the
    /// failed condition, or read back when the store did not return it).
    async fn put_or_existing(
        &self,
        operation: &'static str,
        run: &RunRef,
        email: &EmailAddress,
        record: Item,
    ) -> Result<ClaimResult, StoreError> {
        let written = put_if_absent(
            &self.client,
            &self.table,
            operation,
            EMAIL,
            record,
            Some(ReturnValuesOnConditionCheckFailure::AllOld),
        )
        .await?;
        match written {
            Ok(()) => Ok(ClaimResult::Claimed),
            Err(Some(existing)) => Ok(ClaimResult::Existing(decode(operation, run, existing)?)),
            Err(None) => match self.read(operation, run, email).await? {
                Some(existing) => Ok(ClaimResult::Existing(existing)),
                // Released between the two calls: the caller may try again later.
                None => Err(StoreError::new(
                    operation,
                    "the record changed while it was being written",
                    true,
                )),
            },
        }
    }

    /// Reads one record, strongly consistent.
    async fn read(
        &self,
        operation: &'static str,
        run: &RunRef,
        email: &EmailAddress,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run, email)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error(operation, err))?;
        output
            .item
            .map(|stored| decode(operation, run, stored))
            .transpose()
    }

    /// Queries the run's whole partition (strongly consistent), page by page.
    async fn query_all(
        &self,
        operation: &'static str,
        run: &RunRef,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        self.query_pages(operation, run, projection, true, &mut |page| {
            items.extend(page);
            Ok(())
        })
        .await?;
        Ok(items)
    }

    /// Queries the run's whole partition and hands each page to `page` as it arrives.
    async fn query_pages(
        &self,
        operation: &'static str,
        run: &RunRef,
        projection: Option<&str>,
        consistent: bool,
        page: &mut (dyn FnMut(Vec<Item>) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#run_key = :run_key")
                .expression_attribute_names("#run_key", RUN_KEY)
                .expression_attribute_values(":run_key", s(run.key()))
                .consistent_read(consistent)
                .set_exclusive_start_key(start);
            if let Some(projection) = projection {
                query = query
                    .projection_expression(projection)
                    .expression_attribute_names("#state", STATE)
                    .expression_attribute_names("#updated_at", UPDATED_AT);
            }
            let output = query
                .send()
                .await
                .map_err(|err| store_error(operation, err))?;
            page(output.items.unwrap_or_default())?;
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }

    /// Sets `assignments` on a record still held by `token`: `Ok(())` when done, `Err(stored)`
    /// when the record is not held by `token` (with the stored record when the service sent it).
    async fn transition(
        &self,
        operation: &'static str,
        run: &RunRef,
        email: &EmailAddress,
        token: Option<&str>,
        assignments: &[(&'static str, AttributeValue)],
    ) -> Result<Conditional, StoreError> {
        let mut update = held_by(token);
        for (name, value) in assignments {
            update.set(name, value.clone());
        }
        update_if(
            &self.client,
            &self.table,
            operation,
            Self::key(run, email),
            update,
        )
        .await
    }

    /// A record of a recipient never sent to, only if it has none (see `put_or_existing`).
    async fn put_unsent(
        &self,
        operation: &'static str,
        run: &RunRef,
        email: &EmailAddress,
        state: DeliveryState,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        let record = item([
            (RUN_KEY, s(run.key())),
            (EMAIL, s(email.as_str())),
            (STATE, s(state.as_str())),
            (REASON, s(reason)),
            (UPDATED_AT, time(now)),
        ]);
        self.put_or_existing(operation, run, email, record).await
    }
}

/// An UpdateItem or DeleteItem condition: the record is `claimed` and held by `token`
/// (`None`: a claim without a token).
fn held_by(token: Option<&str>) -> Update {
    let mut update = Update::default();
    let state = update.name(STATE);
    let claimed = update.value("claimed", s(DeliveryState::Claimed.as_str()));
    let claim_token = update.name(CLAIM_TOKEN);
    update.condition = match token {
        Some(token) => {
            let token = update.value("token", s(token));
            format!("{state} = {claimed} AND {claim_token} = {token}")
        }
        None => format!("{state} = {claimed} AND attribute_not_exists({claim_token})"),
    };
    update
}

impl TryFrom<Stored> for DeliveryRecord {
    type Error = ItemError;

    fn try_from(Stored(stored): Stored) -> Result<DeliveryRecord, ItemError> {
        Ok(DeliveryRecord {
            email: EmailAddress::parse(get_s(&stored, EMAIL)?)
                .map_err(|err| ItemError::invalid(EMAIL, err))?,
            state: get_parsed(&stored, STATE)?,
            claim_token: opt_s(&stored, CLAIM_TOKEN)?.map(str::to_owned),
            claimed_at: opt_time(&stored, CLAIMED_AT)?,
            ses_message_id: opt_s(&stored, SES_MESSAGE_ID)?.map(str::to_owned),
            reason: opt_s(&stored, REASON)?.map(str::to_owned),
            updated_at: get_time(&stored, UPDATED_AT)?,
            marks: marks_of(&stored)?,
            feedback_detail: opt_s(&stored, FEEDBACK_DETAIL)?.map(str::to_owned),
        })
    }
}

fn marks_of(stored: &Item) -> Result<Marks, ItemError> {
    let mut marks = Marks::default();
    for mark in Mark::ALL {
        if let Some(at) = opt_time(stored, &mark_attribute(mark))? {
            marks.record(mark, at);
        }
    }
    Ok(marks)
}

fn decode(
    operation: &'static str,
    run: &RunRef,
    stored: Item,
) -> Result<DeliveryRecord, StoreError> {
    let what = match get_s(&stored, EMAIL).ok().map(EmailAddress::parse) {
        Some(Ok(email)) => format!("ledger record of {} in run {run}", shown(&email)),
        _ => format!("ledger record in run {run}"),
    };
    DeliveryRecord::try_from(Stored(stored)).map_err(|err| err.into_store(operation, &what))
}

#[async_trait]
impl Ledger for DynamoLedger {
    /// PutItem `claimed` conditioned on `attribute_not_exists(email)`; an existing record
    /// comes back with the condition failure (ALL_OLD) or, if the service sent none, from a
    /// consistent read.
    #[tracing::instrument(skip_all, fields(run = %run, to = %shown(email)), err)]
    async fn claim(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        const OP: &str = "claim recipient";
        let record = item([
            (RUN_KEY, s(run.key())),
            (EMAIL, s(email.as_str())),
            (STATE, s(DeliveryState::Claimed.as_str())),
            (CLAIM_TOKEN, s(token)),
            (CLAIMED_AT, time(now)),
            (UPDATED_AT, time(now)),
        ]);
        self.put_or_existing(OP, run, email, record).await
    }

    /// PutItem `suppressed` conditioned on `attribute_not_exists(email)`.
    #[tracing::instrument(skip_all, fields(run = %run, to = %shown(email)), err)]
    async fn record_suppressed(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        const OP: &str = "record suppressed";
        self.put_unsent(OP, run, email, DeliveryState::Suppressed, reason, now)
            .await
    }

    /// As `record_suppressed`, in `cancelled`.
    #[tracing::instrument(skip_all, fields(run = %run, to = %shown(email)), err)]
    async fn record_cancelled(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        const OP: &str = "record cancelled";
        self.put_unsent(
            OP,
            run,
            email,
            DeliveryState::Cancelled,
            "run cancelled",
            now,
        )
        .await
    }

    /// UpdateItem conditioned on `state = claimed AND claim_token = token`. A record already
    /// in the outcome's state under `token` counts as done: that is this very update, repeated
    /// by the SDK after a lost response (tokens are unique per attempt).
    #[tracing::instrument(skip_all, fields(run = %run, to = %shown(email), state = %outcome.state()), err)]
    async fn complete(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let detail = match outcome {
            Outcome::Sent { ses_message_id } => (SES_MESSAGE_ID, s(ses_message_id.as_str())),
            Outcome::Failed { reason } => (REASON, s(reason.as_str())),
        };
        let assignments = [
            (STATE, s(outcome.state().as_str())),
            (UPDATED_AT, time(now)),
            detail,
        ];
        let written = self
            .transition("complete delivery", run, email, Some(token), &assignments)
            .await?;
        Ok(match written {
            Ok(()) => true,
            Err(Some(stored)) => {
                opt_s(&stored, STATE) == Ok(Some(outcome.state().as_str()))
                    && opt_s(&stored, CLAIM_TOKEN) == Ok(Some(token))
            }
            Err(None) => false,
        })
    }

    /// DeleteItem conditioned on `state = claimed AND claim_token = token`; a record no longer
    /// held by `token` is left alone.
    #[tracing::instrument(skip_all, fields(run = %run, to = %shown(email)), err)]
    async fn release(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        token: &str,
    ) -> Result<(), StoreError> {
        // A refusal means the claim is no longer `token`'s: nothing to release.
        delete_if(
            &self.client,
            &self.table,
            "release claim",
            Self::key(run, email),
            held_by(Some(token)),
        )
        .await
        .map(|_| ())
    }

    /// UpdateItem to `uncertain`, conditioned on the claim still being held by `stale_token`
    /// (`None`: a claim recorded without a token).
    #[tracing::instrument(skip_all, fields(run = %run, to = %shown(email)), err)]
    async fn mark_uncertain(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        stale_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let assignments = [
            (STATE, s(DeliveryState::Uncertain.as_str())),
            (UPDATED_AT, time(now)),
        ];
        Ok(self
            .transition("mark uncertain", run, email, stale_token, &assignments)
            .await?
            .is_ok())
    }

    /// Query of the run's partition projecting `state` and `updated_at`, to the end,
    /// strongly consistent; `updated_at` of `sent` records gives the first and last send.
    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn counts(&self, run: &RunRef) -> Result<LedgerCounts, StoreError> {
        const OP: &str = "count deliveries";
        let mut counts = LedgerCounts::default();
        for stored in self.query_all(OP, run, Some("#state, #updated_at")).await? {
            let what = || format!("ledger record in run {run}");
            let state: DeliveryState =
                get_parsed(&stored, STATE).map_err(|err| err.into_store(OP, &what()))?;
            counts.add(state);
            if state == DeliveryState::Sent {
                let at =
                    get_time(&stored, UPDATED_AT).map_err(|err| err.into_store(OP, &what()))?;
                counts.observe_sent_at(at);
            }
        }
        Ok(counts)
    }

    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn records(&self, run: &RunRef) -> Result<Vec<DeliveryRecord>, StoreError> {
        const OP: &str = "read deliveries";
        self.query_all(OP, run, None)
            .await?
            .into_iter()
            .map(|stored| decode(OP, run, stored))
            .collect()
    }
}

#[async_trait]
impl LedgerReader for DynamoLedger {
    /// Query of the run's partition, every attribute, page by page (eventually consistent,
    /// half the read cost of a strongly consistent one: a report may miss a write of the last
    /// moment); each page is decoded and handed on before the next is read.
    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn each_record(
        &self,
        run: &RunRef,
        visit: &mut (dyn FnMut(DeliveryRecord) + Send),
    ) -> Result<u64, StoreError> {
        const OP: &str = "read deliveries for a report";
        let mut visited = 0;
        self.query_pages(OP, run, None, false, &mut |page| {
            for stored in page {
                visit(decode(OP, run, stored)?);
                visited += 1;
            }
            Ok(())
        })
        .await?;
        Ok(visited)
    }
}

#[async_trait]
impl FeedbackLedger for DynamoLedger {
    /// Query of the `by_message_id` index; the message's one recipient.
    #[tracing::instrument(skip_all, fields(ses_message_id), err)]
    async fn find_by_message_id(
        &self,
        ses_message_id: &str,
    ) -> Result<Option<(RunRef, EmailAddress)>, StoreError> {
        const OP: &str = "find delivery by message id";
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_MESSAGE_ID)
            .key_condition_expression("#id = :id")
            .expression_attribute_names("#id", SES_MESSAGE_ID)
            .expression_attribute_values(":id", s(ses_message_id))
            .limit(1)
            .send()
            .await
            .map_err(|err| store_error(OP, err))?;
        let Some(stored) = output.items.unwrap_or_default().into_iter().next() else {
            return Ok(None);
        };
        let what = format!("ledger index entry of message {ses_message_id}");
        let decoded = (|| {
            let run = RunRef::from_key(get_s(&stored, RUN_KEY)?)
                .map_err(|err| ItemError::invalid(RUN_KEY, err))?;
            let email = EmailAddress::parse(get_s(&stored, EMAIL)?)
                .map_err(|err| ItemError::invalid(EMAIL, err))?;
            Ok::<_, ItemError>((run, email))
        })();
        decoded.map(Some).map_err(|err| err.into_store(OP, &what))
    }

    /// One UpdateItem: the mark's time `if_not_exists`, the detail, and the event id added to
    /// `fb_events`, conditioned on the record existing and not holding the event yet. The
    /// record as it was (ALL_OLD) gives the marks before; a failed condition tells a duplicate
    /// (a record came back) from an unknown recipient (none did).
    #[tracing::instrument(skip_all, fields(run = %run, to = %shown(email), mark = %feedback.mark()), err)]
    async fn apply_feedback(
        &self,
        run: &RunRef,
        email: &EmailAddress,
        event_id: &str,
        feedback: &Feedback,
        at: DateTime<Utc>,
    ) -> Result<FeedbackApplied, StoreError> {
        const OP: &str = "record feedback";
        let mut update = Update::default();
        let mark = update.name(&mark_attribute(feedback.mark()));
        let first_seen = update.value("at", time(at));
        update.set_expression(format!("{mark} = if_not_exists({mark}, {first_seen})"));
        if let Some(detail) = feedback.kept_detail() {
            update.set(FEEDBACK_DETAIL, s(truncated(&detail, EXCERPT_MAX_BYTES)));
        }
        update.add(
            FEEDBACK_EVENTS,
            AttributeValue::Ss(vec![event_id.to_owned()]),
        );
        let email_name = update.name(EMAIL);
        let events = update.name(FEEDBACK_EVENTS);
        let event = update.value("event", s(event_id));
        update.condition =
            format!("attribute_exists({email_name}) AND NOT contains({events}, {event})");
        let answer = update_returning(
            &self.client,
            &self.table,
            OP,
            Self::key(run, email),
            update,
            ReturnValue::AllOld,
        )
        .await?;
        match answer {
            Ok(before) => {
                let before = before.unwrap_or_default();
                let marks = marks_of(&before).map_err(|err| {
                    err.into_store(
                        OP,
                        &format!("ledger record of {} in run {run}", shown(email)),
                    )
                })?;
                Ok(FeedbackApplied::Applied { before: marks })
            }
            Err(Some(_)) => Ok(FeedbackApplied::Duplicate),
            // The service sent nothing back: a consistent read tells the two apart.
            Err(None) => Ok(match self.read(OP, run, email).await? {
                Some(_) => FeedbackApplied::Duplicate,
                None => FeedbackApplied::NoRecord,
            }),
        }
    }
}

/// [`RejectLog`] on the deliveries table, in `rejected#{source}` partitions.
#[derive(Clone, Debug)]
pub struct DynamoRejects {
    client: Client,
    table: String,
}

impl DynamoRejects {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["dynamodb:PutItem"];

    /// The reject log in the deliveries table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoRejects {
        DynamoRejects {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl RejectLog for DynamoRejects {
    /// PutItem (a second record of the same input replaces the first); the excerpt is cut to
    /// 2 KB.
    #[tracing::instrument(skip_all, fields(source = %rejected.source, id = %rejected.id), err)]
    async fn record(&self, rejected: &RejectedInput) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item([
                (RUN_KEY, s(format!("rejected#{}", rejected.source))),
                (EMAIL, s(rejected.id.as_str())),
                (REASON, s(rejected.reason.as_str())),
                (
                    "excerpt",
                    s(truncated(&rejected.excerpt, EXCERPT_MAX_BYTES)),
                ),
                ("at", time(rejected.at)),
            ])))
            .send()
            .await
            .map_err(|err| store_error("record rejected input", err))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb::testing::dynamo_client;
    use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::mock;
    use chrono::TimeZone;
    use hikyaku_core::ids::{CampaignId, RunId};

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 24, 9, minute, 0).unwrap()
    }

    fn run() -> RunRef {
        RunRef::new(
            CampaignId::parse("winter").unwrap(),
            RunId::from_scheduled_time(at(0)),
        )
    }

    fn email() -> EmailAddress {
        EmailAddress::parse("aiko@example.com").unwrap()
    }

    fn condition_failed(old: Option<Item>) -> ConditionalCheckFailedException {
        ConditionalCheckFailedException::builder()
            .set_item(old)
            .build()
    }

    fn ledger(client: Client) -> DynamoLedger {
        DynamoLedger::new(client, "deliveries")
    }

    #[tokio::test]
    async fn when_the_recipient_is_unclaimed_then_the_claim_is_a_conditional_put() {
        let put = mock!(Client::put_item)
            .match_requests(|req| {
                req.condition_expression() == Some("attribute_not_exists(#email)")
                    && req.item().unwrap()[RUN_KEY] == s("winter#20261224T090000Z")
                    && req.item().unwrap()[STATE] == s("claimed")
                    && req.item().unwrap()[CLAIM_TOKEN] == s("req-1")
            })
            .then_output(|| PutItemOutput::builder().build());
        let claimed = ledger(dynamo_client!(&put))
            .claim(&run(), &email(), "req-1", at(1))
            .await
            .unwrap();
        assert_eq!(claimed, ClaimResult::Claimed);
    }

    #[tokio::test]
    async fn when_a_record_exists_then_claim_returns_it_decoded_from_the_condition_failure() {
        let refused = mock!(Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(condition_failed(Some(item([
                (RUN_KEY, s("winter#20261224T090000Z")),
                (EMAIL, s("aiko@example.com")),
                (STATE, s("sent")),
                (CLAIM_TOKEN, s("req-0")),
                (CLAIMED_AT, time(at(1))),
                (SES_MESSAGE_ID, s("0100-abc")),
                (UPDATED_AT, time(at(2))),
            ]))))
        });
        let existing = ledger(dynamo_client!(&refused))
            .claim(&run(), &email(), "req-1", at(5))
            .await
            .unwrap();
        assert_eq!(
            existing,
            ClaimResult::Existing(DeliveryRecord {
                email: email(),
                state: DeliveryState::Sent,
                claim_token: Some("req-0".into()),
                claimed_at: Some(at(1)),
                ses_message_id: Some("0100-abc".into()),
                reason: None,
                updated_at: at(2),
                marks: Default::default(),
                feedback_detail: None,
            })
        );
        assert_eq!(refused.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_the_claim_is_no_longer_ours_then_complete_answers_false() {
        let refused = mock!(Client::update_item)
            .match_requests(|req| {
                req.condition_expression() == Some("#state = :claimed AND #claim_token = :token")
                    && req.expression_attribute_values().unwrap()[":token"] == s("req-1")
            })
            .then_error(|| {
                UpdateItemError::ConditionalCheckFailedException(condition_failed(None))
            });
        let done = ledger(dynamo_client!(&refused))
            .complete(
                &run(),
                &email(),
                "req-1",
                &Outcome::Sent {
                    ses_message_id: "0100-abc".into(),
                },
                at(3),
            )
            .await
            .unwrap();
        assert!(!done);
    }

    #[tokio::test]
    async fn when_the_completion_was_already_written_by_this_attempt_then_complete_answers_true() {
        let repeated = mock!(Client::update_item).then_error(|| {
            UpdateItemError::ConditionalCheckFailedException(condition_failed(Some(item([
                (RUN_KEY, s("winter#20261224T090000Z")),
                (EMAIL, s("aiko@example.com")),
                (STATE, s("failed")),
                (CLAIM_TOKEN, s("req-1")),
                (UPDATED_AT, time(at(3))),
            ]))))
        });
        let failed = Outcome::Failed {
            reason: "MessageRejected: bad content".into(),
        };
        let done = ledger(dynamo_client!(&repeated))
            .complete(&run(), &email(), "req-1", &failed, at(3))
            .await
            .unwrap();
        assert!(done);
    }

    #[tokio::test]
    async fn when_a_claim_completes_then_state_time_and_message_id_are_set() {
        let update = mock!(Client::update_item)
            .match_requests(|req| {
                let values = req.expression_attribute_values().unwrap();
                req.update_expression()
                    == Some("SET #state = :state, #updated_at = :updated_at, #ses_message_id = :ses_message_id")
                    && values[":state"] == s("sent")
                    && values[":ses_message_id"] == s("0100-abc")
            })
            .then_output(|| UpdateItemOutput::builder().build());
        let done = ledger(dynamo_client!(&update))
            .complete(
                &run(),
                &email(),
                "req-1",
                &Outcome::Sent {
                    ses_message_id: "0100-abc".into(),
                },
                at(3),
            )
            .await
            .unwrap();
        assert!(done);
    }

    #[tokio::test]
    async fn when_an_abandoned_claim_had_no_token_then_uncertain_requires_its_absence() {
        let update = mock!(Client::update_item)
            .match_requests(|req| {
                req.condition_expression()
                    == Some("#state = :claimed AND attribute_not_exists(#claim_token)")
                    && !req
                        .expression_attribute_values()
                        .unwrap()
                        .contains_key(":token")
            })
            .then_output(|| UpdateItemOutput::builder().build());
        assert!(
            ledger(dynamo_client!(&update))
                .mark_uncertain(&run(), &email(), None, at(9))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn when_the_claim_to_release_is_gone_then_release_succeeds_quietly() {
        let refused = mock!(Client::delete_item).then_error(|| {
            DeleteItemError::ConditionalCheckFailedException(condition_failed(None))
        });
        ledger(dynamo_client!(&refused))
            .release(&run(), &email(), "req-1")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn counts_read_every_page_and_time_the_sends() {
        let sent = |minute| item([(STATE, s("sent")), (UPDATED_AT, time(at(minute)))]);
        let first = mock!(Client::query)
            .match_requests(|req| {
                req.consistent_read() == Some(true)
                    && req.projection_expression() == Some("#state, #updated_at")
            })
            .then_output(move || {
                QueryOutput::builder()
                    .items(sent(4))
                    .items(item([(STATE, s("failed")), (UPDATED_AT, time(at(5)))]))
                    .last_evaluated_key(RUN_KEY, s("winter#20261224T090000Z"))
                    .last_evaluated_key(EMAIL, s("b@example.com"))
                    .build()
            });
        let second = mock!(Client::query)
            .match_requests(|req| req.exclusive_start_key().is_some())
            .then_output(move || QueryOutput::builder().items(sent(2)).items(sent(8)).build());
        let counts = ledger(dynamo_client!(&first, &second))
            .counts(&run())
            .await
            .unwrap();
        assert_eq!(counts.sent, 3);
        assert_eq!(counts.failed, 1);
        assert_eq!(counts.first_sent_at, Some(at(2)));
        assert_eq!(counts.last_sent_at, Some(at(8)));
    }

    #[tokio::test]
    async fn a_report_reads_every_page_of_the_run_eventually_consistent_with_every_attribute() {
        let record = |email: &str, state: &str, minute| {
            item([
                (RUN_KEY, s("winter#20261224T090000Z")),
                (EMAIL, s(email)),
                (STATE, s(state)),
                (UPDATED_AT, time(at(minute))),
                ("fb_hard_bounced", time(at(minute + 1))),
                (FEEDBACK_DETAIL, s("Permanent/General: 550 user unknown")),
            ])
        };
        let first = mock!(Client::query)
            .match_requests(|req| {
                req.consistent_read() == Some(false)
                    && req.projection_expression().is_none()
                    && req.exclusive_start_key().is_none()
                    && req.expression_attribute_values().unwrap()[":run_key"]
                        == s("winter#20261224T090000Z")
            })
            .then_output(move || {
                QueryOutput::builder()
                    .items(record("a@example.com", "sent", 4))
                    .last_evaluated_key(RUN_KEY, s("winter#20261224T090000Z"))
                    .last_evaluated_key(EMAIL, s("a@example.com"))
                    .build()
            });
        let second = mock!(Client::query)
            .match_requests(|req| {
                req.exclusive_start_key().unwrap()[EMAIL] == s("a@example.com")
                    && req.consistent_read() == Some(false)
            })
            .then_output(move || {
                QueryOutput::builder()
                    .items(record("b@example.com", "failed", 5))
                    .build()
            });
        let mut seen = Vec::new();
        let visited = ledger(dynamo_client!(&first, &second))
            .each_record(&run(), &mut |r| seen.push(r))
            .await
            .unwrap();
        assert_eq!(visited, 2);
        assert_eq!(
            seen.iter().map(|r| r.email.as_str()).collect::<Vec<_>>(),
            ["a@example.com", "b@example.com"]
        );
        assert_eq!(seen[1].state, DeliveryState::Failed);
        assert_eq!(seen[0].marks.at(Mark::HardBounced), Some(at(5)));
        assert_eq!(
            seen[0].feedback_detail.as_deref(),
            Some("Permanent/General: 550 user unknown")
        );
        assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn a_report_names_an_unreadable_record_and_stops() {
        let bad = mock!(Client::query).then_output(|| {
            QueryOutput::builder()
                .items(item([
                    (EMAIL, s("a@example.com")),
                    (STATE, s("exploded")),
                    (UPDATED_AT, time(at(1))),
                ]))
                .build()
        });
        let err = ledger(dynamo_client!(&bad))
            .each_record(&run(), &mut |_| panic!("nothing readable to visit"))
            .await
            .unwrap_err();
        assert!(!err.retryable);
        let text = err.to_string();
        assert!(text.contains("read deliveries for a report"), "{text}");
        assert!(text.contains("state"), "{text}");
    }

    #[tokio::test]
    async fn a_report_of_a_throttled_table_is_retryable_and_of_a_missing_one_is_not() {
        use aws_sdk_dynamodb::operation::query::QueryError;
        use aws_sdk_dynamodb::types::error::{
            ProvisionedThroughputExceededException, ResourceNotFoundException,
        };
        let throttled = mock!(Client::query).then_error(|| {
            QueryError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().build(),
            )
        });
        let err = ledger(dynamo_client!(&throttled))
            .each_record(&run(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(err.retryable, "{err}");
        let missing = mock!(Client::query).then_error(|| {
            QueryError::ResourceNotFoundException(ResourceNotFoundException::builder().build())
        });
        let err = ledger(dynamo_client!(&missing))
            .each_record(&run(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(!err.retryable, "{err}");
    }

    #[tokio::test]
    async fn a_rejected_input_is_kept_in_its_own_partition_with_a_short_excerpt() {
        let put = mock!(Client::put_item)
            .match_requests(|req| {
                let stored = req.item().unwrap();
                stored[RUN_KEY] == s("rejected#sender")
                    && stored[EMAIL] == s("msg-1")
                    && matches!(&stored["excerpt"], AttributeValue::S(text) if text.len() == EXCERPT_MAX_BYTES)
            })
            .then_output(|| PutItemOutput::builder().build());
        DynamoRejects::new(dynamo_client!(&put), "deliveries")
            .record(&RejectedInput {
                source: "sender".into(),
                id: "msg-1".into(),
                reason: "not a send job".into(),
                excerpt: "x".repeat(10_000),
                at: at(1),
            })
            .await
            .unwrap();
        assert_eq!(put.num_calls(), 1);
    }
}
