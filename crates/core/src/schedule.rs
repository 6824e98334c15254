//! Campaign schedules: the rules of EventBridge Scheduler's expressions as hikyaku uses them.
//!
//! - **Expressions**: `at(yyyy-mm-ddThh:mm:ss)` (one time), `rate(value unit)` and
//!   `cron(minutes hours day-of-month month day-of-week year)`, each read in the schedule's
//!   IANA time zone (`ScheduleExpressionTimezone`).
//! - **Next firing**, computed here for all three: `at` is its time in the zone; `rate` fires
//!   every period from its start (`StartDate`, else the schedule's creation), the first time one
//!   period after it; `cron` through the `croner` crate in Quartz mode (weekdays 1-7 = SUN-SAT,
//!   `0/15` steps), with every field EventBridge allows: `,` `-` `*` `/`, `?` in day-of-month or
//!   day-of-week, `L` and `W` in day-of-month, `L` and `#` in day-of-week, and the year.
//!   Across a daylight saving change a cron time that does not exist fires just after the gap,
//!   and one that exists twice fires once, at its first occurrence.
//! - **Names**: one schedule per campaign, named exactly as the campaign. A campaign id
//!   (letters, digits, `-`, `_`, at most 64) is always a valid schedule name
//!   (`[0-9a-zA-Z-_.]`, 1-64).
//! - **Target input**: `{"campaign_id": ID, "scheduled_time": "<aws.scheduler.scheduled-time>"}`;
//!   Scheduler substitutes the firing's scheduled time, which the fan-out makes the run id, so a
//!   schedule fired twice for one time (Scheduler's and Lambda's retries) is one run.
//!
//! Everything here is checked before any AWS call: a bad expression, an unknown zone, a time
//! in the past or a cron that never fires again is a [`ScheduleError`] with the reason and a
//! hint.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::ids::CampaignId;

/// What Scheduler puts in a target's input for the time the firing was scheduled for.
pub const SCHEDULED_TIME_PLACEHOLDER: &str = "<aws.scheduler.scheduled-time>";

/// The longest flexible time window Scheduler allows, in minutes.
pub const MAX_FLEXIBLE_WINDOW_MINUTES: u32 = 1440;

/// Years EventBridge's cron accepts.
const CRON_YEARS: std::ops::RangeInclusive<i32> = 1970..=2199;

/// A schedule request or expression refused, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleError {
    pub message: String,
    pub hint: String,
}

impl ScheduleError {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> ScheduleError {
        ScheduleError {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScheduleError {}

const AT_HINT: &str = "give a local date and time, e.g. --at \"2026-12-24 09:00\" \
                       (YYYY-MM-DD HH:MM[:SS], read in --tz)";
const RATE_HINT: &str = "give a number and a unit: --rate \"1 day\", \"12 hours\", \
                         \"30 minutes\" (1 takes the singular)";
const CRON_HINT: &str = "six fields: minutes hours day-of-month month day-of-week year, with \
                         '?' in one of the two day fields, e.g. --cron \"0 9 ? * MON *\" \
                         (Mondays 09:00) or \"0 9 1 * ? *\" (the 1st of every month)";
const ZONE_HINT: &str = "use an IANA time zone name, e.g. --tz Asia/Tokyo, Europe/Berlin, \
                         America/New_York or UTC";

/// An IANA time zone, as Scheduler's `ScheduleExpressionTimezone`.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| {
        ScheduleError::new(
            format!("'{name}' is not a known time zone"),
            ZONE_HINT.to_owned(),
        )
    })
}

/// The unit of a `rate(...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateUnit {
    Minute,
    Hour,
    Day,
}

impl RateUnit {
    fn seconds(self) -> i64 {
        match self {
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86_400,
        }
    }

    fn word(self, plural: bool) -> &'static str {
        match (self, plural) {
            (RateUnit::Minute, false) => "minute",
            (RateUnit::Minute, true) => "minutes",
            (RateUnit::Hour, false) => "hour",
            (RateUnit::Hour, true) => "hours",
            (RateUnit::Day, false) => "day",
            (RateUnit::Day, true) => "days",
        }
    }
}

/// `rate(value unit)`: every `value` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub value: u32,
    pub unit: RateUnit,
}

