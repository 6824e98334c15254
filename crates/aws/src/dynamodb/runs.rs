//! The runs table: partition key `campaign_id` (S), sort key `run_id` (S).
//!
//! | attribute | type | |
//! |---|---|---|
//! | `list_id` | S | |
//! | `state` | S | `RunState::as_str` |
//! | `pause_reason` | S | while paused or waiting for quota |
//! | `resume_at` | S | RFC 3339: while waiting for quota, when SES should have room |
//! | `paused_at` | S | when last paused |
//! | `progress` | M | `FanoutProgress`, field by field (numbers as N) |
//! | `cursor` | S | the contact store's page token; absent at the start and the end |
//! | `fanout_complete` | BOOL | |
//! | `started_at`, `fanout_completed_at` | S | RFC 3339 |
//! | `lease_owner` | S | the fan-out invocation holding the lease |
//! | `lease_until` | S | RFC 3339, for people |
//! | `lease_until_ms` | N | epoch milliseconds, for conditions |
//! | `fb_<counter>` | N | feedback counters (`fb_delivered`, `fb_hard_bounced`, ...), added to |
//! | `canary` | M | `CanaryPlan`: the run's canary slice, written at the start |
//! | `canary_sent` | N | sends of the canary slice, added to by the senders |
//! | `canary_verdict` | M | `CanaryVerdict` (`outcome`, `at`, `detail`), once judged |

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use hikyaku_core::canary::{CanaryOutcome, CanaryVerdict};
use hikyaku_core::feedback::FeedbackCounts;
use hikyaku_core::ids::{CampaignId, RunId, RunRef};
use hikyaku_core::ports::{RunStore, StoreError};
use hikyaku_core::run::{FanoutProgress, RunRecord, RunState};
use serde_dynamo::aws_sdk_dynamodb_1 as serde_dynamo_sdk;

use super::item::{
    Item, ItemError, Stored, flag, get_parsed, get_s, get_time, item, n, opt_n, opt_s, opt_time, s,
    time,
};
use super::write::{Conditional, Update, put_if_absent, update_if, update_returning};
use crate::error::store_error;

const CAMPAIGN_ID: &str = "campaign_id";
const RUN_ID: &str = "run_id";
const LIST_ID: &str = "list_id";
const STATE: &str = "state";
const PAUSE_REASON: &str = "pause_reason";
const PAUSED_AT: &str = "paused_at";
const RESUME_AT: &str = "resume_at";
const PROGRESS: &str = "progress";
const CURSOR: &str = "cursor";
const FANOUT_COMPLETE: &str = "fanout_complete";
const STARTED_AT: &str = "started_at";
const FANOUT_COMPLETED_AT: &str = "fanout_completed_at";
const LEASE_OWNER: &str = "lease_owner";
const LEASE_UNTIL: &str = "lease_until";
const LEASE_UNTIL_MS: &str = "lease_until_ms";
const CANARY: &str = "canary";
const CANARY_VERDICT: &str = "canary_verdict";
const OUTCOME: &str = "outcome";
const CANARY_SENT: &str = "canary_sent";

/// [`RunStore`] on the runs table. Reads that a decision depends on are strongly consistent.
#[derive(Clone, Debug)]
pub struct DynamoRuns {
    client: Client,
    table: String,
}

impl DynamoRuns {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &[
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ];

