//! The SQS → Lambda event source mapping, played locally.
//!
//! AWS polls the queue, hands batches to the function through the Invoke API, deletes what the
//! function processed and leaves the rest to reappear after the visibility timeout; the queue's
//! redrive policy moves a message to its dead-letter queue after `maxReceiveCount` receives
//! (moto implements that part itself). The [`Pump`] does the same against any Invoke endpoint,
//! here `cargo lambda watch` through `AWS_ENDPOINT_URL_LAMBDA`.
//!
//! ```no_run
//! # async fn demo(sdk: aws_config::SdkConfig, queue_url: String) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use hikyaku_local::pump::{Pump, PumpConfig};
//!
//! let mut config = PumpConfig::new(queue_url, "hikyaku-sender");
//! config.stop_when_idle = Some(Duration::from_millis(1500));
//! let stats = Pump::new(&sdk, config)?.run().await?;
//! assert_eq!(stats.function_errors, 0);
//! # Ok(()) }
//! ```

pub mod event;
pub mod response;

use std::collections::BTreeSet;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::event_source::{self, Invocation};

pub use event::{MessageAttribute, ReceivedMessage, sqs_event};
pub use response::{BatchOutcome, interpret};

/// SQS returns at most 10 messages per ReceiveMessage.
const MAX_RECEIVE: usize = 10;
/// The longest long poll SQS allows.
const MAX_WAIT: Duration = Duration::from_secs(20);

/// How the pump delivers each batch more than once, to exercise idempotency (SQS delivers at
/// least once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicateDelivery {
    /// Each batch is invoked once.
    #[default]
    Off,
    /// Each batch is invoked twice at the same time (two pollers got the same messages).
    Concurrent,
    /// Each batch is invoked twice, one after the other, before anything is deleted (a delete
    /// that was lost, then the visibility timeout passed).
    Sequential,
}

impl FromStr for DuplicateDelivery {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "no" | "false" => Ok(Self::Off),
            "concurrent" | "yes" | "true" => Ok(Self::Concurrent),
            "sequential" => Ok(Self::Sequential),
            other => Err(format!(
                "unknown duplicate delivery mode {other:?}; use off, concurrent or sequential"
            )),
        }
    }
}

