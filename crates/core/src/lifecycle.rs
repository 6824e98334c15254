//! What an operator does to a run: pause it, resume it, cancel it.
//!
//! Each takes effect where the run's state is read: a sender looks at it before every job, so
//! a pause or cancel stops sending within one batch (the jobs already being sent finish). A
//! paused run's jobs wait on the queue and look again; once resumed, each goes on from the
//! ledger, which knows who was sent: no one twice, no one skipped. A run paused while it was
//! fanning out needs its fan-out invoked again, which [`Applied::continue_fanout`] says. A
//! cancelled run is never sent again; its jobs record their recipients `cancelled`.
//! Resuming a run its canary slice paused releases the canary: the operator has seen the
//! figures, and the rest of the audience is sent. A canary without a verdict keeps running.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::canary::{self, CanaryOutcome, CanaryVerdict};
use crate::ids::RunRef;
use crate::ports::{RunStore, StoreError};
use crate::run::{RunRecord, RunState};

/// The reason recorded when the operator gives none.
pub const PAUSED_BY_OPERATOR: &str = "paused by the operator";
pub const CANCELLED_BY_OPERATOR: &str = "cancelled by the operator";
pub const RELEASED_BY_OPERATOR: &str =
    "resumed by the operator after the canary slice: the rest of the audience is sent";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pause,
    Resume,
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum LifecycleError {
    #[error("run {0} does not exist")]
    UnknownRun(RunRef),
    #[error("run {run} is cancelled; a cancelled run cannot be {action}d")]
    Cancelled { run: RunRef, action: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an action did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Applied {
    pub action: Action,
    /// The state before.
    pub was: RunState,
    /// `false` when the run was in the wanted state already (the action is idempotent).
    pub changed: bool,
    /// The run as it stands now.
    pub record: RunRecord,
    /// The run was resumed with its fan-out unfinished: invoke the fan-out for it again.
    pub continue_fanout: bool,
}

/// Applies `action` to `run`, with `reason` (or the operator default) for pause and cancel.
pub async fn apply(
    runs: &dyn RunStore,
    run: &RunRef,
    action: Action,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Applied, LifecycleError> {
    let before = read(runs, run).await?;
    let was = before.state;
    if was == RunState::Cancelled {
        return match action {
            Action::Cancel => Ok(Applied {
                action,
                was,
                changed: false,
                record: before,
                continue_fanout: false,
            }),
            _ => Err(LifecycleError::Cancelled {
                run: run.clone(),
                action: action.as_str(),
            }),
        };
    }
    let changed = match action {
        Action::Pause if was == RunState::Paused => false,
        Action::Pause => {
            runs.pause(run, reason.unwrap_or(PAUSED_BY_OPERATOR), now)
                .await?;
            true
        }
        Action::Resume => {
            if was == RunState::Paused && canary::resume_releases(&before) {
                let release = CanaryVerdict {
                    outcome: CanaryOutcome::Released,
                    at: now,
                    detail: RELEASED_BY_OPERATOR.to_owned(),
                };
                let replacing = before.canary_verdict.as_ref().map(|v| v.outcome);
                if runs.settle_canary(run, &release, replacing).await? {
                    tracing::info!(run = %run, "canary slice released by the operator's resume");
                }
            }
            runs.resume(run, now).await?
        }
        Action::Cancel => {
            runs.cancel(run, reason.unwrap_or(CANCELLED_BY_OPERATOR), now)
                .await?
        }
    };
    let record = read(runs, run).await?;
    let continue_fanout = action == Action::Resume
        && changed
        && !record.fanout_complete
        && record.state.allows_fanout();
    if changed {
        tracing::info!(run = %run, action = action.as_str(), from = %was, to = %record.state, "run state changed by the operator");
    }
    Ok(Applied {
        action,
        was,
        changed,
        record,
        continue_fanout,
    })
}

async fn read(runs: &dyn RunStore, run: &RunRef) -> Result<RunRecord, LifecycleError> {
    runs.get(run)
        .await?
        .ok_or_else(|| LifecycleError::UnknownRun(run.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeRuns;
    use crate::ids::{CampaignId, ListId, RunId};

    async fn world(state: RunState, fanout_complete: bool) -> (FakeRuns, RunRef) {
        let runs = FakeRuns::default();
        let run = RunRef::new(
            CampaignId::parse("spring").unwrap(),
            RunId::from_scheduled_time(Utc::now()),
        );
        let mut record = RunRecord::new(run.clone(), ListId::parse("l").unwrap(), Utc::now());
        record.state = state;
        record.fanout_complete = fanout_complete;
        runs.start(&record).await.unwrap();
        (runs, run)
    }

    #[tokio::test]
    async fn pause_then_resume_goes_back_to_sending_and_is_idempotent() {
        let (runs, run) = world(RunState::Sending, true).await;
        let paused = apply(
            &runs,
            &run,
            Action::Pause,
            Some("checking the list"),
            Utc::now(),
        )
        .await
        .unwrap();
        assert!(paused.changed);
        assert_eq!(paused.record.state, RunState::Paused);
        assert_eq!(
            paused.record.pause_reason.as_deref(),
            Some("checking the list")
        );
        let again = apply(&runs, &run, Action::Pause, None, Utc::now())
            .await
            .unwrap();
        assert!(!again.changed);

        let resumed = apply(&runs, &run, Action::Resume, None, Utc::now())
            .await
            .unwrap();
        assert!(resumed.changed);
        assert_eq!(resumed.was, RunState::Paused);
        assert_eq!(resumed.record.state, RunState::Sending);
        assert_eq!(resumed.record.pause_reason, None);
        assert!(!resumed.continue_fanout);
        assert!(
            !apply(&runs, &run, Action::Resume, None, Utc::now())
                .await
                .unwrap()
                .changed
        );
    }

    #[tokio::test]
    async fn a_run_paused_mid_fanout_resumes_fanning_out_and_asks_for_the_fanout() {
        let (runs, run) = world(RunState::FanningOut, false).await;
        apply(&runs, &run, Action::Pause, None, Utc::now())
            .await
            .unwrap();
        let resumed = apply(&runs, &run, Action::Resume, None, Utc::now())
            .await
            .unwrap();
        assert_eq!(resumed.record.state, RunState::FanningOut);
        assert!(resumed.continue_fanout);
    }

    #[tokio::test]
    async fn a_resume_keeps_a_canary_without_verdict_and_releases_a_failed_one() {
        let (runs, run) = world(RunState::Sending, true).await;
        let fanout_done = Utc::now();
        {
            let mut stored = runs.runs.lock().unwrap();
            let record = stored.get_mut(&run).unwrap();
            record.canary = Some(crate::canary::CanaryPlan {
                slice: crate::canary::SliceSize::Count(10),
                wait_secs: 60,
                above: None,
            });
            record.progress.selected = 100;
            record.fanout_completed_at = Some(fanout_done);
        }
        // Paused during the wait, resumed after it: the next job still judges the slice.
        let after = fanout_done + chrono::Duration::seconds(61);
        apply(&runs, &run, Action::Pause, None, fanout_done)
            .await
            .unwrap();
        let resumed = apply(&runs, &run, Action::Resume, None, after)
            .await
            .unwrap();
        assert!(resumed.changed);
        assert_eq!(resumed.record.canary_verdict, None, "the canary still runs");

        let failed = CanaryVerdict {
            outcome: CanaryOutcome::Failed,
            at: after,
            detail: "canary slice: bounce rate 9.00%".into(),
        };
        assert!(runs.settle_canary(&run, &failed, None).await.unwrap());
        runs.pause(&run, &failed.detail, after).await.unwrap();
        let released = apply(&runs, &run, Action::Resume, None, after)
            .await
            .unwrap();
        let verdict = released.record.canary_verdict.unwrap();
        assert_eq!(verdict.outcome, CanaryOutcome::Released);
        assert_eq!(verdict.detail, RELEASED_BY_OPERATOR);
        assert_eq!(released.record.state, RunState::Sending);
    }

    #[tokio::test]
    async fn a_cancelled_run_stays_cancelled() {
        let (runs, run) = world(RunState::Paused, true).await;
        let cancelled = apply(&runs, &run, Action::Cancel, None, Utc::now())
            .await
            .unwrap();
        assert!(cancelled.changed);
        assert_eq!(cancelled.record.state, RunState::Cancelled);
        assert_eq!(
            cancelled.record.pause_reason.as_deref(),
            Some(CANCELLED_BY_OPERATOR)
        );
        for action in [Action::Pause, Action::Resume] {
            let err = apply(&runs, &run, action, None, Utc::now())
                .await
                .unwrap_err();
            assert!(
                matches!(err, LifecycleError::Cancelled { .. }),
                "{action:?}: {err}"
            );
            assert!(err.to_string().contains("cannot be"), "{err}");
        }
        assert!(
            !apply(&runs, &run, Action::Cancel, None, Utc::now())
                .await
                .unwrap()
                .changed
        );
    }

    #[tokio::test]
    async fn an_unknown_run_is_named() {
        let runs = FakeRuns::default();
        let run = RunRef::new(
            CampaignId::parse("spring").unwrap(),
            RunId::from_scheduled_time(Utc::now()),
        );
        let err = apply(&runs, &run, Action::Pause, None, Utc::now())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
