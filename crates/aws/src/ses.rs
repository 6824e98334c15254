//! [`EmailSender`] on SES v2 `SendEmail`: one recipient per call, simple content, so SES adds
//! the List-Unsubscribe header and replaces `{{amazonSESUnsubscribeUrl}}` when the message
//! names a contact list.
//!
//! SES errors are classified by their type (`SendEmailError` variants, never message text):
//!
//! | SES error | class | why |
//! |---|---|---|
//! | `TooManyRequestsException` | Throttled | the send rate was exceeded |
//! | `LimitExceededException` | QuotaExhausted | the daily quota ran out; the retry waits long (the 24-hour window frees gradually) |
//! | `SendingPausedException`, `AccountSuspendedException`, `MailFromDomainNotVerifiedException` | Fatal | the account stops every send |
//! | `NotFoundException` | Fatal | the configuration set or contact list is missing: every send of the run fails alike |
//! | `MessageRejected`, `BadRequestException` | Permanent | this message will never go |
//! | connection failure (no answer was read) | Transient | almost always before SES saw the request |
//! | timeout, unreadable response | OutcomeUnknown | SES may have accepted the message: recorded `uncertain`, never resent |
//! | request not built (no region, bad endpoint) | Fatal | every send would fail alike |
//! | unmodelled error with HTTP 401 or 403 (access denied, bad signature) | Fatal | a permission or credential problem stops every send |
//! | any other unmodelled error (5xx, unknown codes) | Transient | |
//!
//! A dispatch failure is taken as "not sent": the SDK reports it when no response was read,
//! which in practice is a refused or reset connection before SES processed the request. A
//! connection cut after SES read the whole request would land here too; that narrow window is
//! accepted, because treating every connection error as uncertain would strand recipients on
//! every network blip.
//!
//! The client used for sends never retries by itself (`RetryConfig::disabled()`): a throttled
//! recipient goes back on the queue with the sender's own backoff, and the shared send budget
//! slows down, which an SDK retry loop inside the call would hide from it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The longest one `SendEmail` may take. A call cut off here may have reached SES, so it is
/// recorded `uncertain`; keeping it shorter than the sender's reserve (5 s by default) ends
/// it before the function's deadline would, which would leave the claim to turn uncertain
/// only after the claim timeout.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(4);

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::Region;
use aws_sdk_sesv2::config::retry::RetryConfig;
use aws_sdk_sesv2::error::BuildError;
use aws_sdk_sesv2::operation::get_account::GetAccountError;
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{
    Body, Content, Destination, EmailContent, ListManagementOptions, Message, MessageTag,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use hikyaku_core::budget::{AccountError, AccountSnapshot, AccountSource};
use hikyaku_core::campaign::SendingAccount;
use hikyaku_core::doctor::{EventDestination, IdentityState, Probe};
use hikyaku_core::logging::shown;
use hikyaku_core::ports::{EmailSender, OutboundEmail, SendError, SendErrorClass};

use crate::error::probe_failure;
use crate::roles::{self, ExpiringCache, RoleAssumer, RoleError};

const CHARSET: &str = "UTF-8";

/// The SES v2 clients of the sending accounts: the base one, one per other region a campaign
/// names (derived from the base configuration on first use, then kept), and one per sending
/// role and region, on the role's credentials until they are due for renewal.
#[derive(Debug)]
struct SesClients {
    base: Client,
    /// `None`: sending roles cannot be used.
    roles: Option<RoleAssumer>,
    regional: Mutex<HashMap<String, Client>>,
    assumed: ExpiringCache<SendingAccount, Client>,
}

impl SesClients {
    fn new(base: Client) -> SesClients {
        SesClients {
            base,
            roles: None,
            regional: Mutex::new(HashMap::new()),
            assumed: ExpiringCache::default(),
        }
    }

    /// The client for the sender's own account in `region`: the base one when `None` or the
    /// same region.
    fn regional(&self, region: Option<&str>) -> Client {
        let Some(region) = region else {
            return self.base.clone();
        };
        if self.base.config().region().map(Region::as_ref) == Some(region) {
            return self.base.clone();
        }
        let mut regional = self
            .regional
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        regional
            .entry(region.to_owned())
            .or_insert_with(|| {
                let config = self
                    .base
                    .config()
                    .to_builder()
                    .region(Region::new(region.to_owned()))
                    .build();
                Client::from_conf(config)
            })
            .clone()
    }

    /// The client for `sending`: through its role, when it names one.
    async fn client_for(&self, sending: &SendingAccount) -> Result<Client, RoleError> {
        let Some(role) = &sending.role else {
            return Ok(self.regional(sending.region.as_deref()));
        };
        let now = SystemTime::now();
        self.assumed
            .get_or_fetch(sending, now, || async {
                let assumer = self.roles.as_ref().ok_or_else(|| RoleError {
                    role: role.arn.clone(),
                    code: "RolesNotEnabled".to_owned(),
                    message: "this function does not assume sending roles".to_owned(),
                    retryable: false,
                })?;
                let credentials = assumer.assume(role).await?;
                let renew_at = roles::renew_at(credentials.expiry(), now);
                let mut config = self.base.config().to_builder();
                config.set_credentials_provider(Some(SharedCredentialsProvider::new(credentials)));
                if let Some(region) = &sending.region {
                    config.set_region(Some(Region::new(region.clone())));
                }
                Ok((Client::from_conf(config.build()), renew_at))
            })
            .await
    }
}

impl From<RoleError> for SendError {
    fn from(err: RoleError) -> SendError {
        SendError {
            class: if err.retryable {
                SendErrorClass::Transient
            } else {
                SendErrorClass::Fatal
            },
            code: err.code.clone(),
            message: err.to_string(),
        }
    }
}

impl From<RoleError> for AccountError {
    fn from(err: RoleError) -> AccountError {
        AccountError {
            code: err.code.clone(),
            message: err.to_string(),
            retryable: err.retryable,
        }
    }
}

/// SES v2 sender with one client per sending account (see [`SesClients`]).
#[derive(Debug)]
pub struct SesSender {
    clients: SesClients,
}

impl SesSender {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["ses:SendEmail"];

    /// A sender on the base configuration's region, endpoint and credentials, with the SDK's
    /// retries turned off (see the module documentation).
    pub fn new(base: &SdkConfig) -> SesSender {
        SesSender::from_client(Client::new(base))
    }

    /// Sends the mail of campaigns that name a sending role through that role.
    pub fn with_roles(mut self, roles: RoleAssumer) -> SesSender {
        self.clients.roles = Some(roles);
        self
    }

    /// A sender built on `client`'s configuration (retries turned off, each call bounded by
    /// [`SEND_TIMEOUT`]); messages naming another region get a client for it derived from the
    /// same configuration. It cannot assume sending roles.
    pub fn from_client(client: Client) -> SesSender {
        let config = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                aws_sdk_sesv2::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(SEND_TIMEOUT)
                    .build(),
            )
            .build();
        SesSender {
            clients: SesClients::new(Client::from_conf(config)),
        }
    }
}

