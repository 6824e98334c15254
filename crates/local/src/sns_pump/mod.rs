//! SNS → Lambda delivery, played locally.
//!
//! On AWS the feedback topic invokes the feedback function itself: asynchronously, one
//! notification per invocation, and a failed invocation is retried twice with backoff before
//! the event is dropped (or sent to an on-failure destination). moto cannot invoke a function
//! that `cargo lambda watch` runs, so `setup` subscribes an SQS queue, the feedback tap, to the
//! topic, and the [`SnsPump`] drains it: each SNS envelope becomes the Lambda SNS event
//! ([`sns_event`]), is delivered with the same retries, and is deleted from the tap afterwards,
//! whatever the outcome.
//!
//! The pump invokes synchronously (RequestResponse) so that it sees each outcome itself and
//! bounds the invocations in flight; that is the part Lambda's internal event queue plays for
//! an asynchronous invoke.
//!
//! ```no_run
//! # async fn demo(sdk: aws_config::SdkConfig, tap_url: String) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use hikyaku_local::sns_pump::{SnsPump, SnsPumpConfig};
//!
//! let mut config = SnsPumpConfig::new(tap_url, "hikyaku-feedback");
//! config.stop_when_idle = Some(Duration::from_millis(1500));
//! let stats = SnsPump::new(&sdk, config)?.run().await?;
//! assert_eq!(stats.dropped, 0);
//! # Ok(()) }
//! ```

pub mod event;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::Message;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::event_source::{self, Invocation};

pub use event::{EnvelopeError, sns_event};

/// SQS returns at most 10 messages per ReceiveMessage.
const MAX_RECEIVE: usize = 10;
/// The longest long poll SQS allows.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// How long a stopped pump waits for deliveries in flight before abandoning them; less than
/// the 10 s `make local-down` allows before it kills a service.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The subscription's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnsPumpConfig {
    /// The tap queue subscribed to the topic (`HIKYAKU_FEEDBACK_TAP_QUEUE_URL`).
    pub queue_url: String,
    /// Function name (the binary name under `cargo lambda watch`).
    pub function_name: String,
    /// Invocations in flight at once.
    pub max_concurrency: usize,
    /// Long-poll wait of each ReceiveMessage (at most 20 s). Short values let the pump notice a
    /// stop request or an idle queue sooner.
    pub receive_wait: Duration,
    /// Retries of a failed invocation before the notification is dropped (AWS: 2).
    pub retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub retry_delay: Duration,
    /// Stop once nothing was received, nothing was in flight, and the queue reported no
    /// visible, in-flight or delayed message for this long.
    pub stop_when_idle: Option<Duration>,
    /// Give up waiting for one invocation after this long; it counts as failed (and is
    /// retried). Keep the attempts within the tap's visibility timeout (600 s from `setup`).
    pub invoke_timeout: Duration,
    /// The last part of the subscription ARN in every record (`<topic arn>:<id>`); random per
    /// pump by default, as each subscription has its own.
    pub subscription_id: String,
}

