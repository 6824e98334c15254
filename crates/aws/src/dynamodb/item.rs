//! Attribute helpers shared by every table adapter: building attribute values, reading typed
//! attributes out of an item with errors that name the attribute, and time stamps.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use hikyaku_core::ids::timestamp;
use hikyaku_core::ports::StoreError;

/// A DynamoDB item as the SDK carries it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// A stored item on its way to a domain type: each adapter implements `TryFrom<Stored>` (or
/// `TryFrom<&Stored>`) for the records of its table.
pub(crate) struct Stored(pub Item);

/// Why a stored item is not the record it should be.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemError {
    #[error("attribute '{0}' is missing")]
    Missing(String),
    #[error("attribute '{name}' is not of type {expected}")]
    WrongType {
        name: String,
        expected: &'static str,
    },
    #[error("attribute '{name}' is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

impl ItemError {
    pub(crate) fn invalid(name: impl Into<String>, reason: impl Display) -> ItemError {
        ItemError::Invalid {
            name: name.into(),
            reason: reason.to_string(),
        }
    }

    /// A store error naming the item (`what`) that could not be read. Not retryable: reading
    /// it again gives the same item.
    pub(crate) fn into_store(self, operation: &'static str, what: &str) -> StoreError {
        StoreError::new(
            operation,
            format!("stored {what} is unreadable: {self}"),
            false,
        )
    }
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A time as stored: RFC 3339 in UTC with milliseconds, which also sorts as text.
pub(crate) fn time(at: DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(timestamp(at))
}

/// An item (or key) from attribute names and values.
pub(crate) fn item<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

fn present<'a>(item: &'a Item, name: &str) -> Option<&'a AttributeValue> {
    item.get(name)
        .filter(|value| !matches!(value, AttributeValue::Null(_)))
}

/// A required string attribute.
pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, ItemError> {
    opt_s(item, name)?.ok_or_else(|| ItemError::Missing(name.to_owned()))
}

/// An optional string attribute (absent or NULL is `None`).
pub(crate) fn opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, ItemError> {
    match present(item, name) {
        None => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value)),
        Some(_) => Err(ItemError::WrongType {
            name: name.to_owned(),
            expected: "S",
        }),
    }
}

/// A required string attribute parsed as `T`.
pub(crate) fn get_parsed<T>(item: &Item, name: &str) -> Result<T, ItemError>
where
    T: FromStr,
    T::Err: Display,
{
    get_s(item, name)?
        .parse()
        .map_err(|err: T::Err| ItemError::invalid(name, err))
}

pub(crate) fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ItemError> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| {
            ItemError::invalid(name, format!("'{value}' is not an RFC 3339 time: {err}"))
        })
}

pub(crate) fn get_time(item: &Item, name: &str) -> Result<DateTime<Utc>, ItemError> {
    parse_time(name, get_s(item, name)?)
}

pub(crate) fn opt_time(item: &Item, name: &str) -> Result<Option<DateTime<Utc>>, ItemError> {
    opt_s(item, name)?
        .map(|value| parse_time(name, value))
        .transpose()
}

/// An optional boolean attribute; absent is `false`.
pub(crate) fn flag(item: &Item, name: &str) -> Result<bool, ItemError> {
    match present(item, name) {
        None => Ok(false),
        Some(AttributeValue::Bool(value)) => Ok(*value),
        Some(_) => Err(ItemError::WrongType {
            name: name.to_owned(),
            expected: "BOOL",
        }),
    }
}

/// An optional map attribute.
pub(crate) fn opt_map<'a>(
    item: &'a Item,
    name: &str,
) -> Result<Option<&'a HashMap<String, AttributeValue>>, ItemError> {
    match present(item, name) {
        None => Ok(None),
        Some(AttributeValue::M(map)) => Ok(Some(map)),
        Some(_) => Err(ItemError::WrongType {
            name: name.to_owned(),
            expected: "M",
        }),
    }
}

/// An optional number attribute, parsed as `T`.
pub(crate) fn opt_n<T>(item: &Item, name: &str) -> Result<Option<T>, ItemError>
where
    T: FromStr,
    T::Err: Display,
{
    match present(item, name) {
        None => Ok(None),
        Some(AttributeValue::N(value)) => value
            .parse()
            .map(Some)
            .map_err(|err: T::Err| ItemError::invalid(name, err)),
        Some(_) => Err(ItemError::WrongType {
            name: name.to_owned(),
            expected: "N",
        }),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn when_attributes_have_the_wrong_type_then_the_error_names_them() {
        let stored = item([("a", n(1)), ("b", AttributeValue::Null(true))]);
        assert_eq!(
            get_s(&stored, "a"),
            Err(ItemError::WrongType {
                name: "a".into(),
                expected: "S"
            })
        );
        assert_eq!(opt_s(&stored, "b"), Ok(None));
        assert_eq!(get_s(&stored, "c"), Err(ItemError::Missing("c".into())));
        assert_eq!(opt_n::<u64>(&stored, "a"), Ok(Some(1)));
        assert_eq!(flag(&stored, "missing"), Ok(false));
    }

    #[test]
    fn times_round_trip_through_their_stored_form() {
        let at = Utc.with_ymd_and_hms(2026, 12, 24, 9, 0, 0).unwrap();
        let stored = item([("at", time(at)), ("bad", s("yesterday"))]);
        assert_eq!(get_time(&stored, "at"), Ok(at));
        let err = get_time(&stored, "bad").unwrap_err().to_string();
        assert!(err.contains("'bad'") && err.contains("yesterday"), "{err}");
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("abc", 10), "abc");
        assert_eq!(truncated("aé", 2), "a");
        assert_eq!(truncated("aéb", 3), "aé");
    }
}
