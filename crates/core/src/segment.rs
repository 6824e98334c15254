//! Segments: CEL expressions over a contact's attributes that select who gets a campaign, e.g.
//! `mail_allowed == 1 && account_type == 2`.
//!
//! - `email` and `email_domain` (the ASCII domain, lower-case) are always bound, as strings.
//! - Attributes bind by kind: `Bool` → CEL `bool`, `Int` → `int`, `Float` → `double`, `Str` →
//!   `string`. The cel crate compares numbers across kinds by value, as the CEL spec does, so
//!   `x == 1` holds for an `Int` 1 and a `Float` 1.0 alike, and `x > 2` works for both. Arithmetic
//!   does not mix them (`x + 1` with a `Float` x is a type error; write `x + 1.0`).
//! - A contact that lacks an attribute the expression references is not matched:
//!   [`Segment::matches`] answers [`SegmentError::MissingAttribute`] before evaluating, whatever
//!   short-circuiting would have done, so the outcome never depends on operand order.
//! - The expression is compiled once; binding a contact costs no copy of its values (strings
//!   are borrowed), so evaluating millions of contacts is cheap.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::operators;
use cel::common::ast::{Expr, IdedExpr};
use cel::common::types::{CelBool, CelDouble, CelInt, CelString};
use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Program, Value};

use crate::contact::{AttrKind, AttrValue, Attributes, ListSchema};
use crate::email::EmailAddress;

/// Names bound for every contact.
pub const BUILTIN_VARIABLES: [&str; 2] = ["email", "email_domain"];

/// CEL's type identifiers (`type(x) == int`); never attributes.
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

#[derive(Clone)]
pub struct Segment {
    source: Arc<str>,
    program: Arc<Program>,
    /// Referenced attributes (not the built-in variables), for the per-contact presence check.
    attributes: Arc<[String]>,
    variables: BTreeSet<String>,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Segment").field(&&*self.source).finish()
    }
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SegmentError {
    #[error("the segment expression is empty")]
    Empty,
    #[error("the segment is not a valid CEL expression: {message}")]
    Syntax { message: String },
    #[error(
        "the segment uses {}, which the list does not have (known: {})",
        quote_list(.names), .known.join(", ")
    )]
    UnknownAttribute {
        names: Vec<String>,
        known: Vec<String>,
    },
    #[error("the segment does not type-check against the list: {message}")]
    Type { message: String },
    #[error("the segment evaluates to {got}, not a bool")]
    NotBool { got: String },
    #[error("the contact has no attribute `{0}`")]
    MissingAttribute(String),
    #[error("the segment failed to evaluate: {message}")]
    Evaluation { message: String },
}

fn quote_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