impl SnsPumpConfig {
    /// Lambda's defaults for asynchronous invocation (two retries), four in flight.
    pub fn new(queue_url: impl Into<String>, function_name: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            function_name: function_name.into(),
            max_concurrency: 4,
            receive_wait: Duration::from_secs(1),
            retries: 2,
            retry_delay: Duration::from_secs(1),
            stop_when_idle: None,
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
        if self.receive_wait > MAX_WAIT {
            return Err(SnsPumpError::Config(
                "the receive wait is at most 20 s".to_owned(),
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnsPumpStats {
    /// Messages received from the tap queue.
    pub messages_received: u64,
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
    /// Messages that were not SNS notification envelopes (deleted without an invocation).
    pub invalid_envelopes: u64,
    /// Messages deleted from the tap queue.
    pub messages_deleted: u64,
    /// Failed ReceiveMessage, GetQueueAttributes or DeleteMessage calls.
    pub sqs_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnsPumpError {
    #[error("invalid SNS pump configuration: {0}")]
    Config(String),
    #[error("a delivery task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The pump. Cheap to clone: clones share their clients and counters.
#[derive(Clone)]
pub struct SnsPump {
    inner: Arc<Inner>,
}

struct Inner {
    sqs: aws_sdk_sqs::Client,
    lambda: aws_sdk_lambda::Client,
    config: SnsPumpConfig,
    stats: Mutex<SnsPumpStats>,
}

impl SnsPump {
    /// Builds the SQS and Lambda clients from `sdk` (`AWS_ENDPOINT_URL_LAMBDA` names the
    /// Lambda endpoint). The Lambda client does not retry: the pump's own retries are the
    /// only ones, as on AWS.
    pub fn new(sdk: &SdkConfig, config: SnsPumpConfig) -> Result<Self, SnsPumpError> {
        Self::from_clients(
            aws_sdk_sqs::Client::new(sdk),
            event_source::lambda_client(sdk),
            config,
        )
    }

    /// Uses the given clients.
    pub fn from_clients(
        sqs: aws_sdk_sqs::Client,
        lambda: aws_sdk_lambda::Client,
        config: SnsPumpConfig,
    ) -> Result<Self, SnsPumpError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                sqs,
                lambda,
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

    /// Runs until the queue is idle ([`SnsPumpConfig::stop_when_idle`]), or forever without it.
    pub async fn run(&self) -> Result<SnsPumpStats, SnsPumpError> {
        self.run_until(std::future::pending()).await
    }

    /// Runs until `stop` completes (or the queue is idle, when configured). On stop the pump
    /// receives nothing more and gives the deliveries in flight a few seconds to finish; the
    /// ones still running then are abandoned, their messages left in the queue to be received
    /// again after its visibility timeout (SNS delivers at least once). Returns the counters.
    pub async fn run_until<F>(&self, stop: F) -> Result<SnsPumpStats, SnsPumpError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        let config = &self.inner.config;
        let permits = Arc::new(Semaphore::new(config.max_concurrency));
        let mut in_flight = JoinSet::new();
        let mut idle_since: Option<Instant> = None;
        tracing::info!(
            queue = %config.queue_url,
            function = %config.function_name,
            max_concurrency = config.max_concurrency,
            retries = config.retries,
            "SNS pump started"
        );

        let result = loop {
            if let Err(e) = reap(&mut in_flight) {
                break Err(e);
            }
            let first = tokio::select! {
                biased;
                _ = stop_rx.wait_for(|stopped| *stopped) => break Ok(()),
                permit = Arc::clone(&permits).acquire_owned() => {
                    permit.expect("the semaphore is never closed")
                }
            };
            if *stop_rx.borrow() {
                break Ok(());
            }
            // Receive no more than can be invoked at once, so nothing waits invisible.
            let mut free = vec![first];
            while free.len() < MAX_RECEIVE {
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => free.push(permit),
                    Err(_) => break,
                }
            }
            let Ok(messages) = self.receive(free.len()).await else {
                drop(free);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            if messages.is_empty() {
                drop(free);
                if let Err(e) = reap(&mut in_flight) {
                    break Err(e);
                }
                if let Some(limit) = config.stop_when_idle {
                    if in_flight.is_empty() && self.queue_is_empty().await {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= limit {
                            tracing::info!("tap queue idle; SNS pump stopping");
                            break Ok(());
                        }
                    } else {
                        idle_since = None;
                    }
                }
                continue;
            }
            idle_since = None;
            self.count(|s| s.messages_received += messages.len() as u64);
            // Permits beyond the messages received are released here.
            for (message, permit) in messages.into_iter().zip(free) {
                let pump = self.clone();
                in_flight.spawn(async move {
                    let _permit = permit;
                    pump.process(message).await;
                });
            }
        };

        stopper.abort();
        let settle = async {
            while let Some(joined) = in_flight.join_next().await {
                joined?;
            }
            Ok::<(), SnsPumpError>(())
        };
        match tokio::time::timeout(STOP_GRACE, settle).await {
            Ok(settled) => settled?,
            Err(_) => {
                tracing::warn!(
                    abandoned = in_flight.len(),
                    "deliveries still in flight at stop are abandoned; their messages stay queued"
                );
                in_flight.abort_all();
            }
        }
        result?;
        let stats = self.stats();
        tracing::info!(?stats, "SNS pump stopped");
        Ok(stats)
    }

    fn lock_stats(&self) -> MutexGuard<'_, SnsPumpStats> {
        // The counters stay consistent even if a holder panicked mid-update.
        self.inner.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, update: impl FnOnce(&mut SnsPumpStats)) {
        update(&mut self.lock_stats());
    }

    async fn queue_is_empty(&self) -> bool {
        match event_source::queue_is_empty(&self.inner.sqs, &self.inner.config.queue_url).await {
            Ok(empty) => empty,
            Err(error) => {
                self.count(|s| s.sqs_errors += 1);
                tracing::warn!(%error, "GetQueueAttributes failed");
                false
            }
        }
    }

    async fn receive(&self, max: usize) -> Result<Vec<Message>, ()> {
        let config = &self.inner.config;
        let out = self
            .inner
            .sqs
            .receive_message()
            .queue_url(&config.queue_url)
            .max_number_of_messages(i32::try_from(max.clamp(1, MAX_RECEIVE)).unwrap_or(10))
            .wait_time_seconds(
                i32::try_from(config.receive_wait.min(MAX_WAIT).as_secs()).unwrap_or(20),
            )
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.messages.unwrap_or_default()),
            Err(e) => {
                self.count(|s| s.sqs_errors += 1);
                tracing::warn!(error = %DisplayErrorContext(e), "ReceiveMessage failed");
                Err(())
            }
        }
    }

    /// Delivers one tap message, then deletes it: after the function took it, after the last
    /// retry failed, or at once when it is not an SNS notification.
    async fn process(&self, message: Message) {
        let sqs_message_id = message.message_id().unwrap_or_default();
        match sns_event(
            message.body().unwrap_or_default(),
            &self.inner.config.subscription_id,
        ) {
            Ok(event) => self.deliver(&event).await,
            Err(error) => {
                self.count(|s| s.invalid_envelopes += 1);
                tracing::warn!(sqs_message_id, %error, "not an SNS notification; deleting it");
            }
        }
        if let Some(receipt) = message.receipt_handle() {
            self.delete(receipt).await;
        }
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

    async fn delete(&self, receipt: &str) {
        let result = self
            .inner
            .sqs
            .delete_message()
            .queue_url(&self.inner.config.queue_url)
            .receipt_handle(receipt)
            .send()
            .await;
        match result {
            Ok(_) => self.count(|s| s.messages_deleted += 1),
            Err(e) => {
                self.count(|s| s.sqs_errors += 1);
                tracing::warn!(error = %DisplayErrorContext(e), "DeleteMessage failed");
            }
        }
    }
}

/// Joins the delivery tasks that already finished, surfacing a panic.
fn reap(in_flight: &mut JoinSet<()>) -> Result<(), SnsPumpError> {
    while let Some(joined) = in_flight.try_join_next() {
        joined?;
    }
    Ok(())
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
        let config = SnsPumpConfig::new("q", "f");
        assert_eq!(config.retries, 2);
        assert_eq!(config.max_concurrency, 4);
        config.validate().unwrap();
        let mut zero = config.clone();
        zero.max_concurrency = 0;
        assert!(zero.validate().is_err());
    }

    #[test]
    fn subscription_ids_are_distinct_uuids() {
        let a = SnsPumpConfig::new("q", "f").subscription_id;
        let b = SnsPumpConfig::new("q", "f").subscription_id;
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
