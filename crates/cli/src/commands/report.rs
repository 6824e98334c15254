//! `hikyaku campaign runs | report | recipients`: what runs did. The figures, their rules and
//! the CSV and HTML renderings are core's (`hikyaku_core::report`); this module finds the
//! campaign and the run, reads the ledger through [`LedgerReader`], and shows the result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hikyaku_core::campaign::CampaignDefinition;
use hikyaku_core::ids::{CampaignId, RunId};
use hikyaku_core::ports::{CampaignStore, Ledger, RunStore};
use hikyaku_core::report::{
    LedgerReader, RecipientList, RecipientState, RunReport, RunSummary, Tally, html, report_time,
};
use hikyaku_core::run::{RunRecord, RunStatus};
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Report, count, duration, table, to_json};

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

fn seconds(s: f64) -> String {
    duration(Duration::from_secs_f64(s.max(0.0)))
}

/// The campaign's definition, or an error that says how to make one.
async fn campaign(
    campaigns: &dyn CampaignStore,
    id: &CampaignId,
) -> Result<CampaignDefinition, CliError> {
    campaigns.get(id).await?.ok_or_else(|| {
        CliError::new(format!("campaign '{id}' does not exist"))
            .hint("check the id, or create it: hikyaku campaign create FILE")
    })
}

