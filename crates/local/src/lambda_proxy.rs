//! A proxy in front of `cargo lambda watch` that gives its Invoke API the AWS semantics the
//! functions rely on:
//!
//! - `InvocationType=Event` (header `X-Amz-Invocation-Type: Event`) answers 202 at once and runs
//!   the invocation in the background; a function error is retried `async_retries` times
//!   (AWS: twice, after about 1 and 2 minutes; here after `async_retry_delay`, doubling).
//!   `cargo lambda watch` itself ignores the header: it runs the function and answers 200 with
//!   its result, so a caller "continuing itself asynchronously" would block on its own child.
//! - A function error comes back as on AWS: HTTP 200 with `X-Amz-Function-Error: Unhandled`
//!   and the runtime's error body (`cargo lambda watch` answers HTTP 500, which the SDK reports
//!   as an unmodelled service error and retries).
//! - An unknown function is a 404 `ResourceNotFoundException`.
//! - `InvocationType=DryRun` answers 204.
//!
//! Everything else passes through unchanged. `GET /_hikyaku/stats` returns the
//! [`LambdaProxyCounters`]; `async_in_flight` tells when background invocations have settled.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::forward::{Answer, Forwarder, MAX_BODY_BYTES, plain};
use crate::server::Proxy;

const INVOCATION_TYPE: HeaderName = HeaderName::from_static("x-amz-invocation-type");
const FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-amz-function-error");
const ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LambdaProxyConfig {
    /// `cargo lambda watch`, e.g. `http://127.0.0.1:9000`.
    pub upstream: String,
    /// Retries of an asynchronous invocation that ended in an error (AWS default: 2).
    pub async_retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub async_retry_delay: Duration,
}

impl LambdaProxyConfig {
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            async_retries: 2,
            async_retry_delay: Duration::from_secs(1),
        }
    }
}

