//! A proxy in front of the SES v2 emulator (aws-ses-v2-local).
//!
//! Every request is forwarded unchanged and the emulator's answer returned, except that:
//! - SendEmail can be answered with an SES error instead ([`Faults`]), set at start or at run
//!   time through `POST /_hikyaku/faults` (JSON [`Faults`]) and `DELETE /_hikyaku/faults`;
//! - the proxy plays the SES account ([`account`]): `GET /v2/email/account` (GetAccount) is
//!   answered from its [`AccountQuota`], and every SendEmail meets the account's send rate
//!   and daily quota, answered with SES's own errors beyond them; `GET`/`POST
//!   /_hikyaku/account` read and replace the quota at run time;
//! - every SendEmail the emulator accepts is recorded with the fields the emulator drops
//!   (configuration set, tags, list management options), listed at `GET /_hikyaku/sends`;
//!   `POST /_hikyaku/reset` clears the records and counters (not the faults);
//! - with a [`MailboxSimulator`], every accepted SendEmail also produces the SES events real SES
//!   would publish for it (`Send`, then `Delivery`, `Bounce` or `Complaint` by the recipient's
//!   [`mailbox::Mailbox`]), published to the SNS feedback topic in the background so that the
//!   SendEmail answer does not wait for them.
//!
//! `GET /_hikyaku/stats` returns the [`ProxyCounters`], `GET /_hikyaku/health` answers `ok`.

pub mod account;
pub mod faults;
pub mod mailbox;
mod simulator;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::forward::{Forwarder, MAX_BODY_BYTES, now_ms, plain};
use crate::server::Proxy;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, ToSocketAddrs};

pub use account::{Account, AccountQuota, LimitRefusal};
pub use faults::{Faults, InjectedFault};
pub use simulator::{MailboxSimulator, Published};

/// SES v2 SendEmail: `POST /v2/email/outbound-emails`.
pub const SEND_EMAIL_PATH: &str = "/v2/email/outbound-emails";
/// SES v2 GetAccount: `GET /v2/email/account`.
pub const GET_ACCOUNT_PATH: &str = "/v2/email/account";

/// Start-up settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SesProxyConfig {
    /// Base URL of the emulator, e.g. `http://127.0.0.1:8005`.
    pub upstream: String,
    pub faults: Faults,
    pub account: AccountQuota,
}

impl SesProxyConfig {
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            faults: Faults::default(),
            account: AccountQuota::default(),
        }
    }
}

/// A SendEmail the emulator accepted, with the request fields the emulator does not keep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSend {
    /// The emulator's MessageId (the `messageId` of its `/store`).
    pub message_id: String,
    pub from_email_address: Option<String>,
    pub destination: RecordedDestination,
    pub configuration_set_name: Option<String>,
    pub email_tags: Vec<RecordedTag>,
    pub list_management_options: Option<RecordedListManagement>,
    /// `Content.Simple.Subject.Data`, when the content is simple.
    pub subject: Option<String>,
    /// When the proxy received the request, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The access key the request was signed with (SigV4 `Credential=`): whose credentials
    /// sent it, e.g. a sending role's.
    #[serde(default)]
    pub access_key_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedDestination {
    pub to_addresses: Vec<String>,
    pub cc_addresses: Vec<String>,
    pub bcc_addresses: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTag {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedListManagement {
    pub contact_list_name: String,
    pub topic_name: Option<String>,
}

impl RecordedSend {
    /// The value of the tag `name`, if the send carried it.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.email_tags
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.value.as_str())
    }

    /// Every recipient: To, then Cc, then Bcc.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        let d = &self.destination;
        d.to_addresses
            .iter()
            .chain(&d.cc_addresses)
            .chain(&d.bcc_addresses)
            .map(String::as_str)
    }
}

