//! What the two event sources ([`crate::pump`] for SQS, [`crate::sns_pump`] for SNS) share:
//! invoking a function and reading how it ended, and asking a queue whether it is empty.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_types::error::display::DisplayErrorContext;

/// How one invocation ended, before its answer is interpreted.
pub(crate) enum Invocation {
    /// The function returned this payload.
    Returned(Vec<u8>),
    /// The function ran and failed (`X-Amz-Function-Error`, or the runtime's error body).
    FunctionError(String),
    /// The call never reached the function, or no answer came in time.
    InvokeError(String),
}

/// A Lambda client that does not retry: a retried invoke would be a delivery AWS does not make;
/// each event source decides itself what to deliver again.
pub(crate) fn lambda_client(sdk: &SdkConfig) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

/// The event's region: the SDK's, or `us-east-1` as the emulators default to.
pub(crate) fn region(sdk: &SdkConfig) -> String {
    sdk.region()
        .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string())
}

/// Invokes `function` synchronously (RequestResponse) with `payload` and waits at most
/// `timeout` for its answer.
pub(crate) async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    payload: &[u8],
    timeout: Duration,
) -> Invocation {
    let request = lambda
        .invoke()
        .function_name(function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(payload))
        .send();
    let Ok(result) = tokio::time::timeout(timeout, request).await else {
        return Invocation::InvokeError(format!("no answer within {timeout:?}"));
    };
    match result {
        Ok(out) => {
            let body = out
                .payload()
                .map(|b| b.as_ref().to_vec())
                .unwrap_or_default();
            match out.function_error() {
                Some(kind) => {
                    Invocation::FunctionError(format!("{kind}: {}", String::from_utf8_lossy(&body)))
                }
                None => Invocation::Returned(body),
            }
        }
        Err(err) => {
            // Without the Lambda proxy, `cargo lambda watch` answers a function error with
            // HTTP 500 and the runtime's `{"errorType", "errorMessage"}` body instead of
            // 200 + X-Amz-Function-Error.
            if let Some(raw) = err.raw_response() {
                let body = raw.body().bytes().unwrap_or_default();
                let is_runtime_error = serde_json::from_slice::<serde_json::Value>(body)
                    .is_ok_and(|v| v.get("errorType").is_some());
                if is_runtime_error {
                    return Invocation::FunctionError(String::from_utf8_lossy(body).into_owned());
                }
            }
            Invocation::InvokeError(DisplayErrorContext(err).to_string())
        }
    }
}

/// True when the queue holds no visible, in-flight or delayed message; the error names the
/// failed GetQueueAttributes call.
pub(crate) async fn queue_is_empty(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<bool, String> {
    let names = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
    ];
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| DisplayErrorContext(e).to_string())?;
    Ok(names.iter().all(|name| {
        out.attributes()
            .and_then(|a| a.get(name))
            .is_some_and(|v| v == "0")
    }))
}
