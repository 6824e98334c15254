//! hikyaku-feedback: fed by the SNS topic of SES's configuration set. For now it reads each
//! notification and logs what kind it is; suppression and guardrails build on this.

mod handler;

use lambda_runtime::{Error, run, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    run(service_fn(handler::function_handler)).await
}
