//! The campaigns table: partition key `campaign_id` (S); attributes `definition` (S, the
//! campaign definition as JSON, exactly as created) and `created_at` (S).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use chrono::Utc;
use hikyaku_core::campaign::CampaignDefinition;
use hikyaku_core::ids::CampaignId;
use hikyaku_core::ports::{CampaignStore, StoreError};

use super::item::{ItemError, Stored, get_s, item, s, time};
use super::write::put_if_absent;
use crate::error::store_error;

const CAMPAIGN_ID: &str = "campaign_id";
const DEFINITION: &str = "definition";
const CREATED_AT: &str = "created_at";

/// [`CampaignStore`] on the campaigns table.
#[derive(Clone, Debug)]
pub struct DynamoCampaigns {
    client: Client,
    table: String,
}

impl DynamoCampaigns {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["dynamodb:GetItem", "dynamodb:PutItem"];

    /// The adapter of the campaigns table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoCampaigns {
        DynamoCampaigns {
            client,
            table: table.into(),
        }
    }
}

impl TryFrom<Stored> for CampaignDefinition {
    type Error = ItemError;

    fn try_from(Stored(stored): Stored) -> Result<CampaignDefinition, ItemError> {
        serde_json::from_str(get_s(&stored, DEFINITION)?)
            .map_err(|err| ItemError::invalid(DEFINITION, err))
    }
}

#[async_trait]
impl CampaignStore for DynamoCampaigns {
    /// PutItem conditioned on `attribute_not_exists(campaign_id)`: an existing campaign is
    /// never overwritten (`Ok(false)`).
    #[tracing::instrument(skip_all, fields(campaign = %definition.id), err)]
    async fn create(&self, definition: &CampaignDefinition) -> Result<bool, StoreError> {
        const OP: &str = "create campaign";
        let id = CampaignId::parse(&definition.id)
            .map_err(|err| StoreError::new(OP, err.to_string(), false))?;
        let json = serde_json::to_string(definition).map_err(|err| {
            StoreError::new(OP, format!("definition not serialisable: {err}"), false)
        })?;
        let record = item([
            (CAMPAIGN_ID, s(id.as_str())),
            (DEFINITION, s(json)),
            (CREATED_AT, time(Utc::now())),
        ]);
        let written =
            put_if_absent(&self.client, &self.table, OP, CAMPAIGN_ID, record, None).await?;
        Ok(written.is_ok())
    }

    #[tracing::instrument(skip_all, fields(campaign = %id), err)]
    async fn get(&self, id: &CampaignId) -> Result<Option<CampaignDefinition>, StoreError> {
        const OP: &str = "read campaign";
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item([(CAMPAIGN_ID, s(id.as_str()))])))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error(OP, err))?;
        output
            .item
            .map(|stored| CampaignDefinition::try_from(Stored(stored)))
            .transpose()
            .map_err(|err| err.into_store(OP, &format!("campaign {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb::testing::dynamo_client;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::mock;

    fn definition() -> CampaignDefinition {
        serde_json::from_value(serde_json::json!({"id": "winter", "list": "newsletter"})).unwrap()
    }

    #[tokio::test]
    async fn when_the_campaign_exists_then_create_answers_false() {
        let exists = mock!(Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder().build(),
            )
        });
        let store = DynamoCampaigns::new(dynamo_client!(&exists), "campaigns");
        assert!(!store.create(&definition()).await.unwrap());
    }

    #[tokio::test]
    async fn when_a_stored_definition_is_not_json_then_the_error_names_the_campaign() {
        let broken = mock!(Client::get_item).then_output(|| {
            GetItemOutput::builder()
                .item(CAMPAIGN_ID, s("winter"))
                .item(DEFINITION, s("{oops"))
                .build()
        });
        let store = DynamoCampaigns::new(dynamo_client!(&broken), "campaigns");
        let err = store
            .get(&CampaignId::parse("winter").unwrap())
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.contains("campaign winter"), "{err}");
    }
}
