//! Campaign schedules on EventBridge Scheduler, in one schedule group: create, list (each
//! schedule read whole, since ListSchedules leaves out the expression and the target) and
//! delete. Scheduler's errors are classified by their type: `ConflictException`,
//! `ResourceNotFoundException`, `ValidationException`, and throttling or internal errors that
//! are worth trying again.

use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Target,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use chrono::{DateTime, Utc};
use hikyaku_core::schedule::{
    ScheduleInfo, ScheduleSpec, Schedules, SchedulesError, SchedulesErrorKind,
};

use crate::error::{service_message, status_of, status_retryable, transport_retryable};

/// The schedules of one group.
#[derive(Clone, Debug)]
pub struct SchedulerSchedules {
    client: Client,
    group: String,
}

fn schedules_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> SchedulesError
where
    E: std::error::Error + Send + Sync + 'static,
    aws_sdk_scheduler::Error: From<SdkError<E, HttpResponse>>,
{
    use aws_sdk_scheduler::Error as Scheduler;

    if let Some(retryable) = transport_retryable(&err) {
        return SchedulesError {
            operation,
            kind: SchedulesErrorKind::Other { retryable },
            message: DisplayErrorContext(&err).to_string(),
        };
    }
    let status = status_of(&err);
    let service = Scheduler::from(err);
    let kind = match &service {
        Scheduler::ConflictException(_) => SchedulesErrorKind::Conflict,
        Scheduler::ResourceNotFoundException(_) => SchedulesErrorKind::NotFound,
        Scheduler::ValidationException(_) => SchedulesErrorKind::Invalid,
        Scheduler::ThrottlingException(_) | Scheduler::InternalServerException(_) => {
            SchedulesErrorKind::Other { retryable: true }
        }
        Scheduler::ServiceQuotaExceededException(_) => {
            SchedulesErrorKind::Other { retryable: false }
        }
        _ => SchedulesErrorKind::Other {
            retryable: status_retryable(status),
        },
    };
    SchedulesError {
        operation,
        kind,
        message: service_message(&service),
    }
}

fn build_error(operation: &'static str, err: impl std::fmt::Display) -> SchedulesError {
    SchedulesError {
        operation,
        kind: SchedulesErrorKind::Invalid,
        message: err.to_string(),
    }
}

fn to_chrono(at: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    let at = at?;
    DateTime::from_timestamp(at.secs(), at.subsec_nanos())
}

impl SchedulerSchedules {
    /// The IAM actions of the AWS operations this adapter calls. Creating a schedule also needs
    /// `iam:PassRole` on the scheduler role, which no SDK call of its own shows. `OPERATIONS` is
    /// kept true by a test that reads this module's source.
    pub const OPERATIONS: &[&str] = &[
        "scheduler:CreateSchedule",
        "scheduler:DeleteSchedule",
        "scheduler:GetSchedule",
        "scheduler:ListSchedules",
    ];

