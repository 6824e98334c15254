//! EventBridge Scheduler's firing of due schedules, which moto stores but never fires.
//!
//! Every poll the loop reads the schedule group (ListSchedules, then GetSchedule for each, on
//! moto) and, for each enabled schedule, works out its firings with the same rules the CLI
//! shows (`hikyaku_core::schedule`): every firing due since the last poll invokes the target
//! asynchronously (InvocationType `Event`, as Scheduler invokes Lambda) with the schedule's
//! input, `<aws.scheduler.scheduled-time>` replaced by the firing's scheduled time in ISO 8601
//! UTC to the second. Each (schedule, time) fires once: the loop keeps, per schedule, the last
//! time it fired; a failed invocation is tried again at the next poll, as Scheduler retries.
//! A one-time schedule with `ActionAfterCompletion: DELETE` is deleted after it fired.
//!
//! What it does not play: flexible time windows (a firing goes at the start of its window),
//! retry policies, dead-letter queues and targets other than Lambda. A schedule created while
//! the loop was stopped is fired for what fell due since its creation, but no further back than
//! the catch-up time before the loop started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hikyaku_aws::FunctionInvoker;
use hikyaku_core::schedule::{Expression, ScheduleInfo, Schedules, input_for_firing, parse_zone};
use serde::Serialize;

/// Invokes a schedule's target.
#[async_trait::async_trait]
pub trait TargetInvoker: Send + Sync {
    /// Queues an asynchronous invocation of `function` (a name) with `payload`.
    async fn invoke_async(&self, function: &str, payload: &serde_json::Value)
    -> Result<(), String>;
}

#[async_trait::async_trait]
impl TargetInvoker for FunctionInvoker {
    async fn invoke_async(
        &self,
        function: &str,
        payload: &serde_json::Value,
    ) -> Result<(), String> {
        FunctionInvoker::invoke_async(self, function, payload)
            .await
            .map_err(|err| err.to_string())
    }
}

/// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]` → `<name>`; a plain name
/// stays as it is. `cargo lambda watch` knows its functions by name only.
pub fn function_name(target_arn: &str) -> &str {
    match target_arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "lambda", _, _, "function", name, ..] => name,
        _ => target_arn,
    }
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// How often the group is read.
    pub poll_interval: Duration,
    /// How far before the loop's start a due firing is still fired.
    pub catch_up: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            poll_interval: Duration::from_secs(1),
            catch_up: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SchedulerStats {
    pub polls: u64,
    pub fired: u64,
    pub failed_invocations: u64,
    pub deleted: u64,
    pub unreadable: u64,
}

/// The firing loop over one group's schedules.
pub struct SchedulerLoop<'a> {
    schedules: &'a dyn Schedules,
    target: &'a dyn TargetInvoker,
    config: SchedulerConfig,
    started: DateTime<Utc>,
    /// Per schedule (name and creation time: a schedule made again is a new one), the last
    /// time fired or looked past.
    cursors: Mutex<HashMap<String, Tracked>>,
    stats: Mutex<SchedulerStats>,
}

#[derive(Clone, Copy, Debug)]
struct Tracked {
    cursor: DateTime<Utc>,
    /// A one-time schedule that fired: nothing more to do but delete it, if it asks for that.
    completed: bool,
}

/// At most this many firings of one schedule per poll (a rate of a minute after a long stop).
const MAX_FIRINGS_PER_POLL: usize = 100;