/// What the proxy has seen since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LambdaProxyCounters {
    /// RequestResponse invocations forwarded.
    pub sync_invocations: u64,
    /// Of those, the ones that ended in a function error.
    pub sync_function_errors: u64,
    /// Event invocations accepted (answered 202).
    pub async_invocations: u64,
    /// Event invocations still running or waiting for a retry.
    pub async_in_flight: u64,
    /// Event invocations that ended in success.
    pub async_succeeded: u64,
    /// Event invocations that still failed after every retry.
    pub async_failed: u64,
    /// Attempts of Event invocations that failed (each retry counts).
    pub async_attempt_errors: u64,
    /// Other requests forwarded unchanged.
    pub forwarded: u64,
    /// Requests `cargo lambda watch` could not be reached for.
    pub upstream_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LambdaProxyError {
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The proxy's state; clones share it.
#[derive(Clone)]
pub struct LambdaProxy {
    inner: Arc<Inner>,
}

struct Inner {
    forwarder: Forwarder,
    config: LambdaProxyConfig,
    counters: Mutex<LambdaProxyCounters>,
}

impl Proxy for LambdaProxy {
    const NAME: &'static str = "Lambda proxy";

    fn routes(&self) -> Router<Self> {
        Router::new()
            .route("/_hikyaku/stats", get(get_stats))
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .fallback(forward_other)
    }

    fn upstream(&self) -> &str {
        self.inner.forwarder.upstream()
    }
}

/// A [`LambdaProxy`] serving in the background.
pub type RunningLambdaProxy = crate::server::Running<LambdaProxy>;

impl LambdaProxy {
    pub fn new(config: LambdaProxyConfig) -> Result<Self, LambdaProxyError> {
        // No overall timeout: the first invocation of a function compiles it.
        let forwarder = Forwarder::new(&config.upstream, None)?;
        Ok(Self {
            inner: Arc::new(Inner {
                forwarder,
                config,
                counters: Mutex::new(LambdaProxyCounters::default()),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LambdaProxyCounters> {
        self.inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn counters(&self) -> LambdaProxyCounters {
        *self.lock()
    }

    /// Waits until no asynchronous invocation is running or waiting for a retry.
    pub async fn wait_async_settled(&self) {
        while self.counters().async_in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Serves on `listener` until `shutdown` completes (see [`Proxy::serve`]).
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Proxy::serve(self, listener, shutdown).await
    }

    /// Binds `addr` (port 0 picks a free port) and serves in a background task (see
    /// [`Proxy::spawn`]).
    pub async fn spawn(
        &self,
        addr: impl ToSocketAddrs + Send,
    ) -> std::io::Result<RunningLambdaProxy> {
        Proxy::spawn(self, addr).await
    }

    /// Forwards one synchronous invocation and gives its answer AWS's shape.
    async fn invoke_upstream(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Answer, reqwest::Error> {
        let answer = self
            .inner
            .forwarder
            .send(
                axum::http::Method::POST,
                path_and_query,
                headers,
                body,
                &[INVOCATION_TYPE],
            )
            .await?;
        Ok(to_aws_shape(answer))
    }

    async fn run_async(self, path_and_query: String, headers: HeaderMap, body: Bytes) {
        let config = &self.inner.config;
        let mut delay = config.async_retry_delay;
        let mut succeeded = false;
        for attempt in 0..=config.async_retries {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            match self
                .invoke_upstream(&path_and_query, &headers, body.clone())
                .await
            {
                Ok(answer) if answer.status.is_success() && !is_function_error(&answer) => {
                    succeeded = true;
                    break;
                }
                Ok(answer) => {
                    self.lock().async_attempt_errors += 1;
                    tracing::warn!(
                        path = %path_and_query,
                        attempt,
                        status = %answer.status,
                        body = %String::from_utf8_lossy(&answer.body),
                        "asynchronous invocation failed"
                    );
                }
                Err(e) => {
                    let mut counters = self.lock();
                    counters.async_attempt_errors += 1;
                    counters.upstream_errors += 1;
                    drop(counters);
                    tracing::warn!(path = %path_and_query, attempt, error = %e,
                        "asynchronous invocation could not reach cargo lambda watch");
                }
            }
        }
        let mut counters = self.lock();
        counters.async_in_flight -= 1;
        if succeeded {
            counters.async_succeeded += 1;
        } else {
            counters.async_failed += 1;
        }
    }
}

fn is_function_error(answer: &Answer) -> bool {
    answer.headers.contains_key(FUNCTION_ERROR)
}

/// `cargo lambda watch` answers a function error with 500 + the runtime's error body, and an
/// unknown function with 404 + a problem document; AWS answers 200 + `X-Amz-Function-Error` and
/// 404 `ResourceNotFoundException`.
fn to_aws_shape(mut answer: Answer) -> Answer {
    let body: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let field = |name: &str| body.as_ref().and_then(|b| b.get(name)).is_some();
    if answer.status.is_server_error() && field("errorType") {
        answer.status = StatusCode::OK;
        answer
            .headers
            .insert(FUNCTION_ERROR, HeaderValue::from_static("Unhandled"));
    } else if answer.status == StatusCode::NOT_FOUND && !answer.headers.contains_key(ERROR_TYPE) {
        let detail = body
            .as_ref()
            .and_then(|b| b.get("detail"))
            .and_then(Value::as_str)
            .unwrap_or("Function not found")
            .to_owned();
        answer.headers.clear();
        answer.headers.insert(
            ERROR_TYPE,
            HeaderValue::from_static("ResourceNotFoundException"),
        );
        answer.headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        answer.body = json!({ "Type": "User", "message": detail })
            .to_string()
            .into();
    }
    answer
}

async fn get_stats(State(proxy): State<LambdaProxy>) -> axum::Json<LambdaProxyCounters> {
    axum::Json(proxy.counters())
}

async fn invoke(State(proxy): State<LambdaProxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => return plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let invocation_type = parts
        .headers
        .get(INVOCATION_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");

    match invocation_type {
        "Event" => {
            {
                let mut counters = proxy.lock();
                counters.async_invocations += 1;
                counters.async_in_flight += 1;
            }
            tracing::info!(path = %path_and_query, "asynchronous invocation accepted");
            tokio::spawn(proxy.clone().run_async(path_and_query, parts.headers, body));
            StatusCode::ACCEPTED.into_response()
        }
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        _ => match proxy
            .invoke_upstream(&path_and_query, &parts.headers, body)
            .await
        {
            Ok(answer) => {
                let mut counters = proxy.lock();
                counters.sync_invocations += 1;
                if is_function_error(&answer) {
                    counters.sync_function_errors += 1;
                }
                drop(counters);
                answer.into_response()
            }
            Err(e) => {
                proxy.lock().upstream_errors += 1;
                plain(StatusCode::BAD_GATEWAY, format!("cargo lambda watch: {e}"))
            }
        },
    }
}

async fn forward_other(State(proxy): State<LambdaProxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => return plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")),
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    match proxy
        .inner
        .forwarder
        .send(parts.method, path_and_query, &parts.headers, body, &[])
        .await
    {
        Ok(answer) => {
            proxy.lock().forwarded += 1;
            answer.into_response()
        }
        Err(e) => {
            proxy.lock().upstream_errors += 1;
            plain(StatusCode::BAD_GATEWAY, format!("cargo lambda watch: {e}"))
        }
    }
}

/// A client for a Lambda proxy running in another process.
#[derive(Clone, Debug)]
pub struct LambdaProxyClient {
    base: String,
    http: reqwest::Client,
}

impl LambdaProxyClient {
    /// `base_url`: e.g. `http://127.0.0.1:9001`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base: base_url.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn counters(&self) -> reqwest::Result<LambdaProxyCounters> {
        self.http
            .get(format!("{}/_hikyaku/stats", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Polls until no asynchronous invocation is in flight, or `timeout` passes (then returns
    /// the last counters with `async_in_flight > 0`).
    pub async fn wait_async_settled(
        &self,
        timeout: Duration,
    ) -> reqwest::Result<LambdaProxyCounters> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let counters = self.counters().await?;
            if counters.async_in_flight == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(counters);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn a_runtime_error_becomes_a_function_error() {
        let shaped = to_aws_shape(answer(500, r#"{"errorType":"E","errorMessage":"boom"}"#));
        assert_eq!(shaped.status, StatusCode::OK);
        assert_eq!(shaped.headers[FUNCTION_ERROR], "Unhandled");
        assert_eq!(
            &shaped.body[..],
            br#"{"errorType":"E","errorMessage":"boom"}"#
        );
    }

    #[test]
    fn other_server_errors_stay() {
        let shaped = to_aws_shape(answer(500, "text"));
        assert_eq!(shaped.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!is_function_error(&shaped));
    }

    #[test]
    fn a_missing_function_is_resource_not_found() {
        let shaped = to_aws_shape(answer(
            404,
            r#"{"detail":"that function doesn't exist","title":"Missing function"}"#,
        ));
        assert_eq!(shaped.status, StatusCode::NOT_FOUND);
        assert_eq!(shaped.headers[ERROR_TYPE], "ResourceNotFoundException");
        let body: Value = serde_json::from_slice(&shaped.body).unwrap();
        assert_eq!(body["message"], "that function doesn't exist");
    }

    #[test]
    fn success_passes_through() {
        let shaped = to_aws_shape(answer(200, r#"{"batchItemFailures":[]}"#));
        assert_eq!(shaped.status, StatusCode::OK);
        assert!(!is_function_error(&shaped));
    }
}
