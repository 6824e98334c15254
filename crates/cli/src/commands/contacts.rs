//! `hikyaku contacts import` and `hikyaku contacts list`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use hikyaku_core::contact::{Contact, ListSchema};
use hikyaku_core::ids::ListId;
use hikyaku_core::import::{ImportFormat, ImportOutcome, InvalidRow, read_contacts};
use hikyaku_core::ports::ContactStore;
use hikyaku_core::segment::Segment;
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Report, aligned, count, table, to_json};
use crate::progress::Progress;

/// Contacts handed to the store per call, so the progress bar moves (the store batches them
/// further, 25 per DynamoDB request).
pub const WRITE_CHUNK: usize = 500;
/// Invalid rows printed as text; `--json` has all that were kept.
pub const SHOWN_INVALID: usize = 20;
/// Contacts read per page by `contacts list`.
pub const LIST_PAGE: u32 = 500;
/// Distinct reasons kept for contacts a segment cannot judge.
const MAX_REASONS: usize = 10;

// ---------------------------------------------------------------------------------------------
// import
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub list: ListId,
    pub file: String,
    pub format: ImportFormat,
    /// Data rows in the file.
    pub rows: u64,
    /// Rows that gave a contact (duplicates included).
    pub valid: u64,
    /// Unique contacts written.
    pub imported: u64,
    pub invalid_rows: u64,
    /// The invalid rows with their reasons (the first 10,000).
    pub invalid: Vec<InvalidRow>,
    pub duplicates_merged: u64,
    /// Batch items the store left unprocessed and that were written on a later try.
    pub retried: u64,
    /// The attributes seen in the file, with their kinds.
    pub schema: ListSchema,
}

/// The format to read `path` as: the one asked for, or the one its extension names.
pub fn format_for(path: &Path, asked: Option<ImportFormat>) -> Result<ImportFormat, CliError> {
    asked
        .or_else(|| ImportFormat::from_path(path))
        .ok_or_else(|| {
            CliError::new(format!(
                "cannot tell the format of '{}' from its extension",
                path.display()
            ))
            .hint("name the file .csv, .jsonl or .ndjson, or pass --format csv|jsonl")
        })
}

