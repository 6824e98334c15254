//! SNS → Lambda delivery, played locally.
//!
//! On AWS the feedback topic invokes the feedback function itself: asynchronously, one
//! notification per invocation, and a failed invocation is retried twice with backoff before
//! the event is dropped (or sent to an on-failure destination). moto cannot invoke a function
//! that `cargo lambda watch` runs, so `setup` subscribes the [`SnsPump`]'s HTTP endpoint to the
//! topic (an `http` subscription, which moto delivers to at publish time): each SNS envelope
//! POSTed there is answered at once, turned into the Lambda SNS event ([`sns_event`]) and
//! delivered in the background with the same retries. Lambda's internal event queue is this
//! pump's memory: what it holds is lost if it stops, as AWS keeps it for at most six hours.
//!
//! `GET /_hikyaku/stats` returns the [`SnsPumpStats`] (with `pending`: notifications received
//! and not yet delivered or dropped), `GET /_hikyaku/health` answers `ok`.
//!
//! ```no_run
//! # async fn demo(sdk: aws_config::SdkConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use hikyaku_local::sns_pump::{SnsPump, SnsPumpConfig};
//!
//! let pump = SnsPump::new(&sdk, SnsPumpConfig::new("hikyaku-feedback"))?;
//! let running = pump.spawn("127.0.0.1:0").await?;
//! // Subscribe `running.url()` to a topic, publish, then:
//! assert!(pump.wait_idle(Duration::from_millis(500), Duration::from_secs(30)).await);
//! # Ok(()) }
//! ```

pub mod event;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_config::SdkConfig;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::event_source::{self, Invocation};
use crate::server::Running;

pub use event::{EnvelopeError, sns_event};

/// The subscription's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnsPumpConfig {
    /// Function name (the binary name under `cargo lambda watch`).
    pub function_name: String,
    /// Invocations in flight at once.
    pub max_concurrency: usize,
    /// Retries of a failed invocation before the notification is dropped (AWS: 2).
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub retry_delay: Duration,
    /// Give up waiting for one invocation after this long; it counts as failed (and is
    /// retried).
    pub invoke_timeout: Duration,
    /// The last part of the subscription ARN in every record (`<topic arn>:<id>`); random per
    /// pump by default, as each subscription has its own.
    pub subscription_id: String,
}

impl SnsPumpConfig {
    /// Lambda's defaults for asynchronous invocation (two retries), four in flight.
    pub fn new(function_name: impl Into<String>) -> Self {
        Self {
            function_name: function_name.into(),
            max_concurrency: 4,
            retries: 2,
            retry_delay: Duration::from_secs(1),
            invoke_timeout: Duration::from_secs(120),
            subscription_id: random_uuid(),
        }
    }

    pub fn validate(&self) -> Result<(), SnsPumpError> {
        if self.max_concurrency == 0 {
            return Err(SnsPumpError::Config(
                "max concurrency must be at least 1".to_owned(),
            ));
        }
        if self.retries > 10 {
            return Err(SnsPumpError::Config(format!(
                "{} retries: at most 10 (AWS allows 0 to 2)",
                self.retries
            )));
        }
        Ok(())
    }
}

/// Counters of one pump's work; [`SnsPump::stats`] reads them while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnsPumpStats {
    /// SNS notifications POSTed to the endpoint.
    pub received: u64,
    /// Received and not yet delivered or dropped.
    pub pending: u64,
    /// Invocations, retries included.
    pub invocations: u64,
    /// Notifications the function processed (on the first attempt or a retry).
    pub delivered: u64,
    /// Invocations that were retries.
    pub retries: u64,
    /// Invocations that ended in a function error.
    pub function_errors: u64,
    /// Invocations that failed before reaching the function, or got no answer in time.
    pub invoke_errors: u64,
    /// Notifications given up on after every retry failed.
    pub dropped: u64,
    /// POSTs that were not SNS notification envelopes (answered 400, nothing invoked).
    pub invalid_envelopes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnsPumpError {
    #[error("invalid SNS pump configuration: {0}")]
    Config(String),
}

/// The pump. Cheap to clone: clones share their client, permits and counters.
#[derive(Clone)]
pub struct SnsPump {
    inner: Arc<Inner>,
}

struct Inner {
    lambda: aws_sdk_lambda::Client,
    config: SnsPumpConfig,
    permits: Semaphore,
    stats: Mutex<SnsPumpStats>,
}

impl SnsPump {
    /// Builds the Lambda client from `sdk` (`AWS_ENDPOINT_URL_LAMBDA` names the endpoint). It
    /// does not retry: the pump's own retries are the only ones, as on AWS.
    pub fn new(sdk: &SdkConfig, config: SnsPumpConfig) -> Result<Self, SnsPumpError> {
        Self::from_client(event_source::lambda_client(sdk), config)
    }

