//! The send budget's item, kept in the runs table under a partition no campaign can have
//! (campaign ids never start with `#`): one item per SES region.
//!
//! | attribute | type | |
//! |---|---|---|
//! | `campaign_id` | S | `#send-budget` |
//! | `run_id` | S | the SES region, or `default` |
//! | `version` | N | replaced only by a writer that read this version |
//! | `state` | S | `BudgetState` as JSON: the slot clock, lanes, account snapshot, counts |
//!
//! The state goes as one JSON string because every write replaces it whole under the version
//! condition; it stays far below 1 KB (one write unit) for any realistic number of runs.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use hikyaku_core::budget::{BudgetState, BudgetStore};
use hikyaku_core::ports::StoreError;

use super::item::{Item, get_s, item, n, s};
use super::write::{Update, put_if};
use crate::error::store_error;

const CAMPAIGN_ID: &str = "campaign_id";
const RUN_ID: &str = "run_id";
const VERSION: &str = "version";
const STATE: &str = "state";
/// The budget's partition key: not a valid campaign id.
pub const BUDGET_PARTITION: &str = "#send-budget";

/// [`BudgetStore`] on the runs table.
#[derive(Clone, Debug)]
pub struct DynamoBudget {
    client: Client,
    table: String,
}

impl DynamoBudget {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["dynamodb:GetItem", "dynamodb:PutItem"];

    /// The budget items of the runs table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoBudget {
        DynamoBudget {
            client,
            table: table.into(),
        }
    }

    fn key(scope: &str) -> Item {
        item([(CAMPAIGN_ID, s(BUDGET_PARTITION)), (RUN_ID, s(scope))])
    }
}

#[async_trait]
impl BudgetStore for DynamoBudget {
    /// A strongly consistent GetItem: a stale read would only cost a failed write, but every
    /// grant depends on the newest clock.
    async fn load(&self, scope: &str) -> Result<Option<BudgetState>, StoreError> {
        const OP: &str = "read send budget";
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(scope)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error(OP, err))?;
        let Some(stored) = output.item else {
            return Ok(None);
        };
        let json = get_s(&stored, STATE).map_err(|err| err.into_store(OP, "send budget"))?;
        serde_json::from_str(json)
            .map(Some)
            .map_err(|err| StoreError::new(OP, format!("send budget unreadable: {err}"), false))
    }

    /// PutItem of the whole state, conditioned on the stored `version` being `expected` (or
    /// no item, for 0).
    async fn save(
        &self,
        scope: &str,
        state: &BudgetState,
        expected: u64,
    ) -> Result<bool, StoreError> {
        const OP: &str = "write send budget";
        let json = serde_json::to_string(state).map_err(|err| {
            StoreError::new(OP, format!("send budget not storable: {err}"), false)
        })?;
        let mut record = Self::key(scope);
        record.insert(VERSION.to_owned(), n(state.version));
        record.insert(STATE.to_owned(), s(json));
        let mut condition = Update::default();
        let version = condition.name(VERSION);
        // DynamoDB refuses a value the expression does not use: bind it only when needed.
        condition.condition = if expected == 0 {
            format!("attribute_not_exists({version})")
        } else {
            let expected_value = condition.value("expected", n(expected));
            format!("{version} = {expected_value}")
        };
        Ok(
            put_if(&self.client, &self.table, OP, record, condition, None)
                .await?
                .is_ok(),
        )
    }
}
