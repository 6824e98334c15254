//! Which SES error a SendEmail request gets, if any. Pure: no I/O, no clock.

use serde::{Deserialize, Serialize};

/// Faults the proxy injects into SendEmail. Every field is optional in JSON;
/// `POST /_hikyaku/faults` replaces the whole set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Every Nth SendEmail (counted from when the faults were set) answers 429
    /// `TooManyRequestsException`, "Maximum sending rate exceeded.".
    pub throttle_every: Option<u64>,
    /// Recipients SES rejects with 400 `MessageRejected`: whole addresses, or `@domain`
    /// suffixes. Compared case-insensitively against To, Cc and Bcc.
    pub reject_recipients: Vec<String>,
    /// Every SendEmail answers 400 `SendingPausedException`.
    pub pause_sending: bool,
    /// Delay before answering each SendEmail, in milliseconds (slow SES).
    pub delay_ms: Option<u64>,
}

/// An SES error the proxy answers instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    Throttled,
    Rejected { recipient: String },
    SendingPaused,
}

impl InjectedFault {
    /// HTTP status, `x-amzn-ErrorType`, and message, as SES v2 sends them.
    pub fn response_parts(&self) -> (u16, &'static str, String) {
        match self {
            Self::Throttled => (
                429,
                "TooManyRequestsException",
                "Maximum sending rate exceeded.".to_owned(),
            ),
            Self::Rejected { recipient } => (
                400,
                "MessageRejected",
                format!(
                    "Email address is not verified. The following identities failed the check \
                     in region US-EAST-1: {recipient}"
                ),
            ),
            Self::SendingPaused => (
                400,
                "SendingPausedException",
                "Sending is paused for this account.".to_owned(),
            ),
        }
    }
}

impl Faults {
    /// Decides the fate of the `nth` SendEmail (1-based, counting every SendEmail since the
    /// faults were set) with these recipients. A paused account answers before the rate limit;
    /// the rate limit answers before content checks.
    pub fn decide(&self, nth: u64, recipients: &[String]) -> Option<InjectedFault> {
        if self.pause_sending {
            return Some(InjectedFault::SendingPaused);
        }
        if self
            .throttle_every
            .is_some_and(|every| every > 0 && nth.is_multiple_of(every))
        {
            return Some(InjectedFault::Throttled);
        }
        recipients
            .iter()
            .find(|r| self.rejects(r))
            .map(|r| InjectedFault::Rejected {
                recipient: r.clone(),
            })
    }

    fn rejects(&self, recipient: &str) -> bool {
        let address = bare_address(recipient).to_ascii_lowercase();
        self.reject_recipients.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            if pattern.starts_with('@') {
                address.ends_with(&pattern)
            } else {
                address == pattern
            }
        })
    }
}

/// `Name <a@b.test>` → `a@b.test`; a bare address stays as it is.
pub fn bare_address(recipient: &str) -> &str {
    match (recipient.rfind('<'), recipient.rfind('>')) {
        (Some(open), Some(close)) if open < close => recipient[open + 1..close].trim(),
        _ => recipient.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(addresses: &[&str]) -> Vec<String> {
        addresses.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn no_faults_forward_everything() {
        let faults = Faults::default();
        assert!((1..100).all(|n| faults.decide(n, &to(&["a@x.test"])).is_none()));
    }

    #[test]
    fn throttle_every_third() {
        let faults = Faults {
            throttle_every: Some(3),
            ..Faults::default()
        };
        let throttled: Vec<u64> = (1..=9)
            .filter(|n| faults.decide(*n, &to(&["a@x.test"])) == Some(InjectedFault::Throttled))
            .collect();
        assert_eq!(throttled, [3, 6, 9]);
    }

    #[test]
    fn throttle_every_zero_is_off_and_one_is_always() {
        let zero = Faults {
            throttle_every: Some(0),
            ..Faults::default()
        };
        assert_eq!(zero.decide(5, &[]), None);
        let one = Faults {
            throttle_every: Some(1),
            ..Faults::default()
        };
        assert!((1..5).all(|n| one.decide(n, &[]) == Some(InjectedFault::Throttled)));
    }

    #[test]
    fn rejects_by_address_or_domain_suffix_case_insensitively() {
        let faults = Faults {
            reject_recipients: to(&["bad@x.test", "@Reject.test"]),
            ..Faults::default()
        };
        assert_eq!(faults.decide(1, &to(&["ok@x.test"])), None);
        assert_eq!(
            faults.decide(1, &to(&["ok@x.test", "BAD@x.test"])),
            Some(InjectedFault::Rejected {
                recipient: "BAD@x.test".into()
            })
        );
        assert!(faults.decide(1, &to(&["Ann <ann@reject.TEST>"])).is_some());
        assert_eq!(faults.decide(1, &to(&["ann@notreject.test.com"])), None);
    }

    #[test]
    fn pause_wins_over_everything() {
        let faults = Faults {
            pause_sending: true,
            throttle_every: Some(1),
            reject_recipients: to(&["@x.test"]),
            delay_ms: None,
        };
        assert_eq!(
            faults.decide(1, &to(&["a@x.test"])),
            Some(InjectedFault::SendingPaused)
        );
    }

    #[test]
    fn error_shapes_match_ses() {
        assert_eq!(InjectedFault::Throttled.response_parts().0, 429);
        assert_eq!(
            InjectedFault::SendingPaused.response_parts().1,
            "SendingPausedException"
        );
        let (status, kind, message) = InjectedFault::Rejected {
            recipient: "a@b.test".into(),
        }
        .response_parts();
        assert_eq!((status, kind), (400, "MessageRejected"));
        assert!(message.ends_with("a@b.test"));
    }

    #[test]
    fn json_fields_are_optional_and_typos_are_errors() {
        let faults: Faults = serde_json::from_str(r#"{"throttle_every": 4}"#).unwrap();
        assert_eq!(faults.throttle_every, Some(4));
        assert!(serde_json::from_str::<Faults>(r#"{"throttle_evry": 4}"#).is_err());
    }

    #[test]
    fn bare_address_strips_display_names() {
        assert_eq!(bare_address("Ann <ann@x.test>"), "ann@x.test");
        assert_eq!(bare_address(" ann@x.test "), "ann@x.test");
    }
}
