//! Reading contact files: CSV and JSON Lines, row by row, into contacts and the schema they
//! show. A bad row is reported with its line number and the reason and the good rows are
//! kept; only a file that cannot be read at all (a bad header, an I/O error) is an error.
//!
//! Files can hold millions of rows. They are read as a stream: memory grows with the number
//! of unique contacts (they must all be held, because a later row of the same address
//! overrides an earlier one) and with the invalid rows reported, of which at most
//! [`MAX_REPORTED_INVALID`] are kept with their reasons (all are counted).
//!
//! - CSV: a header row; the column named `email` (any case) holds the address, every other
//!   column is an attribute whose name must pass [`validate_attribute_name`]. UTF-8 with or
//!   without a byte order mark, `\n` or `\r\n` line breaks; RFC 4180 quoting, so a quoted
//!   field may hold commas, line breaks and quotes (doubled: `""`). Text after a closing quote
//!   and a quote never closed are row errors. Cells are typed by [`AttrValue::infer`]; an
//!   empty cell is an absent attribute. Blank lines are skipped.
//! - JSON Lines: one object per line with an `email` string; every other key is an attribute
//!   with a `true`/`false`, number or string value. `null` is an absent attribute; objects and
//!   arrays are refused. Blank lines are skipped.
//!
//! A line number is the physical line where the record starts, counting from 1 (the header is
//! line 1), so an editor jumps right to it even when an earlier quoted field spans lines.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::contact::{AttrValue, Attributes, Contact, ListSchema, validate_attribute_name};
use crate::email::EmailAddress;

/// How many invalid rows are kept with their reasons; the rest are only counted.
pub const MAX_REPORTED_INVALID: usize = 10_000;

/// The largest contact accepted, counted as the bytes of its attribute names and values. It
/// keeps every contact far below DynamoDB's 400 KB item limit, so one oversized row is reported
/// here instead of failing the write batch it would land in.
pub const MAX_CONTACT_BYTES: usize = 64 * 1024;

/// The longest physical line read, and the longest CSV record (a quoted field may span lines).
/// Longer is not a contact file, or a quote is not closed: the file is refused.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Shown values are cut to this many characters in reasons.
const SHOWN_VALUE_CHARS: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    Csv,
    Jsonl,
}

impl ImportFormat {
    /// The format a file's extension names: `.csv`, or `.jsonl` / `.ndjson` (any case).
    pub fn from_path(path: &Path) -> Option<ImportFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(ImportFormat::Csv),
            "jsonl" | "ndjson" => Some(ImportFormat::Jsonl),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Csv => "csv",
            ImportFormat::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for ImportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(ImportFormat::Csv),
            "jsonl" | "ndjson" => Ok(ImportFormat::Jsonl),
            other => Err(format!(
                "'{other}' is not a contact file format; use csv or jsonl"
            )),
        }
    }
}

/// A row that was not imported, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidRow {
    /// Physical line (1-based) where the row starts.
    pub line: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Data rows read (the header and blank lines not counted).
    pub rows: u64,
    /// Rows that gave a contact, duplicates included.
    pub valid: u64,
    /// Rows refused; `invalid` holds the first [`MAX_REPORTED_INVALID`] of them.
    pub invalid_rows: u64,
    pub invalid: Vec<InvalidRow>,
    /// Valid rows whose address an earlier row had already: merged into that contact.
    pub duplicates_merged: u64,
}

impl ImportSummary {
    /// Unique contacts the file yields.
    pub fn contacts(&self) -> u64 {
        self.valid - self.duplicates_merged
    }
}

/// Everything a file yields: unique contacts (ordered by address), the schema they show, and
/// what happened to each row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportOutcome {
    pub contacts: Vec<Contact>,
    pub schema: ListSchema,
    pub summary: ImportSummary,
}

/// A file that cannot be imported at all.
#[derive(thiserror::Error, Debug)]
pub enum ImportError {
    #[error("the file is empty: a CSV file needs a header row with an 'email' column")]
    Empty,
    #[error("the header row (line {line}) is not usable:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Header { line: u64, problems: Vec<String> },
    #[error("line {line} is longer than {max} bytes; is this a contact file?")]
    LineTooLong { line: u64, max: usize },
    #[error(
        "the row starting on line {line} is longer than {max} bytes; is a quoted field not closed?"
    )]
    RecordTooLong { line: u64, max: usize },
    #[error("reading the file failed at line {line}: {source}")]
    Read {
        line: u64,
        #[source]
        source: std::io::Error,
    },
}

/// Collects rows into unique contacts. A later row for an address overrides the earlier
/// row's attributes one by one; attributes only the earlier row has are kept.
#[derive(Debug, Default)]
pub struct ContactCollector {
    contacts: BTreeMap<EmailAddress, Attributes>,
    summary: ImportSummary,
}

impl ContactCollector {
    pub fn new() -> ContactCollector {
        ContactCollector::default()
    }

