//! Against the running local stack (`make local-up PUMP=0`): resource setup on moto, the pump's
//! event source mapping semantics on moto's SQS, the SNS pump's delivery from moto's SNS, and
//! the SES proxy in front of the real SES v2 emulator with the SES events its mailbox simulator
//! publishes. The Lambda side of the pumps is an in-process stand-in for the Invoke API, so these
//! tests do not depend on the functions' code.
//!
//! Run with `cargo test -p hikyaku-local --test local_stack -- --ignored`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sesv2::config::Credentials;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hikyaku_local::env_file;
use hikyaku_local::pump::{DuplicateDelivery, Pump, PumpConfig, PumpStats};
use hikyaku_local::ses_proxy::SesProxyClient;
use hikyaku_local::setup::{SetupOptions, StackResources, ensure_stack};
use hikyaku_local::sns_pump::{SnsPump, SnsPumpConfig};
use serde_json::{Value, json};

const NEEDS_STACK: &str = "needs the local stack: make local-up PUMP=0";

fn stack_env() -> BTreeMap<String, String> {
    let path = std::env::var_os("HIKYAKU_STACK_ENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.local/stack.env"),
        PathBuf::from,
    );
    env_file::read(&path).unwrap_or_else(|e| panic!("{}: {e}; {NEEDS_STACK}", path.display()))
}

/// SDK configuration from the stack's env file, without touching the process environment.
async fn sdk(env: &BTreeMap<String, String>) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(env["AWS_REGION"].clone()))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "stack"))
        .endpoint_url(env["AWS_ENDPOINT_URL"].clone())
        .load()
        .await
}

fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{}-{name}", nanos % 1_000_000_000_000)
}

/// What the stand-in function answers for one event.
type Behaviour = Arc<dyn Fn(&Value) -> (StatusCode, Value) + Send + Sync>;

#[derive(Clone)]
struct FakeLambda {
    behaviour: Behaviour,
    events: Arc<Mutex<Vec<Value>>>,
}

async fn invoke(State(fake): State<FakeLambda>, body: axum::body::Bytes) -> impl IntoResponse {
    let event: Value = serde_json::from_slice(&body).unwrap();
    let (status, answer) = (fake.behaviour)(&event);
    fake.events.lock().unwrap().push(event);
    (status, axum::Json(answer))
}

/// Serves the Lambda Invoke API on a free port; returns its URL and the events it received.
async fn fake_lambda(behaviour: Behaviour) -> (String, Arc<Mutex<Vec<Value>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            axum::routing::post(invoke),
        )
        .with_state(FakeLambda {
            behaviour,
            events: Arc::clone(&events),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, events)
}

fn records(event: &Value) -> &Vec<Value> {
    event["Records"].as_array().unwrap()
}

fn pump(sdk: &SdkConfig, lambda_url: &str, config: PumpConfig) -> Pump {
    let lambda = aws_sdk_lambda::config::Builder::from(sdk)
        .endpoint_url(lambda_url)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    Pump::from_clients(
        aws_sdk_sqs::Client::new(sdk),
        aws_sdk_lambda::Client::from_conf(lambda),
        "us-east-1",
        config,
    )
    .unwrap()
}

fn sns_pump(sdk: &SdkConfig, lambda_url: &str, config: SnsPumpConfig) -> SnsPump {
    let lambda = aws_sdk_lambda::config::Builder::from(sdk)
        .endpoint_url(lambda_url)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    SnsPump::from_client(aws_sdk_lambda::Client::from_conf(lambda), config).unwrap()
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone()
}

async fn send_bodies(sqs: &aws_sdk_sqs::Client, queue_url: &str, bodies: &[String]) {
    for body in bodies {
        sqs.send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
}

async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            return bodies;
        }
        bodies.extend(
            out.messages()
                .iter()
                .filter_map(|m| m.body().map(str::to_owned)),
        );
    }
}

/// A fresh send queue and DLQ: visibility 1 s, two receives before the DLQ; the feedback
/// topic delivers to `feedback_endpoint`, if given.
async fn fresh_stack_with(
    sdk: &SdkConfig,
    name: &str,
    feedback_endpoint: Option<String>,
) -> StackResources {
    let options = SetupOptions {
        prefix: unique_prefix(name),
        visibility_timeout_secs: 1,
        max_receive_count: 2,
        feedback_endpoint,
    };
    ensure_stack(sdk, &options).await.unwrap()
}

async fn fresh_stack(sdk: &SdkConfig, name: &str) -> StackResources {
    fresh_stack_with(sdk, name, None).await
}

