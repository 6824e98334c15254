//! The send job: one SQS message carrying up to 50 recipients of one run, each with the
//! attributes its template needs. A body that cannot be read is answered, never retried.

use serde::{Deserialize, Serialize};

use crate::contact::Attributes;
use crate::email::EmailAddress;
use crate::ids::{CampaignId, RunId, RunRef};

/// SES's own ceiling on recipients per message, kept as the ceiling on recipients per job.
pub const MAX_RECIPIENTS_PER_JOB: usize = 50;
pub const JOB_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecipient {
    pub email: EmailAddress,
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub attributes: Attributes,
    /// The recipient's place in its run's audience, from 0; set for runs with a canary
    /// slice, which sends those placed inside it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendJob {
    pub v: u32,
    pub campaign_id: CampaignId,
    pub run_id: RunId,
    /// How many times these recipients were put back after throttling or a transient error;
    /// it sets the delay before the next attempt.
    #[serde(default)]
    pub attempt: u32,
    pub recipients: Vec<JobRecipient>,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    #[error("message body is empty")]
    EmptyBody,
    #[error("message body is not a send job: {0}")]
    Unreadable(String),
    #[error("send job has format version {found}; this sender reads version {JOB_FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("send job has no recipients")]
    NoRecipients,
    #[error("send job has {found} recipients; at most {MAX_RECIPIENTS_PER_JOB} are allowed")]
    TooManyRecipients { found: usize },
    #[error("send job lists {email} twice")]
    DuplicateRecipient { email: String },
}

impl SendJob {
    pub fn new(run: &RunRef, attempt: u32, recipients: Vec<JobRecipient>) -> SendJob {
        SendJob {
            v: JOB_FORMAT_VERSION,
            campaign_id: run.campaign_id.clone(),
            run_id: run.run_id.clone(),
            attempt,
            recipients,
        }
    }

    pub fn run(&self) -> RunRef {
        RunRef::new(self.campaign_id.clone(), self.run_id.clone())
    }

    /// Reads and checks an SQS body. Serde's message names the field and position at fault.
    pub fn from_body(body: &str) -> Result<SendJob, JobError> {
        if body.trim().is_empty() {
            return Err(JobError::EmptyBody);
        }
        let job: SendJob =
            serde_json::from_str(body).map_err(|err| JobError::Unreadable(err.to_string()))?;
        if job.v != JOB_FORMAT_VERSION {
            return Err(JobError::UnsupportedVersion { found: job.v });
        }
        if job.recipients.is_empty() {
            return Err(JobError::NoRecipients);
        }
        if job.recipients.len() > MAX_RECIPIENTS_PER_JOB {
            return Err(JobError::TooManyRecipients {
                found: job.recipients.len(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = job.recipients.iter().find(|r| !seen.insert(&r.email)) {
            return Err(JobError::DuplicateRecipient {
                email: crate::logging::shown(&dup.email),
            });
        }
        Ok(job)
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a send job always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::AttrValue;

    fn job() -> SendJob {
        let run = RunRef::new(
            CampaignId::parse("c1").unwrap(),
            RunId::parse("20261224T090000Z").unwrap(),
        );
        let mut attributes = Attributes::new();
        attributes.insert("first_name".into(), AttrValue::Str("Aiko".into()));
        SendJob::new(
            &run,
            0,
            vec![JobRecipient {
                email: EmailAddress::parse("aiko@example.com").unwrap(),
                attributes,
                position: None,
            }],
        )
    }

    #[test]
    fn a_job_round_trips_through_its_body() {
        let job = job();
        assert_eq!(SendJob::from_body(&job.to_body()).unwrap(), job);
    }

    #[test]
    fn malformed_bodies_are_named() {
        assert_eq!(SendJob::from_body("  "), Err(JobError::EmptyBody));
        let err = SendJob::from_body("{not json").unwrap_err();
        assert!(matches!(err, JobError::Unreadable(_)), "{err}");
        let bad_email = job()
            .to_body()
            .replace("aiko@example.com", "aiko example.com");
        let err = SendJob::from_body(&bad_email).unwrap_err().to_string();
        assert!(err.contains("not a send job"), "{err}");
        let bad_campaign = job().to_body().replace("\"c1\"", "\"c.1\"");
        assert!(
            SendJob::from_body(&bad_campaign)
                .unwrap_err()
                .to_string()
                .contains("'.'")
        );
    }

    #[test]
    fn versions_counts_and_duplicates_are_checked() {
        let mut other = job();
        other.v = 2;
        assert_eq!(
            SendJob::from_body(&other.to_body()),
            Err(JobError::UnsupportedVersion { found: 2 })
        );
        let mut empty = job();
        empty.recipients.clear();
        assert_eq!(
            SendJob::from_body(&empty.to_body()),
            Err(JobError::NoRecipients)
        );
        let mut many = job();
        let first = many.recipients[0].clone();
        many.recipients = (0..51)
            .map(|i| JobRecipient {
                email: EmailAddress::parse(&format!("r{i}@example.com")).unwrap(),
                ..first.clone()
            })
            .collect();
        assert_eq!(
            SendJob::from_body(&many.to_body()),
            Err(JobError::TooManyRecipients { found: 51 })
        );
        let mut twice = job();
        twice.recipients.push(first);
        assert!(matches!(
            SendJob::from_body(&twice.to_body()),
            Err(JobError::DuplicateRecipient { .. })
        ));
        let unknown = job().to_body().replace("\"v\":1", "\"v\":1,\"extra\":true");
        assert!(SendJob::from_body(&unknown).is_err());
    }
}