    /// Records one data row: the contact it gave, or why it gave none.
    pub fn add(&mut self, line: u64, row: Result<(EmailAddress, Attributes), String>) {
        self.summary.rows += 1;
        match row {
            Ok((email, attributes)) => {
                self.summary.valid += 1;
                match self.contacts.get_mut(&email) {
                    Some(known) => {
                        known.extend(attributes);
                        self.summary.duplicates_merged += 1;
                    }
                    None => {
                        self.contacts.insert(email, attributes);
                    }
                }
            }
            Err(reason) => {
                self.summary.invalid_rows += 1;
                if self.summary.invalid.len() < MAX_REPORTED_INVALID {
                    self.summary.invalid.push(InvalidRow { line, reason });
                }
            }
        }
    }

    pub fn summary(&self) -> &ImportSummary {
        &self.summary
    }

    /// The unique contacts, and the schema observed on what is kept (so a value a later row
    /// replaced does not widen a kind).
    pub fn finish(self) -> ImportOutcome {
        let mut schema = ListSchema::default();
        let contacts = self
            .contacts
            .into_iter()
            .map(|(email, attributes)| {
                schema.observe(&attributes);
                Contact { email, attributes }
            })
            .collect();
        ImportOutcome {
            contacts,
            schema,
            summary: self.summary,
        }
    }
}

/// Reads a whole contact file. See the module documentation for the formats.
pub fn read_contacts(
    reader: impl Read,
    format: ImportFormat,
) -> Result<ImportOutcome, ImportError> {
    let mut collector = ContactCollector::new();
    match format {
        ImportFormat::Csv => read_csv(reader, &mut collector)?,
        ImportFormat::Jsonl => read_jsonl(reader, &mut collector)?,
    }
    Ok(collector.finish())
}

/// The address as it may be shown in a reason: control characters escaped, long input cut.
fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(SHOWN_VALUE_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > SHOWN_VALUE_CHARS {
        out.push('…');
    }
    out
}

fn parse_email(raw: &str) -> Result<EmailAddress, String> {
    EmailAddress::parse(raw).map_err(|err| {
        let reason = err.to_string();
        if raw.trim().chars().count() > 3 && reason.contains(raw.trim()) {
            // The reason quotes the input already.
            format!("email: {reason}")
        } else {
            format!("email \"{}\": {reason}", shown(raw))
        }
    })
}

/// Refuses control characters in text values other than tab and line breaks, which a
/// multi-line field may carry.
fn check_value(name: &str, value: &AttrValue) -> Result<(), String> {
    if let AttrValue::Str(text) = value
        && let Some((position, c)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!(
            "attribute '{name}' contains the control character U+{:04X} at position {}",
            u32::from(c),
            position + 1
        ));
    }
    Ok(())
}

