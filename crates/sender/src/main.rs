//! hikyaku-sender: fed by the send queue through an SQS event source mapping, it sends each
//! recipient through SES v2 and reports partial batch failures.

mod config;
mod handler;

use hikyaku_aws::config::load_sdk_config;
use hikyaku_aws::dynamodb::{
    DynamoBudget, DynamoCampaigns, DynamoContacts, DynamoLedger, DynamoRejects, DynamoRuns,
    DynamoSuppressions,
};
use hikyaku_aws::roles::RoleAssumer;
use hikyaku_aws::ses::{SesAccount, SesSender};
use hikyaku_aws::sqs::SqsJobQueue;
use hikyaku_core::send::{CampaignCache, Throttle};
use lambda_runtime::{Error, run, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = config::Config::from_env()?;
    hikyaku_core::logging::set_address_display(config.address_display);
    let sdk = load_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let tables = &config.tables;
    let deps = handler::Deps {
        campaigns: DynamoCampaigns::new(dynamodb.clone(), tables.campaigns.clone()),
        runs: DynamoRuns::new(dynamodb.clone(), tables.runs.clone()),
        ledger: DynamoLedger::new(dynamodb.clone(), tables.deliveries.clone()),
        rejects: DynamoRejects::new(dynamodb.clone(), tables.deliveries.clone()),
        suppressions: DynamoSuppressions::new(dynamodb.clone(), tables.suppressions.clone()),
        contacts: DynamoContacts::new(dynamodb.clone(), tables.contacts.clone()),
        budget: DynamoBudget::new(dynamodb, tables.runs.clone()),
        // Campaigns naming a sending role send, and read their quota, through that role.
        account: SesAccount::new(&sdk).with_roles(RoleAssumer::new(&sdk)),
        sender: SesSender::new(&sdk).with_roles(RoleAssumer::new(&sdk)),
        queue: SqsJobQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            config.send_queue_url.clone(),
        ),
        throttle: Throttle::new(config.concurrency),
        cache: CampaignCache::default(),
        settings: config.settings,
    };
    run(service_fn(|event| handler::function_handler(&deps, event))).await
}
