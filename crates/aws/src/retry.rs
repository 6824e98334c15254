//! How long the adapters wait before retrying what a service left undone (DynamoDB's
//! unprocessed batch items, SQS's refused batch entries). The SDK's own retries cover whole
//! calls; this covers the parts of a successful call that did not succeed.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Bounded exponential backoff with jitter: retry `n` (from 1) waits a random time between
/// half and all of `min(initial * 2^(n-1), max)`. After `retries` retries the adapter gives up
/// and returns an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Retries after the first try.
    pub retries: u32,
    /// The longest wait before the first retry.
    pub initial: Duration,
    /// The longest wait before any retry.
    pub max: Duration,
}

impl Default for Backoff {
    /// 6 retries from 50 ms up to 2 s: about 3 s of waiting in all, short enough for a Lambda
    /// invocation, long enough for a throttled partition to recover.
    fn default() -> Self {
        Backoff {
            retries: 6,
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// No waiting between retries (for tests); the number of retries is kept.
    pub fn immediate(retries: u32) -> Backoff {
        Backoff {
            retries,
            initial: Duration::ZERO,
            max: Duration::ZERO,
        }
    }

    /// The wait before retry `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        let cap = self.initial.saturating_mul(factor).min(self.max);
        let half = cap / 2;
        let spread = u64::try_from((cap - half).as_nanos()).unwrap_or(u64::MAX);
        if spread == 0 {
            return cap;
        }
        let random = RandomState::new().hash_one(retry);
        half + Duration::from_nanos(random % spread)
    }

    /// Sleeps before retry `retry` (1-based).
    pub async fn wait(&self, retry: u32) {
        let delay = self.delay(retry);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_retries_grow_then_the_delay_doubles_up_to_the_cap() {
        let backoff = Backoff {
            retries: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for (retry, cap_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            let delay = backoff.delay(retry);
            let cap = Duration::from_millis(cap_ms);
            assert!(delay >= cap / 2 && delay <= cap, "retry {retry}: {delay:?}");
        }
        assert_eq!(Backoff::immediate(3).delay(3), Duration::ZERO);
    }
}