    /// The adapter of the runs table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoRuns {
        DynamoRuns {
            client,
            table: table.into(),
        }
    }

    fn key(run: &RunRef) -> Item {
        item([
            (CAMPAIGN_ID, s(run.campaign_id.as_str())),
            (RUN_ID, s(run.run_id.as_str())),
        ])
    }

    /// Sends one conditional update; `Ok(())` when the condition held and the update was
    /// made, `Err(old)` when it did not (with the stored item when the service sent it).
    async fn conditional_update(
        &self,
        operation: &'static str,
        run: &RunRef,
        update: Update,
    ) -> Result<Conditional, StoreError> {
        update_if(&self.client, &self.table, operation, Self::key(run), update).await
    }

    /// UpdateItem from `from` to `sending` when the fan-out is complete, else to
    /// `fanning_out` (a second write, conditioned the other way); each conditioned on the
    /// state and `fanout_complete`, so a concurrent checkpoint is never overwritten.
    async fn resume_from(
        &self,
        operation: &'static str,
        run: &RunRef,
        from: RunState,
    ) -> Result<bool, StoreError> {
        for (target, complete) in [(RunState::Sending, true), (RunState::FanningOut, false)] {
            let mut update = Update::default();
            update.set(STATE, s(target.as_str()));
            update.remove(PAUSE_REASON);
            update.remove(RESUME_AT);
            let state = update.name(STATE);
            let done = update.name(FANOUT_COMPLETE);
            let stopped = update.value("from", s(from.as_str()));
            let flag_value = update.value("complete", AttributeValue::Bool(complete));
            update.condition = format!("{state} = {stopped} AND {done} = {flag_value}");
            if self
                .conditional_update(operation, run, update)
                .await?
                .is_ok()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl TryFrom<&RunRecord> for Stored {
    type Error = StoreError;

    fn try_from(record: &RunRecord) -> Result<Stored, StoreError> {
        let progress = serde_dynamo_sdk::to_attribute_value(&record.progress).map_err(|err| {
            StoreError::new("store run", format!("progress not storable: {err}"), false)
        })?;
        let mut stored = item([
            (CAMPAIGN_ID, s(record.run.campaign_id.as_str())),
            (RUN_ID, s(record.run.run_id.as_str())),
            (LIST_ID, s(record.list.as_str())),
            (STATE, s(record.state.as_str())),
            (PROGRESS, progress),
            (
                FANOUT_COMPLETE,
                AttributeValue::Bool(record.fanout_complete),
            ),
            (STARTED_AT, time(record.started_at)),
        ]);
        let optional = [
            (PAUSE_REASON, record.pause_reason.as_deref().map(s)),
            (RESUME_AT, record.resume_at.map(time)),
            (CURSOR, record.cursor.as_deref().map(s)),
            (FANOUT_COMPLETED_AT, record.fanout_completed_at.map(time)),
            (LEASE_OWNER, record.lease_owner.as_deref().map(s)),
            (LEASE_UNTIL, record.lease_until.map(time)),
            (
                LEASE_UNTIL_MS,
                record.lease_until.map(|at| n(at.timestamp_millis())),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                stored.insert(name.to_owned(), value);
            }
        }
        if record.canary_sent > 0 {
            stored.insert(CANARY_SENT.to_owned(), n(record.canary_sent));
        }
        if let Some(plan) = &record.canary {
            stored.insert(CANARY.to_owned(), map_of("store run", "canary", plan)?);
        }
        if let Some(verdict) = &record.canary_verdict {
            stored.insert(
                CANARY_VERDICT.to_owned(),
                map_of("store run", "canary verdict", verdict)?,
            );
        }
        Ok(Stored(stored))
    }
}

impl TryFrom<Stored> for RunRecord {
    type Error = ItemError;

    fn try_from(Stored(stored): Stored) -> Result<RunRecord, ItemError> {
        let campaign_id: CampaignId = get_parsed(&stored, CAMPAIGN_ID)?;
        let run_id =
            RunId::parse(get_s(&stored, RUN_ID)?).map_err(|err| ItemError::invalid(RUN_ID, err))?;
        let progress = match stored.get(PROGRESS) {
            None | Some(AttributeValue::Null(_)) => FanoutProgress::default(),
            Some(value) => serde_dynamo_sdk::from_attribute_value(value.clone())
                .map_err(|err| ItemError::invalid(PROGRESS, err))?,
        };
        Ok(RunRecord {
            run: RunRef::new(campaign_id, run_id),
            list: get_parsed(&stored, LIST_ID)?,
            state: get_parsed::<RunState>(&stored, STATE)?,
            pause_reason: opt_s(&stored, PAUSE_REASON)?.map(str::to_owned),
            resume_at: opt_time(&stored, RESUME_AT)?,
            progress,
            cursor: opt_s(&stored, CURSOR)?.map(str::to_owned),
            fanout_complete: flag(&stored, FANOUT_COMPLETE)?,
            started_at: get_time(&stored, STARTED_AT)?,
            fanout_completed_at: opt_time(&stored, FANOUT_COMPLETED_AT)?,
            lease_owner: opt_s(&stored, LEASE_OWNER)?.map(str::to_owned),
            lease_until: opt_time(&stored, LEASE_UNTIL)?,
            feedback: feedback_of(&stored)?,
            canary: opt_decoded(&stored, CANARY)?,
            canary_sent: opt_n(&stored, CANARY_SENT)?.unwrap_or(0),
            canary_verdict: opt_decoded(&stored, CANARY_VERDICT)?,
        })
    }
}

/// `value` as a map attribute, through serde.
fn map_of<T: serde::Serialize>(
    operation: &'static str,
    what: &str,
    value: &T,
) -> Result<AttributeValue, StoreError> {
    serde_dynamo_sdk::to_attribute_value(value)
        .map_err(|err| StoreError::new(operation, format!("{what} not storable: {err}"), false))
}

/// An optional attribute read back through serde.
fn opt_decoded<T: serde::de::DeserializeOwned>(
    stored: &Item,
    name: &str,
) -> Result<Option<T>, ItemError> {
    match stored.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(value) => serde_dynamo_sdk::from_attribute_value(value.clone())
            .map(Some)
            .map_err(|err| ItemError::invalid(name, err)),
    }
}

/// The attribute of a feedback counter.
fn counter_attribute(name: &str) -> String {
    format!("fb_{name}")
}

fn feedback_of(stored: &Item) -> Result<FeedbackCounts, ItemError> {
    let mut counts = FeedbackCounts::default();
    for (name, _) in FeedbackCounts::default().fields() {
        if let Some(value) = opt_n::<u64>(stored, &counter_attribute(name))? {
            counts.set(name, value);
        }
    }
    Ok(counts)
}

fn decode(operation: &'static str, stored: Item) -> Result<RunRecord, StoreError> {
    let what = format!(
        "run {}/{}",
        get_s(&stored, CAMPAIGN_ID).unwrap_or("?"),
        get_s(&stored, RUN_ID).unwrap_or("?")
    );
    RunRecord::try_from(Stored(stored)).map_err(|err| err.into_store(operation, &what))
}

/// The checkpoint's update. With `to_sending`, it also moves a run that is still fanning out
/// to `sending`, in the same write, conditioned on that state.
fn checkpoint_update(
    owner: &str,
    cursor: Option<&str>,
    progress: AttributeValue,
    complete: bool,
    to_sending: bool,
    now: DateTime<Utc>,
) -> Update {
    let mut update = Update::default();
    update.set(PROGRESS, progress);
    match cursor {
        Some(cursor) => update.set(CURSOR, s(cursor)),
        None => update.remove(CURSOR),
    }
    let owner_name = update.name(LEASE_OWNER);
    let owner_value = update.value("owner", s(owner));
    update.condition = format!("{owner_name} = {owner_value}");
    if complete {
        update.set(FANOUT_COMPLETE, AttributeValue::Bool(true));
        update.set(FANOUT_COMPLETED_AT, time(now));
        update.remove(LEASE_OWNER);
        update.remove(LEASE_UNTIL);
        update.remove(LEASE_UNTIL_MS);
        if to_sending {
            update.set(STATE, s(RunState::Sending.as_str()));
            let state = update.name(STATE);
            let fanning_out = update.value("fanning_out", s(RunState::FanningOut.as_str()));
            update.condition = format!("{} AND {state} = {fanning_out}", update.condition);
        }
    }
    update
}

#[async_trait]
impl RunStore for DynamoRuns {
    /// PutItem conditioned on `attribute_not_exists(campaign_id)`; when the run exists, the
    /// stored record comes back with the condition failure (ALL_OLD), or from a consistent
    /// read when the service did not send it.
    #[tracing::instrument(skip_all, fields(run = %record.run), err)]
    async fn start(&self, record: &RunRecord) -> Result<RunRecord, StoreError> {
        const OP: &str = "start run";
        let Stored(stored) = Stored::try_from(record)?;
        let written = put_if_absent(
            &self.client,
            &self.table,
            OP,
            CAMPAIGN_ID,
            stored,
            Some(ReturnValuesOnConditionCheckFailure::AllOld),
        )
        .await?;
        match written {
            Ok(()) => Ok(record.clone()),
            Err(Some(existing)) => decode(OP, existing),
            Err(None) => self.get(&record.run).await?.ok_or_else(|| {
                StoreError::new(OP, "the run exists but could not be read back", true)
            }),
        }
    }

    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn get(&self, run: &RunRef) -> Result<Option<RunRecord>, StoreError> {
        const OP: &str = "read run";
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(run)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error(OP, err))?;
        output.item.map(|stored| decode(OP, stored)).transpose()
    }

    /// UpdateItem conditioned on the run existing and its lease being free, expired
    /// (`lease_until_ms < now`) or already `owner`'s.
    #[tracing::instrument(skip_all, fields(run = %run, owner = owner), err)]
    async fn acquire_lease(
        &self,
        run: &RunRef,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut update = Update::default();
        update.set(LEASE_OWNER, s(owner));
        update.set(LEASE_UNTIL, time(until));
        update.set(LEASE_UNTIL_MS, n(until.timestamp_millis()));
        let campaign = update.name(CAMPAIGN_ID);
        let until_ms = update.name(LEASE_UNTIL_MS);
        let owner_name = update.name(LEASE_OWNER);
        let now_ms = update.value("now_ms", n(now.timestamp_millis()));
        // `:lease_owner` is the value `set` bound for the new owner.
        update.condition = format!(
            "attribute_exists({campaign}) AND (attribute_not_exists({until_ms}) OR {until_ms} < {now_ms} OR {owner_name} = :{LEASE_OWNER})"
        );
        Ok(self
            .conditional_update("acquire lease", run, update)
            .await?
            .is_ok())
    }

    /// UpdateItem conditioned on `lease_owner = owner`. On completion the same write sets
    /// `fanout_complete`, removes the lease and moves `fanning_out` to `sending`; when the run
    /// was paused meanwhile, a second write completes it without touching the state.
    #[tracing::instrument(skip_all, fields(run = %run, owner = owner, complete = complete), err)]
    async fn checkpoint(
        &self,
        run: &RunRef,
        owner: &str,
        cursor: Option<&str>,
        progress: &FanoutProgress,
        complete: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const OP: &str = "checkpoint run";
        let progress = serde_dynamo_sdk::to_attribute_value(progress)
            .map_err(|err| StoreError::new(OP, format!("progress not storable: {err}"), false))?;
        let first = checkpoint_update(owner, cursor, progress.clone(), complete, complete, now);
        let Err(refused) = self.conditional_update(OP, run, first).await? else {
            return Ok(true);
        };
        if !complete {
            return Ok(false);
        }
        if let Some(existing) = refused
            && opt_s(&existing, LEASE_OWNER).ok().flatten() != Some(owner)
        {
            return Ok(false);
        }
        // The lease is ours but the run is no longer fanning out (paused or cancelled): end
        // the fan-out and leave the state alone.
        let second = checkpoint_update(owner, cursor, progress, true, false, now);
        Ok(self.conditional_update(OP, run, second).await?.is_ok())
    }

    /// UpdateItem removing the lease, conditioned on `lease_owner = owner`; a lease someone
    /// else holds is left alone.
    #[tracing::instrument(skip_all, fields(run = %run, owner = owner), err)]
    async fn release_lease(&self, run: &RunRef, owner: &str) -> Result<(), StoreError> {
        let mut update = Update::default();
        update.remove(LEASE_OWNER);
        update.remove(LEASE_UNTIL);
        update.remove(LEASE_UNTIL_MS);
        let owner_name = update.name(LEASE_OWNER);
        let owner_value = update.value("owner", s(owner));
        update.condition = format!("{owner_name} = {owner_value}");
        self.conditional_update("release lease", run, update)
            .await
            .map(|_| ())
    }

    /// UpdateItem to `paused` with the reason, conditioned on the state being `fanning_out`,
    /// `sending` or `waiting_for_quota`; any other run (or none) is left as it is.
    #[tracing::instrument(skip_all, fields(run = %run, reason = reason), err)]
    async fn pause(
        &self,
        run: &RunRef,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut update = Update::default();
        update.set(STATE, s(RunState::Paused.as_str()));
        update.set(PAUSE_REASON, s(reason));
        update.set(PAUSED_AT, time(now));
        update.remove(RESUME_AT);
        let state = update.name(STATE);
        let fanning_out = update.value("fanning_out", s(RunState::FanningOut.as_str()));
        let sending = update.value("sending", s(RunState::Sending.as_str()));
        let waiting = update.value("waiting", s(RunState::WaitingForQuota.as_str()));
        update.condition = format!("{state} IN ({fanning_out}, {sending}, {waiting})");
        self.conditional_update("pause run", run, update)
            .await
            .map(|_| ())
    }

    /// UpdateItem to `waiting_for_quota` with the reason and `resume_at`, conditioned on the
    /// state being `fanning_out` or `sending`.
    #[tracing::instrument(skip_all, fields(run = %run, resume_at = %resume_at), err)]
    async fn wait_for_quota(
        &self,
        run: &RunRef,
        reason: &str,
        resume_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut update = Update::default();
        update.set(STATE, s(RunState::WaitingForQuota.as_str()));
        update.set(PAUSE_REASON, s(reason));
        update.set(RESUME_AT, time(resume_at));
        let state = update.name(STATE);
        let fanning_out = update.value("fanning_out", s(RunState::FanningOut.as_str()));
        let sending = update.value("sending", s(RunState::Sending.as_str()));
        update.condition = format!("{state} IN ({fanning_out}, {sending})");
        self.conditional_update("wait for quota", run, update)
            .await
            .map(|_| ())
    }

    /// From `waiting_for_quota` back to sending (see `resume_from`).
    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn resume_after_quota(
        &self,
        run: &RunRef,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.resume_from("resume after quota", run, RunState::WaitingForQuota)
            .await
    }

    /// As `resume_after_quota`, from `paused`.
    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn resume(&self, run: &RunRef, _now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.resume_from("resume run", run, RunState::Paused).await
    }

    /// UpdateItem to `cancelled` with the reason, conditioned on the run existing and not
    /// being cancelled already.
    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn cancel(
        &self,
        run: &RunRef,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut update = Update::default();
        update.set(STATE, s(RunState::Cancelled.as_str()));
        update.set(PAUSE_REASON, s(reason));
        update.set(PAUSED_AT, time(now));
        update.remove(RESUME_AT);
        let state = update.name(STATE);
        let cancelled = update.value("cancelled", s(RunState::Cancelled.as_str()));
        update.condition = format!("attribute_exists({state}) AND {state} <> {cancelled}");
        Ok(self
            .conditional_update("cancel run", run, update)
            .await?
            .is_ok())
    }

    /// One UpdateItem adding each non-zero counter (`ADD`, so concurrent events never lose
    /// one), conditioned on the run existing; the run as it stands after (ALL_NEW).
    #[tracing::instrument(skip_all, fields(run = %run), err)]
    async fn add_feedback(
        &self,
        run: &RunRef,
        delta: &FeedbackCounts,
    ) -> Result<Option<RunRecord>, StoreError> {
        const OP: &str = "count feedback";
        let mut update = Update::default();
        for (name, value) in delta.fields() {
            if value > 0 {
                update.add(&counter_attribute(name), n(value));
            }
        }
        if update.expression().is_empty() {
            return self.get(run).await;
        }
        let campaign = update.name(CAMPAIGN_ID);
        update.condition = format!("attribute_exists({campaign})");
        let answer = update_returning(
            &self.client,
            &self.table,
            OP,
            Self::key(run),
            update,
            ReturnValue::AllNew,
        )
        .await?;
        match answer {
            Ok(Some(stored)) => decode(OP, stored).map(Some),
            Ok(None) => self.get(run).await,
            Err(_) => Ok(None),
        }
    }

    /// UpdateItem adding to `canary_sent` (`ADD`, so concurrent senders never lose a count),
    /// conditioned on the run existing.
    #[tracing::instrument(skip_all, fields(run = %run, sent = sent), err)]
    async fn count_canary_sends(&self, run: &RunRef, sent: u64) -> Result<(), StoreError> {
        let mut update = Update::default();
        update.add(CANARY_SENT, n(sent));
        let campaign = update.name(CAMPAIGN_ID);
        update.condition = format!("attribute_exists({campaign})");
        self.conditional_update("count canary sends", run, update)
            .await
            .map(|_| ())
    }

    /// UpdateItem setting `canary_verdict`, conditioned on the run existing and having no
    /// verdict, or one whose `outcome` is `replacing`.
    #[tracing::instrument(skip_all, fields(run = %run, outcome = verdict.outcome.as_str()), err)]
    async fn settle_canary(
        &self,
        run: &RunRef,
        verdict: &CanaryVerdict,
        replacing: Option<CanaryOutcome>,
    ) -> Result<bool, StoreError> {
        const OP: &str = "record canary verdict";
        let mut update = Update::default();
        update.set(CANARY_VERDICT, map_of(OP, "canary verdict", verdict)?);
        let campaign = update.name(CAMPAIGN_ID);
        let verdict_name = update.name(CANARY_VERDICT);
        let mut condition =
            format!("attribute_exists({campaign}) AND (attribute_not_exists({verdict_name})");
        if let Some(replacing) = replacing {
            let outcome = update.name(OUTCOME);
            let old = update.value("replacing", s(replacing.as_str()));
            condition.push_str(&format!(" OR {verdict_name}.{outcome} = {old}"));
        }
        condition.push(')');
        update.condition = condition;
        Ok(self.conditional_update(OP, run, update).await?.is_ok())
    }

    /// Query on the campaign, newest run first, to the last page.
    #[tracing::instrument(skip_all, fields(campaign = %campaign), err)]
    async fn list(&self, campaign: &CampaignId) -> Result<Vec<RunRecord>, StoreError> {
        const OP: &str = "list runs";
        let mut runs = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#campaign_id = :campaign_id")
                .expression_attribute_names("#campaign_id", CAMPAIGN_ID)
                .expression_attribute_values(":campaign_id", s(campaign.as_str()))
                .scan_index_forward(false)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|err| store_error(OP, err))?;
            for stored in output.items.unwrap_or_default() {
                runs.push(decode(OP, stored)?);
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(runs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb::testing::dynamo_client;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::mock;
    use chrono::TimeZone;
    use hikyaku_core::ids::ListId;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 24, hour, 0, 0).unwrap()
    }

    fn run() -> RunRef {
        RunRef::new(
            CampaignId::parse("winter").unwrap(),
            RunId::from_scheduled_time(at(9)),
        )
    }

    fn record() -> RunRecord {
        let mut record = RunRecord::new(run(), ListId::parse("newsletter").unwrap(), at(9));
        record.progress.pages = 3;
        record.progress.selected = 120;
        record.cursor = Some("c#m@example.com".into());
        record.lease_owner = Some("req-1".into());
        record.lease_until = Some(at(10));
        record
    }

    fn condition_failed(old: Option<Item>) -> ConditionalCheckFailedException {
        ConditionalCheckFailedException::builder()
            .set_item(old)
            .build()
    }

    #[test]
    fn a_run_record_round_trips_through_its_item() {
        let mut original = record();
        original.canary = Some(hikyaku_core::canary::CanaryPlan {
            slice: hikyaku_core::canary::SliceSize::Share(0.05),
            wait_secs: 1_800,
            above: Some(10_000),
        });
        original.canary_sent = 38;
        original.canary_verdict = Some(CanaryVerdict {
            outcome: CanaryOutcome::Failed,
            at: at(10),
            detail: "canary slice: complaint rate 1.00%".into(),
        });
        let Stored(stored) = Stored::try_from(&original).unwrap();
        assert_eq!(stored[STATE], s("fanning_out"));
        assert_eq!(stored[LEASE_UNTIL_MS], n(at(10).timestamp_millis()));
        assert!(matches!(stored[PROGRESS], AttributeValue::M(_)));
        assert_eq!(RunRecord::try_from(Stored(stored)).unwrap(), original);
    }

    #[test]
    fn a_completing_checkpoint_moves_the_state_only_from_fanning_out() {
        let update = checkpoint_update("req-1", None, n(0), true, true, at(9));
        assert_eq!(
            update.expression(),
            "SET #progress = :progress, #fanout_complete = :fanout_complete, \
             #fanout_completed_at = :fanout_completed_at, #state = :state \
             REMOVE #cursor, #lease_owner, #lease_until, #lease_until_ms"
        );
        assert_eq!(
            update.condition,
            "#lease_owner = :owner AND #state = :fanning_out"
        );
        let plain = checkpoint_update("req-1", Some("c#x"), n(0), false, false, at(9));
        assert_eq!(
            plain.expression(),
            "SET #progress = :progress, #cursor = :cursor"
        );
        assert_eq!(plain.condition, "#lease_owner = :owner");
        assert!(!plain.names.contains_key("#state"));
    }

    #[tokio::test]
    async fn when_the_run_exists_then_start_returns_the_stored_record() {
        let mut stored_record = record();
        stored_record.state = RunState::Sending;
        let Stored(stored) = Stored::try_from(&stored_record).unwrap();
        let exists = mock!(Client::put_item).then_error(move || {
            PutItemError::ConditionalCheckFailedException(condition_failed(Some(stored.clone())))
        });
        let store = DynamoRuns::new(dynamo_client!(&exists), "runs");

        let started = store
            .start(&RunRecord::new(
                run(),
                ListId::parse("newsletter").unwrap(),
                at(11),
            ))
            .await
            .unwrap();

        assert_eq!(started, stored_record);
    }

    #[tokio::test]
    async fn when_another_owner_holds_the_lease_then_acquire_answers_false() {
        let held = mock!(Client::update_item)
            .match_requests(|req| {
                req.condition_expression()
                    .unwrap()
                    .contains("#lease_until_ms < :now_ms")
            })
            .then_error(|| {
                UpdateItemError::ConditionalCheckFailedException(condition_failed(None))
            });
        let store = DynamoRuns::new(dynamo_client!(&held), "runs");
        assert!(
            !store
                .acquire_lease(&run(), "req-2", at(10), at(9))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn when_a_paused_run_completes_its_fanout_then_its_state_is_left_alone() {
        let mut paused = record();
        paused.state = RunState::Paused;
        let Stored(stored) = Stored::try_from(&paused).unwrap();
        let refused = mock!(Client::update_item)
            .match_requests(|req| req.condition_expression().unwrap().contains("#state"))
            .then_error(move || {
                UpdateItemError::ConditionalCheckFailedException(condition_failed(Some(
                    stored.clone(),
                )))
            });
        let completed = mock!(Client::update_item)
            .match_requests(|req| {
                !req.update_expression().unwrap().contains("#state")
                    && req.condition_expression() == Some("#lease_owner = :owner")
            })
            .then_output(|| UpdateItemOutput::builder().build());
        let store = DynamoRuns::new(dynamo_client!(&refused, &completed), "runs");

        let done = store
            .checkpoint(
                &run(),
                "req-1",
                None,
                &FanoutProgress::default(),
                true,
                at(10),
            )
            .await
            .unwrap();

        assert!(done);
        assert_eq!(completed.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_the_lease_was_lost_then_checkpoint_answers_false_without_a_second_write() {
        let mut taken = record();
        taken.lease_owner = Some("req-2".into());
        let Stored(stored) = Stored::try_from(&taken).unwrap();
        let refused = mock!(Client::update_item).then_error(move || {
            UpdateItemError::ConditionalCheckFailedException(condition_failed(Some(stored.clone())))
        });
        let store = DynamoRuns::new(dynamo_client!(&refused), "runs");

        let done = store
            .checkpoint(
                &run(),
                "req-1",
                None,
                &FanoutProgress::default(),
                true,
                at(10),
            )
            .await
            .unwrap();

        assert!(!done);
        assert_eq!(refused.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_canary_verdict_is_written_once_and_a_release_replaces_only_a_failure() {
        let verdict = |outcome| CanaryVerdict {
            outcome,
            at: at(10),
            detail: "canary slice".into(),
        };
        let written = mock!(Client::update_item)
            .match_requests(|input| {
                input.condition_expression()
                    == Some(
                        "attribute_exists(#campaign_id) AND (attribute_not_exists(#canary_verdict))",
                    )
            })
            .then_output(|| UpdateItemOutput::builder().build());
        let refused = mock!(Client::update_item)
            .match_requests(|input| {
                input.condition_expression()
                    == Some(
                        "attribute_exists(#campaign_id) AND (attribute_not_exists(#canary_verdict) OR #canary_verdict.#outcome = :replacing)",
                    )
                    && input.expression_attribute_values().and_then(|v| v.get(":replacing"))
                        == Some(&s("failed"))
            })
            .then_error(|| {
                UpdateItemError::ConditionalCheckFailedException(condition_failed(None))
            });
        let store = DynamoRuns::new(dynamo_client!(&written, &refused), "runs");

        assert!(
            store
                .settle_canary(&run(), &verdict(CanaryOutcome::Passed), None)
                .await
                .unwrap()
        );
        assert!(
            !store
                .settle_canary(
                    &run(),
                    &verdict(CanaryOutcome::Released),
                    Some(CanaryOutcome::Failed)
                )
                .await
                .unwrap()
        );
        assert_eq!((written.num_calls(), refused.num_calls()), (1, 1));
    }
}
