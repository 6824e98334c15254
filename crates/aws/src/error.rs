//! SDK errors, classified by their type (never by their message text).
//!
//! Every DynamoDB call goes through [`dynamo_failure`]: one generic helper that turns any
//! operation's `SdkError` into core's [`StoreError`], deciding `retryable` like this:
//!
//! | error | retryable |
//! |---|---|
//! | timeout, dispatch failure (connection), unreadable response | yes |
//! | request could not be built (no region, bad endpoint) | no |
//! | `ProvisionedThroughputExceeded`, `RequestLimitExceeded`, `Throttling`, `InternalServerError`, `TransactionConflict`, `TransactionInProgress`, `ReplicatedWriteConflict` | yes |
//! | `ResourceNotFound`, `ItemCollectionSizeLimitExceeded`, other modelled errors | no |
//! | unmodelled (validation, access denied, ...): HTTP 5xx or 429 | yes |
//! | unmodelled: any other status | no |
//!
//! `ConditionalCheckFailed` is not an error for the adapters but an answer, so it comes back
//! separately with the item the service returned (`ReturnValuesOnConditionCheckFailure`).

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use hikyaku_core::ports::StoreError;

use crate::dynamodb::item::Item;

/// Whether an error that is not the service's own answer is worth retrying: timeouts,
/// connection failures and unreadable responses are; a request that could not be built is not.
/// `None` for service errors, which each service classifies by their type.
pub(crate) fn transport_retryable<E, R>(err: &SdkError<E, R>) -> Option<bool> {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Some(true)
        }
        SdkError::ConstructionFailure(_) => Some(false),
        SdkError::ServiceError(_) => None,
        _ => Some(false),
    }
}

/// The HTTP status of the service's answer, if there was one.
pub(crate) fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|raw| raw.status().as_u16())
}

/// For errors a service model does not name: the status says whether to try again.
pub(crate) fn status_retryable(status: Option<u16>) -> bool {
    matches!(status, Some(429 | 500..=599))
}

/// `code: message` of a service error as the service sent it; the error's own description
/// where the metadata lacks either.
pub(crate) fn service_message(err: &(impl ProvideErrorMetadata + std::fmt::Display)) -> String {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => err.to_string(),
    }
}

/// What a failed DynamoDB call means to an adapter.
pub(crate) enum DynamoFailure {
    /// The condition expression was false; carries the item as it is stored, when the request
    /// asked for it and the service sent it.
    ConditionFailed(Option<Item>),
    Store(StoreError),
}

impl DynamoFailure {
    /// For calls without a condition, or whose condition failing is itself an error.
    pub(crate) fn into_store(self, operation: &'static str) -> StoreError {
        match self {
            DynamoFailure::Store(err) => err,
            DynamoFailure::ConditionFailed(_) => StoreError::new(
                operation,
                "the conditional check failed unexpectedly",
                false,
            ),
        }
    }
}

/// Classifies any DynamoDB operation's error (see the module's table).
pub(crate) fn dynamo_failure<E>(
    operation: &'static str,
    err: SdkError<E, HttpResponse>,
) -> DynamoFailure
where
    E: StdError + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<SdkError<E, HttpResponse>>,
{
    use aws_sdk_dynamodb::Error as Dynamo;

    if let Some(retryable) = transport_retryable(&err) {
        return DynamoFailure::Store(StoreError {
            operation,
            message: DisplayErrorContext(&err).to_string(),
            retryable,
            source: Some(Box::new(err)),
        });
    }
    let status = status_of(&err);
    let service = Dynamo::from(err);
    let retryable = match service {
        Dynamo::ConditionalCheckFailedException(failed) => {
            return DynamoFailure::ConditionFailed(failed.item);
        }
        Dynamo::ProvisionedThroughputExceededException(_)
        | Dynamo::RequestLimitExceeded(_)
        | Dynamo::ThrottlingException(_)
        | Dynamo::InternalServerError(_)
        | Dynamo::TransactionConflictException(_)
        | Dynamo::TransactionInProgressException(_)
        | Dynamo::ReplicatedWriteConflictException(_) => true,
        Dynamo::ResourceNotFoundException(_)
        | Dynamo::TableNotFoundException(_)
        | Dynamo::IndexNotFoundException(_)
        | Dynamo::ItemCollectionSizeLimitExceededException(_)
        | Dynamo::TransactionCanceledException(_)
        | Dynamo::InvalidEndpointException(_) => false,
        // Unmodelled (ValidationException, AccessDeniedException, ...) or modelled but
        // foreign to the data-plane calls made here: the status decides.
        _ => status_retryable(status),
    };
    DynamoFailure::Store(StoreError {
        operation,
        message: service_message(&service),
        retryable,
        source: Some(Box::new(service)),
    })
}