/// [`AccountSource`] on SES v2 `GetAccount`, per region. SES allows this call once a second
/// per account; the send budget calls it about once a minute.
#[derive(Debug)]
pub struct SesAccount {
    clients: SesClients,
}

impl SesAccount {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &["ses:GetAccount"];

    pub fn new(base: &SdkConfig) -> SesAccount {
        SesAccount::from_client(Client::new(base))
    }

    pub fn from_client(client: Client) -> SesAccount {
        SesAccount {
            clients: SesClients::new(client),
        }
    }

    /// Reads the accounts of the sending roles too, through those roles.
    pub fn with_roles(mut self, roles: RoleAssumer) -> SesAccount {
        self.clients.roles = Some(roles);
        self
    }
}

/// Classifies a failed `GetAccount` by its type: throttling, service and connection troubles
/// pass; a refused request or permission does not.
fn account_error(err: SdkError<GetAccountError, HttpResponse>) -> AccountError {
    let (code, retryable) = match &err {
        SdkError::ServiceError(context) => match context.err() {
            GetAccountError::TooManyRequestsException(_) => ("TooManyRequestsException", true),
            GetAccountError::BadRequestException(_) => ("BadRequestException", false),
            other => {
                let status = context.raw().status().as_u16();
                (
                    other.code().unwrap_or("UnknownError"),
                    !matches!(status, 400..=499) || status == 429,
                )
            }
        },
        SdkError::ConstructionFailure(_) => ("ConstructionFailure", false),
        _ => ("TransportError", true),
    };
    AccountError {
        code: code.to_owned(),
        message: DisplayErrorContext(&err).to_string(),
        retryable,
    }
}

