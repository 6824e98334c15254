//! The SES account the proxy plays, which the SES emulator has not: its `GetAccount` answer,
//! and the limits every SendEmail meets, counted in recipients as SES counts them.
//!
//! - The send rate is a token bucket: `max_send_rate` tokens a second, holding at most
//!   `burst_seconds` worth (SES lets short bursts above the rate through, not sustained ones);
//!   a request for more recipients than the bucket holds gets SES's own 429
//!   `TooManyRequestsException`, "Maximum sending rate exceeded.".
//! - The daily quota counts the recipients accepted over the rolling window (24 hours; tests
//!   shorten it to watch it roll); beyond `max_24_hour_send` a SendEmail gets 400
//!   `LimitExceededException`, "Daily message quota exceeded.".
//! - `sending_enabled: false` answers 400 `SendingPausedException`.
//!
//! Pure apart from the clock the caller passes in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What the account allows; `POST /_hikyaku/account` replaces it (JSON, every field optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountQuota {
    /// Recipients per second.
    pub max_send_rate: f64,
    /// Recipients per rolling window; negative: unlimited.
    pub max_24_hour_send: f64,
    /// The rate bucket holds this many seconds of sending.
    pub burst_seconds: f64,
    /// Recipients a second that other mail from the account (transactional mail, another
    /// application) takes from the rate: GetAccount does not show it, throttling does.
    pub other_mail_rate: f64,
    /// Length of the rolling quota window, in seconds (SES: 86,400).
    pub window_secs: u64,
    pub sending_enabled: bool,
    /// `HEALTHY`, `PROBATION` or `SHUTDOWN`.
    pub enforcement_status: String,
    pub production_access_enabled: bool,
}

impl Default for AccountQuota {
    fn default() -> Self {
        AccountQuota {
            max_send_rate: 200.0,
            max_24_hour_send: 1_000_000.0,
            burst_seconds: 1.0,
            other_mail_rate: 0.0,
            window_secs: 86_400,
            sending_enabled: true,
            enforcement_status: "HEALTHY".to_owned(),
            production_access_enabled: true,
        }
    }
}

/// Why SES refuses a SendEmail for the account's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitRefusal {
    RateExceeded,
    DailyQuotaExceeded,
    SendingPaused,
}

impl LimitRefusal {
    /// HTTP status, `x-amzn-ErrorType`, and message, as SES v2 sends them.
    pub fn response_parts(self) -> (u16, &'static str, &'static str) {
        match self {
            LimitRefusal::RateExceeded => (
                429,
                "TooManyRequestsException",
                "Maximum sending rate exceeded.",
            ),
            LimitRefusal::DailyQuotaExceeded => (
                400,
                "LimitExceededException",
                "Daily message quota exceeded.",
            ),
            LimitRefusal::SendingPaused => (
                400,
                "SendingPausedException",
                "Sending is paused for this account.",
            ),
        }
    }
}

/// The account's counters.
#[derive(Debug)]
pub struct Account {
    quota: AccountQuota,
    tokens: f64,
    refilled: Instant,
    /// Accepted recipients by the time they were accepted, oldest first.
    accepted: VecDeque<(Instant, u64)>,
    in_window: u64,
}

impl Account {
    pub fn new(quota: AccountQuota, now: Instant) -> Account {
        let tokens = quota.max_send_rate * quota.burst_seconds;
        Account {
            quota,
            tokens,
            refilled: now,
            accepted: VecDeque::new(),
            in_window: 0,
        }
    }

    pub fn quota(&self) -> &AccountQuota {
        &self.quota
    }

    /// Replaces the limits; the counts so far stay, the bucket starts full.
    pub fn set_quota(&mut self, quota: AccountQuota, now: Instant) {
        self.tokens = quota.max_send_rate * quota.burst_seconds;
        self.refilled = now;
        self.quota = quota;
    }

    /// Forgets every accepted recipient (a new day) and fills the bucket.
    pub fn reset(&mut self, now: Instant) {
        self.accepted.clear();
        self.in_window = 0;
        self.set_quota(self.quota.clone(), now);
    }