impl Rate {
    /// `"1 day"`, `"12 hours"`, `"30 minutes"`.
    pub fn parse(text: &str) -> Result<Rate, ScheduleError> {
        let bad = |why: &str| ScheduleError::new(format!("rate '{text}' {why}"), RATE_HINT);
        let mut words = text.split_whitespace();
        let (Some(value), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad("is not a number and a unit"));
        };
        let value: u32 = value
            .parse()
            .map_err(|_| bad(&format!("has '{value}' where a whole number is expected")))?;
        if value == 0 {
            return Err(bad("must be at least 1"));
        }
        let (unit, plural) = match unit.to_ascii_lowercase().as_str() {
            "minute" => (RateUnit::Minute, false),
            "minutes" => (RateUnit::Minute, true),
            "hour" => (RateUnit::Hour, false),
            "hours" => (RateUnit::Hour, true),
            "day" => (RateUnit::Day, false),
            "days" => (RateUnit::Day, true),
            other => {
                return Err(bad(&format!(
                    "has the unit '{other}'; Scheduler knows minutes, hours and days"
                )));
            }
        };
        if plural != (value > 1) {
            return Err(bad(&format!("must say '{value} {}'", unit.word(value > 1))));
        }
        Ok(Rate { value, unit })
    }

    pub fn period(self) -> Duration {
        Duration::seconds(i64::from(self.value) * self.unit.seconds())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value, self.unit.word(self.value > 1))
    }
}

/// `cron(...)`: EventBridge's six fields, and the parsed pattern that finds its firings.
#[derive(Clone, Debug)]
pub struct CronExpression {
    fields: String,
    /// Boxed: the parsed pattern is large, the other expressions are small.
    pattern: Box<croner::Cron>,
}

impl PartialEq for CronExpression {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl CronExpression {
    /// Six fields: minutes hours day-of-month month day-of-week year.
    pub fn parse(text: &str) -> Result<CronExpression, ScheduleError> {
        let bad = |why: String| ScheduleError::new(format!("cron '{text}' {why}"), CRON_HINT);
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(bad(format!(
                "has {} fields; EventBridge's cron has six",
                fields.len()
            )));
        }
        let [minutes, hours, dom, month, dow, year] = [0, 1, 2, 3, 4, 5].map(|i| fields[i]);
        const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
        const MONTHS: [&str; 12] = [
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ];
        for (name, field, allowed, names) in [
            ("minutes", minutes, ",-*/", &[][..]),
            ("hours", hours, ",-*/", &[][..]),
            ("day-of-month", dom, ",-*/?LW", &[][..]),
            ("month", month, ",-*/", &MONTHS[..]),
            ("day-of-week", dow, ",-*?L#", &DAYS[..]),
            ("year", year, ",-*/", &[][..]),
        ] {
            let mut rest = field.to_ascii_uppercase();
            for known in names {
                rest = rest.replace(known, "");
            }
            if let Some(c) = rest
                .chars()
                .find(|c| !(c.is_ascii_digit() || allowed.contains(*c)))
            {
                return Err(bad(format!(
                    "has '{c}' in {name}, which allows only numbers{} and {}",
                    if names.is_empty() { "" } else { ", names" },
                    allowed
                        .chars()
                        .map(String::from)
                        .collect::<Vec<_>>()
                        .join(" ")
                )));
            }
            if field.contains('?') && field != "?" {
                return Err(bad(format!("has '?' in {name} with other values")));
            }
        }
        if (dom == "?") == (dow == "?") {
            return Err(bad(
                "must have '?' in exactly one of day-of-month and day-of-week (EventBridge \
                 does not combine the two)"
                    .to_owned(),
            ));
        }
        if dow.contains('#') && dow.contains(',') {
            return Err(bad(
                "has a list with '#' in day-of-week; '#' allows one expression only".to_owned(),
            ));
        }
        for y in numbers(year) {
            let y = i32::try_from(y).unwrap_or(i32::MAX);
            if !CRON_YEARS.contains(&y) {
                return Err(bad(format!("has the year {y}, outside 1970-2199")));
            }
        }
        for (name, field, range) in [
            ("minutes", minutes, 0..=59),
            ("hours", hours, 0..=23),
            ("day-of-month", dom, 1..=31),
            ("month", month, 1..=12),
            ("day-of-week", dow, 1..=7),
        ] {
            for value in numbers(field) {
                if !range.contains(&value) {
                    return Err(bad(format!(
                        "has {value} in {name}, outside {}-{}",
                        range.start(),
                        range.end()
                    )));
                }
            }
        }
        // `L` alone in day-of-week is the last day of the week, Saturday (7).
        let dow = if dow.eq_ignore_ascii_case("L") {
            "7"
        } else {
            dow
        };
        // Seconds at 0 in front; `?` is any day; DOM and DOW are never both restricted here.
        let croner_text = format!("0 {minutes} {hours} {dom} {month} {dow} {year}");
        let pattern = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .year(croner::parser::Year::Required)
            .alternative_weekdays(true)
            .sloppy_ranges(true)
            .build()
            .parse(&croner_text)
            .map_err(|err| bad(format!("is not valid: {err}")))?;
        Ok(CronExpression {
            fields: fields.join(" "),
            pattern: Box::new(pattern),
        })
    }

    /// The six fields, single-spaced.
    pub fn fields(&self) -> &str {
        &self.fields
    }

    /// The first firing strictly after `after`, read in `zone`.
    fn next_after(&self, zone: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&zone);
        self.pattern
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }
}

