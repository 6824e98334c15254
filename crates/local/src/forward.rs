//! Plain HTTP forwarding for the proxies: a request goes upstream unchanged, the answer comes
//! back unchanged (minus hop-by-hop headers).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Largest request body a proxy accepts.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// An upstream answer, read in full.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        copy_headers(&self.headers, response.headers_mut());
        response
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Forwarder {
    upstream: String,
    http: reqwest::Client,
}

impl Forwarder {
    /// `timeout`: limit for a whole exchange; `None` waits as long as upstream takes.
    pub fn new(upstream: &str, timeout: Option<Duration>) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        Ok(Self {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: builder.build()?,
        })
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Sends the request upstream; `skip` names request headers to leave out.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        skip: &[HeaderName],
    ) -> reqwest::Result<Answer> {
        let url = format!("{}{path_and_query}", self.upstream);
        let mut request = self.http.request(method, url).body(body);
        for (name, value) in headers {
            if forwardable(name) && name != header::HOST && !skip.contains(name) {
                request = request.header(name, value);
            }
        }
        let answer = request.send().await?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let body = answer.bytes().await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// Hop-by-hop headers and the length (recomputed) are not passed on.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if forwardable(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

pub(crate) fn plain(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

pub(crate) fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
