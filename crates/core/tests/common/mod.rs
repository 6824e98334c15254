//! Builders shared by the use-case tests.

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use hikyaku_core::campaign::CampaignDefinition;
use hikyaku_core::contact::{AttrValue, Attributes, Contact};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::ids::ListId;

pub const CAMPAIGN_TOML: &str = r#"
id = "spring"
list = "members"
segment = "mail_allowed == 1"
subject = "Hello {{first_name}}"
html = "<p>Hi {{first_name}}</p><a href=\"{{amazonSESUnsubscribeUrl}}\">unsubscribe</a>"
[from]
address = "news@hikyaku.example"
name = "Hikyaku News"
[ses]
configuration_set = "hikyaku"
contact_list = "members"
topic = "monthly"
"#;

pub fn definition() -> CampaignDefinition {
    CampaignDefinition::from_toml_str(CAMPAIGN_TOML, None).expect("test campaign is valid")
}

pub fn list() -> ListId {
    ListId::parse("members").unwrap()
}

pub fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

/// `n` contacts, `member-0000@example.com` …; every third one does not allow mail.
pub fn contacts(n: usize) -> Vec<Contact> {
    (0..n)
        .map(|i| {
            let mut attributes = Attributes::new();
            attributes.insert("first_name".into(), AttrValue::Str(format!("Member{i}")));
            attributes.insert("mail_allowed".into(), AttrValue::Int((i % 3 != 2) as i64));
            attributes.insert("city".into(), AttrValue::Str("Nara".into()));
            Contact {
                email: email(&format!("member-{i:04}@example.com")),
                attributes,
            }
        })
        .collect()
}

pub fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 24, 9, 0, 0).unwrap()
}
