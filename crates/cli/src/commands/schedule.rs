//! `campaign schedule|schedules|unschedule`: the campaign's schedule on EventBridge Scheduler,
//! in the stack's schedule group, invoking the fan-out with the campaign's id and the firing's
//! scheduled time (which becomes the run id). One schedule per campaign, named as the campaign.
//!
//! Everything the operator typed is checked before any AWS call (hikyaku_core::schedule): the
//! expression, the time zone, a time in the past, the flexible window; then the settings, then
//! that the campaign exists.

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{ArgGroup, Args};
use hikyaku_aws::config::env_opt;
use hikyaku_core::ids::CampaignId;
use hikyaku_core::ports::CampaignStore;
use hikyaku_core::schedule::{
    ScheduleError, ScheduleInfo, ScheduleRequest, ScheduleSpec, Schedules, SchedulesError,
    SchedulesErrorKind, parse_zone, schedule_name,
};
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Report, table, to_json};

pub const SCHEDULE_GROUP_VAR: &str = "HIKYAKU_SCHEDULE_GROUP";
pub const SCHEDULER_ROLE_VAR: &str = "HIKYAKU_SCHEDULER_ROLE_ARN";
pub const FANOUT_ARN_VAR: &str = "HIKYAKU_FANOUT_FUNCTION_ARN";
/// The group of a stack named `hikyaku` (the template names the group after the stack).
pub const DEFAULT_SCHEDULE_GROUP: &str = "hikyaku";

pub const LONG_ABOUT: &str = "\
Schedule runs of a campaign on EventBridge Scheduler, in the stack's schedule group \
(HIKYAKU_SCHEDULE_GROUP). Each firing invokes the fan-out (HIKYAKU_FANOUT_FUNCTION_ARN, with \
the role HIKYAKU_SCHEDULER_ROLE_ARN) with {\"campaign_id\": ID, \"scheduled_time\": \
\"<aws.scheduler.scheduled-time>\"}: the scheduled time is the run id, so a firing delivered \
twice is one run.

  --at \"2026-12-24 09:00\"   once (at(...)); the schedule deletes itself after it fired
  --cron \"0 9 ? * MON *\"    EventBridge's six fields: minutes hours day-of-month month \
day-of-week year; '?' in one of the day fields; weekdays 1-7 are SUN-SAT; L, W and # as \
EventBridge has them
  --rate \"1 day\"            every N minutes, hours or days from now

Times are read in --tz (an IANA zone, default UTC). A campaign has one schedule, named as \
the campaign; `campaign unschedule ID` removes it.";

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("when").required(true).args(["at", "cron", "rate"])))]
pub struct ScheduleArgs {
    /// The campaign id (also the schedule's name)
    pub id: CampaignId,
    /// Once, at this local date and time: "YYYY-MM-DD HH:MM[:SS]"
    #[arg(long, value_name = "DATE TIME")]
    pub at: Option<String>,
    /// Repeatedly: EventBridge cron fields "min hour day-of-month month day-of-week year"
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Repeatedly, every "N minutes|hours|days" ("1 day", "12 hours")
    #[arg(long, value_name = "N UNIT")]
    pub rate: Option<String>,
    /// The IANA time zone the time or cron is read in, e.g. Asia/Tokyo
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,
    /// Let Scheduler start each run up to this many minutes late, to spread load (1-1440)
    #[arg(long, value_name = "MINUTES")]
    pub flexible_window: Option<u32>,
    /// Schedule even if a blocking check of `hikyaku doctor` fails
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SchedulesArgs {
    /// Only this campaign's schedule
    pub id: Option<CampaignId>,
}

#[derive(Args, Debug)]
pub struct UnscheduleArgs {
    /// The campaign id
    pub id: CampaignId,
}

/// Where schedules go and what they invoke.
#[derive(Clone, Debug, Default)]
pub struct ScheduleSettings {
    pub group: String,
    pub role_arn: Option<String>,
    pub fanout_arn: Option<String>,
}

impl ScheduleSettings {
    pub fn from_env() -> Result<ScheduleSettings, CliError> {
        let read = |name| env_opt(name).map_err(|err| CliError::new(err.to_string()));
        Ok(ScheduleSettings {
            group: read(SCHEDULE_GROUP_VAR)?.unwrap_or_else(|| DEFAULT_SCHEDULE_GROUP.to_owned()),
            role_arn: read(SCHEDULER_ROLE_VAR)?,
            fanout_arn: read(FANOUT_ARN_VAR)?,
        })
    }

