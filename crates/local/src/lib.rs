//! Local-only glue for running hikyaku without an AWS account.
//!
//! - [`setup`] creates the tables, queues and topic on the moto server and writes the stack's
//!   environment file.
//! - [`pump`] plays the SQS → Lambda event source mapping.
//! - [`sns_pump`] plays SNS → Lambda delivery of the feedback topic, as the HTTP endpoint
//!   subscribed to it.
//! - [`ses_proxy`] sits in front of the SES v2 emulator: it records what the emulator drops,
//!   injects the SES errors a test asks for, and publishes the SES events of every accepted send
//!   to the feedback topic as the mailbox simulator addresses decide them.
//! - [`scheduler`] fires the due schedules of the schedule group (stored on moto) at the
//!   fan-out, as EventBridge Scheduler does.
//! - [`lambda_proxy`] sits in front of `cargo lambda watch` and gives its Invoke API AWS's
//!   semantics (asynchronous `Event` invocations, function errors).
//!
//! Everything here talks to the emulators through the SDK's standard configuration
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_LAMBDA`, ...); nothing is specific to a local build.

pub mod env_file;
mod event_source;
mod forward;
pub mod lambda_proxy;
pub mod pump;
pub mod scheduler;
pub mod server;
pub mod ses_proxy;
pub mod setup;
pub mod sns_pump;
