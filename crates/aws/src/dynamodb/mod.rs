//! The DynamoDB adapters, one file per table. Each module's documentation gives the table's
//! item layout; `hikyaku-local setup` and the SAM template create the tables with exactly
//! these keys.
//!
//! Attribute names in expressions always go through `#name` placeholders, so no stored name
//! can collide with DynamoDB's reserved words (`state`, `cursor`, `schema`, ...).

mod budget;
mod campaigns;
mod contacts;
mod deliveries;
pub(crate) mod item;
mod runs;
mod suppressions;
mod tables;
mod write;

pub use budget::{BUDGET_PARTITION, DynamoBudget};
pub use campaigns::DynamoCampaigns;
pub use contacts::DynamoContacts;
pub use deliveries::{DynamoLedger, DynamoRejects};
pub use runs::DynamoRuns;
pub use suppressions::DynamoSuppressions;
pub use tables::DynamoTables;

use crate::config::Tables;

/// Every DynamoDB adapter, built from one client and the table names.
#[derive(Clone, Debug)]
pub struct DynamoStores {
    /// [`ContactStore`](hikyaku_core::ports::ContactStore) on the contacts table.
    pub contacts: DynamoContacts,
    /// [`CampaignStore`](hikyaku_core::ports::CampaignStore) on the campaigns table.
    pub campaigns: DynamoCampaigns,
    /// [`RunStore`](hikyaku_core::ports::RunStore) on the runs table.
    pub runs: DynamoRuns,
    /// [`Ledger`](hikyaku_core::ports::Ledger) on the deliveries table.
    pub ledger: DynamoLedger,
    /// [`SuppressionList`](hikyaku_core::ports::SuppressionList) on the suppressions table.
    pub suppressions: DynamoSuppressions,
    /// [`RejectLog`](hikyaku_core::ports::RejectLog) in the deliveries table.
    pub rejects: DynamoRejects,
}

impl DynamoStores {
    /// The adapters of all five tables; they share the client (and its connection pool).
    pub fn new(client: &aws_sdk_dynamodb::Client, tables: &Tables) -> DynamoStores {
        DynamoStores {
            contacts: DynamoContacts::new(client.clone(), tables.contacts.clone()),
            campaigns: DynamoCampaigns::new(client.clone(), tables.campaigns.clone()),
            runs: DynamoRuns::new(client.clone(), tables.runs.clone()),
            ledger: DynamoLedger::new(client.clone(), tables.deliveries.clone()),
            suppressions: DynamoSuppressions::new(client.clone(), tables.suppressions.clone()),
            rejects: DynamoRejects::new(client.clone(), tables.deliveries.clone()),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the adapters' mock tests share.

    /// A DynamoDB client answering with `rules`, in order, with the SDK's own retries off so a
    /// test sees exactly the calls the adapter makes.
    macro_rules! dynamo_client {
        ($($rule:expr),* $(,)?) => {
            aws_smithy_mocks::mock_client!(
                aws_sdk_dynamodb,
                aws_smithy_mocks::RuleMode::Sequential,
                [$($rule),*],
                |config| config.retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            )
        };
    }
    pub(crate) use dynamo_client;
}
