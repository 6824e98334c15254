//! `hikyaku doctor`: the preflight check, and the gate `campaign start` passes first.

use hikyaku_aws::Tables;
use hikyaku_core::campaign::Campaign;
use hikyaku_core::doctor::{Findings, SetupProbe, SetupToCheck, Verdict, diagnose};
use hikyaku_core::ids::CampaignId;
use hikyaku_core::ports::CampaignStore;
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Report, table, to_json};

/// Where the stack's parts are, from the environment; what is unknown is skipped.
#[derive(Clone, Debug, Default)]
pub struct StackNames {
    pub tables: Option<Tables>,
    pub feedback_topic_arn: Option<String>,
    pub send_queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    pub feedback_function: Option<String>,
}

impl StackNames {
    fn setup(&self, campaign: Option<&Campaign>) -> SetupToCheck {
        let tables = self.tables.as_ref().map_or_else(Vec::new, |t| {
            [
                ("contacts", &t.contacts),
                ("campaigns", &t.campaigns),
                ("runs", &t.runs),
                ("deliveries", &t.deliveries),
                ("suppressions", &t.suppressions),
            ]
            .into_iter()
            .map(|(what, name)| (what.to_owned(), name.clone()))
            .collect()
        });
        SetupToCheck {
            with_campaign: campaign.is_some(),
            from_address: campaign.map(|c| c.from.address.as_str().to_owned()),
            configuration_set: campaign.and_then(|c| c.ses.configuration_set.clone()),
            contact_list: campaign.and_then(|c| c.ses.contact_list.clone()),
            topic: campaign.and_then(|c| c.ses.topic.clone()),
            feedback_topic_arn: self.feedback_topic_arn.clone(),
            feedback_function: self.feedback_function.clone(),
            tables,
            send_queue_url: self.send_queue_url.clone(),
            dead_letter_queue_url: self.dead_letter_queue_url.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub campaign: Option<CampaignId>,
    #[serde(flatten)]
    pub findings: Findings,
    pub blocking_failures: usize,
    pub skipped: usize,
}

fn mark(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "ok",
        Verdict::Warn => "warn",
        Verdict::Fail => "FAIL",
        Verdict::Skipped => "skipped",
    }
}

impl Report for DoctorReport {
    fn text(&self) -> String {
        let rows = self
            .findings
            .checks
            .iter()
            .map(|c| {
                let mut detail = c.detail.clone();
                if let Some(fix) = &c.fix {
                    detail.push_str(&format!("\nfix: {fix}"));
                }
                vec![mark(c.verdict).to_owned(), c.name.clone(), detail]
            })
            .collect();
        let mut out = table(vec!["".into(), "check".into(), "finding".into()], rows);
        if self.skipped > 0 {
            let checks = match self.skipped {
                1 => "1 check".to_owned(),
                n => format!("{n} checks"),
            };
            out.push_str(&format!(
                "\n{checks} skipped: what the endpoints here cannot answer, or what is not configured"
            ));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }

    fn failure(&self) -> Option<CliError> {
        (self.blocking_failures > 0).then(|| blocked(&self.findings))
    }
}

/// The error of a setup that would not carry a campaign: each blocking failure with its fix.
fn blocked(findings: &Findings) -> CliError {
    let failures = findings.blocking();
    let lines: Vec<String> = failures
        .iter()
        .map(|c| {
            format!(
                "  {}: {} (fix: {})",
                c.name,
                c.detail,
                c.fix.as_deref().unwrap_or("-")
            )
        })
        .collect();
    CliError::new(format!(
        "{} blocking check{} failed:\n{}",
        failures.len(),
        if failures.len() == 1 { "" } else { "s" },
        lines.join("\n")
    ))
    .hint(
        "fix them, then run `hikyaku doctor` again; `campaign start --force` (or `schedule \
         --force`) goes ahead anyway",
    )
}

async fn campaign_of(campaigns: &dyn CampaignStore, id: &CampaignId) -> Result<Campaign, CliError> {
    let definition = campaigns.get(id).await?.ok_or_else(|| {
        CliError::new(format!("campaign '{id}' does not exist"))
            .hint("create it first: hikyaku campaign create FILE")
    })?;
    Campaign::from_definition(definition, None).map_err(|errors| {
        CliError::new(format!(
            "campaign '{id}' is stored but no longer valid:\n{errors}"
        ))
    })
}

pub async fn doctor(
    probe: &dyn SetupProbe,
    campaigns: &dyn CampaignStore,
    stack: &StackNames,
    campaign: Option<&CampaignId>,
) -> Result<DoctorReport, CliError> {
    let loaded = match campaign {
        Some(id) => Some(campaign_of(campaigns, id).await?),
        None => None,
    };
    let findings = diagnose(probe, &stack.setup(loaded.as_ref())).await;
    Ok(DoctorReport {
        campaign: campaign.cloned(),
        blocking_failures: findings.blocking().len(),
        skipped: findings.skipped().len(),
        findings,
    })
}

/// What `campaign start` checks first: refuses with the findings when a blocking check fails.
pub async fn gate(
    probe: &dyn SetupProbe,
    campaigns: &dyn CampaignStore,
    stack: &StackNames,
    id: &CampaignId,
) -> Result<(), CliError> {
    let report = doctor(probe, campaigns, stack, Some(id)).await?;
    for check in report
        .findings
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Warn)
    {
        tracing::warn!(check = %check.name, detail = %check.detail, "preflight warning");
    }
    match report.blocking_failures {
        0 => Ok(()),
        _ => Err(blocked(&report.findings)),
    }
}