/// Reads and checks the file; nothing is written yet.
pub fn read_file(
    path: &Path,
    format: ImportFormat,
    progress: &Progress,
) -> Result<ImportOutcome, CliError> {
    let file = File::open(path).map_err(|err| {
        CliError::new(format!("cannot open '{}': {err}", path.display()))
            .hint("check the path; it is relative to the current directory")
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress.bytes(len, "reading");
    let outcome = read_contacts(bar.wrap_read(file), format);
    bar.finish_and_clear();
    outcome.map_err(|err| {
        CliError::new(format!("cannot import '{}': {err}", path.display())).hint(
            "a CSV file needs a header row with an 'email' column; \
             a JSON Lines file one object with an \"email\" key per line",
        )
    })
}

/// Writes what the file yielded: the schema first (so a list never holds contacts its schema
/// does not describe), then the contacts in chunks. Both writes are idempotent, so after a
/// failure the same import can simply be run again.
pub async fn write(
    store: &dyn ContactStore,
    list: &ListId,
    outcome: &ImportOutcome,
    progress: &Progress,
) -> Result<(u64, u64), CliError> {
    if outcome.contacts.is_empty() {
        return Ok((0, 0));
    }
    store
        .merge_schema(list, &outcome.schema)
        .await
        .map_err(CliError::store)?;
    let bar = progress.items(outcome.contacts.len() as u64, "writing");
    let (mut written, mut retried) = (0u64, 0u64);
    for chunk in outcome.contacts.chunks(WRITE_CHUNK) {
        let report = store.put_many(list, chunk).await.map_err(|err| {
            bar.finish_and_clear();
            let mut failure = CliError::store(err);
            failure.message = format!(
                "{} ({} of {} contacts were written before it)",
                failure.message,
                count(written),
                count(outcome.contacts.len() as u64)
            );
            failure
                .hint("run the same import again: writing a contact a second time changes nothing")
        })?;
        written += report.written;
        retried += report.retried;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((written, retried))
}

pub async fn import(
    store: &dyn ContactStore,
    list: &ListId,
    path: &Path,
    format: Option<ImportFormat>,
    progress: &Progress,
) -> Result<ImportReport, CliError> {
    let format = format_for(path, format)?;
    let outcome = read_file(path, format, progress)?;
    let (imported, retried) = write(store, list, &outcome, progress).await?;
    let summary = outcome.summary;
    Ok(ImportReport {
        list: list.clone(),
        file: path.display().to_string(),
        format,
        rows: summary.rows,
        valid: summary.valid,
        imported,
        invalid_rows: summary.invalid_rows,
        invalid: summary.invalid,
        duplicates_merged: summary.duplicates_merged,
        retried,
        schema: outcome.schema,
    })
}

impl Report for ImportReport {
    fn text(&self) -> String {
        let mut out = format!(
            "Imported {} into list '{}' from {} ({})\n",
            plural(self.imported, "contact"),
            self.list,
            self.file,
            self.format
        );
        out.push_str(&aligned(
            &[
                ("rows read", count(self.rows)),
                ("imported", count(self.imported)),
                ("invalid rows", count(self.invalid_rows)),
                ("duplicates merged", count(self.duplicates_merged)),
                ("retried batch items", count(self.retried)),
            ],
            2,
        ));
        if !self.schema.attributes.is_empty() {
            let attributes: Vec<String> = self
                .schema
                .attributes
                .iter()
                .map(|(name, kind)| format!("{name} ({kind})"))
                .collect();
            out.push_str(&format!("\nattributes: {}", attributes.join(", ")));
        }
        if self.invalid_rows > 0 {
            out.push_str("\nInvalid rows (not imported):");
            for row in self.invalid.iter().take(SHOWN_INVALID) {
                out.push_str(&format!("\n  line {}: {}", row.line, row.reason));
            }
            let shown = self.invalid.len().min(SHOWN_INVALID) as u64;
            if self.invalid_rows > shown {
                out.push_str(&format!(
                    "\n  ... and {} more (--json lists them)",
                    count(self.invalid_rows - shown)
                ));
            }
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }

    fn failure(&self) -> Option<CliError> {
        if self.valid > 0 {
            return None;
        }
        let err = CliError::new(format!("no contact could be read from '{}'", self.file));
        Some(if self.rows == 0 {
            err.hint("the file has no data rows")
        } else {
            err.hint("every row is invalid: fix the rows listed above and import again")
        })
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{} {word}s", count(n))
    }
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct ListReport {
    pub list: ListId,
    pub segment: Option<String>,
    /// Contacts read from the list.
    pub scanned: u64,
    /// Contacts the segment selects (all of them without a segment).
    pub selected: u64,
    /// Contacts the segment leaves out.
    pub filtered: u64,
    /// Contacts the segment cannot judge (an attribute missing or of another kind); a run
    /// does not send to them.
    pub undecidable: u64,
    /// Why, by reason (the first few reasons).
    pub undecidable_reasons: BTreeMap<String, u64>,
    /// Stored items that are not readable contacts.
    pub unreadable: u64,
    /// Attribute columns shown.
    pub columns: Vec<String>,
    /// The first `--limit` selected contacts.
    pub contacts: Vec<Contact>,
}

/// Reads the whole list and judges every contact, keeping the first `limit` selected ones.
pub async fn list(
    store: &dyn ContactStore,
    list: &ListId,
    segment: Option<&str>,
    limit: usize,
    progress: &Progress,
) -> Result<ListReport, CliError> {
    let schema = store.schema(list).await.map_err(CliError::store)?;
    let segment = match segment {
        None => None,
        Some(source) => Some(checked_segment(list, source, schema.as_ref())?),
    };
    let mut report = ListReport {
        list: list.clone(),
        segment: segment.as_ref().map(|s| s.source().to_owned()),
        scanned: 0,
        selected: 0,
        filtered: 0,
        undecidable: 0,
        undecidable_reasons: BTreeMap::new(),
        unreadable: 0,
        columns: Vec::new(),
        contacts: Vec::new(),
    };
    let bar = progress.spinner("contacts read");
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .page(list, cursor.as_deref(), LIST_PAGE)
            .await
            .map_err(|err| {
                bar.finish_and_clear();
                CliError::store(err)
            })?;
        report.scanned += page.contacts.len() as u64;
        report.unreadable += page.unreadable.len() as u64;
        bar.inc(page.contacts.len() as u64);
        for contact in page.contacts {
            let verdict = match &segment {
                None => Ok(true),
                Some(segment) => segment.matches(&contact.email, &contact.attributes),
            };
            match verdict {
                Ok(true) => {
                    report.selected += 1;
                    if report.contacts.len() < limit {
                        report.contacts.push(contact);
                    }
                }
                Ok(false) => report.filtered += 1,
                Err(err) => {
                    report.undecidable += 1;
                    let reason = err.to_string();
                    if let Some(n) = report.undecidable_reasons.get_mut(&reason) {
                        *n += 1;
                    } else if report.undecidable_reasons.len() < MAX_REASONS {
                        report.undecidable_reasons.insert(reason, 1);
                    }
                }
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    bar.finish_and_clear();
    report.columns = match &schema {
        Some(schema) => schema.attributes.keys().cloned().collect(),
        None => {
            let mut seen = ListSchema::default();
            for contact in &report.contacts {
                seen.observe(&contact.attributes);
            }
            seen.attributes.into_keys().collect()
        }
    };
    Ok(report)
}

/// Parses the segment and checks it against the list's schema, naming what is wrong.
fn checked_segment(
    list: &ListId,
    source: &str,
    schema: Option<&ListSchema>,
) -> Result<Segment, CliError> {
    let segment = Segment::parse(source).map_err(|err| {
        CliError::new(format!("segment `{source}`: {err}")).hint(
            "a segment is a CEL expression over the contact's attributes, \
             e.g. mail_allowed == 1 && account_type == 2",
        )
    })?;
    let schema = schema.ok_or_else(|| {
        CliError::new(format!(
            "list '{list}' has no contacts, so no segment can be checked against it"
        ))
        .hint(format!(
            "import contacts first: hikyaku contacts import FILE --list {list}"
        ))
    })?;
    segment.validate(schema).map_err(|err| {
        CliError::new(format!("segment `{source}`: {err}"))
            .hint("segments may use `email`, `email_domain` and the list's attributes")
    })?;
    Ok(segment)
}

impl Report for ListReport {
    fn text(&self) -> String {
        let mut out = String::new();
        if !self.contacts.is_empty() {
            let mut header = vec!["email".to_owned()];
            header.extend(self.columns.iter().cloned());
            let rows = self
                .contacts
                .iter()
                .map(|contact| {
                    let mut row = vec![contact.email.to_string()];
                    row.extend(self.columns.iter().map(|name| {
                        contact
                            .attributes
                            .get(name)
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    }));
                    row
                })
                .collect();
            out.push_str(&table(header, rows));
            out.push('\n');
        }
        out.push_str(&format!("list '{}'", self.list));
        if let Some(segment) = &self.segment {
            out.push_str(&format!(", segment `{segment}`"));
        }
        out.push('\n');
        let mut rows = vec![("contacts read", count(self.scanned))];
        if self.segment.is_some() {
            rows.push(("selected", count(self.selected)));
            rows.push(("filtered out", count(self.filtered)));
            rows.push(("undecidable", count(self.undecidable)));
        }
        if self.unreadable > 0 {
            rows.push(("unreadable items", count(self.unreadable)));
        }
        out.push_str(&aligned(&rows, 2));
        for (reason, n) in &self.undecidable_reasons {
            out.push_str(&format!("\n    {}: {reason}", count(*n)));
        }
        let shown = self.contacts.len() as u64;
        if self.selected > shown {
            out.push_str(&format!(
                "\nshowing the first {} of {} selected; --limit N shows more",
                count(shown),
                count(self.selected)
            ));
        } else if self.scanned == 0 {
            out.push_str(&format!("\nlist '{}' has no contacts", self.list));
        } else if self.selected == 0 {
            out.push_str("\nno contact selected");
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use hikyaku_core::contact::{AttrKind, AttrValue, Attributes};
    use hikyaku_core::email::EmailAddress;
    use hikyaku_core::fakes::FakeContacts;
    use hikyaku_core::ports::{ContactPage, PutReport, StoreError};

    use super::*;

    fn list_id() -> ListId {
        ListId::parse("newsletter").unwrap()
    }

    fn file(name: &str, content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        (dir, path)
    }

    const CSV: &str = "email,first_name,mail_allowed,account_type\n\
                       a@example.com,Aiko,1,2\n\
                       b@example.com,Ben,0,2\n\
                       not-an-address,X,1,2\n\
                       c@example.org,Chloé,1,1\n\
                       a@example.com,Aiko,1,2\n";

    #[tokio::test]
    async fn import_writes_the_valid_contacts_and_the_schema_and_reports_the_rest() {
        let store = FakeContacts::default();
        let (_dir, path) = file("contacts.csv", CSV);
        let report = import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(report.rows, 5);
        assert_eq!(report.valid, 4);
        assert_eq!(report.imported, 3);
        assert_eq!(report.invalid_rows, 1);
        assert_eq!(report.invalid[0].line, 4);
        assert_eq!(report.duplicates_merged, 1);
        assert!(report.failure().is_none());
        let schema = store.schema(&list_id()).await.unwrap().unwrap();
        assert_eq!(schema.kind_of("account_type"), Some(AttrKind::Int));
        let c = store
            .get(&list_id(), &EmailAddress::parse("c@example.org").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.attributes["first_name"], AttrValue::from("Chloé"));

        let text = report.text();
        assert!(
            text.starts_with("Imported 3 contacts into list 'newsletter'"),
            "{text}"
        );
        assert!(text.contains("invalid rows         1"), "{text}");
        assert!(text.contains("line 4: email \"not-an-address\""), "{text}");
        let json = report.json();
        assert_eq!(json["imported"], 3);
        assert_eq!(json["invalid"][0]["line"], 4);
        assert_eq!(json["format"], "csv");
    }

    #[tokio::test]
    async fn importing_the_same_file_again_changes_nothing() {
        let store = FakeContacts::default();
        let (_dir, path) = file("contacts.csv", CSV);
        import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap();
        let before = store.lists.lock().unwrap().clone();
        let schema_before = store.schema(&list_id()).await.unwrap();
        import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(*store.lists.lock().unwrap(), before);
        assert_eq!(store.schema(&list_id()).await.unwrap(), schema_before);
    }

    #[tokio::test]
    async fn a_file_without_valid_rows_is_reported_and_fails() {
        let store = FakeContacts::default();
        let (_dir, path) = file("bad.csv", "email,x\nnope,1\n");
        let report = import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap();
        let failure = report.failure().unwrap();
        assert!(failure.message.contains("no contact could be read"));
        assert!(failure.hint.unwrap().contains("every row is invalid"));
        assert!(store.schema(&list_id()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn file_problems_are_errors_with_hints() {
        let store = FakeContacts::default();
        let (_dir, path) = file("contacts.txt", CSV);
        let err = import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(err.hint.unwrap().contains("--format"));
        // The override reads it anyway.
        let report = import(
            &store,
            &list_id(),
            &path,
            Some(ImportFormat::Csv),
            &Progress::hidden(),
        )
        .await
        .unwrap();
        assert_eq!(report.imported, 3);

        let (_dir, header) = file("h.csv", "name,city\nA,B\n");
        let err = import(&store, &list_id(), &header, None, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(err.message.contains("no 'email' column"), "{}", err.message);

        let missing = std::path::Path::new("/nonexistent/contacts.csv");
        let err = import(&store, &list_id(), missing, None, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(err.message.contains("cannot open"));
    }

    #[tokio::test]
    async fn json_lines_are_imported_by_extension() {
        let store = FakeContacts::default();
        let (_dir, path) = file(
            "contacts.ndjson",
            "{\"email\":\"a@example.com\",\"vip\":true}\n{\"email\":\"b@example.com\",\"tags\":[]}\n",
        );
        let report = import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(report.format, ImportFormat::Jsonl);
        assert_eq!(report.imported, 1);
        assert_eq!(report.invalid[0].line, 2);
    }

    #[test]
    fn the_text_caps_the_invalid_rows_it_prints() {
        let invalid: Vec<InvalidRow> = (1..=25)
            .map(|line| InvalidRow {
                line,
                reason: "bad".into(),
            })
            .collect();
        let report = ImportReport {
            list: list_id(),
            file: "x.csv".into(),
            format: ImportFormat::Csv,
            rows: 30,
            valid: 5,
            imported: 5,
            invalid_rows: 25,
            invalid,
            duplicates_merged: 0,
            retried: 0,
            schema: ListSchema::default(),
        };
        let text = report.text();
        assert!(text.contains("line 20: bad"));
        assert!(!text.contains("line 21: bad"));
        assert!(
            text.contains("... and 5 more (--json lists them)"),
            "{text}"
        );
        assert_eq!(report.json()["invalid"].as_array().unwrap().len(), 25);
    }

    /// A store whose writes fail after `ok_calls` successful calls.
    struct FailingStore {
        inner: FakeContacts,
        ok_calls: std::sync::atomic::AtomicU64,
    }

    #[async_trait::async_trait]
    impl ContactStore for FailingStore {
        async fn page(
            &self,
            list: &ListId,
            cursor: Option<&str>,
            limit: u32,
        ) -> Result<ContactPage, StoreError> {
            self.inner.page(list, cursor, limit).await
        }
        async fn get(
            &self,
            list: &ListId,
            email: &EmailAddress,
        ) -> Result<Option<Contact>, StoreError> {
            self.inner.get(list, email).await
        }
        async fn put_many(
            &self,
            list: &ListId,
            contacts: &[Contact],
        ) -> Result<PutReport, StoreError> {
            use std::sync::atomic::Ordering;
            if self.ok_calls.load(Ordering::SeqCst) == 0 {
                return Err(StoreError::new("put contacts", "throttled", true));
            }
            self.ok_calls.fetch_sub(1, Ordering::SeqCst);
            let mut report = self.inner.put_many(list, contacts).await?;
            report.retried = 2;
            Ok(report)
        }
        async fn record_last_sent(
            &self,
            list: &ListId,
            email: &EmailAddress,
            run: &hikyaku_core::ids::RunRef,
            result: &str,
            at: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), StoreError> {
            self.inner
                .record_last_sent(list, email, run, result, at)
                .await
        }
        async fn last_sent(
            &self,
            list: &ListId,
            emails: &[EmailAddress],
        ) -> Result<
            std::collections::HashMap<EmailAddress, hikyaku_core::ports::LastSent>,
            StoreError,
        > {
            self.inner.last_sent(list, emails).await
        }
        async fn schema(&self, list: &ListId) -> Result<Option<ListSchema>, StoreError> {
            self.inner.schema(list).await
        }
        async fn merge_schema(
            &self,
            list: &ListId,
            observed: &ListSchema,
        ) -> Result<(), StoreError> {
            self.inner.merge_schema(list, observed).await
        }
    }

    fn many_contacts(n: usize) -> String {
        let mut text = String::from("email,n\n");
        for i in 0..n {
            text.push_str(&format!("u{i}@example.com,{i}\n"));
        }
        text
    }

    #[tokio::test]
    async fn a_store_failure_says_how_far_it_got_and_that_rerunning_is_safe() {
        let store = FailingStore {
            inner: FakeContacts::default(),
            ok_calls: 1.into(),
        };
        let (_dir, path) = file("many.csv", &many_contacts(WRITE_CHUNK + 10));
        let err = import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(
            err.message.contains("500 of 510 contacts were written"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("run the same import again"));
    }

    #[tokio::test]
    async fn retried_batch_items_are_summed() {
        let store = FailingStore {
            inner: FakeContacts::default(),
            ok_calls: 10.into(),
        };
        let (_dir, path) = file("many.csv", &many_contacts(WRITE_CHUNK * 2 + 1));
        let report = import(&store, &list_id(), &path, None, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(report.imported, (WRITE_CHUNK * 2 + 1) as u64);
        assert_eq!(report.retried, 6);
    }

    fn contact(email: &str, attrs: &[(&str, AttrValue)]) -> Contact {
        let attributes: Attributes = attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Contact {
            email: EmailAddress::parse(email).unwrap(),
            attributes,
        }
    }

    async fn store_with_contacts(n: usize) -> FakeContacts {
        let store = FakeContacts::default();
        let mut contacts = Vec::new();
        for i in 0..n {
            let mut attrs = vec![
                ("mail_allowed", AttrValue::Int((i % 2) as i64)),
                ("city", AttrValue::from("Osaka")),
            ];
            if i % 5 != 4 {
                attrs.push(("account_type", AttrValue::Int(2)));
            }
            contacts.push(contact(&format!("u{i:04}@example.com"), &attrs));
        }
        let mut schema = ListSchema::default();
        for c in &contacts {
            schema.observe(&c.attributes);
        }
        store.put_many(&list_id(), &contacts).await.unwrap();
        store.merge_schema(&list_id(), &schema).await.unwrap();
        store
    }

    #[tokio::test]
    async fn list_counts_what_a_segment_selects_over_every_page() {
        let store = store_with_contacts(1234).await;
        let report = list(
            &store,
            &list_id(),
            Some("mail_allowed == 1 && account_type == 2"),
            5,
            &Progress::hidden(),
        )
        .await
        .unwrap();
        assert_eq!(report.scanned, 1234);
        // Odd i select, unless i % 5 == 4 (no account_type: undecidable).
        let undecidable = (0..1234).filter(|i| i % 5 == 4).count() as u64;
        let selected = (0..1234).filter(|i| i % 2 == 1 && i % 5 != 4).count() as u64;
        assert_eq!(report.undecidable, undecidable);
        assert_eq!(report.selected, selected);
        assert_eq!(report.filtered, 1234 - undecidable - selected);
        assert_eq!(report.contacts.len(), 5);
        assert_eq!(report.contacts[0].email.as_str(), "u0001@example.com");
        assert_eq!(report.columns, ["account_type", "city", "mail_allowed"]);
        let text = report.text();
        assert!(text.contains("u0001@example.com"), "{text}");
        assert!(text.contains("showing the first 5 of"), "{text}");
        assert!(
            text.contains("the contact has no attribute `account_type`"),
            "{text}"
        );
        let json = report.json();
        assert_eq!(json["selected"], selected);
        assert_eq!(json["contacts"][0]["attributes"]["city"], "Osaka");
    }

    #[tokio::test]
    async fn list_without_a_segment_shows_everyone() {
        let store = store_with_contacts(3).await;
        let report = list(&store, &list_id(), None, 50, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(report.selected, 3);
        assert_eq!(report.contacts.len(), 3);
        assert!(!report.text().contains("filtered out"));
    }

    #[tokio::test]
    async fn segment_problems_are_named() {
        let store = store_with_contacts(3).await;
        let err = list(
            &store,
            &list_id(),
            Some("plan == 'gold'"),
            5,
            &Progress::hidden(),
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("`plan`"), "{}", err.message);
        let err = list(
            &store,
            &list_id(),
            Some("mail_allowed =="),
            5,
            &Progress::hidden(),
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains("not a valid CEL expression"),
            "{}",
            err.message
        );
        let empty = FakeContacts::default();
        let err = list(&empty, &list_id(), Some("x == 1"), 5, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(err.message.contains("has no contacts"));
        assert!(err.hint.unwrap().contains("hikyaku contacts import"));
    }

    /// The demo's files: their counts are what README and `make demo` promise.
    #[tokio::test]
    async fn the_demo_contacts_import_as_documented() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let store = FakeContacts::default();
        let report = import(
            &store,
            &list_id(),
            &examples.join("contacts.csv"),
            None,
            &Progress::hidden(),
        )
        .await
        .unwrap();
        assert_eq!(
            (
                report.rows,
                report.valid,
                report.imported,
                report.invalid_rows,
                report.duplicates_merged
            ),
            (1234, 1227, 1224, 7, 3)
        );
        let reasons: Vec<(u64, &str)> = report
            .invalid
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        for (expected, (_, reason)) in [
            "more than one '@'",
            "display name",
            "no '@'",
            "control character (U+000A)",
            "65 octets",
            "the address is empty",
            "the row has 5 fields; the header has 6",
        ]
        .iter()
        .zip(&reasons)
        {
            assert!(reason.contains(expected), "{expected:?} not in {reason:?}");
        }
        // Data row n is on line n + 2, one more after the quoted line break of line 514.
        let lines: Vec<u64> = reasons.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [92, 235, 379, 514, 771, 908, 1053]);

        let segment = "mail_allowed == 1 && account_type == 2";
        let listed = list(&store, &list_id(), Some(segment), 0, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(
            (listed.selected, listed.filtered, listed.undecidable),
            // 732 generated contacts in the segment and the 24 at simulator addresses.
            (756, 468, 0)
        );

        let suppressions = hikyaku_core::import::read_address_list(
            std::fs::File::open(examples.join("suppressions.txt")).unwrap(),
        )
        .unwrap();
        assert_eq!((suppressions.lines, suppressions.invalid_lines), (23, 0));
        let segment = Segment::parse(segment).unwrap();
        let mut in_segment = 0;
        for email in &suppressions.addresses {
            if let Some(c) = store.get(&list_id(), email).await.unwrap()
                && segment.matches(&c.email, &c.attributes).unwrap()
            {
                in_segment += 1;
            }
        }
        assert_eq!(in_segment, 20);
    }
}