/// The numbers written in a cron field (step sizes excluded), for range checks.
fn numbers(field: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for part in field.split(',') {
        let head = part.split(['/', '#']).next().unwrap_or_default();
        for bound in head.split('-') {
            let digits: String = bound.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                found.push(n);
            }
        }
    }
    found
}

/// A schedule expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expression {
    /// One time, a local date and time in the schedule's zone.
    At(NaiveDateTime),
    Rate(Rate),
    Cron(CronExpression),
}

impl Expression {
    /// `--at` of the CLI: `YYYY-MM-DD HH:MM[:SS]` (or with `T`), local to the zone.
    pub fn at(text: &str) -> Result<Expression, ScheduleError> {
        let text = text.trim();
        let normal = text.replacen('T', " ", 1);
        for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
            if let Ok(at) = NaiveDateTime::parse_from_str(&normal, format) {
                return Ok(Expression::At(at));
            }
        }
        if NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
            return Err(ScheduleError::new(
                format!("'{text}' has a date but no time"),
                AT_HINT,
            ));
        }
        Err(ScheduleError::new(
            format!("'{text}' is not a date and time"),
            AT_HINT,
        ))
    }

    /// Scheduler's own form: `at(...)`, `rate(...)` or `cron(...)`.
    pub fn parse(text: &str) -> Result<Expression, ScheduleError> {
        let text = text.trim();
        let inner = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(')'))
        };
        if let Some(at) = inner("at(") {
            return NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S")
                .map(Expression::At)
                .map_err(|_| {
                    ScheduleError::new(format!("'{text}' is not at(yyyy-mm-ddThh:mm:ss)"), AT_HINT)
                });
        }
        if let Some(rate) = inner("rate(") {
            return Rate::parse(rate).map(Expression::Rate);
        }
        if let Some(cron) = inner("cron(") {
            return CronExpression::parse(cron).map(Expression::Cron);
        }
        Err(ScheduleError::new(
            format!("'{text}' is not a schedule expression"),
            "Scheduler's expressions are at(yyyy-mm-ddThh:mm:ss), rate(value unit) and \
             cron(minutes hours day-of-month month day-of-week year)",
        ))
    }

    /// Scheduler's `ScheduleExpression`.
    pub fn to_aws(&self) -> String {
        match self {
            Expression::At(at) => format!("at({})", at.format("%Y-%m-%dT%H:%M:%S")),
            Expression::Rate(rate) => format!("rate({rate})"),
            Expression::Cron(cron) => format!("cron({})", cron.fields),
        }
    }

    pub fn is_one_time(&self) -> bool {
        matches!(self, Expression::At(_))
    }

    /// The first firing strictly after `after`, or none (a one-time schedule that passed, a
    /// cron whose years are over, the end of `window`).
    pub fn next_after(
        &self,
        zone: Tz,
        window: &Window,
        after: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let next = match self {
            Expression::At(at) => Some(local_to_utc(zone, *at)?).filter(|t| *t > after),
            Expression::Rate(rate) => {
                let anchor = window.start.or(window.created)?;
                let period = rate.period().num_seconds();
                let elapsed = (after - anchor).num_seconds();
                let periods = if elapsed < 0 { 1 } else { elapsed / period + 1 };
                Some(anchor + Duration::seconds(periods * period))
            }
            Expression::Cron(cron) => {
                let from = match window.start {
                    Some(start) if start > after => start - Duration::seconds(1),
                    _ => after,
                };
                cron.next_after(zone, from)
            }
        }?;
        match (self, window.end) {
            (Expression::At(_), _) | (_, None) => Some(next),
            (_, Some(end)) => Some(next).filter(|t| *t <= end),
        }
    }
}

/// A local time in `zone` as UTC: the earlier of two in a fall-back hour, none in a gap.
pub fn local_to_utc(zone: Tz, at: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&at) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

/// When a schedule's firings may happen: its creation (a rate's anchor without a start), and
/// its `StartDate` and `EndDate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub created: Option<DateTime<Utc>>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// Scheduler's `FlexibleTimeWindow`: none (`OFF`) or up to this many minutes (`FLEXIBLE`).
pub fn flexible_window(minutes: Option<u32>) -> Result<Option<u32>, ScheduleError> {
    match minutes {
        Some(m) if !(1..=MAX_FLEXIBLE_WINDOW_MINUTES).contains(&m) => Err(ScheduleError::new(
            format!("a flexible window of {m} minutes is outside 1-1440"),
            "give --flexible-window between 1 and 1440 minutes, or leave it out for an exact time",
        )),
        other => Ok(other),
    }
}

/// The schedule of a campaign is named as the campaign.
pub fn schedule_name(campaign: &CampaignId) -> String {
    campaign.as_str().to_owned()
}

