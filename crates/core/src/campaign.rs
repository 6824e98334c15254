//! Campaigns: defined by an operator in a TOML file, stored as JSON (the
//! [`CampaignDefinition`], self-contained: template files are inlined), and rebuilt into a
//! validated [`Campaign`] wherever they are used.
//!
//! ```toml
//! id = "winter-newsletter"
//! list = "newsletter"
//! segment = "mail_allowed == 1 && account_type == 2"   # optional: the whole list without it
//! subject = "{{first_name}}, the winter issue"
//! html_file = "newsletter.html"                         # or html = "..."
//! # text_file = "newsletter.txt"                       # or text = "..."; derived from the html if absent
//! reply_to = ["support@hikyaku.example"]                # optional
//!
//! [from]
//! address = "news@hikyaku.example"
//! name = "Hikyaku News"                                 # optional
//!
//! [ses]                                                 # all optional
//! configuration_set = "hikyaku"
//! contact_list = "newsletter"
//! topic = "weekly"                                      # needs contact_list
//! region = "eu-west-1"
//! sending_role_arn = "arn:aws:iam::111122223333:role/hikyaku-sending"  # another account's SES
//! external_id = "a-long-random-string"                  # needs sending_role_arn
//!
//! [limits]                                              # all optional
//! max_bounce_rate = 0.05                                # pause the run above this
//! max_complaint_rate = 0.001
//! send_rate = 10                                        # emails a second, at most
//! min_sends = 200                                       # judge the rates from this many sends
//! skip_mailed_within_days = 7                           # skip contacts mailed this recently
//!
//! [canary]                                              # optional: see `crate::canary`
//! size = 1000                                           # or share = 0.05 of the audience
//! wait_minutes = 30                                     # hold the rest this long after the fan-out
//! above = 10000                                         # only for audiences larger than this
//! # enabled = false                                     # no canary, not even the default one
//! ```
//!
//! Every problem is reported with the field it is about, and all of them at once.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::canary::{CanaryDefinition, CanaryPlan};
use crate::contact::ListSchema;
use crate::email::EmailAddress;
use crate::ids::{CampaignId, ListId};
use crate::segment::Segment;
use crate::template::{MessageTemplate, Part, TemplateError};

pub const DEFAULT_MAX_BOUNCE_RATE: f64 = 0.05;
pub const DEFAULT_MAX_COMPLAINT_RATE: f64 = 0.001;
/// Resolved sends before the rates are judged: at 200, one complaint is 0.5%.
pub const DEFAULT_MIN_SENDS: u64 = 200;
/// Longest sender display name accepted, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// SES names (configuration set, contact list, topic): letters, digits, `-`, `_`, this long.
pub const MAX_SES_NAME_LEN: usize = 64;

/// A campaign as written by its operator. Stored as JSON; [`Campaign::from_definition`] turns it
/// into a validated campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDefinition {
    /// `[A-Za-z0-9_-]`, 1 to 64 characters (it travels in SES message tags).
    #[serde(default)]
    pub id: String,
    /// The contact list the audience comes from.
    #[serde(default)]
    pub list: String,
    /// A CEL expression over contact attributes; absent: every contact of the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(default)]
    pub from: SenderDefinition,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<String>,
    /// Handlebars template of the subject.
    #[serde(default)]
    pub subject: String,
    /// Handlebars template of the HTML part (or `html_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Path of the HTML template, relative to the campaign file; inlined into `html` on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_file: Option<String>,
    /// Handlebars template of the text part (or `text_file`); derived from the HTML if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Path of the text template, relative to the campaign file; inlined into `text` on load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_file: Option<String>,
    #[serde(default)]
    pub ses: SesSettings,
    #[serde(default)]
    pub limits: Limits,
    /// The `[canary]` table; absent: the default canary, for large audiences only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryDefinition>,
}

/// The `[from]` table: the sender's address and optional display name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderDefinition {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The `[ses]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesSettings {
    /// Configuration set whose event destination feeds hikyaku's feedback (bounces etc.).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_set: Option<String>,
    /// SES contact list for subscription management (`{{amazonSESUnsubscribeUrl}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_list: Option<String>,
    /// Topic of `contact_list`; requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Region to send from; absent: the Lambda's own region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A role of another AWS account to send through its SES (`infra/sending-role.yaml`);
    /// absent: the sender's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_role_arn: Option<String>,
    /// The external id the sending role's trust policy asks for; requires the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The SES account and region a campaign's mail leaves from. Quotas, reputation and health
/// belong to an account in a region, so the send budget keeps one schedule per
/// [`SendingAccount::scope`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SendingAccount {
    /// `None`: the sender's own region.
    pub region: Option<String>,
    /// `None`: the sender's own account and credentials.
    pub role: Option<SendingRole>,
}

/// A role of another account that the sender assumes to send through that account's SES.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SendingRole {
    pub arn: String,
    pub external_id: Option<String>,
}

impl SendingRole {
    /// The account that owns the role: the fifth field of its ARN (validated with the
    /// campaign).
    pub fn account_id(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }
}

impl SendingAccount {
    /// The key of this account's send budget: `default` or the region for the sender's own
    /// account, `<account id>/<region or default>` for another account's. Two roles of one
    /// account share its budget, as they share its SES quota.
    pub fn scope(&self) -> String {
        let region = self.region.as_deref().unwrap_or("default");
        match &self.role {
            None => region.to_owned(),
            Some(role) => format!("{}/{region}", role.account_id()),
        }
    }
}

