//! Sending through another account's SES: the sender assumes that account's role
//! (`infra/sending-role.yaml`) with STS `AssumeRole` and keeps the credentials, per role,
//! until shortly before they expire.
//!
//! The credentials are fetched before the SES call, never inside it: `SendEmail` is bounded
//! by [`SEND_TIMEOUT`](crate::ses::SEND_TIMEOUT), and a slow STS answer counted against it
//! would turn a message that never left into an `uncertain` one.
//!
//! A refused `AssumeRole` is classified by type: STS's modelled errors (an expired token, a
//! disabled region, a malformed policy) and unmodelled 401/403 answers (the role does not
//! trust the sender, or the external id is wrong) stop every send through the role; anything
//! else (throttling, a 5xx, a connection failure) is worth trying again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use hikyaku_core::campaign::SendingRole;

/// The session name the sending account sees in CloudTrail for hikyaku's sends.
pub const SESSION_NAME: &str = "hikyaku-sender";
/// Credentials are renewed this long before they expire, so no call starts with credentials
/// about to lapse.
pub const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// Kept this long when STS gives no expiry (it always does; emulators may not).
const WITHOUT_EXPIRY: Duration = Duration::from_secs(900);
/// The longest `AssumeRole` may take, retries included.
const ASSUME_TIMEOUT: Duration = Duration::from_secs(10);

/// A sending role's credentials could not be had.
#[derive(thiserror::Error, Debug, Clone)]
#[error("sending role {role} could not be assumed ({code}): {message}")]
pub struct RoleError {
    pub role: String,
    pub code: String,
    pub message: String,
    /// Worth trying again later (throttling, a 5xx, no answer); not when STS refused.
    pub retryable: bool,
}

/// Values kept per key until their renewal time; a missing or due value is fetched once,
/// however many callers ask at the same time.
#[derive(Debug)]
pub struct ExpiringCache<K, V> {
    entries: tokio::sync::Mutex<HashMap<K, (V, SystemTime)>>,
}