/// What the proxy has seen since it started or was reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyCounters {
    /// SendEmail requests received.
    pub send_email_requests: u64,
    /// SendEmail requests the emulator accepted (and that are recorded).
    pub send_email_accepted: u64,
    /// Answered 429 `TooManyRequestsException`: over the account's rate, or injected.
    pub throttled: u64,
    pub rejected: u64,
    pub paused: u64,
    /// Requests of any kind forwarded to the emulator.
    pub forwarded: u64,
    /// Requests the emulator could not be reached for (answered 502).
    pub upstream_errors: u64,
    /// SES events the mailbox simulator published to the feedback topic.
    #[serde(default)]
    pub events_published: u64,
    /// SES events whose Publish failed (logged, then dropped).
    #[serde(default)]
    pub event_publish_failures: u64,
    /// Accepted SendEmails whose body the simulator could not read (no events published).
    #[serde(default)]
    pub unreadable_sends: u64,
    /// SendEmails refused for the account's daily quota.
    #[serde(default)]
    pub quota_exceeded: u64,
    /// GetAccount requests answered.
    #[serde(default)]
    pub get_account_calls: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SesProxyError {
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The proxy's state; clones share it. Serve it with [`SesProxy::serve`] or
/// [`SesProxy::spawn`], inspect and steer it directly in-process.
#[derive(Clone)]
pub struct SesProxy {
    inner: Arc<Inner>,
}

struct Inner {
    forwarder: Forwarder,
    simulator: Option<MailboxSimulator>,
    state: Mutex<ProxyState>,
}

struct ProxyState {
    faults: Faults,
    account: Account,
    /// SendEmail requests since the faults were set; drives `throttle_every`.
    nth_since_faults: u64,
    counters: ProxyCounters,
    sends: Vec<RecordedSend>,
}

impl SesProxy {
    /// A proxy without the mailbox simulator: accepted sends produce no SES events.
    pub fn new(config: SesProxyConfig) -> Result<Self, SesProxyError> {
        Self::with_simulator(config, None)
    }

    /// A proxy that hands every accepted SendEmail to `simulator` (when given).
    pub fn with_simulator(
        config: SesProxyConfig,
        simulator: Option<MailboxSimulator>,
    ) -> Result<Self, SesProxyError> {
        let forwarder = Forwarder::new(&config.upstream, Some(Duration::from_secs(60)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                forwarder,
                simulator,
                state: Mutex::new(ProxyState {
                    faults: config.faults,
                    account: Account::new(config.account, Instant::now()),
                    nth_since_faults: 0,
                    counters: ProxyCounters::default(),
                    sends: Vec::new(),
                }),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the faults and restarts the `throttle_every` count.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.lock();
        state.faults = faults;
        state.nth_since_faults = 0;
    }

    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Accepted SendEmails, oldest first.
    pub fn sends(&self) -> Vec<RecordedSend> {
        self.lock().sends.clone()
    }

    pub fn counters(&self) -> ProxyCounters {
        self.lock().counters
    }

    /// The account's limits.
    pub fn account(&self) -> AccountQuota {
        self.lock().account.quota().clone()
    }

    /// Replaces the account's limits (the recipients counted so far stay).
    pub fn set_account(&self, quota: AccountQuota) {
        self.lock().account.set_quota(quota, Instant::now());
    }

    /// Forgets the recorded sends, the account's count and the counters; the faults and the
    /// account's limits stay.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.sends.clear();
        state.counters = ProxyCounters::default();
        state.nth_since_faults = 0;
        state.account.reset(Instant::now());
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
    pub async fn spawn(&self, addr: impl ToSocketAddrs + Send) -> std::io::Result<RunningSesProxy> {
        Proxy::spawn(self, addr).await
    }

    /// Publishes the SES events of an accepted send in a background task; the counters tell
    /// how it went.
    fn simulate(&self, request: Value, message_id: String, sent_at: DateTime<Utc>) {
        let Some(simulator) = self.inner.simulator.clone() else {
            return;
        };
        let proxy = self.clone();
        tokio::spawn(async move {
            let outcome = simulator.publish(&request, &message_id, sent_at).await;
            let mut state = proxy.lock();
            state.counters.events_published += outcome.published;
            state.counters.event_publish_failures += outcome.failed;
            state.counters.unreadable_sends += u64::from(outcome.unreadable);
        });
    }

    fn record_request(&self) -> (Faults, u64) {
        let mut state = self.lock();
        state.nth_since_faults += 1;
        state.counters.send_email_requests += 1;
        (state.faults.clone(), state.nth_since_faults)
    }
}

impl Proxy for SesProxy {
    const NAME: &'static str = "SES proxy";

    /// The control API under `/_hikyaku/`, everything else forwarded.
    fn routes(&self) -> Router<Self> {
        Router::new()
            .route(
                "/_hikyaku/faults",
                get(get_faults).post(post_faults).delete(delete_faults),
            )
            .route(
                "/_hikyaku/account",
                get(get_account_quota).post(post_account_quota),
            )
            .route(GET_ACCOUNT_PATH, get(get_account))
            .route("/_hikyaku/sends", get(get_sends))
            .route("/_hikyaku/stats", get(get_stats))
            .route("/_hikyaku/reset", post(post_reset))
            .fallback(forward)
    }

    fn upstream(&self) -> &str {
        self.inner.forwarder.upstream()
    }
}

/// A [`SesProxy`] serving in the background.
pub type RunningSesProxy = crate::server::Running<SesProxy>;

async fn get_faults(State(proxy): State<SesProxy>) -> axum::Json<Faults> {
    axum::Json(proxy.faults())
}

async fn post_faults(State(proxy): State<SesProxy>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            tracing::info!(?faults, "faults set");
            proxy.set_faults(faults.clone());
            axum::Json(faults).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "message": format!("invalid faults: {e}") })),
        )
            .into_response(),
    }
}