impl<'a> SchedulerLoop<'a> {
    pub fn new(
        schedules: &'a dyn Schedules,
        target: &'a dyn TargetInvoker,
        config: SchedulerConfig,
        started: DateTime<Utc>,
    ) -> SchedulerLoop<'a> {
        SchedulerLoop {
            schedules,
            target,
            config,
            started,
            cursors: Mutex::new(HashMap::new()),
            stats: Mutex::new(SchedulerStats::default()),
        }
    }

    pub fn stats(&self) -> SchedulerStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, change: impl FnOnce(&mut SchedulerStats)) {
        change(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Polls until `shutdown` completes.
    pub async fn run_until(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(err) = self.poll(Utc::now()).await {
                tracing::warn!(error = %err, "reading the schedule group failed");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// One look at the group at `now`: fires what is due.
    pub async fn poll(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(), hikyaku_core::schedule::SchedulesError> {
        self.count(|s| s.polls += 1);
        let listed = self.schedules.list().await?;
        let keys: Vec<String> = listed.iter().map(key).collect();
        self.cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keys.contains(k));
        for info in listed.iter().filter(|s| s.state == "ENABLED") {
            self.fire_due(info, now).await;
        }
        Ok(())
    }

    async fn fire_due(&self, info: &ScheduleInfo, now: DateTime<Utc>) {
        let parsed = parse_zone(&info.zone)
            .and_then(|zone| Ok((zone, Expression::parse(&info.expression)?)));
        let (zone, expression) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                self.count(|s| s.unreadable += 1);
                tracing::warn!(schedule = %info.name, error = %err, "schedule not understood; skipped");
                return;
            }
        };
        let key = key(info);
        let catch_up = chrono::Duration::from_std(self.config.catch_up).unwrap_or_default();
        let floor = self.started - catch_up;
        let mut tracked = {
            let cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
            cursors.get(&key).copied().unwrap_or_else(|| {
                // Just before its creation, so a firing at the creation second is not lost.
                let created = info.created.unwrap_or(now) - chrono::Duration::seconds(1);
                Tracked {
                    cursor: created.max(floor),
                    completed: false,
                }
            })
        };
        let window = info.window();
        for _ in 0..MAX_FIRINGS_PER_POLL {
            if tracked.completed {
                break;
            }
            let Some(at) = expression.next_after(zone, &window, tracked.cursor) else {
                break;
            };
            if at > now || !self.fire(info, at).await {
                break;
            }
            tracked.cursor = at;
            tracked.completed = expression.is_one_time();
        }
        self.cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, tracked);
        if tracked.completed && info.action_after_completion.as_deref() == Some("DELETE") {
            // Tried again at every poll until it is gone.
            match self.schedules.delete(&info.name).await {
                Ok(()) => {
                    self.count(|s| s.deleted += 1);
                    tracing::info!(schedule = %info.name, "one-time schedule deleted after it fired");
                }
                Err(err) => {
                    tracing::warn!(schedule = %info.name, error = %err, "deleting the fired schedule failed");
                }
            }
        }
    }

    /// Invokes the target for the firing at `at`; false if the invocation failed (it is tried
    /// again at the next poll).
    async fn fire(&self, info: &ScheduleInfo, at: DateTime<Utc>) -> bool {
        let input = input_for_firing(info.input.as_deref().unwrap_or("{}"), at);
        let payload: serde_json::Value = match serde_json::from_str(&input) {
            Ok(payload) => payload,
            Err(err) => {
                // Scheduler requires well-formed JSON for Lambda targets; nothing to retry.
                self.count(|s| s.unreadable += 1);
                tracing::warn!(schedule = %info.name, error = %err, "the schedule's input is not JSON; firing dropped");
                return true;
            }
        };
        let function = function_name(&info.target_arn);
        match self.target.invoke_async(function, &payload).await {
            Ok(()) => {
                self.count(|s| s.fired += 1);
                tracing::info!(schedule = %info.name, function, scheduled_time = %at, "fired");
                true
            }
            Err(err) => {
                self.count(|s| s.failed_invocations += 1);
                tracing::warn!(schedule = %info.name, function, error = %err, "invoking the target failed; trying again");
                false
            }
        }
    }
}

fn key(info: &ScheduleInfo) -> String {
    format!(
        "{}#{}",
        info.name,
        info.created.map_or(0, |c| c.timestamp_millis())
    )
}

#[cfg(test)]
mod tests {
    use hikyaku_core::ids::CampaignId;
    use hikyaku_core::schedule::ScheduleRequest;
    use hikyaku_core::schedule::fake::FakeSchedules;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(String, serde_json::Value)>>,
        fail: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl TargetInvoker for Recorder {
        async fn invoke_async(
            &self,
            function: &str,
            payload: &serde_json::Value,
        ) -> Result<(), String> {
            if *self.fail.lock().unwrap() {
                return Err("throttled".into());
            }
            self.calls
                .lock()
                .unwrap()
                .push((function.to_owned(), payload.clone()));
            Ok(())
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    async fn schedule(schedules: &FakeSchedules, request: ScheduleRequest<'_>, created: &str) {
        let spec = request
            .check(
                &CampaignId::parse("winter").unwrap(),
                "arn:aws:lambda:us-east-1:123456789012:function:hikyaku-fanout",
                "arn:aws:iam::123456789012:role/hikyaku-scheduler",
                utc(created),
            )
            .unwrap();
        schedules.create(&spec).await.unwrap();
        schedules.schedules.lock().unwrap()[0].created = Some(utc(created));
    }

    #[test]
    fn function_names_come_from_arns() {
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:hikyaku-fanout"),
            "hikyaku-fanout"
        );
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:hikyaku-fanout:live"),
            "hikyaku-fanout"
        );
        assert_eq!(function_name("hikyaku-fanout"), "hikyaku-fanout");
    }