    pub fn new(client: Client, group: impl Into<String>) -> SchedulerSchedules {
        SchedulerSchedules {
            client,
            group: group.into(),
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// GetSchedule, or none when it was deleted in the meantime.
    async fn get(&self, name: &str) -> Result<Option<ScheduleInfo>, SchedulesError> {
        let output = match self
            .client
            .get_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
        {
            Ok(output) => output,
            Err(err) => {
                let err = schedules_error("GetSchedule", err);
                return match err.kind {
                    SchedulesErrorKind::NotFound => Ok(None),
                    _ => Err(err),
                };
            }
        };
        let window = output.flexible_time_window();
        let flexible_window_minutes = window
            .filter(|w| w.mode() == &FlexibleTimeWindowMode::Flexible)
            .and_then(FlexibleTimeWindow::maximum_window_in_minutes)
            .and_then(|m| u32::try_from(m).ok());
        Ok(Some(ScheduleInfo {
            name: output.name().unwrap_or(name).to_owned(),
            group: output.group_name().unwrap_or(&self.group).to_owned(),
            expression: output.schedule_expression().unwrap_or_default().to_owned(),
            zone: output
                .schedule_expression_timezone()
                .unwrap_or("UTC")
                .to_owned(),
            state: output
                .state()
                .map_or("ENABLED", ScheduleState::as_str)
                .to_owned(),
            flexible_window_minutes,
            action_after_completion: output
                .action_after_completion()
                .map(|a| a.as_str().to_owned()),
            target_arn: output
                .target()
                .map(|t| t.arn().to_owned())
                .unwrap_or_default(),
            input: output.target().and_then(Target::input).map(str::to_owned),
            created: to_chrono(output.creation_date()),
            start: to_chrono(output.start_date()),
            end: to_chrono(output.end_date()),
        }))
    }
}

#[async_trait::async_trait]
impl Schedules for SchedulerSchedules {
    #[tracing::instrument(skip_all, fields(schedule = %spec.name, group = %self.group), err)]
    async fn create(&self, spec: &ScheduleSpec) -> Result<String, SchedulesError> {
        const OPERATION: &str = "CreateSchedule";
        let window = match spec.flexible_window_minutes {
            Some(minutes) => FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Flexible)
                .maximum_window_in_minutes(i32::try_from(minutes).unwrap_or(i32::MAX)),
            None => FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off),
        }
        .build()
        .map_err(|e| build_error(OPERATION, e))?;
        let target = Target::builder()
            .arn(&spec.target_arn)
            .role_arn(&spec.role_arn)
            .input(&spec.input)
            .build()
            .map_err(|e| build_error(OPERATION, e))?;
        let action = if spec.delete_after_completion {
            ActionAfterCompletion::Delete
        } else {
            ActionAfterCompletion::None
        };
        let output = self
            .client
            .create_schedule()
            .name(&spec.name)
            .group_name(&self.group)
            .schedule_expression(spec.expression.to_aws())
            .schedule_expression_timezone(spec.zone.name())
            .flexible_time_window(window)
            .target(target)
            .action_after_completion(action)
            .state(ScheduleState::Enabled)
            .description(format!("hikyaku campaign {}", spec.campaign))
            .send()
            .await
            .map_err(|err| schedules_error(OPERATION, err))?;
        Ok(output.schedule_arn().to_owned())
    }

