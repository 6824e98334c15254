//! Email addresses as hikyaku accepts them: one bare address, normalised, safe to put in a header.
//!
//! What is accepted, and why:
//! - Surrounding whitespace is trimmed; anything else that is not part of a bare `local@domain`
//!   is refused with the reason: display names (`Name <a@b>`), angle brackets, quotes, lists
//!   (`,` `;`), whitespace inside, control characters (with their position).
//! - The local part is an RFC 5322 dot-atom of ASCII characters, lower-cased. RFC 5321 lets a
//!   server treat `John` and `john` as two mailboxes, but mailbox providers do not, and one
//!   spelling per person is what makes "once" and consent hold: a list that writes `Aiko@` and
//!   `aiko@` gets one email, and a suppression of either spelling covers both. Non-ASCII
//!   local parts (SMTPUTF8, RFC 6531) are refused: SES does not support SMTPUTF8 and wants 7-bit
//!   addresses, so such an address could not be sent to anyway.
//! - The domain is converted with IDNA (UTS 46) to its ASCII form, lower-cased, with punycode for
//!   internationalised labels (`bücher.example` → `xn--bcher-kva.example`), which SES requires.
//!   It must be a host name: at least two labels of letters, digits and inner hyphens, 1 to 63
//!   octets each. Address literals (`[192.0.2.1]`) and bare IPv4 addresses are refused.
//! - RFC 5321 limits: local part ≤ 64 octets, domain ≤ 255 octets, whole address ≤ 254 octets.

use std::fmt;
use std::str::FromStr;

use idna::AsciiDenyList;
use idna::uts46::{DnsLength, Hyphens, Uts46};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// RFC 5321 §4.5.3.1.2.
pub const MAX_DOMAIN_LEN: usize = 255;
/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets including its angle brackets.
pub const MAX_ADDRESS_LEN: usize = 254;
/// RFC 1035 §2.3.4.
pub const MAX_LABEL_LEN: usize = 63;

/// A validated, normalised email address: ASCII only, domain lower-case and in punycode.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    address: String,
    /// Byte index of the '@' in `address`.
    at: usize,
}

/// Why a string is not an address hikyaku accepts.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum EmailError {
    #[error("the address is empty")]
    Empty,
    #[error(
        "the address contains a control character ({code}) at position {position}; line breaks and other control characters are never allowed"
    )]
    ControlCharacter { position: usize, code: String },
    #[error(
        "'{input}' looks like a display name with an address (`Name <address>`); give the bare address only"
    )]
    DisplayName { input: String },
    #[error("the address contains quotes; quoted local parts are not accepted")]
    Quoted,
    #[error("the address contains '{found}'; give exactly one address")]
    MultipleAddresses { found: char },
    #[error("the address contains whitespace at position {position}")]
    Whitespace { position: usize },
    #[error("the address has no '@'")]
    MissingAt,
    #[error("the address has more than one '@'")]
    MultipleAt,
    #[error("the part before '@' is empty")]
    EmptyLocalPart,
    #[error("the part before '@' is {len} octets long; at most {MAX_LOCAL_PART_LEN} are allowed")]
    LocalPartTooLong { len: usize },
    #[error(
        "the part before '@' contains the non-ASCII character '{found}'; SES only sends to ASCII local parts (no SMTPUTF8)"
    )]
    NonAsciiLocalPart { found: char },
    #[error("the part before '@' starts or ends with a dot, or has two dots in a row")]
    LocalPartDots,
    #[error("the part before '@' contains '{found}', which is not allowed in an address")]
    InvalidLocalPartCharacter { found: char },
    #[error("the domain is empty")]
    EmptyDomain,
    #[error("the domain is an address literal ('{domain}'); give a domain name, not an IP address")]
    IpLiteral { domain: String },
    #[error("the domain '{domain}' is an IP address; give a domain name")]
    IpAddress { domain: String },
    #[error("the domain '{domain}' has an empty label (a leading, trailing or doubled dot)")]
    EmptyDomainLabel { domain: String },
    #[error("the domain '{domain}' is not a valid domain name: {reason}")]
    InvalidDomain { domain: String, reason: String },
    #[error("the domain label '{label}' is {len} octets long; at most {MAX_LABEL_LEN} are allowed")]
    DomainLabelTooLong { label: String, len: usize },
    #[error("the domain is {len} octets long; at most {MAX_DOMAIN_LEN} are allowed")]
    DomainTooLong { len: usize },
    #[error(
        "the domain '{domain}' has a single label; a full domain name such as example.com is needed"
    )]
    SingleLabelDomain { domain: String },
    #[error("the address is {len} octets long; at most {MAX_ADDRESS_LEN} are allowed")]
    TooLong { len: usize },
}

