//! The SDK configuration, the table names, and environment helpers the functions' own
//! `config.rs` files reuse. Endpoints are never configured here: the SDK reads its standard
//! variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SESV2`, ...), which is how a local run
//! reaches the emulators with the very same binaries.

use std::fmt::Display;
use std::str::FromStr;

use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the SDK configuration once per process (credentials, region, endpoints, retries) from
/// the environment, the profile and the Lambda execution role.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// A configuration value that is missing or unusable; it names the variable and the value.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The variable is unset or blank.
    #[error("environment variable {name} is not set")]
    Missing { name: String },
    /// The variable's value cannot be used, for `reason`.
    #[error("environment variable {name} has the value '{value}', which is not valid: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// The value of `name`, required: unset or blank is [`ConfigError::Missing`], a value that is
/// not Unicode is [`ConfigError::Invalid`]. Surrounding whitespace is trimmed.
pub fn env_var(name: &str) -> Result<String, ConfigError> {
    env_opt(name)?.ok_or_else(|| ConfigError::Missing {
        name: name.to_owned(),
    })
}

/// The value of `name` if it is set and not blank, trimmed.
pub fn env_opt(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) => Ok(non_blank(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => Err(ConfigError::Invalid {
            name: name.to_owned(),
            value: raw.to_string_lossy().into_owned(),
            reason: "it is not valid UTF-8".to_owned(),
        }),
    }
}

/// The value of `name` parsed as `T`, or `default` when unset or blank. A value that does not
/// parse is an error naming the variable, the value and the parser's reason.
pub fn env_parse<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    parse_value(name, env_opt(name)?, default)
}

/// As [`env_parse`], and the value must lie in `range`; the error names the range.
pub fn env_parse_in<T>(
    name: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    let value = env_parse(name, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            name: name.to_owned(),
            value: value.to_string(),
            reason: format!("must be between {} and {}", range.start(), range.end()),
        })
    }
}

/// `HIKYAKU_LOG_ADDRESSES`: whether logs show addresses masked (the default) or in full.
pub fn address_display_from_env() -> Result<hikyaku_core::logging::AddressDisplay, ConfigError> {
    const NAME: &str = "HIKYAKU_LOG_ADDRESSES";
    let value = env_opt(NAME)?.unwrap_or_default();
    hikyaku_core::logging::AddressDisplay::parse(&value).map_err(|reason| ConfigError::Invalid {
        name: NAME.to_owned(),
        value,
        reason,
    })
}

/// `HIKYAKU_ACCOUNT_CACHE_SECS` and `HIKYAKU_QUOTA_RECHECK_SECS`: how long an SES account
/// snapshot is trusted, and how long a run waiting for quota waits before looking again.
/// What the fan-out and the sender both read.
pub fn account_settings_from_env(
    base: hikyaku_core::budget::BudgetSettings,
) -> Result<hikyaku_core::budget::BudgetSettings, ConfigError> {
    use std::time::Duration;
    Ok(hikyaku_core::budget::BudgetSettings {
        account_ttl: Duration::from_secs(env_parse_in(
            "HIKYAKU_ACCOUNT_CACHE_SECS",
            60,
            1..=3_600,
        )?),
        // SQS delays a message by at most 900 s.
        quota_recheck: Duration::from_secs(env_parse_in(
            "HIKYAKU_QUOTA_RECHECK_SECS",
            600,
            1..=900,
        )?),
        ..base
    })
}

/// The send budget as the sender reads it: the account settings, and
/// `HIKYAKU_BUDGET_HEADROOM_PERCENT` (share of `MaxSendRate` left for other mail) and
/// `HIKYAKU_BUDGET_CHUNK_MS` (slots taken per budget write, in milliseconds of sending).
pub fn budget_settings_from_env() -> Result<hikyaku_core::budget::BudgetSettings, ConfigError> {
    let base = hikyaku_core::budget::BudgetSettings::default();
    let headroom: f64 = env_parse("HIKYAKU_BUDGET_HEADROOM_PERCENT", base.headroom_percent)?;
    if !(0.0..=90.0).contains(&headroom) {
        return Err(ConfigError::Invalid {
            name: "HIKYAKU_BUDGET_HEADROOM_PERCENT".to_owned(),
            value: headroom.to_string(),
            reason: "must be between 0 and 90".to_owned(),
        });
    }
    let chunk_ms: u64 = env_parse_in("HIKYAKU_BUDGET_CHUNK_MS", 250, 20..=5_000)?;
    account_settings_from_env(hikyaku_core::budget::BudgetSettings {
        headroom_percent: headroom,
        chunk: std::time::Duration::from_millis(chunk_ms),
        ..base
    })
}

fn non_blank(value: String) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn parse_value<T>(name: &str, value: Option<String>, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match value {
        None => Ok(default),
        Some(value) => value.parse().map_err(|err: T::Err| ConfigError::Invalid {
            name: name.to_owned(),
            reason: err.to_string(),
            value,
        }),
    }
}

/// The DynamoDB tables, by name (or ARN), as the stack passes them to every function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    /// Contacts, their delivery activity and list schemas.
    pub contacts: String,
    /// Campaign definitions.
    pub campaigns: String,
    /// Runs and their fan-out progress.
    pub runs: String,
    /// The delivery ledger, and the log of rejected inputs.
    pub deliveries: String,
    /// Suppressed addresses.
    pub suppressions: String,
}

