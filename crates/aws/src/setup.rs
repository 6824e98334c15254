//! The preflight check's probe on AWS: each question to the adapter of its service.

use async_trait::async_trait;
use aws_config::SdkConfig;
use hikyaku_core::budget::{AccountSnapshot, AccountSource};
use hikyaku_core::campaign::SendingAccount;
use hikyaku_core::doctor::{EventDestination, IdentityState, Probe, SetupProbe, Subscription};

use crate::dynamodb::DynamoTables;
use crate::ses::{SesAccount, SesSetup};
use crate::sns::SnsTopics;
use crate::sqs::SqsQueues;

pub struct AwsSetupProbe {
    account: SesAccount,
    ses: SesSetup,
    sns: SnsTopics,
    tables: DynamoTables,
    queues: SqsQueues,
}

impl AwsSetupProbe {
    pub fn new(sdk: &SdkConfig) -> AwsSetupProbe {
        AwsSetupProbe {
            account: SesAccount::new(sdk),
            ses: SesSetup::new(sdk),
            sns: SnsTopics::new(aws_sdk_sns::Client::new(sdk)),
            tables: DynamoTables::new(aws_sdk_dynamodb::Client::new(sdk)),
            queues: SqsQueues::new(aws_sdk_sqs::Client::new(sdk)),
        }
    }
}

#[async_trait]
impl SetupProbe for AwsSetupProbe {
    async fn account(&self) -> Probe<AccountSnapshot> {
        match self
            .account
            .account(&SendingAccount::default(), chrono::Utc::now())
            .await
        {
            Ok(snapshot) => Probe::Found(snapshot),
            Err(err) => Probe::Failed(err.to_string()),
        }
    }

    async fn identity(&self, identity: &str) -> Probe<IdentityState> {
        self.ses.identity(identity).await
    }

    async fn event_destinations(&self, configuration_set: &str) -> Probe<Vec<EventDestination>> {
        self.ses.event_destinations(configuration_set).await
    }

    async fn contact_list_topics(&self, contact_list: &str) -> Probe<Vec<String>> {
        self.ses.contact_list_topics(contact_list).await
    }

    async fn subscriptions(&self, topic_arn: &str) -> Probe<Vec<Subscription>> {
        self.sns.subscriptions(topic_arn).await
    }

    async fn table(&self, table: &str) -> Probe<()> {
        self.tables.exists(table).await
    }

    async fn queue_depth(&self, queue_url: &str) -> Probe<u64> {
        self.queues.depth(queue_url).await
    }
}
