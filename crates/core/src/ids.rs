//! Identifiers that travel into SES `EmailTags`, whose values allow only `[A-Za-z0-9_-]`.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} '{value}' is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error(
        "{kind} '{value}' contains '{found}'; only letters, digits, '-' and '_' are allowed (it is sent as an SES message tag)"
    )]
    InvalidCharacter {
        kind: &'static str,
        value: String,
        found: char,
    },
    #[error("run id '{0}' is not of the form YYYYMMDDTHHMMSSZ")]
    RunIdFormat(String),
}

const MAX_ID_LEN: usize = 64;

fn check_tag_safe(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.chars().count() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            value: value.to_owned(),
            max: MAX_ID_LEN,
        });
    }
    if let Some(found) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(IdError::InvalidCharacter {
            kind,
            value: value.to_owned(),
            found,
        });
    }
    Ok(())
}

macro_rules! tag_safe_id {
    ($name:ident, $kind:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check_tag_safe($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

tag_safe_id!(CampaignId, "campaign id");
tag_safe_id!(ListId, "list id");

/// One execution of a campaign, named by its scheduled time (`20261224T090000Z`). Deriving it
/// from the time makes a schedule that fires twice for the same time the same run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

const RUN_ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

impl RunId {
    pub fn from_scheduled_time(at: DateTime<Utc>) -> RunId {
        RunId(at.format(RUN_ID_FORMAT).to_string())
    }

    pub fn parse(value: &str) -> Result<RunId, IdError> {
        chrono::NaiveDateTime::parse_from_str(value, RUN_ID_FORMAT)
            .map_err(|_| IdError::RunIdFormat(value.to_owned()))?;
        Ok(RunId(value.to_owned()))
    }

    pub fn scheduled_time(&self) -> DateTime<Utc> {
        chrono::NaiveDateTime::parse_from_str(&self.0, RUN_ID_FORMAT)
            .map(|naive| naive.and_utc())
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RunId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::parse(&value)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

/// A run within its campaign: the key of its ledger partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunRef {
    pub campaign_id: CampaignId,
    pub run_id: RunId,
}

impl RunRef {
    pub fn new(campaign_id: CampaignId, run_id: RunId) -> RunRef {
        RunRef {
            campaign_id,
            run_id,
        }
    }

    /// `campaign#run`: the ledger's partition key. '#' cannot occur in either id.
    pub fn key(&self) -> String {
        format!("{}#{}", self.campaign_id, self.run_id)
    }

    /// The run of a ledger partition key ([`key`](Self::key)).
    pub fn from_key(key: &str) -> Result<RunRef, IdError> {
        let (campaign, run) = key
            .split_once('#')
            .ok_or_else(|| IdError::RunIdFormat(key.to_owned()))?;
        Ok(RunRef::new(
            CampaignId::parse(campaign)?,
            RunId::parse(run)?,
        ))
    }
}

impl fmt::Display for RunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.campaign_id, self.run_id)
    }
}

/// RFC 3339 with seconds, the form timestamps are stored and shown in.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn campaign_id_accepts_tag_safe_names() {
        assert_eq!(
            CampaignId::parse("winter-sale_2026").unwrap().as_str(),
            "winter-sale_2026"
        );
    }

    #[test]
    fn campaign_id_names_the_bad_character() {
        let err = CampaignId::parse("winter.sale").unwrap_err();
        assert!(err.to_string().contains("'.'"), "{err}");
        assert_eq!(
            CampaignId::parse("").unwrap_err(),
            IdError::Empty {
                kind: "campaign id"
            }
        );
        assert!(matches!(
            ListId::parse(&"x".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn run_id_round_trips_through_the_scheduled_time() {
        let at = Utc.with_ymd_and_hms(2026, 12, 24, 9, 0, 0).unwrap();
        let run = RunId::from_scheduled_time(at);
        assert_eq!(run.as_str(), "20261224T090000Z");
        assert_eq!(RunId::parse(run.as_str()).unwrap().scheduled_time(), at);
        assert!(RunId::parse("2026-12-24").is_err());
    }

    #[test]
    fn run_key_joins_campaign_and_run() {
        let run = RunRef::new(
            CampaignId::parse("c1").unwrap(),
            RunId::parse("20261224T090000Z").unwrap(),
        );
        assert_eq!(run.key(), "c1#20261224T090000Z");
        assert_eq!(RunRef::from_key(&run.key()).unwrap(), run);
        assert!(RunRef::from_key("rejected#send-queue").is_err());
    }
}