async fn delete_faults(State(proxy): State<SesProxy>) -> StatusCode {
    tracing::info!("faults cleared");
    proxy.clear_faults();
    StatusCode::NO_CONTENT
}

async fn get_account_quota(State(proxy): State<SesProxy>) -> axum::Json<AccountQuota> {
    axum::Json(proxy.account())
}

async fn post_account_quota(State(proxy): State<SesProxy>, body: Bytes) -> Response {
    match serde_json::from_slice::<AccountQuota>(&body) {
        Ok(quota) => {
            tracing::info!(?quota, "account quota set");
            proxy.set_account(quota.clone());
            axum::Json(quota).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "message": format!("invalid account quota: {e}") })),
        )
            .into_response(),
    }
}

/// SES v2 GetAccount, from the account the proxy plays.
async fn get_account(State(proxy): State<SesProxy>) -> axum::Json<Value> {
    let mut state = proxy.lock();
    state.counters.get_account_calls += 1;
    axum::Json(state.account.get_account(Instant::now()))
}

async fn get_sends(State(proxy): State<SesProxy>) -> axum::Json<Vec<RecordedSend>> {
    axum::Json(proxy.sends())
}

async fn get_stats(State(proxy): State<SesProxy>) -> axum::Json<ProxyCounters> {
    axum::Json(proxy.counters())
}

async fn post_reset(State(proxy): State<SesProxy>) -> StatusCode {
    proxy.reset();
    StatusCode::NO_CONTENT
}