/// The target input of a campaign's schedule.
pub fn target_input(campaign: &CampaignId) -> String {
    serde_json::json!({
        "campaign_id": campaign.as_str(),
        "scheduled_time": SCHEDULED_TIME_PLACEHOLDER,
    })
    .to_string()
}

/// What Scheduler sends the target for a firing scheduled at `at`: the input with the
/// placeholder replaced by the time in ISO 8601 UTC to the second (`2026-12-24T00:00:00Z`).
pub fn input_for_firing(input: &str, at: DateTime<Utc>) -> String {
    input.replace(
        SCHEDULED_TIME_PLACEHOLDER,
        &at.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// A schedule to create, all checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub campaign: CampaignId,
    pub expression: Expression,
    pub zone: Tz,
    pub flexible_window_minutes: Option<u32>,
    /// The fan-out function's ARN, and the role Scheduler invokes it with.
    pub target_arn: String,
    pub role_arn: String,
    pub input: String,
    /// One-time schedules delete themselves after they fired.
    pub delete_after_completion: bool,
    /// The first firing, as computed here.
    pub next_firing: DateTime<Utc>,
}

/// What the operator asked for, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct ScheduleRequest<'a> {
    pub at: Option<&'a str>,
    pub cron: Option<&'a str>,
    pub rate: Option<&'a str>,
    pub zone: Option<&'a str>,
    pub flexible_window_minutes: Option<u32>,
}

impl ScheduleRequest<'_> {
    /// Checks the request at `now`: exactly one expression, a known zone, a first firing in
    /// the future, a window Scheduler accepts.
    pub fn check(
        &self,
        campaign: &CampaignId,
        target_arn: &str,
        role_arn: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleSpec, ScheduleError> {
        let zone = parse_zone(self.zone.unwrap_or("UTC"))?;
        let expression = match (self.at, self.cron, self.rate) {
            (Some(at), None, None) => Expression::at(at)?,
            (None, Some(cron), None) => Expression::Cron(CronExpression::parse(cron)?),
            (None, None, Some(rate)) => Expression::Rate(Rate::parse(rate)?),
            _ => {
                return Err(ScheduleError::new(
                    "say when: one of --at, --cron or --rate",
                    "--at \"2026-12-24 09:00\" once, --cron \"0 9 ? * MON *\" or --rate \"1 day\" \
                     repeatedly",
                ));
            }
        };
        let flexible_window_minutes = flexible_window(self.flexible_window_minutes)?;
        let window = Window {
            created: Some(now),
            ..Window::default()
        };
        let next_firing = match (&expression, expression.next_after(zone, &window, now)) {
            (_, Some(next)) => next,
            (Expression::At(at), None) => {
                return Err(match local_to_utc(zone, *at) {
                    None => ScheduleError::new(
                        format!("{at} does not exist in {zone} (the clocks skip it)"),
                        "pick a time outside the daylight saving gap",
                    ),
                    Some(utc) => ScheduleError::new(
                        format!(
                            "{} in {zone} ({}) is in the past",
                            at.format("%Y-%m-%d %H:%M:%S"),
                            utc.to_rfc3339_opts(SecondsFormat::Secs, true)
                        ),
                        format!(
                            "give a time after now ({} in {zone}); `campaign start` starts a run now",
                            now.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S")
                        ),
                    ),
                });
            }
            (_, None) => {
                return Err(ScheduleError::new(
                    format!("{} never fires after now", expression.to_aws()),
                    "check its year field",
                ));
            }
        };
        Ok(ScheduleSpec {
            name: schedule_name(campaign),
            campaign: campaign.clone(),
            delete_after_completion: expression.is_one_time(),
            expression,
            zone,
            flexible_window_minutes,
            target_arn: target_arn.to_owned(),
            role_arn: role_arn.to_owned(),
            input: target_input(campaign),
            next_firing,
        })
    }
}

/// A schedule as Scheduler keeps it (GetSchedule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduleInfo {
    pub name: String,
    pub group: String,
    pub expression: String,
    pub zone: String,
    /// `ENABLED` or `DISABLED`.
    pub state: String,
    pub flexible_window_minutes: Option<u32>,
    /// `DELETE` or `NONE`.
    pub action_after_completion: Option<String>,
    pub target_arn: String,
    pub input: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl ScheduleInfo {
    pub fn window(&self) -> Window {
        Window {
            created: self.created,
            start: self.start,
            end: self.end,
        }
    }

    /// The next firing after `now` as computed here, or why there is none.
    pub fn next_firing(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        let zone = parse_zone(&self.zone)?;
        let expression = Expression::parse(&self.expression)?;
        if self.state != "ENABLED" {
            return Ok(None);
        }
        Ok(expression.next_after(zone, &self.window(), now))
    }

    /// The campaign the schedule's input names.
    pub fn campaign(&self) -> Option<String> {
        let input: serde_json::Value = serde_json::from_str(self.input.as_deref()?).ok()?;
        input["campaign_id"].as_str().map(str::to_owned)
    }
}

