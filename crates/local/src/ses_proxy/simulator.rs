//! Publishes the [`mailbox`](super::mailbox) notifications of an accepted SendEmail to the SNS
//! feedback topic, as SES's event destination does; from there the feedback function receives
//! them (through `hikyaku-local sns-pump` locally).

use aws_config::SdkConfig;
use aws_smithy_types::error::display::DisplayErrorContext;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::mailbox;

/// The SNS side of the mailbox simulator. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MailboxSimulator {
    sns: aws_sdk_sns::Client,
    topic_arn: String,
    region: String,
    /// Whether `Send` events are published too. Off by default, as in the configuration set
    /// hikyaku deploys: a `Send` tells the feedback function nothing the ledger does not know,
    /// and would double the SNS deliveries and invocations per email.
    send_events: bool,
}

/// What publishing the notifications of one message came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Notifications SNS accepted.
    pub published: u64,
    /// Notifications whose Publish call failed (they are not retried further).
    pub failed: u64,
    /// The request body could not be read: nothing was published.
    pub unreadable: bool,
}

impl MailboxSimulator {
    /// An SNS client from the SDK's standard configuration (`AWS_ENDPOINT_URL` → moto); the
    /// region also goes into the identity ARN of the events.
    pub fn new(sdk: &SdkConfig, topic_arn: impl Into<String>) -> Self {
        Self::from_client(
            aws_sdk_sns::Client::new(sdk),
            topic_arn,
            crate::event_source::region(sdk),
        )
    }

    pub fn from_client(
        sns: aws_sdk_sns::Client,
        topic_arn: impl Into<String>,
        region: impl Into<String>,
    ) -> Self {
        Self {
            sns,
            topic_arn: topic_arn.into(),
            region: region.into(),
            send_events: false,
        }
    }

    /// Publishes `Send` events as well (a configuration set whose destination has them).
    pub fn with_send_events(mut self, send_events: bool) -> Self {
        self.send_events = send_events;
        self
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    /// Builds the notifications for `request`, accepted as `message_id` at `sent_at`, and
    /// publishes each, in order, as a JSON string. Failures are logged and counted, never
    /// returned: a lost notification must not fail the SendEmail that caused it.
    pub async fn publish(
        &self,
        request: &Value,
        message_id: &str,
        sent_at: DateTime<Utc>,
    ) -> Published {
        let events = match mailbox::notifications(request, message_id, sent_at, &self.region) {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(message_id, %error, "no SES events for this SendEmail");
                return Published {
                    unreadable: true,
                    ..Published::default()
                };
            }
        };
        let mut outcome = Published::default();
        for event in events {
            let event_type = event["eventType"].as_str().unwrap_or_default().to_owned();
            if event_type == "Send" && !self.send_events {
                continue;
            }
            let result = self
                .sns
                .publish()
                .topic_arn(&self.topic_arn)
                .message(event.to_string())
                .send()
                .await;
            match result {
                Ok(out) => {
                    outcome.published += 1;
                    tracing::debug!(
                        message_id,
                        event_type,
                        sns_message_id = out.message_id().unwrap_or_default(),
                        "SES event published"
                    );
                }
                Err(e) => {
                    outcome.failed += 1;
                    tracing::warn!(
                        message_id,
                        event_type,
                        topic = %self.topic_arn,
                        error = %DisplayErrorContext(e),
                        "publishing an SES event failed; the feedback function will not see it"
                    );
                }
            }
        }
        outcome
    }
}
