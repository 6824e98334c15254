//! `hikyaku suppression add | import | remove | list | export`: addresses that must never be
//! mailed. Entries made by hand (kind `manual`) are kept apart from those the feedback function
//! records from bounces and complaints (`automatic`) and from mirrored unsubscribes
//! (`unsubscribed`): removing one kind leaves the others standing.

use std::fs::File;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::import::{InvalidRow, read_address_list};
use hikyaku_core::ports::{Suppression, SuppressionEntry, SuppressionKind, SuppressionList};
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

/// Gives every address a manual entry unless it has one; an address suppressed for another
/// reason (a bounce, say) gets its manual entry too, so removing the other leaves it
/// suppressed. Addresses suppressed before are reported with their reason.
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
            .check(chunk, None)
            .await
            .inspect_err(|_| bar.finish_and_clear())?;
        for email in chunk {
            let made = list
                .add(&Suppression {
                    email: email.clone(),
                    reason: reason.to_owned(),
                    source: SOURCE_MANUAL.to_owned(),
                    at: now,
                })
                .await
                .inspect_err(|_| bar.finish_and_clear())?;
            match known.remove(email) {
                Some(reason) => existing.push(Existing {
                    email: email.clone(),
                    reason,
                }),
                None if made => added.push(email.clone()),
                None => {}
            }
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
// remove
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct RemoveReport {
    pub kind: SuppressionKind,
    pub removed: Vec<EmailAddress>,
    /// Addresses that had no entry of this kind.
    pub not_found: Vec<EmailAddress>,
    /// Removed addresses that stay suppressed by an entry of another kind, with its reason.
    pub still_suppressed: Vec<Existing>,
}

pub async fn remove(
    list: &dyn SuppressionList,
    emails: &[String],
    kind: SuppressionKind,
) -> Result<RemoveReport, CliError> {
    if kind == SuppressionKind::Unsubscribed {
        return Err(CliError::new("unsubscribes cannot be removed here").hint(
            "they mirror the contact's choice in SES; SES keeps honouring it whatever hikyaku \
             stores, so change it in the SES contact list",
        ));
    }
    let mut addresses = Vec::new();
    for raw in emails {
        let email = EmailAddress::parse(raw).map_err(|err| {
            CliError::new(format!("'{}': {err}", raw.escape_debug()))
                .hint("nothing was removed; fix the address and run the command again")
        })?;
        if !addresses.contains(&email) {
            addresses.push(email);
        }
    }
    let mut report = RemoveReport {
        kind,
        removed: Vec::new(),
        not_found: Vec::new(),
        still_suppressed: Vec::new(),
    };
    for email in addresses {
        if list.remove(&email, kind).await? {
            report.removed.push(email);
        } else {
            report.not_found.push(email);
        }
    }
    for chunk in report.removed.chunks(CHECK_CHUNK) {
        for (email, reason) in list.check(chunk, None).await? {
            report.still_suppressed.push(Existing { email, reason });
        }
    }
    report
        .still_suppressed
        .sort_by(|a, b| a.email.cmp(&b.email));
    Ok(report)
}

impl Report for RemoveReport {
    fn text(&self) -> String {
        let mut out = format!(
            "Removed the {} entry of {}",
            self.kind.as_str(),
            plural(self.removed.len() as u64, "address", "addresses")
        );
        for email in &self.removed {
            out.push_str(&format!("\n  {email}"));
        }
        if !self.not_found.is_empty() {
            out.push_str(&format!(
                "\nNo {} entry (nothing done):",
                self.kind.as_str()
            ));
            for email in &self.not_found {
                out.push_str(&format!("\n  {email}"));
            }
        }
        if !self.still_suppressed.is_empty() {
            out.push_str("\nStill suppressed by another entry:");
            for existing in &self.still_suppressed {
                out.push_str(&format!("\n  {} ({})", existing.email, existing.reason));
            }
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

// ---------------------------------------------------------------------------------------------
// list and export
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct ListReport {
    pub suppressions: Vec<SuppressionEntry>,
}

/// Every entry, or those of one kind, sorted by address.
pub async fn list(
    list: &dyn SuppressionList,
    kind: Option<SuppressionKind>,
) -> Result<ListReport, CliError> {
    let mut suppressions: Vec<SuppressionEntry> = list
        .list()
        .await?
        .into_iter()
        .filter(|entry| kind.is_none_or(|kind| entry.kind == kind))
        .collect();
    suppressions.sort_by(|a, b| (&a.email, a.kind).cmp(&(&b.email, b.kind)));
    Ok(ListReport { suppressions })
}

fn since(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl ListReport {
    fn count_of(&self, kind: SuppressionKind) -> u64 {
        self.suppressions.iter().filter(|s| s.kind == kind).count() as u64
    }

    fn addresses(&self) -> u64 {
        let mut emails: Vec<&EmailAddress> = self.suppressions.iter().map(|s| &s.email).collect();
        emails.dedup();
        emails.len() as u64
    }
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
                    s.kind.as_str().to_owned(),
                    s.reason.clone(),
                    s.diagnostic.clone().unwrap_or_default(),
                    s.source_run.clone().unwrap_or_default(),
                    count(s.count),
                    since(s.at),
                ]
            })
            .collect();
        format!(
            "{}\n{} suppressed ({} manual, {} automatic, {} unsubscribed entries)",
            table(
                [
                    "email",
                    "kind",
                    "reason",
                    "diagnostic",
                    "source run",
                    "events",
                    "since"
                ]
                .map(String::from)
                .to_vec(),
                rows
            ),
            plural(self.addresses(), "address", "addresses"),
            count(self.count_of(SuppressionKind::Manual)),
            count(self.count_of(SuppressionKind::Automatic)),
            count(self.count_of(SuppressionKind::Unsubscribed)),
        )
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

/// `suppression export`: the entries as CSV, to a file or as the command's output.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    /// Where the CSV went; `None`: it is the text output.
    pub file: Option<String>,
    pub entries: u64,
    #[serde(skip)]
    csv: String,
}

pub const EXPORT_COLUMNS: [&str; 7] = [
    "email",
    "kind",
    "reason",
    "diagnostic",
    "source_run",
    "events",
    "since",
];

pub async fn export(
    store: &dyn SuppressionList,
    kind: Option<SuppressionKind>,
    out: Option<&Path>,
) -> Result<ExportReport, CliError> {
    let listed = list(store, kind).await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let csv_error = |err: csv::Error| CliError::new(format!("cannot write the CSV: {err}"));
    writer.write_record(EXPORT_COLUMNS).map_err(csv_error)?;
    for s in &listed.suppressions {
        writer
            .write_record([
                s.email.as_str(),
                s.kind.as_str(),
                &s.reason,
                s.diagnostic.as_deref().unwrap_or_default(),
                s.source_run.as_deref().unwrap_or_default(),
                &s.count.to_string(),
                &since(s.at),
            ])
            .map_err(csv_error)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|err| CliError::new(format!("cannot write the CSV: {err}")))?;
    let csv = String::from_utf8(bytes)
        .map_err(|err| CliError::new(format!("the CSV is not UTF-8: {err}")))?;
    if let Some(path) = out {
        std::fs::write(path, &csv).map_err(|err| {
            CliError::new(format!("cannot write '{}': {err}", path.display()))
                .hint("check that the folder exists and is writable")
        })?;
    }
    Ok(ExportReport {
        file: out.map(|p| p.display().to_string()),
        entries: listed.suppressions.len() as u64,
        csv,
    })
}

impl Report for ExportReport {
    fn text(&self) -> String {
        match &self.file {
            Some(file) => format!(
                "Exported {} to {file}",
                plural(self.entries, "entry", "entries")
            ),
            None => self.csv.trim_end().to_owned(),
        }
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
    use hikyaku_core::ports::AutomaticSuppression;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn email(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    async fn bounced(store: &FakeSuppressions, address: &str) {
        store
            .suppress(
                &AutomaticSuppression {
                    email: email(address),
                    reason: "hard bounce".into(),
                    diagnostic: Some("Permanent/General: smtp; 550 user unknown".into()),
                    run: None,
                    at: now(),
                },
                "sns-1",
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn add_records_manual_entries_beside_automatic_ones() {
        let store = FakeSuppressions::default();
        bounced(&store, "b@example.com").await;
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
        let a = store.address(&email("a@example.com")).manual.unwrap();
        assert_eq!(
            (a.source.as_str(), a.reason.as_str()),
            ("manual", "asked by phone")
        );
        // b keeps its bounce and gains a manual entry of its own.
        let b = store.address(&email("b@example.com"));
        assert!(b.automatic.is_some() && b.manual.is_some());
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
        assert!(store.addresses.lock().unwrap().is_empty());
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
    async fn remove_takes_one_kind_away_and_says_what_still_suppresses() {
        let store = FakeSuppressions::default();
        bounced(&store, "b@example.com").await;
        add(
            &store,
            &["a@example.com".into(), "b@example.com".into()],
            "asked",
            now(),
        )
        .await
        .unwrap();
        let report = remove(
            &store,
            &[
                "a@example.com".into(),
                "b@example.com".into(),
                "c@example.com".into(),
            ],
            SuppressionKind::Manual,
        )
        .await
        .unwrap();
        assert_eq!(
            report.removed,
            [email("a@example.com"), email("b@example.com")]
        );
        assert_eq!(report.not_found, [email("c@example.com")]);
        assert_eq!(report.still_suppressed.len(), 1);
        assert_eq!(report.still_suppressed[0].reason, "hard bounce");
        assert!(report.text().contains("b@example.com (hard bounce)"));

        let report = remove(
            &store,
            &["b@example.com".into()],
            SuppressionKind::Automatic,
        )
        .await
        .unwrap();
        assert!(report.still_suppressed.is_empty());
        assert!(
            store
                .check(&[email("b@example.com")], None)
                .await
                .unwrap()
                .is_empty()
        );
        let err = remove(
            &store,
            &["b@example.com".into()],
            SuppressionKind::Unsubscribed,
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("unsubscribes"), "{}", err.message);
    }

    #[tokio::test]
    async fn list_and_export_show_every_entry_with_its_kind() {
        let store = FakeSuppressions::default();
        add(
            &store,
            &["z@example.com".into(), "a@example.com".into()],
            "manual",
            now(),
        )
        .await
        .unwrap();
        bounced(&store, "a@example.com").await;
        let report = list(&store, None).await.unwrap();
        let rows: Vec<(&str, SuppressionKind)> = report
            .suppressions
            .iter()
            .map(|s| (s.email.as_str(), s.kind))
            .collect();
        assert_eq!(
            rows,
            [
                ("a@example.com", SuppressionKind::Manual),
                ("a@example.com", SuppressionKind::Automatic),
                ("z@example.com", SuppressionKind::Manual)
            ]
        );
        let text = report.text();
        assert!(
            text.contains("2 addresses suppressed (2 manual, 1 automatic, 0 unsubscribed entries)"),
            "{text}"
        );
        assert!(text.contains("2026-01-02T03:04:05Z"), "{text}");
        assert_eq!(report.json()["suppressions"][1]["kind"], "automatic");
        let automatic = list(&store, Some(SuppressionKind::Automatic))
            .await
            .unwrap();
        assert_eq!(automatic.suppressions.len(), 1);

        let exported = export(&store, None, None).await.unwrap();
        let csv = exported.text();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("email,kind,reason,diagnostic,source_run,events,since")
        );
        assert_eq!(
            lines.nth(1),
            Some(
                "a@example.com,automatic,hard bounce,Permanent/General: smtp; 550 user unknown,,1,2026-01-02T03:04:05Z"
            )
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let written = export(&store, None, Some(&path)).await.unwrap();
        assert_eq!(
            written.text(),
            format!("Exported 3 entries to {}", path.display())
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
        let empty = list(&FakeSuppressions::default(), None).await.unwrap();
        assert_eq!(empty.text(), "No address is suppressed.");
    }
}