/// RFC 5322 `atext` outside letters and digits.
const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

impl EmailAddress {
    pub fn parse(input: &str) -> Result<EmailAddress, EmailError> {
        let leading = input.len() - input.trim_start().len();
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        // 1-based character position in the input as given.
        let position_of = |byte_index: usize| input[..leading + byte_index].chars().count() + 1;

        if let Some((i, c)) = trimmed.char_indices().find(|(_, c)| c.is_control()) {
            return Err(EmailError::ControlCharacter {
                position: position_of(i),
                code: format!("U+{:04X}", u32::from(c)),
            });
        }
        if trimmed.contains(['<', '>']) {
            return Err(EmailError::DisplayName {
                input: trimmed.to_owned(),
            });
        }
        if trimmed.contains('"') {
            return Err(EmailError::Quoted);
        }
        if let Some(found) = trimmed.chars().find(|c| matches!(c, ',' | ';')) {
            return Err(EmailError::MultipleAddresses { found });
        }
        if let Some((i, _)) = trimmed.char_indices().find(|(_, c)| c.is_whitespace()) {
            return Err(EmailError::Whitespace {
                position: position_of(i),
            });
        }
        let (local, domain) = match trimmed.split_once('@') {
            None => return Err(EmailError::MissingAt),
            Some((_, rest)) if rest.contains('@') => return Err(EmailError::MultipleAt),
            Some(parts) => parts,
        };
        check_local_part(local)?;
        let domain = normalise_domain(domain)?;

        let len = local.len() + 1 + domain.len();
        if len > MAX_ADDRESS_LEN {
            return Err(EmailError::TooLong { len });
        }
        Ok(EmailAddress {
            address: format!("{}@{domain}", local.to_ascii_lowercase()),
            at: local.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    pub fn local_part(&self) -> &str {
        &self.address[..self.at]
    }

    /// The ASCII (punycode) form of the domain, lower-case.
    pub fn domain(&self) -> &str {
        &self.address[self.at + 1..]
    }

    /// For logs: `j***@example.com` (the first character of the local part, and the domain).
    pub fn masked(&self) -> String {
        let first = self.local_part().chars().next().unwrap_or('*');
        format!("{first}***@{}", self.domain())
    }
}

fn check_local_part(local: &str) -> Result<(), EmailError> {
    if local.is_empty() {
        return Err(EmailError::EmptyLocalPart);
    }
    if let Some(found) = local.chars().find(|c| !c.is_ascii()) {
        return Err(EmailError::NonAsciiLocalPart { found });
    }
    if local.len() > MAX_LOCAL_PART_LEN {
        return Err(EmailError::LocalPartTooLong { len: local.len() });
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(EmailError::LocalPartDots);
    }
    if let Some(found) = local
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || ATEXT_SPECIALS.contains(*c)))
    {
        return Err(EmailError::InvalidLocalPartCharacter { found });
    }
    Ok(())
}

fn normalise_domain(domain: &str) -> Result<String, EmailError> {
    if domain.is_empty() {
        return Err(EmailError::EmptyDomain);
    }
    if domain.starts_with('[') || domain.ends_with(']') {
        return Err(EmailError::IpLiteral {
            domain: domain.to_owned(),
        });
    }
    // Dots that UTS 46 maps to '.' (ideographic full stop etc.) are checked after conversion.
    if domain.split('.').any(str::is_empty) {
        return Err(EmailError::EmptyDomainLabel {
            domain: domain.to_owned(),
        });
    }
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Ignore,
        )
        .map_err(|_| EmailError::InvalidDomain {
            domain: domain.to_owned(),
            reason: describe_domain_problem(domain),
        })?
        .into_owned();

    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err(EmailError::EmptyDomainLabel {
            domain: domain.to_owned(),
        });
    }
    if let Some(label) = labels.iter().find(|l| l.len() > MAX_LABEL_LEN) {
        return Err(EmailError::DomainLabelTooLong {
            label: (*label).to_owned(),
            len: label.len(),
        });
    }
    // The deny list and hyphen check leave LDH labels; keep the rule explicit all the same.
    if let Some(label) = labels.iter().find(|l| {
        !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || l.starts_with('-')
            || l.ends_with('-')
    }) {
        return Err(EmailError::InvalidDomain {
            domain: domain.to_owned(),
            reason: format!("the label '{label}' is not letters, digits and inner hyphens"),
        });
    }
    if ascii.len() > MAX_DOMAIN_LEN {
        return Err(EmailError::DomainTooLong { len: ascii.len() });
    }
    if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(EmailError::IpAddress { domain: ascii });
    }
    if labels.len() < 2 {
        return Err(EmailError::SingleLabelDomain { domain: ascii });
    }
    Ok(ascii)
}

