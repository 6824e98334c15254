//! hikyaku's adapters on AWS: every port of `hikyaku_core::ports` implemented on DynamoDB,
//! SQS and SES v2, plus Lambda invocation, campaign schedules on EventBridge Scheduler and the
//! shared SDK configuration.
//!
//! SDK errors are classified here, by their type, into what core understands: a
//! [`StoreError`](hikyaku_core::ports::StoreError) that is retryable or not, a
//! [`SendError`](hikyaku_core::ports::SendError) of a [`SendErrorClass`](hikyaku_core::ports::SendErrorClass),
//! a [`QueueError`](hikyaku_core::ports::QueueError) or an [`InvokeError`](lambda::InvokeError).
//! Emulators are reached only through the SDK's standard endpoint variables
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SESV2`, ...).

pub mod config;
pub mod dynamodb;
mod error;
pub mod lambda;
#[cfg(test)]
mod operations;
pub mod retry;
pub mod roles;
pub mod scheduler;
pub mod ses;
pub mod setup;
pub mod sns;
pub mod sqs;

pub use config::{ConfigError, Tables, env_opt, env_parse, env_var, load_sdk_config};
pub use dynamodb::{
    DynamoCampaigns, DynamoContacts, DynamoLedger, DynamoRejects, DynamoRuns, DynamoStores,
    DynamoSuppressions,
};
pub use lambda::{FunctionInvoker, InvokeError};
pub use retry::Backoff;
pub use scheduler::SchedulerSchedules;
pub use ses::SesSender;
pub use sqs::SqsJobQueue;