async fn forward(State(proxy): State<SesProxy>, request: Request) -> Response {
    let received_at_ms = now_ms();
    let (parts, body) = request.into_parts();
    let access_key_id = signing_key(&parts.headers);
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => return plain(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")),
    };
    let send_email = (parts.method == Method::POST && parts.uri.path() == SEND_EMAIL_PATH)
        .then(|| serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null));

    if let Some(request) = &send_email {
        let (faults, nth) = proxy.record_request();
        if let Some(ms) = faults.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(fault) = faults.decide(nth, &recipients(request)) {
            {
                let mut state = proxy.lock();
                match fault {
                    InjectedFault::Throttled => state.counters.throttled += 1,
                    InjectedFault::Rejected { .. } => state.counters.rejected += 1,
                    InjectedFault::SendingPaused => state.counters.paused += 1,
                }
            }
            tracing::info!(?fault, nth, "SendEmail answered with an injected fault");
            let (status, error_type, message) = fault.response_parts();
            return ses_error(status, error_type, &message);
        }
        let count = recipients(request).len().max(1) as u64;
        let admitted = {
            let mut state = proxy.lock();
            let admitted = state.account.admit(count, Instant::now());
            match admitted {
                Err(LimitRefusal::RateExceeded) => state.counters.throttled += 1,
                Err(LimitRefusal::DailyQuotaExceeded) => state.counters.quota_exceeded += 1,
                Err(LimitRefusal::SendingPaused) => state.counters.paused += 1,
                Ok(()) => {}
            }
            admitted
        };
        if let Err(refusal) = admitted {
            tracing::info!(?refusal, "SendEmail refused for the account's limits");
            let (status, error_type, message) = refusal.response_parts();
            return ses_error(status, error_type, message);
        }
    }

    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = match proxy
        .inner
        .forwarder
        .send(parts.method, path_and_query, &parts.headers, body, &[])
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            proxy.lock().counters.upstream_errors += 1;
            tracing::warn!(error = %e, "SES emulator unreachable");
            return plain(StatusCode::BAD_GATEWAY, format!("SES emulator: {e}"));
        }
    };

    let mut accepted = None;
    {
        let mut state = proxy.lock();
        state.counters.forwarded += 1;
        if let Some(request) = send_email.filter(|_| answer.status.is_success()) {
            let message_id = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("MessageId")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            state.counters.send_email_accepted += 1;
            let mut sent = record(&request, message_id.clone(), received_at_ms);
            sent.access_key_id = access_key_id;
            state.sends.push(sent);
            accepted = Some((request, message_id));
        }
    }
    match accepted {
        // SES sends the message after it answered; the events follow the acceptance.
        Some((request, message_id)) if !message_id.is_empty() => {
            proxy.simulate(request, message_id, Utc::now());
        }
        Some(_) if proxy.inner.simulator.is_some() => {
            tracing::warn!("the emulator accepted a SendEmail without a MessageId; no SES events");
        }
        _ => {}
    }

    answer.into_response()
}

/// An SES v2 (restJson1) error: the SDK reads the type from `x-amzn-ErrorType` and the
/// message from the body's `message`.
fn ses_error(status: u16, error_type: &'static str, message: &str) -> Response {
    let mut response = Response::new(Body::from(json!({ "message": message }).to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        HeaderName::from_static("x-amzn-errortype"),
        HeaderValue::from_static(error_type),
    );
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    response
}

fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-0000-4000-8000-{n:012x}", now_ms() & 0xffff_ffff)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn string(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// All recipients of a SendEmail request body.
fn recipients(request: &Value) -> Vec<String> {
    let destination = request.get("Destination");
    let field = |name: &str| strings(destination.and_then(|d| d.get(name)));
    let mut all = field("ToAddresses");
    all.extend(field("CcAddresses"));
    all.extend(field("BccAddresses"));
    all
}

/// The access key id of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, ...`.
fn signing_key(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let credential = value.split("Credential=").nth(1)?;
    let key = credential.split('/').next()?;
    (!key.is_empty()).then(|| key.to_owned())
}

/// The record of an accepted SendEmail request body (SES v2 JSON, PascalCase).
fn record(request: &Value, message_id: String, received_at_ms: u64) -> RecordedSend {
    let destination = request.get("Destination");
    let dest = |name: &str| strings(destination.and_then(|d| d.get(name)));
    let email_tags = request
        .get("EmailTags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|tag| RecordedTag {
            name: string(tag.get("Name")).unwrap_or_default(),
            value: string(tag.get("Value")).unwrap_or_default(),
        })
        .collect();
    let list_management_options =
        request
            .get("ListManagementOptions")
            .map(|options| RecordedListManagement {
                contact_list_name: string(options.get("ContactListName")).unwrap_or_default(),
                topic_name: string(options.get("TopicName")),
            });
    RecordedSend {
        message_id,
        from_email_address: string(request.get("FromEmailAddress")),
        destination: RecordedDestination {
            to_addresses: dest("ToAddresses"),
            cc_addresses: dest("CcAddresses"),
            bcc_addresses: dest("BccAddresses"),
        },
        configuration_set_name: string(request.get("ConfigurationSetName")),
        email_tags,
        list_management_options,
        subject: string(request.pointer("/Content/Simple/Subject/Data")),
        received_at_ms,
        access_key_id: None,
    }
}