/// A human reason for a domain the IDNA conversion refused.
fn describe_domain_problem(domain: &str) -> String {
    if let Some(c) = domain
        .chars()
        .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    {
        return format!("it contains '{c}'; only letters, digits, '-' and '.' are allowed");
    }
    if domain
        .split('.')
        .any(|l| l.starts_with('-') || l.ends_with('-'))
    {
        return "a label starts or ends with '-'".to_owned();
    }
    "it is not a valid internationalised domain name (IDNA/UTS 46)".to_owned()
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl FromStr for EmailAddress {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, EmailError> {
        EmailAddress::parse(s)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.address)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        EmailAddress::parse(&raw)
            .map_err(|e| serde::de::Error::custom(format!("invalid email address '{raw}': {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> EmailError {
        EmailAddress::parse(s).expect_err(s)
    }

    #[test]
    fn accepts_a_plain_address_and_splits_it() {
        let a = ok("jane.doe@example.com");
        assert_eq!(a.as_str(), "jane.doe@example.com");
        assert_eq!(a.local_part(), "jane.doe");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.to_string(), "jane.doe@example.com");
    }

    #[test]
    fn trims_surrounding_whitespace() {
        assert_eq!(ok("  a@example.com\t").as_str(), "a@example.com");
        assert_eq!(ok("a@example.com\r\n").as_str(), "a@example.com");
    }

    #[test]
    fn lower_cases_the_whole_address() {
        let a = ok("John.Smith@Example.COM");
        assert_eq!(a.as_str(), "john.smith@example.com");
        assert_eq!(a, ok("john.smith@example.com"));
    }

    #[test]
    fn converts_an_internationalised_domain_to_punycode() {
        assert_eq!(
            ok("info@bücher.example").as_str(),
            "info@xn--bcher-kva.example"
        );
        assert_eq!(
            ok("info@BÜCHER.example").as_str(),
            "info@xn--bcher-kva.example"
        );
        // Already-encoded input stays as it is.
        assert_eq!(
            ok("info@xn--bcher-kva.example").as_str(),
            "info@xn--bcher-kva.example"
        );
    }

    #[test]
    fn accepts_every_atext_special_in_the_local_part() {
        let local = "a!#$%&'*+-/=?^_`{|}~z";
        assert_eq!(ok(&format!("{local}@example.com")).local_part(), local);
    }

    #[test]
    fn refuses_empty_input() {
        assert_eq!(err(""), EmailError::Empty);
        assert_eq!(err("   "), EmailError::Empty);
    }

    #[test]
    fn refuses_control_characters_and_says_where() {
        assert_eq!(
            err("a@exa\rmple.com"),
            EmailError::ControlCharacter {
                position: 6,
                code: "U+000D".into()
            }
        );
        assert_eq!(
            err("a@b.com\nBcc: x@y.com"),
            EmailError::ControlCharacter {
                position: 8,
                code: "U+000A".into()
            }
        );
        // Positions count from the input as given, leading whitespace included.
        match err("  a\u{0}b@example.com") {
            EmailError::ControlCharacter { position, .. } => assert_eq!(position, 4),
            other => panic!("{other:?}"),
        }
        let msg = err("a\u{7f}@example.com").to_string();
        assert!(
            msg.contains("U+007F") && msg.contains("position 2"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_display_name_forms() {
        assert!(matches!(
            err("Jane <jane@example.com>"),
            EmailError::DisplayName { .. }
        ));
        assert!(matches!(
            err("<jane@example.com>"),
            EmailError::DisplayName { .. }
        ));
        assert_eq!(err("\"jane\"@example.com"), EmailError::Quoted);
        assert_eq!(
            err("a@example.com,b@example.com"),
            EmailError::MultipleAddresses { found: ',' }
        );
        assert_eq!(
            err("a@example.com;b@example.com"),
            EmailError::MultipleAddresses { found: ';' }
        );
        assert_eq!(
            err("jane doe@example.com"),
            EmailError::Whitespace { position: 5 }
        );
    }

    #[test]
    fn needs_exactly_one_at() {
        assert_eq!(err("jane.example.com"), EmailError::MissingAt);
        assert_eq!(err("a@b@example.com"), EmailError::MultipleAt);
        assert_eq!(err("@example.com"), EmailError::EmptyLocalPart);
        assert_eq!(err("jane@"), EmailError::EmptyDomain);
    }

    #[test]
    fn checks_the_local_part() {
        assert_eq!(err(".a@example.com"), EmailError::LocalPartDots);
        assert_eq!(err("a.@example.com"), EmailError::LocalPartDots);
        assert_eq!(err("a..b@example.com"), EmailError::LocalPartDots);
        assert_eq!(
            err("a(b)@example.com"),
            EmailError::InvalidLocalPartCharacter { found: '(' }
        );
        assert_eq!(
            err("a\\b@example.com"),
            EmailError::InvalidLocalPartCharacter { found: '\\' }
        );
        assert_eq!(
            err("jürgen@example.com"),
            EmailError::NonAsciiLocalPart { found: 'ü' }
        );
    }

    #[test]
    fn enforces_rfc_5321_lengths() {
        let local64 = "a".repeat(64);
        ok(&format!("{local64}@example.com"));
        assert_eq!(
            err(&format!("{}@example.com", "a".repeat(65))),
            EmailError::LocalPartTooLong { len: 65 }
        );
        let label63 = "b".repeat(63);
        ok(&format!("a@{label63}.com"));
        assert!(matches!(
            err(&format!("a@{}.com", "b".repeat(64))),
            EmailError::DomainLabelTooLong { len: 64, .. }
        ));
        // 4 labels of 63 + 3 dots = 255: a legal domain, but too long for a 254-octet path.
        let domain255 = [label63.as_str(); 4].join(".");
        assert_eq!(domain255.len(), 255);
        assert_eq!(
            err(&format!("a@{domain255}")),
            EmailError::TooLong { len: 257 }
        );
        let domain256 = format!("{domain255}x");
        assert!(matches!(
            err(&format!("a@{domain256}")),
            EmailError::DomainLabelTooLong { .. }
        ));
        let long_domain = vec!["c".repeat(60); 5].join(".");
        assert_eq!(
            err(&format!("a@{long_domain}")),
            EmailError::DomainTooLong { len: 304 }
        );
        // Exactly 254 octets is fine.
        let domain = format!("{}.{}.{}.{}", label63, label63, label63, "d".repeat(60));
        let addr = format!("a@{domain}");
        assert_eq!(addr.len(), 254);
        ok(&addr);
    }

    #[test]
    fn checks_the_domain() {
        assert!(matches!(err("a@[192.0.2.1]"), EmailError::IpLiteral { .. }));
        assert!(matches!(
            err("a@[IPv6:2001:db8::1]"),
            EmailError::IpLiteral { .. }
        ));
        assert!(matches!(err("a@192.0.2.1"), EmailError::IpAddress { .. }));
        assert!(matches!(
            err("a@localhost"),
            EmailError::SingleLabelDomain { .. }
        ));
        assert!(matches!(
            err("a@example..com"),
            EmailError::EmptyDomainLabel { .. }
        ));
        assert!(matches!(
            err("a@.example.com"),
            EmailError::EmptyDomainLabel { .. }
        ));
        assert!(matches!(
            err("a@example.com."),
            EmailError::EmptyDomainLabel { .. }
        ));
        let under = err("a@my_host.example.com");
        assert!(under.to_string().contains("'_'"), "{under}");
        let hyphen = err("a@-example.com");
        assert!(hyphen.to_string().contains("'-'"), "{hyphen}");
        assert!(matches!(
            err("a@exa!mple.com"),
            EmailError::InvalidDomain { .. }
        ));
    }

    #[test]
    fn masks_for_logs() {
        assert_eq!(ok("jane@example.com").masked(), "j***@example.com");
        assert_eq!(
            ok("x@bücher.example").masked(),
            "x***@xn--bcher-kva.example"
        );
    }

    #[test]
    fn serialises_as_a_validated_string() {
        let a = ok("Jane@Example.com");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"jane@example.com\"");
        let back: EmailAddress = serde_json::from_str("\"Jane@EXAMPLE.com\"").unwrap();
        assert_eq!(back, a);
        let bad = serde_json::from_str::<EmailAddress>("\"Jane <j@example.com>\"").unwrap_err();
        assert!(bad.to_string().contains("display name"), "{bad}");
        assert_eq!(
            "a@b.example".parse::<EmailAddress>().unwrap().domain(),
            "b.example"
        );
    }

    proptest! {
        #[test]
        fn parsing_is_idempotent(s in "\\PC{0,40}") {
            if let Ok(a) = EmailAddress::parse(&s) {
                prop_assert_eq!(EmailAddress::parse(&a.to_string()), Ok(a));
            }
        }

        #[test]
        fn plausible_addresses_round_trip(
            s in "[ \t]?[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,20}@[A-Za-z0-9äöüß-]{1,15}(\\.[A-Za-z0-9äöü-]{1,10}){1,3}[ ]?"
        ) {
            if let Ok(a) = EmailAddress::parse(&s) {
                prop_assert_eq!(EmailAddress::parse(&a.to_string()), Ok(a.clone()));
                prop_assert!(a.as_str().is_ascii());
                prop_assert_eq!(a.domain(), a.domain().to_lowercase());
            }
        }

        #[test]
        fn accepted_addresses_carry_no_control_characters(s in any::<String>()) {
            if let Ok(a) = EmailAddress::parse(&s) {
                prop_assert!(!a.as_str().chars().any(|c| c.is_control() || c.is_whitespace()));
                prop_assert!(a.as_str().len() <= MAX_ADDRESS_LEN);
            }
        }

        #[test]
        fn injected_line_breaks_are_always_refused(
            a in "[a-z]{1,8}", b in "[a-z]{1,8}", brk in "[\r\n\u{0}\u{b}]"
        ) {
            let injected = format!("{a}@{b}.com{brk}Bcc: x@evil.example");
            prop_assert!(EmailAddress::parse(&injected).is_err());
            let inside = format!("{a}{brk}{a}@{b}.com");
            let refused = matches!(EmailAddress::parse(&inside), Err(EmailError::ControlCharacter { .. }));
            prop_assert!(refused);
        }
    }
}
