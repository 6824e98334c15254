//! Message templates: Handlebars syntax (the syntax SES templates use), rendered by hikyaku in
//! strict mode.
//!
//! - A variable the contact lacks is an error, never a blank. `{{#if x}}` is the way to make an
//!   attribute optional: handlebars' `if`/`unless` treat a missing value as false, even in
//!   strict mode.
//! - The HTML part escapes values; the subject and the text part do not.
//! - `{{amazonSESUnsubscribeUrl}}` is written through verbatim in the HTML and text parts, for
//!   SES to replace (it replaces at most two occurrences a part, so more are refused). It is
//!   refused in the subject.
//! - The handlebars built-in helpers are available (`if`, `unless`, `each`, `with`, `lookup`,
//!   `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `and`, `or`, `not`, `len`, `raw`, `log`). Partials
//!   (`{{> name}}`) and decorators (`{{* inline}}`) are refused: a campaign is self-contained.
//! - The rendered subject is one line: any run of whitespace that contains a line break or other
//!   control character collapses to a single space, the result is trimmed, and it must not be
//!   empty nor longer than [`MAX_SUBJECT_CHARS`] characters (RFC 5322's line limit; a longer
//!   subject is an error for that recipient rather than silently cut).
//! - Without an explicit text part, one is derived at compile time from the HTML template
//!   source with html2text: handlebars expressions are kept intact (they are masked while the
//!   HTML is converted) and link targets are listed as footnotes, so the unsubscribe link stays
//!   visible.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonValue, Output, Path, PathSeg,
    RenderContext, RenderError, RenderErrorReason,
};

use crate::contact::{AttrValue, Attributes};
use crate::email::EmailAddress;

/// SES's placeholder for the per-recipient unsubscribe link.
pub const UNSUBSCRIBE_PLACEHOLDER: &str = "amazonSESUnsubscribeUrl";
/// SES replaces at most this many unsubscribe placeholders in a part.
pub const MAX_UNSUBSCRIBE_LINKS: usize = 2;
/// RFC 5322 §2.1.1 line limit, applied to the subject template and to the rendered subject.
pub const MAX_SUBJECT_CHARS: usize = 998;
/// Width the derived text part is wrapped at.
pub const TEXT_WIDTH: usize = 78;

/// The helpers handlebars registers by default; any other helper name is an error.
const BUILTIN_HELPERS: [&str; 17] = [
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];
/// Block helpers that render their body with a new context (so relative names inside are not
/// the contact's).
const CONTEXT_HELPERS: [&str; 2] = ["each", "with"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Subject,
    Html,
    Text,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Html => "html",
            Part::Text => "text",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in a part something went wrong, when handlebars knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

fn at(position: &Option<Position>) -> String {
    match position {
        Some(p) => format!(" (line {}, column {})", p.line, p.column),
        None => String::new(),
    }
}

#[derive(thiserror::Error, Debug)]
pub enum TemplateError {
    #[error("{part}: the template is empty")]
    Empty { part: Part },
    #[error("{part}: invalid template syntax{}: {message}", at(.position))]
    Syntax {
        part: Part,
        position: Option<Position>,
        message: String,
    },
    #[error(
        "text: the text part derived from the html does not work ({message}); give the text part explicitly"
    )]
    DerivedText { message: String },
    #[error(
        "{part}: partials (`{{{{> {name}}}}}`) are not supported; put the content in the template itself"
    )]
    Partial { part: Part, name: String },
    #[error("{part}: decorators and inline partials (`{{{{* {name}}}}}`) are not supported")]
    Decorator { part: Part, name: String },
    #[error("{part}: unknown helper `{name}`; the helpers are: {}", BUILTIN_HELPERS.join(", "))]
    UnknownHelper { part: Part, name: String },
    #[error(
        "subject: `{{{{amazonSESUnsubscribeUrl}}}}` can only be used in the html and text parts"
    )]
    UnsubscribeInSubject,
    #[error(
        "{part}: `{{{{amazonSESUnsubscribeUrl}}}}` appears {count} times; SES replaces at most {MAX_UNSUBSCRIBE_LINKS}"
    )]
    TooManyUnsubscribeLinks { part: Part, count: usize },
    #[error(
        "subject: contains a control character ({code}) at position {position}; the subject must be one line"
    )]
    SubjectControlCharacter { position: usize, code: String },
    #[error("subject: is {len} characters long; at most {MAX_SUBJECT_CHARS} are allowed")]
    SubjectTooLong { len: usize },
    #[error("subject: is empty once rendered")]
    RenderedSubjectEmpty,
    #[error("{part}: the recipient has no value for `{name}`{}", at(.position))]
    MissingVariable {
        part: Part,
        name: String,
        position: Option<Position>,
    },
    #[error("{part}: rendering failed{}: {message}", at(.position))]
    Render {
        part: Part,
        position: Option<Position>,
        message: String,
    },
}