fn idle_config(queue_url: &str) -> PumpConfig {
    let mut config = PumpConfig::new(queue_url, "hikyaku-sender");
    config.stop_when_idle = Some(Duration::from_millis(1500));
    config
}

#[tokio::test]
#[ignore = "needs the local stack: make local-up PUMP=0"]
async fn setup_creates_every_resource_idempotently() {
    let env = stack_env();
    let sdk = sdk(&env).await;
    let options = SetupOptions {
        prefix: unique_prefix("setup"),
        ..SetupOptions::default()
    };
    let first = ensure_stack(&sdk, &options).await.unwrap();
    let again = ensure_stack(&sdk, &options).await.unwrap();
    assert_eq!(first, again);

    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let deliveries = dynamodb
        .describe_table()
        .table_name(&first.deliveries_table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(
        deliveries.global_secondary_indexes()[0].index_name(),
        Some("by_message_id")
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&first.send_queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attributes = attributes.attributes().unwrap();
    assert_eq!(
        attributes[&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout],
        "180"
    );
    let redrive: Value =
        serde_json::from_str(&attributes[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy])
            .unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], json!(first.send_dlq_arn));
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );

    // The stack that `make local-up` created is there too.
    let stack = StackResources::from_env_map(&env).unwrap();
    let tables = dynamodb.list_tables().send().await.unwrap();
    assert!(tables.table_names().contains(&stack.contacts_table));
}

#[tokio::test]
#[ignore = "needs the local stack: make local-up PUMP=0"]
async fn partial_failures_are_redelivered_then_dead_lettered() {
    let env = stack_env();
    let sdk = sdk(&env).await;
    let stack = fresh_stack(&sdk, "partial").await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut bodies: Vec<String> = (0..12).map(|i| format!("ok-{i}")).collect();
    bodies.extend(["fail-a".to_owned(), "fail-b".to_owned()]);
    send_bodies(&sqs, &stack.send_queue_url, &bodies).await;

    let (lambda_url, events) = fake_lambda(Arc::new(|event: &Value| {
        let failures: Vec<Value> = records(event)
            .iter()
            .filter(|r| r["body"].as_str().unwrap().starts_with("fail"))
            .map(|r| json!({ "itemIdentifier": r["messageId"] }))
            .collect();
        (StatusCode::OK, json!({ "batchItemFailures": failures }))
    }))
    .await;
    let stats = pump(&sdk, &lambda_url, idle_config(&stack.send_queue_url))
        .run()
        .await
        .unwrap();

    let events = events.lock().unwrap().clone();
    let mut deliveries: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in events.iter() {
        assert!(records(event).len() <= 10);
        for r in records(event) {
            assert_eq!(r["eventSource"], "aws:sqs");
            assert_eq!(r["eventSourceARN"], json!(stack.send_queue_arn));
            deliveries
                .entry(r["body"].as_str().unwrap().to_owned())
                .or_default()
                .push(
                    r["attributes"]["ApproximateReceiveCount"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
        }
    }
    for i in 0..12 {
        assert_eq!(deliveries[&format!("ok-{i}")], ["1"], "ok-{i}");
    }
    assert_eq!(deliveries["fail-a"], ["1", "2"]);
    assert_eq!(deliveries["fail-b"], ["1", "2"]);
    assert_eq!(stats.messages_deleted, 12);
    assert_eq!(stats.failures_reported, 4);
    assert_eq!(
        stats.function_errors + stats.invoke_errors + stats.invalid_responses,
        0
    );

    let mut dead = drain(&sqs, &stack.send_dlq_url).await;
    dead.sort();
    assert_eq!(dead, ["fail-a", "fail-b"]);
    assert!(drain(&sqs, &stack.send_queue_url).await.is_empty());
}

#[tokio::test]
#[ignore = "needs the local stack: make local-up PUMP=0"]
async fn function_errors_and_bad_responses_delete_nothing() {
    let env = stack_env();
    let sdk = sdk(&env).await;
    let stack = fresh_stack(&sdk, "errors").await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bodies: Vec<String> = (0..5).map(|i| format!("m-{i}")).collect();
    send_bodies(&sqs, &stack.send_queue_url, &bodies).await;

    // First delivery: a function error, answered as `cargo lambda watch` does (HTTP 500 with
    // the runtime's error body); second: an itemIdentifier that is not in the batch. Both fail
    // the whole batch, so every message comes twice and then moves to the dead-letter queue.
    let (lambda_url, events) = fake_lambda(Arc::new(|event: &Value| {
        let count = records(event)[0]["attributes"]["ApproximateReceiveCount"]
            .as_str()
            .unwrap()
            .to_owned();
        if count == "1" {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "errorType": "Crash", "errorMessage": "boom" }),
            )
        } else {
            (
                StatusCode::OK,
                json!({ "batchItemFailures": [{ "itemIdentifier": "not-in-the-batch" }] }),
            )
        }
    }))
    .await;
    let mut config = idle_config(&stack.send_queue_url);
    config.max_concurrency = 1;
    let stats: PumpStats = pump(&sdk, &lambda_url, config).run().await.unwrap();

    assert_eq!(stats.messages_deleted, 0);
    assert!(stats.function_errors >= 1, "{stats:?}");
    assert!(stats.invalid_responses >= 1, "{stats:?}");
    let delivered: usize = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| records(e).len())
        .sum();
    assert_eq!(delivered, 10, "every message delivered twice");
    assert_eq!(drain(&sqs, &stack.send_dlq_url).await.len(), 5);
}

