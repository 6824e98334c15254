//! The notifications SES's configuration-set event publishing sends for one accepted SendEmail,
//! as the SES mailbox simulator addresses trigger them.
//!
//! The emulator accepts every message and never reports what happened to it; real SES publishes
//! `Send`, then what the receiving side did (`Delivery`, `Bounce`, `Complaint`). This module
//! decides those events from the recipient address alone and builds them in the JSON shape SES
//! publishes (`eventType`, `mail` with `tags`, and the type's own object), so that the feedback
//! function sees locally what it will see on AWS.
//!
//! Everything here is pure: the same request, message id and time give the same events. The
//! local account behaves as if its default configuration set published every event type to the
//! feedback topic, so a request without `ConfigurationSetName` gets events too (without the
//! `ses:configuration-set` tag).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::{RecordedSend, record};

/// Domain of the SES mailbox simulator addresses.
pub const SIMULATOR_DOMAIN: &str = "simulator.amazonses.com";
/// The account the events name (`sendingAccountId`, the identity ARN); moto's default account.
pub const ACCOUNT_ID: &str = "123456789012";

/// `ses:source-ip` and `remoteMtaIp`: everything runs on loopback.
const LOOPBACK_IP: &str = "127.0.0.1";
/// `ses:caller-identity`: the IAM identity that called SendEmail.
const CALLER_IDENTITY: &str = "hikyaku-local";
/// `reportingMTA` of deliveries (SES's own outbound MTA).
const SES_MTA: &str = "a0-0.smtp-out.amazonses.com";
const DELIVERY_SMTP_RESPONSE: &str = "250 2.6.0 Message received";
const BOUNCE_DIAGNOSTIC: &str = "smtp; 550 5.1.1 user unknown";
const SUPPRESSED_DIAGNOSTIC: &str = "Amazon SES did not send the message to this address because \
                                     it is on the suppression list for your account.";
const AUTO_REPLY_DIAGNOSTIC: &str = "smtp; 250 2.0.0 automatic reply: out of the office";
const COMPLAINT_USER_AGENT: &str = "Amazon SES Mailbox Simulator";

/// How long after the send each event happens; fixed, so the events are reproducible.
const DELIVERY_AFTER: TimeDelta = TimeDelta::milliseconds(250);
const BOUNCE_AFTER: TimeDelta = TimeDelta::milliseconds(400);
const AUTO_REPLY_AFTER: TimeDelta = TimeDelta::seconds(2);
const COMPLAINT_AFTER: TimeDelta = TimeDelta::seconds(3);

/// What the receiving side does with a message, decided by its recipient address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mailbox {
    /// `success@simulator.amazonses.com`: delivered.
    Success,
    /// `bounce@`: a hard bounce (Permanent/General, 5.1.1).
    Bounce,
    /// `ooto@`: delivered, then an out-of-office auto-reply (Transient/General).
    OutOfOffice,
    /// `complaint@`: delivered, then an abuse complaint.
    Complaint,
    /// `suppressionlist@`: on the account's suppression list (Permanent/OnAccountSuppressionList).
    SuppressionList,
    /// Any other address: the local inbox accepted it, so it counts as delivered.
    Inbox,
}

impl Mailbox {
    /// The mailbox for `address` (a bare address or `Name <address>`). Simulator addresses
    /// match case-insensitively, and `local+label@` counts as `local@`, as on SES.
    pub fn of(address: &str) -> Self {
        let address = bare_address(address).to_ascii_lowercase();
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Self::Inbox;
        };
        if domain != SIMULATOR_DOMAIN {
            return Self::Inbox;
        }
        let local = local.split_once('+').map_or(local, |(base, _label)| base);
        match local {
            "success" => Self::Success,
            "bounce" => Self::Bounce,
            "ooto" => Self::OutOfOffice,
            "complaint" => Self::Complaint,
            "suppressionlist" => Self::SuppressionList,
            _ => Self::Inbox,
        }
    }
}