    #[tracing::instrument(skip_all, fields(group = %self.group), err)]
    async fn list(&self) -> Result<Vec<ScheduleInfo>, SchedulesError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_schedules()
                .group_name(&self.group)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|err| schedules_error("ListSchedules", err))?;
            names.extend(
                page.schedules()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_owned)),
            );
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        names.sort();
        names.dedup();
        let mut schedules = Vec::with_capacity(names.len());
        for name in names {
            if let Some(info) = self.get(&name).await? {
                schedules.push(info);
            }
        }
        Ok(schedules)
    }

    #[tracing::instrument(skip_all, fields(schedule = name, group = %self.group), err)]
    async fn delete(&self, name: &str) -> Result<(), SchedulesError> {
        self.client
            .delete_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
            .map_err(|err| schedules_error("DeleteSchedule", err))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_scheduler::operation::create_schedule::{
        CreateScheduleError, CreateScheduleOutput,
    };
    use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError;
    use aws_sdk_scheduler::operation::get_schedule::{GetScheduleError, GetScheduleOutput};
    use aws_sdk_scheduler::operation::list_schedules::ListSchedulesOutput;
    use aws_sdk_scheduler::types::ScheduleSummary;
    use aws_sdk_scheduler::types::error::{
        ConflictException, ResourceNotFoundException, ThrottlingException, ValidationException,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use hikyaku_core::ids::CampaignId;
    use hikyaku_core::schedule::ScheduleRequest;

    macro_rules! scheduler_client {
        ($($rule:expr),* $(,)?) => {
            mock_client!(aws_sdk_scheduler, RuleMode::Sequential, [$($rule),*], |config| config
                .retry_config(aws_sdk_scheduler::config::retry::RetryConfig::disabled()))
        };
    }

    fn spec(request: ScheduleRequest) -> ScheduleSpec {
        let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .into();
        request
            .check(
                &CampaignId::parse("winter").unwrap(),
                "arn:aws:lambda:eu-west-1:111122223333:function:hikyaku-fanout",
                "arn:aws:iam::111122223333:role/hikyaku-scheduler",
                now,
            )
            .unwrap()
    }

    fn once() -> ScheduleSpec {
        spec(ScheduleRequest {
            at: Some("2026-12-24 09:00"),
            zone: Some("Asia/Tokyo"),
            ..ScheduleRequest::default()
        })
    }

    #[tokio::test]
    async fn a_one_time_schedule_is_created_in_the_group_and_deletes_itself() {
        let created = mock!(Client::create_schedule)
            .match_requests(|req| {
                let target = req.target().unwrap();
                let window = req.flexible_time_window().unwrap();
                req.name() == Some("winter")
                    && req.group_name() == Some("hikyaku")
                    && req.schedule_expression() == Some("at(2026-12-24T09:00:00)")
                    && req.schedule_expression_timezone() == Some("Asia/Tokyo")
                    && req.action_after_completion() == Some(&ActionAfterCompletion::Delete)
                    && window.mode() == &FlexibleTimeWindowMode::Off
                    && window.maximum_window_in_minutes().is_none()
                    && target.arn().ends_with(":function:hikyaku-fanout")
                    && target.role_arn().ends_with(":role/hikyaku-scheduler")
                    && target.input()
                        == Some(
                            r#"{"campaign_id":"winter","scheduled_time":"<aws.scheduler.scheduled-time>"}"#,
                        )
            })
            .then_output(|| {
                CreateScheduleOutput::builder()
                    .schedule_arn("arn:aws:scheduler:eu-west-1:111122223333:schedule/hikyaku/winter")
                    .build()
                    .unwrap()
            });
        let schedules = SchedulerSchedules::new(scheduler_client!(&created), "hikyaku");
        let arn = schedules.create(&once()).await.unwrap();
        assert!(arn.ends_with("schedule/hikyaku/winter"));
        assert_eq!(created.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_recurring_schedule_with_a_flexible_window_is_kept_after_it_fires() {
        let created = mock!(Client::create_schedule)
            .match_requests(|req| {
                let window = req.flexible_time_window().unwrap();
                req.schedule_expression() == Some("cron(0 9 ? * MON *)")
                    && req.action_after_completion() == Some(&ActionAfterCompletion::None)
                    && window.mode() == &FlexibleTimeWindowMode::Flexible
                    && window.maximum_window_in_minutes() == Some(30)
            })
            .then_output(|| {
                CreateScheduleOutput::builder()
                    .schedule_arn("arn:s")
                    .build()
                    .unwrap()
            });
        let schedules = SchedulerSchedules::new(scheduler_client!(&created), "hikyaku");
        let recurring = spec(ScheduleRequest {
            cron: Some("0 9 ? * MON *"),
            zone: Some("Asia/Tokyo"),
            flexible_window_minutes: Some(30),
            ..ScheduleRequest::default()
        });
        schedules.create(&recurring).await.unwrap();
        assert_eq!(created.num_calls(), 1);
    }

    #[tokio::test]
    async fn scheduler_errors_are_classified_by_type() {
        let conflict = mock!(Client::create_schedule).then_error(|| {
            CreateScheduleError::ConflictException(
                ConflictException::builder()
                    .message("Schedule winter already exists.")
                    .build()
                    .unwrap(),
            )
        });
        let invalid = mock!(Client::create_schedule).then_error(|| {
            CreateScheduleError::ValidationException(
                ValidationException::builder()
                    .message("Invalid Schedule Expression")
                    .build()
                    .unwrap(),
            )
        });
        let throttled = mock!(Client::create_schedule).then_error(|| {
            CreateScheduleError::ThrottlingException(
                ThrottlingException::builder()
                    .message("Rate exceeded")
                    .build()
                    .unwrap(),
            )
        });
        let missing = mock!(Client::delete_schedule).then_error(|| {
            DeleteScheduleError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("Schedule winter does not exist.")
                    .build()
                    .unwrap(),
            )
        });
        let schedules = SchedulerSchedules::new(
            scheduler_client!(&conflict, &invalid, &throttled, &missing),
            "hikyaku",
        );
        let err = schedules.create(&once()).await.unwrap_err();
        assert_eq!(err.kind, SchedulesErrorKind::Conflict);
        assert!(err.message.contains("already exists"), "{}", err.message);
        let err = schedules.create(&once()).await.unwrap_err();
        assert_eq!(err.kind, SchedulesErrorKind::Invalid);
        let err = schedules.create(&once()).await.unwrap_err();
        assert_eq!(err.kind, SchedulesErrorKind::Other { retryable: true });
        let err = schedules.delete("winter").await.unwrap_err();
        assert_eq!(err.kind, SchedulesErrorKind::NotFound);
        assert_eq!(err.operation, "DeleteSchedule");
    }

    #[tokio::test]
    async fn listing_reads_every_page_and_each_schedule_whole() {
        let first = mock!(Client::list_schedules)
            .match_requests(|req| req.group_name() == Some("hikyaku") && req.next_token().is_none())
            .then_output(|| {
                ListSchedulesOutput::builder()
                    .schedules(summary("winter"))
                    .next_token("page-2")
                    .build()
                    .unwrap()
            });
        let second = mock!(Client::list_schedules)
            .match_requests(|req| req.next_token() == Some("page-2"))
            .then_output(|| {
                ListSchedulesOutput::builder()
                    .schedules(summary("gone"))
                    .build()
                    .unwrap()
            });
        let gone = mock!(Client::get_schedule)
            .match_requests(|req| req.name() == Some("gone"))
            .then_error(|| {
                GetScheduleError::ResourceNotFoundException(
                    ResourceNotFoundException::builder()
                        .message("Schedule gone does not exist.")
                        .build()
                        .unwrap(),
                )
            });
        let winter = mock!(Client::get_schedule)
            .match_requests(|req| {
                req.name() == Some("winter") && req.group_name() == Some("hikyaku")
            })
            .then_output(|| {
                GetScheduleOutput::builder()
                    .name("winter")
                    .group_name("hikyaku")
                    .schedule_expression("cron(0 9 ? * MON *)")
                    .schedule_expression_timezone("Asia/Tokyo")
                    .state(ScheduleState::Enabled)
                    .flexible_time_window(
                        FlexibleTimeWindow::builder()
                            .mode(FlexibleTimeWindowMode::Flexible)
                            .maximum_window_in_minutes(15)
                            .build()
                            .unwrap(),
                    )
                    .target(
                        Target::builder()
                            .arn("arn:f")
                            .role_arn("arn:r")
                            .input(r#"{"campaign_id":"winter"}"#)
                            .build()
                            .unwrap(),
                    )
                    .creation_date(aws_smithy_types::DateTime::from_secs(1_790_000_000))
                    .build()
            });
        let schedules = SchedulerSchedules::new(
            scheduler_client!(&first, &second, &gone, &winter),
            "hikyaku",
        );
        let listed = schedules.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        let info = &listed[0];
        assert_eq!(info.name, "winter");
        assert_eq!(info.expression, "cron(0 9 ? * MON *)");
        assert_eq!(info.zone, "Asia/Tokyo");
        assert_eq!(info.state, "ENABLED");
        assert_eq!(info.flexible_window_minutes, Some(15));
        assert_eq!(info.target_arn, "arn:f");
        assert_eq!(info.campaign().as_deref(), Some("winter"));
        assert_eq!(info.created.unwrap().timestamp(), 1_790_000_000);
    }

    fn summary(name: &str) -> ScheduleSummary {
        ScheduleSummary::builder().name(name).build()
    }
}
