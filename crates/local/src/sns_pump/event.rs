//! The Lambda SNS event, built from the envelope SNS writes into a subscribed SQS queue.
//!
//! The two shapes carry the same fields under slightly different names: the queue gets
//! `SigningCertURL` / `UnsubscribeURL` and leaves out an absent `Subject` and
//! `MessageAttributes`; the function gets `SigningCertUrl` / `UnsubscribeUrl`, `Subject: null`
//! and `MessageAttributes: {}`, inside a record that names the subscription.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// An SQS body that is not an SNS notification envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not JSON, or lacks a field, or a field has the wrong type.
    #[error("the message body is not an SNS envelope: {0}")]
    Invalid(String),
    #[error("the SNS envelope is a {0}, not a Notification")]
    NotANotification(String),
}

/// Names what is wrong by position or field name, never by content: bodies stay out of logs
/// (serde's type errors quote the value).
impl From<serde_json::Error> for EnvelopeError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let at = format!("line {}, column {}", e.line(), e.column());
        let reason = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => format!("not JSON ({at})"),
            Category::Data if e.to_string().starts_with("missing field") => e
                .to_string()
                .split(" at line")
                .next()
                .unwrap_or_default()
                .to_owned(),
            Category::Data => format!("a field has an unexpected type ({at})"),
        };
        Self::Invalid(reason)
    }
}

/// The SNS-to-SQS envelope, as SNS (and moto) write it without raw message delivery.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    message_id: String,
    topic_arn: String,
    #[serde(default)]
    subject: Option<String>,
    message: String,
    timestamp: String,
    #[serde(default)]
    signature_version: String,
    #[serde(default)]
    signature: String,
    #[serde(default, rename = "SigningCertURL")]
    signing_cert_url: String,
    #[serde(default, rename = "UnsubscribeURL")]
    unsubscribe_url: String,
    #[serde(default)]
    message_attributes: Option<Map<String, Value>>,
}

/// The `{"Records": [one record]}` event SNS hands a subscribed function for the envelope in
/// `body`; `subscription_id` is the last part of the subscription ARN
/// (`<topic arn>:<subscription_id>`).
pub fn sns_event(body: &str, subscription_id: &str) -> Result<Value, EnvelopeError> {
    let envelope: Envelope = serde_json::from_str(body)?;
    if envelope.kind != "Notification" {
        return Err(EnvelopeError::NotANotification(envelope.kind));
    }
    let subscription_arn = format!("{}:{subscription_id}", envelope.topic_arn);
    Ok(json!({ "Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": subscription_arn,
        "Sns": {
            "Type": envelope.kind,
            "MessageId": envelope.message_id,
            "TopicArn": envelope.topic_arn,
            "Subject": envelope.subject,
            "Message": envelope.message,
            "Timestamp": envelope.timestamp,
            "SignatureVersion": envelope.signature_version,
            "Signature": envelope.signature,
            "SigningCertUrl": envelope.signing_cert_url,
            "UnsubscribeUrl": envelope.unsubscribe_url,
            "MessageAttributes": envelope.message_attributes.unwrap_or_default(),
        },
    }]}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sns::SnsEvent;

    /// What moto 5.2.5 writes into the queue (pretty-printed, keys sorted, no Subject).
    const MOTO_ENVELOPE: &str = r#"{
  "Message": "{\"eventType\":\"Bounce\",\"mail\":{\"messageId\":\"ses-1\"}}",
  "MessageId": "8f5e0f2c-5b8e-4e57-9d1c-0b1d6c3e2a10",
  "Signature": "c2lnbmF0dXJl",
  "SignatureVersion": "2",
  "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
  "Timestamp": "2026-03-01T10:00:00.523Z",
  "TopicArn": "arn:aws:sns:us-east-1:123456789012:hikyaku-feedback",
  "Type": "Notification",
  "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x"
}"#;

    #[test]
    fn the_envelope_becomes_one_lambda_record() {
        let event = sns_event(MOTO_ENVELOPE, "0b7a2c9e-1111-4222-8333-444455556666").unwrap();
        let expected = json!({"Records": [{
            "EventSource": "aws:sns",
            "EventVersion": "1.0",
            "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:hikyaku-feedback:0b7a2c9e-1111-4222-8333-444455556666",
            "Sns": {
                "Type": "Notification",
                "MessageId": "8f5e0f2c-5b8e-4e57-9d1c-0b1d6c3e2a10",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:hikyaku-feedback",
                "Subject": null,
                "Message": "{\"eventType\":\"Bounce\",\"mail\":{\"messageId\":\"ses-1\"}}",
                "Timestamp": "2026-03-01T10:00:00.523Z",
                "SignatureVersion": "2",
                "Signature": "c2lnbmF0dXJl",
                "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
                "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
                "MessageAttributes": {}
            }
        }]});
        assert_eq!(event, expected);
    }

    #[test]
    fn the_runtime_event_type_reads_it() {
        let mut envelope: Value = serde_json::from_str(MOTO_ENVELOPE).unwrap();
        envelope["Subject"] = json!("Amazon SES Email Event Notification");
        envelope["MessageAttributes"] = json!({"kind": {"Type": "String", "Value": "ses"}});
        let event = sns_event(&envelope.to_string(), "sub-1").unwrap();
        let parsed: SnsEvent = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.records.len(), 1);
        let record = &parsed.records[0];
        assert_eq!(record.event_source, "aws:sns");
        assert_eq!(record.event_version, "1.0");
        assert_eq!(
            record.event_subscription_arn,
            "arn:aws:sns:us-east-1:123456789012:hikyaku-feedback:sub-1"
        );
        let sns = &record.sns;
        assert_eq!(sns.sns_message_type, "Notification");
        assert_eq!(sns.message_id, "8f5e0f2c-5b8e-4e57-9d1c-0b1d6c3e2a10");
        assert_eq!(
            sns.subject.as_deref(),
            Some("Amazon SES Email Event Notification")
        );
        assert_eq!(sns.timestamp.to_rfc3339(), "2026-03-01T10:00:00.523+00:00");
        assert_eq!(sns.signature_version, "2");
        assert!(sns.signing_cert_url.ends_with(".pem"));
        assert!(sns.unsubscribe_url.contains("Action=Unsubscribe"));
        assert_eq!(sns.message_attributes["kind"].value, "ses");
        let message: Value = serde_json::from_str(&sns.message).unwrap();
        assert_eq!(message["eventType"], "Bounce");

        let plain: SnsEvent =
            serde_json::from_value(sns_event(MOTO_ENVELOPE, "sub-1").unwrap()).unwrap();
        assert_eq!(plain.records[0].sns.subject, None);
        assert!(plain.records[0].sns.message_attributes.is_empty());
    }

    #[test]
    fn what_is_not_a_notification_is_refused() {
        let reason = |body: &str| match sns_event(body, "s") {
            Err(EnvelopeError::Invalid(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason("not json"), "not JSON (line 1, column 2)");
        assert_eq!(
            reason(r#"{"Type": "Notification"}"#),
            "missing field `MessageId`"
        );
        let mut secret: Value = serde_json::from_str(MOTO_ENVELOPE).unwrap();
        secret["Message"] = json!(["someone@example.test"]);
        assert!(!reason(&secret.to_string()).contains("someone"));
        let mut confirmation: Value = serde_json::from_str(MOTO_ENVELOPE).unwrap();
        confirmation["Type"] = json!("SubscriptionConfirmation");
        assert!(matches!(
            sns_event(&confirmation.to_string(), "s"),
            Err(EnvelopeError::NotANotification(kind)) if kind == "SubscriptionConfirmation"
        ));
    }
}