impl<K, V> Default for ExpiringCache<K, V> {
    fn default() -> Self {
        ExpiringCache {
            entries: tokio::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> ExpiringCache<K, V> {
    /// The value for `key`, fetched with `fetch` (which answers the value and when to renew
    /// it) when there is none yet or it is due at `now`. A failed fetch keeps nothing.
    pub async fn get_or_fetch<F, Fut, E>(&self, key: &K, now: SystemTime, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, SystemTime), E>>,
    {
        // Held across the fetch: concurrent sends wait for one AssumeRole, not one each.
        let mut entries = self.entries.lock().await;
        if let Some((value, renew_at)) = entries.get(key)
            && *renew_at > now
        {
            return Ok(value.clone());
        }
        let (value, renew_at) = fetch().await?;
        entries.insert(key.clone(), (value.clone(), renew_at));
        Ok(value)
    }
}

/// When credentials expiring at `expiry` are to be renewed.
pub fn renew_at(expiry: Option<SystemTime>, now: SystemTime) -> SystemTime {
    match expiry {
        Some(expiry) => expiry.checked_sub(RENEW_BEFORE).unwrap_or(now).max(now),
        None => now + WITHOUT_EXPIRY,
    }
}

/// Assumes sending roles with the base configuration's credentials, endpoints and HTTP
/// client.
#[derive(Clone, Debug)]
pub struct RoleAssumer {
    base: SdkConfig,
}

impl RoleAssumer {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["sts:AssumeRole"];

    pub fn new(base: &SdkConfig) -> RoleAssumer {
        RoleAssumer { base: base.clone() }
    }

    /// Fresh credentials of `role`, with the external id it asks for.
    pub async fn assume(&self, role: &SendingRole) -> Result<Credentials, RoleError> {
        let mut builder = AssumeRoleProvider::builder(&role.arn)
            .session_name(SESSION_NAME)
            .configure(&self.base);
        if let Some(external_id) = &role.external_id {
            builder = builder.external_id(external_id);
        }
        let provider = builder.build().await;
        let answer = tokio::time::timeout(ASSUME_TIMEOUT, provider.provide_credentials()).await;
        match answer {
            Ok(Ok(credentials)) => {
                tracing::info!(role = %role.arn, expires = ?credentials.expiry(), "sending role assumed");
                Ok(credentials)
            }
            Ok(Err(err)) => Err(role_error(role, &err)),
            Err(_) => Err(RoleError {
                role: role.arn.clone(),
                code: "Timeout".to_owned(),
                message: format!("STS did not answer within {ASSUME_TIMEOUT:?}"),
                retryable: true,
            }),
        }
    }
}

/// Classifies a failed credentials fetch by its type (see the module documentation).
fn role_error(role: &SendingRole, err: &CredentialsError) -> RoleError {
    let (code, retryable) = match err {
        CredentialsError::ProviderTimedOut(_) => ("ProviderTimedOut".to_owned(), true),
        CredentialsError::CredentialsNotLoaded(_) => ("CredentialsNotLoaded".to_owned(), false),
        CredentialsError::InvalidConfiguration(_) => ("InvalidConfiguration".to_owned(), false),
        CredentialsError::ProviderError(_) => sts_refusal(err),
        _ => ("CredentialsError".to_owned(), true),
    };
    RoleError {
        role: role.arn.clone(),
        code,
        message: DisplayErrorContext(err).to_string(),
        retryable,
    }
}

/// The STS error under a provider error: its code, and whether trying again may help.
fn sts_refusal(err: &CredentialsError) -> (String, bool) {
    let sts = std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>());
    let Some(sts) = sts else {
        return ("ProviderError".to_owned(), true);
    };
    match sts {
        SdkError::ServiceError(context) => {
            use aws_smithy_types::error::metadata::ProvideErrorMetadata;
            let status = context.raw().status().as_u16();
            let err = context.err();
            let refused = |name: &str| (name.to_owned(), false);
            match err {
                AssumeRoleError::ExpiredTokenException(_) => refused("ExpiredTokenException"),
                AssumeRoleError::MalformedPolicyDocumentException(_) => {
                    refused("MalformedPolicyDocumentException")
                }
                AssumeRoleError::PackedPolicyTooLargeException(_) => {
                    refused("PackedPolicyTooLargeException")
                }
                AssumeRoleError::RegionDisabledException(_) => refused("RegionDisabledException"),
                other => (
                    other.code().unwrap_or("UnknownError").to_owned(),
                    !matches!(status, 401 | 403),
                ),
            }
        }
        SdkError::ConstructionFailure(_) => ("ConstructionFailure".to_owned(), false),
        _ => ("TransportError".to_owned(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sts::types::error::{ExpiredTokenException, RegionDisabledException};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn role() -> SendingRole {
        SendingRole {
            arn: "arn:aws:iam::111122223333:role/hikyaku-sending".into(),
            external_id: Some("partner-external-id".into()),
        }
    }

    fn refused(err: AssumeRoleError, status: u16) -> RoleError {
        let response = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        let sdk = SdkError::service_error(err, response);
        role_error(&role(), &CredentialsError::provider_error(sdk))
    }

    fn unmodelled(code: &str) -> AssumeRoleError {
        AssumeRoleError::generic(ErrorMetadata::builder().code(code).build())
    }

    #[test]
    fn sts_refusals_stop_sending_and_passing_troubles_do_not() {
        let expired = refused(
            AssumeRoleError::ExpiredTokenException(ExpiredTokenException::builder().build()),
            400,
        );
        assert!(!expired.retryable);
        assert_eq!(expired.code, "ExpiredTokenException");
        let disabled = refused(
            AssumeRoleError::RegionDisabledException(RegionDisabledException::builder().build()),
            403,
        );
        assert!(!disabled.retryable);
        // The role does not trust the sender, or the external id is wrong.
        let denied = refused(unmodelled("AccessDenied"), 403);
        assert!(!denied.retryable);
        assert_eq!(denied.code, "AccessDenied");
        assert!(denied.to_string().contains("hikyaku-sending"), "{denied}");
        // The code is not what decides: the status and the type do.
        assert!(refused(unmodelled("Throttling"), 400).retryable);
        assert!(refused(unmodelled("ServiceUnavailable"), 503).retryable);
        assert!(refused(unmodelled("AccessDenied"), 500).retryable);

        assert!(
            role_error(
                &role(),
                &CredentialsError::provider_timed_out(ASSUME_TIMEOUT)
            )
            .retryable
        );
        assert!(
            !role_error(
                &role(),
                &CredentialsError::not_loaded("no base credentials")
            )
            .retryable
        );
        assert!(
            !role_error(&role(), &CredentialsError::invalid_configuration("bad arn")).retryable
        );
    }

    #[test]
    fn credentials_are_renewed_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = now + Duration::from_secs(3600);
        assert_eq!(renew_at(Some(hour), now), hour - RENEW_BEFORE);
        // Nearly expired already: renewed at once.
        assert_eq!(renew_at(Some(now + Duration::from_secs(10)), now), now);
        assert_eq!(renew_at(None, now), now + WITHOUT_EXPIRY);
    }

    #[tokio::test]
    async fn the_cache_fetches_once_per_key_until_renewal_and_keeps_no_failure() {
        let cache: ExpiringCache<&str, u32> = ExpiringCache::default();
        let fetches = AtomicU32::new(0);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = now + Duration::from_secs(60);
        let fetch = |value: u32| {
            let fetches = &fetches;
            move || async move {
                fetches.fetch_add(1, Ordering::Relaxed);
                Ok::<_, RoleError>((value, later))
            }
        };
        // Concurrent askers share one fetch.
        let (a, b) = tokio::join!(
            cache.get_or_fetch(&"role-a", now, fetch(1)),
            cache.get_or_fetch(&"role-a", now, fetch(2)),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
        assert_eq!(fetches.load(Ordering::Relaxed), 1);
        // Another role is another entry.
        assert_eq!(
            cache.get_or_fetch(&"role-b", now, fetch(3)).await.unwrap(),
            3
        );
        assert_eq!(fetches.load(Ordering::Relaxed), 2);
        // Due: fetched again.
        assert_eq!(
            cache
                .get_or_fetch(&"role-a", later, fetch(4))
                .await
                .unwrap(),
            4
        );
        assert_eq!(fetches.load(Ordering::Relaxed), 3);
        // A failure is not kept: the next ask tries again.
        let failing = || async {
            Err::<(u32, SystemTime), _>(RoleError {
                role: "role-c".into(),
                code: "Throttling".into(),
                message: "slow down".into(),
                retryable: true,
            })
        };
        assert!(cache.get_or_fetch(&"role-c", now, failing).await.is_err());
        assert_eq!(
            cache.get_or_fetch(&"role-c", now, fetch(5)).await.unwrap(),
            5
        );
    }
}