impl fmt::Display for SendingAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let region = self.region.as_deref().unwrap_or("the default region");
        match &self.role {
            None => write!(f, "the sender's own account in {region}"),
            Some(role) => write!(f, "account {} in {region}", role.account_id()),
        }
    }
}

impl SesSettings {
    /// Where this campaign's mail leaves from.
    pub fn sending_account(&self) -> SendingAccount {
        SendingAccount {
            region: self.region.clone(),
            role: self.sending_role_arn.as_ref().map(|arn| SendingRole {
                arn: arn.clone(),
                external_id: self.external_id.clone(),
            }),
        }
    }

    /// The contact list and topic the campaign sends under, whose unsubscribes it honours.
    pub fn list_topic(&self) -> Option<crate::ports::ListTopic> {
        self.contact_list
            .as_ref()
            .map(|contact_list| crate::ports::ListTopic {
                contact_list: contact_list.clone(),
                topic: self.topic.clone(),
            })
    }
}

/// The `[limits]` table: guardrails of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Pause the run when its bounce rate goes above this; in (0, 1).
    #[serde(default = "default_max_bounce_rate")]
    pub max_bounce_rate: f64,
    /// Pause the run when its complaint rate goes above this; in (0, 1).
    #[serde(default = "default_max_complaint_rate")]
    pub max_complaint_rate: f64,
    /// At most this many emails a second for this campaign (the account's rate still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_rate: Option<f64>,
    /// The rates are judged once this many sends of a run have a known fate; below it a single
    /// bounce moves them too much.
    #[serde(default = "default_min_sends")]
    pub min_sends: u64,
    /// Skip contacts another run mailed within this many days (from their last send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_mailed_within_days: Option<u32>,
}

fn default_min_sends() -> u64 {
    DEFAULT_MIN_SENDS
}

impl Limits {
    pub fn guardrails(&self) -> crate::feedback::Guardrails {
        crate::feedback::Guardrails {
            max_bounce_rate: self.max_bounce_rate,
            max_complaint_rate: self.max_complaint_rate,
            min_sends: self.min_sends,
        }
    }
}

fn default_max_bounce_rate() -> f64 {
    DEFAULT_MAX_BOUNCE_RATE
}

fn default_max_complaint_rate() -> f64 {
    DEFAULT_MAX_COMPLAINT_RATE
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bounce_rate: DEFAULT_MAX_BOUNCE_RATE,
            max_complaint_rate: DEFAULT_MAX_COMPLAINT_RATE,
            send_rate: None,
            min_sends: DEFAULT_MIN_SENDS,
            skip_mailed_within_days: None,
        }
    }
}

/// One problem, and the field it is about (`subject`, `ses.topic`, `reply_to[1]`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    /// One line, whatever the problem's text holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self
            .problem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        write!(f, "{}: {}", self.field, parts.join("; "))
    }
}

/// Everything wrong with a campaign, one "field: problem" a line.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{}", lines(.0))]
pub struct CampaignErrors(pub Vec<FieldError>);

fn lines(errors: &[FieldError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl CampaignErrors {
    /// The fields that have problems, in order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }

    /// The problems reported for one field.
    pub fn problems(&self, field: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|e| e.field == field)
            .map(|e| e.problem.as_str())
            .collect()
    }
}

impl CampaignDefinition {
    /// Parses a campaign file's text. `html_file` and `text_file` are read relative to
    /// `base_dir` (the current directory without one) and inlined, so the result is
    /// self-contained. The content itself is validated by [`Campaign::from_definition`].
    pub fn from_toml_str(
        s: &str,
        base_dir: Option<&Path>,
    ) -> Result<CampaignDefinition, CampaignErrors> {
        let mut def: CampaignDefinition =
            toml::from_str(s).map_err(|e| CampaignErrors(vec![toml_error(s, &e)]))?;
        let mut errors = Vec::new();
        inline_file(
            &mut def.html,
            &mut def.html_file,
            "html",
            base_dir,
            &mut errors,
        );
        inline_file(
            &mut def.text,
            &mut def.text_file,
            "text",
            base_dir,
            &mut errors,
        );
        if errors.is_empty() {
            Ok(def)
        } else {
            Err(CampaignErrors(errors))
        }
    }

    /// Reads and parses a campaign file; template files are relative to its folder.
    pub fn from_toml_file(path: &Path) -> Result<CampaignDefinition, CampaignErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CampaignErrors(vec![FieldError::new(
                "file",
                format!("cannot read '{}': {e}", path.display()),
            )])
        })?;
        Self::from_toml_str(&text, path.parent())
    }
}

fn inline_file(
    inline: &mut Option<String>,
    file: &mut Option<String>,
    field: &str,
    base_dir: Option<&Path>,
    errors: &mut Vec<FieldError>,
) {
    let Some(name) = file.take() else {
        return;
    };
    let file_field = format!("{field}_file");
    if inline.is_some() {
        errors.push(FieldError::new(
            &file_field,
            format!("give either `{field}` or `{file_field}`, not both"),
        ));
        return;
    }
    let path: PathBuf = match base_dir {
        Some(dir) => dir.join(&name),
        None => PathBuf::from(&name),
    };
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(content) => *inline = Some(content),
            Err(_) => errors.push(FieldError::new(
                file_field,
                format!("'{}' is not UTF-8 text", path.display()),
            )),
        },
        Err(e) => errors.push(FieldError::new(
            file_field,
            format!("cannot read '{}': {e}", path.display()),
        )),
    }
}

