//! The commands' logic. Each takes the ports it needs as `&dyn` traits, so it runs the same
//! against DynamoDB and Lambda or against the in-memory fakes of the tests.

pub mod campaign;
pub mod contacts;
pub mod doctor;
pub mod lifecycle;
pub mod report;
pub mod schedule;
pub mod suppression;
