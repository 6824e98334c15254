//! `hikyaku campaign create | preview | start | status`.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use hikyaku_core::campaign::{Campaign, CampaignDefinition, CampaignErrors};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::fanout::FanoutOutcome;
use hikyaku_core::feedback::{FeedbackCounts, Guardrails};
use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
use hikyaku_core::ports::{CampaignStore, ContactStore, Ledger, RunStore, SuppressionList};
use hikyaku_core::run::{RunRecord, RunState, RunStatus};
use serde::Serialize;

use crate::error::CliError;
use crate::invoke::FunctionInvoke;
use crate::output::{Report, aligned, count, duration, to_json};
use crate::progress::Progress;

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Every problem of a campaign file, one `field: problem` a line.
fn invalid_campaign(what: &str, errors: &CampaignErrors) -> CliError {
    let n = errors.0.len();
    let lines: Vec<String> = errors
        .0
        .iter()
        .map(|e| format!("  {}: {}", e.field, e.problem))
        .collect();
    CliError::new(format!(
        "{what} has {} {}:\n{}",
        n,
        if n == 1 { "problem" } else { "problems" },
        lines.join("\n")
    ))
}

/// The stored campaign, validated again.
async fn load_campaign(
    campaigns: &dyn CampaignStore,
    id: &CampaignId,
) -> Result<Campaign, CliError> {
    let definition = campaigns.get(id).await?.ok_or_else(|| {
        CliError::new(format!("campaign '{id}' does not exist"))
            .hint("create it first: hikyaku campaign create FILE")
    })?;
    Campaign::from_definition(definition, None).map_err(|errors| {
        invalid_campaign(&format!("stored campaign '{id}'"), &errors)
            .hint("create a corrected campaign under a new id")
    })
}

// ---------------------------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct CreateReport {
    pub id: CampaignId,
    pub list: ListId,
    pub segment: Option<String>,
    pub from: String,
    pub subject: String,
    /// Variables the template reads.
    pub variables: Vec<String>,
    /// Whether the text part is derived from the HTML part.
    pub text_derived: bool,
}

pub async fn create(
    campaigns: &dyn CampaignStore,
    contacts: &dyn ContactStore,
    path: &Path,
) -> Result<CreateReport, CliError> {
    let what = format!("'{}'", path.display());
    let definition = CampaignDefinition::from_toml_file(path).map_err(|errors| {
        invalid_campaign(&what, &errors).hint("fix the file and run the command again")
    })?;
    // A list id that does not parse is reported with every other problem below.
    let schema = match ListId::parse(&definition.list) {
        Err(_) => None,
        Ok(list) => Some(contacts.schema(&list).await?.ok_or_else(|| {
            CliError::new(format!(
                "list {list} has no contacts; import contacts first"
            ))
            .hint(format!("hikyaku contacts import FILE --list {list}"))
        })?),
    };
    let campaign = Campaign::from_definition(definition, schema.as_ref()).map_err(|errors| {
        invalid_campaign(&what, &errors).hint("fix the file and run the command again")
    })?;
    if !campaigns.create(&campaign.definition).await? {
        return Err(
            CliError::new(format!("campaign '{}' exists already", campaign.id)).hint(format!(
                "a stored campaign is never replaced; give the one in {what} a new id"
            )),
        );
    }
    Ok(CreateReport {
        id: campaign.id.clone(),
        list: campaign.list.clone(),
        segment: campaign.segment.as_ref().map(|s| s.source().to_owned()),
        from: campaign.from.header_value(),
        subject: campaign.template.subject_source().to_owned(),
        variables: campaign.template.variables().into_iter().collect(),
        text_derived: campaign.template.text_is_derived(),
    })
}