/// The run asked for, or the campaign's latest; errors name what is missing and what exists.
async fn find_run(
    runs: &dyn RunStore,
    id: &CampaignId,
    run: Option<&RunId>,
) -> Result<RunRecord, CliError> {
    let all = runs.list(id).await?;
    if all.is_empty() {
        return Err(CliError::new(format!("campaign '{id}' has not run yet"))
            .hint(format!("start a run: hikyaku campaign start {id}")));
    }
    let Some(run_id) = run else {
        return Ok(all.into_iter().next().expect("not empty"));
    };
    let latest: Vec<String> = all
        .iter()
        .take(5)
        .map(|r| r.run.run_id.to_string())
        .collect();
    all.into_iter()
        .find(|r| &r.run.run_id == run_id)
        .ok_or_else(|| {
            CliError::new(format!("campaign '{id}' has no run {run_id}")).hint(format!(
                "its latest runs: {}; all of them: hikyaku campaign runs {id}",
                latest.join(", ")
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// runs
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct RunsReport {
    pub campaign: CampaignId,
    /// Runs the campaign has.
    pub total: usize,
    /// The newest `limit` of them, newest first.
    pub runs: Vec<RunSummary>,
}

/// The campaign's newest `limit` runs with their ledger counts (one read of each run's ledger).
pub async fn runs(
    campaigns: &dyn CampaignStore,
    runs: &dyn RunStore,
    ledger: &dyn Ledger,
    id: &CampaignId,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<RunsReport, CliError> {
    campaign(campaigns, id).await?;
    let all = runs.list(id).await?;
    let total = all.len();
    let mut summaries = Vec::new();
    for record in all.into_iter().take(limit) {
        let counts = ledger.counts(&record.run).await?;
        summaries.push(RunSummary::new(&RunStatus { record, counts }, now));
    }
    Ok(RunsReport {
        campaign: id.clone(),
        total,
        runs: summaries,
    })
}

impl Report for RunsReport {
    fn text(&self) -> String {
        if self.runs.is_empty() {
            return format!(
                "campaign '{}' has not run yet; start a run: hikyaku campaign start {}",
                self.campaign, self.campaign
            );
        }
        let shown = if self.runs.len() < self.total {
            format!(
                "{} runs, the newest {} shown (--limit N shows more)",
                count(self.total as u64),
                self.runs.len()
            )
        } else if self.total == 1 {
            "1 run".to_owned()
        } else {
            format!("{} runs, newest first", count(self.total as u64))
        };
        let mut out = format!("Campaign '{}': {shown}\n", self.campaign);
        let header = [
            "run",
            "phase",
            "started",
            "ended",
            "elapsed",
            "audience",
            "sent",
            "failed",
            "suppressed",
            "uncertain",
            "cancelled",
            "outstanding",
            "delivered",
            "bounced",
            "complained",
            "send rate",
        ];
        let rows = self
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.run_id.to_string(),
                    r.phase.clone(),
                    report_time(r.timing.started_at),
                    r.timing
                        .ended_at
                        .map_or_else(|| "-".to_owned(), report_time),
                    seconds(r.timing.elapsed_seconds),
                    count(r.audience),
                    count(r.sent),
                    count(r.failed),
                    count(r.suppressed),
                    count(r.uncertain),
                    count(r.cancelled),
                    count(r.outstanding),
                    count(r.delivered),
                    count(r.hard_bounced + r.soft_bounced),
                    count(r.complained),
                    r.send_rate
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}/s")),
                ]
            })
            .collect();
        out.push_str(&table(
            header.iter().map(|h| (*h).to_owned()).collect(),
            rows,
        ));
        for r in &self.runs {
            if let Some(reason) = &r.pause_reason {
                out.push_str(&format!("\n{} is {}: {reason}", r.run_id, r.phase));
            }
        }
        out.push_str(&format!(
            "\nthe report of one: hikyaku campaign report {} --run RUN_ID",
            self.campaign
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

// ---------------------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------------------

/// The report's renderings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Table,
    Json,
    Csv,
    Html,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
        }
    }

    /// The format a file name implies: `.html`/`.htm`, `.csv`, `.json`; anything else is a table.
    fn of_file(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("html" | "htm") => Format::Html,
            Some("csv") => Format::Csv,
            Some("json") => Format::Json,
            _ => Format::Table,
        }
    }
}

/// How the report is asked for.
#[derive(Clone, Debug)]
pub struct ReportRequest<'a> {
    pub run: Option<&'a RunId>,
    /// `--format`, if given.
    pub format: Option<Format>,
    pub out: Option<&'a Path>,
    /// `--json`: the result on stdout is JSON.
    pub json: bool,
}

impl ReportRequest<'_> {
    /// The format rendered: `--format`; else the one `--out`'s name implies; else JSON with
    /// `--json`, or the table. `--json` asks for JSON on stdout, so with another format the
    /// rendering must go to a file.
    fn format(&self) -> Result<Format, CliError> {
        let format = match (self.format, self.out, self.json) {
            (Some(format), _, _) => format,
            (None, Some(out), _) => Format::of_file(out),
            (None, None, true) => Format::Json,
            (None, None, false) => Format::Table,
        };
        if self.json && self.out.is_none() && format != Format::Json {
            return Err(CliError::new(format!(
                "--json prints the report as JSON, so it cannot print it as {} too",
                format.as_str()
            ))
            .hint(format!(
                "drop --json, or add --out FILE to write the {} to a file (stdout then has JSON)",
                format.as_str()
            )));
        }
        Ok(format)
    }
}

/// A file the report was written to.
#[derive(Debug, Serialize)]
pub struct Written {
    pub out: PathBuf,
    pub format: Format,
    pub bytes: usize,
}

#[derive(Debug)]
pub struct ReportOutput {
    pub report: RunReport,
    /// The report in the format asked for.
    pub rendered: String,
    pub written: Option<Written>,
}

