//! The fan-out: reads a run's audience page by page, applies the segment and enqueues the
//! selected recipients in jobs of up to 50, saving its cursor after every page. It stops
//! before the Lambda deadline and is continued by a fresh invocation; a second invocation for
//! the same run finds the lease taken, or the run done, and adds no second copy of the work.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::{AccountGate, AccountVerdict, BudgetError};
use crate::campaign::{Campaign, CampaignErrors};
use crate::contact::Attributes;
use crate::ids::{CampaignId, RunId, RunRef};
use crate::job::{JobRecipient, MAX_RECIPIENTS_PER_JOB, SendJob};
use crate::ports::{CampaignStore, ContactStore, JobQueue, QueueError, RunStore, StoreError};
use crate::run::{FanoutProgress, RunRecord, RunState};

/// What starts a run: EventBridge Scheduler's `Input`, with `<aws.scheduler.scheduled-time>`
/// substituted, or the CLI's "start now".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutRequest {
    pub campaign_id: CampaignId,
    pub scheduled_time: DateTime<Utc>,
}

impl FanoutRequest {
    pub fn run(&self) -> RunRef {
        RunRef::new(
            self.campaign_id.clone(),
            RunId::from_scheduled_time(self.scheduled_time),
        )
    }
}

#[derive(Clone, Debug)]
pub struct FanoutSettings {
    /// Contacts read per page (one store query each).
    pub page_size: u32,
    /// Recipients per SQS message, at most 50.
    pub recipients_per_job: usize,
    /// Time to keep in hand: when less is left, the invocation stops after its page and
    /// hands over to a continuation.
    pub reserve: Duration,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        FanoutSettings {
            page_size: 500,
            recipients_per_job: MAX_RECIPIENTS_PER_JOB,
            reserve: Duration::from_secs(20),
        }
    }
}

pub struct FanoutPorts<'a> {
    pub campaigns: &'a dyn CampaignStore,
    pub runs: &'a dyn RunStore,
    pub contacts: &'a dyn ContactStore,
    pub queue: &'a dyn JobQueue,
    /// The SES account check: an unhealthy account stops the run, a used-up daily quota
    /// makes it wait.
    pub account: &'a dyn AccountGate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FanoutOutcome {
    /// The whole audience is enqueued.
    Completed {
        run: RunRef,
        progress: FanoutProgress,
    },
    /// Time ran short; a continuation must carry on from the saved cursor.
    Continue {
        run: RunRef,
        progress: FanoutProgress,
    },
    /// An earlier invocation enqueued everything already.
    AlreadyComplete {
        run: RunRef,
        progress: FanoutProgress,
    },
    /// Another invocation is fanning this run out right now.
    Busy { run: RunRef },
    /// The run is paused or cancelled.
    Stopped { run: RunRef, state: RunState },
}