impl Report for CreateReport {
    fn text(&self) -> String {
        let mut out = format!("Created campaign '{}'\n", self.id);
        let text_part = if self.text_derived {
            "derived from the html part"
        } else {
            "given"
        };
        out.push_str(&aligned_left(
            &[
                ("list", self.list.to_string()),
                (
                    "segment",
                    self.segment
                        .clone()
                        .unwrap_or_else(|| "(none: the whole list)".into()),
                ),
                ("from", self.from.clone()),
                ("subject", self.subject.clone()),
                ("variables", self.variables.join(", ")),
                ("text part", text_part.to_owned()),
            ],
            2,
        ));
        out.push_str(&format!(
            "\nnext: hikyaku campaign preview {} --contact EMAIL, then hikyaku campaign start {}",
            self.id, self.id
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

/// Label/value lines with the values left-aligned (for text values).
fn aligned_left(rows: &[(&str, String)], indent: usize) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{:indent$}{label:<width$}  {value}", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// preview
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct PreviewReport {
    pub campaign: CampaignId,
    pub list: ListId,
    pub contact: EmailAddress,
    /// `selected`, `not selected`, or why the segment cannot judge the contact; `None`
    /// without a segment.
    pub segment: Option<String>,
    /// The suppression reason if the address is suppressed (a run would not send to it).
    pub suppressed: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Where the HTML part was written.
    pub html_file: Option<String>,
}

pub async fn preview(
    campaigns: &dyn CampaignStore,
    contacts: &dyn ContactStore,
    suppressions: &dyn SuppressionList,
    id: &CampaignId,
    email: &str,
    out: Option<&Path>,
) -> Result<PreviewReport, CliError> {
    let campaign = load_campaign(campaigns, id).await?;
    let email = EmailAddress::parse(email)
        .map_err(|err| CliError::new(format!("--contact '{email}': {err}")))?;
    let contact = contacts.get(&campaign.list, &email).await?.ok_or_else(|| {
        CliError::new(format!("list '{}' has no contact {email}", campaign.list)).hint(format!(
            "see who is there: hikyaku contacts list --list {}",
            campaign.list
        ))
    })?;
    let segment = campaign.segment.as_ref().map(|segment| {
        match segment.matches(&contact.email, &contact.attributes) {
            Ok(true) => "selected".to_owned(),
            Ok(false) => "not selected".to_owned(),
            Err(err) => format!("cannot judge: {err}"),
        }
    });
    let suppressed = suppressions
        .check(
            std::slice::from_ref(&email),
            campaign.ses.list_topic().as_ref(),
        )
        .await?
        .remove(&email);
    let rendered = campaign
        .template
        .render(&contact.email, &contact.attributes)
        .map_err(|err| {
            CliError::new(format!("campaign '{id}' cannot be rendered for {email}: {err}"))
                .hint("a run records this contact as failed; give the contact the attribute or use {{#if}} in the template")
        })?;
    let html_file = match out {
        None => None,
        Some(path) => {
            std::fs::write(path, &rendered.html).map_err(|err| {
                CliError::new(format!("cannot write '{}': {err}", path.display()))
            })?;
            Some(path.display().to_string())
        }
    };
    Ok(PreviewReport {
        campaign: campaign.id,
        list: campaign.list,
        contact: email,
        segment,
        suppressed,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        html_file,
    })
}

impl Report for PreviewReport {
    fn text(&self) -> String {
        let mut rows = vec![
            ("campaign", self.campaign.to_string()),
            ("contact", format!("{} (list {})", self.contact, self.list)),
        ];
        if let Some(segment) = &self.segment {
            rows.push(("segment", segment.clone()));
        }
        if let Some(reason) = &self.suppressed {
            rows.push((
                "suppressed",
                format!("yes ({reason}): a run does not send to it"),
            ));
        }
        let mut out = aligned_left(&rows, 0);
        out.push_str(&format!(
            "\n\nSubject: {}\n\n{}",
            self.subject,
            self.text.trim_end()
        ));
        match &self.html_file {
            Some(file) => out.push_str(&format!(
                "\n\nHTML part ({} bytes) written to {file}",
                count(self.html.len() as u64)
            )),
            None => out.push_str(&format!(
                "\n\nHTML part: {} bytes; --out FILE.html writes it",
                count(self.html.len() as u64)
            )),
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

// ---------------------------------------------------------------------------------------------
// start
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct StartReport {
    pub campaign: CampaignId,
    pub run_id: RunId,
    pub scheduled_time: String,
    pub function: String,
    /// The fan-out's answer as it gave it.
    pub fanout: serde_json::Value,
    /// With `--wait`: the run once it finished or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
}

/// Starts a run now: invokes the fan-out synchronously with the campaign and the current time
/// (whole seconds, so the run id and the scheduled time agree).
pub async fn start(
    campaigns: &dyn CampaignStore,
    invoker: &dyn FunctionInvoke,
    function: &str,
    id: &CampaignId,
    now: DateTime<Utc>,
    progress: &Progress,
) -> Result<StartReport, CliError> {
    // Checked here for a clear message; the fan-out checks again.
    load_campaign(campaigns, id).await?;
    let at = now.with_nanosecond(0).unwrap_or(now);
    let scheduled_time = time(at);
    let payload = serde_json::json!({
        "campaign_id": id.as_str(),
        "scheduled_time": scheduled_time,
    });
    let unreachable = |reason: String| {
        CliError::new(format!("could not start a run of '{id}': {reason}")).hint(
            "check that it is deployed (HIKYAKU_FANOUT_FUNCTION names it) and reachable; \
             locally `make local-up` runs it under cargo lambda watch \
             (AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:9000)",
        )
    };
    let spinner = progress.spinner("waiting for the fan-out's answer");
    let answer = invoker.invoke(function, &payload).await;
    spinner.finish_and_clear();
    let answer = answer.map_err(unreachable)?;
    if let Some(message) = answer.get("errorMessage") {
        let kind = answer
            .get("errorType")
            .and_then(|t| t.as_str())
            .unwrap_or("error");
        return Err(unreachable(format!(
            "{kind}: {}",
            message.as_str().unwrap_or_default()
        )));
    }
    Ok(StartReport {
        campaign: id.clone(),
        run_id: RunId::from_scheduled_time(at),
        scheduled_time,
        function: function.to_owned(),
        fanout: answer,
        status: None,
    })
}

fn describe_fanout(answer: &serde_json::Value) -> String {
    let progress = |p: &hikyaku_core::run::FanoutProgress| {
        format!(
            "{} contacts read, {} selected, {} filtered by the segment, {} messages enqueued",
            count(p.contacts_read),
            count(p.selected),
            count(p.filtered),
            count(p.messages)
        )
    };
    match serde_json::from_value::<FanoutOutcome>(answer.clone()) {
        Ok(FanoutOutcome::Completed { progress: p, .. }) => {
            format!("completed: {}", progress(&p))
        }
        Ok(FanoutOutcome::Continue { progress: p, .. }) => {
            format!("continuing in a new invocation; so far {}", progress(&p))
        }
        Ok(FanoutOutcome::AlreadyComplete { progress: p, .. }) => {
            format!("this run was fanned out already: {}", progress(&p))
        }
        Ok(FanoutOutcome::Busy { .. }) => {
            "another invocation is fanning this run out right now".to_owned()
        }
        Ok(FanoutOutcome::Stopped { state, .. }) => {
            format!("the run is {state}; nothing was enqueued")
        }
        Err(_) => answer.to_string(),
    }
}

impl Report for StartReport {
    fn text(&self) -> String {
        let mut out = format!(
            "Started campaign '{}': run {} (scheduled {})\nfan-out ({}): {}",
            self.campaign,
            self.run_id,
            self.scheduled_time,
            self.function,
            describe_fanout(&self.fanout)
        );
        match &self.status {
            Some(status) => {
                out.push_str("\n\n");
                out.push_str(&status.text());
            }
            None => out.push_str(&format!(
                "\nfollow it: hikyaku campaign status {}",
                self.campaign
            )),
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }

    fn failure(&self) -> Option<CliError> {
        self.status.as_ref().and_then(stopped)
    }
}

// ---------------------------------------------------------------------------------------------
// wait and status
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub struct WaitOptions {
    pub interval: Duration,
    pub timeout: Option<Duration>,
}

/// The run's record and ledger counts.
async fn run_status(
    runs: &dyn RunStore,
    ledger: &dyn Ledger,
    run: &RunRef,
) -> Result<RunStatus, CliError> {
    let record = runs.get(run).await?.ok_or_else(|| {
        CliError::new(format!("run {run} has no record"))
            .hint("the fan-out did not start it; see the fan-out's answer and its log")
    })?;
    let counts = ledger.counts(run).await?;
    Ok(RunStatus { record, counts })
}

/// Polls until every recipient is done, or the run is paused or cancelled.
pub async fn wait(
    runs: &dyn RunStore,
    ledger: &dyn Ledger,
    run: &RunRef,
    options: WaitOptions,
    progress: &Progress,
) -> Result<RunStatus, CliError> {
    let began = Instant::now();
    let bar = progress.items(0, "sending");
    loop {
        let status = run_status(runs, ledger, run)
            .await
            .inspect_err(|_| bar.finish_and_clear())?;
        bar.set_length(status.record.progress.selected);
        bar.set_position(status.counts.terminal());
        if status.is_finished() || !status.record.state.allows_sending() {
            bar.finish_and_clear();
            return Ok(status);
        }
        if let Some(timeout) = options.timeout
            && began.elapsed() >= timeout
        {
            bar.finish_and_clear();
            return Err(CliError::new(format!(
                "run {run} is still {} after {} ({} of {} recipients done)",
                status.phase(),
                duration(timeout),
                count(status.counts.terminal()),
                count(status.record.progress.selected)
            ))
            .hint(format!(
                "it goes on without the CLI; follow it with: hikyaku campaign status {}",
                run.campaign_id
            )));
        }
        tokio::time::sleep(options.interval).await;
    }
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub campaign: CampaignId,
    pub run_id: RunId,
    /// `fanning_out`, `sending`, `paused`, `cancelled` or `completed`.
    pub phase: String,
    pub finished: bool,
    /// Selected recipients not yet in a terminal state.
    pub outstanding: u64,
    /// Emails a second between the first and the last accepted send.
    pub send_rate: Option<f64>,
    /// From the start to the last send (finished runs) or to now.
    pub elapsed_seconds: f64,
    /// Where the run's canary slice stands; absent for a run without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Bounce and complaint rates from SES's feedback, against the campaign's guardrails.
    pub rates: Rates,
    /// The run record and the ledger's counts as stored.
    pub run: RunStatus,
}

/// A run's reputation figures: what SES reported so far, against the campaign's limits.
#[derive(Debug, Serialize)]
pub struct Rates {
    /// Sends whose fate SES has reported (the rates' denominator).
    pub resolved_sends: u64,
    pub bounce_rate: Option<f64>,
    pub complaint_rate: Option<f64>,
    pub max_bounce_rate: f64,
    pub max_complaint_rate: f64,
    /// The rates are judged from this many resolved sends on.
    pub min_sends: u64,
}

impl Rates {
    pub fn new(feedback: &FeedbackCounts, guardrails: Guardrails) -> Rates {
        Rates {
            resolved_sends: feedback.resolved_sends(),
            bounce_rate: feedback.bounce_rate(),
            complaint_rate: feedback.complaint_rate(),
            max_bounce_rate: guardrails.max_bounce_rate,
            max_complaint_rate: guardrails.max_complaint_rate,
            min_sends: guardrails.min_sends,
        }
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

pub fn status_report(
    status: RunStatus,
    guardrails: Guardrails,
    now: DateTime<Utc>,
) -> StatusReport {
    let finished = status.is_finished();
    let end = if finished {
        [
            status.counts.last_sent_at,
            status.record.fanout_completed_at,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now)
    } else {
        now
    };
    let elapsed = (end - status.record.started_at).num_milliseconds().max(0) as f64 / 1000.0;
    StatusReport {
        campaign: status.record.run.campaign_id.clone(),
        run_id: status.record.run.run_id.clone(),
        phase: status.phase().to_owned(),
        finished,
        outstanding: status.outstanding(),
        send_rate: status.counts.send_rate(),
        elapsed_seconds: elapsed,
        canary: hikyaku_core::canary::describe(&status.record, now),
        rates: Rates::new(&status.record.feedback, guardrails),
        run: status,
    }
}

/// The campaign's run `run`, or its latest; an error with the runs it has otherwise.
pub async fn find_run(
    runs: &dyn RunStore,
    id: &CampaignId,
    run: Option<&RunId>,
) -> Result<RunRecord, CliError> {
    let all = runs.list(id).await?;
    let record = match run {
        None => all.into_iter().next().ok_or_else(|| {
            CliError::new(format!("campaign '{id}' has not run yet"))
                .hint(format!("start it: hikyaku campaign start {id}"))
        })?,
        Some(run_id) => {
            let known: Vec<String> = all
                .iter()
                .take(5)
                .map(|r| r.run.run_id.to_string())
                .collect();
            all.into_iter()
                .find(|r| &r.run.run_id == run_id)
                .ok_or_else(|| {
                    let hint = if known.is_empty() {
                        format!("campaign '{id}' has not run yet")
                    } else {
                        format!("its latest runs: {}", known.join(", "))
                    };
                    CliError::new(format!("campaign '{id}' has no run {run_id}")).hint(hint)
                })?
        }
    };
    Ok(record)
}

/// The run asked for, or the campaign's latest.
pub async fn status(
    campaigns: &dyn CampaignStore,
    runs: &dyn RunStore,
    ledger: &dyn Ledger,
    id: &CampaignId,
    run: Option<&RunId>,
    now: DateTime<Utc>,
) -> Result<StatusReport, CliError> {
    let Some(definition) = campaigns.get(id).await? else {
        return Err(CliError::new(format!("campaign '{id}' does not exist"))
            .hint("create it first: hikyaku campaign create FILE"));
    };
    let record = find_run(runs, id, run).await?;
    let counts = ledger.counts(&record.run).await?;
    Ok(status_report(
        RunStatus { record, counts },
        definition.limits.guardrails(),
        now,
    ))
}

impl Report for StatusReport {
    fn text(&self) -> String {
        let record = &self.run.record;
        let p = &record.progress;
        let c = &self.run.counts;
        let mut head = vec![
            ("campaign", self.campaign.to_string()),
            ("run", self.run_id.to_string()),
            ("phase", self.phase.clone()),
        ];
        if let Some(reason) = &record.pause_reason {
            head.push(("pause reason", reason.clone()));
        }
        if let Some(at) = record.resume_at {
            head.push(("resumes around", time(at)));
        }
        if let Some(canary) = &self.canary {
            head.push(("canary", canary.clone()));
        }
        head.push((
            "started",
            format!(
                "{}, elapsed {}",
                time(record.started_at),
                duration(Duration::from_secs_f64(self.elapsed_seconds))
            ),
        ));
        head.push((
            "send rate",
            self.send_rate
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} emails/s")),
        ));
        let mut out = aligned_left(&head, 0);
        let fanout_state = if record.fanout_complete {
            "fan-out (complete)"
        } else {
            "fan-out (in progress)"
        };
        out.push_str(&format!("\n{fanout_state}\n"));
        out.push_str(&aligned(
            &[
                ("contacts read", count(p.contacts_read)),
                ("audience (selected)", count(p.selected)),
                ("filtered by segment", count(p.filtered)),
                ("recently mailed", count(p.recently_mailed)),
                ("segment errors", count(p.segment_errors)),
                ("unreadable", count(p.unreadable)),
                ("messages enqueued", count(p.messages)),
            ],
            2,
        ));
        out.push_str("\ndeliveries\n");
        out.push_str(&aligned(
            &[
                ("sent", count(c.sent)),
                ("failed", count(c.failed)),
                ("suppressed", count(c.suppressed)),
                ("uncertain", count(c.uncertain)),
                ("cancelled", count(c.cancelled)),
                ("in flight (claimed)", count(c.claimed)),
                ("outstanding", count(self.outstanding)),
            ],
            2,
        ));
        let f = &record.feedback;
        let r = &self.rates;
        out.push_str("\nSES feedback (recipients)\n");
        out.push_str(&aligned(
            &[
                ("delivered", count(f.delivered)),
                (
                    "opened",
                    format!("{} ({} opens)", count(f.opened), count(f.opens)),
                ),
                (
                    "clicked",
                    format!("{} ({} clicks)", count(f.clicked), count(f.clicks)),
                ),
                ("bounced hard", count(f.hard_bounced)),
                ("bounced soft", count(f.soft_bounced)),
                ("auto-replies", count(f.auto_replied)),
                ("bounce undetermined", count(f.undetermined_bounced)),
                ("complained", count(f.complained)),
                ("rejected by SES", count(f.rejected)),
                ("rendering failures", count(f.rendering_failed)),
                ("delayed", count(f.delayed)),
            ],
            2,
        ));
        let judged = if r.resolved_sends >= r.min_sends {
            "judged"
        } else {
            "judged from"
        };
        out.push_str(&format!(
            "\nrates ({} resolved sends; {judged} {} on)\n",
            count(r.resolved_sends),
            count(r.min_sends)
        ));
        out.push_str(&aligned(
            &[
                (
                    "bounce rate",
                    format!(
                        "{} (limit {})",
                        percent(r.bounce_rate),
                        percent(Some(r.max_bounce_rate))
                    ),
                ),
                (
                    "complaint rate",
                    format!(
                        "{} (limit {})",
                        percent(r.complaint_rate),
                        percent(Some(r.max_complaint_rate))
                    ),
                ),
            ],
            2,
        ));
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

/// A wait that ends with the run paused or cancelled fails the command: the run did not finish.
fn stopped(status: &StatusReport) -> Option<CliError> {
    let record = &status.run.record;
    match record.state {
        RunState::Paused => Some(
            CliError::new(format!(
                "run {} is paused: {}",
                status.run_id,
                record
                    .pause_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ))
            .hint(format!(
                "nothing more is sent until it is resumed: hikyaku campaign resume {} --run {}",
                status.campaign, status.run_id
            )),
        ),
        RunState::Cancelled => Some(CliError::new(format!(
            "run {} was cancelled",
            status.run_id
        ))),
        RunState::WaitingForQuota => Some(
            CliError::new(format!(
                "run {} is waiting for quota: {}",
                status.run_id,
                record
                    .pause_reason
                    .as_deref()
                    .unwrap_or("the daily SES quota is used up")
            ))
            .hint(match record.resume_at {
                Some(at) => format!(
                    "it carries on by itself when SES has room again, expected around {}",
                    time(at)
                ),
                None => "it carries on by itself when SES has room again".to_owned(),
            }),
        ),
        RunState::FanningOut | RunState::Sending => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::TimeZone;
    use hikyaku_core::contact::{AttrValue, Attributes, Contact, ListSchema};
    use hikyaku_core::fakes::{
        FakeCampaigns, FakeContacts, FakeLedger, FakeQueue, FakeRuns, FakeSuppressions,
    };
    use hikyaku_core::fanout::{FanoutPorts, FanoutRequest, FanoutSettings, fan_out};
    use hikyaku_core::ledger::Outcome;
    use hikyaku_core::ports::Suppression;

    use super::*;

    const CAMPAIGN: &str = r#"
id = "winter"
list = "newsletter"
segment = "mail_allowed == 1 && account_type == 2"
subject = "{{first_name}}, the winter issue"
html = "<p>Hello {{first_name}} from {{city}}</p><p><a href=\"{{amazonSESUnsubscribeUrl}}\">unsubscribe</a></p>"

[from]
address = "news@example.com"
name = "Example News"
"#;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 9, 30, 15).unwrap() + chrono::Duration::milliseconds(750)
    }

    fn list() -> ListId {
        ListId::parse("newsletter").unwrap()
    }

    fn winter() -> CampaignId {
        CampaignId::parse("winter").unwrap()
    }

    fn email(s: &str) -> EmailAddress {
        EmailAddress::parse(s).unwrap()
    }

    fn contact(address: &str, first_name: &str, mail_allowed: i64, account_type: i64) -> Contact {
        let attributes: Attributes = [
            ("first_name".to_owned(), AttrValue::from(first_name)),
            ("city".to_owned(), AttrValue::from("Kyoto & Nara")),
            ("mail_allowed".to_owned(), AttrValue::Int(mail_allowed)),
            ("account_type".to_owned(), AttrValue::Int(account_type)),
        ]
        .into();
        Contact {
            email: email(address),
            attributes,
        }
    }

    struct World {
        contacts: FakeContacts,
        campaigns: FakeCampaigns,
        runs: FakeRuns,
        ledger: FakeLedger,
        suppressions: FakeSuppressions,
        queue: FakeQueue,
        dir: tempfile::TempDir,
    }

    impl World {
        async fn new() -> World {
            let contacts = FakeContacts::default();
            let people = vec![
                contact("aiko@example.com", "Aiko", 1, 2),
                contact("ben@example.org", "Ben", 0, 2),
                contact("chloe@example.net", "Chloé", 1, 2),
            ];
            let mut schema = ListSchema::default();
            for c in &people {
                schema.observe(&c.attributes);
            }
            contacts.put_many(&list(), &people).await.unwrap();
            contacts.merge_schema(&list(), &schema).await.unwrap();
            World {
                contacts,
                campaigns: FakeCampaigns::default(),
                runs: FakeRuns::default(),
                ledger: FakeLedger::default(),
                suppressions: FakeSuppressions::default(),
                queue: FakeQueue::default(),
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn file(&self, name: &str, content: &str) -> std::path::PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        }

        async fn created(self) -> World {
            let path = self.file("campaign.toml", CAMPAIGN);
            create(&self.campaigns, &self.contacts, &path)
                .await
                .unwrap();
            self
        }
    }

    /// Plays the fan-out function: core's fan-out over the same fakes, answering its outcome
    /// as JSON, as the Lambda does.
    struct LocalFanout<'a> {
        world: &'a World,
        payloads: Mutex<Vec<serde_json::Value>>,
    }

    #[async_trait::async_trait]
    impl FunctionInvoke for LocalFanout<'_> {
        async fn invoke(
            &self,
            function: &str,
            payload: &serde_json::Value,
        ) -> Result<serde_json::Value, String> {
            assert_eq!(function, "hikyaku-fanout");
            self.payloads.lock().unwrap().push(payload.clone());
            let request: FanoutRequest =
                serde_json::from_value(payload.clone()).map_err(|e| e.to_string())?;
            let w = self.world;
            let ports = FanoutPorts {
                campaigns: &w.campaigns,
                runs: &w.runs,
                contacts: &w.contacts,
                queue: &w.queue,
                account: &hikyaku_core::fakes::FakeGate::default(),
            };
            let outcome = fan_out(
                &ports,
                &request,
                &FanoutSettings::default(),
                "test",
                &|| Duration::from_secs(600),
                &now,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(outcome).unwrap())
        }
    }

    /// An invoker that answers with a fixed result.
    struct Answer(Result<serde_json::Value, String>);

    #[async_trait::async_trait]
    impl FunctionInvoke for Answer {
        async fn invoke(
            &self,
            _function: &str,
            _payload: &serde_json::Value,
        ) -> Result<serde_json::Value, String> {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn create_validates_against_the_list_and_stores_the_campaign() {
        let w = World::new().await;
        let path = w.file("campaign.toml", CAMPAIGN);
        let report = create(&w.campaigns, &w.contacts, &path).await.unwrap();
        assert_eq!(report.id, winter());
        assert_eq!(report.variables, ["city", "first_name"]);
        assert!(report.text_derived);
        assert_eq!(report.from, "\"Example News\" <news@example.com>");
        assert!(w.campaigns.get(&winter()).await.unwrap().is_some());
        let text = report.text();
        assert!(text.starts_with("Created campaign 'winter'"), "{text}");
        assert!(
            text.contains("mail_allowed == 1 && account_type == 2"),
            "{text}"
        );

        let err = create(&w.campaigns, &w.contacts, &path).await.unwrap_err();
        assert_eq!(err.message, "campaign 'winter' exists already");
        assert!(err.hint.unwrap().contains("new id"));
    }

    #[tokio::test]
    async fn create_lists_every_problem_with_its_field() {
        let w = World::new().await;
        let path = w.file(
            "bad.toml",
            &CAMPAIGN
                .replace("account_type == 2", "plan == 'gold'")
                .replace("{{city}}", "{{country}}")
                .replace("news@example.com", "news at example.com"),
        );
        let err = create(&w.campaigns, &w.contacts, &path).await.unwrap_err();
        assert!(err.message.contains("has 4 problems"), "{}", err.message);
        assert!(err.message.contains("\n  segment: "), "{}", err.message);
        assert!(err.message.contains("`plan`"), "{}", err.message);
        assert!(err.message.contains("country"), "{}", err.message);
        assert!(
            err.message.contains("\n  from.address: "),
            "{}",
            err.message
        );
        assert!(w.campaigns.campaigns.lock().unwrap().is_empty());

        let syntax = w.file("syntax.toml", "id = \"x\"\nlist = \n");
        let err = create(&w.campaigns, &w.contacts, &syntax)
            .await
            .unwrap_err();
        assert!(err.message.contains("list:"), "{}", err.message);
        let missing = create(&w.campaigns, &w.contacts, Path::new("/nonexistent.toml"))
            .await
            .unwrap_err();
        assert!(
            missing.message.contains("cannot read"),
            "{}",
            missing.message
        );
    }

    #[tokio::test]
    async fn create_needs_contacts_in_the_list() {
        let w = World::new().await;
        let path = w.file("c.toml", &CAMPAIGN.replace("\"newsletter\"", "\"empty\""));
        let err = create(&w.campaigns, &w.contacts, &path).await.unwrap_err();
        assert_eq!(
            err.message,
            "list empty has no contacts; import contacts first"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some("hikyaku contacts import FILE --list empty")
        );
    }

    #[tokio::test]
    async fn preview_renders_for_one_contact_and_writes_the_html() {
        let w = World::new().await.created().await;
        w.suppressions
            .add(&Suppression {
                email: email("chloe@example.net"),
                reason: "complaint".into(),
                source: "feedback".into(),
                at: now(),
            })
            .await
            .unwrap();
        let out = w.dir.path().join("preview.html");
        let report = preview(
            &w.campaigns,
            &w.contacts,
            &w.suppressions,
            &winter(),
            "chloe@example.net",
            Some(&out),
        )
        .await
        .unwrap();
        assert_eq!(report.subject, "Chloé, the winter issue");
        assert!(
            report.text.contains("Hello Chloé from Kyoto & Nara"),
            "{}",
            report.text
        );
        assert!(report.html.contains("Kyoto &amp; Nara"), "{}", report.html);
        assert!(report.html.contains("{{amazonSESUnsubscribeUrl}}"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), report.html);
        assert_eq!(report.segment.as_deref(), Some("selected"));
        assert_eq!(report.suppressed.as_deref(), Some("complaint"));
        let text = report.text();
        assert!(text.contains("Subject: Chloé, the winter issue"), "{text}");
        assert!(text.contains("\nsuppressed  yes (complaint)"), "{text}");
        assert!(text.contains("written to"), "{text}");

        let ben = preview(
            &w.campaigns,
            &w.contacts,
            &w.suppressions,
            &winter(),
            "ben@example.org",
            None,
        )
        .await
        .unwrap();
        assert_eq!(ben.segment.as_deref(), Some("not selected"));
        assert!(ben.text().contains("--out FILE.html writes it"));
        assert!(ben.json()["html"].as_str().unwrap().contains("Ben"));
    }

    #[tokio::test]
    async fn preview_names_what_is_missing() {
        let w = World::new().await.created().await;
        let err = preview(
            &w.campaigns,
            &w.contacts,
            &w.suppressions,
            &winter(),
            "nobody@example.com",
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.message,
            "list 'newsletter' has no contact nobody@example.com"
        );
        let err = preview(
            &w.campaigns,
            &w.contacts,
            &w.suppressions,
            &CampaignId::parse("spring").unwrap(),
            "aiko@example.com",
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(err.message, "campaign 'spring' does not exist");
        let err = preview(
            &w.campaigns,
            &w.contacts,
            &w.suppressions,
            &winter(),
            "not an address",
            None,
        )
        .await
        .unwrap_err();
        assert!(
            err.message.starts_with("--contact 'not an address'"),
            "{}",
            err.message
        );

        // A contact without an attribute the template needs.
        let mut bare = contact("dan@example.com", "Dan", 1, 2);
        bare.attributes.remove("city");
        w.contacts.put_many(&list(), &[bare]).await.unwrap();
        let err = preview(
            &w.campaigns,
            &w.contacts,
            &w.suppressions,
            &winter(),
            "dan@example.com",
            None,
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("`city`"), "{}", err.message);
    }

    #[tokio::test]
    async fn start_invokes_the_fanout_with_the_campaign_and_the_time_in_whole_seconds() {
        let w = World::new().await.created().await;
        let fanout = LocalFanout {
            world: &w,
            payloads: Mutex::new(Vec::new()),
        };
        let report = start(
            &w.campaigns,
            &fanout,
            "hikyaku-fanout",
            &winter(),
            now(),
            &Progress::hidden(),
        )
        .await
        .unwrap();
        assert_eq!(
            fanout.payloads.lock().unwrap()[0],
            serde_json::json!({"campaign_id": "winter", "scheduled_time": "2026-01-02T09:30:15Z"})
        );
        assert_eq!(report.run_id.as_str(), "20260102T093015Z");
        assert_eq!(report.fanout["status"], "completed");
        let text = report.text();
        assert!(
            text.contains("run 20260102T093015Z (scheduled 2026-01-02T09:30:15Z)"),
            "{text}"
        );
        assert!(
            text.contains("completed: 3 contacts read, 2 selected, 1 filtered by the segment, 1 messages enqueued"),
            "{text}"
        );
        assert!(text.contains("hikyaku campaign status winter"), "{text}");
        assert_eq!(w.queue.take_jobs().len(), 1);
    }

    #[tokio::test]
    async fn start_reports_why_the_fanout_could_not_run() {
        let w = World::new().await.created().await;
        let down = Answer(Err(
            "invoking hikyaku-fanout failed: connection refused".into()
        ));
        let err = start(
            &w.campaigns,
            &down,
            "hikyaku-fanout",
            &winter(),
            now(),
            &Progress::hidden(),
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains("connection refused"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("HIKYAKU_FANOUT_FUNCTION"));

        let failed = Answer(Ok(serde_json::json!({
            "errorType": "FanoutError", "errorMessage": "campaign 'winter' is stored but no longer valid"
        })));
        let err = start(
            &w.campaigns,
            &failed,
            "hikyaku-fanout",
            &winter(),
            now(),
            &Progress::hidden(),
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains("FanoutError: campaign 'winter'"),
            "{}",
            err.message
        );

        let unknown = start(
            &w.campaigns,
            &down,
            "hikyaku-fanout",
            &CampaignId::parse("spring").unwrap(),
            now(),
            &Progress::hidden(),
        )
        .await
        .unwrap_err();
        assert_eq!(unknown.message, "campaign 'spring' does not exist");
    }

    #[test]
    fn every_fanout_answer_is_described() {
        let run = serde_json::json!({"campaign_id": "winter", "run_id": "20260102T093015Z"});
        let describe = |v: serde_json::Value| describe_fanout(&v);
        assert!(
            describe(serde_json::json!({"status": "busy", "run": run}))
                .contains("another invocation")
        );
        assert!(
            describe(serde_json::json!({"status": "stopped", "run": run, "state": "paused"}))
                .contains("the run is paused")
        );
        let progress = serde_json::json!({"pages": 1, "contacts_read": 10, "selected": 4,
            "filtered": 6, "segment_errors": 0, "unreadable": 0, "messages": 1});
        assert!(
            describe(serde_json::json!({"status": "continue", "run": run, "progress": progress}))
                .starts_with("continuing in a new invocation; so far 10 contacts read")
        );
        assert!(
            describe(
                serde_json::json!({"status": "already_complete", "run": run, "progress": progress})
            )
            .starts_with("this run was fanned out already")
        );
        assert_eq!(
            describe(serde_json::json!({"surprise": 1})),
            "{\"surprise\":1}"
        );
    }

    async fn started(w: &World) -> RunRef {
        let fanout = LocalFanout {
            world: w,
            payloads: Mutex::new(Vec::new()),
        };
        let report = start(
            &w.campaigns,
            &fanout,
            "hikyaku-fanout",
            &winter(),
            now(),
            &Progress::hidden(),
        )
        .await
        .unwrap();
        RunRef::new(winter(), report.run_id)
    }

    /// Plays the sender for every enqueued recipient: sent, except suppressed ones.
    async fn deliver(w: &World, run: &RunRef) {
        let mut at = now() + chrono::Duration::seconds(1);
        for job in w.queue.take_jobs() {
            for r in job.recipients {
                at += chrono::Duration::seconds(1);
                if w.suppressions
                    .check(std::slice::from_ref(&r.email), None)
                    .await
                    .unwrap()
                    .is_empty()
                {
                    w.ledger.claim(run, &r.email, "t", at).await.unwrap();
                    let sent = Outcome::Sent {
                        ses_message_id: format!("m-{}", r.email),
                    };
                    w.ledger
                        .complete(run, &r.email, "t", &sent, at)
                        .await
                        .unwrap();
                } else {
                    w.ledger
                        .record_suppressed(run, &r.email, "suppressed", at)
                        .await
                        .unwrap();
                }
            }
        }
    }

    const FAST: WaitOptions = WaitOptions {
        interval: Duration::from_millis(1),
        timeout: Some(Duration::from_millis(50)),
    };

    #[tokio::test]
    async fn wait_returns_once_every_recipient_is_done() {
        let w = World::new().await.created().await;
        let run = started(&w).await;
        let err = wait(&w.runs, &w.ledger, &run, FAST, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(err.message.contains("is still sending"), "{}", err.message);
        assert!(
            err.message.contains("(0 of 2 recipients done)"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("hikyaku campaign status winter"));

        w.suppressions
            .add(&Suppression {
                email: email("chloe@example.net"),
                reason: "manual".into(),
                source: "manual".into(),
                at: now(),
            })
            .await
            .unwrap();
        deliver(&w, &run).await;
        let status = wait(&w.runs, &w.ledger, &run, FAST, &Progress::hidden())
            .await
            .unwrap();
        assert!(status.is_finished());
        assert_eq!((status.counts.sent, status.counts.suppressed), (1, 1));
    }

    #[tokio::test]
    async fn wait_stops_at_a_paused_run_and_the_start_fails() {
        let w = World::new().await.created().await;
        let run = started(&w).await;
        w.runs
            .pause(&run, "bounce rate 12% above 5%", now())
            .await
            .unwrap();
        let status = wait(&w.runs, &w.ledger, &run, FAST, &Progress::hidden())
            .await
            .unwrap();
        let report = StartReport {
            campaign: winter(),
            run_id: run.run_id.clone(),
            scheduled_time: "2026-01-02T09:30:15Z".into(),
            function: "hikyaku-fanout".into(),
            fanout: serde_json::json!({}),
            status: Some(status_report(
                status,
                hikyaku_core::campaign::Limits::default().guardrails(),
                now(),
            )),
        };
        let failure = report.failure().unwrap();
        assert_eq!(
            failure.message,
            "run 20260102T093015Z is paused: bounce rate 12% above 5%"
        );
        assert!(
            report
                .text()
                .contains("\npause reason  bounce rate 12% above 5%")
        );
        assert_eq!(report.json()["status"]["phase"], "paused");
    }

    #[tokio::test]
    async fn status_shows_the_latest_run_with_its_counts() {
        let w = World::new().await.created().await;
        let run = started(&w).await;
        deliver(&w, &run).await;
        let later = now() + chrono::Duration::seconds(60);
        let report = status(&w.campaigns, &w.runs, &w.ledger, &winter(), None, later)
            .await
            .unwrap();
        assert_eq!(report.run_id, run.run_id);
        assert_eq!(report.phase, "completed");
        assert!(report.finished);
        assert_eq!(report.outstanding, 0);
        // From the start to the last send, three seconds later; two sends a second apart.
        assert!(
            (report.elapsed_seconds - 3.0).abs() < 1e-9,
            "{}",
            report.elapsed_seconds
        );
        assert_eq!(report.send_rate, Some(1.0));
        let text = report.text();
        for expected in [
            "campaign   winter",
            "run        20260102T093015Z",
            "phase      completed",
            "started    2026-01-02T09:30:15Z, elapsed 3.0 s",
            "send rate  1.0 emails/s",
            "fan-out (complete)",
            "  contacts read        3",
            "  audience (selected)  2",
            "  filtered by segment  1",
            "  messages enqueued    1",
            "  sent                 2",
            "  outstanding          0",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        let json = report.json();
        assert_eq!(json["run"]["counts"]["sent"], 2);
        assert_eq!(json["run"]["record"]["progress"]["selected"], 2);
        assert_eq!(json["run"]["record"]["state"], "sending");
        assert_eq!(json["phase"], "completed");

        let by_id = status(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            Some(&run.run_id),
            later,
        )
        .await
        .unwrap();
        assert_eq!(by_id.run_id, run.run_id);
    }

    #[tokio::test]
    async fn status_names_missing_campaigns_and_runs() {
        let w = World::new().await.created().await;
        let err = status(&w.campaigns, &w.runs, &w.ledger, &winter(), None, now())
            .await
            .unwrap_err();
        assert_eq!(err.message, "campaign 'winter' has not run yet");
        assert_eq!(
            err.hint.as_deref(),
            Some("start it: hikyaku campaign start winter")
        );
        let run = started(&w).await;
        let other = RunId::parse("20250101T000000Z").unwrap();
        let err = status(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &winter(),
            Some(&other),
            now(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.hint.unwrap(),
            format!("its latest runs: {}", run.run_id)
        );
        let err = status(
            &w.campaigns,
            &w.runs,
            &w.ledger,
            &CampaignId::parse("spring").unwrap(),
            None,
            now(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.message, "campaign 'spring' does not exist");
    }
}