    #[tokio::test]
    async fn a_one_time_schedule_fires_once_with_its_time_and_is_deleted() {
        let schedules = FakeSchedules::default();
        schedule(
            &schedules,
            ScheduleRequest {
                at: Some("2026-12-24 09:00:05"),
                zone: Some("Asia/Tokyo"),
                ..ScheduleRequest::default()
            },
            "2026-12-24T00:00:00Z",
        )
        .await;
        let target = Recorder::default();
        let scheduler = SchedulerLoop::new(
            &schedules,
            &target,
            SchedulerConfig::default(),
            utc("2026-12-24T00:00:00Z"),
        );
        scheduler.poll(utc("2026-12-24T00:00:04Z")).await.unwrap();
        assert!(target.calls.lock().unwrap().is_empty(), "not due yet");
        *target.fail.lock().unwrap() = true;
        scheduler.poll(utc("2026-12-24T00:00:05Z")).await.unwrap();
        assert_eq!(scheduler.stats().failed_invocations, 1);
        assert_eq!(
            schedules.schedules.lock().unwrap().len(),
            1,
            "kept to retry"
        );
        *target.fail.lock().unwrap() = false;
        scheduler.poll(utc("2026-12-24T00:00:06Z")).await.unwrap();
        scheduler.poll(utc("2026-12-24T00:00:07Z")).await.unwrap();
        let calls = target.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].0, "hikyaku-fanout");
        assert_eq!(
            calls[0].1,
            serde_json::json!({"campaign_id": "winter", "scheduled_time": "2026-12-24T00:00:05Z"})
        );
        assert!(schedules.schedules.lock().unwrap().is_empty(), "deleted");
        assert_eq!(scheduler.stats().deleted, 1);
    }

    #[tokio::test]
    async fn a_recurring_schedule_fires_each_time_once_and_stays() {
        let schedules = FakeSchedules::default();
        schedule(
            &schedules,
            ScheduleRequest {
                rate: Some("1 minute"),
                ..ScheduleRequest::default()
            },
            "2026-12-24T00:00:00Z",
        )
        .await;
        let target = Recorder::default();
        let scheduler = SchedulerLoop::new(
            &schedules,
            &target,
            SchedulerConfig::default(),
            utc("2026-12-24T00:00:00Z"),
        );
        for now in [
            "2026-12-24T00:00:30Z",
            "2026-12-24T00:01:00Z",
            "2026-12-24T00:01:00Z",
            "2026-12-24T00:01:30Z",
            "2026-12-24T00:03:10Z",
        ] {
            scheduler.poll(utc(now)).await.unwrap();
        }
        let times: Vec<String> = target
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p["scheduled_time"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            times,
            [
                "2026-12-24T00:01:00Z",
                "2026-12-24T00:02:00Z",
                "2026-12-24T00:03:00Z"
            ]
        );
        assert_eq!(schedules.schedules.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn disabled_and_unreadable_schedules_do_not_fire() {
        let schedules = FakeSchedules::default();
        schedule(
            &schedules,
            ScheduleRequest {
                rate: Some("1 minute"),
                ..ScheduleRequest::default()
            },
            "2026-12-24T00:00:00Z",
        )
        .await;
        schedules.schedules.lock().unwrap()[0].state = "DISABLED".into();
        let target = Recorder::default();
        let scheduler = SchedulerLoop::new(
            &schedules,
            &target,
            SchedulerConfig::default(),
            utc("2026-12-24T00:00:00Z"),
        );
        scheduler.poll(utc("2026-12-24T00:05:00Z")).await.unwrap();
        {
            let mut listed = schedules.schedules.lock().unwrap();
            listed[0].state = "ENABLED".into();
            listed[0].expression = "cron(0 9 * * *)".into();
        }
        scheduler.poll(utc("2026-12-24T00:06:00Z")).await.unwrap();
        assert!(target.calls.lock().unwrap().is_empty());
        assert_eq!(scheduler.stats().unreadable, 1);
    }
}
