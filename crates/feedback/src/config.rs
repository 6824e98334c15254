//! The feedback function's settings, read once at cold start from its own environment
//! variables.

use std::time::Duration;

use hikyaku_aws::config::{ConfigError, Tables, address_display_from_env, env_parse_in};
use hikyaku_core::feedback::SoftBouncePolicy;
use hikyaku_core::feedback_flow::FeedbackSettings;
use hikyaku_core::logging::AddressDisplay;

pub struct Config {
    pub tables: Tables,
    pub settings: FeedbackSettings,
    pub address_display: AddressDisplay,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let defaults = SoftBouncePolicy::default();
        let soft_bounce = SoftBouncePolicy {
            limit: env_parse_in("HIKYAKU_SOFT_BOUNCE_LIMIT", defaults.limit, 1..=50)?,
            window: env_parse_in("HIKYAKU_SOFT_BOUNCE_WINDOW", defaults.window, 1..=50)?,
        };
        soft_bounce
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                name: "HIKYAKU_SOFT_BOUNCE_LIMIT".to_owned(),
                value: soft_bounce.limit.to_string(),
                reason,
            })?;
        Ok(Config {
            tables: Tables::from_env()?,
            settings: FeedbackSettings {
                soft_bounce,
                campaign_ttl: Duration::from_secs(env_parse_in(
                    "HIKYAKU_CAMPAIGN_CACHE_SECS",
                    60,
                    0..=3_600,
                )?),
            },
            address_display: address_display_from_env()?,
        })
    }
}