impl TemplateError {
    /// The part the error is about.
    pub fn part(&self) -> Part {
        match self {
            TemplateError::Empty { part }
            | TemplateError::Syntax { part, .. }
            | TemplateError::Partial { part, .. }
            | TemplateError::Decorator { part, .. }
            | TemplateError::UnknownHelper { part, .. }
            | TemplateError::TooManyUnsubscribeLinks { part, .. }
            | TemplateError::MissingVariable { part, .. }
            | TemplateError::Render { part, .. } => *part,
            TemplateError::DerivedText { .. } => Part::Text,
            TemplateError::UnsubscribeInSubject
            | TemplateError::SubjectControlCharacter { .. }
            | TemplateError::SubjectTooLong { .. }
            | TemplateError::RenderedSubjectEmpty => Part::Subject,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedMessage {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// A compiled message: subject, HTML and text parts. Cheap to clone.
#[derive(Clone)]
pub struct MessageTemplate {
    inner: Arc<Compiled>,
}

struct Compiled {
    /// Renders the HTML part, escaping values.
    html: Handlebars<'static>,
    /// Renders the subject and the text part, without escaping.
    plain: Handlebars<'static>,
    subject_source: String,
    html_source: String,
    text_source: String,
    text_derived: bool,
    variables: BTreeMap<Part, BTreeSet<String>>,
}

impl fmt::Debug for MessageTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageTemplate")
            .field("subject", &self.inner.subject_source)
            .field("html_len", &self.inner.html_source.len())
            .field("text_len", &self.inner.text_source.len())
            .field("text_derived", &self.inner.text_derived)
            .field("variables", &self.variables())
            .finish()
    }
}

/// Writes the placeholder itself, unescaped, for SES to replace.
struct UnsubscribePlaceholder;

impl HelperDef for UnsubscribePlaceholder {
    fn call<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        out.write("{{")?;
        out.write(UNSUBSCRIBE_PLACEHOLDER)?;
        out.write("}}")?;
        Ok(())
    }
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut reg = Handlebars::new();
    reg.set_strict_mode(true);
    if !escape {
        reg.register_escape_fn(handlebars::no_escape);
    }
    reg.register_helper(UNSUBSCRIBE_PLACEHOLDER, Box::new(UnsubscribePlaceholder));
    reg
}

impl MessageTemplate {
    /// Compiles the three parts. `text: None` derives the text part once, here, from the HTML
    /// template (see the module documentation). Returns the first problem found; see
    /// [`MessageTemplate::compile_all_errors`] for all of them.
    pub fn compile(
        subject: &str,
        html: &str,
        text: Option<&str>,
    ) -> Result<MessageTemplate, TemplateError> {
        Self::compile_all_errors(subject, html, text).map_err(|mut errors| errors.remove(0))
    }