impl Tables {
    /// The variables naming the tables, in field order.
    pub const CONTACTS_VAR: &'static str = "HIKYAKU_CONTACTS_TABLE";
    pub const CAMPAIGNS_VAR: &'static str = "HIKYAKU_CAMPAIGNS_TABLE";
    pub const RUNS_VAR: &'static str = "HIKYAKU_RUNS_TABLE";
    pub const DELIVERIES_VAR: &'static str = "HIKYAKU_DELIVERIES_TABLE";
    pub const SUPPRESSIONS_VAR: &'static str = "HIKYAKU_SUPPRESSIONS_TABLE";

    /// Reads the five `HIKYAKU_*_TABLE` variables; every one is required and must be a valid
    /// table name or a table ARN.
    pub fn from_env() -> Result<Tables, ConfigError> {
        Tables::from_lookup(env_opt)
    }

    /// As [`Tables::from_env`], reading the variables through `lookup` (for tests and tools
    /// that keep their settings elsewhere).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Tables, ConfigError> {
        let table = |name: &str| -> Result<String, ConfigError> {
            let value = lookup(name)?
                .and_then(non_blank)
                .ok_or_else(|| ConfigError::Missing {
                    name: name.to_owned(),
                })?;
            check_table_name(&value).map_err(|reason| ConfigError::Invalid {
                name: name.to_owned(),
                value: value.clone(),
                reason,
            })?;
            Ok(value)
        };
        Ok(Tables {
            contacts: table(Tables::CONTACTS_VAR)?,
            campaigns: table(Tables::CAMPAIGNS_VAR)?,
            runs: table(Tables::RUNS_VAR)?,
            deliveries: table(Tables::DELIVERIES_VAR)?,
            suppressions: table(Tables::SUPPRESSIONS_VAR)?,
        })
    }
}

/// DynamoDB's rule: 3 to 255 characters of `[A-Za-z0-9_.-]`; an ARN is accepted as it is.
fn check_table_name(value: &str) -> Result<(), String> {
    if value.starts_with("arn:") {
        return Ok(());
    }
    if !(3..=255).contains(&value.len()) {
        return Err(format!(
            "a table name has 3 to 255 characters, this one has {}",
            value.chars().count()
        ));
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some(found) => Err(format!(
            "'{found}' is not allowed in a table name (letters, digits, '_', '-' and '.')"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn all_tables() -> HashMap<String, String> {
        vars(&[
            (Tables::CONTACTS_VAR, "hikyaku-contacts"),
            (Tables::CAMPAIGNS_VAR, "hikyaku-campaigns"),
            (Tables::RUNS_VAR, "hikyaku-runs"),
            (Tables::DELIVERIES_VAR, "hikyaku-deliveries"),
            (
                Tables::SUPPRESSIONS_VAR,
                "arn:aws:dynamodb:eu-west-1:111122223333:table/hikyaku-suppressions",
            ),
        ])
    }

    fn lookup(
        vars: &HashMap<String, String>,
    ) -> impl Fn(&str) -> Result<Option<String>, ConfigError> + '_ {
        |name| Ok(vars.get(name).cloned())
    }

    #[test]
    fn when_every_table_variable_is_set_then_the_tables_are_read() {
        let vars = all_tables();
        let tables = Tables::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(tables.contacts, "hikyaku-contacts");
        assert_eq!(tables.deliveries, "hikyaku-deliveries");
        assert!(tables.suppressions.starts_with("arn:"));
    }

    #[test]
    fn when_a_table_variable_is_missing_or_blank_then_the_error_names_it() {
        let mut vars = all_tables();
        vars.remove(Tables::RUNS_VAR);
        assert_eq!(
            Tables::from_lookup(lookup(&vars)),
            Err(ConfigError::Missing {
                name: "HIKYAKU_RUNS_TABLE".into()
            })
        );
        vars.insert(Tables::RUNS_VAR.into(), "   ".into());
        let err = Tables::from_lookup(lookup(&vars)).unwrap_err().to_string();
        assert!(err.contains("HIKYAKU_RUNS_TABLE"), "{err}");
    }

    #[test]
    fn when_a_table_name_is_invalid_then_the_error_names_the_variable_and_value() {
        let mut vars = all_tables();
        vars.insert(Tables::CONTACTS_VAR.into(), "my contacts".into());
        let err = Tables::from_lookup(lookup(&vars)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("HIKYAKU_CONTACTS_TABLE"), "{text}");
        assert!(text.contains("'my contacts'"), "{text}");
        assert!(text.contains("' '"), "{text}");
        vars.insert(Tables::CONTACTS_VAR.into(), "ab".into());
        assert!(matches!(
            Tables::from_lookup(lookup(&vars)),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn when_a_value_does_not_parse_then_the_error_names_variable_value_and_reason() {
        assert_eq!(parse_value::<u32>("X", None, 7), Ok(7));
        assert_eq!(parse_value::<u32>("X", Some("12".into()), 7), Ok(12));
        let err = parse_value::<u32>("HIKYAKU_PAGE_SIZE", Some("lots".into()), 7).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("HIKYAKU_PAGE_SIZE"), "{text}");
        assert!(text.contains("'lots'"), "{text}");
        assert!(text.contains("invalid digit"), "{text}");
    }
}