/// Why Scheduler refused, by the type of its error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulesErrorKind {
    /// `ConflictException`: a schedule of that name exists.
    Conflict,
    /// `ResourceNotFoundException`: the schedule, or its group, does not exist.
    NotFound,
    /// `ValidationException`: Scheduler refused the request's values.
    Invalid,
    /// Anything else; `retryable` says whether trying again may work.
    Other { retryable: bool },
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{operation} failed: {message}")]
pub struct SchedulesError {
    pub operation: &'static str,
    pub kind: SchedulesErrorKind,
    pub message: String,
}

/// The campaign schedules of one schedule group.
#[async_trait::async_trait]
pub trait Schedules: Send + Sync {
    /// Creates the schedule; its ARN.
    async fn create(&self, spec: &ScheduleSpec) -> Result<String, SchedulesError>;
    /// Every schedule of the group, each as GetSchedule tells it.
    async fn list(&self) -> Result<Vec<ScheduleInfo>, SchedulesError>;
    async fn delete(&self, name: &str) -> Result<(), SchedulesError>;
}

/// In-memory schedules, for tests.
#[cfg(any(test, feature = "fakes"))]
pub mod fake {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct FakeSchedules {
        pub group: String,
        pub schedules: Mutex<Vec<ScheduleInfo>>,
    }

    #[async_trait::async_trait]
    impl Schedules for FakeSchedules {
        async fn create(&self, spec: &ScheduleSpec) -> Result<String, SchedulesError> {
            let mut schedules = self.schedules.lock().unwrap();
            if schedules.iter().any(|s| s.name == spec.name) {
                return Err(SchedulesError {
                    operation: "CreateSchedule",
                    kind: SchedulesErrorKind::Conflict,
                    message: format!("Schedule {} already exists.", spec.name),
                });
            }
            schedules.push(ScheduleInfo {
                name: spec.name.clone(),
                group: self.group.clone(),
                expression: spec.expression.to_aws(),
                zone: spec.zone.name().to_owned(),
                state: "ENABLED".into(),
                flexible_window_minutes: spec.flexible_window_minutes,
                action_after_completion: Some(
                    if spec.delete_after_completion {
                        "DELETE"
                    } else {
                        "NONE"
                    }
                    .into(),
                ),
                target_arn: spec.target_arn.clone(),
                input: Some(spec.input.clone()),
                created: Some(Utc::now()),
                start: None,
                end: None,
            });
            Ok(format!("arn:fake:schedule/{}/{}", self.group, spec.name))
        }

        async fn list(&self) -> Result<Vec<ScheduleInfo>, SchedulesError> {
            Ok(self.schedules.lock().unwrap().clone())
        }