/// A client for a proxy running in another process (e.g. the one `make local-up` starts).
#[derive(Clone, Debug)]
pub struct SesProxyClient {
    base: String,
    http: reqwest::Client,
}

impl SesProxyClient {
    /// `base_url`: e.g. `http://127.0.0.1:8006`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base: base_url.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_hikyaku/{path}", self.base)
    }

    pub async fn sends(&self) -> reqwest::Result<Vec<RecordedSend>> {
        self.http
            .get(self.url("sends"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    pub async fn counters(&self) -> reqwest::Result<ProxyCounters> {
        self.http
            .get(self.url("stats"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    pub async fn faults(&self) -> reqwest::Result<Faults> {
        self.http
            .get(self.url("faults"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    pub async fn set_faults(&self, faults: &Faults) -> reqwest::Result<()> {
        self.http
            .post(self.url("faults"))
            .json(faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn clear_faults(&self) -> reqwest::Result<()> {
        self.http
            .delete(self.url("faults"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn account(&self) -> reqwest::Result<AccountQuota> {
        self.http
            .get(self.url("account"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    pub async fn set_account(&self, quota: &AccountQuota) -> reqwest::Result<()> {
        self.http
            .post(self.url("account"))
            .json(quota)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn reset(&self) -> reqwest::Result<()> {
        self.http
            .post(self.url("reset"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keeps_what_the_emulator_drops() {
        let request = json!({
            "FromEmailAddress": "news@example.test",
            "Destination": {"ToAddresses": ["a@x.test"], "BccAddresses": ["b@x.test"]},
            "Content": {"Simple": {"Subject": {"Data": "Hello"}, "Body": {"Text": {"Data": "t"}}}},
            "ConfigurationSetName": "hikyaku",
            "EmailTags": [{"Name": "campaign", "Value": "c1"}, {"Name": "run", "Value": "r1"}],
            "ListManagementOptions": {"ContactListName": "news", "TopicName": "weekly"}
        });
        let sent = record(&request, "m-1".into(), 7);
        assert_eq!(sent.message_id, "m-1");
        assert_eq!(sent.configuration_set_name.as_deref(), Some("hikyaku"));
        assert_eq!(sent.tag("run"), Some("r1"));
        assert_eq!(sent.tag("nope"), None);
        assert_eq!(
            sent.list_management_options,
            Some(RecordedListManagement {
                contact_list_name: "news".into(),
                topic_name: Some("weekly".into())
            })
        );
        assert_eq!(
            sent.recipients().collect::<Vec<_>>(),
            ["a@x.test", "b@x.test"]
        );
        assert_eq!(sent.subject.as_deref(), Some("Hello"));
        assert_eq!(recipients(&request), ["a@x.test", "b@x.test"]);
    }

    #[test]
    fn the_signing_access_key_is_read_from_a_sigv4_header() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(signing_key(&headers), None);
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261204/us-east-1/ses/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(signing_key(&headers).as_deref(), Some("ASIAEXAMPLE"));
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer token".parse().unwrap(),
        );
        assert_eq!(signing_key(&headers), None);
    }

    #[test]
    fn record_of_a_minimal_request_has_empty_fields() {
        let sent = record(&json!({}), String::new(), 0);
        assert_eq!(sent, RecordedSend::default());
    }
}
