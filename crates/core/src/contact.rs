//! Contacts and their typed attributes, and the schema a contact list is known to carry.
//!
//! Attribute values are typed once, when a CSV cell is read ([`AttrValue::infer`]), so segments
//! compare numbers as numbers and templates print them as written. A list's [`ListSchema`] is
//! what campaigns are validated against; it is merged over imports, widening a kind when rows
//! disagree (see [`AttrKind::widen`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::email::EmailAddress;

/// Names no attribute may take: `email` is the contact's key (templates and segments see it as
/// `email`), `email_domain` is bound by segments, and `amazonSESUnsubscribeUrl` is SES's
/// placeholder in templates.
pub const RESERVED_ATTRIBUTE_NAMES: [&str; 3] =
    ["email", "email_domain", "amazonSESUnsubscribeUrl"];

pub const MAX_ATTRIBUTE_NAME_LEN: usize = 64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrKind {
    Bool,
    Int,
    Float,
    Str,
}

pub type Attributes = BTreeMap<String, AttrValue>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub email: EmailAddress,
    pub attributes: Attributes,
}

/// The attributes a contact list is known to carry (names and kinds), merged over imports;
/// campaigns are validated against it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListSchema {
    pub attributes: BTreeMap<String, AttrKind>,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ContactError {
    #[error("an attribute name is empty")]
    EmptyAttributeName,
    #[error(
        "attribute name '{name}' is {len} characters long; at most {MAX_ATTRIBUTE_NAME_LEN} are allowed"
    )]
    AttributeNameTooLong { name: String, len: usize },
    #[error(
        "attribute name '{name}' is not allowed: use letters, digits and '_', not starting with a digit"
    )]
    InvalidAttributeName { name: String },
    #[error("attribute name '{name}' is reserved")]
    ReservedAttributeName { name: String },
}

impl AttrValue {
    /// Types a CSV cell. The cell is trimmed first; an empty cell is `None` (the attribute is
    /// absent, so a template that needs it fails for that contact rather than printing a blank).
    ///
    /// - `true` / `false`, any case → `Bool`
    /// - an integer written canonically (`-12`, `0`, `42`; no `+`, no leading zeros) that fits
    ///   an i64 → `Int`
    /// - a finite decimal number (`1.5`, `-0.25`, `2e3`, `0.1E-2`) → `Float`
    /// - anything else, including `007`, `+1`, `1.`, `NaN`, `inf`, → `Str` (trimmed)
    ///
    /// Leading zeros stay text on purpose: postcodes and phone numbers must not lose digits.
    pub fn infer(cell: &str) -> Option<AttrValue> {
        let cell = cell.trim();
        if cell.is_empty() {
            return None;
        }
        if cell.eq_ignore_ascii_case("true") {
            return Some(AttrValue::Bool(true));
        }
        if cell.eq_ignore_ascii_case("false") {
            return Some(AttrValue::Bool(false));
        }
        if is_canonical_integer(cell)
            && let Ok(i) = cell.parse::<i64>()
        {
            return Some(AttrValue::Int(i));
        }
        if is_decimal_number(cell)
            && let Ok(f) = cell.parse::<f64>()
            && f.is_finite()
        {
            return Some(AttrValue::Float(f));
        }
        Some(AttrValue::Str(cell.to_owned()))
    }

    pub fn kind(&self) -> AttrKind {
        match self {
            AttrValue::Bool(_) => AttrKind::Bool,
            AttrValue::Int(_) => AttrKind::Int,
            AttrValue::Float(_) => AttrKind::Float,
            AttrValue::Str(_) => AttrKind::Str,
        }
    }

    /// This value as the kind a schema widened its attribute to: an `Int` becomes a `Float`,
    /// anything becomes its text for `Str`. A value is returned unchanged when it already has
    /// the kind, or when the kind is narrower than the value's (the schema is out of date).
    pub fn widened_to(&self, kind: AttrKind) -> AttrValue {
        match (self, kind) {
            (AttrValue::Int(i), AttrKind::Float) => AttrValue::Float(*i as f64),
            (AttrValue::Str(_), _) => self.clone(),
            (other, AttrKind::Str) => AttrValue::Str(other.to_string()),
            (other, _) => other.clone(),
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Float(x) => write!(f, "{x}"),
            AttrValue::Str(s) => f.write_str(s),
        }
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Float(v)
    }
}
impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_owned())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}