    /// Like [`MessageTemplate::compile`], reporting every problem (at least one on error).
    pub fn compile_all_errors(
        subject: &str,
        html: &str,
        text: Option<&str>,
    ) -> Result<MessageTemplate, Vec<TemplateError>> {
        let mut errors = Vec::new();
        let mut variables = BTreeMap::new();
        let mut parsed = BTreeMap::new();

        match compile_subject(subject) {
            Ok((template, vars)) => {
                parsed.insert(Part::Subject, template);
                variables.insert(Part::Subject, vars);
            }
            Err(e) => errors.push(e),
        }
        match compile_body(Part::Html, html) {
            Ok((template, vars)) => {
                parsed.insert(Part::Html, template);
                variables.insert(Part::Html, vars);
            }
            Err(e) => errors.push(e),
        }
        let (text_source, text_derived) = match text {
            Some(t) => (Some(t.to_owned()), false),
            None if html.trim().is_empty() => (None, true),
            None => match derive_text(html) {
                Ok(t) => (Some(t), true),
                Err(message) => {
                    errors.push(TemplateError::DerivedText { message });
                    (None, true)
                }
            },
        };
        if let Some(source) = &text_source {
            match compile_body(Part::Text, source) {
                Ok((template, vars)) => {
                    parsed.insert(Part::Text, template);
                    variables.insert(Part::Text, vars);
                }
                Err(e) if text_derived => errors.push(TemplateError::DerivedText {
                    message: e.to_string(),
                }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut html_reg = registry(true);
        let mut plain_reg = registry(false);
        for (part, template) in parsed {
            match part {
                Part::Html => html_reg.register_template(part.as_str(), template),
                _ => plain_reg.register_template(part.as_str(), template),
            }
        }
        Ok(MessageTemplate {
            inner: Arc::new(Compiled {
                html: html_reg,
                plain: plain_reg,
                subject_source: subject.to_owned(),
                html_source: html.to_owned(),
                text_source: text_source.unwrap_or_default(),
                text_derived,
                variables,
            }),
        })
    }

    /// Top-level variable names the template reads (e.g. `first_name`, `email`), excluding
    /// `amazonSESUnsubscribeUrl`, helper names and block-local names (`this`, `@index`, the
    /// fields of an `each`/`with` context). Values read only through `lookup` are not seen.
    pub fn variables(&self) -> BTreeSet<String> {
        self.inner.variables.values().flatten().cloned().collect()
    }

    /// The variables one part reads.
    pub fn part_variables(&self, part: Part) -> BTreeSet<String> {
        self.inner.variables.get(&part).cloned().unwrap_or_default()
    }

    pub fn subject_source(&self) -> &str {
        &self.inner.subject_source
    }

    pub fn html_source(&self) -> &str {
        &self.inner.html_source
    }

    /// The text template: as given, or as derived from the HTML.
    pub fn text_source(&self) -> &str {
        &self.inner.text_source
    }

    pub fn text_is_derived(&self) -> bool {
        self.inner.text_derived
    }

    /// Renders for one recipient. `email` is always available; attributes are the contact's.
    pub fn render(
        &self,
        email: &EmailAddress,
        attributes: &Attributes,
    ) -> Result<RenderedMessage, TemplateError> {
        let context = Context::from(render_data(email, attributes));
        let c = &self.inner;
        let subject = c
            .plain
            .render_with_context(Part::Subject.as_str(), &context)
            .map_err(|e| render_error(Part::Subject, e))?;
        let subject = one_line(&subject);
        if subject.is_empty() {
            return Err(TemplateError::RenderedSubjectEmpty);
        }
        let len = subject.chars().count();
        if len > MAX_SUBJECT_CHARS {
            return Err(TemplateError::SubjectTooLong { len });
        }
        let html = c
            .html
            .render_with_context(Part::Html.as_str(), &context)
            .map_err(|e| render_error(Part::Html, e))?;
        let text = c
            .plain
            .render_with_context(Part::Text.as_str(), &context)
            .map_err(|e| render_error(Part::Text, e))?;
        Ok(RenderedMessage {
            subject,
            html,
            text,
        })
    }
}

fn render_data(email: &EmailAddress, attributes: &Attributes) -> JsonValue {
    let mut map = serde_json::Map::with_capacity(attributes.len() + 1);
    for (name, value) in attributes {
        let json = match value {
            AttrValue::Bool(b) => JsonValue::Bool(*b),
            AttrValue::Int(i) => JsonValue::from(*i),
            AttrValue::Float(x) => serde_json::Number::from_f64(*x)
                .map(JsonValue::Number)
                .unwrap_or(JsonValue::Null),
            AttrValue::Str(s) => JsonValue::String(s.clone()),
        };
        map.insert(name.clone(), json);
    }
    map.insert(
        "email".to_owned(),
        JsonValue::String(email.as_str().to_owned()),
    );
    JsonValue::Object(map)
}

fn render_error(part: Part, e: RenderError) -> TemplateError {
    let position = match (e.line_no, e.column_no) {
        (Some(line), Some(column)) => Some(Position { line, column }),
        _ => None,
    };
    match e.reason() {
        RenderErrorReason::MissingVariable(name) => TemplateError::MissingVariable {
            part,
            name: name.clone().unwrap_or_else(|| "?".to_owned()),
            position,
        },
        // In strict mode a helper whose argument is a missing value sees no argument at all.
        RenderErrorReason::ParamNotFoundForIndex(helper, _)
        | RenderErrorReason::ParamNotFoundForName(helper, _) => TemplateError::Render {
            part,
            position,
            message: format!(
                "an argument of `{helper}` has no value (an attribute this recipient lacks?)"
            ),
        },
        reason => TemplateError::Render {
            part,
            position,
            message: reason.to_string(),
        },
    }
}

/// Collapses each whitespace run that holds a line break or control character into one space,
/// drops other control characters the same way, and trims.
fn one_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut run = String::new();
    let mut breaks = false;
    let flush = |out: &mut String, run: &mut String, breaks: &mut bool| {
        if *breaks {
            out.push(' ');
        } else {
            out.push_str(run);
        }
        run.clear();
        *breaks = false;
    };
    for c in raw.chars() {
        if c.is_whitespace() || c.is_control() {
            run.push(c);
            breaks |= c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
        } else {
            flush(&mut out, &mut run, &mut breaks);
            out.push(c);
        }
    }
    flush(&mut out, &mut run, &mut breaks);
    out.trim().to_owned()
}

fn parse(part: Part, source: &str) -> Result<Template, TemplateError> {
    Template::compile(source).map_err(|e| {
        let position = e.pos().map(|(line, column)| Position { line, column });
        let message = match e.reason() {
            // pest's list of grammar rules says little to an operator; say what is likely wrong.
            handlebars::TemplateErrorReason::InvalidSyntax(_) => {
                if position.is_some_and(|p| at_end(source, p)) {
                    "the template ends inside an expression or an open block (does every `{{#...}}` have its `{{/...}}`?)".to_owned()
                } else {
                    "malformed `{{...}}` expression".to_owned()
                }
            }
            reason => reason.to_string(),
        };
        TemplateError::Syntax {
            part,
            position,
            message,
        }
    })
}

/// Whether a 1-based line/column is past the last character of `source`.
fn at_end(source: &str, p: Position) -> bool {
    let lines: Vec<&str> = source.split('\n').collect();
    p.line >= lines.len() && p.column > lines.last().map_or(0, |l| l.chars().count())
}

fn compile_subject(source: &str) -> Result<(Template, BTreeSet<String>), TemplateError> {
    if source.trim().is_empty() {
        return Err(TemplateError::Empty {
            part: Part::Subject,
        });
    }
    if let Some((i, c)) = source.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(TemplateError::SubjectControlCharacter {
            position: i + 1,
            code: format!("U+{:04X}", u32::from(c)),
        });
    }
    let len = source.chars().count();
    if len > MAX_SUBJECT_CHARS {
        return Err(TemplateError::SubjectTooLong { len });
    }
    let template = parse(Part::Subject, source)?;
    let found = analyse(Part::Subject, &template)?;
    if found.unsubscribe_links > 0 {
        return Err(TemplateError::UnsubscribeInSubject);
    }
    Ok((template, found.variables))
}

fn compile_body(part: Part, source: &str) -> Result<(Template, BTreeSet<String>), TemplateError> {
    if source.trim().is_empty() {
        return Err(TemplateError::Empty { part });
    }
    let template = parse(part, source)?;
    let found = analyse(part, &template)?;
    if found.unsubscribe_links > MAX_UNSUBSCRIBE_LINKS {
        return Err(TemplateError::TooManyUnsubscribeLinks {
            part,
            count: found.unsubscribe_links,
        });
    }
    Ok((template, found.variables))
}

#[derive(Default)]
struct Found {
    variables: BTreeSet<String>,
    unsubscribe_links: usize,
}

/// Walks the template: refuses partials, decorators and unknown helpers, and collects the
/// top-level variables and the unsubscribe placeholders.
fn analyse(part: Part, template: &Template) -> Result<Found, TemplateError> {
    let mut found = Found::default();
    walk(part, template, 0, &mut found)?;
    Ok(found)
}

/// `depth`: how many context-changing blocks (`each`, `with`) enclose `template`.
fn walk(
    part: Part,
    template: &Template,
    depth: usize,
    found: &mut Found,
) -> Result<(), TemplateError> {
    for element in &template.elements {
        match element {
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                let name_only = !ht.block && ht.params.is_empty() && ht.hash.is_empty();
                if name_only {
                    expression_name(&ht.name, depth, found);
                } else {
                    helper_call(part, &ht.name, &ht.params, ht.hash.values(), depth, found)?;
                }
            }
            TemplateElement::HelperBlock(ht) => {
                let name = helper_call(part, &ht.name, &ht.params, ht.hash.values(), depth, found)?;
                let inner = if CONTEXT_HELPERS.contains(&name.as_str()) {
                    depth + 1
                } else {
                    depth
                };
                if let Some(body) = &ht.template {
                    walk(part, body, inner, found)?;
                }
                if let Some(inverse) = &ht.inverse {
                    walk(part, inverse, depth, found)?;
                }
            }
            TemplateElement::PartialExpression(dt) | TemplateElement::PartialBlock(dt) => {
                return Err(TemplateError::Partial {
                    part,
                    name: parameter_label(&dt.name),
                });
            }
            TemplateElement::DecoratorExpression(dt) | TemplateElement::DecoratorBlock(dt) => {
                return Err(TemplateError::Decorator {
                    part,
                    name: parameter_label(&dt.name),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn parameter_label(p: &Parameter) -> String {
    match p {
        Parameter::Literal(json) => json
            .as_str()
            .map_or_else(|| json.to_string(), str::to_owned),
        other => other.as_name().unwrap_or("?").to_owned(),
    }
}

/// `{{name}}`: a helper called without arguments (e.g. the unsubscribe placeholder), or a value.
fn expression_name(name: &Parameter, depth: usize, found: &mut Found) {
    if let Some(raw) = name.as_name() {
        if raw == UNSUBSCRIBE_PLACEHOLDER {
            found.unsubscribe_links += 1;
            return;
        }
        if BUILTIN_HELPERS.contains(&raw) {
            return;
        }
    }
    parameter(name, depth, found);
}

/// `{{helper a b k=v}}` or the opening of a block: checks the helper exists and collects the
/// variables of its arguments. Returns the helper's name.
fn helper_call<'a>(
    part: Part,
    name: &Parameter,
    params: &'a [Parameter],
    hash: impl Iterator<Item = &'a Parameter>,
    depth: usize,
    found: &mut Found,
) -> Result<String, TemplateError> {
    let helper = name.as_name().unwrap_or_default().to_owned();
    if helper == UNSUBSCRIBE_PLACEHOLDER {
        found.unsubscribe_links += 1;
    } else if !BUILTIN_HELPERS.contains(&helper.as_str()) {
        return Err(TemplateError::UnknownHelper { part, name: helper });
    }
    for p in params.iter().chain(hash) {
        parameter_checked(part, p, depth, found)?;
    }
    Ok(helper)
}

fn parameter_checked(
    part: Part,
    p: &Parameter,
    depth: usize,
    found: &mut Found,
) -> Result<(), TemplateError> {
    if let Parameter::Subexpression(sub) = p {
        if let TemplateElement::Expression(ht) = sub.as_element() {
            let name_only = ht.params.is_empty() && ht.hash.is_empty();
            if name_only {
                expression_name(&ht.name, depth, found);
            } else {
                helper_call(part, &ht.name, &ht.params, ht.hash.values(), depth, found)?;
            }
        }
        return Ok(());
    }
    parameter(p, depth, found);
    Ok(())
}

fn parameter(p: &Parameter, depth: usize, found: &mut Found) {
    match p {
        Parameter::Path(path) => {
            if let Some(name) = top_level_name(path, depth) {
                if name == UNSUBSCRIBE_PLACEHOLDER {
                    found.unsubscribe_links += 1;
                } else {
                    found.variables.insert(name);
                }
            }
        }
        Parameter::Name(name) => {
            if let Ok(path) = Path::parse(name)
                && let Some(name) = top_level_name(&path, depth)
            {
                found.variables.insert(name);
            }
        }
        _ => {}
    }
}

/// The contact attribute a path reads, if it reads one: `first_name`, `this.first_name`,
/// `@root.first_name`, or `../first_name` climbing out of every enclosing `each`/`with`.
fn top_level_name(path: &Path, depth: usize) -> Option<String> {
    let Path::Relative((segments, _)) = path else {
        // `@index`, `@key`, ...: block-local data.
        return None;
    };
    let mut root = false;
    let mut ups = 0;
    for segment in segments {
        match segment {
            PathSeg::Named(name) => {
                return (root || ups >= depth).then(|| name.clone());
            }
            // The grammar's rule type is private; its name is the only handle on it.
            PathSeg::Ruled(rule) => match format!("{rule:?}").as_str() {
                "path_root" => root = true,
                "path_up" => ups += 1,
                _ => {}
            },
            _ => {}
        }
    }
    None
}

/// Derives a text template from an HTML template. Handlebars expressions are swapped for
/// word-like tokens while html2text converts the HTML, then put back, so none is wrapped,
/// escaped or dropped from a link target.
fn derive_text(html: &str) -> Result<String, String> {
    let (masked, expressions, prefix) = mask_expressions(html);
    let text = html2text::config::plain()
        .allow_width_overflow()
        .string_from_read(masked.as_bytes(), TEXT_WIDTH)
        .map_err(|e| format!("html2text could not convert the html: {e}"))?;
    Ok(unmask_expressions(&text, &expressions, &prefix))
}

fn mask_expressions(source: &str) -> (String, Vec<String>, String) {
    let mut prefix = String::from("hbsexpr");
    while source.contains(&prefix) {
        prefix.push('x');
    }
    let mut out = String::with_capacity(source.len());
    let mut expressions = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = if tail.starts_with("{{!--") {
            tail.find("--}}").map(|i| i + 4)
        } else {
            tail.find("}}").map(|i| {
                let mut end = i + 2;
                while tail[end..].starts_with('}') {
                    end += 1;
                }
                end
            })
        };
        let Some(end) = end else {
            // Unclosed: leave it for the compiler to report.
            out.push_str(tail);
            rest = "";
            break;
        };
        out.push_str(&format!("{prefix}{}q", expressions.len()));
        expressions.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out.push_str(rest);
    (out, expressions, prefix)
}

fn unmask_expressions(text: &str, expressions: &[String], prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(prefix) {
        out.push_str(&rest[..start]);
        let after = &rest[start + prefix.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let index = after[..digits].parse::<usize>().ok();
        match index.and_then(|i| expressions.get(i)) {
            Some(expr) if digits > 0 && after[digits..].starts_with('q') => {
                out.push_str(expr);
                rest = &after[digits + 1..];
            }
            _ => {
                out.push_str(prefix);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn email() -> EmailAddress {
        EmailAddress::parse("aiko@example.com").unwrap()
    }

    fn attrs(pairs: &[(&str, AttrValue)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn renders_all_three_parts() {
        let t = MessageTemplate::compile(
            "Hello {{first_name}}",
            "<p>Hi {{first_name}}, you are {{email}}</p>",
            Some("Hi {{first_name}}"),
        )
        .unwrap();
        let out = t
            .render(&email(), &attrs(&[("first_name", "Aiko".into())]))
            .unwrap();
        assert_eq!(out.subject, "Hello Aiko");
        assert_eq!(out.html, "<p>Hi Aiko, you are aiko@example.com</p>");
        assert_eq!(out.text, "Hi Aiko");
        assert!(!t.text_is_derived());
    }

    #[test]
    fn html_escapes_values_and_the_subject_and_text_do_not() {
        let t = MessageTemplate::compile("{{name}}", "<p>{{name}}</p>", Some("{{name}}")).unwrap();
        let out = t
            .render(&email(), &attrs(&[("name", "Tom & \"Jerry\" <b>".into())]))
            .unwrap();
        assert_eq!(out.html, "<p>Tom &amp; &quot;Jerry&quot; &lt;b&gt;</p>");
        assert_eq!(out.subject, "Tom & \"Jerry\" <b>");
        assert_eq!(out.text, "Tom & \"Jerry\" <b>");
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_the_part_and_variable() {
        let t = MessageTemplate::compile("Hi", "<p>\n{{city}}</p>", Some("x")).unwrap();
        let err = t.render(&email(), &Attributes::new()).unwrap_err();
        match &err {
            TemplateError::MissingVariable { part, name, .. } => {
                assert_eq!(*part, Part::Html);
                assert_eq!(name, "city");
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.starts_with("html:") && msg.contains("`city`"), "{msg}");

        let t = MessageTemplate::compile("Hi {{first_name}}", "<p>x</p>", None).unwrap();
        let err = t.render(&email(), &Attributes::new()).unwrap_err();
        assert_eq!(err.part(), Part::Subject);
        let t = MessageTemplate::compile("Hi", "<p>x</p>", Some("{{plan}}")).unwrap();
        assert_eq!(
            t.render(&email(), &Attributes::new()).unwrap_err().part(),
            Part::Text
        );
    }

    #[test]
    fn if_makes_an_attribute_optional() {
        let t = MessageTemplate::compile(
            "Hi",
            "<p>{{first_name}}{{#if last_name}} {{last_name}}{{/if}}</p>",
            Some("x"),
        )
        .unwrap();
        let only_first = attrs(&[("first_name", "Aiko".into())]);
        assert_eq!(t.render(&email(), &only_first).unwrap().html, "<p>Aiko</p>");
        let both = attrs(&[("first_name", "Aiko".into()), ("last_name", "Sato".into())]);
        assert_eq!(t.render(&email(), &both).unwrap().html, "<p>Aiko Sato</p>");
        assert_eq!(t.variables(), names(&["first_name", "last_name"]));
    }

    #[test]
    fn numbers_and_booleans_render_as_written() {
        let t = MessageTemplate::compile("{{n}} {{x}} {{b}}", "<p>{{n}}</p>", None).unwrap();
        let out = t
            .render(
                &email(),
                &attrs(&[("n", 3.into()), ("x", 1.5.into()), ("b", true.into())]),
            )
            .unwrap();
        assert_eq!(out.subject, "3 1.5 true");
    }

    #[test]
    fn the_unsubscribe_placeholder_passes_through_verbatim() {
        let t = MessageTemplate::compile(
            "Hi",
            r#"<a href="{{amazonSESUnsubscribeUrl}}">Unsubscribe</a> {{{amazonSESUnsubscribeUrl}}}"#,
            Some("Unsubscribe: {{amazonSESUnsubscribeUrl}}"),
        )
        .unwrap();
        let out = t.render(&email(), &Attributes::new()).unwrap();
        assert_eq!(
            out.html,
            r#"<a href="{{amazonSESUnsubscribeUrl}}">Unsubscribe</a> {{amazonSESUnsubscribeUrl}}"#
        );
        assert_eq!(out.text, "Unsubscribe: {{amazonSESUnsubscribeUrl}}");
        assert!(t.variables().is_empty());
    }

    #[test]
    fn the_unsubscribe_placeholder_is_refused_in_the_subject() {
        let err =
            MessageTemplate::compile("{{amazonSESUnsubscribeUrl}}", "<p>x</p>", None).unwrap_err();
        assert!(matches!(err, TemplateError::UnsubscribeInSubject));
        assert!(err.to_string().starts_with("subject:"));
        let err =
            MessageTemplate::compile("{{#if amazonSESUnsubscribeUrl}}x{{/if}}", "<p>x</p>", None)
                .unwrap_err();
        assert!(matches!(err, TemplateError::UnsubscribeInSubject), "{err}");
    }

    #[test]
    fn more_unsubscribe_links_than_ses_replaces_are_refused() {
        let html =
            "{{amazonSESUnsubscribeUrl}} {{amazonSESUnsubscribeUrl}} {{amazonSESUnsubscribeUrl}}";
        let err = MessageTemplate::compile("Hi", html, Some("x")).unwrap_err();
        assert!(matches!(
            err,
            TemplateError::TooManyUnsubscribeLinks {
                part: Part::Html,
                count: 3
            }
        ));
    }

    #[test]
    fn the_rendered_subject_is_one_line() {
        let t = MessageTemplate::compile("Hello {{name}}!", "<p>x</p>", None).unwrap();
        let out = t
            .render(
                &email(),
                &attrs(&[("name", " Aiko\r\n  Bcc: evil@example.com \t".into())]),
            )
            .unwrap();
        // The value's own leading space stays; the run holding the line break becomes one space.
        assert_eq!(out.subject, "Hello  Aiko Bcc: evil@example.com !");
        let out = t
            .render(&email(), &attrs(&[("name", "A  B\u{0}C\u{2028}D".into())]))
            .unwrap();
        assert_eq!(out.subject, "Hello A  B C D!");
    }

    #[test]
    fn the_rendered_subject_must_not_be_empty_or_too_long() {
        let t = MessageTemplate::compile("{{name}}", "<p>x</p>", None).unwrap();
        assert!(matches!(
            t.render(&email(), &attrs(&[("name", "\r\n".into())])),
            Err(TemplateError::RenderedSubjectEmpty)
        ));
        let long = "x".repeat(MAX_SUBJECT_CHARS + 1);
        assert!(matches!(
            t.render(&email(), &attrs(&[("name", long.into())])),
            Err(TemplateError::SubjectTooLong { len: 999 })
        ));
        let exact = "x".repeat(MAX_SUBJECT_CHARS);
        assert!(
            t.render(&email(), &attrs(&[("name", exact.into())]))
                .is_ok()
        );
    }

    #[test]
    fn the_subject_template_is_checked_at_compile_time() {
        let err = MessageTemplate::compile("Hi\nthere", "<p>x</p>", None).unwrap_err();
        match &err {
            TemplateError::SubjectControlCharacter { position, code } => {
                assert_eq!(*position, 3);
                assert_eq!(code, "U+000A");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            MessageTemplate::compile("  ", "<p>x</p>", None).unwrap_err(),
            TemplateError::Empty {
                part: Part::Subject
            }
        ));
        assert!(matches!(
            MessageTemplate::compile(&"s".repeat(999), "<p>x</p>", None).unwrap_err(),
            TemplateError::SubjectTooLong { len: 999 }
        ));
    }

    #[test]
    fn syntax_errors_name_the_part_and_position() {
        let err = MessageTemplate::compile("Hi", "<p>\n{{#if x}}open</p>", None).unwrap_err();
        assert_eq!(err.part(), Part::Html);
        let msg = err.to_string();
        assert!(msg.starts_with("html: invalid template syntax"), "{msg}");
        let err = MessageTemplate::compile("Hi {{", "<p>x</p>", None).unwrap_err();
        assert_eq!(err.part(), Part::Subject);
        match err {
            TemplateError::Syntax { position, .. } => assert!(position.is_some()),
            other => panic!("{other:?}"),
        }
        let err = MessageTemplate::compile("Hi", "<p>x</p>", Some("{{/each}}")).unwrap_err();
        assert_eq!(err.part(), Part::Text);
    }

    #[test]
    fn empty_parts_are_refused() {
        assert!(matches!(
            MessageTemplate::compile("Hi", " ", None).unwrap_err(),
            TemplateError::Empty { part: Part::Html }
        ));
        assert!(matches!(
            MessageTemplate::compile("Hi", "<p>x</p>", Some("")).unwrap_err(),
            TemplateError::Empty { part: Part::Text }
        ));
    }

    #[test]
    fn all_errors_are_reported_together() {
        let errors = MessageTemplate::compile_all_errors("", "{{> footer}}", Some("{{shout x}}"))
            .unwrap_err();
        let parts: Vec<Part> = errors.iter().map(TemplateError::part).collect();
        assert_eq!(parts, vec![Part::Subject, Part::Html, Part::Text]);
    }

    #[test]
    fn partials_and_decorators_are_refused() {
        let err = MessageTemplate::compile("Hi", "<p>{{> footer}}</p>", None).unwrap_err();
        assert!(
            matches!(&err, TemplateError::Partial { part: Part::Html, name } if name == "footer"),
            "{err:?}"
        );
        assert!(err.to_string().contains("{{> footer}}"), "{err}");
        let err = MessageTemplate::compile("Hi", "{{#> layout}}x{{/layout}}", None).unwrap_err();
        assert!(matches!(err, TemplateError::Partial { .. }), "{err:?}");
        let err =
            MessageTemplate::compile("Hi", "{{#*inline \"f\"}}x{{/inline}}", None).unwrap_err();
        assert!(matches!(err, TemplateError::Decorator { .. }), "{err:?}");
    }

    #[test]
    fn unknown_helpers_are_refused_at_compile_time() {
        let err = MessageTemplate::compile("Hi", "<p>{{upper name}}</p>", None).unwrap_err();
        assert!(
            matches!(&err, TemplateError::UnknownHelper { part: Part::Html, name } if name == "upper"),
            "{err:?}"
        );
        let err = MessageTemplate::compile("{{#loud}}x{{/loud}}", "<p>x</p>", None).unwrap_err();
        assert_eq!(err.part(), Part::Subject);
        let err = MessageTemplate::compile("Hi", "{{#if (shout x)}}y{{/if}}", None).unwrap_err();
        assert!(
            matches!(err, TemplateError::UnknownHelper { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn builtin_helpers_work() {
        let t = MessageTemplate::compile(
            "{{#if (eq plan \"pro\")}}Pro{{else}}Free{{/if}} {{#unless vip}}member{{/unless}}",
            "<p>{{#if (and (gt score 3) (not vip))}}high{{/if}}{{len city}}</p>",
            None,
        )
        .unwrap();
        let out = t
            .render(
                &email(),
                &attrs(&[
                    ("plan", "pro".into()),
                    ("vip", false.into()),
                    ("score", 5.into()),
                    ("city", "Kyoto".into()),
                ]),
            )
            .unwrap();
        assert_eq!(out.subject, "Pro member");
        assert_eq!(out.html, "<p>high5</p>");
        assert_eq!(t.variables(), names(&["city", "plan", "score", "vip"]));
    }

    #[test]
    fn variables_are_found_in_the_ast() {
        let t = MessageTemplate::compile(
            "{{first_name}} {{this.last_name}}",
            concat!(
                "{{@root.city}} {{./plan}} {{{raw_html}}} {{email}}",
                "{{#with account}}{{name}} {{../country}} {{@root.zip}}{{else}}{{fallback}}{{/with}}",
                "{{#each items as |item i|}}{{item.name}} {{i}} {{@index}} {{this}}{{/each}}",
                "{{lookup this \"dynamic\"}} {{!-- {{comment}} --}} {{amazonSESUnsubscribeUrl}}",
                "{{#if (eq tier \"gold\")}}{{else if silver}}{{/if}}"
            ),
            Some("{{text_only}} {{log note}}"),
        )
        .unwrap();
        assert_eq!(
            t.variables(),
            names(&[
                "account",
                "city",
                "country",
                "email",
                "fallback",
                "first_name",
                "items",
                "last_name",
                "note",
                "plan",
                "raw_html",
                "silver",
                "text_only",
                "tier",
                "zip",
            ])
        );
        assert_eq!(
            t.part_variables(Part::Subject),
            names(&["first_name", "last_name"])
        );
        assert_eq!(t.part_variables(Part::Text), names(&["note", "text_only"]));
    }

    #[test]
    fn the_text_part_is_derived_from_the_html() {
        let html = concat!(
            "<html><head><style>p { color: red }</style></head><body>",
            "<h1>Winter news for {{first_name}}</h1>",
            "<p>Dear {{first_name}}{{#if last_name}} {{last_name}}{{/if}}, it is snowing in ",
            "<b>{{city}}</b> &amp; elsewhere. This sentence is long enough that the converter ",
            "has to wrap it over more than one line of text.</p>",
            r#"<p><a href="https://hikyaku.example/news?id=1&amp;x=2">Read more</a></p>"#,
            r#"<p><a href="{{amazonSESUnsubscribeUrl}}">Unsubscribe</a></p>"#,
            "</body></html>"
        );
        let t = MessageTemplate::compile("Hi", html, None).unwrap();
        assert!(t.text_is_derived());
        let source = t.text_source();
        assert!(
            source.contains("{{first_name}}{{#if last_name}} {{last_name}}{{/if}}"),
            "{source}"
        );
        assert!(source.contains("{{amazonSESUnsubscribeUrl}}"), "{source}");
        assert!(
            source.contains("https://hikyaku.example/news?id=1&x=2"),
            "{source}"
        );
        assert!(
            !source.contains("<p>") && !source.contains("color"),
            "{source}"
        );
        assert!(source.lines().all(|l| l.chars().count() <= 90), "{source}");
        assert_eq!(t.part_variables(Part::Text), t.part_variables(Part::Html));

        let out = t
            .render(
                &email(),
                &attrs(&[
                    ("first_name", "Aiko".into()),
                    ("city", "Sapporo & Otaru".into()),
                ]),
            )
            .unwrap();
        assert!(
            out.text.contains("Dear Aiko, it is snowing in"),
            "{}",
            out.text
        );
        // Not HTML-escaped in the text part.
        assert!(out.text.contains("Sapporo & Otaru"), "{}", out.text);
        assert!(
            out.text.contains("{{amazonSESUnsubscribeUrl}}"),
            "{}",
            out.text
        );
        assert!(out.html.contains("Sapporo &amp; Otaru"), "{}", out.html);
    }

    #[test]
    fn a_derived_text_that_does_not_compile_says_so() {
        // The block opens in an attribute html2text drops, and closes in the text.
        let html = r#"<p title="{{#if vip}}">x</p><p>{{/if}}</p>"#;
        let err = MessageTemplate::compile("Hi", html, None).unwrap_err();
        assert!(matches!(err, TemplateError::DerivedText { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("text:") && msg.contains("give the text part explicitly"),
            "{msg}"
        );
        // The same html with an explicit text part is fine.
        MessageTemplate::compile("Hi", html, Some("x")).unwrap();
    }

    #[test]
    fn a_whole_block_in_a_dropped_attribute_is_dropped_from_the_text() {
        let html = r#"<p class="{{#if vip}}vip{{/if}}">Hi {{name}}</p>"#;
        let t = MessageTemplate::compile("Hi", html, None).unwrap();
        assert_eq!(t.text_source().trim(), "Hi {{name}}");
        assert_eq!(t.part_variables(Part::Text), names(&["name"]));
    }

    #[test]
    fn syntax_errors_say_what_is_likely_wrong() {
        let err = MessageTemplate::compile("Hi", "<p>\n{{#if x}}open</p>", None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("line 2") && msg.contains("`{{/...}}`"),
            "{msg}"
        );
        let err = MessageTemplate::compile("Hi {{#}} there", "<p>x</p>", None).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
        let err = MessageTemplate::compile("Hi", "{{#if a}}x{{/each}}", None).unwrap_err();
        assert!(err.to_string().contains("\"each\" is closing"), "{err}");
    }

    #[test]
    fn a_helper_argument_without_a_value_is_explained() {
        let t = MessageTemplate::compile("Hi", "{{#if (eq plan 'x')}}y{{/if}}", Some("x")).unwrap();
        let err = t.render(&email(), &Attributes::new()).unwrap_err();
        assert_eq!(err.part(), Part::Html);
        assert!(err.to_string().contains("`eq`"), "{err}");
    }

    #[test]
    fn masking_round_trips() {
        let src = "a {{x}} b {{{y}}} {{!-- c }} --}} {{#if z}}d{{/if}} {{ unclosed";
        let (masked, exprs, prefix) = mask_expressions(src);
        assert!(!masked.contains("{{x}}"));
        assert_eq!(exprs.len(), 5);
        assert_eq!(unmask_expressions(&masked, &exprs, &prefix), src);
        let (_, _, prefix) = mask_expressions("hbsexpr0q {{x}}");
        assert_eq!(prefix, "hbsexprx");
    }

    #[test]
    fn email_is_always_available_and_wins_over_an_attribute() {
        let t = MessageTemplate::compile("{{email}}", "<p>{{email}}</p>", None).unwrap();
        let out = t
            .render(&email(), &attrs(&[("email", "spoof@example.com".into())]))
            .unwrap();
        assert_eq!(out.subject, "aiko@example.com");
        assert_eq!(t.variables(), names(&["email"]));
    }

    #[test]
    fn the_template_is_cheap_to_clone_and_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MessageTemplate>();
        let t = MessageTemplate::compile("Hi", "<p>x</p>", None).unwrap();
        let u = t.clone();
        assert!(Arc::ptr_eq(&t.inner, &u.inner));
        assert!(format!("{t:?}").contains("MessageTemplate"));
    }

    proptest! {
        #[test]
        fn the_subject_never_carries_control_characters(value in any::<String>()) {
            let t = MessageTemplate::compile("Re: {{v}}", "<p>{{v}}</p>", None).unwrap();
            if let Ok(out) = t.render(&email(), &attrs(&[("v", value.into())])) {
                prop_assert!(!out.subject.chars().any(|c| c.is_control()));
                let has_separator = out.subject.contains(['\u{2028}', '\u{2029}']);
                prop_assert!(!has_separator);
                prop_assert!(out.subject.chars().count() <= MAX_SUBJECT_CHARS);
            }
        }

        #[test]
        fn html_values_never_inject_markup(value in "[<>&\"'a-z ]{0,30}") {
            let t = MessageTemplate::compile("x", "<p>{{v}}</p>", None).unwrap();
            let out = t.render(&email(), &attrs(&[("v", value.into())])).unwrap();
            let inner = &out.html[3..out.html.len() - 4];
            prop_assert!(!inner.contains(['<', '>', '"', '\'']));
        }
    }
}