/// A SendEmail body the simulator cannot build events for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnreadableSend {
    #[error("the SendEmail body is not a JSON object")]
    NotAnObject,
    #[error("the SendEmail request has no FromEmailAddress (raw content is not parsed)")]
    NoSender,
    #[error("the SendEmail request has no Destination addresses (raw content is not parsed)")]
    NoRecipients,
}

/// The event-publishing notifications SES would publish for the accepted SendEmail `request`
/// (its SES v2 JSON body), which SES answered with `message_id` at `sent_at`; `region` is the
/// SES region in the identity ARN. One `Send` for the message, then per recipient what its
/// [`Mailbox`] does, in the order it happens.
pub fn notifications(
    request: &Value,
    message_id: &str,
    sent_at: DateTime<Utc>,
    region: &str,
) -> Result<Vec<Value>, UnreadableSend> {
    if !request.is_object() {
        return Err(UnreadableSend::NotAnObject);
    }
    let send = record(request, message_id.to_owned(), 0);
    let from = send
        .from_email_address
        .as_deref()
        .filter(|from| !from.trim().is_empty())
        .ok_or(UnreadableSend::NoSender)?;
    let recipients: Vec<&str> = send.recipients().collect();
    if recipients.is_empty() {
        return Err(UnreadableSend::NoRecipients);
    }

    let mail = mail(&send, from, sent_at, region);
    let event = |event_type: &str, key: &str, body: Value| json!({ "eventType": event_type, "mail": mail, key: body });
    let feedback_id = |kind: &str| format!("{message_id}-{kind}-000000");
    let delivery = |recipient: &str| {
        event(
            "Delivery",
            "delivery",
            json!({
                "timestamp": timestamp(sent_at + DELIVERY_AFTER),
                "processingTimeMillis": DELIVERY_AFTER.num_milliseconds(),
                "recipients": [recipient],
                "smtpResponse": DELIVERY_SMTP_RESPONSE,
                "reportingMTA": SES_MTA,
                "remoteMtaIp": LOOPBACK_IP,
            }),
        )
    };

    let mut events = vec![event("Send", "send", json!({}))];
    for recipient in recipients {
        let address = bare_address(recipient);
        match Mailbox::of(recipient) {
            Mailbox::Success | Mailbox::Inbox => events.push(delivery(recipient)),
            Mailbox::Bounce => events.push(event(
                "Bounce",
                "bounce",
                json!({
                    "bounceType": "Permanent",
                    "bounceSubType": "General",
                    "bouncedRecipients": [{
                        "emailAddress": address,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": BOUNCE_DIAGNOSTIC,
                    }],
                    "timestamp": timestamp(sent_at + BOUNCE_AFTER),
                    "feedbackId": feedback_id("bounce"),
                    "reportingMTA": format!("dsn; {SES_MTA}"),
                    "remoteMtaIp": LOOPBACK_IP,
                }),
            )),
            Mailbox::OutOfOffice => {
                events.push(delivery(recipient));
                events.push(event(
                    "Bounce",
                    "bounce",
                    json!({
                        "bounceType": "Transient",
                        "bounceSubType": "General",
                        "bouncedRecipients": [{
                            "emailAddress": address,
                            "status": "2.0.0",
                            "diagnosticCode": AUTO_REPLY_DIAGNOSTIC,
                        }],
                        "timestamp": timestamp(sent_at + AUTO_REPLY_AFTER),
                        "feedbackId": feedback_id("auto-reply"),
                        "reportingMTA": format!("dsn; {SES_MTA}"),
                    }),
                ));
            }
            Mailbox::Complaint => {
                events.push(delivery(recipient));
                let at = timestamp(sent_at + COMPLAINT_AFTER);
                events.push(event(
                    "Complaint",
                    "complaint",
                    json!({
                        "complainedRecipients": [{ "emailAddress": address }],
                        "timestamp": at,
                        "feedbackId": feedback_id("complaint"),
                        "complaintSubType": null,
                        "complaintFeedbackType": "abuse",
                        "arrivalDate": at,
                        "userAgent": COMPLAINT_USER_AGENT,
                    }),
                ));
            }
            Mailbox::SuppressionList => events.push(event(
                "Bounce",
                "bounce",
                json!({
                    "bounceType": "Permanent",
                    "bounceSubType": "OnAccountSuppressionList",
                    "bouncedRecipients": [{
                        "emailAddress": address,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": SUPPRESSED_DIAGNOSTIC,
                    }],
                    "timestamp": timestamp(sent_at + BOUNCE_AFTER),
                    "feedbackId": feedback_id("suppressed"),
                    "reportingMTA": "dns; amazonses.com",
                }),
            )),
        }
    }
    Ok(events)
}

