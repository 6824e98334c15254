//! hikyaku-fanout: started by an EventBridge Scheduler schedule (or the CLI), it enqueues a
//! run's audience for the senders.

mod config;
mod handler;

use hikyaku_aws::config::load_sdk_config;
use hikyaku_aws::dynamodb::{DynamoBudget, DynamoCampaigns, DynamoContacts, DynamoRuns};
use hikyaku_aws::lambda::FunctionInvoker;
use hikyaku_aws::ses::SesAccount;
use hikyaku_aws::sqs::SqsJobQueue;
use lambda_runtime::{Error, run, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = config::Config::from_env()?;
    hikyaku_core::logging::set_address_display(config.address_display);
    let sdk = load_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let deps = handler::Deps {
        campaigns: DynamoCampaigns::new(dynamodb.clone(), config.tables.campaigns.clone()),
        runs: DynamoRuns::new(dynamodb.clone(), config.tables.runs.clone()),
        contacts: DynamoContacts::new(dynamodb.clone(), config.tables.contacts.clone()),
        budget: DynamoBudget::new(dynamodb, config.tables.runs.clone()),
        account: SesAccount::new(&sdk),
        budget_settings: config.budget,
        queue: SqsJobQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            config.send_queue_url.clone(),
        ),
        invoker: FunctionInvoker::new(aws_sdk_lambda::Client::new(&sdk)),
        settings: config.settings,
    };
    run(service_fn(|event| handler::function_handler(&deps, event))).await
}
