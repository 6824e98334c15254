//! The SES proxy's injected errors reach the Rust SDK as the modelled SES exceptions, and
//! accepted sends are recorded. The upstream here is a stand-in for aws-ses-v2-local that
//! answers SendEmail the way it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};
use axum::routing::post;
use hikyaku_local::ses_proxy::{Faults, SesProxy, SesProxyClient, SesProxyConfig};

/// Answers SendEmail with a fresh MessageId, as aws-ses-v2-local does.
async fn fake_emulator() -> (String, tokio::task::JoinHandle<()>) {
    let counter = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/v2/email/outbound-emails",
        post(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            async move { axum::Json(serde_json::json!({ "MessageId": format!("ses-{n}") })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

fn ses_client(endpoint: &str) -> aws_sdk_sesv2::Client {
    let config = aws_sdk_sesv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_sesv2::Client::from_conf(config)
}

async fn send(
    client: &aws_sdk_sesv2::Client,
    to: &str,
) -> Result<
    String,
    aws_sdk_sesv2::error::SdkError<aws_sdk_sesv2::operation::send_email::SendEmailError>,
> {
    let content = Content::builder().data("Hello").build().unwrap();
    let body = Body::builder()
        .text(Content::builder().data("Hi there").build().unwrap())
        .build();
    let out = client
        .send_email()
        .from_email_address("news@example.test")
        .destination(Destination::builder().to_addresses(to).build())
        .content(
            EmailContent::builder()
                .simple(Message::builder().subject(content).body(body).build())
                .build(),
        )
        .configuration_set_name("hikyaku")
        .email_tags(
            MessageTag::builder()
                .name("run")
                .value("r1")
                .build()
                .unwrap(),
        )
        .list_management_options(
            aws_sdk_sesv2::types::ListManagementOptions::builder()
                .contact_list_name("news")
                .topic_name("weekly")
                .build()
                .unwrap(),
        )
        .send()
        .await?;
    Ok(out.message_id().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn injected_errors_are_the_modelled_ses_exceptions() {
    let (upstream, _emulator) = fake_emulator().await;
    let proxy = SesProxy::new(SesProxyConfig::new(upstream)).unwrap();
    let running = proxy.spawn("127.0.0.1:0").await.unwrap();
    let ses = ses_client(&running.url());
    let control = SesProxyClient::new(running.url());

    // Forwarded and recorded.
    let id = send(&ses, "ann@example.test").await.unwrap();
    assert_eq!(id, "ses-1");
    let sends = control.sends().await.unwrap();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].message_id, "ses-1");
    assert_eq!(sends[0].configuration_set_name.as_deref(), Some("hikyaku"));
    assert_eq!(sends[0].tag("run"), Some("r1"));
    // Whose credentials signed it.
    assert_eq!(sends[0].access_key_id.as_deref(), Some("testing"));
    assert_eq!(
        sends[0]
            .list_management_options
            .as_ref()
            .map(|o| o.contact_list_name.as_str()),
        Some("news")
    );
    assert_eq!(sends[0].destination.to_addresses, ["ann@example.test"]);

    // Every second SendEmail is throttled.
    control
        .set_faults(&Faults {
            throttle_every: Some(2),
            ..Faults::default()
        })
        .await
        .unwrap();
    send(&ses, "ann@example.test").await.unwrap();
    let err = send(&ses, "ann@example.test").await.unwrap_err();
    let service = err.into_service_error();
    assert!(
        service.is_too_many_requests_exception(),
        "expected TooManyRequestsException, got {service:?}"
    );
    assert_eq!(
        aws_sdk_sesv2::error::ProvideErrorMetadata::message(&service),
        Some("Maximum sending rate exceeded.")
    );

    // Rejected recipients, by domain.
    control
        .set_faults(&Faults {
            reject_recipients: vec!["@reject.test".into()],
            ..Faults::default()
        })
        .await
        .unwrap();
    let err = send(&ses, "bob@reject.test").await.unwrap_err();
    assert!(err.into_service_error().is_message_rejected());
    send(&ses, "bob@fine.test").await.unwrap();

    // Paused account.
    proxy.set_faults(Faults {
        pause_sending: true,
        ..Faults::default()
    });
    let err = send(&ses, "ann@example.test").await.unwrap_err();
    assert!(err.into_service_error().is_sending_paused_exception());

    control.clear_faults().await.unwrap();
    send(&ses, "ann@example.test").await.unwrap();

    let counters = control.counters().await.unwrap();
    assert_eq!(counters.send_email_requests, 7);
    assert_eq!(counters.send_email_accepted, 4);
    assert_eq!(
        (counters.throttled, counters.rejected, counters.paused),
        (1, 1, 1)
    );
    assert_eq!(proxy.sends().len(), 4);

    control.reset().await.unwrap();
    assert!(control.sends().await.unwrap().is_empty());
    running.stop().await.unwrap();
}

#[tokio::test]
async fn other_requests_pass_through_unchanged() {
    let (upstream, _emulator) = fake_emulator().await;
    let proxy = SesProxy::new(SesProxyConfig::new(upstream)).unwrap();
    let running = proxy.spawn("127.0.0.1:0").await.unwrap();
    // The stand-in has no such route: its 404 comes back as it is.
    let answer = reqwest::Client::new()
        .get(format!("{}/v2/email/identities", running.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert_eq!(proxy.counters().forwarded, 1);
    assert_eq!(proxy.counters().send_email_requests, 0);
}

#[tokio::test]
async fn get_account_is_answered_by_the_proxy_from_the_account_it_plays() {
    let (upstream, _emulator) = fake_emulator().await;
    let mut config = SesProxyConfig::new(upstream);
    config.account.max_send_rate = 14.0;
    config.account.max_24_hour_send = 50_000.0;
    let proxy = SesProxy::new(config).unwrap();
    let running = proxy.spawn("127.0.0.1:0").await.unwrap();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sesv2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(running.url())
        .load()
        .await;
    let account = aws_sdk_sesv2::Client::new(&sdk)
        .get_account()
        .send()
        .await
        .unwrap();
    let quota = account.send_quota().unwrap();
    assert_eq!(quota.max_send_rate(), 14.0);
    assert_eq!(quota.max24_hour_send(), 50_000.0);
    assert!(account.sending_enabled());
    assert_eq!(account.enforcement_status(), Some("HEALTHY"));
    assert_eq!(proxy.counters().get_account_calls, 1);
    assert_eq!(proxy.counters().forwarded, 0, "not forwarded");
}