    fn roll(&mut self, now: Instant) {
        let window = Duration::from_secs(self.quota.window_secs);
        while let Some(&(at, count)) = self.accepted.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.accepted.pop_front();
            self.in_window -= count;
        }
        let capacity = self.quota.max_send_rate * self.quota.burst_seconds;
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        let refill = (self.quota.max_send_rate - self.quota.other_mail_rate).max(0.0);
        self.tokens = (self.tokens + elapsed * refill).min(capacity);
        self.refilled = now;
    }

    /// Recipients accepted within the window now.
    pub fn sent_in_window(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.in_window
    }

    /// Admits a SendEmail to `recipients` recipients now, or says why SES refuses it.
    pub fn admit(&mut self, recipients: u64, now: Instant) -> Result<(), LimitRefusal> {
        self.roll(now);
        if !self.quota.sending_enabled {
            return Err(LimitRefusal::SendingPaused);
        }
        if self.quota.max_24_hour_send >= 0.0
            && (self.in_window + recipients) as f64 > self.quota.max_24_hour_send
        {
            return Err(LimitRefusal::DailyQuotaExceeded);
        }
        if self.tokens < recipients as f64 {
            return Err(LimitRefusal::RateExceeded);
        }
        self.tokens -= recipients as f64;
        self.accepted.push_back((now, recipients));
        self.in_window += recipients;
        Ok(())
    }

    /// The `GetAccount` answer (SES v2 JSON).
    pub fn get_account(&mut self, now: Instant) -> Value {
        let sent = self.sent_in_window(now);
        let q = &self.quota;
        json!({
            "SendQuota": {
                "Max24HourSend": q.max_24_hour_send,
                "MaxSendRate": q.max_send_rate,
                "SentLast24Hours": sent as f64,
            },
            "SendingEnabled": q.sending_enabled,
            "EnforcementStatus": q.enforcement_status,
            "ProductionAccessEnabled": q.production_access_enabled,
            "DedicatedIpAutoWarmupEnabled": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(rate: f64, day: f64) -> (Account, Instant) {
        let now = Instant::now();
        let quota = AccountQuota {
            max_send_rate: rate,
            max_24_hour_send: day,
            ..AccountQuota::default()
        };
        (Account::new(quota, now), now)
    }

    #[test]
    fn the_rate_bucket_lets_a_second_of_burst_through_then_refills_at_the_rate() {
        let (mut a, t0) = account(10.0, -1.0);
        assert!((0..10).all(|_| a.admit(1, t0).is_ok()));
        assert_eq!(a.admit(1, t0), Err(LimitRefusal::RateExceeded));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(a.admit(1, later), Ok(()), "one token back after 100 ms");
        assert_eq!(a.admit(1, later), Err(LimitRefusal::RateExceeded));
    }

    #[test]
    fn other_mail_takes_its_share_of_the_rate() {
        let (mut a, t0) = account(10.0, -1.0);
        a.quota.other_mail_rate = 6.0;
        assert!((0..10).all(|_| a.admit(1, t0).is_ok()));
        let later = t0 + Duration::from_secs(1);
        assert!((0..4).all(|_| a.admit(1, later).is_ok()));
        assert_eq!(a.admit(1, later), Err(LimitRefusal::RateExceeded));
    }

    #[test]
    fn recipients_count_not_calls() {
        let (mut a, t0) = account(10.0, -1.0);
        assert_eq!(a.admit(8, t0), Ok(()));
        assert_eq!(a.admit(3, t0), Err(LimitRefusal::RateExceeded));
    }

    #[test]
    fn the_daily_quota_refuses_beyond_its_count_until_the_window_rolls() {
        let (mut a, t0) = account(1_000.0, 5.0);
        a.quota.window_secs = 10;
        assert!((0..5).all(|_| a.admit(1, t0).is_ok()));
        assert_eq!(a.admit(1, t0), Err(LimitRefusal::DailyQuotaExceeded));
        assert_eq!(a.get_account(t0)["SendQuota"]["SentLast24Hours"], 5.0);
        let rolled = t0 + Duration::from_secs(10);
        assert_eq!(a.admit(1, rolled), Ok(()));
        assert_eq!(a.get_account(rolled)["SendQuota"]["SentLast24Hours"], 1.0);
    }

    #[test]
    fn a_disabled_account_pauses_every_send_and_get_account_says_so() {
        let (mut a, t0) = account(10.0, -1.0);
        let mut quota = a.quota().clone();
        quota.sending_enabled = false;
        quota.enforcement_status = "SHUTDOWN".into();
        a.set_quota(quota, t0);
        assert_eq!(a.admit(1, t0), Err(LimitRefusal::SendingPaused));
        let answer = a.get_account(t0);
        assert_eq!(answer["SendingEnabled"], false);
        assert_eq!(answer["EnforcementStatus"], "SHUTDOWN");
    }

    #[test]
    fn quota_json_fields_are_optional_and_typos_are_errors() {
        let quota: AccountQuota = serde_json::from_str(r#"{"max_send_rate": 14}"#).unwrap();
        assert_eq!(quota.max_send_rate, 14.0);
        assert_eq!(quota.window_secs, 86_400);
        assert!(serde_json::from_str::<AccountQuota>(r#"{"max_rate": 14}"#).is_err());
    }
}