/// Reads the run's whole ledger and makes its report, rendered and, with `--out`, written.
pub async fn report(
    campaigns: &dyn CampaignStore,
    runs: &dyn RunStore,
    reader: &dyn LedgerReader,
    id: &CampaignId,
    request: &ReportRequest<'_>,
    now: DateTime<Utc>,
) -> Result<ReportOutput, CliError> {
    let format = request.format()?;
    let definition = campaign(campaigns, id).await?;
    let record = find_run(runs, id, request.run).await?;
    let mut tally = Tally::default();
    reader
        .each_record(&record.run, &mut |r| tally.add(&r))
        .await?;
    let report = RunReport::new(record, &tally, definition.limits.guardrails(), now);
    let rendered = match format {
        Format::Table => table_text(&report),
        Format::Json => serde_json::to_string_pretty(&report)
            .map_err(|err| CliError::new(format!("cannot serialise the report: {err}")))?,
        Format::Csv => report.to_csv(),
        Format::Html => html::render(&report, now),
    };
    let written = match request.out {
        None => None,
        Some(path) => {
            let mut body = rendered.clone();
            if !body.ends_with('\n') {
                body.push('\n');
            }
            std::fs::write(path, &body).map_err(|err| {
                CliError::new(format!("cannot write '{}': {err}", path.display()))
                    .hint("check that the directory exists and is writable")
            })?;
            Some(Written {
                out: path.to_owned(),
                format,
                bytes: body.len(),
            })
        }
    };
    Ok(ReportOutput {
        report,
        rendered,
        written,
    })
}

/// The report for a terminal: a few lines on the run, then tables.
fn table_text(report: &RunReport) -> String {
    let t = &report.timing;
    let d = &report.deliveries;
    let o = &report.outcomes;
    let r = &report.rates;
    let s = &report.send_rate;
    let audience = report.audience.selected;
    let share = |n: u64, of: u64| percent((of > 0).then(|| n as f64 / of as f64));
    let mut out = format!(
        "Campaign '{}', run {} (list {}): {}\n",
        report.campaign, report.run_id, report.list, report.phase
    );
    if let Some(reason) = &report.pause_reason {
        out.push_str(&format!("  reason: {reason}\n"));
    }
    if let Some(canary) = &report.canary {
        out.push_str(&format!("  canary: {canary}\n"));
    }
    out.push_str(&format!(
        "  started {}, {}, elapsed {}\n",
        report_time(t.started_at),
        t.ended_at.map_or_else(
            || "not ended".to_owned(),
            |at| format!("ended {}", report_time(at))
        ),
        seconds(t.elapsed_seconds)
    ));
    out.push_str(&format!(
        "  send rate {} on average, peak {} (buckets of {} s)\n",
        s.average_per_second
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} emails/s")),
        s.peak_per_second
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} emails/s")),
        s.bucket_seconds
    ));
    let recipients = [
        ("audience (selected)", audience),
        ("sent", d.sent),
        ("failed", d.failed),
        ("suppressed", d.suppressed),
        ("unsubscribed", d.unsubscribed),
        ("uncertain", d.uncertain),
        ("cancelled", d.cancelled),
        ("in flight", d.in_flight),
        ("outstanding", d.outstanding),
    ];
    out.push_str(&table(
        vec!["recipients".into(), "count".into(), "of audience".into()],
        recipients
            .iter()
            .map(|(label, n)| vec![(*label).to_owned(), count(*n), share(*n, audience)])
            .collect(),
    ));
    out.push('\n');
    let outcomes = [
        ("delivered", o.delivered),
        ("opened", o.opened),
        ("clicked", o.clicked),
        ("bounced", o.bounced),
        ("  hard", o.hard_bounced),
        ("  soft", o.soft_bounced),
        ("  undetermined", o.undetermined_bounced),
        ("auto-replies", o.auto_replied),
        ("complained", o.complained),
        ("rejected by SES", o.rejected),
        ("rendering failures", o.rendering_failed),
        ("delayed", o.delayed),
    ];
    let mut rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|(label, n)| vec![(*label).to_owned(), count(*n), share(*n, d.sent)])
        .collect();
    rows.push(vec!["opens (events)".into(), count(o.opens), String::new()]);
    rows.push(vec![
        "clicks (events)".into(),
        count(o.clicks),
        String::new(),
    ]);
    out.push_str(&table(
        vec!["SES reported".into(), "recipients".into(), "of sent".into()],
        rows,
    ));
    out.push('\n');
    let verdict = |over: bool| match (r.judged, over) {
        (false, _) => format!(
            "not judged yet ({} of {} resolved sends)",
            count(r.resolved_sends),
            count(r.min_sends)
        ),
        (true, false) => "within limit".to_owned(),
        (true, true) => "OVER LIMIT".to_owned(),
    };
    out.push_str(&table(
        vec![
            "rate".into(),
            "value".into(),
            "limit".into(),
            "guardrail".into(),
        ],
        vec![
            vec![
                "bounce (hard bounces)".into(),
                percent(r.bounce_rate),
                percent(Some(r.max_bounce_rate)),
                verdict(r.bounce_over_limit),
            ],
            vec![
                "complaint".into(),
                percent(r.complaint_rate),
                percent(Some(r.max_complaint_rate)),
                verdict(r.complaint_over_limit),
            ],
            vec![
                "delivery (of sent)".into(),
                percent(r.delivery_rate),
                String::new(),
                String::new(),
            ],
            vec![
                "open (of delivered)".into(),
                percent(r.open_rate),
                String::new(),
                String::new(),
            ],
            vec![
                "click (of delivered)".into(),
                percent(r.click_rate),
                String::new(),
                String::new(),
            ],
        ],
    ));
    if !s.buckets.is_empty() {
        out.push_str(&format!("\nsends per {} s (UTC)\n", s.bucket_seconds));
        let peak = s.buckets.iter().map(|b| b.sent).max().unwrap_or(0).max(1);
        let lines: Vec<String> = s
            .buckets
            .iter()
            .map(|b| {
                let bar = "█".repeat(((b.sent * 40).div_ceil(peak)) as usize);
                format!("  {}  {:>8}  {bar}", report_time(b.start), count(b.sent))
            })
            .collect();
        out.push_str(&lines.join("\n"));
    }
    out
}