impl Segment {
    pub fn parse(source: &str) -> Result<Segment, SegmentError> {
        if source.trim().is_empty() {
            return Err(SegmentError::Empty);
        }
        let program = env().compile(source).map_err(|e| {
            let problems: Vec<String> = e
                .errors
                .iter()
                .map(|e| format!("{} (line {}, column {})", e.msg, e.pos.0, e.pos.1 + 1))
                .collect();
            SegmentError::Syntax {
                message: problems.join("; "),
            }
        })?;
        let mut variables = BTreeSet::new();
        collect_variables(program.expression(), &mut Vec::new(), &mut variables);
        let attributes: Vec<String> = variables
            .iter()
            .filter(|v| !BUILTIN_VARIABLES.contains(&v.as_str()))
            .cloned()
            .collect();
        Ok(Segment {
            source: source.into(),
            program: Arc::new(program),
            attributes: attributes.into(),
            variables,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Variables the expression references (attributes, and `email`/`email_domain` if used).
    pub fn variables(&self) -> BTreeSet<String> {
        self.variables.clone()
    }

    /// Checks the segment against a list schema: every referenced attribute exists, and the
    /// expression evaluates to a bool without a type error when each attribute holds a sample
    /// value of its kind. The operands of `&&`, `||`, `!` and `?:` are checked one by one, so
    /// short-circuiting does not hide a mistake in the operand it skips.
    pub fn validate(&self, schema: &ListSchema) -> Result<(), SegmentError> {
        let unknown: Vec<String> = self
            .attributes
            .iter()
            .filter(|name| !schema.attributes.contains_key(name.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let known = BUILTIN_VARIABLES
                .iter()
                .map(|s| (*s).to_owned())
                .chain(schema.attributes.keys().cloned())
                .collect();
            return Err(SegmentError::UnknownAttribute {
                names: unknown,
                known,
            });
        }
        let mut context = Context::with_env(env());
        context.add_variable_from_value("email", "sample@example.com");
        context.add_variable_from_value("email_domain", "example.com");
        for (name, kind) in &schema.attributes {
            let sample = match kind {
                AttrKind::Bool => Value::Bool(true),
                AttrKind::Int => Value::Int(1),
                AttrKind::Float => Value::Float(1.5),
                AttrKind::Str => Value::String(Arc::new("sample".to_owned())),
            };
            context.add_variable_from_value(name.as_str(), sample);
        }
        check_bool(self.program.expression(), &context)
    }

    /// Evaluates for one contact. A referenced attribute the contact lacks is
    /// [`SegmentError::MissingAttribute`] (the caller counts the contact as not selected).
    pub fn matches(
        &self,
        email: &EmailAddress,
        attributes: &Attributes,
    ) -> Result<bool, SegmentError> {
        if let Some(missing) = self
            .attributes
            .iter()
            .find(|name| !attributes.contains_key(name.as_str()))
        {
            return Err(SegmentError::MissingAttribute(missing.clone()));
        }
        let binding = Binding {
            email: email.as_str(),
            domain: email.domain(),
            attributes,
        };
        let mut context = Context::with_env(env());
        context.set_variable_resolver(&binding);
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(SegmentError::NotBool {
                got: describe(&other),
            }),
            Err(e) => Err(SegmentError::Evaluation {
                message: e.to_string(),
            }),
        }
    }
}

/// Binds one contact without copying its values.
struct Binding<'a> {
    email: &'a str,
    domain: &'a str,
    attributes: &'a Attributes,
}

impl VariableResolver for Binding<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "email" => Some(CowVal::owned(CelString::from(self.email))),
            "email_domain" => Some(CowVal::owned(CelString::from(self.domain))),
            name => Some(match self.attributes.get(name)? {
                AttrValue::Bool(b) => CowVal::owned(CelBool::from(*b)),
                AttrValue::Int(i) => CowVal::owned(CelInt::from(*i)),
                AttrValue::Float(x) => CowVal::owned(CelDouble::from(*x)),
                AttrValue::Str(s) => CowVal::owned(CelString::from(s.as_str())),
            }),
        }
    }
}

/// Identifiers the expression reads, minus comprehension variables and type names.
fn collect_variables(expr: &IdedExpr, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match &expr.expr {
        Expr::Ident(name) => {
            let name = name.strip_prefix('.').unwrap_or(name);
            if !name.starts_with('@')
                && !bound.iter().any(|b| b == name)
                && !TYPE_NAMES.contains(&name)
            {
                out.insert(name.to_owned());
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                collect_variables(target, bound, out);
            }
            for arg in &call.args {
                collect_variables(arg, bound, out);
            }
        }
        Expr::Select(select) => collect_variables(&select.operand, bound, out),
        Expr::List(list) => {
            for e in &list.elements {
                collect_variables(e, bound, out);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                    collect_variables(&e.key, bound, out);
                    collect_variables(&e.value, bound, out);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let cel::common::ast::EntryExpr::StructField(f) = &entry.expr {
                    collect_variables(&f.value, bound, out);
                }
            }
        }
        Expr::Comprehension(c) => {
            collect_variables(&c.iter_range, bound, out);
            collect_variables(&c.accu_init, bound, out);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            collect_variables(&c.loop_cond, bound, out);
            collect_variables(&c.loop_step, bound, out);
            collect_variables(&c.result, bound, out);
            bound.truncate(before);
        }
        _ => {}
    }
}