/// Turns a TOML error into a field error: the field is the key the error points at (prefixed
/// with its `[table]`), the problem toml's message with the line and column.
fn toml_error(source: &str, e: &toml::de::Error) -> FieldError {
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return FieldError::new("campaign", message);
    };
    let start = span.start.min(source.len());
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let line_no = source[..start].matches('\n').count() + 1;
    let column = source[line_start..start].chars().count() + 1;
    let line = source[line_start..line_end].trim();

    let table = source[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find_map(table_header);
    let field = if let Some(header) = table_header(line) {
        header
    } else if let Some((key, _)) = line.split_once('=') {
        let key = key.trim().trim_matches(['"', '\'']).to_owned();
        match table {
            Some(t) => format!("{t}.{key}"),
            None => key,
        }
    } else {
        table.unwrap_or_else(|| "campaign".to_owned())
    };
    FieldError::new(
        field,
        format!("{message} (line {line_no}, column {column})"),
    )
}

fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let end = inner.find(']')?;
    Some(inner[..end].trim().to_owned())
}

/// A sender: address and optional display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub address: EmailAddress,
    pub name: Option<String>,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum MailboxError {
    #[error("the display name is empty; remove it or give a name")]
    EmptyName,
    #[error("the display name contains a control character ({code}) at position {position}")]
    ControlCharacter { position: usize, code: String },
    #[error(
        "the display name is {len} characters long; at most {MAX_DISPLAY_NAME_CHARS} are allowed"
    )]
    NameTooLong { len: usize },
}

impl Mailbox {
    /// A mailbox; the display name is trimmed and must be one line of text.
    pub fn new(address: EmailAddress, name: Option<&str>) -> Result<Mailbox, MailboxError> {
        let name = match name {
            None => None,
            Some(raw) => {
                if let Some((i, c)) = raw.chars().enumerate().find(|(_, c)| c.is_control()) {
                    return Err(MailboxError::ControlCharacter {
                        position: i + 1,
                        code: format!("U+{:04X}", u32::from(c)),
                    });
                }
                let trimmed = raw.trim();
                if trimmed.is_empty() {
                    return Err(MailboxError::EmptyName);
                }
                let len = trimmed.chars().count();
                if len > MAX_DISPLAY_NAME_CHARS {
                    return Err(MailboxError::NameTooLong { len });
                }
                Some(trimmed.to_owned())
            }
        };
        Ok(Mailbox { address, name })
    }

    /// RFC 5322 value for SES `FromEmailAddress`: `"Example News" <news@example.com>`, the name
    /// quoted with `\` before `"` and `\`; a non-ASCII name as RFC 2047 encoded-words
    /// (`=?UTF-8?B?...?=`); the bare address without a name.
    pub fn header_value(&self) -> String {
        match &self.name {
            None => self.address.to_string(),
            Some(name) if name.is_ascii() => {
                let mut quoted = String::with_capacity(name.len() + 2);
                quoted.push('"');
                for c in name.chars() {
                    if matches!(c, '"' | '\\') {
                        quoted.push('\\');
                    }
                    quoted.push(c);
                }
                quoted.push('"');
                format!("{quoted} <{}>", self.address)
            }
            Some(name) => format!("{} <{}>", encoded_words(name), self.address),
        }
    }
}