fn check_size(attributes: &Attributes) -> Result<(), String> {
    let size: usize = attributes
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttrValue::Str(s) => s.len(),
                    _ => 8,
                }
        })
        .sum();
    if size > MAX_CONTACT_BYTES {
        return Err(format!(
            "the row's attributes take {size} bytes; at most {MAX_CONTACT_BYTES} are allowed per contact"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Physical lines
// ---------------------------------------------------------------------------------------------

const BOM: &[u8] = b"\xef\xbb\xbf";

/// One physical line: its number (from 1), its content, and its line break.
struct Line<'a> {
    number: u64,
    content: &'a [u8],
    line_break: &'a [u8],
}

/// A file's physical lines, numbered from 1, each split into its content and its line break
/// (`\n`, `\r\n`, or nothing at the end of the file). A byte order mark at the start is dropped.
struct Lines<R> {
    reader: BufReader<R>,
    number: u64,
    buffer: Vec<u8>,
}

impl<R: Read> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader: BufReader::new(reader),
            number: 0,
            buffer: Vec::new(),
        }
    }

    fn next_line(&mut self) -> Result<Option<Line<'_>>, ImportError> {
        self.buffer.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buffer)
            .map_err(|source| ImportError::Read {
                line: self.number + 1,
                source,
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(ImportError::LineTooLong {
                line: self.number,
                max: MAX_LINE_BYTES,
            });
        }
        let mut line: &[u8] = &self.buffer;
        if self.number == 1 {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        let break_len = if line.ends_with(b"\r\n") {
            2
        } else {
            usize::from(line.ends_with(b"\n"))
        };
        let (content, line_break) = line.split_at(line.len() - break_len);
        Ok(Some(Line {
            number: self.number,
            content,
            line_break,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// One CSV record as read: its fields (bytes; decoded per field, so one bad cell spoils only its
/// row) and the lines it covers.
#[derive(Debug, Default)]
struct CsvRecord {
    start: u64,
    end: u64,
    fields: Vec<Vec<u8>>,
    /// A quoting mistake that makes the fields untrustworthy.
    problem: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvState {
    FieldStart,
    Unquoted,
    Quoted,
    /// Just after a `"` inside a quoted field: a second `"` is a literal quote, anything else
    /// closes the field.
    AfterQuote,
}

/// An RFC 4180 reader that knows its physical lines. Hand-written rather than the `csv` crate,
/// for two things that crate does not give: the exact line a record starts on (its positions
/// count skipped blank lines and `\r\n` breaks inconsistently), and a quote that is never
/// closed reported as such instead of silently swallowing the rest of the file into one field.
struct CsvReader<R> {
    lines: Lines<R>,
}

impl<R: Read> CsvReader<R> {
    fn new(reader: R) -> Self {
        CsvReader {
            lines: Lines::new(reader),
        }
    }

    /// The next record; `Ok(None)` at the end. Lines holding only whitespace between records
    /// are skipped.
    fn next_record(&mut self) -> Result<Option<CsvRecord>, ImportError> {
        use CsvState::*;
        let mut record = CsvRecord::default();
        let mut field = Vec::new();
        let mut state = FieldStart;
        let mut quote_line = 0;
        let mut size = 0usize;
        loop {
            let Some(Line {
                number,
                content,
                line_break,
            }) = self.lines.next_line()?
            else {
                if record.start == 0 {
                    return Ok(None);
                }
                // Only a quoted field left open reaches the end of the file inside a record.
                record.problem = Some(format!(
                    "the quoted field opened on line {quote_line} is never closed"
                ));
                record.fields.push(field);
                return Ok(Some(record));
            };
            if record.start == 0 {
                if content.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                record.start = number;
            }
            record.end = number;
            size += content.len() + line_break.len();
            if size > MAX_RECORD_BYTES {
                return Err(ImportError::RecordTooLong {
                    line: record.start,
                    max: MAX_RECORD_BYTES,
                });
            }
            for &byte in content {
                state = match (state, byte) {
                    (FieldStart, b'"') => {
                        quote_line = number;
                        Quoted
                    }
                    (FieldStart | Unquoted | AfterQuote, b',') => {
                        record.fields.push(std::mem::take(&mut field));
                        FieldStart
                    }
                    (FieldStart | Unquoted, _) => {
                        field.push(byte);
                        Unquoted
                    }
                    (Quoted, b'"') => AfterQuote,
                    (Quoted, _) => {
                        field.push(byte);
                        Quoted
                    }
                    (AfterQuote, b'"') => {
                        field.push(b'"');
                        Quoted
                    }
                    (AfterQuote, _) => {
                        record.problem.get_or_insert_with(|| {
                            format!(
                                "field {} has text after its closing quote (line {number}); write a quote inside a quoted field as \"\"",
                                record.fields.len() + 1
                            )
                        });
                        field.push(byte);
                        Unquoted
                    }
                };
            }
            if state == Quoted {
                field.extend_from_slice(line_break);
                continue;
            }
            record.fields.push(field);
            return Ok(Some(record));
        }
    }
}

/// What the header row says: where the address is and what the other columns are called.
struct CsvHeader {
    email_column: usize,
    /// `None` for the email column.
    names: Vec<Option<String>>,
}

fn parse_csv_header(record: &CsvRecord) -> Result<CsvHeader, Vec<String>> {
    let mut problems = Vec::new();
    if let Some(problem) = &record.problem {
        problems.push(problem.clone());
    }
    let mut email_columns = Vec::new();
    let mut names = Vec::with_capacity(record.fields.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, raw) in record.fields.iter().enumerate() {
        let column = index + 1;
        let Ok(name) = std::str::from_utf8(raw) else {
            problems.push(format!("column {column}: the name is not valid UTF-8"));
            names.push(None);
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("email") {
            email_columns.push(column);
            names.push(None);
            continue;
        }
        if name.is_empty() {
            problems.push(format!("column {column} has no name"));
        } else if let Err(err) = validate_attribute_name(name) {
            problems.push(format!("column {column}: {err}"));
        } else if let Some(first) = seen.insert(name.to_owned(), column) {
            problems.push(format!(
                "column {column}: '{name}' is also the name of column {first}"
            ));
        }
        names.push(Some(name.to_owned()));
    }
    match email_columns.as_slice() {
        [] => problems.insert(
            0,
            format!(
                "there is no 'email' column; the columns are: {}",
                names
                    .iter()
                    .flatten()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        [_] => {}
        several => problems.insert(
            0,
            format!(
                "columns {} are all named 'email'; keep one",
                several
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    if problems.is_empty() {
        Ok(CsvHeader {
            email_column: email_columns[0] - 1,
            names,
        })
    } else {
        Err(problems)
    }
}

fn csv_row(header: &CsvHeader, record: &CsvRecord) -> Result<(EmailAddress, Attributes), String> {
    if let Some(problem) = &record.problem {
        return Err(problem.clone());
    }
    if record.fields.len() != header.names.len() {
        let fields = match record.fields.len() {
            1 => "1 field".to_owned(),
            n => format!("{n} fields"),
        };
        return Err(format!(
            "the row has {fields}; the header has {}",
            header.names.len()
        ));
    }
    let cell = |index: usize| {
        std::str::from_utf8(&record.fields[index])
            .map_err(|_| format!("field {} is not valid UTF-8", index + 1))
    };
    let email = parse_email(cell(header.email_column)?)?;
    let mut attributes = Attributes::new();
    for (index, name) in header.names.iter().enumerate() {
        let Some(name) = name else { continue };
        if let Some(value) = AttrValue::infer(cell(index)?) {
            check_value(name, &value)?;
            attributes.insert(name.clone(), value);
        }
    }
    check_size(&attributes)?;
    Ok((email, attributes))
}

fn read_csv(reader: impl Read, collector: &mut ContactCollector) -> Result<(), ImportError> {
    let mut csv = CsvReader::new(reader);
    let Some(first) = csv.next_record()? else {
        return Err(ImportError::Empty);
    };
    let header = parse_csv_header(&first).map_err(|problems| ImportError::Header {
        line: first.start,
        problems,
    })?;
    while let Some(record) = csv.next_record()? {
        let row = csv_row(&header, &record).map_err(|reason| {
            if record.end > record.start && record.problem.is_none() {
                format!(
                    "{reason} (the row spans lines {} to {})",
                    record.start, record.end
                )
            } else {
                reason
            }
        });
        collector.add(record.start, row);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON Lines
// ---------------------------------------------------------------------------------------------

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn json_value(name: &str, value: serde_json::Value) -> Result<Option<AttrValue>, String> {
    use serde_json::Value;
    let value = match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => AttrValue::Bool(b),
        Value::String(s) => AttrValue::Str(s),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AttrValue::Int(i),
            (None, Some(_)) if n.is_u64() => {
                return Err(format!(
                    "attribute '{name}': the integer {n} is too large (at most {})",
                    i64::MAX
                ));
            }
            (None, Some(f)) => AttrValue::Float(f),
            (None, None) => {
                return Err(format!("attribute '{name}': the number {n} is not usable"));
            }
        },
        other => {
            return Err(format!(
                "attribute '{name}' is {}; only true/false, numbers and strings are allowed",
                json_kind(&other)
            ));
        }
    };
    check_value(name, &value)?;
    Ok(Some(value))
}

fn jsonl_row(text: &str) -> Result<(EmailAddress, Attributes), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("not valid JSON: {err}"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "the line is {}; each line must be a JSON object",
            json_kind(&value)
        ));
    };
    let mut email = None;
    let mut attributes = Attributes::new();
    for (key, value) in object {
        if key.eq_ignore_ascii_case("email") {
            if email.is_some() {
                return Err("the object has more than one 'email' key".to_owned());
            }
            let serde_json::Value::String(raw) = value else {
                return Err(format!("'{key}' is {}, not a string", json_kind(&value)));
            };
            email = Some(parse_email(&raw)?);
            continue;
        }
        validate_attribute_name(&key).map_err(|err| err.to_string())?;
        if let Some(value) = json_value(&key, value)? {
            attributes.insert(key, value);
        }
    }
    let email = email.ok_or_else(|| "the object has no 'email' key".to_owned())?;
    check_size(&attributes)?;
    Ok((email, attributes))
}

fn read_jsonl(reader: impl Read, collector: &mut ContactCollector) -> Result<(), ImportError> {
    let mut lines = Lines::new(reader);
    while let Some(Line {
        number, content, ..
    }) = lines.next_line()?
    {
        let row = match std::str::from_utf8(content) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => jsonl_row(text.trim()),
            Err(_) => Err("the line is not valid UTF-8".to_owned()),
        };
        collector.add(number, row);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Address lists (suppressions)
// ---------------------------------------------------------------------------------------------

/// What a plain list of addresses yields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressList {
    /// Unique addresses, in the order of their first line.
    pub addresses: Vec<EmailAddress>,
    /// Lines holding an address (blank and comment lines not counted).
    pub lines: u64,
    pub invalid_lines: u64,
    /// The first [`MAX_REPORTED_INVALID`] invalid lines.
    pub invalid: Vec<InvalidRow>,
    pub duplicates: u64,
}

/// Reads one address per line. Blank lines and lines starting with `#` are skipped, and so is
/// a comment after an address that begins with whitespace and `#` (`#` alone may be part of an
/// address). A byte order mark at the start is ignored.
pub fn read_address_list(reader: impl Read) -> Result<AddressList, ImportError> {
    let mut lines = Lines::new(reader);
    let mut list = AddressList::default();
    let mut seen = HashSet::new();
    while let Some(Line {
        number, content, ..
    }) = lines.next_line()?
    {
        let parsed = match std::str::from_utf8(content) {
            Err(_) => Err("the line is not valid UTF-8".to_owned()),
            Ok(text) => {
                let text = strip_comment(text).trim();
                if text.is_empty() {
                    continue;
                }
                parse_email(text)
            }
        };
        list.lines += 1;
        match parsed {
            Ok(email) => {
                if seen.insert(email.clone()) {
                    list.addresses.push(email);
                } else {
                    list.duplicates += 1;
                }
            }
            Err(reason) => {
                list.invalid_lines += 1;
                if list.invalid.len() < MAX_REPORTED_INVALID {
                    list.invalid.push(InvalidRow {
                        line: number,
                        reason,
                    });
                }
            }
        }
    }
    Ok(list)
}

fn strip_comment(text: &str) -> &str {
    if text.trim_start().starts_with('#') {
        return "";
    }
    let after_blank = text
        .match_indices('#')
        .map(|(i, _)| i)
        .find(|&i| text[..i].ends_with([' ', '\t']));
    after_blank.map_or(text, |i| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::AttrKind;

    fn csv(text: &str) -> ImportOutcome {
        read_contacts(text.as_bytes(), ImportFormat::Csv).expect("file is readable")
    }

    fn jsonl(text: &str) -> ImportOutcome {
        read_contacts(text.as_bytes(), ImportFormat::Jsonl).expect("file is readable")
    }

    fn emails(outcome: &ImportOutcome) -> Vec<&str> {
        outcome.contacts.iter().map(|c| c.email.as_str()).collect()
    }

    fn lines(outcome: &ImportOutcome) -> Vec<u64> {
        outcome.summary.invalid.iter().map(|r| r.line).collect()
    }

    fn reason_at(outcome: &ImportOutcome, line: u64) -> &str {
        &outcome
            .summary
            .invalid
            .iter()
            .find(|r| r.line == line)
            .unwrap_or_else(|| panic!("no invalid row at line {line}: {:?}", outcome.summary))
            .reason
    }

    fn attr<'a>(outcome: &'a ImportOutcome, email: &str, name: &str) -> Option<&'a AttrValue> {
        outcome
            .contacts
            .iter()
            .find(|c| c.email.as_str() == email)
            .and_then(|c| c.attributes.get(name))
    }

    #[test]
    fn formats_come_from_the_extension_or_a_name() {
        assert_eq!(
            ImportFormat::from_path(Path::new("a/b.CSV")),
            Some(ImportFormat::Csv)
        );
        assert_eq!(
            ImportFormat::from_path(Path::new("b.jsonl")),
            Some(ImportFormat::Jsonl)
        );
        assert_eq!(
            ImportFormat::from_path(Path::new("b.ndjson")),
            Some(ImportFormat::Jsonl)
        );
        assert_eq!(ImportFormat::from_path(Path::new("b.txt")), None);
        assert_eq!(ImportFormat::from_path(Path::new("csv")), None);
        assert_eq!("JSONL".parse::<ImportFormat>(), Ok(ImportFormat::Jsonl));
        assert!(
            "xlsx"
                .parse::<ImportFormat>()
                .unwrap_err()
                .contains("'xlsx'")
        );
    }

    #[test]
    fn a_csv_file_gives_typed_contacts_and_their_schema() {
        let out = csv("email,first_name,mail_allowed,score,vip\n\
                       a@example.com,Aiko,1,2.5,true\n\
                       b@example.org,Ben,0,,false\n");
        assert_eq!(emails(&out), ["a@example.com", "b@example.org"]);
        assert_eq!(
            attr(&out, "a@example.com", "mail_allowed"),
            Some(&AttrValue::Int(1))
        );
        assert_eq!(
            attr(&out, "a@example.com", "score"),
            Some(&AttrValue::Float(2.5))
        );
        assert_eq!(
            attr(&out, "a@example.com", "vip"),
            Some(&AttrValue::Bool(true))
        );
        // An empty cell is an absent attribute.
        assert_eq!(attr(&out, "b@example.org", "score"), None);
        assert_eq!(out.schema.kind_of("first_name"), Some(AttrKind::Str));
        assert_eq!(out.schema.kind_of("score"), Some(AttrKind::Float));
        assert!(out.schema.kind_of("email").is_none());
        assert_eq!(
            out.summary,
            ImportSummary {
                rows: 2,
                valid: 2,
                ..ImportSummary::default()
            }
        );
        assert_eq!(out.summary.contacts(), 2);
    }

    #[test]
    fn the_email_column_is_found_in_any_case_and_position() {
        let out = csv(" City ,Email_ok,EMAIL\nOsaka,x,c@Example.COM\n");
        assert_eq!(emails(&out), ["c@example.com"]);
        assert_eq!(
            attr(&out, "c@example.com", "City"),
            Some(&AttrValue::from("Osaka"))
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let out = csv("\u{feff}email,name\na@example.com,Zoé\n");
        assert_eq!(emails(&out), ["a@example.com"]);
        assert_eq!(
            attr(&out, "a@example.com", "name"),
            Some(&AttrValue::from("Zoé"))
        );
        let out = jsonl("\u{feff}{\"email\":\"a@example.com\"}\n");
        assert_eq!(emails(&out), ["a@example.com"]);
    }

    #[test]
    fn quoted_fields_keep_commas_quotes_and_line_breaks() {
        let out = csv("email,city,note\n\
                       a@example.com,\"Washington, D.C.\",\"said \"\"hi\"\"\"\n\
                       b@example.com,Kyoto,\"two\nlines\"\n");
        assert_eq!(
            attr(&out, "a@example.com", "city"),
            Some(&AttrValue::from("Washington, D.C."))
        );
        assert_eq!(
            attr(&out, "a@example.com", "note"),
            Some(&AttrValue::from("said \"hi\""))
        );
        assert_eq!(
            attr(&out, "b@example.com", "note"),
            Some(&AttrValue::from("two\nlines"))
        );
    }

    #[test]
    fn line_numbers_are_where_a_row_starts_even_after_embedded_line_breaks() {
        let out = csv("email,note\n\
                       a@example.com,\"one\ntwo\nthree\"\n\
                       bad-address,x\n\
                       \n\
                       \"c\n@example.com\",y\n\
                       also bad,z\n");
        // Line 1 header, rows at 2 (spans 2-4), 5, blank 6, 7 (spans 7-8), 9.
        assert_eq!(lines(&out), [5, 7, 9]);
        assert!(reason_at(&out, 5).contains("no '@'"), "{:?}", out.summary);
        let control = reason_at(&out, 7);
        assert!(
            control.contains("U+000A") && control.contains("\\n"),
            "{control}"
        );
        assert!(reason_at(&out, 9).contains("whitespace"));
        assert_eq!(out.summary.rows, 4);
        assert_eq!(out.summary.valid, 1);
        assert_eq!(out.summary.invalid_rows, 3);
    }

    #[test]
    fn line_numbers_hold_with_crlf_line_ends_and_blank_lines() {
        let out = csv("email,note\r\n\
                       \r\n\
                       a@example.com,\"x\r\ny\"\r\n\
                       \r\n\
                       \r\n\
                       bad,z\r\n\
                       \"q\r\n@example.com\",z\r\n\
                       last");
        assert_eq!(lines(&out), [7, 8, 10]);
        assert!(reason_at(&out, 10).contains("has 1 field;"));
    }

    #[test]
    fn line_numbers_hold_deep_into_a_large_file() {
        let mut text = String::from("email,note\n");
        for i in 0..20_000 {
            match i {
                7_000 => text.push_str("\"multi\nline\"@example.com,x\n"),
                15_000 => text.push_str("c@example.com,\"a\n\nb\"\n\n"),
                _ => text.push_str(&format!("u{i}@example.com,n{i}\n")),
            }
        }
        text.push_str("broken\n");
        let out = csv(&text);
        // Header line 1, row i on line i + 2; row 7000 adds a line, row 15000 three.
        assert_eq!(lines(&out), [7_002, 20_006]);
        assert_eq!(out.contacts.len(), 19_999);
    }

    #[test]
    fn an_unclosed_quote_is_reported_where_it_opens() {
        let out = csv("email,note,city\n\
                       a@example.com,ok,Nara\n\
                       b@example.com,\"oops,Nara\n\
                       c@example.com,x,Kyoto\n\
                       d@example.com,y,Kobe\n");
        assert_eq!(emails(&out), ["a@example.com"]);
        assert_eq!(out.summary.invalid_rows, 1);
        assert_eq!(
            reason_at(&out, 3),
            "the quoted field opened on line 3 is never closed"
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_a_row_error() {
        let out = csv("email,note\na@example.com,\"x\"y\nb@example.com,\"x\"\"y\"\n");
        assert_eq!(emails(&out), ["b@example.com"]);
        assert!(reason_at(&out, 2).contains("field 2 has text after its closing quote"));
        assert_eq!(
            attr(&out, "b@example.com", "note"),
            Some(&AttrValue::from("x\"y"))
        );
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_kept() {
        let out = csv("email,note\na@example.com,5\" screen\n");
        assert_eq!(
            attr(&out, "a@example.com", "note"),
            Some(&AttrValue::from("5\" screen"))
        );
    }

    #[test]
    fn overlong_lines_and_records_refuse_the_file() {
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        let err =
            read_contacts(format!("email\n{long}\n").as_bytes(), ImportFormat::Csv).unwrap_err();
        assert!(
            matches!(err, ImportError::LineTooLong { line: 2, .. }),
            "{err}"
        );
        let err = read_contacts(format!("{long}\n").as_bytes(), ImportFormat::Jsonl).unwrap_err();
        assert!(
            matches!(err, ImportError::LineTooLong { line: 1, .. }),
            "{err}"
        );
        let chunk = "y".repeat(1000);
        let mut text = String::from("email,note\na@example.com,\"");
        for _ in 0..(MAX_RECORD_BYTES / 1000 + 1) {
            text.push_str(&chunk);
            text.push('\n');
        }
        let err = read_contacts(text.as_bytes(), ImportFormat::Csv).unwrap_err();
        assert!(
            matches!(err, ImportError::RecordTooLong { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("not closed"), "{err}");
    }

    #[test]
    fn invalid_addresses_name_the_reason() {
        let long_local = "x".repeat(65);
        let out = csv(&format!(
            "email,n\n\
             jane.example.com,1\n\
             \"Jane Doe <jane@example.com>\",2\n\
             {long_local}@example.com,3\n\
             ,4\n\
             a@@example.com,5\n\
             ok@example.net,6\n"
        ));
        assert_eq!(emails(&out), ["ok@example.net"]);
        assert!(reason_at(&out, 2).contains("no '@'"));
        assert!(
            reason_at(&out, 3)
                .starts_with("email: 'Jane Doe <jane@example.com>' looks like a display name")
        );
        assert!(reason_at(&out, 4).contains("65 octets"));
        assert!(reason_at(&out, 5).contains("empty"));
        assert!(reason_at(&out, 6).contains("more than one '@'"));
        assert!(reason_at(&out, 2).starts_with("email \"jane.example.com\""));
    }

    #[test]
    fn rows_with_the_wrong_number_of_fields_are_refused() {
        let out = csv("email,a,b\nx@example.com,1\ny@example.com,1,2,3\nz@example.com,1,2\n");
        assert_eq!(emails(&out), ["z@example.com"]);
        assert_eq!(reason_at(&out, 2), "the row has 2 fields; the header has 3");
        assert_eq!(reason_at(&out, 3), "the row has 4 fields; the header has 3");
    }

    #[test]
    fn control_characters_in_values_and_bad_utf8_are_row_errors() {
        let mut bytes = b"email,name\na@example.com,\"A\x07B\"\nb@example.com,\xff\xfe\nc@example.com,\"tab\tok\"\n".to_vec();
        bytes.extend_from_slice(b"");
        let out = read_contacts(bytes.as_slice(), ImportFormat::Csv).unwrap();
        assert_eq!(emails(&out), ["c@example.com"]);
        assert!(reason_at(&out, 2).contains("U+0007"));
        assert!(reason_at(&out, 3).contains("not valid UTF-8"));
    }

    #[test]
    fn an_oversized_row_is_refused_alone() {
        let big = "x".repeat(MAX_CONTACT_BYTES + 1);
        let out = csv(&format!(
            "email,blob\na@example.com,{big}\nb@example.com,small\n"
        ));
        assert_eq!(emails(&out), ["b@example.com"]);
        assert!(reason_at(&out, 2).contains("at most"));
    }

    #[test]
    fn duplicates_are_merged_with_later_values_winning_per_attribute() {
        let out = csv("email,city,plan,score\n\
                       a@Example.com,Osaka,gold,1\n\
                       b@example.com,Nara,silver,2\n\
                       a@example.COM,Kobe,,x\n\
                       a@example.com,,,\n");
        assert_eq!(emails(&out), ["a@example.com", "b@example.com"]);
        assert_eq!(
            attr(&out, "a@example.com", "city"),
            Some(&AttrValue::from("Kobe"))
        );
        // The later row left it empty: the earlier value stays.
        assert_eq!(
            attr(&out, "a@example.com", "plan"),
            Some(&AttrValue::from("gold"))
        );
        assert_eq!(
            attr(&out, "a@example.com", "score"),
            Some(&AttrValue::from("x"))
        );
        assert_eq!(out.summary.duplicates_merged, 2);
        assert_eq!(out.summary.valid, 4);
        assert_eq!(out.summary.contacts(), 2);
        // The schema describes what is kept: `score` is text for a, a number for b.
        assert_eq!(out.schema.kind_of("score"), Some(AttrKind::Str));
    }

    #[test]
    fn addresses_differing_only_in_case_are_one_contact() {
        let out = csv("email\nJane@example.com\njane@example.com\n");
        assert_eq!(out.contacts.len(), 1);
        assert_eq!(out.summary.duplicates_merged, 1);
    }

    #[test]
    fn a_header_without_an_email_column_is_a_file_error() {
        let err = read_contacts("name,city\nA,B\n".as_bytes(), ImportFormat::Csv).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no 'email' column") && msg.contains("'name', 'city'"),
            "{msg}"
        );
        assert!(matches!(err, ImportError::Header { line: 1, .. }));
    }

    #[test]
    fn every_header_problem_is_listed() {
        let err = read_contacts(
            "email,first-name,city,city,,Email\n".as_bytes(),
            ImportFormat::Csv,
        )
        .unwrap_err();
        let ImportError::Header { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("columns 1, 6"));
        assert!(problems[1].contains("column 2") && problems[1].contains("'first-name'"));
        assert!(problems[2].contains("column 4") && problems[2].contains("column 3"));
        assert!(problems[3].contains("column 5 has no name"));
        let reserved =
            read_contacts("email,email_domain\n".as_bytes(), ImportFormat::Csv).unwrap_err();
        assert!(reserved.to_string().contains("reserved"), "{reserved}");
    }

    #[test]
    fn an_empty_file_is_a_file_error_and_a_header_alone_is_no_rows() {
        assert!(matches!(
            read_contacts("".as_bytes(), ImportFormat::Csv),
            Err(ImportError::Empty)
        ));
        let out = csv("email,name\n");
        assert_eq!(out.summary, ImportSummary::default());
        assert_eq!(jsonl("\n\n").summary.rows, 0);
    }

    #[test]
    fn a_read_failure_is_a_file_error_with_the_line() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk gone"));
                }
                self.0 = 0;
                let data = b"email\na@example.com\n";
                buf[..data.len()].copy_from_slice(data);
                Ok(data.len())
            }
        }
        for format in [ImportFormat::Csv, ImportFormat::Jsonl] {
            let err = read_contacts(Failing(1), format).unwrap_err();
            assert!(matches!(err, ImportError::Read { .. }), "{err}");
            assert!(err.to_string().contains("disk gone"), "{err}");
        }
    }

    #[test]
    fn json_lines_give_typed_contacts() {
        let out = jsonl(
            "{\"email\":\"a@example.com\",\"first_name\":\"花子\",\"n\":3,\"x\":1.5,\"ok\":true,\"gone\":null}\n\
             \n\
             {\"Email\":\"B@Example.org\",\"n\":4}\r\n",
        );
        assert_eq!(emails(&out), ["a@example.com", "b@example.org"]);
        assert_eq!(
            attr(&out, "a@example.com", "first_name"),
            Some(&AttrValue::from("花子"))
        );
        assert_eq!(attr(&out, "a@example.com", "n"), Some(&AttrValue::Int(3)));
        assert_eq!(
            attr(&out, "a@example.com", "x"),
            Some(&AttrValue::Float(1.5))
        );
        assert_eq!(
            attr(&out, "a@example.com", "ok"),
            Some(&AttrValue::Bool(true))
        );
        assert_eq!(attr(&out, "a@example.com", "gone"), None);
        assert_eq!(out.schema.kind_of("n"), Some(AttrKind::Int));
        assert_eq!(out.summary.rows, 2);
    }

    #[test]
    fn json_lines_errors_are_row_errors_with_their_line() {
        let out = jsonl(concat!(
            "{\"email\":\"ok@example.com\"}\n",
            "{\"email\":\"a@example.com\",\"tags\":[1,2]}\n",
            "{\"email\":\"a@example.com\",\"address\":{\"city\":\"Nara\"}}\n",
            "{\"email\": \"a@example.com\"\n",
            "[1,2]\n",
            "{\"name\":\"no address\"}\n",
            "{\"email\":42}\n",
            "{\"email\":\"a@example.com\",\"bad-name\":1}\n",
            "{\"email\":\"a@example.com\",\"big\":18446744073709551615}\n",
            "{\"email\":\"not an address\"}\n",
            "{\"email\":\"a@example.com\",\"EMAIL\":\"b@example.com\"}\n",
            "{\"email\":\"a@example.com\",\"s\":\"bell\\u0007\"}\n",
        ));
        assert_eq!(emails(&out), ["ok@example.com"]);
        assert_eq!(lines(&out), (2..=12).collect::<Vec<u64>>());
        assert!(reason_at(&out, 2).contains("'tags' is an array"));
        assert!(reason_at(&out, 3).contains("'address' is an object"));
        assert!(reason_at(&out, 4).starts_with("not valid JSON"));
        assert!(reason_at(&out, 5).contains("is an array; each line must be a JSON object"));
        assert!(reason_at(&out, 6).contains("no 'email' key"));
        assert!(reason_at(&out, 7).contains("'email' is a number, not a string"));
        assert!(reason_at(&out, 8).contains("'bad-name'"));
        assert!(reason_at(&out, 9).contains("too large"));
        assert!(reason_at(&out, 10).contains("whitespace"));
        assert!(reason_at(&out, 11).contains("more than one 'email'"));
        assert!(reason_at(&out, 12).contains("U+0007"));
        let bad_utf8 = read_contacts(&b"{\"email\":\"\xff\"}\n"[..], ImportFormat::Jsonl).unwrap();
        assert!(reason_at(&bad_utf8, 1).contains("UTF-8"));
    }

    #[test]
    fn json_lines_duplicates_merge_too() {
        let out = jsonl(
            "{\"email\":\"a@example.com\",\"n\":1,\"city\":\"Osaka\"}\n{\"email\":\"a@example.com\",\"n\":2}\n",
        );
        assert_eq!(out.contacts.len(), 1);
        assert_eq!(attr(&out, "a@example.com", "n"), Some(&AttrValue::Int(2)));
        assert_eq!(
            attr(&out, "a@example.com", "city"),
            Some(&AttrValue::from("Osaka"))
        );
        assert_eq!(out.summary.duplicates_merged, 1);
    }

    #[test]
    fn only_the_first_invalid_rows_keep_their_reasons_but_all_are_counted() {
        let mut text = String::from("email\n");
        for _ in 0..MAX_REPORTED_INVALID + 5 {
            text.push_str("bad\n");
        }
        let out = csv(&text);
        assert_eq!(out.summary.invalid_rows, MAX_REPORTED_INVALID as u64 + 5);
        assert_eq!(out.summary.invalid.len(), MAX_REPORTED_INVALID);
    }

    #[test]
    fn address_lists_skip_comments_and_report_bad_lines() {
        let list = read_address_list(
            "\u{feff}# manual suppressions\n\
             a@example.com\n\
             \n\
             b#tag@example.org   # a comment after the address\n\
             not-an-address\n\
             A@EXAMPLE.com\n\
             \t# indented comment\n\
             c@example.net\r\n"
                .as_bytes(),
        )
        .unwrap();
        let addresses: Vec<&str> = list.addresses.iter().map(EmailAddress::as_str).collect();
        assert_eq!(
            addresses,
            ["a@example.com", "b#tag@example.org", "c@example.net"]
        );
        assert_eq!(list.lines, 5);
        assert_eq!(list.invalid_lines, 1);
        assert_eq!(list.invalid[0].line, 5);
        // `A@EXAMPLE.com` is `a@example.com` again.
        assert_eq!(list.duplicates, 1);
        let dup = read_address_list("a@example.com\na@Example.com\n".as_bytes()).unwrap();
        assert_eq!(dup.addresses.len(), 1);
        assert_eq!(dup.duplicates, 1);
    }
}