/// Checks that `expr` yields a bool on the sample context, descending through the logical
/// operators so each operand is evaluated even where evaluation would short-circuit.
fn check_bool(expr: &IdedExpr, context: &Context) -> Result<(), SegmentError> {
    if let Expr::Call(call) = &expr.expr
        && call.target.is_none()
    {
        match call.func_name.as_str() {
            // Every operand of these is a bool, and for `?:` both branches are the result.
            operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::CONDITIONAL => {
                return call.args.iter().try_for_each(|a| check_bool(a, context));
            }
            operators::EQUALS | operators::NOT_EQUALS if call.args.len() == 2 => {
                check_comparable(&call.args[0], &call.args[1], context)?;
            }
            _ => {}
        }
    }
    match context.resolve(expr) {
        Ok(Value::Bool(_)) => Ok(()),
        Ok(other) => Err(SegmentError::NotBool {
            got: describe(&other),
        }),
        Err(e) if is_type_error(&e) => Err(SegmentError::Type {
            message: e.to_string(),
        }),
        // Data-dependent failures (division by zero, overflow, a failed conversion of the
        // sample) say nothing about the expression's types.
        Err(_) => Ok(()),
    }
}

/// CEL's `==` between values of different types is false rather than an error, so
/// `mail_allowed == '1'` on an int attribute would silently select nobody: refuse it.
fn check_comparable(
    left: &IdedExpr,
    right: &IdedExpr,
    context: &Context,
) -> Result<(), SegmentError> {
    let (Ok(l), Ok(r)) = (context.resolve(left), context.resolve(right)) else {
        // Evaluating the whole comparison reports the error.
        return Ok(());
    };
    match (type_class(&l), type_class(&r)) {
        (Some(a), Some(b)) if a != b => Err(SegmentError::Type {
            message: format!(
                "compares {} with {}, which is never equal",
                describe(&l),
                describe(&r)
            ),
        }),
        _ => Ok(()),
    }
}

/// Types that can be equal to one another; `None` for null and the rest.
fn type_class(value: &Value) -> Option<&'static str> {
    match value {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => Some("number"),
        Value::String(_) => Some("string"),
        Value::Bool(_) => Some("bool"),
        Value::Bytes(_) => Some("bytes"),
        Value::List(_) => Some("list"),
        Value::Map(_) => Some("map"),
        _ => None,
    }
}

fn is_type_error(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::NoSuchOverload(_)
            | ExecutionError::ValuesNotComparable(..)
            | ExecutionError::UnsupportedBinaryOperator(..)
            | ExecutionError::UnexpectedType { .. }
            | ExecutionError::UnsupportedTargetType { .. }
            | ExecutionError::NotSupportedAsMethod { .. }
            | ExecutionError::UndeclaredReference(_)
            | ExecutionError::InvalidArgumentCount { .. }
            | ExecutionError::NoSuchKey(_)
            | ExecutionError::UnsupportedKeyType(_)
            | ExecutionError::UnsupportedIndex(..)
            | ExecutionError::MissingArgumentOrTarget
    )
}

