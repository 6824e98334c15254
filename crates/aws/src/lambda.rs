//! Invoking hikyaku's own functions: the fan-out continues itself asynchronously before its
//! deadline, and the CLI starts runs synchronously to show the answer.

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde_json::Value;

use crate::error::{service_message, status_of, status_retryable, transport_retryable};

/// Why an invocation did not give an answer.
#[derive(thiserror::Error, Debug)]
pub enum InvokeError {
    /// Lambda did not run the function (throttled, missing, not permitted, unreachable).
    /// `retryable` says whether trying again later may work.
    #[error("invoking {function} failed: {message}")]
    Call {
        function: String,
        message: String,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The function ran and failed; `error_type` and `message` come from its error payload.
    #[error("{function} failed: {message}")]
    Function {
        function: String,
        error_type: Option<String>,
        message: String,
    },
    /// The payload to send, or the answer received, is not JSON.
    #[error("{function}: the payload is not JSON: {source}")]
    Payload {
        function: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Invokes Lambda functions by name or ARN.
#[derive(Clone, Debug)]
pub struct FunctionInvoker {
    client: Client,
}

/// Lambda's own errors, by type: throttling, service errors and functions not ready yet are
/// worth retrying; a missing function, bad parameters or permissions are not.
fn call_error<E>(function: &str, err: SdkError<E, HttpResponse>) -> InvokeError
where
    E: std::error::Error + Send + Sync + 'static,
    aws_sdk_lambda::Error: From<SdkError<E, HttpResponse>>,
{
    use aws_sdk_lambda::Error as Lambda;

    let function = function.to_owned();
    if let Some(retryable) = transport_retryable(&err) {
        return InvokeError::Call {
            function,
            message: DisplayErrorContext(&err).to_string(),
            retryable,
            source: Box::new(err),
        };
    }
    let status = status_of(&err);
    let service = Lambda::from(err);
    let retryable = match &service {
        Lambda::TooManyRequestsException(_)
        | Lambda::ServiceException(_)
        | Lambda::Ec2ThrottledException(_)
        | Lambda::ResourceNotReadyException(_)
        | Lambda::ResourceConflictException(_)
        | Lambda::EniLimitReachedException(_)
        | Lambda::SnapStartNotReadyException(_) => true,
        Lambda::ResourceNotFoundException(_)
        | Lambda::InvalidParameterValueException(_)
        | Lambda::InvalidRequestContentException(_)
        | Lambda::RequestTooLargeException(_)
        | Lambda::RecursiveInvocationException(_) => false,
        _ => status_retryable(status),
    };
    InvokeError::Call {
        function,
        message: service_message(&service),
        retryable,
        source: Box::new(service),
    }
}

impl FunctionInvoker {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies. The
    /// Invoke API is authorised by `lambda:InvokeFunction`. `OPERATIONS` is kept true by a test
    /// that reads this module's source.
    pub const OPERATIONS: &[&str] = &["lambda:InvokeFunction"];

    /// An invoker on `client` (its retries are the SDK's defaults).
    pub fn new(client: Client) -> FunctionInvoker {
        FunctionInvoker { client }
    }

    /// Queues an asynchronous invocation (`InvocationType::Event`); Ok once Lambda accepted it.
    #[tracing::instrument(skip_all, fields(function = function), err)]
    pub async fn invoke_async(&self, function: &str, payload: &Value) -> Result<(), InvokeError> {
        self.client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(encode(function, payload)?))
            .send()
            .await
            .map_err(|err| call_error(function, err))?;
        Ok(())
    }

    /// Invokes synchronously (`RequestResponse`) and returns the function's JSON answer
    /// (`Null` when it returned nothing). A function error becomes
    /// [`InvokeError::Function`] with the `errorType` and `errorMessage` of its payload.
    #[tracing::instrument(skip_all, fields(function = function), err)]
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, InvokeError> {
        let output = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(encode(function, payload)?))
            .send()
            .await
            .map_err(|err| call_error(function, err))?;
        let answer = output
            .payload
            .map(Blob::into_inner)
            .filter(|bytes| !bytes.iter().all(u8::is_ascii_whitespace))
            .unwrap_or_default();
        if output.function_error.is_some() {
            return Err(function_error(function, &answer));
        }
        if answer.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer).map_err(|source| InvokeError::Payload {
            function: function.to_owned(),
            source,
        })
    }
}

fn encode(function: &str, payload: &Value) -> Result<Vec<u8>, InvokeError> {
    serde_json::to_vec(payload).map_err(|source| InvokeError::Payload {
        function: function.to_owned(),
        source,
    })
}