/// The `mail` object every event of the message shares.
fn mail(send: &RecordedSend, from: &str, sent_at: DateTime<Utc>, region: &str) -> Value {
    let from_domain = bare_address(from)
        .rsplit_once('@')
        .map_or(from, |(_, domain)| domain)
        .to_ascii_lowercase();

    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(set) = &send.configuration_set_name {
        tags.insert("ses:configuration-set".into(), vec![set.clone()]);
    }
    tags.insert("ses:source-ip".into(), vec![LOOPBACK_IP.into()]);
    tags.insert("ses:from-domain".into(), vec![from_domain.clone()]);
    tags.insert("ses:caller-identity".into(), vec![CALLER_IDENTITY.into()]);
    tags.insert("ses:operation".into(), vec!["SendEmail".into()]);
    for tag in &send.email_tags {
        tags.entry(tag.name.clone())
            .or_default()
            .push(tag.value.clone());
    }

    let mut common_headers = Map::new();
    common_headers.insert("from".into(), json!([from]));
    common_headers.insert("to".into(), json!(send.destination.to_addresses));
    common_headers.insert("date".into(), json!(sent_at.to_rfc2822()));
    common_headers.insert("messageId".into(), json!(send.message_id));
    if let Some(subject) = &send.subject {
        common_headers.insert("subject".into(), json!(subject));
    }

    json!({
        "timestamp": timestamp(sent_at),
        "source": from,
        "sourceArn": format!("arn:aws:ses:{region}:{ACCOUNT_ID}:identity/{from_domain}"),
        "sendingAccountId": ACCOUNT_ID,
        "messageId": send.message_id,
        "destination": send.recipients().collect::<Vec<_>>(),
        "headersTruncated": false,
        "headers": [],
        "commonHeaders": common_headers,
        "tags": tags,
    })
}

