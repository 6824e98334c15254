//! hikyaku's domain: addresses, contacts, campaigns, templates, segments, runs, the delivery
//! ledger and its rules, and the ports the AWS adapters implement. Nothing here talks to AWS, so
//! every business rule is reachable by a unit test.

pub mod budget;
pub mod campaign;
pub mod canary;
pub mod contact;
pub mod doctor;
pub mod email;
pub mod fanout;
pub mod feedback;
pub mod feedback_flow;
pub mod ids;
pub mod import;
pub mod job;
pub mod ledger;
pub mod lifecycle;
pub mod logging;
pub mod notification;
pub mod ports;
pub mod redrive;
pub mod report;
pub mod run;
pub mod schedule;
pub mod segment;
pub mod send;
pub mod template;

#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