/// [`dynamo_failure`] for calls without a condition.
pub(crate) fn store_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: StdError + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<SdkError<E, HttpResponse>>,
{
    dynamo_failure(operation, err).into_store(operation)
}

/// A failed preflight probe, by the error's type: `missing` says which modelled errors mean
/// "no such resource"; an unmodelled 404, 405 or 501 means the endpoint does not offer the
/// call at all (an emulator without that API); anything else failed, with the reason.
pub(crate) fn probe_failure<T, E>(
    err: SdkError<E, HttpResponse>,
    missing: impl Fn(&E) -> bool,
) -> hikyaku_core::doctor::Probe<T>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    use hikyaku_core::doctor::Probe;
    let status = status_of(&err);
    if let SdkError::ServiceError(context) = &err {
        if missing(context.err()) {
            return Probe::Missing;
        }
        if context.err().code().is_none() && matches!(status, Some(404 | 405 | 501)) {
            return Probe::Unanswered;
        }
    }
    Probe::Failed(DisplayErrorContext(&err).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::types::error::{
        ProvisionedThroughputExceededException, ResourceNotFoundException,
    };
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn raw(status: u16) -> HttpResponse {
        HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty())
    }

    fn service(err: PutItemError, status: u16) -> SdkError<PutItemError, HttpResponse> {
        SdkError::service_error(err, raw(status))
    }

    fn store(err: SdkError<PutItemError, HttpResponse>) -> StoreError {
        store_error("test", err)
    }

    #[test]
    fn when_dynamodb_throttles_then_the_error_is_retryable() {
        let err = store(service(
            PutItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .build(),
            ),
            400,
        ));
        assert!(err.retryable);
        assert!(err.source.is_some());
    }

    #[test]
    fn when_the_table_is_missing_then_the_error_is_not_retryable() {
        let err = store(service(
            PutItemError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("no table")
                    .build(),
            ),
            400,
        ));
        assert!(!err.retryable);
        assert!(err.message.contains("no table"), "{}", err.message);
    }

    #[test]
    fn when_an_unmodelled_error_arrives_then_its_status_decides() {
        let unhandled = |code: &str| {
            PutItemError::generic(ErrorMetadata::builder().code(code).message("m").build())
        };
        assert!(!store(service(unhandled("ValidationException"), 400)).retryable);
        assert!(!store(service(unhandled("AccessDeniedException"), 400)).retryable);
        assert!(store(service(unhandled("ServiceUnavailable"), 503)).retryable);
    }

    #[test]
    fn when_the_call_times_out_then_the_error_is_retryable() {
        let err: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("took too long");
        assert!(store(err).retryable);
        let err: SdkError<PutItemError, HttpResponse> = SdkError::construction_failure("no region");
        assert!(!store(err).retryable);
    }

    #[test]
    fn a_probe_tells_missing_from_unanswered_from_failed_by_type_and_status() {
        use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
        use hikyaku_core::doctor::Probe;
        let missing =
            |e: &DescribeTableError| matches!(e, DescribeTableError::ResourceNotFoundException(_));
        let not_found = DescribeTableError::ResourceNotFoundException(
            ResourceNotFoundException::builder().build(),
        );
        let probe: Probe<()> = probe_failure(SdkError::service_error(not_found, raw(400)), missing);
        assert_eq!(probe, Probe::Missing);
        // No such route at an emulator: an unmodelled 404 without an error code.
        let no_route = DescribeTableError::generic(ErrorMetadata::builder().build());
        let probe: Probe<()> = probe_failure(SdkError::service_error(no_route, raw(404)), missing);
        assert_eq!(probe, Probe::Unanswered);
        let denied = DescribeTableError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .build(),
        );
        let probe: Probe<()> = probe_failure(SdkError::service_error(denied, raw(403)), missing);
        assert!(matches!(probe, Probe::Failed(reason) if reason.contains("AccessDenied")));
    }
}