#[async_trait]
impl AccountSource for SesAccount {
    #[tracing::instrument(skip_all, fields(account = %sending.scope()), err)]
    async fn account(
        &self,
        sending: &SendingAccount,
        now: DateTime<Utc>,
    ) -> Result<AccountSnapshot, AccountError> {
        let client = self.clients.client_for(sending).await?;
        let output = client.get_account().send().await.map_err(account_error)?;
        let quota = output.send_quota();
        let snapshot = AccountSnapshot {
            // No quota in the answer: nothing is known to allow sending.
            max_send_rate: quota.map_or(0.0, |q| q.max_send_rate()),
            max_24_hour_send: quota.map_or(0.0, |q| q.max24_hour_send()),
            sent_last_24_hours: quota.map_or(0.0, |q| q.sent_last24_hours()),
            sending_enabled: output.sending_enabled(),
            enforcement_status: output.enforcement_status().unwrap_or("UNKNOWN").to_owned(),
            production_access: output.production_access_enabled(),
            fetched_at: now,
        };
        tracing::info!(max_send_rate = snapshot.max_send_rate, max_24_hour_send = snapshot.max_24_hour_send, sent_last_24_hours = snapshot.sent_last_24_hours, sending_enabled = snapshot.sending_enabled, enforcement = %snapshot.enforcement_status, "SES account read");
        Ok(snapshot)
    }
}

/// The SES resources a campaign names, read by the preflight check.
#[derive(Clone, Debug)]
pub struct SesSetup {
    client: Client,
}

impl SesSetup {
    /// The IAM actions of the AWS operations this adapter calls, for the deployment's policies.
    /// `OPERATIONS` is kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &[
        "ses:GetConfigurationSetEventDestinations",
        "ses:GetContactList",
        "ses:GetEmailIdentity",
    ];

    pub fn new(base: &SdkConfig) -> SesSetup {
        SesSetup {
            client: Client::new(base),
        }
    }

    pub async fn identity(&self, identity: &str) -> Probe<IdentityState> {
        use aws_sdk_sesv2::operation::get_email_identity::GetEmailIdentityError as E;
        match self
            .client
            .get_email_identity()
            .email_identity(identity)
            .send()
            .await
        {
            Ok(output) => Probe::Found(IdentityState {
                verified_for_sending: output.verified_for_sending_status(),
                dkim_status: output
                    .dkim_attributes()
                    .and_then(|dkim| dkim.status())
                    .map_or("NOT_STARTED", |status| status.as_str())
                    .to_owned(),
            }),
            Err(err) => probe_failure(err, |e| matches!(e, E::NotFoundException(_))),
        }
    }

    pub async fn event_destinations(
        &self,
        configuration_set: &str,
    ) -> Probe<Vec<EventDestination>> {
        use aws_sdk_sesv2::operation::get_configuration_set_event_destinations::GetConfigurationSetEventDestinationsError as E;
        match self
            .client
            .get_configuration_set_event_destinations()
            .configuration_set_name(configuration_set)
            .send()
            .await
        {
            Ok(output) => Probe::Found(
                output
                    .event_destinations()
                    .iter()
                    .map(|d| EventDestination {
                        name: d.name().to_owned(),
                        enabled: d.enabled(),
                        sns_topic_arn: d.sns_destination().map(|sns| sns.topic_arn().to_owned()),
                        events: d
                            .matching_event_types()
                            .iter()
                            .map(|e| e.as_str().to_owned())
                            .collect(),
                    })
                    .collect(),
            ),
            Err(err) => probe_failure(err, |e| matches!(e, E::NotFoundException(_))),
        }
    }

    pub async fn contact_list_topics(&self, contact_list: &str) -> Probe<Vec<String>> {
        use aws_sdk_sesv2::operation::get_contact_list::GetContactListError as E;
        match self
            .client
            .get_contact_list()
            .contact_list_name(contact_list)
            .send()
            .await
        {
            Ok(output) => Probe::Found(
                output
                    .topics()
                    .iter()
                    .map(|t| t.topic_name().to_owned())
                    .collect(),
            ),
            Err(err) => probe_failure(err, |e| matches!(e, E::NotFoundException(_))),
        }
    }
}

