//! The feedback function's work on one SES notification: suppress who must not be mailed
//! again, record what SES said on each recipient's ledger record, move the run's counters,
//! and pause the run when a guardrail is crossed.
//!
//! Order matters for safety: the suppression (consent) is written before the ledger record,
//! because the ledger record is what makes a redelivered notification a duplicate. A crash in
//! between leaves a suppression whose ledger mark is written on the retry; never the reverse.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::email::EmailAddress;
use crate::feedback::{
    AddressOutcome, AddressRule, Breach, Feedback, FeedbackCounts, SoftBouncePolicy, address_rule,
    preference_change, read_feedback,
};
use crate::ids::RunRef;
use crate::logging::shown_text;
use crate::notification::Notification;
use crate::ports::{
    AutomaticSuppression, CampaignStore, FeedbackApplied, FeedbackLedger, RunStore, StoreError,
    SuppressionList,
};
use crate::send::{CampaignCache, CampaignLoadError};

pub struct FeedbackPorts<'a> {
    pub ledger: &'a dyn FeedbackLedger,
    pub runs: &'a dyn RunStore,
    pub campaigns: &'a dyn CampaignStore,
    pub suppressions: &'a dyn SuppressionList,
}

#[derive(Clone, Debug)]
pub struct FeedbackSettings {
    pub soft_bounce: SoftBouncePolicy,
    /// How long a loaded campaign (its guardrails) is trusted.
    pub campaign_ttl: Duration,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            soft_bounce: SoftBouncePolicy::default(),
            campaign_ttl: Duration::from_secs(60),
        }
    }
}

/// What handling one notification did, for the log line and the tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NotificationReport {
    /// The run the notification belongs to, when known.
    pub run: Option<String>,
    /// Recipient records that learned something.
    pub recorded: u32,
    /// Recipients whose record had this notification already.
    pub duplicates: u32,
    /// Recipients the run's ledger has no record of.
    pub unknown_recipients: u32,
    /// Addresses suppressed (or whose suppression was refreshed).
    pub suppressed: u32,
    /// Soft bounces counted toward the address policy.
    pub soft_bounces_counted: u32,
    /// Addresses mirrored from a Subscription event.
    pub preferences_mirrored: u32,
    /// Addresses SES named that are not valid addresses, with the reason.
    pub unreadable_addresses: Vec<String>,
    /// The counters this notification moved.
    pub counted: FeedbackCounts,
    /// The guardrail this notification found crossed; the run was paused for it.
    pub paused: Option<String>,
}

/// What stops a notification from being handled now; SNS delivers it again later.
#[derive(thiserror::Error, Debug)]
pub enum FeedbackError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handles one notification. Errors are storage failures worth a retry; everything about the
/// notification itself (unknown recipients, unreadable addresses) is in the report instead.
pub async fn handle_notification(
    ports: &FeedbackPorts<'_>,
    settings: &FeedbackSettings,
    cache: &CampaignCache,
    event_id: &str,
    notification: &Notification,
    now: DateTime<Utc>,
) -> Result<NotificationReport, FeedbackError> {
    let at = notification.occurred_at(now);
    let reading = read_feedback(notification);
    let mut report = NotificationReport::default();

    let run = match notification.tagged_run() {
        Some(run) => Some(run),
        None if !reading.feedback.is_empty() => match notification.ses_message_id() {
            Some(id) => ports
                .ledger
                .find_by_message_id(id)
                .await?
                .map(|(run, _)| run),
            None => None,
        },
        None => None,
    };
    report.run = run.as_ref().map(RunRef::key);

    for (address, feedback) in &reading.feedback {
        let email = match EmailAddress::parse(address) {
            Ok(email) => email,
            Err(err) => {
                report
                    .unreadable_addresses
                    .push(format!("{}: {err}", shown_text(address)));
                continue;
            }
        };
        apply_to_address(
            ports,
            settings,
            &email,
            run.as_ref(),
            event_id,
            feedback,
            at,
            &mut report,
        )
        .await?;
        let Some(run) = &run else { continue };
        match ports
            .ledger
            .apply_feedback(run, &email, event_id, feedback, at)
            .await?
        {
            FeedbackApplied::Applied { before } => {
                report.recorded += 1;
                report
                    .counted
                    .add(&FeedbackCounts::delta(feedback, &before));
            }
            FeedbackApplied::Duplicate => report.duplicates += 1,
            FeedbackApplied::NoRecord => report.unknown_recipients += 1,
        }
    }

    if let Some((address, subscription)) = &reading.preferences {
        match EmailAddress::parse(address)
            .map_err(|err| err.to_string())
            .and_then(|email| preference_change(email, subscription, at))
        {
            Ok(change) => {
                ports.suppressions.set_preferences(&change).await?;
                report.preferences_mirrored += 1;
            }
            Err(reason) => report
                .unreadable_addresses
                .push(format!("{}: {reason}", shown_text(address))),
        }
    }

    if let Some(run) = &run
        && !report.counted.is_zero()
        && let Some(breach) = count_and_judge(ports, settings, cache, run, &report.counted).await?
    {
        let reason = format!("paused by the guardrail: {breach}");
        ports.runs.pause(run, &reason, now).await?;
        tracing::warn!(run = %run, metric = breach.metric, rate = breach.rate, limit = breach.limit, sends = breach.sends, "run paused by its guardrail");
        report.paused = Some(reason);
    }
    Ok(report)
}

