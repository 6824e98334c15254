//! hikyaku-feedback: fed by the SNS topic of SES's configuration set (and identity
//! notifications). It suppresses addresses that must not be mailed again, records every event
//! on its recipient's ledger record and run counters, and pauses a run whose bounce or
//! complaint rate crosses its guardrail.

mod config;
mod handler;

use hikyaku_aws::config::load_sdk_config;
use hikyaku_aws::dynamodb::{
    DynamoCampaigns, DynamoLedger, DynamoRejects, DynamoRuns, DynamoSuppressions,
};
use hikyaku_core::send::CampaignCache;
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
        suppressions: DynamoSuppressions::new(dynamodb, tables.suppressions.clone()),
        cache: CampaignCache::default(),
        settings: config.settings,
    };
    run(service_fn(|event| handler::function_handler(&deps, event))).await
}
