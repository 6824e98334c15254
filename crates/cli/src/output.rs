//! How results are shown: every command returns a [`Report`], printed as text for people or,
//! with `--json`, as one JSON document on stdout for programs.

use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::error::CliError;

pub trait Report {
    /// The text for a person, ending without a newline.
    fn text(&self) -> String;
    /// The whole result as JSON.
    fn json(&self) -> serde_json::Value;
    /// After the report is printed, the command still fails with this (e.g. nothing could be
    /// imported).
    fn failure(&self) -> Option<CliError> {
        None
    }
}

/// JSON of a serialisable report; serialising plain data does not fail, and if it ever did the
/// error would be shown in place of the data rather than lost.
pub fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value)
        .unwrap_or_else(|err| serde_json::json!({ "error": format!("cannot serialise: {err}") }))
}

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `4.2 s`, `3 min 05 s`, `2 h 03 min`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60)
    }
}

/// Label/value lines with the values right-aligned in one column.
pub fn aligned(rows: &[(&str, String)], indent: usize) -> String {
    let label_width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|(_, v)| v.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{:indent$}{label:<label_width$}  {value:>value_width$}", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table for the terminal.
pub fn table(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(Duration::from_millis(4200)), "4.2 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(duration(Duration::from_secs(7380)), "2 h 03 min");
    }

    #[test]
    fn aligned_rows_line_up() {
        let text = aligned(&[("rows", "1,200".into()), ("invalid rows", "7".into())], 2);
        assert_eq!(text, "  rows          1,200\n  invalid rows      7");
    }

    #[test]
    fn tables_hold_their_cells() {
        let t = table(
            vec!["email".into(), "city".into()],
            vec![vec!["a@example.com".into(), "Zoé".into()]],
        );
        assert!(t.contains("a@example.com") && t.contains("Zoé") && t.contains("city"));
    }
}