/// The address-wide consequences: suppression, the soft-bounce history.
#[allow(clippy::too_many_arguments)]
async fn apply_to_address(
    ports: &FeedbackPorts<'_>,
    settings: &FeedbackSettings,
    email: &EmailAddress,
    run: Option<&RunRef>,
    event_id: &str,
    feedback: &Feedback,
    at: DateTime<Utc>,
    report: &mut NotificationReport,
) -> Result<(), StoreError> {
    let suppression = |reason: String, diagnostic: Option<String>| AutomaticSuppression {
        email: email.clone(),
        reason,
        diagnostic,
        run: run.cloned(),
        at,
    };
    match address_rule(feedback) {
        AddressRule::Suppress(order) => {
            ports
                .suppressions
                .suppress(&suppression(order.reason, order.diagnostic), event_id)
                .await?;
            report.suppressed += 1;
        }
        AddressRule::SoftBounce => {
            let verdict = ports
                .suppressions
                .record_outcome(
                    email,
                    event_id,
                    AddressOutcome::SoftBounce,
                    &settings.soft_bounce,
                )
                .await?;
            if verdict.is_some() {
                report.soft_bounces_counted += 1;
            }
            if verdict == Some(true) {
                let policy = settings.soft_bounce;
                let diagnostic = format!(
                    "{} of the last {} sends bounced softly; the latest: {}",
                    policy.limit,
                    policy.window,
                    feedback.detail().unwrap_or_default()
                );
                ports
                    .suppressions
                    .suppress(
                        &suppression("soft bounces".into(), Some(diagnostic)),
                        event_id,
                    )
                    .await?;
                report.suppressed += 1;
            }
        }
        AddressRule::Delivered => {
            ports
                .suppressions
                .record_outcome(
                    email,
                    event_id,
                    AddressOutcome::Delivered,
                    &settings.soft_bounce,
                )
                .await?;
        }
        AddressRule::Nothing => {}
    }
    Ok(())
}

/// Adds the counters to the run and judges its guardrails on the totals; the breach when the
/// run is still sending and went over a limit.
async fn count_and_judge(
    ports: &FeedbackPorts<'_>,
    settings: &FeedbackSettings,
    cache: &CampaignCache,
    run: &RunRef,
    delta: &FeedbackCounts,
) -> Result<Option<Breach>, StoreError> {
    let Some(record) = ports.runs.add_feedback(run, delta).await? else {
        tracing::warn!(run = %run, "feedback for a run that does not exist; counters not kept");
        return Ok(None);
    };
    // A run waiting for quota still has mail out there whose feedback counts.
    if !record.state.allows_fanout() {
        return Ok(None);
    }
    let guardrails = match cache
        .load(ports.campaigns, &run.campaign_id, settings.campaign_ttl)
        .await
    {
        Ok(campaign) => campaign.limits.guardrails(),
        Err(CampaignLoadError::Store(err)) => return Err(err),
        Err(other) => {
            // Without its definition the run still has the defaults, which are conservative.
            tracing::warn!(run = %run, error = %other, "campaign unreadable; default guardrails apply");
            crate::campaign::Limits::default().guardrails()
        }
    };
    Ok(guardrails.breach(&record.feedback))
}