#[tokio::test]
#[ignore = "needs the local stack: make local-up PUMP=0"]
async fn duplicate_delivery_invokes_every_batch_twice() {
    let env = stack_env();
    let sdk = sdk(&env).await;
    let stack = fresh_stack(&sdk, "dup").await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bodies: Vec<String> = (0..25).map(|i| format!("d-{i}")).collect();
    send_bodies(&sqs, &stack.send_queue_url, &bodies).await;

    let (lambda_url, events) =
        fake_lambda(Arc::new(|_: &Value| (StatusCode::OK, Value::Null))).await;
    let mut config = idle_config(&stack.send_queue_url);
    config.duplicate_delivery = DuplicateDelivery::Concurrent;
    let stats = pump(&sdk, &lambda_url, config).run().await.unwrap();

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for event in events.lock().unwrap().iter() {
        for r in records(event) {
            *seen
                .entry(r["messageId"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.values().all(|n| *n == 2), "{seen:?}");
    assert_eq!(stats.invocations, 2 * stats.batches);
    assert_eq!(stats.messages_deleted, 25);
}

#[tokio::test]
#[ignore = "needs the local stack: make local-up PUMP=0"]
async fn ses_proxy_forwards_to_the_emulator_and_records_what_it_drops() {
    let env = stack_env();
    let proxy_url = env["AWS_ENDPOINT_URL_SESV2"].clone();
    let config = aws_sdk_sesv2::config::Builder::from(&sdk(&env).await)
        .endpoint_url(&proxy_url)
        .build();
    let ses = aws_sdk_sesv2::Client::from_conf(config);
    let to = format!("{}@example.test", unique_prefix("reader"));
    let sent = ses
        .send_email()
        .from_email_address("news@example.test")
        .destination(
            aws_sdk_sesv2::types::Destination::builder()
                .to_addresses(&to)
                .build(),
        )
        .content(
            aws_sdk_sesv2::types::EmailContent::builder()
                .simple(
                    aws_sdk_sesv2::types::Message::builder()
                        .subject(
                            aws_sdk_sesv2::types::Content::builder()
                                .data("Proxy check")
                                .build()
                                .unwrap(),
                        )
                        .body(
                            aws_sdk_sesv2::types::Body::builder()
                                .text(
                                    aws_sdk_sesv2::types::Content::builder()
                                        .data("hello")
                                        .build()
                                        .unwrap(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .configuration_set_name("hikyaku-local")
        .email_tags(
            aws_sdk_sesv2::types::MessageTag::builder()
                .name("campaign")
                .value("proxy-check")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let message_id = sent.message_id().unwrap().to_owned();

    // The emulator stored it (the proxy forwards to it; its port is the proxy's upstream).
    let store: Value = reqwest::get("http://127.0.0.1:8005/store")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = store["emails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["messageId"] == json!(message_id))
        .expect("the emulator's /store lists the message");
    assert_eq!(stored["destination"]["to"], json!([to]));

    let recorded = SesProxyClient::new(&proxy_url).sends().await.unwrap();
    let recorded = recorded
        .iter()
        .find(|s| s.message_id == message_id)
        .expect("the proxy recorded the send");
    assert_eq!(recorded.tag("campaign"), Some("proxy-check"));
    assert_eq!(
        recorded.configuration_set_name.as_deref(),
        Some("hikyaku-local")
    );
}

fn ses_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_sesv2::Client {
    let config = aws_sdk_sesv2::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sesv2::Client::from_conf(config)
}

/// Sends one message to `to` with hikyaku's tags and a configuration set; returns its id.
async fn send_tagged(ses: &aws_sdk_sesv2::Client, to: &str, campaign: &str, run: &str) -> String {
    use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};
    let text = |data: &str| Content::builder().data(data).build().unwrap();
    let tag = |name: &str, value: &str| {
        MessageTag::builder()
            .name(name)
            .value(value)
            .build()
            .unwrap()
    };
    ses.send_email()
        .from_email_address("News <news@example.test>")
        .destination(Destination::builder().to_addresses(to).build())
        .content(
            EmailContent::builder()
                .simple(
                    Message::builder()
                        .subject(text("Events check"))
                        .body(Body::builder().text(text("hello")).build())
                        .build(),
                )
                .build(),
        )
        .configuration_set_name("hikyaku-local")
        .email_tags(tag("hikyaku-campaign", campaign))
        .email_tags(tag("hikyaku-run", run))
        .send()
        .await
        .unwrap()
        .message_id()
        .unwrap()
        .to_owned()
}

#[tokio::test]
#[ignore = "needs the local stack: make local-up PUMP=0"]
async fn accepted_sends_publish_ses_events_to_the_feedback_topic() {
    let env = stack_env();
    let sdk = sdk(&env).await;
    let stack = StackResources::from_env_map(&env).unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);

    // The stack's SNS pump drains the feedback tap; this test listens on a queue of its own,
    // subscribed the same way (SNS envelopes, not raw messages).
    let queue_url = sqs
        .create_queue()
        .queue_name(unique_prefix("events"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let subscription_arn = sns
        .subscribe()
        .topic_arn(&stack.feedback_topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn(&sqs, &queue_url).await)
        .return_subscription_arn(true)
        .send()
        .await
        .unwrap()
        .subscription_arn
        .unwrap();

    let proxy_url = env["AWS_ENDPOINT_URL_SESV2"].clone();
    let ses = ses_client(&sdk, &proxy_url);
    let campaign = unique_prefix("campaign");
    let run = unique_prefix("run");
    let reader = format!("{}@example.test", unique_prefix("reader"));
    let bounced_id = send_tagged(&ses, "bounce@simulator.amazonses.com", &campaign, &run).await;
    let delivered_id = send_tagged(&ses, &reader, &campaign, &run).await;

    // Message id → the events received for it, each with its SNS envelope.
    let mut events: BTreeMap<String, Vec<(Value, Value)>> = BTreeMap::new();
    let complete = |events: &BTreeMap<String, Vec<(Value, Value)>>| {
        [&bounced_id, &delivered_id]
            .iter()
            .all(|id| events.get(*id).is_some_and(|e| !e.is_empty()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !complete(&events) && std::time::Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in out.messages() {
            let envelope: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            let event: Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
            let id = event["mail"]["messageId"].as_str().unwrap().to_owned();
            events.entry(id).or_default().push((envelope, event));
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    sns.unsubscribe()
        .subscription_arn(&subscription_arn)
        .send()
        .await
        .unwrap();
    sqs.delete_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();

    let types = |id: &str| -> Vec<String> {
        let mut types: Vec<String> = events
            .get(id)
            .into_iter()
            .flatten()
            .map(|(_, event)| event["eventType"].as_str().unwrap().to_owned())
            .collect();
        types.sort();
        types
    };
    // The stack's proxy publishes what happened after the send, not `Send` itself.
    assert_eq!(types(&bounced_id), ["Bounce"], "{events:#?}");
    assert_eq!(types(&delivered_id), ["Delivery"], "{events:#?}");

    for (id, to) in [
        (&bounced_id, "bounce@simulator.amazonses.com"),
        (&delivered_id, reader.as_str()),
    ] {
        for (envelope, event) in &events[id] {
            // The SNS envelope moto writes without raw message delivery.
            assert_eq!(envelope["Type"], "Notification");
            assert_eq!(envelope["TopicArn"], json!(stack.feedback_topic_arn));
            for field in [
                "MessageId",
                "Timestamp",
                "SignatureVersion",
                "Signature",
                "SigningCertURL",
                "UnsubscribeURL",
            ] {
                assert!(envelope[field].is_string(), "envelope lacks {field}");
            }
            let mail = &event["mail"];
            assert_eq!(mail["destination"], json!([to]));
            assert_eq!(mail["source"], "News <news@example.test>");
            assert_eq!(mail["commonHeaders"]["subject"], "Events check");
            let tags = &mail["tags"];
            assert_eq!(tags["hikyaku-campaign"], json!([campaign]));
            assert_eq!(tags["hikyaku-run"], json!([run]));
            assert_eq!(tags["ses:configuration-set"], json!(["hikyaku-local"]));
            assert_eq!(tags["ses:operation"], json!(["SendEmail"]));
            assert_eq!(tags["ses:from-domain"], json!(["example.test"]));
        }
    }
    let bounce = events[&bounced_id]
        .iter()
        .map(|(_, event)| event)
        .find(|event| event["eventType"] == "Bounce")
        .unwrap();
    assert_eq!(bounce["bounce"]["bounceType"], "Permanent");
    assert_eq!(
        bounce["bounce"]["bouncedRecipients"][0]["emailAddress"],
        "bounce@simulator.amazonses.com"
    );
    let delivery = events[&delivered_id]
        .iter()
        .map(|(_, event)| event)
        .find(|event| event["eventType"] == "Delivery")
        .unwrap();
    assert_eq!(delivery["delivery"]["recipients"], json!([reader]));

    let counters = SesProxyClient::new(&proxy_url).counters().await.unwrap();
    assert!(counters.events_published >= 4, "{counters:?}");
}

#[tokio::test]
#[ignore = "needs the local stack: make local-up PUMP=0"]
async fn sns_pump_delivers_each_notification_and_retries_failures_twice() {
    let env = stack_env();
    let sdk = sdk(&env).await;
    // ok succeeds at once, flaky on its third attempt, broken never.
    let attempts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let counted = Arc::clone(&attempts);
    let (lambda_url, received) = fake_lambda(Arc::new(move |event: &Value| {
        let message: Value =
            serde_json::from_str(event["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
        let case = message["case"].as_str().unwrap().to_owned();
        let mut attempts = counted.lock().unwrap();
        let n = attempts.entry(case.clone()).or_default();
        *n += 1;
        let fails = case == "broken" || (case == "flaky" && *n < 3);
        if fails {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "errorType": "Crash", "errorMessage": "boom" }),
            )
        } else {
            (StatusCode::OK, Value::Null)
        }
    }))
    .await;
    let mut config = SnsPumpConfig::new("hikyaku-feedback");
    config.retry_delay = Duration::from_millis(50);
    config.subscription_id = "test-subscription".to_owned();
    let pump = sns_pump(&sdk, &lambda_url, config);
    let running = pump.spawn("127.0.0.1:0").await.unwrap();
    // A fresh topic whose http subscription is this pump, as `setup` subscribes the stack's.
    let stack = fresh_stack_with(&sdk, "snspump", Some(format!("{}/", running.url()))).await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    for case in ["ok", "flaky", "broken"] {
        sns.publish()
            .topic_arn(&stack.feedback_topic_arn)
            .message(json!({ "case": case }).to_string())
            .send()
            .await
            .unwrap();
    }
    let refused = reqwest::Client::new()
        .post(format!("{}/", running.url()))
        .body("not an SNS envelope")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(
        pump.wait_idle(Duration::from_millis(300), Duration::from_secs(30))
            .await
    );
    let stats: hikyaku_local::sns_pump::SnsPumpStats =
        reqwest::get(format!("{}/_hikyaku/stats", running.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    running.stop().await.unwrap();

    assert_eq!(
        *attempts.lock().unwrap(),
        BTreeMap::from([
            ("broken".to_owned(), 3),
            ("flaky".to_owned(), 3),
            ("ok".to_owned(), 1)
        ])
    );
    for event in received.lock().unwrap().iter() {
        let parsed: aws_lambda_events::event::sns::SnsEvent =
            serde_json::from_value(event.clone()).unwrap();
        assert_eq!(parsed.records.len(), 1);
        let record = &parsed.records[0];
        assert_eq!(record.event_source, "aws:sns");
        assert_eq!(
            record.event_subscription_arn,
            format!("{}:test-subscription", stack.feedback_topic_arn)
        );
        assert_eq!(record.sns.topic_arn, stack.feedback_topic_arn);
        assert_eq!(record.sns.sns_message_type, "Notification");
    }
    assert_eq!(stats.received, 3, "{stats:?}");
    assert_eq!(stats.pending, 0, "{stats:?}");
    assert_eq!(stats.invocations, 7, "{stats:?}");
    assert_eq!(stats.delivered, 2, "{stats:?}");
    assert_eq!(stats.retries, 4, "{stats:?}");
    assert_eq!(stats.function_errors, 5, "{stats:?}");
    assert_eq!(stats.dropped, 1, "{stats:?}");
    assert_eq!(stats.invalid_envelopes, 1, "{stats:?}");
}
