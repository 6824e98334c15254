//! `campaign pause|resume|cancel`: the run's state, changed in the runs table, where every
//! sender looks before each job; a resumed run whose fan-out was cut short gets its fan-out
//! invoked again, to go on from its checkpoint.

use chrono::{DateTime, SecondsFormat, Utc};
use hikyaku_core::ids::{CampaignId, RunId};
use hikyaku_core::lifecycle::{Action, LifecycleError, apply};
use hikyaku_core::ports::RunStore;
use hikyaku_core::run::RunState;
use serde::Serialize;

use crate::commands::campaign::find_run;
use crate::error::CliError;
use crate::invoke::FunctionInvoke;
use crate::output::{Report, aligned, to_json};

#[derive(Debug, Serialize)]
pub struct LifecycleReport {
    pub campaign: CampaignId,
    pub run_id: RunId,
    pub action: Action,
    pub was: RunState,
    pub state: RunState,
    pub changed: bool,
    pub reason: Option<String>,
    /// The fan-out was invoked again to enqueue the rest of the audience.
    pub fanout_continued: bool,
}

impl Report for LifecycleReport {
    fn text(&self) -> String {
        let what = match (self.action, self.changed) {
            (Action::Pause, true) => "paused: senders stop within one batch",
            (Action::Pause, false) => "was paused already",
            (Action::Resume, true) if self.fanout_continued => {
                "resumed: sending goes on, and the fan-out continues from its checkpoint"
            }
            (Action::Resume, true) => "resumed: its waiting jobs send again as they come back",
            (Action::Resume, false) => "was not paused; nothing changed",
            (Action::Cancel, true) => {
                "cancelled: nothing more is sent; unsent recipients are recorded cancelled"
            }
            (Action::Cancel, false) => "was cancelled already",
        };
        let mut rows = vec![
            ("campaign", self.campaign.to_string()),
            ("run", self.run_id.to_string()),
            ("state", format!("{} (was {})", self.state, self.was)),
        ];
        if let Some(reason) = &self.reason {
            rows.push(("reason", reason.clone()));
        }
        format!("run {} {what}\n{}", self.run_id, aligned(&rows, 2))
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn change(
    runs: &dyn RunStore,
    invoker: &dyn FunctionInvoke,
    fanout_function: &str,
    id: &CampaignId,
    run: Option<&RunId>,
    action: Action,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<LifecycleReport, CliError> {
    let record = find_run(runs, id, run).await?;
    let run = record.run;
    let applied = apply(runs, &run, action, reason, now)
        .await
        .map_err(|err| match err {
            LifecycleError::Cancelled { .. } => CliError::new(err.to_string()).hint(format!(
                "start a new run instead: hikyaku campaign start {id}"
            )),
            LifecycleError::Store(store) => store.into(),
            LifecycleError::UnknownRun(_) => CliError::new(err.to_string()).hint(format!(
                "list the campaign's runs: hikyaku campaign status {id}"
            )),
        })?;
    if applied.continue_fanout {
        let payload = serde_json::json!({
            "campaign_id": id.as_str(),
            "scheduled_time": run
                .run_id
                .scheduled_time()
                .to_rfc3339_opts(SecondsFormat::Secs, true),
        });
        let answer = invoker.invoke(fanout_function, &payload).await.map_err(|reason| {
            CliError::new(format!(
                "run {} is resumed, but its fan-out could not be invoked: {reason}",
                run.run_id
            ))
            .hint(format!(
                "run `hikyaku campaign resume {id} --run {}` again once {fanout_function} is reachable",
                run.run_id
            ))
        })?;
        if let Some(message) = answer.get("errorMessage") {
            return Err(CliError::new(format!(
                "run {} is resumed, but its fan-out failed: {}",
                run.run_id,
                message.as_str().unwrap_or_default()
            ))
            .hint("see the fan-out function's logs; resuming again retries it"));
        }
    }
    Ok(LifecycleReport {
        campaign: id.clone(),
        run_id: run.run_id.clone(),
        action,
        was: applied.was,
        state: applied.record.state,
        changed: applied.changed,
        reason: applied.record.pause_reason.clone(),
        fanout_continued: applied.continue_fanout,
    })
}

#[derive(Debug, Serialize)]
pub struct ResendReport {
    pub campaign: CampaignId,
    pub run_id: RunId,
    #[serde(flatten)]
    pub redriven: hikyaku_core::redrive::Redriven,
}

impl Report for ResendReport {
    fn text(&self) -> String {
        let r = &self.redriven;
        let mut out = format!(
            "Put {} recipients ({} jobs) of run {} back on the send queue; the ledger keeps anyone \
             already sent, suppressed, failed for good, uncertain or cancelled from a second mail",
            r.recipients, r.jobs, self.run_id
        );
        if r.other_runs > 0 || r.unreadable > 0 {
            out.push_str(&format!(
                "\nleft in the dead-letter queue: {} of other runs, {} unreadable",
                r.other_runs, r.unreadable
            ));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

pub async fn resend_failed(
    runs: &dyn RunStore,
    queues: Option<(
        &dyn hikyaku_core::redrive::DeadLetters,
        &dyn hikyaku_core::ports::JobQueue,
    )>,
    id: &CampaignId,
    run: &RunId,
) -> Result<ResendReport, CliError> {
    let record = find_run(runs, id, Some(run)).await?;
    if record.state == RunState::Cancelled {
        return Err(CliError::new(format!(
            "run {run} is cancelled; its recipients are not sent again"
        ))
        .hint(format!(
            "start a new run instead: hikyaku campaign start {id}"
        )));
    }
    let (dead_letters, queue) = queues.ok_or_else(|| {
        CliError::new("the send queue and its dead-letter queue are not configured").hint(
            "set HIKYAKU_SEND_QUEUE_URL and HIKYAKU_SEND_DLQ_URL (the stack's SendQueueUrl and \
             SendDeadLetterQueueUrl outputs)",
        )
    })?;
    let redriven = hikyaku_core::redrive::resend_failed(dead_letters, queue, &record.run)
        .await
        .map_err(|err| {
            CliError::new(format!(
                "could not move the dead letters of run {run}: {err}"
            ))
            .hint("what was moved stays moved; running it again carries on")
        })?;
    Ok(ResendReport {
        campaign: id.clone(),
        run_id: run.clone(),
        redriven,
    })
}