        async fn delete(&self, name: &str) -> Result<(), SchedulesError> {
            let mut schedules = self.schedules.lock().unwrap();
            let before = schedules.len();
            schedules.retain(|s| s.name != name);
            if schedules.len() == before {
                return Err(SchedulesError {
                    operation: "DeleteSchedule",
                    kind: SchedulesErrorKind::NotFound,
                    message: format!("Schedule {name} does not exist."),
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    fn cron(text: &str) -> Expression {
        Expression::Cron(CronExpression::parse(text).unwrap_or_else(|e| panic!("{text}: {e}")))
    }

    fn next(expr: &Expression, zone: &str, after: &str) -> Option<String> {
        expr.next_after(parse_zone(zone).unwrap(), &Window::default(), utc(after))
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    fn campaign() -> CampaignId {
        CampaignId::parse("winter-newsletter").unwrap()
    }

    #[test]
    fn an_at_time_is_read_in_its_zone() {
        let at = Expression::at("2026-12-24 09:00").unwrap();
        assert_eq!(at.to_aws(), "at(2026-12-24T09:00:00)");
        assert_eq!(
            next(&at, "Asia/Tokyo", "2026-12-01T00:00:00Z").as_deref(),
            Some("2026-12-24T00:00:00Z")
        );
        assert_eq!(
            next(&at, "Europe/Berlin", "2026-12-01T00:00:00Z").as_deref(),
            Some("2026-12-24T08:00:00Z")
        );
        assert_eq!(next(&at, "Asia/Tokyo", "2026-12-24T00:00:00Z"), None);
        assert_eq!(
            Expression::at("2026-12-24T09:00:30").unwrap().to_aws(),
            "at(2026-12-24T09:00:30)"
        );
        for bad in [
            "2026-12-24",
            "tomorrow",
            "2026-13-01 09:00",
            "2026-12-24 25:00",
        ] {
            let err = Expression::at(bad).unwrap_err();
            assert!(err.hint.contains("YYYY-MM-DD HH:MM"), "{bad}: {err:?}");
        }
        assert!(
            Expression::at("2026-12-24")
                .unwrap_err()
                .message
                .contains("no time")
        );
    }

    #[test]
    fn unknown_zones_are_refused_with_examples() {
        let err = parse_zone("Mars/Olympus").unwrap_err();
        assert!(
            err.message
                .contains("'Mars/Olympus' is not a known time zone")
        );
        assert!(err.hint.contains("Asia/Tokyo"));
        assert_eq!(parse_zone("Asia/Tokyo").unwrap(), chrono_tz::Asia::Tokyo);
    }

    #[test]
    fn rates_say_their_unit_as_scheduler_wants_it() {
        assert_eq!(Rate::parse("1 day").unwrap().to_string(), "1 day");
        assert_eq!(
            Rate::parse("12 hours").unwrap(),
            Rate {
                value: 12,
                unit: RateUnit::Hour
            }
        );
        for (bad, why) in [
            ("1 days", "must say '1 day'"),
            ("5 minute", "must say '5 minutes'"),
            ("0 days", "at least 1"),
            ("2 weeks", "unit 'weeks'"),
            ("daily", "not a number and a unit"),
            ("x days", "whole number"),
        ] {
            let err = Rate::parse(bad).unwrap_err();
            assert!(err.message.contains(why), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn a_rate_fires_every_period_after_its_start() {
        let rate = Expression::Rate(Rate::parse("6 hours").unwrap());
        let window = Window {
            created: Some(utc("2026-01-01T10:00:00Z")),
            ..Window::default()
        };
        let next = |after: &str| rate.next_after(chrono_tz::UTC, &window, utc(after));
        assert_eq!(
            next("2026-01-01T10:00:00Z"),
            Some(utc("2026-01-01T16:00:00Z"))
        );
        assert_eq!(
            next("2026-01-01T15:59:59Z"),
            Some(utc("2026-01-01T16:00:00Z"))
        );
        assert_eq!(
            next("2026-01-01T16:00:00Z"),
            Some(utc("2026-01-01T22:00:00Z"))
        );
        assert_eq!(
            next("2025-12-31T00:00:00Z"),
            Some(utc("2026-01-01T16:00:00Z"))
        );
        let ended = Window {
            end: Some(utc("2026-01-01T20:00:00Z")),
            ..window
        };
        assert_eq!(
            rate.next_after(chrono_tz::UTC, &ended, utc("2026-01-01T16:00:00Z")),
            None
        );
        // Without a start or creation there is no anchor.
        assert_eq!(
            rate.next_after(
                chrono_tz::UTC,
                &Window::default(),
                utc("2026-01-01T00:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn cron_weekdays_run_from_sunday_1_to_saturday_7_in_the_zone() {
        // Mondays at 09:00 in Tokyo: 2026-12-07 is a Monday.
        let mondays = cron("0 9 ? * MON *");
        assert_eq!(
            next(&mondays, "Asia/Tokyo", "2026-12-04T00:00:00Z").as_deref(),
            Some("2026-12-07T00:00:00Z")
        );
        assert_eq!(
            next(&cron("0 9 ? * 2 *"), "Asia/Tokyo", "2026-12-04T00:00:00Z"),
            next(&mondays, "Asia/Tokyo", "2026-12-04T00:00:00Z")
        );
        // 1 is Sunday: 2026-12-06.
        assert_eq!(
            next(&cron("30 18 ? * 1 *"), "UTC", "2026-12-04T00:00:00Z").as_deref(),
            Some("2026-12-06T18:30:00Z")
        );
        // Every 15 minutes from minute 0, written the EventBridge way.
        assert_eq!(
            next(&cron("0/15 * * * ? *"), "UTC", "2026-12-04T10:07:00Z").as_deref(),
            Some("2026-12-04T10:15:00Z")
        );
        assert_eq!(
            next(&cron("0 12 ? * wed *"), "UTC", "2026-12-04T00:00:00Z").as_deref(),
            Some("2026-12-09T12:00:00Z")
        );
        assert_eq!(
            next(&cron("0 18 ? * MON-FRI *"), "UTC", "2026-12-05T00:00:00Z").as_deref(),
            Some("2026-12-07T18:00:00Z")
        );
    }

    #[test]
    fn cron_knows_last_nearest_weekday_nth_weekday_and_years() {
        // The last day of February 2028 (a leap year).
        assert_eq!(
            next(&cron("0 8 L 2 ? *"), "UTC", "2028-01-01T00:00:00Z").as_deref(),
            Some("2028-02-29T08:00:00Z")
        );
        // The weekday nearest the 15th: 2026-08-15 is a Saturday, so Friday the 14th.
        assert_eq!(
            next(&cron("0 8 15W 8 ? *"), "UTC", "2026-08-01T00:00:00Z").as_deref(),
            Some("2026-08-14T08:00:00Z")
        );
        // The second Tuesday (3#2) of December 2026: the 8th.
        assert_eq!(
            next(&cron("0 9 ? 12 3#2 *"), "UTC", "2026-12-01T00:00:00Z").as_deref(),
            Some("2026-12-08T09:00:00Z")
        );
        // The last Friday (6L) of December 2026: the 25th.
        assert_eq!(
            next(&cron("0 9 ? 12 6L *"), "UTC", "2026-12-01T00:00:00Z").as_deref(),
            Some("2026-12-25T09:00:00Z")
        );
        // The last weekday of December 2026: Thursday the 31st.
        assert_eq!(
            next(&cron("0 9 LW 12 ? *"), "UTC", "2026-12-01T00:00:00Z").as_deref(),
            Some("2026-12-31T09:00:00Z")
        );
        // `L` alone in day-of-week: the last day of the week, Saturday (2026-12-05).
        assert_eq!(
            next(&cron("0 9 ? * L *"), "UTC", "2026-12-01T00:00:00Z").as_deref(),
            Some("2026-12-05T09:00:00Z")
        );
        // The fifth Friday: none in December 2026, so 2027-01-29.
        assert_eq!(
            next(&cron("0 9 ? * 6#5 *"), "UTC", "2026-12-01T00:00:00Z").as_deref(),
            Some("2027-01-29T09:00:00Z")
        );
        // Only in 2030.
        assert_eq!(
            next(&cron("0 0 1 1 ? 2030"), "UTC", "2026-12-01T00:00:00Z").as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        // Years that are over never fire.
        assert_eq!(
            next(&cron("0 0 1 1 ? 2020-2025"), "UTC", "2026-12-01T00:00:00Z"),
            None
        );
    }

    #[test]
    fn cron_follows_the_zone_across_daylight_saving() {
        // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
        let daily = cron("0 9 * * ? *");
        assert_eq!(
            next(&daily, "Europe/Berlin", "2026-03-28T12:00:00Z").as_deref(),
            Some("2026-03-29T07:00:00Z")
        );
        assert_eq!(
            next(&daily, "Europe/Berlin", "2026-03-27T12:00:00Z").as_deref(),
            Some("2026-03-28T08:00:00Z")
        );
    }

    #[test]
    fn malformed_crons_are_refused_with_the_reason() {
        for (bad, why) in [
            ("0 9 * * *", "has 5 fields"),
            (
                "0 9 * * MON *",
                "exactly one of day-of-month and day-of-week",
            ),
            ("0 9 ? * ? *", "exactly one of day-of-month and day-of-week"),
            ("60 9 * * ? *", "60 in minutes, outside 0-59"),
            ("0 24 * * ? *", "24 in hours"),
            ("0 9 ? * 0 *", "0 in day-of-week, outside 1-7"),
            ("0 9 ? * 8 *", "8 in day-of-week"),
            ("0 9 32 * ? *", "32 in day-of-month"),
            ("0 9 * 13 ? *", "13 in month"),
            ("0 9 * * ? 1969", "1969, outside 1970-2199"),
            ("0 9 ? * 2#1,3#1 *", "'#' allows one expression only"),
            ("0 9 1? * ? *", "'?' in day-of-month with other values"),
            ("0 9 L * ? * extra", "has 7 fields"),
            ("0 9 ! * ? *", "'!' in day-of-month"),
            ("0 9 ? * 1W *", "'W' in day-of-week"),
            ("0 9 ? FOO ? *", "'F' in month"),
            ("0 9 1 * ? 20X0", "'X' in year"),
        ] {
            let err = CronExpression::parse(bad).unwrap_err();
            assert!(err.message.contains(why), "{bad}: {}", err.message);
            assert!(err.hint.contains("six fields"), "{bad}");
        }
    }

    #[test]
    fn expressions_read_back_from_scheduler() {
        for text in [
            "at(2026-12-24T09:00:00)",
            "rate(1 day)",
            "cron(0 9 ? * MON *)",
        ] {
            assert_eq!(Expression::parse(text).unwrap().to_aws(), text);
        }
        assert!(Expression::parse("every(1 day)").is_err());
        assert!(Expression::parse("at(2026-12-24 09:00)").is_err());
    }

    #[test]
    fn a_request_becomes_a_checked_schedule() {
        let now = utc("2026-12-01T00:00:00Z");
        let request = ScheduleRequest {
            at: Some("2026-12-24 09:00"),
            zone: Some("Asia/Tokyo"),
            ..ScheduleRequest::default()
        };
        let spec = request.check(&campaign(), "arn:f", "arn:r", now).unwrap();
        assert_eq!(spec.name, "winter-newsletter");
        assert_eq!(spec.expression.to_aws(), "at(2026-12-24T09:00:00)");
        assert_eq!(spec.zone.name(), "Asia/Tokyo");
        assert!(spec.delete_after_completion);
        assert_eq!(spec.next_firing, utc("2026-12-24T00:00:00Z"));
        assert_eq!(spec.flexible_window_minutes, None);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&spec.input).unwrap(),
            serde_json::json!({
                "campaign_id": "winter-newsletter",
                "scheduled_time": "<aws.scheduler.scheduled-time>"
            })
        );

        let recurring = ScheduleRequest {
            cron: Some("0 9 ? * MON *"),
            zone: Some("Asia/Tokyo"),
            flexible_window_minutes: Some(15),
            ..ScheduleRequest::default()
        };
        let spec = recurring.check(&campaign(), "arn:f", "arn:r", now).unwrap();
        assert!(!spec.delete_after_completion);
        assert_eq!(spec.flexible_window_minutes, Some(15));
        assert_eq!(spec.next_firing, utc("2026-12-07T00:00:00Z"));
    }

    #[test]
    fn requests_in_the_past_in_a_gap_or_without_a_time_are_refused() {
        let now = utc("2026-12-24T01:00:00Z");
        let check = |request: ScheduleRequest| {
            request
                .check(&campaign(), "arn:f", "arn:r", now)
                .unwrap_err()
        };
        let past = check(ScheduleRequest {
            at: Some("2026-12-24 09:00"),
            zone: Some("Asia/Tokyo"),
            ..ScheduleRequest::default()
        });
        assert!(past.message.contains("is in the past"), "{past:?}");
        assert!(
            past.hint.contains("2026-12-24 10:00:00 in Asia/Tokyo"),
            "{past:?}"
        );
        let gap = check(ScheduleRequest {
            at: Some("2027-03-28 02:30"),
            zone: Some("Europe/Berlin"),
            ..ScheduleRequest::default()
        });
        assert!(gap.message.contains("does not exist"), "{gap:?}");
        let none = check(ScheduleRequest::default());
        assert!(none.message.contains("one of --at, --cron or --rate"));
        let two = check(ScheduleRequest {
            at: Some("2027-01-01 00:00"),
            rate: Some("1 day"),
            ..ScheduleRequest::default()
        });
        assert!(two.message.contains("one of"));
        let over = check(ScheduleRequest {
            cron: Some("0 0 1 1 ? 2025"),
            ..ScheduleRequest::default()
        });
        assert!(over.message.contains("never fires"), "{over:?}");
        let window = check(ScheduleRequest {
            rate: Some("1 day"),
            flexible_window_minutes: Some(1441),
            ..ScheduleRequest::default()
        });
        assert!(window.message.contains("outside 1-1440"));
        let zone = check(ScheduleRequest {
            rate: Some("1 day"),
            zone: Some("Tokyo"),
            ..ScheduleRequest::default()
        });
        assert!(zone.message.contains("not a known time zone"));
    }

    #[test]
    fn a_firing_gives_the_fanout_its_request_and_one_run_per_scheduled_time() {
        let input = target_input(&campaign());
        let at = utc("2026-12-24T00:00:00Z");
        let fired = input_for_firing(&input, at);
        assert_eq!(
            fired,
            r#"{"campaign_id":"winter-newsletter","scheduled_time":"2026-12-24T00:00:00Z"}"#
        );
        let request: crate::fanout::FanoutRequest = serde_json::from_str(&fired).unwrap();
        assert_eq!(request.run().run_id.as_str(), "20261224T000000Z");
        let again: crate::fanout::FanoutRequest =
            serde_json::from_str(&input_for_firing(&input, at)).unwrap();
        assert_eq!(again.run(), request.run());
    }

    #[test]
    fn a_campaign_id_is_always_a_valid_schedule_name() {
        let longest = CampaignId::parse(&"a_-9".repeat(16)).unwrap();
        let name = schedule_name(&longest);
        assert!(name.len() <= 64);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
    }

    #[test]
    fn a_listed_schedule_tells_its_next_firing_and_campaign() {
        let info = ScheduleInfo {
            name: "winter-newsletter".into(),
            group: "hikyaku".into(),
            expression: "cron(0 9 ? * MON *)".into(),
            zone: "Asia/Tokyo".into(),
            state: "ENABLED".into(),
            flexible_window_minutes: None,
            action_after_completion: None,
            target_arn: "arn:f".into(),
            input: Some(target_input(&campaign())),
            created: Some(utc("2026-11-01T00:00:00Z")),
            start: None,
            end: None,
        };
        assert_eq!(
            info.next_firing(utc("2026-12-04T00:00:00Z")).unwrap(),
            Some(utc("2026-12-07T00:00:00Z"))
        );
        assert_eq!(info.campaign().as_deref(), Some("winter-newsletter"));
        let disabled = ScheduleInfo {
            state: "DISABLED".into(),
            ..info.clone()
        };
        assert_eq!(
            disabled.next_firing(utc("2026-12-04T00:00:00Z")).unwrap(),
            None
        );
        let foreign = ScheduleInfo {
            zone: "Nowhere/Land".into(),
            ..info
        };
        assert!(foreign.next_firing(utc("2026-12-04T00:00:00Z")).is_err());
    }
}