impl Report for ReportOutput {
    fn text(&self) -> String {
        match &self.written {
            Some(w) => format!(
                "Report of run {} of campaign '{}' written to {} ({}, {} bytes)",
                self.report.run_id,
                self.report.campaign,
                w.out.display(),
                w.format.as_str(),
                count(w.bytes as u64)
            ),
            None => self.rendered.trim_end_matches('\n').to_owned(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match &self.written {
            Some(written) => serde_json::json!({
                "out": written.out,
                "format": written.format,
                "bytes": written.bytes,
                "report": to_json(&self.report),
            }),
            None => to_json(&self.report),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// recipients
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct RecipientsReport {
    pub campaign: CampaignId,
    pub run_id: RunId,
    pub state: RecipientState,
    pub count: usize,
    /// Ledger records looked at.
    pub records: u64,
    pub recipients: Vec<hikyaku_core::report::RecipientLine>,
    #[serde(skip)]
    pub csv: Option<String>,
}

/// The run's recipients in `state`, oldest first. Addresses are shown in full: the operator
/// asked for them; they are never logged.
pub async fn recipients(
    campaigns: &dyn CampaignStore,
    runs: &dyn RunStore,
    reader: &dyn LedgerReader,
    id: &CampaignId,
    run: &RunId,
    state: RecipientState,
    csv: bool,
) -> Result<RecipientsReport, CliError> {
    campaign(campaigns, id).await?;
    let record = find_run(runs, id, Some(run)).await?;
    let mut list = RecipientList::new(state);
    reader
        .each_record(&record.run, &mut |r| list.add(&r))
        .await?;
    let list = list.finish();
    Ok(RecipientsReport {
        campaign: id.clone(),
        run_id: run.clone(),
        state,
        count: list.lines.len(),
        records: list.records,
        csv: csv.then(|| list.to_csv()),
        recipients: list.lines,
    })
}

impl Report for RecipientsReport {
    fn text(&self) -> String {
        if let Some(csv) = &self.csv {
            return csv.trim_end_matches('\n').to_owned();
        }
        if self.recipients.is_empty() {
            return format!(
                "No recipient of run {} of campaign '{}' is {} ({} ledger records)",
                self.run_id,
                self.campaign,
                self.state,
                count(self.records)
            );
        }
        let mut out = format!(
            "{} {} of run {} of campaign '{}' ({} ledger records)\n",
            count(self.count as u64),
            if self.count == 1 {
                "recipient"
            } else {
                "recipients"
            },
            self.run_id,
            self.campaign,
            count(self.records)
        );
        out.push_str(&format!("state: {}\n", self.state));
        out.push_str(&table(
            vec!["email".into(), "state".into(), "at".into(), "reason".into()],
            self.recipients
                .iter()
                .map(|line| {
                    vec![
                        line.email.to_string(),
                        line.state.clone(),
                        report_time(line.at),
                        line.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use clap::Parser;
    use hikyaku_core::email::EmailAddress;
    use hikyaku_core::fakes::{FakeCampaigns, FakeLedger, FakeRuns};
    use hikyaku_core::feedback::{Mark, Marks, list_unsubscribe_reason};
    use hikyaku_core::ids::{ListId, RunRef};
    use hikyaku_core::ledger::{DeliveryRecord, DeliveryState};
    use hikyaku_core::run::RunState;

    use super::*;
    use crate::cli::{CampaignCommand, Cli, Command, StateArg};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 9, 30, 15).unwrap() + chrono::Duration::seconds(secs)
    }

    fn winter() -> CampaignId {
        CampaignId::parse("winter").unwrap()
    }

    fn run_id(secs: i64) -> RunId {
        RunId::from_scheduled_time(at(secs))
    }

    struct World {
        campaigns: FakeCampaigns,
        runs: FakeRuns,
        ledger: FakeLedger,
    }

    impl World {
        async fn new() -> World {
            let w = World {
                campaigns: FakeCampaigns::default(),
                runs: FakeRuns::default(),
                ledger: FakeLedger::default(),
            };
            let definition = CampaignDefinition::from_toml_str(
                "id = \"winter\"\nlist = \"news\"\nsubject = \"Hi\"\nhtml = \"<p>Hi</p>\"\n\
                 [from]\naddress = \"news@example.com\"\n\
                 [limits]\nmax_bounce_rate = 0.2\nmax_complaint_rate = 0.01\nmin_sends = 2\n",
                None,
            )
            .unwrap();
            w.campaigns.create(&definition).await.unwrap();
            w
        }

        /// A finished run started at `start` whose ledger holds `records`.
        async fn run(&self, start: i64, records: Vec<DeliveryRecord>) -> RunRef {
            let run = RunRef::new(winter(), run_id(start));
            let mut record = RunRecord::new(run.clone(), ListId::parse("news").unwrap(), at(start));
            record.state = RunState::Sending;
            record.fanout_complete = true;
            record.fanout_completed_at = Some(at(start + 1));
            record.progress.contacts_read = records.len() as u64 + 2;
            record.progress.selected = records.len() as u64;
            record.progress.filtered = 2;
            self.runs.start(&record).await.unwrap();
            for r in records {
                self.ledger.insert(&run, r);
            }
            run
        }
    }

    fn rec(local: &str, state: DeliveryState, secs: i64, marks: &[(Mark, i64)]) -> DeliveryRecord {
        let mut m = Marks::default();
        for (mark, s) in marks {
            m.record(*mark, at(*s));
        }
        DeliveryRecord {
            email: EmailAddress::parse(&format!("{local}@example.com")).unwrap(),
            state,
            claim_token: Some("t".into()),
            claimed_at: Some(at(secs)),
            ses_message_id: Some(format!("m-{local}")),
            reason: None,
            updated_at: at(secs),
            marks: m,
            feedback_detail: None,
        }
    }

    /// Five recipients: three sent (one bounced hard), one failed, one unsubscribed.
    fn five(start: i64) -> Vec<DeliveryRecord> {
        let mut bounce = rec(
            "b",
            DeliveryState::Sent,
            start + 3,
            &[(Mark::HardBounced, start + 9)],
        );
        bounce.feedback_detail = Some("Permanent/General: 550 user unknown".into());
        let mut failed = rec("f", DeliveryState::Failed, start + 4, &[]);
        failed.reason = Some("MessageRejected: bad content".into());
        let mut unsubscribed = rec("u", DeliveryState::Suppressed, start + 2, &[]);
        unsubscribed.reason = Some(list_unsubscribe_reason("newsletter"));
        vec![
            rec(
                "a",
                DeliveryState::Sent,
                start + 2,
                &[(Mark::Delivered, start + 5)],
            ),
            rec(
                "c",
                DeliveryState::Sent,
                start + 3,
                &[(Mark::Delivered, start + 6), (Mark::Complained, start + 30)],
            ),
            bounce,
            failed,
            unsubscribed,
        ]
    }

    fn request(format: Option<Format>, out: Option<&Path>, json: bool) -> ReportRequest<'_> {
        ReportRequest {
            run: None,
            format,
            out,
            json,
        }
    }

    #[tokio::test]
    async fn runs_lists_every_run_newest_first_with_counts_and_timings() {
        let w = World::new().await;
        w.run(0, five(0)).await;
        w.run(3600, five(3600)).await;
        let report = runs(&w.campaigns, &w.runs, &w.ledger, &winter(), 20, at(7200))
            .await
            .unwrap();
        assert_eq!(report.total, 2);
        assert_eq!(report.runs[0].run_id, run_id(3600));
        assert_eq!(report.runs[1].run_id, run_id(0));
        let newest = &report.runs[0];
        assert_eq!(newest.phase, "completed");
        assert_eq!((newest.sent, newest.failed, newest.suppressed), (3, 1, 1));
        assert_eq!(newest.timing.ended_at, Some(at(3603)));
        assert_eq!(newest.timing.elapsed_seconds, 3.0);
        let text = report.text();
        assert!(
            text.contains("Campaign 'winter': 2 runs, newest first"),
            "{text}"
        );
        assert!(text.contains("20260102T103015Z"), "{text}");
        assert!(text.contains("2026-01-02T10:30:18Z"), "{text}");
        assert_eq!(report.json()["runs"][0]["sent"], 3);

        let limited = runs(&w.campaigns, &w.runs, &w.ledger, &winter(), 1, at(7200))
            .await
            .unwrap();
        assert_eq!((limited.total, limited.runs.len()), (2, 1));
        assert!(
            limited
                .text()
                .contains("the newest 1 shown (--limit N shows more)")
        );
    }

    #[tokio::test]
    async fn runs_of_a_campaign_that_never_ran_say_how_to_start_one() {
        let w = World::new().await;
        let report = runs(&w.campaigns, &w.runs, &w.ledger, &winter(), 20, at(0))
            .await
            .unwrap();
        assert!(report.runs.is_empty());
        assert_eq!(report.json()["runs"], serde_json::json!([]));
        assert!(report.text().contains("hikyaku campaign start winter"));
        let err = runs(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &CampaignId::parse("spring").unwrap(),
            20,
            at(0),
        )
        .await
        .unwrap_err();
        assert_eq!(err.message, "campaign 'spring' does not exist");
        assert!(err.hint.unwrap().contains("hikyaku campaign create"));
    }

    #[tokio::test]
    async fn the_report_counts_what_the_ledger_holds_against_the_campaigns_limits() {
        let w = World::new().await;
        w.run(0, five(0)).await;
        let out = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &request(Some(Format::Json), None, false),
            at(100),
        )
        .await
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&out.rendered).unwrap();
        assert_eq!(json, out.json());
        assert_eq!(json["deliveries"]["sent"], 3);
        assert_eq!(json["deliveries"]["failed"], 1);
        assert_eq!(json["deliveries"]["unsubscribed"], 1);
        assert_eq!(json["deliveries"]["suppressed"], 0);
        assert_eq!(json["outcomes"]["delivered"], 2);
        assert_eq!(json["outcomes"]["hard_bounced"], 1);
        assert_eq!(json["outcomes"]["complained"], 1);
        assert_eq!(json["audience"]["selected"], 5);
        // Limits from the campaign file: 1 of 3 resolved sends bounced, over 20%.
        assert_eq!(json["rates"]["max_bounce_rate"], 0.2);
        assert_eq!(json["rates"]["bounce_over_limit"], true);
        assert_eq!(json["phase"], "completed");
        assert_eq!(json["send_rate"]["bucket_seconds"], 1);
        assert_eq!(json["send_rate"]["buckets"].as_array().unwrap().len(), 2);

        let table = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &request(None, None, false),
            at(100),
        )
        .await
        .unwrap();
        let text = table.text();
        for expected in [
            "Campaign 'winter', run 20260102T093015Z (list news): completed",
            "ended 2026-01-02T09:30:18Z, elapsed 3.0 s",
            "unsubscribed",
            "OVER LIMIT",
            "sends per 1 s (UTC)",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }

    #[tokio::test]
    async fn the_report_goes_to_a_file_in_the_format_asked_or_its_name_implies() {
        let w = World::new().await;
        w.run(0, five(0)).await;
        let dir = tempfile::tempdir().unwrap();
        let html_file = dir.path().join("report.html");
        let out = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &request(None, Some(&html_file), true),
            at(100),
        )
        .await
        .unwrap();
        assert_eq!(out.written.as_ref().unwrap().format, Format::Html);
        let page = std::fs::read_to_string(&html_file).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("id=\"send-rate-chart\""));
        let json = out.json();
        assert_eq!(json["format"], "html");
        assert_eq!(json["bytes"], page.len());
        assert_eq!(json["report"]["deliveries"]["sent"], 3);
        assert!(out.text().contains("written to"), "{}", out.text());

        let csv_file = dir.path().join("figures.txt");
        report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &request(Some(Format::Csv), Some(&csv_file), false),
            at(100),
        )
        .await
        .unwrap();
        let csv = std::fs::read_to_string(&csv_file).unwrap();
        assert!(csv.starts_with("section,name,value\n"), "{csv}");
        assert!(csv.contains("deliveries,sent,3\n"), "{csv}");

        let err = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &request(None, Some(&dir.path().join("missing/dir/r.html")), false),
            at(100),
        )
        .await
        .unwrap_err();
        assert!(err.message.starts_with("cannot write '"), "{}", err.message);
    }

    #[tokio::test]
    async fn json_on_stdout_and_another_format_on_stdout_are_refused_together() {
        let w = World::new().await;
        w.run(0, five(0)).await;
        let err = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &request(Some(Format::Csv), None, true),
            at(100),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.message,
            "--json prints the report as JSON, so it cannot print it as csv too"
        );
        assert!(err.hint.unwrap().contains("--out FILE"));
        // --json alone is the JSON format.
        let out = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &request(None, None, true),
            at(100),
        )
        .await
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&out.rendered).unwrap();
        assert_eq!(json["run_id"], "20260102T093015Z");
    }

    #[tokio::test]
    async fn the_report_names_a_missing_campaign_run_or_first_run() {
        let w = World::new().await;
        fn ask(run: Option<&RunId>) -> ReportRequest<'_> {
            ReportRequest {
                run,
                format: None,
                out: None,
                json: false,
            }
        }
        let err = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &ask(None),
            at(0),
        )
        .await
        .unwrap_err();
        assert_eq!(err.message, "campaign 'winter' has not run yet");
        assert_eq!(
            err.hint.as_deref(),
            Some("start a run: hikyaku campaign start winter")
        );
        w.run(0, five(0)).await;
        let other = RunId::parse("20250101T000000Z").unwrap();
        let err = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &ask(Some(&other)),
            at(0),
        )
        .await
        .unwrap_err();
        assert_eq!(err.message, "campaign 'winter' has no run 20250101T000000Z");
        assert_eq!(
            err.hint.as_deref(),
            Some("its latest runs: 20260102T093015Z; all of them: hikyaku campaign runs winter")
        );
        let err = report(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &CampaignId::parse("spring").unwrap(),
            &ask(None),
            at(0),
        )
        .await
        .unwrap_err();
        assert_eq!(err.message, "campaign 'spring' does not exist");
    }

    #[tokio::test]
    async fn recipients_lists_who_is_in_a_state_with_time_and_reason() {
        let w = World::new().await;
        let run = w.run(0, five(0)).await;
        let bounced = recipients(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &run.run_id,
            RecipientState::Bounced,
            false,
        )
        .await
        .unwrap();
        assert_eq!(bounced.count, 1);
        assert_eq!(bounced.records, 5);
        let text = bounced.text();
        assert!(text.contains("b@example.com"), "{text}");
        assert!(text.contains("hard_bounced"), "{text}");
        assert!(text.contains("2026-01-02T09:30:24Z"), "{text}");
        assert!(text.contains("550 user unknown"), "{text}");
        assert_eq!(bounced.json()["recipients"][0]["email"], "b@example.com");

        let failed = recipients(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &run.run_id,
            RecipientState::Failed,
            true,
        )
        .await
        .unwrap();
        assert_eq!(
            failed.text(),
            "email,state,at,reason,ses_message_id\n\
             f@example.com,failed,2026-01-02T09:30:19Z,MessageRejected: bad content,m-f"
        );
        let uncertain = recipients(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &run.run_id,
            RecipientState::Uncertain,
            false,
        )
        .await
        .unwrap();
        assert_eq!(uncertain.count, 0);
        assert!(
            uncertain
                .text()
                .starts_with("No recipient of run 20260102T093015Z")
        );

        let err = recipients(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            &RunId::parse("20250101T000000Z").unwrap(),
            RecipientState::Sent,
            false,
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("has no run 20250101T000000Z"));
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hikyaku").chain(args.iter().copied()))
    }

    #[test]
    fn the_commands_parse_their_flags_and_refuse_bad_values() {
        match parse(&["campaign", "runs", "winter", "--limit", "5", "--json"])
            .unwrap()
            .command
        {
            Command::Campaign(CampaignCommand::Runs { id, limit }) => {
                assert_eq!((id.as_str(), limit), ("winter", 5));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["campaign", "runs", "winter", "--limit", "0"]).is_err());
        match parse(&[
            "campaign",
            "report",
            "winter",
            "--run",
            "20260102T093015Z",
            "--format",
            "html",
            "--out",
            "r.html",
        ])
        .unwrap()
        .command
        {
            Command::Campaign(CampaignCommand::Report {
                run, format, out, ..
            }) => {
                assert_eq!(run.unwrap().as_str(), "20260102T093015Z");
                assert_eq!(format.map(Format::from), Some(Format::Html));
                assert_eq!(out, Some(PathBuf::from("r.html")));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["campaign", "report", "winter", "--format", "pdf"]).unwrap_err();
        assert!(err.to_string().contains("table, json, csv, html"), "{err}");
        match parse(&[
            "campaign",
            "recipients",
            "winter",
            "--run",
            "20260102T093015Z",
            "--state",
            "bounced",
            "--csv",
        ])
        .unwrap()
        .command
        {
            Command::Campaign(CampaignCommand::Recipients { state, csv, .. }) => {
                assert_eq!(RecipientState::from(state), RecipientState::Bounced);
                assert!(csv);
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&[
            "campaign",
            "recipients",
            "winter",
            "--run",
            "20260102T093015Z",
            "--state",
            "bounce",
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("invalid value 'bounce'"), "{text}");
        assert!(text.contains("bounced"), "{text}");
        // The run is required: recipients are always of one run.
        assert!(parse(&["campaign", "recipients", "winter", "--state", "sent"]).is_err());
        assert!(
            parse(&[
                "campaign",
                "recipients",
                "winter",
                "--run",
                "yesterday",
                "--state",
                "sent"
            ])
            .is_err()
        );
    }

    #[test]
    fn every_recipient_state_has_its_flag_value() {
        use clap::ValueEnum;
        for state in StateArg::value_variants() {
            let name = state.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(RecipientState::from(*state).as_str(), name);
        }
        assert_eq!(StateArg::value_variants().len(), RecipientState::ALL.len());
    }
}