/// The event source mapping's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PumpConfig {
    pub queue_url: String,
    /// Function name (the binary name under `cargo lambda watch`).
    pub function_name: String,
    /// `BatchSize`: 1–10,000; above 10 AWS requires a batching window of at least 1 s.
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`, at millisecond resolution here.
    pub batching_window: Duration,
    /// `ScalingConfig.MaximumConcurrency`: batches in flight at once.
    pub max_concurrency: usize,
    /// Long-poll wait of each ReceiveMessage (at most 20 s). Short values let the pump notice a
    /// stop request or an idle queue sooner.
    pub receive_wait: Duration,
    /// `FunctionResponseTypes: ["ReportBatchItemFailures"]`.
    pub report_batch_item_failures: bool,
    pub duplicate_delivery: DuplicateDelivery,
    /// Stop once nothing was received, nothing was in flight, and the queue reported no
    /// visible, in-flight or delayed message for this long.
    pub stop_when_idle: Option<Duration>,
    /// Give up waiting for an invocation after this long; its batch counts as failed (the
    /// function may still be running, as after a Lambda timeout). `cargo lambda watch` never
    /// answers an invocation whose function it restarted for a code change.
    pub invoke_timeout: Duration,
}

impl PumpConfig {
    /// The AWS defaults for an SQS mapping, with partial batch responses and a maximum
    /// concurrency of 2.
    pub fn new(queue_url: impl Into<String>, function_name: impl Into<String>) -> Self {
        Self {
            queue_url: queue_url.into(),
            function_name: function_name.into(),
            batch_size: 10,
            batching_window: Duration::ZERO,
            max_concurrency: 2,
            receive_wait: Duration::from_secs(1),
            report_batch_item_failures: true,
            duplicate_delivery: DuplicateDelivery::Off,
            stop_when_idle: None,
            invoke_timeout: Duration::from_secs(900),
        }
    }

    /// Checks the limits AWS enforces on an event source mapping.
    pub fn validate(&self) -> Result<(), PumpError> {
        let invalid = |msg: String| Err(PumpError::Config(msg));
        if !(1..=10_000).contains(&self.batch_size) {
            return invalid(format!(
                "batch size {} is outside 1..=10000",
                self.batch_size
            ));
        }
        if self.batch_size > MAX_RECEIVE && self.batching_window < Duration::from_secs(1) {
            return invalid(format!(
                "batch size {} needs a batching window of at least 1 s (as on AWS)",
                self.batch_size
            ));
        }
        if self.batching_window > Duration::from_secs(300) {
            return invalid("the batching window is at most 300 s".to_owned());
        }
        if self.max_concurrency == 0 {
            return invalid("max concurrency must be at least 1".to_owned());
        }
        if self.receive_wait > MAX_WAIT {
            return invalid("the receive wait is at most 20 s".to_owned());
        }
        Ok(())
    }
}

/// Counters of one pump's work; [`Pump::stats`] reads them while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PumpStats {
    /// Batches received and handed to the function.
    pub batches: u64,
    /// Invocations (twice the batches with duplicate delivery).
    pub invocations: u64,
    /// Messages received from the queue.
    pub messages_received: u64,
    /// Records handed to the function, over all invocations.
    pub messages_delivered: u64,
    /// Messages deleted after the function processed them.
    pub messages_deleted: u64,
    /// `batchItemFailures` entries (distinct per invocation) the function reported.
    pub failures_reported: u64,
    /// Invocations whose response broke the partial batch response contract.
    pub invalid_responses: u64,
    /// Invocations that ended in a function error.
    pub function_errors: u64,
    /// Invocations that failed before reaching the function (endpoint down, unknown function).
    pub invoke_errors: u64,
    /// Failed ReceiveMessage, GetQueueAttributes or DeleteMessageBatch calls.
    pub sqs_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("invalid pump configuration: {0}")]
    Config(String),
    #[error("reading the queue ARN of {queue_url}: {message}")]
    QueueArn { queue_url: String, message: String },
    #[error("an invocation task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The pump. Cheap to clone: clones share their clients and counters.
#[derive(Clone)]
pub struct Pump {
    inner: Arc<Inner>,
}

struct Inner {
    sqs: aws_sdk_sqs::Client,
    lambda: aws_sdk_lambda::Client,
    config: PumpConfig,
    region: String,
    stats: Mutex<PumpStats>,
}

impl Pump {
    /// Builds the SQS and Lambda clients from `sdk`. The Lambda client does not retry: a retried
    /// invoke would be a delivery AWS does not make.
    pub fn new(sdk: &SdkConfig, config: PumpConfig) -> Result<Self, PumpError> {
        Self::from_clients(
            aws_sdk_sqs::Client::new(sdk),
            event_source::lambda_client(sdk),
            event_source::region(sdk),
            config,
        )
    }

    /// Uses the given clients; `region` is the event's `awsRegion`.
    pub fn from_clients(
        sqs: aws_sdk_sqs::Client,
        lambda: aws_sdk_lambda::Client,
        region: impl Into<String>,
        config: PumpConfig,
    ) -> Result<Self, PumpError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                sqs,
                lambda,
                config,
                region: region.into(),
                stats: Mutex::new(PumpStats::default()),
            }),
        })
    }

    pub fn config(&self) -> &PumpConfig {
        &self.inner.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PumpStats {
        *self.lock_stats()
    }

    /// Runs until the queue is idle ([`PumpConfig::stop_when_idle`]), or forever without it.
    pub async fn run(&self) -> Result<PumpStats, PumpError> {
        self.run_until(std::future::pending()).await
    }

    /// Runs until `stop` completes (or the queue is idle, when configured). On stop the pump
    /// receives nothing more, lets the invocations in flight finish and settles their batches,
    /// then returns the counters.
    pub async fn run_until<F>(&self, stop: F) -> Result<PumpStats, PumpError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let event_source_arn = self.queue_arn().await?;
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
            batch_size = config.batch_size,
            max_concurrency = config.max_concurrency,
            duplicate_delivery = ?config.duplicate_delivery,
            "pump started"
        );

        let result = loop {
            if let Err(e) = reap(&mut in_flight) {
                break Err(e);
            }
            let permit = tokio::select! {
                biased;
                _ = stop_rx.wait_for(|stopped| *stopped) => break Ok(()),
                permit = Arc::clone(&permits).acquire_owned() => {
                    permit.expect("the semaphore is never closed")
                }
            };
            if *stop_rx.borrow() {
                break Ok(());
            }
            let batch = match self.gather().await {
                Ok(batch) => batch,
                Err(()) => {
                    drop(permit);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                drop(permit);
                if let Err(e) = reap(&mut in_flight) {
                    break Err(e);
                }
                if let Some(limit) = config.stop_when_idle {
                    if in_flight.is_empty() && self.queue_is_empty().await {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= limit {
                            tracing::info!("queue idle; pump stopping");
                            break Ok(());
                        }
                    } else {
                        idle_since = None;
                    }
                }
                continue;
            }
            idle_since = None;
            let pump = self.clone();
            let arn = event_source_arn.clone();
            in_flight.spawn(async move {
                let _permit = permit;
                pump.process(batch, &arn).await;
            });
        };

        stopper.abort();
        while let Some(joined) = in_flight.join_next().await {
            joined?;
        }
        result?;
        let stats = self.stats();
        tracing::info!(?stats, "pump stopped");
        Ok(stats)
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, PumpStats> {
        // The counters stay consistent even if a holder panicked mid-update.
        self.inner.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, update: impl FnOnce(&mut PumpStats)) {
        update(&mut self.lock_stats());
    }

    async fn queue_arn(&self) -> Result<String, PumpError> {
        let url = &self.inner.config.queue_url;
        let err = |message: String| PumpError::QueueArn {
            queue_url: url.clone(),
            message,
        };
        self.inner
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| err(DisplayErrorContext(e).to_string()))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| err("no QueueArn in the response".to_owned()))
    }

    /// True when the queue holds no visible, in-flight or delayed message.
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

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, ()> {
        let out = self
            .inner
            .sqs
            .receive_message()
            .queue_url(&self.inner.config.queue_url)
            .max_number_of_messages(i32::try_from(max.clamp(1, MAX_RECEIVE)).unwrap_or(10))
            .wait_time_seconds(i32::try_from(wait.min(MAX_WAIT).as_secs()).unwrap_or(20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.messages().iter().map(ReceivedMessage::from).collect()),
            Err(e) => {
                self.count(|s| s.sqs_errors += 1);
                tracing::warn!(error = %DisplayErrorContext(e), "ReceiveMessage failed");
                Err(())
            }
        }
    }

    /// One batch: a long poll, then, with a batching window, more receives until the batch is
    /// full or the window closes.
    async fn gather(&self) -> Result<Vec<ReceivedMessage>, ()> {
        let config = &self.inner.config;
        let mut batch = self
            .receive(config.batch_size.min(MAX_RECEIVE), config.receive_wait)
            .await?;
        if batch.is_empty() {
            return Ok(batch);
        }
        let deadline = Instant::now() + config.batching_window;
        while batch.len() < config.batch_size {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let remaining = deadline - now;
            // Long polls wait whole seconds; the last fraction of the window is short polls.
            let wait = Duration::from_secs(remaining.as_secs()).min(MAX_WAIT);
            let Ok(more) = self
                .receive((config.batch_size - batch.len()).min(MAX_RECEIVE), wait)
                .await
            else {
                break;
            };
            if more.is_empty() && wait.is_zero() {
                tokio::time::sleep(remaining.min(Duration::from_millis(50))).await;
            }
            batch.extend(more);
        }
        Ok(batch)
    }

    async fn process(&self, batch: Vec<ReceivedMessage>, event_source_arn: &str) {
        let ids: Vec<String> = batch.iter().map(|m| m.message_id.clone()).collect();
        self.count(|s| {
            s.batches += 1;
            s.messages_received += batch.len() as u64;
        });
        let event = sqs_event(&batch, event_source_arn, &self.inner.region);
        let payload = serde_json::to_vec(&event).expect("a JSON value always serializes");

        let outcomes = match self.inner.config.duplicate_delivery {
            DuplicateDelivery::Off => vec![self.invoke(&payload, &ids).await],
            DuplicateDelivery::Concurrent => {
                let (a, b) = tokio::join!(self.invoke(&payload, &ids), self.invoke(&payload, &ids));
                vec![a, b]
            }
            DuplicateDelivery::Sequential => {
                let a = self.invoke(&payload, &ids).await;
                let b = self.invoke(&payload, &ids).await;
                vec![a, b]
            }
        };
        // A message one delivery processed is deleted, whatever the other delivery said.
        let delete: BTreeSet<&str> = outcomes
            .iter()
            .flat_map(|outcome| outcome.to_delete(&ids))
            .collect();
        let receipts: Vec<&str> = batch
            .iter()
            .filter(|m| delete.contains(m.message_id.as_str()))
            .map(|m| m.receipt_handle.as_str())
            .collect();
        self.delete(&receipts).await;
    }

    /// Invokes the function once with the batch and reads its answer.
    async fn invoke(&self, payload: &[u8], ids: &[String]) -> BatchOutcome {
        let config = &self.inner.config;
        self.count(|s| {
            s.invocations += 1;
            s.messages_delivered += ids.len() as u64;
        });
        let started = Instant::now();
        let invocation = self.call_function(payload).await;
        let elapsed_ms = started.elapsed().as_millis();
        let outcome = match invocation {
            Invocation::Returned(body) => {
                let outcome = interpret(&body, ids, config.report_batch_item_failures);
                match &outcome {
                    BatchOutcome::Succeeded => {}
                    BatchOutcome::PartiallyFailed { failed } => {
                        self.count(|s| s.failures_reported += failed.len() as u64);
                    }
                    BatchOutcome::Failed { reason } => {
                        self.count(|s| s.invalid_responses += 1);
                        tracing::warn!(%reason, "invalid batch response; the whole batch failed");
                    }
                }
                outcome
            }
            Invocation::FunctionError(reason) => {
                self.count(|s| s.function_errors += 1);
                tracing::warn!(%reason, "function error; nothing is deleted");
                BatchOutcome::Failed { reason }
            }
            Invocation::InvokeError(reason) => {
                self.count(|s| s.invoke_errors += 1);
                tracing::warn!(%reason, "invoke failed; nothing is deleted");
                BatchOutcome::Failed { reason }
            }
        };
        tracing::info!(
            function = %config.function_name,
            records = ids.len(),
            elapsed_ms,
            outcome = outcome_label(&outcome),
            "invoked"
        );
        outcome
    }

    async fn call_function(&self, payload: &[u8]) -> Invocation {
        let config = &self.inner.config;
        event_source::invoke(
            &self.inner.lambda,
            &config.function_name,
            payload,
            config.invoke_timeout,
        )
        .await
    }

    async fn delete(&self, receipts: &[&str]) {
        for (chunk_no, chunk) in receipts.chunks(MAX_RECEIVE).enumerate() {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{chunk_no}-{i}"))
                        .receipt_handle(*receipt)
                        .build()
                        .ok()
                })
                .collect();
            let result = self
                .inner
                .sqs
                .delete_message_batch()
                .queue_url(&self.inner.config.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(out) => {
                    let deleted = out.successful().len() as u64;
                    self.count(|s| s.messages_deleted += deleted);
                    for failed in out.failed() {
                        self.count(|s| s.sqs_errors += 1);
                        tracing::warn!(
                            id = failed.id(),
                            code = failed.code(),
                            message = failed.message(),
                            "DeleteMessageBatch entry failed"
                        );
                    }
                }
                Err(e) => {
                    self.count(|s| s.sqs_errors += 1);
                    tracing::warn!(error = %DisplayErrorContext(e), "DeleteMessageBatch failed");
                }
            }
        }
    }
}

fn outcome_label(outcome: &BatchOutcome) -> &'static str {
    match outcome {
        BatchOutcome::Succeeded => "succeeded",
        BatchOutcome::PartiallyFailed { .. } => "partially-failed",
        BatchOutcome::Failed { .. } => "failed",
    }
}

/// Joins the invocation tasks that already finished, surfacing a panic.
fn reap(in_flight: &mut JoinSet<()>) -> Result<(), PumpError> {
    while let Some(joined) = in_flight.try_join_next() {
        joined?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_an_sqs_mapping() {
        let config = PumpConfig::new("q", "f");
        assert_eq!(config.batch_size, 10);
        assert_eq!(config.batching_window, Duration::ZERO);
        assert!(config.report_batch_item_failures);
        config.validate().unwrap();
    }

    #[test]
    fn large_batches_need_a_window() {
        let mut config = PumpConfig::new("q", "f");
        config.batch_size = 50;
        assert!(config.validate().is_err());
        config.batching_window = Duration::from_secs(1);
        config.validate().unwrap();
        config.batch_size = 10_001;
        assert!(config.validate().is_err());
    }

    #[test]
    fn duplicate_delivery_parses() {
        assert_eq!("concurrent".parse(), Ok(DuplicateDelivery::Concurrent));
        assert_eq!("sequential".parse(), Ok(DuplicateDelivery::Sequential));
        assert_eq!("off".parse(), Ok(DuplicateDelivery::Off));
        assert!("twice".parse::<DuplicateDelivery>().is_err());
    }
}