/// RFC 2047 `B` encoded-words, each at most 75 characters, split between characters.
fn encoded_words(text: &str) -> String {
    // 45 bytes → 60 base64 characters, + 12 for `=?UTF-8?B?` and `?=` = 72 ≤ 75.
    const MAX_BYTES: usize = 45;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > MAX_BYTES {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join(" ")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A validated campaign, ready for the fan-out and the sender.
#[derive(Clone, Debug)]
pub struct Campaign {
    pub id: CampaignId,
    pub list: ListId,
    pub segment: Option<Segment>,
    pub from: Mailbox,
    pub reply_to: Vec<EmailAddress>,
    pub template: MessageTemplate,
    pub ses: SesSettings,
    pub limits: Limits,
    /// `None`: no canary slice.
    pub canary: Option<CanaryPlan>,
    pub definition: CampaignDefinition,
}

impl Campaign {
    /// Validates everything, collecting all the problems. With a schema, also checks that every
    /// template variable and segment attribute exists in the list (`email` always does).
    pub fn from_definition(
        def: CampaignDefinition,
        schema: Option<&ListSchema>,
    ) -> Result<Campaign, CampaignErrors> {
        let mut errors = Vec::new();
        let mut problem = |field: &str, p: String| errors.push(FieldError::new(field, p));

        let id = CampaignId::parse(&def.id)
            .map_err(|e| problem("id", required_or(&def.id, e.to_string())))
            .ok();
        let list = ListId::parse(&def.list)
            .map_err(|e| problem("list", required_or(&def.list, e.to_string())))
            .ok();

        let segment = match def.segment.as_deref() {
            None => None,
            Some(source) => match Segment::parse(source) {
                Ok(segment) => {
                    if let Some(schema) = schema
                        && let Err(e) = segment.validate(schema)
                    {
                        problem("segment", e.to_string());
                    }
                    Some(segment)
                }
                Err(e) => {
                    problem("segment", e.to_string());
                    None
                }
            },
        };

        let address = if def.from.address.trim().is_empty() {
            problem("from.address", "is required".to_owned());
            None
        } else {
            EmailAddress::parse(&def.from.address)
                .map_err(|e| problem("from.address", e.to_string()))
                .ok()
        };
        let from = match address {
            Some(address) => Mailbox::new(address, def.from.name.as_deref())
                .map_err(|e| problem("from.name", e.to_string()))
                .ok(),
            None => {
                if let Some(name) = def.from.name.as_deref()
                    && let Err(e) = Mailbox::new(placeholder_address(), Some(name))
                {
                    problem("from.name", e.to_string());
                }
                None
            }
        };

        let mut reply_to = Vec::with_capacity(def.reply_to.len());
        for (i, raw) in def.reply_to.iter().enumerate() {
            match EmailAddress::parse(raw) {
                Ok(a) => reply_to.push(a),
                Err(e) => problem(&format!("reply_to[{i}]"), e.to_string()),
            }
        }

        if def.html_file.is_some() {
            problem(
                "html_file",
                "is not inlined; load the campaign with from_toml_str or from_toml_file".to_owned(),
            );
        }
        if def.text_file.is_some() {
            problem(
                "text_file",
                "is not inlined; load the campaign with from_toml_str or from_toml_file".to_owned(),
            );
        }
        let template = match def.html.as_deref() {
            None => {
                if def.html_file.is_none() {
                    problem("html", "is required: give `html` or `html_file`".to_owned());
                }
                None
            }
            Some(html) => {
                match MessageTemplate::compile_all_errors(&def.subject, html, def.text.as_deref()) {
                    Ok(template) => Some(template),
                    Err(template_errors) => {
                        for e in template_errors {
                            problem(e.part().as_str(), template_problem(&e));
                        }
                        None
                    }
                }
            }
        };
        if def.html.is_none() && def.subject.trim().is_empty() {
            problem("subject", "is required".to_owned());
        }
        if let (Some(template), Some(schema)) = (&template, schema) {
            for part in [Part::Subject, Part::Html, Part::Text] {
                let unknown: Vec<String> = template
                    .part_variables(part)
                    .into_iter()
                    .filter(|v| !schema.knows(v))
                    .collect();
                if !unknown.is_empty() {
                    let uses: Vec<String> =
                        unknown.iter().map(|v| format!("`{{{{{v}}}}}`")).collect();
                    problem(
                        part.as_str(),
                        format!(
                            "uses {}, which the list does not have (known: {})",
                            uses.join(", "),
                            schema.known_names().join(", ")
                        ),
                    );
                }
            }
        }

        check_ses(&def.ses, &mut problem);
        check_limits(&def.limits, &mut problem);
        let canary = CanaryPlan::from_definition(def.canary.as_ref(), &mut problem);

        match (id, list, from, template) {
            (Some(id), Some(list), Some(from), Some(template)) if errors.is_empty() => {
                Ok(Campaign {
                    id,
                    list,
                    segment,
                    from,
                    reply_to,
                    template,
                    ses: def.ses.clone(),
                    limits: def.limits.clone(),
                    canary,
                    definition: def,
                })
            }
            _ => Err(CampaignErrors(errors)),
        }
    }
}

fn required_or(value: &str, problem: String) -> String {
    if value.is_empty() {
        "is required".to_owned()
    } else {
        problem
    }
}

fn placeholder_address() -> EmailAddress {
    EmailAddress::parse("sender@example.com").expect("a valid literal address")
}

/// The template's message without its leading `part: `, since the field names the part.
fn template_problem(e: &TemplateError) -> String {
    let message = e.to_string();
    let prefix = format!("{}: ", e.part());
    message
        .strip_prefix(&prefix)
        .map_or(message.clone(), str::to_owned)
}

fn check_ses(ses: &SesSettings, problem: &mut impl FnMut(&str, String)) {
    for (field, value) in [
        ("ses.configuration_set", &ses.configuration_set),
        ("ses.contact_list", &ses.contact_list),
        ("ses.topic", &ses.topic),
    ] {
        if let Some(value) = value
            && let Err(p) = check_ses_name(value)
        {
            problem(field, p);
        }
    }
    if ses.topic.is_some() && ses.contact_list.is_none() {
        problem(
            "ses.topic",
            "needs `ses.contact_list`: a topic belongs to a contact list".to_owned(),
        );
    }
    if let Some(region) = &ses.region
        && !looks_like_region(region)
    {
        problem(
            "ses.region",
            format!("'{region}' does not look like an AWS region (e.g. us-east-1, eu-west-2)"),
        );
    }
    if let Some(arn) = &ses.sending_role_arn
        && let Err(p) = check_role_arn(arn)
    {
        problem("ses.sending_role_arn", p);
    }
    if let Some(external_id) = &ses.external_id {
        if ses.sending_role_arn.is_none() {
            problem(
                "ses.external_id",
                "needs `ses.sending_role_arn`: the external id is presented when assuming it"
                    .to_owned(),
            );
        }
        if let Err(p) = check_external_id(external_id) {
            problem("ses.external_id", p);
        }
    }
}

/// Longest IAM role name.
const MAX_ROLE_NAME_LEN: usize = 64;
/// STS `ExternalId`: 2 to 1,224 characters of `[\w+=,.@:/-]`.
const EXTERNAL_ID_LEN: std::ops::RangeInclusive<usize> = 2..=1224;

/// `arn:<partition>:iam::<12 digits>:role/<optional path/>name`.
fn check_role_arn(arn: &str) -> Result<(), String> {
    let example = "e.g. arn:aws:iam::111122223333:role/hikyaku-sending";
    let fields: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = fields.as_slice() else {
        return Err(format!("'{arn}' is not a role ARN ({example})"));
    };
    if *scheme != "arn" || !partition.starts_with("aws") || *service != "iam" || !region.is_empty()
    {
        return Err(format!("'{arn}' is not an IAM role ARN ({example})"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{arn}' names the account '{account}'; an account id is 12 digits ({example})"
        ));
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(format!("'{arn}' is not a role ARN ({example})"));
    };
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    let name_ok = (1..=MAX_ROLE_NAME_LEN).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if !name_ok {
        return Err(format!(
            "'{arn}' has the role name '{name}'; a role name is 1 to {MAX_ROLE_NAME_LEN} letters, digits or +=,.@_-"
        ));
    }
    Ok(())
}

fn check_external_id(external_id: &str) -> Result<(), String> {
    let len = external_id.chars().count();
    if !EXTERNAL_ID_LEN.contains(&len) {
        return Err(format!(
            "is {len} characters long; STS takes {} to {}",
            EXTERNAL_ID_LEN.start(),
            EXTERNAL_ID_LEN.end()
        ));
    }
    if let Some(c) = external_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(*c)))
    {
        return Err(format!(
            "contains '{}'; only letters, digits and +=,.@:/_- are allowed",
            c.escape_default()
        ));
    }
    Ok(())
}