#[derive(thiserror::Error, Debug)]
pub enum FanoutError {
    #[error("campaign '{0}' does not exist")]
    UnknownCampaign(CampaignId),
    #[error("campaign '{id}' is stored but no longer valid:\n{errors}")]
    InvalidCampaign {
        id: CampaignId,
        errors: CampaignErrors,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the fan-out lease of run {0} was lost to another invocation")]
    LeaseLost(RunRef),
    #[error("the SES account could not be checked: {0}")]
    Account(#[from] BudgetError),
}

/// Keeps only the attributes the template reads (`wanted`): SQS carries no more than the
/// mail needs.
pub fn recipient_for(
    wanted: &std::collections::BTreeSet<String>,
    contact: crate::contact::Contact,
) -> JobRecipient {
    let attributes: Attributes = contact
        .attributes
        .into_iter()
        .filter(|(name, _)| wanted.contains(name))
        .collect();
    JobRecipient {
        email: contact.email,
        attributes,
        position: None,
    }
}

/// `selected` without the contacts another run mailed since `since` (this run's own sends
/// count for nothing: a page read again after a crash keeps its recipients, and the ledger
/// keeps them from a second copy).
async fn recently_mailed_left_out(
    contacts: &dyn ContactStore,
    list: &crate::ids::ListId,
    run: &RunRef,
    selected: Vec<JobRecipient>,
    since: DateTime<Utc>,
) -> Result<Vec<JobRecipient>, StoreError> {
    if selected.is_empty() {
        return Ok(selected);
    }
    let emails: Vec<_> = selected.iter().map(|r| r.email.clone()).collect();
    let last_sent = contacts.last_sent(list, &emails).await?;
    Ok(selected
        .into_iter()
        .filter(|recipient| {
            !last_sent
                .get(&recipient.email)
                .is_some_and(|last| last.at >= since && &last.run != run)
        })
        .collect())
}

pub async fn fan_out(
    ports: &FanoutPorts<'_>,
    request: &FanoutRequest,
    settings: &FanoutSettings,
    owner: &str,
    time_left: &(dyn Fn() -> Duration + Send + Sync),
    now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
) -> Result<FanoutOutcome, FanoutError> {
    let definition = ports
        .campaigns
        .get(&request.campaign_id)
        .await?
        .ok_or_else(|| FanoutError::UnknownCampaign(request.campaign_id.clone()))?;
    let campaign = Campaign::from_definition(definition, None).map_err(|errors| {
        FanoutError::InvalidCampaign {
            id: request.campaign_id.clone(),
            errors,
        }
    })?;
    // A store may hand back a whole float as an integer (DynamoDB keeps no trailing zeros):
    // the list's schema restores each attribute's kind before segment and template see it.
    let schema = ports
        .contacts
        .schema(&campaign.list)
        .await?
        .unwrap_or_default();
    let run = request.run();
    let record = ports
        .runs
        .start(
            &RunRecord::new(run.clone(), campaign.list.clone(), now())
                .with_canary(campaign.canary.clone()),
        )
        .await?;
    if record.fanout_complete {
        return Ok(FanoutOutcome::AlreadyComplete {
            run,
            progress: record.progress,
        });
    }
    if record.state.allows_sending() {
        let sending = campaign.ses.sending_account();
        let verdict = if sending.role.is_some() {
            // The fan-out holds no sending role; the sender assumes it and checks that
            // account before its first send.
            tracing::info!(run = %run, account = %sending, "account left to the sender, which assumes the sending role");
            AccountVerdict::Ready
        } else {
            ports.account.verdict(&sending, now()).await?
        };
        match verdict {
            AccountVerdict::Ready => {}
            AccountVerdict::Unhealthy { reason } => {
                let reason = format!("account not fit to send: {reason}");
                tracing::error!(run = %run, "run not started: {reason}");
                ports.runs.pause(&run, &reason, now()).await?;
                return Ok(FanoutOutcome::Stopped {
                    run,
                    state: RunState::Paused,
                });
            }
            AccountVerdict::QuotaExhausted { resume_at } => {
                // The audience is enqueued all the same; its messages wait on the queue.
                tracing::warn!(run = %run, resume_at = %resume_at, "the 24-hour SES quota is used up; run waits for quota");
                ports
                    .runs
                    .wait_for_quota(
                        &run,
                        "the account's 24-hour SES sending quota is used up",
                        resume_at,
                        now(),
                    )
                    .await?;
            }
        }
    } else if !record.state.allows_fanout() {
        return Ok(FanoutOutcome::Stopped {
            run,
            state: record.state,
        });
    }
    let lease_until = now()
        + chrono::Duration::from_std(time_left()).unwrap_or_default()
        + chrono::Duration::seconds(30);
    if !ports
        .runs
        .acquire_lease(&run, owner, lease_until, now())
        .await?
    {
        return Ok(FanoutOutcome::Busy { run });
    }
    let outcome = fan_out_under_lease(
        ports,
        &campaign,
        &schema,
        run.clone(),
        record,
        settings,
        owner,
        time_left,
        now,
    )
    .await;
    if outcome.is_err() {
        // Give the lease back, so Lambda's retry of this invocation can carry on at once.
        if let Err(release) = ports.runs.release_lease(&run, owner).await {
            tracing::warn!(run = %run, error = %release, "fan-out lease not released");
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn fan_out_under_lease(
    ports: &FanoutPorts<'_>,
    campaign: &Campaign,
    schema: &crate::contact::ListSchema,
    run: RunRef,
    record: RunRecord,
    settings: &FanoutSettings,
    owner: &str,
    time_left: &(dyn Fn() -> Duration + Send + Sync),
    now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
) -> Result<FanoutOutcome, FanoutError> {
    // The lease may have been taken after a crash: read the cursor under our lease.
    let record = ports.runs.get(&run).await?.unwrap_or(record);
    let mut cursor = record.cursor.clone();
    let mut progress = record.progress.clone();
    let per_job = settings.recipients_per_job.clamp(1, MAX_RECIPIENTS_PER_JOB);
    let wanted = campaign.template.variables();
    loop {
        let page = ports
            .contacts
            .page(&campaign.list, cursor.as_deref(), settings.page_size)
            .await?;
        progress.pages += 1;
        progress.contacts_read += page.contacts.len() as u64;
        progress.unreadable += page.unreadable.len() as u64;
        for (key, reason) in &page.unreadable {
            tracing::warn!(run = %run, key = %key, reason = %reason, "unreadable contact skipped");
        }
        let mut selected = Vec::new();
        for mut contact in page.contacts {
            for (name, value) in contact.attributes.iter_mut() {
                if let Some(kind) = schema.kind_of(name) {
                    *value = value.widened_to(kind);
                }
            }
            let verdict = match &campaign.segment {
                None => Ok(true),
                Some(segment) => segment.matches(&contact.email, &contact.attributes),
            };
            match verdict {
                Ok(true) => selected.push(recipient_for(&wanted, contact)),
                Ok(false) => progress.filtered += 1,
                Err(err) => {
                    progress.segment_errors += 1;
                    tracing::debug!(run = %run, error = %err, "segment could not judge a contact");
                }
            }
        }
        if let Some(days) = campaign.limits.skip_mailed_within_days {
            let before = selected.len();
            selected = recently_mailed_left_out(
                ports.contacts,
                &campaign.list,
                &run,
                selected,
                now() - chrono::Duration::days(i64::from(days)),
            )
            .await?;
            progress.recently_mailed += (before - selected.len()) as u64;
        }
        if record.canary.is_some() {
            // Places follow the checkpointed count, so a page read again gets the same ones.
            for (place, recipient) in (progress.selected..).zip(selected.iter_mut()) {
                recipient.position = Some(place);
            }
        }
        progress.selected += selected.len() as u64;
        let jobs: Vec<SendJob> = selected
            .chunks(per_job)
            .map(|chunk| SendJob::new(&run, 0, chunk.to_vec()))
            .collect();
        progress.messages += jobs.len() as u64;
        ports.queue.enqueue(&jobs).await?;
        let complete = page.next.is_none();
        let saved = ports
            .runs
            .checkpoint(
                &run,
                owner,
                page.next.as_deref(),
                &progress,
                complete,
                now(),
            )
            .await?;
        if !saved {
            return Err(FanoutError::LeaseLost(run));
        }
        if complete {
            tracing::info!(run = %run, selected = progress.selected, filtered = progress.filtered, messages = progress.messages, "fan-out complete");
            return Ok(FanoutOutcome::Completed { run, progress });
        }
        cursor = page.next;
        if time_left() < settings.reserve {
            ports.runs.release_lease(&run, owner).await?;
            tracing::info!(run = %run, pages = progress.pages, "fan-out hands over to a continuation");
            return Ok(FanoutOutcome::Continue { run, progress });
        }
    }
}
