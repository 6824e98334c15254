//! The sender's settings, read once at cold start from its own environment variables.

use std::time::Duration;

use hikyaku_aws::config::{
    ConfigError, Tables, address_display_from_env, budget_settings_from_env, env_parse_in, env_var,
};
use hikyaku_core::logging::AddressDisplay;
use hikyaku_core::send::SendSettings;

pub struct Config {
    pub tables: Tables,
    pub send_queue_url: String,
    pub concurrency: usize,
    pub settings: SendSettings,
    pub address_display: AddressDisplay,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let retry_base: u64 = env_parse_in("HIKYAKU_RETRY_BASE_SECS", 2, 1..=900)?;
        // SQS delays a message by at most 900 s.
        let retry_max: u64 = env_parse_in("HIKYAKU_RETRY_MAX_SECS", 300, retry_base..=900)?;
        Ok(Config {
            tables: Tables::from_env()?,
            send_queue_url: env_var("HIKYAKU_SEND_QUEUE_URL")?,
            // Recipients worked on at once; the rate is the send budget's, account-wide.
            concurrency: env_parse_in("HIKYAKU_SEND_CONCURRENCY", 16, 1..=256)?,
            settings: SendSettings {
                // Must outlive the function timeout (at most 900 s), so a live sender's claim
                // is never taken for an abandoned one.
                claim_timeout: chrono::Duration::seconds(env_parse_in(
                    "HIKYAKU_CLAIM_TIMEOUT_SECS",
                    900,
                    60..=86_400,
                )?),
                retry_base: Duration::from_secs(retry_base),
                retry_max: Duration::from_secs(retry_max),
                reserve: Duration::from_secs(env_parse_in(
                    "HIKYAKU_SEND_RESERVE_SECS",
                    5,
                    1..=300,
                )?),
                campaign_ttl: Duration::from_secs(env_parse_in(
                    "HIKYAKU_CAMPAIGN_CACHE_SECS",
                    60,
                    0..=3_600,
                )?),
                paused_recheck: Duration::from_secs(env_parse_in(
                    "HIKYAKU_PAUSED_RECHECK_SECS",
                    60,
                    1..=900,
                )?),
                run_recheck: SendSettings::default().run_recheck,
                budget: budget_settings_from_env()?,
            },
            address_display: address_display_from_env()?,
        })
    }
}
