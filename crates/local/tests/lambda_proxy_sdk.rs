//! The Lambda proxy gives the SDK AWS's Invoke semantics over an upstream that answers the way
//! `cargo lambda watch` does (function errors as HTTP 500, unknown functions as a 404 problem
//! document, Event invocations run synchronously).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hikyaku_local::lambda_proxy::{LambdaProxy, LambdaProxyClient, LambdaProxyConfig};
use serde_json::{Value, json};

/// Mimics `cargo lambda watch`: `{"sleep_ms"}` sleeps, `{"fail"}` is a function error, only
/// the function `known` exists.
async fn fake_watch() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    async fn invoke(
        State(calls): State<Arc<AtomicU64>>,
        Path(name): Path<String>,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<Value>) {
        calls.fetch_add(1, Ordering::SeqCst);
        if name != "known" {
            let detail = "that function doesn't exist as a binary in your project";
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "detail": detail, "title": "Missing function" })),
            );
        }
        let event: Value = serde_json::from_slice(&body).unwrap();
        if let Some(ms) = event["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if event.get("fail").is_some() {
            let error = json!({ "errorType": "Boom", "errorMessage": "asked to fail" });
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error));
        }
        (StatusCode::OK, axum::Json(json!({ "echo": event })))
    }
    let app = axum::Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            axum::routing::post(invoke),
        )
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn lambda_client(endpoint: &str) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

#[tokio::test]
async fn invoke_semantics_match_aws() {
    let (upstream, calls) = fake_watch().await;
    let mut config = LambdaProxyConfig::new(upstream);
    config.async_retry_delay = Duration::from_millis(10);
    let proxy = LambdaProxy::new(config).unwrap();
    let running = proxy.spawn("127.0.0.1:0").await.unwrap();
    let lambda = lambda_client(&running.url());
    let invoke = |payload: Value, kind: InvocationType, name: &'static str| {
        lambda
            .invoke()
            .function_name(name)
            .invocation_type(kind)
            .payload(Blob::new(payload.to_string()))
            .send()
    };

    // Event: accepted at once, run in the background.
    let started = Instant::now();
    let out = invoke(json!({ "sleep_ms": 500 }), InvocationType::Event, "known")
        .await
        .unwrap();
    assert_eq!(out.status_code(), 202);
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(proxy.counters().async_in_flight, 1);
    let settled = LambdaProxyClient::new(running.url())
        .wait_async_settled(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((settled.async_in_flight, settled.async_succeeded), (0, 1));

    // RequestResponse: the function's answer.
    let out = invoke(json!({ "x": 1 }), InvocationType::RequestResponse, "known")
        .await
        .unwrap();
    assert_eq!(out.status_code(), 200);
    assert_eq!(out.function_error(), None);
    let body: Value = serde_json::from_slice(out.payload().unwrap().as_ref()).unwrap();
    assert_eq!(body["echo"]["x"], 1);

    // A function error is FunctionError on a 200, not an SDK error (so no SDK retry).
    let before = calls.load(Ordering::SeqCst);
    let out = invoke(
        json!({ "fail": true }),
        InvocationType::RequestResponse,
        "known",
    )
    .await
    .unwrap();
    assert_eq!(out.function_error(), Some("Unhandled"));
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);

    // A failing Event invocation is retried twice, then given up.
    invoke(json!({ "fail": true }), InvocationType::Event, "known")
        .await
        .unwrap();
    proxy.wait_async_settled().await;
    let counters = proxy.counters();
    assert_eq!(counters.async_failed, 1);
    assert_eq!(counters.async_attempt_errors, 3);

    // Unknown function.
    let err = invoke(json!({}), InvocationType::RequestResponse, "unknown")
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());

    // DryRun.
    let out = invoke(json!({}), InvocationType::DryRun, "known")
        .await
        .unwrap();
    assert_eq!(out.status_code(), 204);

    running.stop().await.unwrap();
}