fn describe(value: &Value) -> String {
    match value {
        Value::Int(i) => format!("the int {i}"),
        Value::UInt(u) => format!("the uint {u}"),
        Value::Float(x) => format!("the double {x}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Null => "null".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> EmailAddress {
        EmailAddress::parse("Aiko@Mail.Example.com").unwrap()
    }

    fn attrs(pairs: &[(&str, AttrValue)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn schema(pairs: &[(&str, AttrKind)]) -> ListSchema {
        ListSchema {
            attributes: pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn matches_the_demo_segment() {
        let s = Segment::parse("mail_allowed == 1 && account_type == 2").unwrap();
        let yes = attrs(&[("mail_allowed", 1.into()), ("account_type", 2.into())]);
        let no = attrs(&[("mail_allowed", 0.into()), ("account_type", 2.into())]);
        assert_eq!(s.matches(&email(), &yes), Ok(true));
        assert_eq!(s.matches(&email(), &no), Ok(false));
        assert_eq!(s.variables(), names(&["account_type", "mail_allowed"]));
        assert_eq!(s.source(), "mail_allowed == 1 && account_type == 2");
        assert!(format!("{s:?}").contains("mail_allowed == 1"));
    }

    #[test]
    fn ints_and_doubles_compare_by_value() {
        let s = Segment::parse("x == 1").unwrap();
        assert_eq!(s.matches(&email(), &attrs(&[("x", 1.into())])), Ok(true));
        assert_eq!(s.matches(&email(), &attrs(&[("x", 1.0.into())])), Ok(true));
        assert_eq!(s.matches(&email(), &attrs(&[("x", 1.5.into())])), Ok(false));
        let s = Segment::parse("x > 2 && x < 2.5").unwrap();
        assert_eq!(s.matches(&email(), &attrs(&[("x", 2.25.into())])), Ok(true));
        assert_eq!(s.matches(&email(), &attrs(&[("x", 3.into())])), Ok(false));
        let s = Segment::parse("x == 1.0").unwrap();
        assert_eq!(s.matches(&email(), &attrs(&[("x", 1.into())])), Ok(true));
    }

    #[test]
    fn ints_bind_as_cel_int_and_floats_as_double() {
        let s = Segment::parse("type(x) == int").unwrap();
        assert_eq!(s.matches(&email(), &attrs(&[("x", 1.into())])), Ok(true));
        assert_eq!(s.matches(&email(), &attrs(&[("x", 1.0.into())])), Ok(false));
        let s = Segment::parse("type(x) == double").unwrap();
        assert_eq!(s.matches(&email(), &attrs(&[("x", 1.0.into())])), Ok(true));
        assert_eq!(s.variables(), names(&["x"]));
    }

    #[test]
    fn strings_and_bools_bind_naturally() {
        let s = Segment::parse("city.startsWith('Os') && vip").unwrap();
        let a = attrs(&[("city", "Osaka".into()), ("vip", true.into())]);
        assert_eq!(s.matches(&email(), &a), Ok(true));
        let s = Segment::parse("plan in ['pro', 'team']").unwrap();
        assert_eq!(
            s.matches(&email(), &attrs(&[("plan", "team".into())])),
            Ok(true)
        );
    }

    #[test]
    fn email_and_its_domain_are_always_bound() {
        let s = Segment::parse("email_domain == 'mail.example.com' && email.startsWith('aiko@')")
            .unwrap();
        assert_eq!(s.matches(&email(), &Attributes::new()), Ok(true));
        assert_eq!(s.variables(), names(&["email", "email_domain"]));
        s.validate(&ListSchema::default()).unwrap();
    }

    #[test]
    fn a_missing_attribute_is_reported_whatever_the_short_circuit() {
        let s = Segment::parse("false && city == 'Kyoto'").unwrap();
        assert_eq!(
            s.matches(&email(), &Attributes::new()),
            Err(SegmentError::MissingAttribute("city".into()))
        );
        let s = Segment::parse("a == 1 || b == 2").unwrap();
        assert_eq!(
            s.matches(&email(), &attrs(&[("a", 1.into())])),
            Err(SegmentError::MissingAttribute("b".into()))
        );
    }

    #[test]
    fn a_non_bool_result_is_an_error() {
        let s = Segment::parse("score + 1").unwrap();
        assert_eq!(
            s.matches(&email(), &attrs(&[("score", 2.into())])),
            Err(SegmentError::NotBool {
                got: "the int 3".into()
            })
        );
    }

    #[test]
    fn a_type_error_at_evaluation_is_an_error() {
        let s = Segment::parse("name > 3").unwrap();
        assert!(matches!(
            s.matches(&email(), &attrs(&[("name", "Aiko".into())])),
            Err(SegmentError::Evaluation { .. })
        ));
    }

    #[test]
    fn parse_errors_are_explained() {
        assert_eq!(Segment::parse("  ").unwrap_err(), SegmentError::Empty);
        let err = Segment::parse("a == ").unwrap_err();
        assert!(matches!(err, SegmentError::Syntax { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("not a valid CEL expression") && msg.contains("line 1, column"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn comprehension_variables_and_type_names_are_not_attributes() {
        let s = Segment::parse("tags.exists(t, t == wanted) && type(n) == int").unwrap();
        assert_eq!(s.variables(), names(&["n", "tags", "wanted"]));
    }

    #[test]
    fn validate_names_unknown_attributes_and_lists_known_ones() {
        let s = Segment::parse("mail_allowed == 1 && plan == 'pro' && tier > 2").unwrap();
        let err = s
            .validate(&schema(&[
                ("mail_allowed", AttrKind::Int),
                ("city", AttrKind::Str),
            ]))
            .unwrap_err();
        assert_eq!(
            err,
            SegmentError::UnknownAttribute {
                names: vec!["plan".into(), "tier".into()],
                known: vec![
                    "email".into(),
                    "email_domain".into(),
                    "city".into(),
                    "mail_allowed".into()
                ],
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("`plan`") && msg.contains("known: email, email_domain, city"),
            "{msg}"
        );
    }

    #[test]
    fn validate_finds_type_errors() {
        let list = schema(&[
            ("name", AttrKind::Str),
            ("n", AttrKind::Int),
            ("x", AttrKind::Float),
            ("vip", AttrKind::Bool),
        ]);
        let bad = |src: &str| Segment::parse(src).unwrap().validate(&list).unwrap_err();
        assert!(matches!(bad("name > 3"), SegmentError::Type { .. }));
        assert!(matches!(bad("n == 'x'"), SegmentError::Type { .. }));
        assert!(matches!(bad("vip != 1"), SegmentError::Type { .. }));
        assert!(matches!(bad("name == x"), SegmentError::Type { .. }));
        Segment::parse("n == 1.5 && x != 2 && name == 'a' && vip == true")
            .unwrap()
            .validate(&list)
            .unwrap();
        assert!(matches!(bad("x + 1 > 2"), SegmentError::Type { .. }));
        assert!(matches!(bad("vip.size() > 0"), SegmentError::Type { .. }));
        assert!(matches!(bad("nosuchfn(n)"), SegmentError::Type { .. }));
        assert_eq!(
            bad("n + 1"),
            SegmentError::NotBool {
                got: "the int 2".into()
            }
        );
        assert!(matches!(bad("name"), SegmentError::NotBool { .. }));
    }

    #[test]
    fn validate_checks_operands_the_evaluation_would_skip() {
        let list = schema(&[
            ("name", AttrKind::Str),
            ("vip", AttrKind::Bool),
            ("n", AttrKind::Int),
        ]);
        for src in [
            "!vip && name > 3",
            "vip || name > 3",
            "n == 1 ? vip : name > 3",
            "n != 1 ? name > 3 : vip",
            "vip || n",
        ] {
            let err = Segment::parse(src).unwrap().validate(&list);
            assert!(err.is_err(), "{src} should not validate");
        }
        for src in [
            "vip && name == 'x'",
            "n / 1 > 0",
            "n == 1 ? vip : name == 'y'",
            "int(name) > 3",
            "!(n > 3)",
        ] {
            Segment::parse(src)
                .unwrap()
                .validate(&list)
                .unwrap_or_else(|e| panic!("{src}: {e}"));
        }
    }

    #[test]
    fn segments_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Segment>();
        let s = Segment::parse("a == 1").unwrap();
        let t = s.clone();
        assert!(Arc::ptr_eq(&s.program, &t.program));
    }
}