fn check_ses_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty; remove it or give a name".to_owned());
    }
    let len = value.chars().count();
    if len > MAX_SES_NAME_LEN {
        return Err(format!(
            "'{value}' is {len} characters long; at most {MAX_SES_NAME_LEN} are allowed"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "'{value}' contains '{}'; only letters, digits, '-' and '_' are allowed",
            c.escape_default()
        ));
    }
    Ok(())
}

/// `us-east-1`, `eu-central-2`, `ap-southeast-1`, `us-gov-west-1`, `cn-north-1`: a two-letter
/// prefix, one or more lower-case words, and a number.
fn looks_like_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let [prefix, middle @ .., number] = parts.as_slice() else {
        return false;
    };
    prefix.len() == 2
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && (1..=2).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

fn check_limits(limits: &Limits, problem: &mut impl FnMut(&str, String)) {
    for (field, value) in [
        ("limits.max_bounce_rate", limits.max_bounce_rate),
        ("limits.max_complaint_rate", limits.max_complaint_rate),
    ] {
        if !(value > 0.0 && value < 1.0) {
            problem(
                field,
                format!("{value} is not a rate between 0 and 1 (exclusive), e.g. 0.05 for 5%"),
            );
        }
    }
    if limits.min_sends == 0 {
        problem(
            "limits.min_sends",
            "must be at least 1: the rates of no sends mean nothing".to_owned(),
        );
    }
    if let Some(rate) = limits.send_rate
        && !(rate.is_finite() && rate > 0.0)
    {
        problem(
            "limits.send_rate",
            format!("{rate} is not a positive number of emails a second"),
        );
    }
    if let Some(days) = limits.skip_mailed_within_days
        && !(1..=MAX_SKIP_MAILED_DAYS).contains(&days)
    {
        problem(
            "limits.skip_mailed_within_days",
            format!("{days} is not a number of days from 1 to {MAX_SKIP_MAILED_DAYS}"),
        );
    }
}

/// The longest frequency cap: a year.
pub const MAX_SKIP_MAILED_DAYS: u32 = 366;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{AttrKind, AttrValue, Attributes};

    const MINIMAL: &str = r#"
id = "winter"
list = "newsletter"
subject = "Hi {{first_name}}"
html = "<p>Hello {{first_name}}</p>"