fn content(data: &str) -> Result<Content, BuildError> {
    Content::builder().data(data).charset(CHARSET).build()
}

/// The request's parts that SDK builders check; an error here is a bug or bad data, not SES.
fn email_content(email: &OutboundEmail) -> Result<EmailContent, BuildError> {
    let mut body = Body::builder();
    if !email.html.is_empty() {
        body = body.html(content(&email.html)?);
    }
    if !email.text.is_empty() || email.html.is_empty() {
        body = body.text(content(&email.text)?);
    }
    let message = Message::builder()
        .subject(content(&email.subject)?)
        .body(body.build())
        .build();
    Ok(EmailContent::builder().simple(message).build())
}

fn tags(email: &OutboundEmail) -> Result<Vec<MessageTag>, BuildError> {
    email
        .tags
        .iter()
        .map(|(name, value)| MessageTag::builder().name(name).value(value).build())
        .collect()
}

fn list_management(email: &OutboundEmail) -> Result<Option<ListManagementOptions>, BuildError> {
    email
        .list_management
        .as_ref()
        .map(|(contact_list, topic)| {
            ListManagementOptions::builder()
                .contact_list_name(contact_list)
                .set_topic_name(topic.clone())
                .build()
        })
        .transpose()
}

/// The SES error's name and message: for a modelled error its type's name and the message
/// it carries; the service's code and message otherwise.
fn describe(err: &SendEmailError) -> (String, String) {
    use SendEmailError as Ses;
    let (name, message) = match err {
        Ses::TooManyRequestsException(e) => ("TooManyRequestsException", e.message()),
        Ses::LimitExceededException(e) => ("LimitExceededException", e.message()),
        Ses::SendingPausedException(e) => ("SendingPausedException", e.message()),
        Ses::AccountSuspendedException(e) => ("AccountSuspendedException", e.message()),
        Ses::MailFromDomainNotVerifiedException(e) => {
            ("MailFromDomainNotVerifiedException", e.message())
        }
        Ses::NotFoundException(e) => ("NotFoundException", e.message()),
        Ses::MessageRejected(e) => ("MessageRejected", e.message()),
        Ses::BadRequestException(e) => ("BadRequestException", e.message()),
        other => (other.code().unwrap_or("UnknownError"), None),
    };
    let message = message.or(err.message()).unwrap_or("no message");
    (name.to_owned(), message.to_owned())
}

/// Classifies a refused `SendEmail` (see the module's table).
fn classify(err: SdkError<SendEmailError, HttpResponse>) -> SendError {
    let transport = |class, code: &str, err: &SdkError<SendEmailError, HttpResponse>| SendError {
        class,
        code: code.to_owned(),
        message: DisplayErrorContext(err).to_string(),
    };
    match err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let err = context.into_err();
            let class = match &err {
                SendEmailError::TooManyRequestsException(_) => SendErrorClass::Throttled,
                SendEmailError::LimitExceededException(_) => SendErrorClass::QuotaExhausted,
                SendEmailError::SendingPausedException(_)
                | SendEmailError::AccountSuspendedException(_)
                | SendEmailError::MailFromDomainNotVerifiedException(_)
                | SendEmailError::NotFoundException(_) => SendErrorClass::Fatal,
                SendEmailError::MessageRejected(_) | SendEmailError::BadRequestException(_) => {
                    SendErrorClass::Permanent
                }
                _ if matches!(status, 401 | 403) => SendErrorClass::Fatal,
                _ => SendErrorClass::Transient,
            };
            let (code, message) = describe(&err);
            SendError {
                class,
                code,
                message,
            }
        }
        ref other @ SdkError::TimeoutError(_) => {
            transport(SendErrorClass::OutcomeUnknown, "TimeoutError", other)
        }
        ref other @ SdkError::DispatchFailure(_) => {
            transport(SendErrorClass::Transient, "DispatchFailure", other)
        }
        ref other @ SdkError::ResponseError(_) => {
            transport(SendErrorClass::OutcomeUnknown, "ResponseError", other)
        }
        ref other @ SdkError::ConstructionFailure(_) => {
            transport(SendErrorClass::Fatal, "ConstructionFailure", other)
        }
        ref other => transport(SendErrorClass::Transient, "UnknownError", other),
    }
}

