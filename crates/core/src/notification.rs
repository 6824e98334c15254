//! SES notifications as they arrive over SNS, in both formats: identity notifications
//! (`notificationType`, no tags) and configuration-set events (`eventType`, with `mail.tags`).
//!
//! Reading is lenient on purpose: SES reserves the right to add fields and event types, and a
//! notification that cannot be read must be acknowledged with a reason, never retried forever.
//! Only what a decision needs is required; everything else is optional.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::ids::{CampaignId, RunId, RunRef};
use crate::send::{CAMPAIGN_TAG, RUN_TAG};

/// The kind of an SES event, by the names SES writes (`Rendering Failure` has its space).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Send,
    Reject,
    Bounce,
    Complaint,
    Delivery,
    Open,
    Click,
    RenderingFailure,
    DeliveryDelay,
    Subscription,
    /// A type this version does not know: logged and acknowledged.
    Other(String),
}

impl EventKind {
    pub fn from_name(name: &str) -> EventKind {
        match name {
            "Send" => EventKind::Send,
            "Reject" => EventKind::Reject,
            "Bounce" => EventKind::Bounce,
            "Complaint" => EventKind::Complaint,
            "Delivery" => EventKind::Delivery,
            "Open" => EventKind::Open,
            "Click" => EventKind::Click,
            "Rendering Failure" => EventKind::RenderingFailure,
            "DeliveryDelay" => EventKind::DeliveryDelay,
            "Subscription" => EventKind::Subscription,
            other => EventKind::Other(other.to_owned()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            EventKind::Send => "Send",
            EventKind::Reject => "Reject",
            EventKind::Bounce => "Bounce",
            EventKind::Complaint => "Complaint",
            EventKind::Delivery => "Delivery",
            EventKind::Open => "Open",
            EventKind::Click => "Click",
            EventKind::RenderingFailure => "Rendering Failure",
            EventKind::DeliveryDelay => "DeliveryDelay",
            EventKind::Subscription => "Subscription",
            EventKind::Other(name) => name,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which SES mechanism produced the notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Configuration-set event publishing: `eventType`, tags present.
    EventPublishing,
    /// Identity feedback notifications: `notificationType`, no tags.
    IdentityNotification,
}

/// The `mail` object every notification carries.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Mail {
    pub timestamp: Option<String>,
    pub message_id: Option<String>,
    pub source: Option<String>,
    pub destination: Vec<String>,
    /// Tag name → values; only in event publishing.
    pub tags: HashMap<String, Vec<String>>,
}

impl Mail {
    fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct BouncedRecipient {
    pub email_address: String,
    pub action: Option<String>,
    pub status: Option<String>,
    pub diagnostic_code: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Bounce {
    pub bounce_type: String,
    pub bounce_sub_type: String,
    pub bounced_recipients: Vec<BouncedRecipient>,
    pub timestamp: Option<String>,
    pub feedback_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AddressOnly {
    pub email_address: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Complaint {
    pub complained_recipients: Vec<AddressOnly>,
    pub complaint_feedback_type: Option<String>,
    pub complaint_sub_type: Option<String>,
    pub timestamp: Option<String>,
    pub feedback_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Delivery {
    pub recipients: Vec<String>,
    pub timestamp: Option<String>,
    pub smtp_response: Option<String>,
}

/// `open` and `click` objects.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Engagement {
    pub timestamp: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// Clicks only.
    pub link: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Reject {
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RenderingFailure {
    pub template_name: Option<String>,
    pub error_message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DelayedRecipient {
    pub email_address: String,
    pub status: Option<String>,
    pub diagnostic_code: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DeliveryDelay {
    pub delay_type: Option<String>,
    pub delayed_recipients: Vec<DelayedRecipient>,
    pub timestamp: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicStatus {
    pub topic_name: String,
    /// `OptIn` or `OptOut` in events (the API spells them `OPT_IN`, `OPT_OUT`).
    pub subscription_status: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicPreferences {
    pub unsubscribe_all: bool,
    pub topic_subscription_status: Vec<TopicStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Subscription {
    pub contact_list: Option<String>,
    pub timestamp: Option<String>,
    pub source: Option<String>,
    pub new_topic_preferences: Option<TopicPreferences>,
}

/// The type-specific part of a notification.
#[derive(Clone, Debug, PartialEq)]
pub enum Details {
    Send,
    Reject(Reject),
    Bounce(Bounce),
    Complaint(Complaint),
    Delivery(Delivery),
    Open(Engagement),
    Click(Engagement),
    RenderingFailure(RenderingFailure),
    DeliveryDelay(DeliveryDelay),
    Subscription(Subscription),
    /// An event type this version does not know.
    Unknown(String),
}

/// One SES notification, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub format: Format,
    pub kind: EventKind,
    pub mail: Mail,
    pub details: Details,
}

/// Why a message is not a notification hikyaku can use. Each names what is wrong.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum NotificationError {
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    #[error(
        "the message is JSON but not an SES notification: it has neither `eventType` nor `notificationType`"
    )]
    NotSes,
    #[error("the {kind} notification has no `{part}` object")]
    MissingPart { kind: String, part: &'static str },
    #[error("the `{part}` object of the {kind} notification is unreadable: {reason}")]
    BadPart {
        kind: String,
        part: &'static str,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    event_type: Option<String>,
    notification_type: Option<String>,
    #[serde(default)]
    mail: Option<serde_json::Value>,
}

impl Notification {
    /// Reads an SNS `Message` string.
    pub fn parse(message: &str) -> Result<Notification, NotificationError> {
        let mut value: serde_json::Value = serde_json::from_str(message)
            .map_err(|err| NotificationError::NotJson(err.to_string()))?;
        let head: Head =
            serde_json::from_value(value.clone()).map_err(|_| NotificationError::NotSes)?;
        let (format, name) = match (head.event_type, head.notification_type) {
            (Some(name), _) => (Format::EventPublishing, name),
            (None, Some(name)) => (Format::IdentityNotification, name),
            (None, None) => return Err(NotificationError::NotSes),
        };
        let kind = EventKind::from_name(&name);
        let mail = match head.mail {
            Some(mail) => {
                serde_json::from_value(mail).map_err(|err| NotificationError::BadPart {
                    kind: name.clone(),
                    part: "mail",
                    reason: err.to_string(),
                })?
            }
            None => {
                return Err(NotificationError::MissingPart {
                    kind: name,
                    part: "mail",
                });
            }
        };
        let details = match &kind {
            EventKind::Send => Details::Send,
            EventKind::Reject => Details::Reject(part(&mut value, &name, "reject")?),
            EventKind::Bounce => Details::Bounce(part(&mut value, &name, "bounce")?),
            EventKind::Complaint => Details::Complaint(part(&mut value, &name, "complaint")?),
            EventKind::Delivery => Details::Delivery(part(&mut value, &name, "delivery")?),
            EventKind::Open => Details::Open(part(&mut value, &name, "open")?),
            EventKind::Click => Details::Click(part(&mut value, &name, "click")?),
            EventKind::RenderingFailure => {
                Details::RenderingFailure(part(&mut value, &name, "failure")?)
            }
            EventKind::DeliveryDelay => {
                Details::DeliveryDelay(part(&mut value, &name, "deliveryDelay")?)
            }
            EventKind::Subscription => {
                Details::Subscription(part(&mut value, &name, "subscription")?)
            }
            EventKind::Other(other) => Details::Unknown(other.clone()),
        };
        Ok(Notification {
            format,
            kind,
            mail,
            details,
        })
    }

    /// The run the sender tagged the message with, when the tags are there and readable.
    pub fn tagged_run(&self) -> Option<RunRef> {
        let campaign = CampaignId::parse(self.mail.tag(CAMPAIGN_TAG)?).ok()?;
        let run = RunId::parse(self.mail.tag(RUN_TAG)?).ok()?;
        Some(RunRef::new(campaign, run))
    }

    /// The SES message id, when SES sent one.
    pub fn ses_message_id(&self) -> Option<&str> {
        self.mail.message_id.as_deref().filter(|id| !id.is_empty())
    }

    /// When the event happened: the type-specific timestamp, else the mail's, else `fallback`.
    pub fn occurred_at(&self, fallback: DateTime<Utc>) -> DateTime<Utc> {
        let specific = match &self.details {
            Details::Bounce(b) => b.timestamp.as_deref(),
            Details::Complaint(c) => c.timestamp.as_deref(),
            Details::Delivery(d) => d.timestamp.as_deref(),
            Details::Open(e) | Details::Click(e) => e.timestamp.as_deref(),
            Details::DeliveryDelay(d) => d.timestamp.as_deref(),
            Details::Subscription(s) => s.timestamp.as_deref(),
            _ => None,
        };
        specific
            .or(self.mail.timestamp.as_deref())
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|at| at.with_timezone(&Utc))
            .unwrap_or(fallback)
    }
}

fn part<T: for<'de> Deserialize<'de>>(
    value: &mut serde_json::Value,
    kind: &str,
    name: &'static str,
) -> Result<T, NotificationError> {
    match value.get_mut(name).map(serde_json::Value::take) {
        Some(serde_json::Value::Null) | None => Err(NotificationError::MissingPart {
            kind: kind.to_owned(),
            part: name,
        }),
        Some(part) => serde_json::from_value(part).map_err(|err| NotificationError::BadPart {
            kind: kind.to_owned(),
            part: name,
            reason: err.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &str = r#""mail":{"messageId":"m-1","destination":["a@example.com"],"tags":{"hikyaku-campaign":["news"],"hikyaku-run":["20261224T090000Z"],"ses:configuration-set":["hikyaku"]},"timestamp":"2026-12-24T09:00:01.000Z","unknownField":42}"#;

    fn event(body: &str) -> String {
        format!("{{{body},{MAIL}}}")
    }

    #[test]
    fn an_event_publishing_bounce_is_read_with_its_run() {
        let n = Notification::parse(&event(
            r#""eventType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"a@example.com","diagnosticCode":"smtp; 550"}],"timestamp":"2026-12-24T09:00:05.000Z","brandNew":true}"#,
        ))
        .unwrap();
        assert_eq!(n.format, Format::EventPublishing);
        assert_eq!(n.kind, EventKind::Bounce);
        assert_eq!(n.tagged_run().unwrap().key(), "news#20261224T090000Z");
        assert_eq!(n.ses_message_id(), Some("m-1"));
        let Details::Bounce(bounce) = &n.details else {
            panic!("{n:?}")
        };
        assert_eq!(bounce.bounced_recipients[0].email_address, "a@example.com");
        assert_eq!(
            n.occurred_at(Utc::now()).to_rfc3339(),
            "2026-12-24T09:00:05+00:00"
        );
    }

    #[test]
    fn an_identity_notification_is_read_without_tags() {
        let n = Notification::parse(
            r#"{"notificationType":"Delivery","delivery":{"recipients":["a@example.com"]},"mail":{"messageId":"m-2","destination":["a@example.com"]}}"#,
        )
        .unwrap();
        assert_eq!(n.format, Format::IdentityNotification);
        assert_eq!(n.kind, EventKind::Delivery);
        assert_eq!(n.tagged_run(), None);
    }

    #[test]
    fn rendering_failure_is_named_with_its_space() {
        let n = Notification::parse(&event(
            r#""eventType":"Rendering Failure","failure":{"templateName":"t","errorMessage":"missing var"}"#,
        ))
        .unwrap();
        assert_eq!(n.kind, EventKind::RenderingFailure);
        assert_eq!(n.kind.name(), "Rendering Failure");
    }

    #[test]
    fn an_unknown_event_type_is_read_not_refused() {
        let n = Notification::parse(&event(r#""eventType":"Quarantine","quarantine":{}"#)).unwrap();
        assert_eq!(n.kind, EventKind::Other("Quarantine".into()));
        assert_eq!(n.details, Details::Unknown("Quarantine".into()));
    }

    #[test]
    fn unusable_messages_say_what_is_wrong() {
        assert!(matches!(
            Notification::parse("{not json"),
            Err(NotificationError::NotJson(_))
        ));
        assert_eq!(
            Notification::parse(r#"{"hello":"world"}"#),
            Err(NotificationError::NotSes)
        );
        assert_eq!(
            Notification::parse(&event(r#""eventType":"Bounce""#)),
            Err(NotificationError::MissingPart {
                kind: "Bounce".into(),
                part: "bounce"
            })
        );
        let bad = Notification::parse(&event(
            r#""eventType":"Bounce","bounce":{"bouncedRecipients":"x"}"#,
        ))
        .unwrap_err();
        assert!(bad.to_string().contains("`bounce` object"), "{bad}");
        assert_eq!(
            Notification::parse(r#"{"eventType":"Send","send":{}}"#),
            Err(NotificationError::MissingPart {
                kind: "Send".into(),
                part: "mail"
            })
        );
    }

    #[test]
    fn unreadable_tags_mean_no_run_not_an_error() {
        let n = Notification::parse(
            r#"{"eventType":"Send","send":{},"mail":{"messageId":"m","tags":{"hikyaku-campaign":["bad id!"],"hikyaku-run":["x"]}}}"#,
        )
        .unwrap();
        assert_eq!(n.tagged_run(), None);
    }
}