[from]
address = "news@hikyaku.example"
"#;

    fn def(toml: &str) -> CampaignDefinition {
        CampaignDefinition::from_toml_str(toml, None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(toml: &str) -> CampaignErrors {
        match CampaignDefinition::from_toml_str(toml, None) {
            Err(e) => e,
            Ok(d) => Campaign::from_definition(d, None).expect_err("should be invalid"),
        }
    }

    fn schema(pairs: &[(&str, AttrKind)]) -> ListSchema {
        ListSchema {
            attributes: pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn a_minimal_campaign_gets_defaults() {
        let c = Campaign::from_definition(def(MINIMAL), None).unwrap();
        assert_eq!(c.id.as_str(), "winter");
        assert_eq!(c.list.as_str(), "newsletter");
        assert!(c.segment.is_none());
        assert_eq!(c.from.header_value(), "news@hikyaku.example");
        assert!(c.reply_to.is_empty());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.max_bounce_rate, 0.05);
        assert_eq!(c.limits.max_complaint_rate, 0.001);
        assert_eq!(c.ses, SesSettings::default());
        assert!(c.template.text_is_derived());
    }

    #[test]
    fn a_canary_table_is_read_and_its_mistakes_named() {
        let c = Campaign::from_definition(
            def(&format!(
                "{MINIMAL}\n[canary]\nshare = 0.05\nwait_minutes = 45\nabove = 5000\n"
            )),
            None,
        )
        .unwrap();
        let plan = c.canary.unwrap();
        assert_eq!(plan.slice, crate::canary::SliceSize::Share(0.05));
        assert_eq!((plan.wait_secs, plan.above), (2_700, Some(5_000)));
        let json = serde_json::to_string(&c.definition).unwrap();
        let back: CampaignDefinition = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c.definition);

        let off = Campaign::from_definition(
            def(&format!("{MINIMAL}\n[canary]\nenabled = false\n")),
            None,
        )
        .unwrap();
        assert_eq!(off.canary, None);
        let default = Campaign::from_definition(def(MINIMAL), None).unwrap();
        assert_eq!(default.canary.unwrap().above, Some(10_000));

        let e = errors(&format!(
            "{MINIMAL}\n[canary]\nsize = 0\nwait_minutes = -1\n"
        ));
        let text = e.to_string();
        assert!(text.contains("canary.size"), "{text}");
        assert!(text.contains("canary.wait_minutes"), "{text}");
        let unknown =
            CampaignDefinition::from_toml_str(&format!("{MINIMAL}\n[canary]\nslice = 10\n"), None)
                .unwrap_err()
                .to_string();
        assert!(unknown.contains("slice"), "{unknown}");
    }

    #[test]
    fn the_definition_round_trips_through_json() {
        let d = def(MINIMAL);
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("html_file"), "{json}");
        let back: CampaignDefinition = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        let c = Campaign::from_definition(back, None).unwrap();
        assert_eq!(c.definition, d);
    }

    #[test]
    fn unknown_keys_are_named_with_their_table_and_line() {
        let e = errors(&format!("{MINIMAL}colour = \"blue\"\n"));
        assert_eq!(e.fields(), vec!["from.colour"]);
        let problem = e.problems("from.colour")[0];
        assert!(problem.contains("unknown field `colour`"), "{problem}");
        assert!(problem.contains("line 9"), "{problem}");

        let e = errors(&format!("{MINIMAL}\n[ses]\ntopik = \"weekly\"\n"));
        assert_eq!(e.fields(), vec!["ses.topik"], "{e}");

        let e = errors("sujet = \"x\"\n");
        assert_eq!(e.fields(), vec!["sujet"], "{e}");

        let e = errors(&format!("{MINIMAL}\n[limitz]\nx = 1\n"));
        assert_eq!(e.fields(), vec!["limitz"], "{e}");
    }

    #[test]
    fn wrong_types_and_bad_toml_are_named() {
        let e = errors("id = 3\n");
        assert_eq!(e.fields(), vec!["id"], "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = errors("[limits]\nmax_bounce_rate = \"high\"\n");
        assert_eq!(e.fields(), vec!["limits.max_bounce_rate"], "{e}");
        let e = errors("id = \"unterminated\n");
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].problem.contains("line 1"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors(
            r#"
id = "winter sale"
list = ""
segment = "a == "
reply_to = ["ok@example.com", "not an address"]
subject = "Hi {{amazonSESUnsubscribeUrl}}"
html = "{{> footer}}"
text = "{{#if x}}"

[from]
address = "Name <news@example.com>"
name = "Bad\nName"

[ses]
configuration_set = "has space"
topic = "weekly"
region = "europe"

[limits]
max_bounce_rate = 1.5
max_complaint_rate = 0
send_rate = -1
"#,
        );
        let fields = e.fields();
        for field in [
            "id",
            "list",
            "segment",
            "from.address",
            "from.name",
            "reply_to[1]",
            "subject",
            "html",
            "text",
            "ses.configuration_set",
            "ses.topic",
            "ses.region",
            "limits.max_bounce_rate",
            "limits.max_complaint_rate",
            "limits.send_rate",
        ] {
            assert!(fields.contains(&field), "{field} missing from:\n{e}");
        }
        assert!(!fields.contains(&"reply_to[0]"));
        assert_eq!(e.problems("list"), vec!["is required"]);
        // One "field: problem" a line.
        let text = e.to_string();
        assert_eq!(text.lines().count(), e.0.len());
        assert!(
            text.lines().any(|l| l.starts_with("ses.topic: needs")),
            "{text}"
        );
        // The template's own "part: " prefix is not repeated.
        assert!(!text.contains("subject: subject:"), "{text}");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let e = errors("");
        let fields = e.fields();
        for field in ["id", "list", "from.address", "html", "subject"] {
            assert!(fields.contains(&field), "{field} missing from:\n{e}");
        }
    }

    #[test]
    fn template_files_are_inlined_relative_to_the_campaign_file() {
        let dir = std::env::temp_dir().join(format!("hikyaku-campaign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("body.html"), "<p>Hi {{first_name}}</p>").unwrap();
        std::fs::write(dir.join("body.txt"), "Hi {{first_name}}").unwrap();
        let toml = MINIMAL.replace(
            "html = \"<p>Hello {{first_name}}</p>\"",
            "html_file = \"body.html\"\ntext_file = \"body.txt\"",
        );
        std::fs::write(dir.join("c.toml"), &toml).unwrap();

        let d = CampaignDefinition::from_toml_file(&dir.join("c.toml")).unwrap();
        assert_eq!(d.html.as_deref(), Some("<p>Hi {{first_name}}</p>"));
        assert_eq!(d.text.as_deref(), Some("Hi {{first_name}}"));
        assert!(d.html_file.is_none() && d.text_file.is_none());
        let c = Campaign::from_definition(d, None).unwrap();
        assert!(!c.template.text_is_derived());

        let missing = toml.replace("body.txt", "nope.txt");
        let e = CampaignDefinition::from_toml_str(&missing, Some(&dir)).unwrap_err();
        assert_eq!(e.fields(), vec!["text_file"]);
        assert!(e.0[0].problem.contains("nope.txt"), "{e}");

        let both = MINIMAL.replace("subject =", "html_file = \"body.html\"\nsubject =");
        let e = CampaignDefinition::from_toml_str(&both, Some(&dir)).unwrap_err();
        assert_eq!(e.fields(), vec!["html_file"], "{e}");

        let e = CampaignDefinition::from_toml_file(&dir.join("absent.toml")).unwrap_err();
        assert_eq!(e.fields(), vec!["file"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_definition_with_a_file_reference_is_refused() {
        let mut d = def(MINIMAL);
        d.html = None;
        d.html_file = Some("body.html".into());
        let e = Campaign::from_definition(d, None).unwrap_err();
        assert_eq!(e.fields(), vec!["html_file"], "{e}");
    }

    #[test]
    fn with_a_schema_templates_and_segments_are_checked_against_the_list() {
        let toml = format!(
            "segment = \"mail_allowed == 1 && plan == 'pro'\"\ntext = \"{{{{city}}}} {{{{email}}}}\"\n{MINIMAL}"
        );
        let list = schema(&[
            ("first_name", AttrKind::Str),
            ("mail_allowed", AttrKind::Int),
        ]);
        let e = Campaign::from_definition(def(&toml), Some(&list)).unwrap_err();
        assert_eq!(e.fields(), vec!["segment", "text"], "{e}");
        assert!(e.problems("segment")[0].contains("`plan`"), "{e}");
        let text = e.problems("text")[0];
        assert!(
            text.contains("`{{city}}`") && text.contains("known: email, first_name"),
            "{text}"
        );

        let full = schema(&[
            ("first_name", AttrKind::Str),
            ("mail_allowed", AttrKind::Int),
            ("plan", AttrKind::Str),
            ("city", AttrKind::Str),
        ]);
        Campaign::from_definition(def(&toml), Some(&full)).unwrap();
        let typed = schema(&[
            ("first_name", AttrKind::Str),
            ("mail_allowed", AttrKind::Str),
            ("plan", AttrKind::Str),
            ("city", AttrKind::Str),
        ]);
        let e = Campaign::from_definition(def(&toml), Some(&typed)).unwrap_err();
        // `mail_allowed == 1` on a string attribute would select nobody.
        assert_eq!(e.fields(), vec!["segment"], "{e}");
        assert!(e.problems("segment")[0].contains("never equal"), "{e}");
        // Without a schema nothing is checked against a list.
        Campaign::from_definition(def(&toml), None).unwrap();
    }

    #[test]
    fn ses_settings_are_checked() {
        let with = |ses: &str| errors(&format!("{MINIMAL}\n[ses]\n{ses}\n"));
        let e = with("topic = \"weekly\"");
        assert_eq!(e.fields(), vec!["ses.topic"]);
        assert!(e.to_string().contains("contact_list"), "{e}");
        assert_eq!(
            with(&format!("configuration_set = \"{}\"", "a".repeat(65))).fields(),
            vec!["ses.configuration_set"]
        );
        assert_eq!(
            with("contact_list = \"\"").fields(),
            vec!["ses.contact_list"]
        );
        assert_eq!(
            with("contact_list = \"news.letter\"").fields(),
            vec!["ses.contact_list"]
        );
        for bad in [
            "europe",
            "US-EAST-1",
            "us-east",
            "us-east-x",
            "useast1",
            "us--1",
        ] {
            assert_eq!(
                with(&format!("region = \"{bad}\"")).fields(),
                vec!["ses.region"],
                "{bad}"
            );
        }
        let ok = format!(
            "{MINIMAL}\n[ses]\nconfiguration_set = \"hikyaku_main-1\"\ncontact_list = \"newsletter\"\ntopic = \"weekly\"\nregion = \"us-gov-west-1\"\n"
        );
        let c = Campaign::from_definition(def(&ok), None).unwrap();
        assert_eq!(c.ses.topic.as_deref(), Some("weekly"));
        for region in [
            "us-east-1",
            "eu-central-2",
            "ap-southeast-1",
            "cn-north-1",
            "il-central-1",
        ] {
            assert!(looks_like_region(region), "{region}");
        }
    }

    #[test]
    fn the_frequency_cap_is_a_number_of_days() {
        for bad in ["0", "367"] {
            let e = errors(&format!(
                "{MINIMAL}\n[limits]\nskip_mailed_within_days = {bad}\n"
            ));
            assert_eq!(e.fields(), vec!["limits.skip_mailed_within_days"], "{e}");
        }
        let e = errors(&format!(
            "{MINIMAL}\n[limits]\nskip_mailed_within_days = -1\n"
        ));
        assert!(e.to_string().contains("skip_mailed_within_days"), "{e}");
        let ok = format!("{MINIMAL}\n[limits]\nskip_mailed_within_days = 7\n");
        let c = Campaign::from_definition(def(&ok), None).unwrap();
        assert_eq!(c.limits.skip_mailed_within_days, Some(7));
    }

    #[test]
    fn a_sending_role_is_checked_and_names_its_account() {
        let with = |ses: &str| errors(&format!("{MINIMAL}\n[ses]\n{ses}\n"));
        for bad in [
            "arn:aws:iam::1111222233:role/short-account",
            "arn:aws:iam::111122223333:user/not-a-role",
            "arn:aws:s3:::bucket",
            "arn:aws:iam:eu-west-1:111122223333:role/regional",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:iam::111122223333:role/has space",
            "hikyaku-sending",
        ] {
            let e = with(&format!("sending_role_arn = \"{bad}\""));
            assert_eq!(e.fields(), vec!["ses.sending_role_arn"], "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = with("external_id = \"abcdefgh\"");
        assert_eq!(e.fields(), vec!["ses.external_id"]);
        assert!(e.to_string().contains("sending_role_arn"), "{e}");
        let role = "sending_role_arn = \"arn:aws:iam::111122223333:role/path/hikyaku-sending\"";
        for bad in ["x", "has space", &"a".repeat(1225)] {
            let e = with(&format!("{role}\nexternal_id = \"{bad}\""));
            assert_eq!(e.fields(), vec!["ses.external_id"], "{e}");
        }

        let ok = format!(
            "{MINIMAL}\n[ses]\n{role}\nexternal_id = \"k3y+=,.@:/_-\"\nregion = \"eu-west-1\"\n"
        );
        let c = Campaign::from_definition(def(&ok), None).unwrap();
        let account = c.ses.sending_account();
        let role = account.role.as_ref().unwrap();
        assert_eq!(role.account_id(), "111122223333");
        assert_eq!(role.external_id.as_deref(), Some("k3y+=,.@:/_-"));
        assert_eq!(account.scope(), "111122223333/eu-west-1");
        assert_eq!(account.to_string(), "account 111122223333 in eu-west-1");
        // The sender's own account keeps the scopes budgets were stored under.
        assert_eq!(SendingAccount::default().scope(), "default");
        let own = Campaign::from_definition(def(MINIMAL), None).unwrap();
        assert_eq!(own.ses.sending_account(), SendingAccount::default());
    }

    #[test]
    fn limits_are_checked() {
        let with = |limits: &str| errors(&format!("{MINIMAL}\n[limits]\n{limits}\n"));
        assert_eq!(
            with("max_bounce_rate = 0").fields(),
            vec!["limits.max_bounce_rate"]
        );
        assert_eq!(
            with("max_bounce_rate = 1").fields(),
            vec!["limits.max_bounce_rate"]
        );
        assert_eq!(
            with("max_complaint_rate = -0.1").fields(),
            vec!["limits.max_complaint_rate"]
        );
        assert_eq!(
            with("max_complaint_rate = nan").fields(),
            vec!["limits.max_complaint_rate"]
        );
        assert_eq!(with("send_rate = 0").fields(), vec!["limits.send_rate"]);
        assert_eq!(with("send_rate = inf").fields(), vec!["limits.send_rate"]);
        let ok = format!("{MINIMAL}\n[limits]\nmax_bounce_rate = 0.02\nsend_rate = 14\n");
        let c = Campaign::from_definition(def(&ok), None).unwrap();
        assert_eq!(c.limits.send_rate, Some(14.0));
        assert_eq!(c.limits.max_complaint_rate, DEFAULT_MAX_COMPLAINT_RATE);
    }

    #[test]
    fn header_values_quote_and_encode_names() {
        let addr = EmailAddress::parse("news@example.com").unwrap();
        let mb = |name: Option<&str>| Mailbox::new(addr.clone(), name).unwrap().header_value();
        assert_eq!(mb(None), "news@example.com");
        assert_eq!(
            mb(Some("Example News")),
            "\"Example News\" <news@example.com>"
        );
        assert_eq!(
            mb(Some("The \"Best\" \\ News")),
            r#""The \"Best\" \\ News" <news@example.com>"#
        );
        assert_eq!(mb(Some("  Padded  ")), "\"Padded\" <news@example.com>");
        assert_eq!(mb(Some("飛脚")), "=?UTF-8?B?6aOb6ISa?= <news@example.com>");
        assert_eq!(
            mb(Some("Café News")),
            "=?UTF-8?B?Q2Fmw6kgTmV3cw==?= <news@example.com>"
        );
        // Long names split into several encoded-words of at most 75 characters, never
        // inside a character.
        let long = "飛脚ニュース".repeat(8);
        let value = mb(Some(&long));
        let words: Vec<&str> = value.split(' ').filter(|w| w.starts_with("=?")).collect();
        assert!(words.len() > 1, "{value}");
        assert!(words.iter().all(|w| w.len() <= 75), "{value}");
    }

    #[test]
    fn display_names_must_be_one_line() {
        let addr = EmailAddress::parse("news@example.com").unwrap();
        assert_eq!(
            Mailbox::new(addr.clone(), Some("News\r\nBcc: x@y.com")),
            Err(MailboxError::ControlCharacter {
                position: 5,
                code: "U+000D".into()
            })
        );
        assert_eq!(
            Mailbox::new(addr.clone(), Some("  ")),
            Err(MailboxError::EmptyName)
        );
        assert_eq!(
            Mailbox::new(addr, Some(&"n".repeat(129))),
            Err(MailboxError::NameTooLong { len: 129 })
        );
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn the_example_campaign_is_valid_for_the_demo_contacts() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/campaign.toml");
        let d = CampaignDefinition::from_toml_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let demo = schema(&[
            ("first_name", AttrKind::Str),
            ("last_name", AttrKind::Str),
            ("city", AttrKind::Str),
            ("mail_allowed", AttrKind::Int),
            ("account_type", AttrKind::Int),
        ]);
        let c = Campaign::from_definition(d, Some(&demo)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.id.as_str(), "winter-newsletter");
        assert_eq!(c.list.as_str(), "newsletter");
        assert_eq!(
            c.from.header_value(),
            "\"Hikyaku News\" <news@hikyaku.example>"
        );
        assert_eq!(c.ses.configuration_set.as_deref(), Some("hikyaku"));
        assert_eq!(c.ses.contact_list.as_deref(), Some("newsletter"));
        assert_eq!(c.ses.topic.as_deref(), Some("weekly"));

        let email = EmailAddress::parse("aiko@example.com").unwrap();
        let contact: Attributes = [
            ("first_name".to_owned(), AttrValue::from("Aiko")),
            ("city".to_owned(), AttrValue::from("Sapporo")),
            ("mail_allowed".to_owned(), AttrValue::Int(1)),
            ("account_type".to_owned(), AttrValue::Int(2)),
        ]
        .into();
        let segment = c.segment.as_ref().unwrap();
        assert_eq!(segment.matches(&email, &contact), Ok(true));
        // last_name is optional in the template: this contact has none.
        let out = c.template.render(&email, &contact).unwrap();
        assert!(out.subject.contains("Aiko"), "{}", out.subject);
        assert!(out.html.contains("Sapporo"));
        assert!(out.html.contains("{{amazonSESUnsubscribeUrl}}"));
        assert!(
            out.text.contains("{{amazonSESUnsubscribeUrl}}"),
            "{}",
            out.text
        );
        let variables = c.template.variables();
        assert!(variables.contains("first_name") && variables.contains("city"));
    }
}