/// Reads the runtime's error payload (`{"errorType": …, "errorMessage": …}`); an answer of
/// another shape is shown as it is.
fn function_error(function: &str, answer: &[u8]) -> InvokeError {
    let parsed: Option<Value> = serde_json::from_slice(answer).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|value| value.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    InvokeError::Function {
        function: function.to_owned(),
        error_type: field("errorType"),
        message: field("errorMessage")
            .unwrap_or_else(|| String::from_utf8_lossy(answer).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_lambda::operation::invoke::{InvokeError as SdkInvokeError, InvokeOutput};
    use aws_sdk_lambda::types::error::{ResourceNotFoundException, TooManyRequestsException};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use serde_json::json;

    macro_rules! lambda_client {
        ($($rule:expr),* $(,)?) => {
            mock_client!(aws_sdk_lambda, RuleMode::Sequential, [$($rule),*], |config| config
                .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled()))
        };
    }

    #[tokio::test]
    async fn when_the_function_answers_then_its_json_is_returned() {
        let answer = mock!(Client::invoke)
            .match_requests(|req| {
                req.invocation_type() == Some(&InvocationType::RequestResponse)
                    && req.payload().map(|p| p.as_ref())
                        == Some(br#"{"campaign_id":"winter"}"#.as_slice())
            })
            .then_output(|| {
                InvokeOutput::builder()
                    .status_code(200)
                    .payload(Blob::new(r#"{"outcome":"completed"}"#))
                    .build()
            });
        let invoker = FunctionInvoker::new(lambda_client!(&answer));
        let value = invoker
            .invoke("hikyaku-fanout", &json!({"campaign_id": "winter"}))
            .await
            .unwrap();
        assert_eq!(value, json!({"outcome": "completed"}));
    }

    #[tokio::test]
    async fn when_the_function_fails_then_its_error_message_is_returned() {
        let failed = mock!(Client::invoke).then_output(|| {
            InvokeOutput::builder()
                .status_code(200)
                .function_error("Unhandled")
                .payload(Blob::new(
                    r#"{"errorType":"CampaignNotFound","errorMessage":"campaign 'winter' does not exist"}"#,
                ))
                .build()
        });
        let invoker = FunctionInvoker::new(lambda_client!(&failed));
        let err = invoker
            .invoke("hikyaku-fanout", &json!({}))
            .await
            .unwrap_err();
        match err {
            InvokeError::Function {
                error_type,
                message,
                ..
            } => {
                assert_eq!(error_type.as_deref(), Some("CampaignNotFound"));
                assert_eq!(message, "campaign 'winter' does not exist");
            }
            other => panic!("expected a function error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn when_invoked_asynchronously_then_the_invocation_type_is_event() {
        let queued = mock!(Client::invoke)
            .match_requests(|req| req.invocation_type() == Some(&InvocationType::Event))
            .then_output(|| InvokeOutput::builder().status_code(202).build());
        let invoker = FunctionInvoker::new(lambda_client!(&queued));
        invoker
            .invoke_async("hikyaku-fanout", &json!({"continue": true}))
            .await
            .unwrap();
        assert_eq!(queued.num_calls(), 1);
    }

    #[tokio::test]
    async fn when_lambda_refuses_then_the_error_says_whether_to_retry() {
        let throttled = mock!(Client::invoke).then_error(|| {
            SdkInvokeError::TooManyRequestsException(TooManyRequestsException::builder().build())
        });
        let missing = mock!(Client::invoke).then_error(|| {
            SdkInvokeError::ResourceNotFoundException(ResourceNotFoundException::builder().build())
        });
        let invoker = FunctionInvoker::new(lambda_client!(&throttled, &missing));
        let first = invoker.invoke_async("f", &json!({})).await.unwrap_err();
        assert!(
            matches!(
                first,
                InvokeError::Call {
                    retryable: true,
                    ..
                }
            ),
            "{first:?}"
        );
        let second = invoker.invoke_async("f", &json!({})).await.unwrap_err();
        assert!(
            matches!(
                second,
                InvokeError::Call {
                    retryable: false,
                    ..
                }
            ),
            "{second:?}"
        );
    }
}

/// Time left in an invocation, from the runtime's `Lambda-Runtime-Deadline-Ms`.
///
/// Lambda gives the deadline in milliseconds since the Unix epoch. Some runtime emulators
/// give the function's timeout in milliseconds instead; a value that cannot be an epoch
/// time of this century is read that way, counted from when the invocation was received, so
/// the same binary paces itself alike in both places.
#[derive(Clone, Copy, Debug)]
pub struct InvocationClock {
    deadline: std::time::SystemTime,
}

/// 2001-09-09 in epoch milliseconds: any real deadline is later.
const EPOCH_MS_FLOOR: u64 = 1_000_000_000_000;

impl InvocationClock {
    pub fn new(deadline_ms: u64) -> InvocationClock {
        let now = std::time::SystemTime::now();
        let deadline = if deadline_ms >= EPOCH_MS_FLOOR {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(deadline_ms)
        } else {
            now + std::time::Duration::from_millis(deadline_ms)
        };
        InvocationClock { deadline }
    }

    pub fn time_left(&self) -> std::time::Duration {
        self.deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn when_the_deadline_is_an_epoch_time_then_time_left_counts_down_to_it() {
        let in_a_minute = SystemTime::now() + Duration::from_secs(60);
        let ms = in_a_minute.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let left = InvocationClock::new(ms).time_left();
        assert!(
            left > Duration::from_secs(58) && left <= Duration::from_secs(60),
            "{left:?}"
        );
    }

    #[test]
    fn when_the_deadline_is_past_then_no_time_is_left() {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - 1_000;
        assert_eq!(InvocationClock::new(ms).time_left(), Duration::ZERO);
    }

    #[test]
    fn when_the_deadline_is_a_timeout_then_it_counts_from_now() {
        let left = InvocationClock::new(600_000).time_left();
        assert!(
            left > Duration::from_secs(590) && left <= Duration::from_secs(600),
            "{left:?}"
        );
    }
}