/// `2017-08-05T00:41:02.669Z`, as SES writes times.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `address` of `Name <address>`; a bare address unchanged.
fn bare_address(text: &str) -> &str {
    let text = text.trim();
    match (text.rfind('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => text[open + 1..close].trim(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00.123Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn request(to: &str) -> Value {
        json!({
            "FromEmailAddress": "News <news@Example.test>",
            "Destination": {"ToAddresses": [to]},
            "Content": {"Simple": {
                "Subject": {"Data": "Spring sale"},
                "Body": {"Text": {"Data": "t"}}
            }},
            "ConfigurationSetName": "hikyaku",
            "EmailTags": [
                {"Name": "hikyaku-campaign", "Value": "c-1"},
                {"Name": "hikyaku-run", "Value": "r-1"}
            ]
        })
    }

    fn events_for(to: &str) -> Vec<Value> {
        notifications(&request(to), "ses-42", sent_at(), "eu-west-1").unwrap()
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e["eventType"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn addresses_pick_their_mailbox() {
        for (address, mailbox) in [
            ("success@simulator.amazonses.com", Mailbox::Success),
            ("bounce@simulator.amazonses.com", Mailbox::Bounce),
            ("ooto@simulator.amazonses.com", Mailbox::OutOfOffice),
            ("complaint@simulator.amazonses.com", Mailbox::Complaint),
            (
                "suppressionlist@simulator.amazonses.com",
                Mailbox::SuppressionList,
            ),
            ("BOUNCE@Simulator.AmazonSES.com", Mailbox::Bounce),
            ("bounce+run-7@simulator.amazonses.com", Mailbox::Bounce),
            (
                "Reader <Complaint+x@SIMULATOR.amazonses.com>",
                Mailbox::Complaint,
            ),
            ("bounce@example.test", Mailbox::Inbox),
            ("someone@simulator.amazonses.com", Mailbox::Inbox),
            ("not-an-address", Mailbox::Inbox),
        ] {
            assert_eq!(Mailbox::of(address), mailbox, "{address}");
        }
    }

    #[test]
    fn every_event_carries_the_mail_object_with_tags() {
        let events = events_for("reader@example.test");
        assert_eq!(types(&events), ["Send", "Delivery"]);
        let expected_mail = json!({
            "timestamp": "2026-03-01T10:00:00.123Z",
            "source": "News <news@Example.test>",
            "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.test",
            "sendingAccountId": "123456789012",
            "messageId": "ses-42",
            "destination": ["reader@example.test"],
            "headersTruncated": false,
            "headers": [],
            "commonHeaders": {
                "from": ["News <news@Example.test>"],
                "to": ["reader@example.test"],
                "date": "Sun, 1 Mar 2026 10:00:00 +0000",
                "messageId": "ses-42",
                "subject": "Spring sale"
            },
            "tags": {
                "ses:configuration-set": ["hikyaku"],
                "ses:source-ip": ["127.0.0.1"],
                "ses:from-domain": ["example.test"],
                "ses:caller-identity": ["hikyaku-local"],
                "ses:operation": ["SendEmail"],
                "hikyaku-campaign": ["c-1"],
                "hikyaku-run": ["r-1"]
            }
        });
        for event in &events {
            assert_eq!(event["mail"], expected_mail);
        }
        assert_eq!(events[0]["send"], json!({}));
        assert_eq!(
            events[1]["delivery"],
            json!({
                "timestamp": "2026-03-01T10:00:00.373Z",
                "processingTimeMillis": 250,
                "recipients": ["reader@example.test"],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a0-0.smtp-out.amazonses.com",
                "remoteMtaIp": "127.0.0.1"
            })
        );
    }

    #[test]
    fn success_is_delivered() {
        let events = events_for("success@simulator.amazonses.com");
        assert_eq!(types(&events), ["Send", "Delivery"]);
        assert_eq!(
            events[1]["delivery"]["recipients"],
            json!(["success@simulator.amazonses.com"])
        );
    }

    #[test]
    fn bounce_is_a_permanent_general_bounce() {
        let events = events_for("bounce@simulator.amazonses.com");
        assert_eq!(types(&events), ["Send", "Bounce"]);
        let bounce = &events[1]["bounce"];
        assert_eq!(bounce["bounceType"], "Permanent");
        assert_eq!(bounce["bounceSubType"], "General");
        assert_eq!(
            bounce["bouncedRecipients"],
            json!([{
                "emailAddress": "bounce@simulator.amazonses.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"
            }])
        );
        assert_eq!(bounce["timestamp"], "2026-03-01T10:00:00.523Z");
        assert_eq!(bounce["feedbackId"], "ses-42-bounce-000000");
        assert!(bounce["reportingMTA"].is_string());
    }

    #[test]
    fn ooto_is_delivered_then_auto_replies() {
        let events = events_for("ooto@simulator.amazonses.com");
        assert_eq!(types(&events), ["Send", "Delivery", "Bounce"]);
        let bounce = &events[2]["bounce"];
        assert_eq!(bounce["bounceType"], "Transient");
        assert_eq!(bounce["bounceSubType"], "General");
        let recipient = &bounce["bouncedRecipients"][0];
        assert_eq!(recipient["emailAddress"], "ooto@simulator.amazonses.com");
        assert_eq!(recipient["status"], "2.0.0");
        assert!(recipient.get("action").is_none());
    }

    #[test]
    fn complaint_is_delivered_then_complained_about() {
        let events = events_for("complaint@simulator.amazonses.com");
        assert_eq!(types(&events), ["Send", "Delivery", "Complaint"]);
        let complaint = &events[2]["complaint"];
        assert_eq!(
            complaint["complainedRecipients"],
            json!([{"emailAddress": "complaint@simulator.amazonses.com"}])
        );
        assert_eq!(complaint["complaintFeedbackType"], "abuse");
        assert_eq!(complaint["timestamp"], "2026-03-01T10:00:03.123Z");
        assert_eq!(complaint["arrivalDate"], complaint["timestamp"]);
        assert_eq!(complaint["feedbackId"], "ses-42-complaint-000000");
        assert!(complaint["userAgent"].is_string());
    }

    #[test]
    fn suppression_list_bounces_without_delivery() {
        let events = events_for("suppressionlist@simulator.amazonses.com");
        assert_eq!(types(&events), ["Send", "Bounce"]);
        let bounce = &events[1]["bounce"];
        assert_eq!(bounce["bounceType"], "Permanent");
        assert_eq!(bounce["bounceSubType"], "OnAccountSuppressionList");
        assert_eq!(
            bounce["bouncedRecipients"][0]["diagnosticCode"],
            "Amazon SES did not send the message to this address because it is on the \
             suppression list for your account."
        );
    }

    #[test]
    fn labels_and_case_keep_the_address_as_sent() {
        let events = events_for("Bounce+Run-7@Simulator.AmazonSES.com");
        assert_eq!(types(&events), ["Send", "Bounce"]);
        assert_eq!(
            events[1]["bounce"]["bouncedRecipients"][0]["emailAddress"],
            "Bounce+Run-7@Simulator.AmazonSES.com"
        );
        assert_eq!(
            events[1]["mail"]["destination"],
            json!(["Bounce+Run-7@Simulator.AmazonSES.com"])
        );
        let events = events_for("COMPLAINT@simulator.amazonses.com");
        assert_eq!(types(&events), ["Send", "Delivery", "Complaint"]);
    }

    #[test]
    fn a_request_without_subject_or_configuration_set_still_has_events() {
        let request = json!({
            "FromEmailAddress": "news@example.test",
            "Destination": {"ToAddresses": ["a@example.test"]},
            "Content": {"Template": {"TemplateName": "t", "TemplateData": "{}"}}
        });
        let events = notifications(&request, "m", sent_at(), "us-east-1").unwrap();
        assert_eq!(types(&events), ["Send", "Delivery"]);
        let mail = &events[0]["mail"];
        assert!(mail["commonHeaders"].get("subject").is_none());
        assert!(mail["tags"].get("ses:configuration-set").is_none());
        assert_eq!(mail["tags"]["ses:operation"], json!(["SendEmail"]));
    }

    #[test]
    fn each_recipient_gets_its_own_outcome() {
        let request = json!({
            "FromEmailAddress": "news@example.test",
            "Destination": {
                "ToAddresses": ["bounce@simulator.amazonses.com"],
                "CcAddresses": ["a@example.test"]
            }
        });
        let events = notifications(&request, "m", sent_at(), "us-east-1").unwrap();
        assert_eq!(types(&events), ["Send", "Bounce", "Delivery"]);
        assert_eq!(
            events[0]["mail"]["destination"],
            json!(["bounce@simulator.amazonses.com", "a@example.test"])
        );
        assert_eq!(
            events[0]["mail"]["commonHeaders"]["to"],
            json!(["bounce@simulator.amazonses.com"])
        );
    }

    #[test]
    fn unreadable_requests_have_no_events() {
        let at = sent_at();
        assert_eq!(
            notifications(&Value::Null, "m", at, "us-east-1"),
            Err(UnreadableSend::NotAnObject)
        );
        let no_from = json!({"Destination": {"ToAddresses": ["a@example.test"]}});
        assert_eq!(
            notifications(&no_from, "m", at, "us-east-1"),
            Err(UnreadableSend::NoSender)
        );
        let no_to = json!({"FromEmailAddress": "news@example.test", "Content": {"Raw": {}}});
        assert_eq!(
            notifications(&no_to, "m", at, "us-east-1"),
            Err(UnreadableSend::NoRecipients)
        );
    }

    #[test]
    fn repeated_tag_names_keep_every_value() {
        let mut request = request("a@example.test");
        request["EmailTags"] = json!([
            {"Name": "k", "Value": "1"},
            {"Name": "k", "Value": "2"}
        ]);
        let events = notifications(&request, "m", sent_at(), "us-east-1").unwrap();
        assert_eq!(events[0]["mail"]["tags"]["k"], json!(["1", "2"]));
    }
}
