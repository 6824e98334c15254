//! The fan-out's settings, read once at cold start from its own environment variables.

use std::time::Duration;

use hikyaku_aws::config::{
    ConfigError, Tables, account_settings_from_env, address_display_from_env, env_parse_in, env_var,
};
use hikyaku_core::budget::BudgetSettings;
use hikyaku_core::fanout::FanoutSettings;
use hikyaku_core::job::MAX_RECIPIENTS_PER_JOB;
use hikyaku_core::logging::AddressDisplay;

pub struct Config {
    pub tables: Tables,
    pub send_queue_url: String,
    pub settings: FanoutSettings,
    /// The SES account check before a run enqueues.
    pub budget: BudgetSettings,
    pub address_display: AddressDisplay,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            tables: Tables::from_env()?,
            send_queue_url: env_var("HIKYAKU_SEND_QUEUE_URL")?,
            settings: FanoutSettings {
                page_size: env_parse_in("HIKYAKU_FANOUT_PAGE_SIZE", 500, 1..=10_000)?,
                recipients_per_job: env_parse_in(
                    "HIKYAKU_RECIPIENTS_PER_MESSAGE",
                    MAX_RECIPIENTS_PER_JOB,
                    1..=MAX_RECIPIENTS_PER_JOB,
                )?,
                reserve: Duration::from_secs(env_parse_in(
                    "HIKYAKU_FANOUT_RESERVE_SECS",
                    20,
                    1..=600,
                )?),
            },
            budget: account_settings_from_env(BudgetSettings::default())?,
            address_display: address_display_from_env()?,
        })
    }
}
