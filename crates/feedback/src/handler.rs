//! Reads SNS records carrying SES notifications in either format: identity notifications
//! (`notificationType`) and configuration-set events (`eventType`). Anything unreadable is
//! logged and acknowledged, so SNS never retries a message that cannot succeed.

use aws_lambda_events::event::sns::SnsEvent;
use lambda_runtime::{Error, LambdaEvent};
use serde::Deserialize;

/// The part of an SES notification needed to tell what it is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotificationHead {
    #[serde(alias = "notificationType")]
    pub event_type: String,
    pub mail: Option<MailHead>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MailHead {
    pub message_id: Option<String>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Reading {
    Notification {
        event_type: String,
        ses_message_id: Option<String>,
    },
    Unreadable(String),
}

pub(crate) fn read(message: &str) -> Reading {
    match serde_json::from_str::<NotificationHead>(message) {
        Ok(head) => Reading::Notification {
            event_type: head.event_type,
            ses_message_id: head.mail.and_then(|m| m.message_id),
        },
        Err(err) => Reading::Unreadable(format!("not an SES notification: {err}")),
    }
}

pub(crate) async fn function_handler(event: LambdaEvent<SnsEvent>) -> Result<(), Error> {
    for record in &event.payload.records {
        let sns_id = &record.sns.message_id;
        match read(&record.sns.message) {
            Reading::Notification {
                event_type,
                ses_message_id,
            } => {
                tracing::info!(sns_message_id = %sns_id, event_type = %event_type, ses_message_id = ?ses_message_id, "SES notification received");
            }
            Reading::Unreadable(reason) => {
                tracing::error!(sns_message_id = %sns_id, reason = %reason, "notification acknowledged unread");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(fixture: &str) -> Vec<String> {
        let event: SnsEvent = serde_json::from_str(fixture).expect("fixture is an SNS event");
        event.records.into_iter().map(|r| r.sns.message).collect()
    }

    #[test]
    fn both_notification_formats_are_read() {
        let event_publishing = messages(include_str!("../../../events/feedback/bounce-event.json"));
        assert_eq!(
            read(&event_publishing[0]),
            Reading::Notification {
                event_type: "Bounce".into(),
                ses_message_id: Some("0100019a-bounce-example-000000".into())
            }
        );
        let identity = messages(include_str!(
            "../../../events/feedback/delivery-notification.json"
        ));
        assert!(matches!(
            read(&identity[0]),
            Reading::Notification { ref event_type, .. } if event_type == "Delivery"
        ));
    }

    #[test]
    fn an_unreadable_message_is_named_not_fatal() {
        let garbage = messages(include_str!("../../../events/feedback/malformed.json"));
        assert!(
            matches!(read(&garbage[0]), Reading::Unreadable(ref why) if why.contains("not an SES notification"))
        );
    }

    #[tokio::test]
    async fn the_handler_acknowledges_every_record() {
        let fixture = include_str!("../../../events/feedback/malformed.json");
        let event: SnsEvent = serde_json::from_str(fixture).unwrap();
        let result = function_handler(LambdaEvent::new(event, Default::default())).await;
        assert!(result.is_ok());
    }
}
