//! `hikyaku suppression add | import | list`: addresses that must never be mailed, entered by
//! hand (source `manual`) next to those the feedback function records from bounces and
//! complaints.

use std::fs::File;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::import::{InvalidRow, read_address_list};
use hikyaku_core::ports::{Suppression, SuppressionList};
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Report, aligned, count, table, to_json};
use crate::progress::Progress;

/// The source of every suppression entered through the CLI.
pub const SOURCE_MANUAL: &str = "manual";
pub const MAX_REASON_CHARS: usize = 256;
/// Addresses checked per call (the store's batch read limit).
const CHECK_CHUNK: usize = 100;
/// Invalid lines printed as text; `--json` has them all.
const SHOWN_INVALID: usize = 20;

fn check_reason(reason: &str) -> Result<String, CliError> {
    let reason = reason.trim();
    let problem = if reason.is_empty() {
        Some("is empty".to_owned())
    } else if reason.chars().any(char::is_control) {
        Some("contains a control character".to_owned())
    } else if reason.chars().count() > MAX_REASON_CHARS {
        Some(format!("is longer than {MAX_REASON_CHARS} characters"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(CliError::new(format!("--reason {problem}"))
            .hint("give a short reason on one line, e.g. --reason \"asked by phone\"")),
        None => Ok(reason.to_owned()),
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Existing {
    pub email: EmailAddress,
    pub reason: String,
}

/// Adds the addresses that are not suppressed yet; existing entries (a bounce, say) keep their
/// reason and source.
async fn add_new(
    list: &dyn SuppressionList,
    addresses: &[EmailAddress],
    reason: &str,
    now: DateTime<Utc>,
    progress: &Progress,
) -> Result<(Vec<EmailAddress>, Vec<Existing>), CliError> {
    let bar = progress.items(addresses.len() as u64, "adding");
    let mut added = Vec::new();
    let mut existing = Vec::new();
    for chunk in addresses.chunks(CHECK_CHUNK) {
        let mut known = list
            .check(chunk)
            .await
            .inspect_err(|_| bar.finish_and_clear())?;
        for email in chunk {
            if let Some(reason) = known.remove(email) {
                existing.push(Existing {
                    email: email.clone(),
                    reason,
                });
                continue;
            }
            list.add(&Suppression {
                email: email.clone(),
                reason: reason.to_owned(),
                source: SOURCE_MANUAL.to_owned(),
                at: now,
            })
            .await
            .inspect_err(|_| bar.finish_and_clear())?;
            added.push(email.clone());
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((added, existing))
}

// ---------------------------------------------------------------------------------------------
// add
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct AddReport {
    pub reason: String,
    pub added: Vec<EmailAddress>,
    pub already_suppressed: Vec<Existing>,
}

pub async fn add(
    list: &dyn SuppressionList,
    emails: &[String],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<AddReport, CliError> {
    let reason = check_reason(reason)?;
    let mut addresses: Vec<EmailAddress> = Vec::new();
    let mut problems = Vec::new();
    for raw in emails {
        match EmailAddress::parse(raw) {
            Ok(email) if !addresses.contains(&email) => addresses.push(email),
            Ok(_) => {}
            Err(err) => problems.push(format!("  '{}': {err}", raw.escape_debug())),
        }
    }
    if !problems.is_empty() {
        return Err(CliError::new(format!(
            "not an address hikyaku accepts:\n{}",
            problems.join("\n")
        ))
        .hint("nothing was added; fix or drop these and run the command again"));
    }
    let (added, already_suppressed) =
        add_new(list, &addresses, &reason, now, &Progress::hidden()).await?;
    Ok(AddReport {
        reason,
        added,
        already_suppressed,
    })
}

impl Report for AddReport {
    fn text(&self) -> String {
        let mut out = format!(
            "Suppressed {} ({}: {})",
            plural(self.added.len() as u64, "address", "addresses"),
            SOURCE_MANUAL,
            self.reason
        );
        for email in &self.added {
            out.push_str(&format!("\n  {email}"));
        }
        if !self.already_suppressed.is_empty() {
            out.push_str("\nAlready suppressed (left as they are):");
            for existing in &self.already_suppressed {
                out.push_str(&format!("\n  {} ({})", existing.email, existing.reason));
            }
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{} {many}", count(n))
    }
}

// ---------------------------------------------------------------------------------------------
// import
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub file: String,
    pub reason: String,
    /// Lines holding an address (blank and comment lines not counted).
    pub lines: u64,
    pub added: u64,
    pub already_suppressed: u64,
    /// Lines repeating an address of an earlier line.
    pub duplicates: u64,
    pub invalid_lines: u64,
    pub invalid: Vec<InvalidRow>,
}

pub async fn import(
    list: &dyn SuppressionList,
    path: &Path,
    reason: &str,
    now: DateTime<Utc>,
    progress: &Progress,
) -> Result<ImportReport, CliError> {
    let reason = check_reason(reason)?;
    let file = File::open(path).map_err(|err| {
        CliError::new(format!("cannot open '{}': {err}", path.display()))
            .hint("check the path; it is relative to the current directory")
    })?;
    let addresses = read_address_list(file).map_err(|err| {
        CliError::new(format!("cannot read '{}': {err}", path.display()))
            .hint("the file holds one address per line; lines starting with # are comments")
    })?;
    let (added, existing) = add_new(list, &addresses.addresses, &reason, now, progress).await?;
    Ok(ImportReport {
        file: path.display().to_string(),
        reason,
        lines: addresses.lines,
        added: added.len() as u64,
        already_suppressed: existing.len() as u64,
        duplicates: addresses.duplicates,
        invalid_lines: addresses.invalid_lines,
        invalid: addresses.invalid,
    })
}

impl Report for ImportReport {
    fn text(&self) -> String {
        let mut out = format!(
            "Suppressed {} from {} ({}: {})\n",
            plural(self.added, "address", "addresses"),
            self.file,
            SOURCE_MANUAL,
            self.reason
        );
        out.push_str(&aligned(
            &[
                ("addresses read", count(self.lines)),
                ("added", count(self.added)),
                ("already suppressed", count(self.already_suppressed)),
                ("duplicates", count(self.duplicates)),
                ("invalid lines", count(self.invalid_lines)),
            ],
            2,
        ));
        if self.invalid_lines > 0 {
            out.push_str("\nInvalid lines (not added):");
            for row in self.invalid.iter().take(SHOWN_INVALID) {
                out.push_str(&format!("\n  line {}: {}", row.line, row.reason));
            }
            let shown = self.invalid.len().min(SHOWN_INVALID) as u64;
            if self.invalid_lines > shown {
                out.push_str(&format!(
                    "\n  ... and {} more (--json lists them)",
                    count(self.invalid_lines - shown)
                ));
            }
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }

    fn failure(&self) -> Option<CliError> {
        (self.invalid_lines > 0 && self.invalid_lines == self.lines).then(|| {
            CliError::new(format!("no address could be read from '{}'", self.file))
                .hint("fix the lines listed above and import again")
        })
    }
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct Entry {
    pub email: EmailAddress,
    pub reason: String,
    pub source: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct ListReport {
    pub suppressions: Vec<Entry>,
}

pub async fn list(list: &dyn SuppressionList) -> Result<ListReport, CliError> {
    let mut suppressions: Vec<Entry> = list
        .list()
        .await?
        .into_iter()
        .map(|s| Entry {
            email: s.email,
            reason: s.reason,
            source: s.source,
            at: s.at,
        })
        .collect();
    suppressions.sort_by(|a, b| a.email.cmp(&b.email));
    Ok(ListReport { suppressions })
}

impl Report for ListReport {
    fn text(&self) -> String {
        if self.suppressions.is_empty() {
            return "No address is suppressed.".to_owned();
        }
        let rows = self
            .suppressions
            .iter()
            .map(|s| {
                vec![
                    s.email.to_string(),
                    s.reason.clone(),
                    s.source.clone(),
                    s.at.to_rfc3339_opts(SecondsFormat::Secs, true),
                ]
            })
            .collect();
        let manual = self
            .suppressions
            .iter()
            .filter(|s| s.source == SOURCE_MANUAL)
            .count() as u64;
        format!(
            "{}\n{} suppressed ({} manual)",
            table(
                vec![
                    "email".into(),
                    "reason".into(),
                    "source".into(),
                    "since".into()
                ],
                rows
            ),
            plural(self.suppressions.len() as u64, "address", "addresses"),
            count(manual)
        )
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use chrono::TimeZone;
    use hikyaku_core::fakes::FakeSuppressions;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn email(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    #[tokio::test]
    async fn add_records_manual_entries_and_keeps_existing_ones() {
        let store = FakeSuppressions::default();
        store
            .add(&Suppression {
                email: email("b@example.com"),
                reason: "hard bounce".into(),
                source: "bounce".into(),
                at: now(),
            })
            .await
            .unwrap();
        let report = add(
            &store,
            &[
                "a@example.com".into(),
                "b@example.com".into(),
                "A@Example.COM".into(),
            ],
            " asked by phone ",
            now(),
        )
        .await
        .unwrap();
        // `A@Example.COM` is `a@example.com` again.
        assert_eq!(report.added, [email("a@example.com")]);
        assert_eq!(
            report.already_suppressed,
            [Existing {
                email: email("b@example.com"),
                reason: "hard bounce".into()
            }]
        );
        let entries = store.entries.lock().unwrap();
        let a = &entries[&email("a@example.com")];
        assert_eq!(
            (a.source.as_str(), a.reason.as_str()),
            ("manual", "asked by phone")
        );
        assert_eq!(entries[&email("b@example.com")].source, "bounce");
        drop(entries);
        let text = report.text();
        assert!(
            text.starts_with("Suppressed 1 address (manual: asked by phone)"),
            "{text}"
        );
        assert!(text.contains("b@example.com (hard bounce)"), "{text}");
    }

    #[tokio::test]
    async fn add_refuses_bad_addresses_and_adds_nothing() {
        let store = FakeSuppressions::default();
        let err = add(
            &store,
            &[
                "a@example.com".into(),
                "Jane <j@example.com>".into(),
                "x\ny@example.com".into(),
            ],
            "manual",
            now(),
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains("'Jane <j@example.com>'"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("'x\\ny@example.com'"),
            "{}",
            err.message
        );
        assert!(store.entries.lock().unwrap().is_empty());
        let err = add(&store, &["a@example.com".into()], "  ", now())
            .await
            .unwrap_err();
        assert_eq!(err.message, "--reason is empty");
    }

    #[tokio::test]
    async fn import_reads_one_address_a_line_and_is_idempotent() {
        let store = FakeSuppressions::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("suppressions.txt");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"# asked to stop\na@example.com\n\nb@example.org  # by phone\nbad\na@example.com\n")
            .unwrap();
        let report = import(&store, &path, "manual", now(), &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(
            (
                report.lines,
                report.added,
                report.duplicates,
                report.invalid_lines
            ),
            (4, 2, 1, 1)
        );
        assert_eq!(report.invalid[0].line, 5);
        assert!(report.failure().is_none());
        assert!(
            report.text().contains("line 5: email \"bad\""),
            "{}",
            report.text()
        );
        let again = import(&store, &path, "manual", now(), &Progress::hidden())
            .await
            .unwrap();
        assert_eq!((again.added, again.already_suppressed), (0, 2));
        assert_eq!(again.json()["already_suppressed"], 2);
    }

    #[tokio::test]
    async fn list_shows_every_entry_sorted() {
        let store = FakeSuppressions::default();
        add(
            &store,
            &["z@example.com".into(), "a@example.com".into()],
            "manual",
            now(),
        )
        .await
        .unwrap();
        let report = list(&store).await.unwrap();
        let emails: Vec<&str> = report
            .suppressions
            .iter()
            .map(|s| s.email.as_str())
            .collect();
        assert_eq!(emails, ["a@example.com", "z@example.com"]);
        let text = report.text();
        assert!(text.contains("2 addresses suppressed (2 manual)"), "{text}");
        assert!(text.contains("2026-01-02T03:04:05Z"), "{text}");
        assert_eq!(report.json()["suppressions"][0]["source"], "manual");
        let empty = list(&FakeSuppressions::default()).await.unwrap();
        assert_eq!(empty.text(), "No address is suppressed.");
    }
}