    /// Uses the given client.
    pub fn from_client(
        lambda: aws_sdk_lambda::Client,
        config: SnsPumpConfig,
    ) -> Result<Self, SnsPumpError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                lambda,
                permits: Semaphore::new(config.max_concurrency),
                config,
                stats: Mutex::new(SnsPumpStats::default()),
            }),
        })
    }

    pub fn config(&self) -> &SnsPumpConfig {
        &self.inner.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SnsPumpStats {
        *self.lock_stats()
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/", post(receive))
            .route("/_hikyaku/stats", get(stats))
            .route("/_hikyaku/health", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    /// Serves the endpoint on `listener` until `shutdown` completes; deliveries still pending
    /// then are abandoned.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracing::info!(
            function = %self.inner.config.function_name,
            max_concurrency = self.inner.config.max_concurrency,
            retries = self.inner.config.retries,
            "SNS pump listening on {}",
            listener.local_addr()?
        );
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    pub async fn spawn(&self, addr: impl ToSocketAddrs + Send) -> std::io::Result<Running<Self>> {
        let listener = TcpListener::bind(addr).await?;
        let pump = self.clone();
        Running::spawn(
            self.clone(),
            listener,
            move |listener, shutdown| async move { pump.serve(listener, shutdown).await },
        )
    }

    /// Waits until nothing has been pending for `quiet` (every notification received so far
    /// delivered or dropped); `false` when that did not happen within `limit`.
    pub async fn wait_idle(&self, quiet: Duration, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut idle_since: Option<Instant> = None;
        while Instant::now() < deadline {
            if self.stats().pending == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= quiet {
                    return true;
                }
            } else {
                idle_since = None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn lock_stats(&self) -> MutexGuard<'_, SnsPumpStats> {
        // The counters stay consistent even if a holder panicked mid-update.
        self.inner.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, update: impl FnOnce(&mut SnsPumpStats)) {
        update(&mut self.lock_stats());
    }

    /// Delivers one notification when a permit frees up.
    async fn process(self, event: Value) {
        {
            let _permit = self
                .inner
                .permits
                .acquire()
                .await
                .expect("the semaphore is never closed");
            self.deliver(&event).await;
        }
        self.count(|s| s.pending -= 1);
    }

    /// Invokes the function with `event`, retrying failures with a doubling delay.
    async fn deliver(&self, event: &Value) {
        let config = &self.inner.config;
        let sns_message_id = event["Records"][0]["Sns"]["MessageId"]
            .as_str()
            .unwrap_or_default();
        let payload = serde_json::to_vec(event).expect("a JSON value always serializes");
        let mut delay = config.retry_delay;
        for attempt in 0..=config.retries {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
                self.count(|s| s.retries += 1);
            }
            self.count(|s| s.invocations += 1);
            let started = Instant::now();
            let invocation = event_source::invoke(
                &self.inner.lambda,
                &config.function_name,
                &payload,
                config.invoke_timeout,
            )
            .await;
            let elapsed_ms = started.elapsed().as_millis();
            match invocation {
                Invocation::Returned(_) => {
                    self.count(|s| s.delivered += 1);
                    tracing::info!(
                        function = %config.function_name,
                        sns_message_id,
                        attempt,
                        elapsed_ms,
                        "notification delivered"
                    );
                    return;
                }
                Invocation::FunctionError(reason) => {
                    self.count(|s| s.function_errors += 1);
                    tracing::warn!(sns_message_id, attempt, elapsed_ms, %reason, "function error");
                }
                Invocation::InvokeError(reason) => {
                    self.count(|s| s.invoke_errors += 1);
                    tracing::warn!(sns_message_id, attempt, elapsed_ms, %reason, "invoke failed");
                }
            }
        }
        self.count(|s| s.dropped += 1);
        tracing::error!(
            function = %config.function_name,
            sns_message_id,
            attempts = config.retries + 1,
            "every attempt failed; the notification is dropped"
        );
    }
}

/// `POST /`: an SNS envelope, answered at once; its delivery goes on in the background.
async fn receive(State(pump): State<SnsPump>, body: String) -> impl IntoResponse {
    match sns_event(&body, &pump.inner.config.subscription_id) {
        Ok(event) => {
            pump.count(|s| {
                s.received += 1;
                s.pending += 1;
            });
            tokio::spawn(pump.clone().process(event));
            StatusCode::OK
        }
        Err(EnvelopeError::NotANotification(kind)) if kind == "SubscriptionConfirmation" => {
            // moto confirms http subscriptions itself; real SNS would wait for SubscribeURL.
            tracing::info!("subscription confirmation received; nothing to confirm locally");
            StatusCode::OK
        }
        Err(error) => {
            pump.count(|s| s.invalid_envelopes += 1);
            tracing::warn!(%error, "not an SNS notification; refused");
            StatusCode::BAD_REQUEST
        }
    }
}

async fn stats(State(pump): State<SnsPump>) -> impl IntoResponse {
    axum::Json(pump.stats())
}

/// A random version-4-shaped UUID, from the standard library's randomly keyed hasher.
fn random_uuid() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let high = RandomState::new().hash_one(nanos);
    let low = RandomState::new().hash_one((nanos, std::process::id()));
    const VERSION_MASK: u128 = 0xf << 76;
    const VARIANT_MASK: u128 = 0x3 << 62;
    let random = (u128::from(high) << 64) | u128::from(low);
    let n = (random & !VERSION_MASK & !VARIANT_MASK) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_lambda_async_invocation() {
        let config = SnsPumpConfig::new("f");
        assert_eq!(config.retries, 2);
        assert_eq!(config.max_concurrency, 4);
        config.validate().unwrap();
        let mut zero = config.clone();
        zero.max_concurrency = 0;
        assert!(zero.validate().is_err());
    }

    #[test]
    fn subscription_ids_are_distinct_uuids() {
        let a = SnsPumpConfig::new("f").subscription_id;
        let b = SnsPumpConfig::new("f").subscription_id;
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