fn is_canonical_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0"
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, with a fraction or an exponent.
fn is_decimal_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    let int_ok = all_digits(int) && (int == "0" || !int.starts_with('0'));
    let frac_ok = frac.is_none_or(all_digits);
    let exp_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        all_digits(e)
    });
    int_ok && frac_ok && exp_ok && (frac.is_some() || exponent.is_some())
}

impl AttrKind {
    /// The kind a column has when rows disagree: the same kind stays; `Int` with `Float` widens
    /// to `Float`; any other mix (a `Str` anywhere, or `Bool` with a number) becomes `Str`,
    /// the only kind every value can be read as.
    pub fn widen(self, other: AttrKind) -> AttrKind {
        match (self, other) {
            (a, b) if a == b => a,
            (AttrKind::Int, AttrKind::Float) | (AttrKind::Float, AttrKind::Int) => AttrKind::Float,
            _ => AttrKind::Str,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttrKind::Bool => "bool",
            AttrKind::Int => "int",
            AttrKind::Float => "float",
            AttrKind::Str => "str",
        }
    }
}

impl fmt::Display for AttrKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters, and not one of
/// [`RESERVED_ATTRIBUTE_NAMES`]. The same name works in templates (`{{first_name}}`) and in
/// segments (`first_name == "Aiko"`).
pub fn validate_attribute_name(name: &str) -> Result<(), ContactError> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err(ContactError::EmptyAttributeName);
    };
    let len = name.chars().count();
    if len > MAX_ATTRIBUTE_NAME_LEN {
        return Err(ContactError::AttributeNameTooLong {
            name: name.to_owned(),
            len,
        });
    }
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ContactError::InvalidAttributeName {
            name: name.to_owned(),
        });
    }
    if RESERVED_ATTRIBUTE_NAMES.contains(&name) {
        return Err(ContactError::ReservedAttributeName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl Contact {
    /// A contact whose attribute names are all valid.
    pub fn new(email: EmailAddress, attributes: Attributes) -> Result<Contact, ContactError> {
        for name in attributes.keys() {
            validate_attribute_name(name)?;
        }
        Ok(Contact { email, attributes })
    }
}

impl ListSchema {
    /// Records the attributes one contact carries, widening kinds that disagree.
    pub fn observe(&mut self, attrs: &Attributes) {
        for (name, value) in attrs {
            self.add(name, value.kind());
        }
    }

    /// Folds another schema (e.g. from a later import) into this one.
    pub fn merge(&mut self, other: &ListSchema) {
        for (name, kind) in &other.attributes {
            self.add(name, *kind);
        }
    }

    fn add(&mut self, name: &str, kind: AttrKind) {
        match self.attributes.get_mut(name) {
            Some(known) => *known = known.widen(kind),
            None => {
                self.attributes.insert(name.to_owned(), kind);
            }
        }
    }

    pub fn kind_of(&self, name: &str) -> Option<AttrKind> {
        self.attributes.get(name).copied()
    }

    /// Whether a template or segment may read `name`: a known attribute, or `email`.
    pub fn knows(&self, name: &str) -> bool {
        name == "email" || self.attributes.contains_key(name)
    }

    /// The names a template may read, for error messages: `email` and every attribute.
    pub fn known_names(&self) -> Vec<String> {
        std::iter::once("email".to_owned())
            .chain(self.attributes.keys().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn infers_booleans_in_any_case() {
        assert_eq!(AttrValue::infer("true"), Some(AttrValue::Bool(true)));
        assert_eq!(AttrValue::infer("FALSE"), Some(AttrValue::Bool(false)));
        assert_eq!(AttrValue::infer(" True "), Some(AttrValue::Bool(true)));
        assert_eq!(AttrValue::infer("yes"), Some(AttrValue::Str("yes".into())));
    }

    #[test]
    fn infers_integers_written_canonically() {
        assert_eq!(AttrValue::infer("42"), Some(AttrValue::Int(42)));
        assert_eq!(AttrValue::infer("-7"), Some(AttrValue::Int(-7)));
        assert_eq!(AttrValue::infer("0"), Some(AttrValue::Int(0)));
        assert_eq!(
            AttrValue::infer("9223372036854775807"),
            Some(AttrValue::Int(i64::MAX))
        );
        // Too big for an i64: not silently rounded to a float either.
        assert_eq!(
            AttrValue::infer("9223372036854775808"),
            Some(AttrValue::Str("9223372036854775808".into()))
        );
    }

    #[test]
    fn keeps_leading_zeros_and_signs_as_text() {
        for cell in ["007", "+1", "-0", "01.5", "0x10", "1_000", "1,5"] {
            assert_eq!(
                AttrValue::infer(cell),
                Some(AttrValue::Str(cell.into())),
                "{cell}"
            );
        }
    }

    #[test]
    fn infers_finite_floats() {
        assert_eq!(AttrValue::infer("1.5"), Some(AttrValue::Float(1.5)));
        assert_eq!(AttrValue::infer("-0.25"), Some(AttrValue::Float(-0.25)));
        assert_eq!(AttrValue::infer("2e3"), Some(AttrValue::Float(2000.0)));
        assert_eq!(AttrValue::infer("0.1E-2"), Some(AttrValue::Float(0.001)));
        for cell in ["NaN", "inf", "-infinity", "1e999", "1.", ".5", "1e"] {
            assert_eq!(
                AttrValue::infer(cell),
                Some(AttrValue::Str(cell.into())),
                "{cell}"
            );
        }
    }

    #[test]
    fn empty_cells_are_absent() {
        assert_eq!(AttrValue::infer(""), None);
        assert_eq!(AttrValue::infer("   "), None);
    }

    #[test]
    fn text_is_trimmed() {
        assert_eq!(
            AttrValue::infer("  Tokyo "),
            Some(AttrValue::Str("Tokyo".into()))
        );
    }

    #[test]
    fn kinds_match_values() {
        assert_eq!(AttrValue::Bool(true).kind(), AttrKind::Bool);
        assert_eq!(AttrValue::Int(1).kind(), AttrKind::Int);
        assert_eq!(AttrValue::Float(1.0).kind(), AttrKind::Float);
        assert_eq!(AttrValue::Str("x".into()).kind(), AttrKind::Str);
    }

    #[test]
    fn values_serialise_untagged_and_come_back_with_their_kind() {
        let attrs: Attributes = [
            ("a".to_owned(), AttrValue::Bool(true)),
            ("b".to_owned(), AttrValue::Int(2)),
            ("c".to_owned(), AttrValue::Float(2.0)),
            ("d".to_owned(), AttrValue::Str("2".into())),
        ]
        .into();
        let json = serde_json::to_string(&attrs).unwrap();
        assert_eq!(json, r#"{"a":true,"b":2,"c":2.0,"d":"2"}"#);
        let back: Attributes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, attrs);
        assert_eq!(
            serde_json::to_string(&AttrKind::Float).unwrap(),
            "\"float\""
        );
    }

    #[test]
    fn attribute_names_follow_the_identifier_rule() {
        for ok in ["first_name", "_x", "A1", &"a".repeat(64)] {
            assert_eq!(validate_attribute_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_attribute_name(""),
            Err(ContactError::EmptyAttributeName)
        );
        for bad in ["1st", "first-name", "first name", "名前", "a.b"] {
            assert_eq!(
                validate_attribute_name(bad),
                Err(ContactError::InvalidAttributeName { name: bad.into() }),
                "{bad}"
            );
        }
        assert!(matches!(
            validate_attribute_name(&"a".repeat(65)),
            Err(ContactError::AttributeNameTooLong { len: 65, .. })
        ));
        for reserved in RESERVED_ATTRIBUTE_NAMES {
            assert_eq!(
                validate_attribute_name(reserved),
                Err(ContactError::ReservedAttributeName {
                    name: reserved.into()
                })
            );
        }
        let msg = validate_attribute_name("first-name")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("'first-name'"), "{msg}");
    }

    #[test]
    fn contact_new_checks_attribute_names() {
        let email = EmailAddress::parse("a@example.com").unwrap();
        let good: Attributes = [("city".to_owned(), AttrValue::from("Osaka"))].into();
        assert!(Contact::new(email.clone(), good).is_ok());
        let bad: Attributes = [("email".to_owned(), AttrValue::from("x"))].into();
        assert!(matches!(
            Contact::new(email, bad),
            Err(ContactError::ReservedAttributeName { .. })
        ));
    }

    #[test]
    fn kinds_widen_int_to_float_and_anything_else_to_str() {
        use AttrKind::*;
        assert_eq!(Int.widen(Int), Int);
        assert_eq!(Int.widen(Float), Float);
        assert_eq!(Float.widen(Int), Float);
        assert_eq!(Bool.widen(Int), Str);
        assert_eq!(Float.widen(Bool), Str);
        assert_eq!(Str.widen(Int), Str);
        assert_eq!(Bool.widen(Str), Str);
    }

    #[test]
    fn schema_observes_rows_and_merges() {
        let mut schema = ListSchema::default();
        let row1: Attributes = [
            ("score".to_owned(), AttrValue::Int(3)),
            ("zip".to_owned(), AttrValue::Int(1000)),
        ]
        .into();
        let row2: Attributes = [
            ("score".to_owned(), AttrValue::Float(3.5)),
            ("zip".to_owned(), AttrValue::Str("0100".into())),
            ("vip".to_owned(), AttrValue::Bool(true)),
        ]
        .into();
        schema.observe(&row1);
        schema.observe(&row2);
        assert_eq!(schema.kind_of("score"), Some(AttrKind::Float));
        assert_eq!(schema.kind_of("zip"), Some(AttrKind::Str));
        assert_eq!(schema.kind_of("vip"), Some(AttrKind::Bool));

        let mut other = ListSchema::default();
        other.attributes.insert("vip".into(), AttrKind::Int);
        other.attributes.insert("city".into(), AttrKind::Str);
        schema.merge(&other);
        assert_eq!(schema.kind_of("vip"), Some(AttrKind::Str));
        assert_eq!(schema.kind_of("city"), Some(AttrKind::Str));
        assert!(schema.knows("email"));
        assert!(schema.knows("city"));
        assert!(!schema.knows("country"));
        assert_eq!(schema.known_names()[0], "email");
    }

    #[test]
    fn values_widen_to_the_schema_kind() {
        assert_eq!(
            AttrValue::Int(3).widened_to(AttrKind::Float),
            AttrValue::Float(3.0)
        );
        assert_eq!(
            AttrValue::Bool(true).widened_to(AttrKind::Str),
            AttrValue::Str("true".into())
        );
        assert_eq!(
            AttrValue::Float(1.5).widened_to(AttrKind::Str),
            AttrValue::Str("1.5".into())
        );
        assert_eq!(
            AttrValue::Int(3).widened_to(AttrKind::Int),
            AttrValue::Int(3)
        );
    }

    proptest! {
        #[test]
        fn inferred_values_survive_json(cell in "\\PC{0,12}") {
            if let Some(v) = AttrValue::infer(&cell) {
                let json = serde_json::to_string(&v).unwrap();
                let back: AttrValue = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(back, v);
            }
        }

        #[test]
        fn integers_infer_as_themselves(i in any::<i64>()) {
            prop_assert_eq!(AttrValue::infer(&i.to_string()), Some(AttrValue::Int(i)));
        }

        #[test]
        fn observing_is_order_independent(kinds in proptest::collection::vec(0u8..4, 1..8)) {
            let to_value = |k: u8| match k {
                0 => AttrValue::Bool(true),
                1 => AttrValue::Int(1),
                2 => AttrValue::Float(1.5),
                _ => AttrValue::Str("x".into()),
            };
            let mut forward = ListSchema::default();
            let mut backward = ListSchema::default();
            for k in &kinds {
                forward.observe(&[("a".to_owned(), to_value(*k))].into());
            }
            for k in kinds.iter().rev() {
                backward.observe(&[("a".to_owned(), to_value(*k))].into());
            }
            prop_assert_eq!(forward, backward);
        }
    }
}