#[async_trait]
impl EmailSender for SesSender {
    /// One `SendEmail`; the SES message id on success. An accepted message without an id
    /// (some emulators) is still a success, with an empty id: reporting it as an error would
    /// send it again.
    #[tracing::instrument(skip_all, fields(to = %shown(&email.to), account = %email.sending.scope()), err)]
    async fn send(&self, email: &OutboundEmail) -> Result<String, SendError> {
        let invalid = |err: BuildError| SendError {
            class: SendErrorClass::Permanent,
            code: "InvalidRequest".to_owned(),
            message: err.to_string(),
        };
        let client = self.clients.client_for(&email.sending).await?;
        let request = client
            .send_email()
            .from_email_address(&email.from)
            .destination(
                Destination::builder()
                    .to_addresses(email.to.as_str())
                    .build(),
            )
            .set_reply_to_addresses((!email.reply_to.is_empty()).then(|| {
                email
                    .reply_to
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect()
            }))
            .content(email_content(email).map_err(invalid)?)
            .set_configuration_set_name(email.configuration_set.clone())
            .set_email_tags(Some(tags(email).map_err(invalid)?).filter(|tags| !tags.is_empty()))
            .set_list_management_options(list_management(email).map_err(invalid)?);
        match request.send().await {
            Ok(output) => {
                let id = output.message_id.unwrap_or_default();
                if id.is_empty() {
                    tracing::warn!("SES accepted the message without a message id");
                }
                Ok(id)
            }
            Err(err) => Err(classify(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sesv2::operation::send_email::SendEmailOutput;
    use aws_sdk_sesv2::types::error::{
        AccountSuspendedException, BadRequestException, LimitExceededException,
        MailFromDomainNotVerifiedException, MessageRejected, NotFoundException,
        SendingPausedException, TooManyRequestsException,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use hikyaku_core::email::EmailAddress;

    fn email() -> OutboundEmail {
        OutboundEmail {
            sending: SendingAccount::default(),
            from: "News <news@example.com>".into(),
            to: EmailAddress::parse("aiko@example.com").unwrap(),
            reply_to: vec![EmailAddress::parse("help@example.com").unwrap()],
            subject: "Winter sale".into(),
            html: "<p>Hello</p>".into(),
            text: "Hello".into(),
            configuration_set: Some("hikyaku".into()),
            list_management: Some(("newsletter".into(), Some("offers".into()))),
            tags: vec![
                ("campaign".into(), "winter".into()),
                ("run".into(), "20261224T090000Z".into()),
            ],
        }
    }

    /// A sender whose client is built with SDK retries on, to prove `SesSender` turns them off.
    fn sender(rules: &[&Rule]) -> SesSender {
        SesSender::from_client(mock_client!(aws_sdk_sesv2, RuleMode::Sequential, rules))
    }

    /// Sends through a client whose only answer is `error()`; the error and the number of
    /// calls made.
    async fn refused_with(
        error: impl Fn() -> SendEmailError + Send + Sync + 'static,
    ) -> (SendError, usize) {
        let rule = mock!(Client::send_email).then_error(error);
        let err = sender(&[&rule]).send(&email()).await.unwrap_err();
        (err, rule.num_calls())
    }

    #[tokio::test]
    async fn when_ses_accepts_then_the_message_id_is_returned_and_every_option_is_sent() {
        let accepted = mock!(Client::send_email)
            .match_requests(|req| {
                let simple = req.content().unwrap().simple().unwrap();
                let body = simple.body().unwrap();
                let options = req.list_management_options().unwrap();
                req.from_email_address() == Some("News <news@example.com>")
                    && req.destination().unwrap().to_addresses() == ["aiko@example.com"]
                    && req.reply_to_addresses() == ["help@example.com"]
                    && req.configuration_set_name() == Some("hikyaku")
                    && req.email_tags().len() == 2
                    && req.email_tags()[0].name() == "campaign"
                    && simple.subject().unwrap().charset() == Some("UTF-8")
                    && body.html().unwrap().data() == "<p>Hello</p>"
                    && body.text().unwrap().data() == "Hello"
                    && options.contact_list_name() == "newsletter"
                    && options.topic_name() == Some("offers")
            })
            .then_output(|| SendEmailOutput::builder().message_id("0100-abc").build());
        assert_eq!(
            sender(&[&accepted]).send(&email()).await.unwrap(),
            "0100-abc"
        );
    }

    #[tokio::test]
    async fn when_ses_throttles_then_the_send_is_throttled_and_not_retried_by_the_sdk() {
        let (err, calls) = refused_with(|| {
            SendEmailError::TooManyRequestsException(
                TooManyRequestsException::builder()
                    .message("Maximum sending rate exceeded.")
                    .build(),
            )
        })
        .await;
        assert_eq!(err.class, SendErrorClass::Throttled);
        assert_eq!(err.code, "TooManyRequestsException");
        assert_eq!(err.message, "Maximum sending rate exceeded.");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn when_the_daily_quota_is_exceeded_then_the_quota_is_exhausted() {
        let (err, calls) = refused_with(|| {
            SendEmailError::LimitExceededException(
                LimitExceededException::builder()
                    .message("Daily message quota exceeded.")
                    .build(),
            )
        })
        .await;
        assert_eq!(err.class, SendErrorClass::QuotaExhausted);
        assert_eq!(err.code, "LimitExceededException");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn when_sending_is_paused_then_the_error_is_fatal() {
        let (err, _) = refused_with(|| {
            SendEmailError::SendingPausedException(
                SendingPausedException::builder()
                    .message("sending paused")
                    .build(),
            )
        })
        .await;
        assert_eq!(err.class, SendErrorClass::Fatal);
        assert_eq!(err.code, "SendingPausedException");
    }

    #[tokio::test]
    async fn when_the_account_or_its_settings_refuse_then_the_error_is_fatal() {
        type Refusal = (fn() -> SendEmailError, &'static str);
        let refusals: [Refusal; 3] = [
            (
                || {
                    SendEmailError::AccountSuspendedException(
                        AccountSuspendedException::builder().build(),
                    )
                },
                "AccountSuspendedException",
            ),
            (
                || {
                    SendEmailError::MailFromDomainNotVerifiedException(
                        MailFromDomainNotVerifiedException::builder().build(),
                    )
                },
                "MailFromDomainNotVerifiedException",
            ),
            (
                || SendEmailError::NotFoundException(NotFoundException::builder().build()),
                "NotFoundException",
            ),
        ];
        for (error, name) in refusals {
            let (err, _) = refused_with(error).await;
            assert_eq!(err.class, SendErrorClass::Fatal, "{name}");
            assert_eq!(err.code, name);
        }
    }

    #[tokio::test]
    async fn when_the_message_is_rejected_then_the_error_is_permanent() {
        let (err, _) = refused_with(|| {
            SendEmailError::MessageRejected(
                MessageRejected::builder()
                    .message("Email address is not verified.")
                    .build(),
            )
        })
        .await;
        assert_eq!(err.class, SendErrorClass::Permanent);
        assert_eq!(err.code, "MessageRejected");
        assert_eq!(err.message, "Email address is not verified.");
        let (err, _) = refused_with(|| {
            SendEmailError::BadRequestException(BadRequestException::builder().build())
        })
        .await;
        assert_eq!(err.class, SendErrorClass::Permanent);
    }

    #[tokio::test]
    async fn when_ses_fails_with_a_server_error_then_the_send_is_transient() {
        let unavailable = mock!(Client::send_email).then_http_response(|| {
            HttpResponse::new(
                StatusCode::try_from(503).unwrap(),
                SdkBody::from(r#"{"message":"Service unavailable"}"#),
            )
        });
        let err = sender(&[&unavailable]).send(&email()).await.unwrap_err();
        assert_eq!(err.class, SendErrorClass::Transient);
        assert_eq!(unavailable.num_calls(), 1);
    }

    #[test]
    fn when_an_unmodelled_error_is_an_access_denial_then_it_is_fatal() {
        let denied = SendEmailError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not authorized to perform ses:SendEmail")
                .build(),
        );
        let raw =
            |status| HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        let err = classify(SdkError::service_error(denied, raw(403)));
        assert_eq!(err.class, SendErrorClass::Fatal);
        assert_eq!(err.code, "AccessDeniedException");
        let odd = SendEmailError::generic(ErrorMetadata::builder().code("Odd").build());
        assert_eq!(
            classify(SdkError::service_error(odd, raw(500))).class,
            SendErrorClass::Transient
        );
        let timeout: SdkError<SendEmailError, HttpResponse> = SdkError::timeout_error("slow");
        assert_eq!(classify(timeout).class, SendErrorClass::OutcomeUnknown);
    }

    #[test]
    fn when_a_region_is_named_then_a_client_for_it_is_made_once() {
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, &[] as &[&Rule]);
        let sender = SesSender::from_client(client);
        assert_eq!(
            sender
                .clients
                .regional(None)
                .config()
                .region()
                .map(Region::as_ref),
            Some("us-east-1")
        );
        let eu = sender.clients.regional(Some("eu-west-1"));
        assert_eq!(eu.config().region().map(Region::as_ref), Some("eu-west-1"));
        sender.clients.regional(Some("eu-west-1"));
        sender.clients.regional(Some("us-east-1"));
        assert_eq!(sender.clients.regional.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_role_that_cannot_be_assumed_stops_sending_before_ses_is_called() {
        // No rules: any SES call would fail the test with a different error.
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, &[] as &[&Rule]);
        let sender = SesSender::from_client(client);
        let mut through_role = email();
        through_role.sending.role = Some(hikyaku_core::campaign::SendingRole {
            arn: "arn:aws:iam::111122223333:role/hikyaku-sending".into(),
            external_id: None,
        });
        let err = sender.send(&through_role).await.unwrap_err();
        assert_eq!(err.class, SendErrorClass::Fatal);
        assert_eq!(err.code, "RolesNotEnabled");
        assert!(err.message.contains("hikyaku-sending"), "{err:?}");
    }

    #[tokio::test]
    async fn get_account_becomes_a_snapshot_of_quota_and_health() {
        use aws_sdk_sesv2::operation::get_account::GetAccountOutput;
        use aws_sdk_sesv2::types::SendQuota;
        let rule = mock!(Client::get_account).then_output(|| {
            GetAccountOutput::builder()
                .send_quota(
                    SendQuota::builder()
                        .max_send_rate(14.0)
                        .max24_hour_send(50_000.0)
                        .sent_last24_hours(1_200.0)
                        .build(),
                )
                .sending_enabled(true)
                .enforcement_status("PROBATION")
                .production_access_enabled(true)
                .build()
        });
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&rule]);
        let now = chrono::Utc::now();
        let snapshot = SesAccount::from_client(client)
            .account(&SendingAccount::default(), now)
            .await
            .unwrap();
        assert_eq!(snapshot.max_send_rate, 14.0);
        assert_eq!(snapshot.quota_left(), Some(48_800.0));
        assert_eq!(snapshot.fetched_at, now);
        assert!(snapshot.problem().unwrap().contains("PROBATION"));
    }

    #[tokio::test]
    async fn a_throttled_get_account_may_be_tried_again_and_a_bad_request_may_not() {
        use aws_sdk_sesv2::types::error::BadRequestException as Bad;
        let throttled = mock!(Client::get_account).then_error(|| {
            GetAccountError::TooManyRequestsException(TooManyRequestsException::builder().build())
        });
        let bad = mock!(Client::get_account)
            .then_error(|| GetAccountError::BadRequestException(Bad::builder().build()));
        let client = mock_client!(aws_sdk_sesv2, RuleMode::Sequential, [&throttled, &bad]);
        let account = SesAccount::from_client(client.clone());
        let first = account
            .account(&SendingAccount::default(), chrono::Utc::now())
            .await
            .unwrap_err();
        assert!(first.retryable, "{first}");
        let second = account
            .account(&SendingAccount::default(), chrono::Utc::now())
            .await
            .unwrap_err();
        assert!(!second.retryable, "{second}");
        assert_eq!(second.code, "BadRequestException");
    }
}