    fn required<'a>(
        value: &'a Option<String>,
        var: &str,
        output: &str,
    ) -> Result<&'a str, CliError> {
        match value.as_deref() {
            Some(v) if v.starts_with("arn:") => Ok(v),
            Some(v) => Err(CliError::new(format!("{var} '{v}' is not an ARN"))
                .hint(format!("set it to the stack output {output} (arn:...)"))),
            None => Err(CliError::new(format!("{var} is not set")).hint(format!(
                "set it to the stack output {output}; locally: load .local/stack.env"
            ))),
        }
    }
}

fn schedule_error(err: ScheduleError) -> CliError {
    CliError::new(err.message).hint(err.hint)
}

fn scheduler_error(err: SchedulesError, group: &str) -> CliError {
    let hint = match &err.kind {
        SchedulesErrorKind::Conflict => {
            "a schedule of that name exists in the group; `hikyaku campaign schedules` lists them"
                .to_owned()
        }
        SchedulesErrorKind::NotFound => format!(
            "check HIKYAKU_SCHEDULE_GROUP ('{group}'): it must name the stack's schedule group \
             (stack output ScheduleGroupName)"
        ),
        SchedulesErrorKind::Invalid => {
            "Scheduler refused the request's values; check the scheduler role and fan-out ARNs"
                .to_owned()
        }
        SchedulesErrorKind::Other { retryable: true } => {
            "Scheduler is busy or unreachable right now; run the command again".to_owned()
        }
        SchedulesErrorKind::Other { retryable: false } => {
            "check the AWS credentials, region and permissions (scheduler:*Schedule, iam:PassRole \
             on the scheduler role)"
                .to_owned()
        }
    };
    CliError::new(err.to_string()).hint(hint)
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2026-12-24 09:00:00 Asia/Tokyo`, or the UTC time when the zone is unknown.
fn local(at: DateTime<Utc>, zone: &str) -> String {
    match parse_zone(zone) {
        Ok(tz) => format!(
            "{} {zone}",
            at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S")
        ),
        Err(_) => iso(at),
    }
}

fn rows(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("  {label:<width$}  {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Serialize)]
pub struct Scheduled {
    pub campaign_id: CampaignId,
    pub schedule: String,
    pub group: String,
    pub arn: String,
    pub expression: String,
    pub timezone: String,
    /// UTC.
    pub next_firing: String,
    pub next_firing_local: String,
    pub flexible_window_minutes: Option<u32>,
    /// `DELETE` for one-time schedules, `NONE` otherwise.
    pub action_after_completion: &'static str,
}

impl Report for Scheduled {
    fn text(&self) -> String {
        let window = match self.flexible_window_minutes {
            Some(m) => format!("flexible, up to {m} min late"),
            None => "off (on time)".to_owned(),
        };
        let after = if self.action_after_completion == "DELETE" {
            "the schedule deletes itself"
        } else {
            "the schedule stays for the next firing"
        };
        format!(
            "Scheduled campaign '{}' (schedule '{}' in group '{}')\n{}",
            self.campaign_id,
            self.schedule,
            self.group,
            rows(&[
                (
                    "expression",
                    format!("{} in {}", self.expression, self.timezone)
                ),
                (
                    "next firing",
                    format!("{} ({})", self.next_firing_local, self.next_firing)
                ),
                ("window", window),
                ("after firing", after.to_owned()),
            ])
        )
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

/// What can be checked without AWS: the request, then the settings. `main` runs it before it
/// builds the AWS clients, so a bad expression is the answer even without a stack configured.
pub fn check(
    settings: &ScheduleSettings,
    args: &ScheduleArgs,
    now: DateTime<Utc>,
) -> Result<ScheduleSpec, CliError> {
    let request = ScheduleRequest {
        at: args.at.as_deref(),
        cron: args.cron.as_deref(),
        rate: args.rate.as_deref(),
        zone: Some(&args.tz),
        flexible_window_minutes: args.flexible_window,
    };
    let fanout_arn =
        ScheduleSettings::required(&settings.fanout_arn, FANOUT_ARN_VAR, "FanoutFunctionArn");
    let role_arn =
        ScheduleSettings::required(&settings.role_arn, SCHEDULER_ROLE_VAR, "SchedulerRoleArn");
    // The request first: a bad expression is the answer whatever the settings.
    let spec = request
        .check(
            &args.id,
            fanout_arn.as_ref().map_or("", |arn| arn),
            role_arn.as_ref().map_or("", |arn| arn),
            now,
        )
        .map_err(schedule_error)?;
    fanout_arn?;
    role_arn?;
    Ok(spec)
}

pub async fn schedule(
    campaigns: &dyn CampaignStore,
    schedules: &dyn Schedules,
    settings: &ScheduleSettings,
    args: &ScheduleArgs,
    now: DateTime<Utc>,
) -> Result<Scheduled, CliError> {
    let spec = check(settings, args, now)?;
    if campaigns.get(&args.id).await?.is_none() {
        return Err(
            CliError::new(format!("campaign '{}' does not exist", args.id))
                .hint("create it first: hikyaku campaign create FILE (the id is the file's `id`)"),
        );
    }
    let arn = schedules
        .create(&spec)
        .await
        .map_err(|err| match err.kind {
            SchedulesErrorKind::Conflict => CliError::new(format!(
                "campaign '{}' has a schedule already ({})",
                args.id, err.message
            ))
            .hint(format!(
                "see it with `hikyaku campaign schedules {id}`; to change it, \
             `hikyaku campaign unschedule {id}` first",
                id = args.id
            )),
            _ => scheduler_error(err, &settings.group),
        })?;
    let zone = spec.zone.name().to_owned();
    Ok(Scheduled {
        campaign_id: args.id.clone(),
        schedule: spec.name.clone(),
        group: settings.group.clone(),
        arn,
        expression: spec.expression.to_aws(),
        next_firing: iso(spec.next_firing),
        next_firing_local: local(spec.next_firing, &zone),
        timezone: zone,
        flexible_window_minutes: spec.flexible_window_minutes,
        action_after_completion: if spec.delete_after_completion {
            "DELETE"
        } else {
            "NONE"
        },
    })
}

#[derive(Debug, Serialize)]
pub struct ListedSchedule {
    pub schedule: String,
    pub campaign_id: Option<String>,
    pub expression: String,
    pub timezone: String,
    pub state: String,
    /// UTC; none when the schedule will not fire again.
    pub next_firing: Option<String>,
    pub next_firing_local: Option<String>,
    /// Why the next firing could not be computed (an expression this CLI cannot read).
    pub next_firing_error: Option<String>,
    pub flexible_window_minutes: Option<u32>,
    pub action_after_completion: Option<String>,
    pub target_arn: String,
}

impl ListedSchedule {
    fn from_info(info: ScheduleInfo, now: DateTime<Utc>) -> ListedSchedule {
        let (next, error) = match info.next_firing(now) {
            Ok(next) => (next, None),
            Err(err) => (None, Some(err.message)),
        };
        ListedSchedule {
            campaign_id: info.campaign(),
            next_firing: next.map(iso),
            next_firing_local: next.map(|t| local(t, &info.zone)),
            next_firing_error: error,
            schedule: info.name,
            expression: info.expression,
            timezone: info.zone,
            state: info.state,
            flexible_window_minutes: info.flexible_window_minutes,
            action_after_completion: info.action_after_completion,
            target_arn: info.target_arn,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ScheduleList {
    pub group: String,
    pub campaign_id: Option<CampaignId>,
    pub schedules: Vec<ListedSchedule>,
}

impl Report for ScheduleList {
    fn text(&self) -> String {
        if self.schedules.is_empty() {
            return match &self.campaign_id {
                Some(id) => format!(
                    "Campaign '{id}' has no schedule in group '{}' \
                     (hikyaku campaign schedule {id} --at ... adds one)",
                    self.group
                ),
                None => format!("No schedules in group '{}'", self.group),
            };
        }
        let header = [
            "schedule",
            "campaign",
            "expression",
            "zone",
            "state",
            "next firing",
            "(UTC)",
            "window",
        ]
        .map(String::from)
        .to_vec();
        let body = self
            .schedules
            .iter()
            .map(|s| {
                let next = match (&s.next_firing_local, &s.next_firing_error) {
                    (Some(local), _) => local.clone(),
                    (None, Some(err)) => format!("unknown: {err}"),
                    (None, None) => "none".to_owned(),
                };
                vec![
                    s.schedule.clone(),
                    s.campaign_id.clone().unwrap_or_else(|| "-".into()),
                    s.expression.clone(),
                    s.timezone.clone(),
                    s.state.clone(),
                    next,
                    s.next_firing.clone().unwrap_or_else(|| "-".into()),
                    s.flexible_window_minutes
                        .map_or_else(|| "off".to_owned(), |m| format!("{m} min")),
                ]
            })
            .collect();
        format!(
            "Schedules in group '{}'\n{}",
            self.group,
            table(header, body)
        )
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

pub async fn list(
    schedules: &dyn Schedules,
    settings: &ScheduleSettings,
    id: Option<&CampaignId>,
    now: DateTime<Utc>,
) -> Result<ScheduleList, CliError> {
    let mut listed = schedules
        .list()
        .await
        .map_err(|err| scheduler_error(err, &settings.group))?;
    if let Some(id) = id {
        listed.retain(|s| s.name == schedule_name(id));
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ScheduleList {
        group: settings.group.clone(),
        campaign_id: id.cloned(),
        schedules: listed
            .into_iter()
            .map(|info| ListedSchedule::from_info(info, now))
            .collect(),
    })
}

#[derive(Debug, Serialize)]
pub struct Unscheduled {
    pub campaign_id: CampaignId,
    pub schedule: String,
    pub group: String,
}

impl Report for Unscheduled {
    fn text(&self) -> String {
        format!(
            "Removed the schedule of campaign '{}' (schedule '{}' in group '{}'); runs already \
             started go on",
            self.campaign_id, self.schedule, self.group
        )
    }

    fn json(&self) -> serde_json::Value {
        to_json(self)
    }
}

pub async fn unschedule(
    schedules: &dyn Schedules,
    settings: &ScheduleSettings,
    id: &CampaignId,
) -> Result<Unscheduled, CliError> {
    let name = schedule_name(id);
    schedules
        .delete(&name)
        .await
        .map_err(|err| match err.kind {
            SchedulesErrorKind::NotFound => CliError::new(format!(
                "campaign '{id}' has no schedule in group '{}'",
                settings.group
            ))
            .hint("`hikyaku campaign schedules` lists the group's schedules"),
            _ => scheduler_error(err, &settings.group),
        })?;
    Ok(Unscheduled {
        campaign_id: id.clone(),
        schedule: name,
        group: settings.group.clone(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hikyaku_core::campaign::CampaignDefinition;
    use hikyaku_core::fakes::FakeCampaigns;
    use hikyaku_core::schedule::fake::FakeSchedules;

    use super::*;

    #[derive(Parser, Debug)]
    struct Wrapper {
        #[command(flatten)]
        args: ScheduleArgs,
    }

    fn args(list: &[&str]) -> ScheduleArgs {
        Wrapper::try_parse_from(std::iter::once("schedule").chain(list.iter().copied()))
            .unwrap()
            .args
    }

    fn settings() -> ScheduleSettings {
        ScheduleSettings {
            group: "hikyaku".into(),
            role_arn: Some("arn:aws:iam::123456789012:role/hikyaku-scheduler".into()),
            fanout_arn: Some(
                "arn:aws:lambda:us-east-1:123456789012:function:hikyaku-fanout".into(),
            ),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .into()
    }

    async fn campaigns() -> FakeCampaigns {
        let campaigns = FakeCampaigns::default();
        let definition = CampaignDefinition::from_toml_str(
            "id = \"winter\"\nlist = \"news\"\nsubject = \"Hi\"\nhtml = \"<p>Hi</p>\"\n\
             [from]\naddress = \"news@example.com\"\n",
            None,
        )
        .unwrap();
        campaigns.create(&definition).await.unwrap();
        campaigns
    }

    #[tokio::test]
    async fn a_campaign_is_scheduled_listed_and_unscheduled() {
        let campaigns = campaigns().await;
        let schedules = FakeSchedules {
            group: "hikyaku".into(),
            ..FakeSchedules::default()
        };
        let scheduled = schedule(
            &campaigns,
            &schedules,
            &settings(),
            &args(&["winter", "--at", "2026-12-24 09:00", "--tz", "Asia/Tokyo"]),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(scheduled.next_firing, "2026-12-24T00:00:00Z");
        assert_eq!(
            scheduled.next_firing_local,
            "2026-12-24 09:00:00 Asia/Tokyo"
        );
        assert_eq!(scheduled.action_after_completion, "DELETE");
        assert!(
            scheduled
                .text()
                .contains("at(2026-12-24T09:00:00) in Asia/Tokyo")
        );
        let json = scheduled.json();
        assert_eq!(json["schedule"], "winter");
        assert_eq!(json["expression"], "at(2026-12-24T09:00:00)");

        let again = schedule(
            &campaigns,
            &schedules,
            &settings(),
            &args(&["winter", "--rate", "1 day"]),
            now(),
        )
        .await
        .unwrap_err();
        assert!(again.message.contains("has a schedule already"), "{again}");
        assert!(again.hint.unwrap().contains("unschedule winter"));

        let listed = list(&schedules, &settings(), None, now()).await.unwrap();
        let json = listed.json();
        assert_eq!(json["schedules"][0]["campaign_id"], "winter");
        assert_eq!(json["schedules"][0]["next_firing"], "2026-12-24T00:00:00Z");
        assert_eq!(json["schedules"][0]["timezone"], "Asia/Tokyo");
        assert!(listed.text().contains("2026-12-24 09:00:00 Asia/Tokyo"));
        let other = CampaignId::parse("other").unwrap();
        let none = list(&schedules, &settings(), Some(&other), now())
            .await
            .unwrap();
        assert!(none.schedules.is_empty());
        assert!(none.text().contains("has no schedule"));

        let removed = unschedule(
            &schedules,
            &settings(),
            &CampaignId::parse("winter").unwrap(),
        )
        .await
        .unwrap();
        assert!(removed.text().contains("Removed the schedule"));
        let gone = unschedule(
            &schedules,
            &settings(),
            &CampaignId::parse("winter").unwrap(),
        )
        .await
        .unwrap_err();
        assert!(gone.message.contains("has no schedule"), "{gone}");
    }

    #[tokio::test]
    async fn bad_requests_are_refused_before_scheduler_is_called() {
        let campaigns = campaigns().await;
        let schedules = FakeSchedules::default();
        let refuse = |list: &'static [&'static str], settings: ScheduleSettings| {
            let campaigns = &campaigns;
            let schedules = &schedules;
            async move {
                schedule(campaigns, schedules, &settings, &args(list), now())
                    .await
                    .unwrap_err()
            }
        };
        let past = refuse(&["winter", "--at", "2026-11-30 09:00"], settings()).await;
        assert!(past.message.contains("in the past"), "{past}");
        let zone = refuse(
            &["winter", "--rate", "1 day", "--tz", "Asia/Tokio"],
            settings(),
        )
        .await;
        assert!(zone.message.contains("not a known time zone"), "{zone}");
        assert!(zone.hint.unwrap().contains("Asia/Tokyo"));
        let cron = refuse(&["winter", "--cron", "0 9 * * MON"], settings()).await;
        assert!(cron.message.contains("has 5 fields"), "{cron}");
        let rate = refuse(&["winter", "--rate", "1 days"], settings()).await;
        assert!(rate.message.contains("must say '1 day'"), "{rate}");
        let window = refuse(
            &["winter", "--rate", "1 day", "--flexible-window", "0"],
            settings(),
        )
        .await;
        assert!(window.message.contains("outside 1-1440"), "{window}");
        let unknown = refuse(&["nobody", "--rate", "1 day"], settings()).await;
        assert!(
            unknown.message.contains("'nobody' does not exist"),
            "{unknown}"
        );
        assert!(unknown.hint.unwrap().contains("campaign create"));
        let unset = refuse(
            &["winter", "--rate", "1 day"],
            ScheduleSettings {
                role_arn: None,
                ..settings()
            },
        )
        .await;
        assert!(
            unset
                .message
                .contains("HIKYAKU_SCHEDULER_ROLE_ARN is not set"),
            "{unset}"
        );
        assert!(unset.hint.unwrap().contains("SchedulerRoleArn"));
        let not_arn = refuse(
            &["winter", "--rate", "1 day"],
            ScheduleSettings {
                fanout_arn: Some("hikyaku-fanout".into()),
                ..settings()
            },
        )
        .await;
        assert!(not_arn.message.contains("is not an ARN"), "{not_arn}");
        assert!(schedules.schedules.lock().unwrap().is_empty());
    }

    #[test]
    fn one_of_at_cron_or_rate_is_required() {
        let parse = |list: &[&str]| {
            Wrapper::try_parse_from(std::iter::once("schedule").chain(list.iter().copied()))
        };
        assert!(parse(&["winter"]).is_err());
        assert!(parse(&["winter", "--at", "2026-12-24 09:00", "--rate", "1 day"]).is_err());
        let parsed = parse(&[
            "winter",
            "--cron",
            "0 9 ? * MON *",
            "--tz",
            "Asia/Tokyo",
            "--flexible-window",
            "15",
        ])
        .unwrap()
        .args;
        assert_eq!(parsed.cron.as_deref(), Some("0 9 ? * MON *"));
        assert_eq!(parsed.flexible_window, Some(15));
        assert_eq!(args(&["winter", "--rate", "1 day"]).tz, "UTC");
    }
}
