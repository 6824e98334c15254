//! The SQS event Lambda hands a function, built from received messages.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The SQS system attributes an event source mapping passes on to the function. The pump asks
/// SQS for `All`; whatever else an emulator returns stays out of the event, as on AWS.
pub const EVENT_ATTRIBUTES: [&str; 9] = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
];

/// One message as ReceiveMessage returned it, independent of the SDK's types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: Option<String>,
    pub md5_of_message_attributes: Option<String>,
    /// System attributes (`ApproximateReceiveCount`, `SentTimestamp`, ...).
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: BTreeMap<String, MessageAttribute>,
}

/// A user message attribute; binary values are kept as raw bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageAttribute {
    pub data_type: String,
    pub string_value: Option<String>,
    pub binary_value: Option<Vec<u8>>,
}

impl ReceivedMessage {
    /// `ApproximateReceiveCount`, when SQS sent it.
    pub fn receive_count(&self) -> Option<u32> {
        self.attributes.get("ApproximateReceiveCount")?.parse().ok()
    }
}

impl From<&aws_sdk_sqs::types::Message> for ReceivedMessage {
    fn from(m: &aws_sdk_sqs::types::Message) -> Self {
        Self {
            message_id: m.message_id().unwrap_or_default().to_owned(),
            receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
            body: m.body().unwrap_or_default().to_owned(),
            md5_of_body: m.md5_of_body().map(str::to_owned),
            md5_of_message_attributes: m.md5_of_message_attributes().map(str::to_owned),
            attributes: m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect(),
            message_attributes: m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let attribute = MessageAttribute {
                        data_type: v.data_type().to_owned(),
                        string_value: v.string_value().map(str::to_owned),
                        binary_value: v.binary_value().map(|b| b.as_ref().to_vec()),
                    };
                    (k.clone(), attribute)
                })
                .collect(),
        }
    }
}

/// The `{"Records": [...]}` event for a batch, shaped as the SQS event source mapping sends it
/// (and as `aws_lambda_events::sqs::SqsEvent` reads it).
pub fn sqs_event(messages: &[ReceivedMessage], event_source_arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| record(m, event_source_arn, region))
        .collect();
    json!({ "Records": records })
}

fn record(m: &ReceivedMessage, event_source_arn: &str, region: &str) -> Value {
    let attributes: Map<String, Value> = m
        .attributes
        .iter()
        .filter(|(k, _)| EVENT_ATTRIBUTES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let message_attributes: Map<String, Value> = m
        .message_attributes
        .iter()
        .map(|(k, a)| {
            let mut value = Map::new();
            if let Some(s) = &a.string_value {
                value.insert("stringValue".into(), json!(s));
            }
            if let Some(b) = &a.binary_value {
                value.insert(
                    "binaryValue".into(),
                    json!(aws_smithy_types::base64::encode(b)),
                );
            }
            value.insert("stringListValues".into(), json!([]));
            value.insert("binaryListValues".into(), json!([]));
            value.insert("dataType".into(), json!(a.data_type));
            (k.clone(), Value::Object(value))
        })
        .collect();
    json!({
        "messageId": m.message_id,
        "receiptHandle": m.receipt_handle,
        "body": m.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body,
        "md5OfMessageAttributes": m.md5_of_message_attributes,
        "eventSource": "aws:sqs",
        "eventSourceARN": event_source_arn,
        "awsRegion": region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsEvent;

    fn message() -> ReceivedMessage {
        ReceivedMessage {
            message_id: "059f36b4-87a3-44ab-83d2-661975830a7d".into(),
            receipt_handle: "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a".into(),
            body: r#"{"run":"r1"}"#.into(),
            md5_of_body: Some("e4e68fb7bd0e697a0ae8f1bb342846b3".into()),
            md5_of_message_attributes: None,
            attributes: [
                ("ApproximateReceiveCount", "2"),
                ("SentTimestamp", "1545082649183"),
                ("SenderId", "AIDAIENQZJOLO23YVJ4VO"),
                ("ApproximateFirstReceiveTimestamp", "1545082649185"),
                ("SomethingMotoAdds", "x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            message_attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn record_has_the_aws_field_names() {
        let event = sqs_event(
            &[message()],
            "arn:aws:sqs:us-east-1:123456789012:q",
            "us-east-1",
        );
        let expected = json!({"Records": [{
            "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
            "body": "{\"run\":\"r1\"}",
            "attributes": {
                "ApproximateReceiveCount": "2",
                "SentTimestamp": "1545082649183",
                "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                "ApproximateFirstReceiveTimestamp": "1545082649185"
            },
            "messageAttributes": {},
            "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "md5OfMessageAttributes": null,
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
            "awsRegion": "us-east-1"
        }]});
        assert_eq!(event, expected);
    }

    #[test]
    fn the_runtime_event_type_reads_it() {
        let mut m = message();
        m.message_attributes.insert(
            "kind".into(),
            MessageAttribute {
                data_type: "String".into(),
                string_value: Some("chunk".into()),
                binary_value: None,
            },
        );
        m.message_attributes.insert(
            "blob".into(),
            MessageAttribute {
                data_type: "Binary".into(),
                string_value: None,
                binary_value: Some(b"1100".to_vec()),
            },
        );
        m.md5_of_message_attributes = Some("582c92c5c5b6ac403040a4f3ab3115c9".into());
        let event = sqs_event(&[m.clone(), message()], "arn:q", "eu-west-1");
        let parsed: SqsEvent = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.records.len(), 2);
        let r = &parsed.records[0];
        assert_eq!(r.message_id.as_deref(), Some(m.message_id.as_str()));
        assert_eq!(r.receipt_handle.as_deref(), Some(m.receipt_handle.as_str()));
        assert_eq!(r.body.as_deref(), Some(m.body.as_str()));
        assert_eq!(r.event_source_arn.as_deref(), Some("arn:q"));
        assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(r.aws_region.as_deref(), Some("eu-west-1"));
        assert_eq!(r.attributes["ApproximateReceiveCount"], "2");
        assert!(!r.attributes.contains_key("SomethingMotoAdds"));
        assert_eq!(
            r.message_attributes["kind"].string_value.as_deref(),
            Some("chunk")
        );
        assert_eq!(
            r.message_attributes["kind"].data_type.as_deref(),
            Some("String")
        );
        let blob = r.message_attributes["blob"].binary_value.as_ref().unwrap();
        assert_eq!(blob.as_slice(), b"1100");
        assert_eq!(
            r.md5_of_message_attributes.as_deref(),
            m.md5_of_message_attributes.as_deref()
        );
    }

    #[test]
    fn receive_count_reads_the_attribute() {
        assert_eq!(message().receive_count(), Some(2));
        assert_eq!(ReceivedMessage::default().receive_count(), None);
    }
}
