//! The tables themselves, read by the preflight check: whether each exists.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use hikyaku_core::doctor::Probe;

use crate::error::probe_failure;

#[derive(Clone, Debug)]
pub struct DynamoTables {
    client: Client,
}

impl DynamoTables {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["dynamodb:DescribeTable"];

    pub fn new(client: Client) -> DynamoTables {
        DynamoTables { client }
    }

    pub async fn exists(&self, table: &str) -> Probe<()> {
        match self.client.describe_table().table_name(table).send().await {
            Ok(_) => Probe::Found(()),
            Err(err) => probe_failure(err, |e| {
                matches!(e, DescribeTableError::ResourceNotFoundException(_))
            }),
        }
    }
}
