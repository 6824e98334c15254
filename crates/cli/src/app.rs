//! From a parsed command line to a report: the ports and settings a command runs with, and
//! the dispatch. `main` wires AWS in; the tests wire in the fakes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hikyaku_aws::config::env_opt;
use hikyaku_aws::setup::AwsSetupProbe;
use hikyaku_aws::sqs::{SqsDeadLetters, SqsJobQueue};
use hikyaku_aws::{DynamoStores, FunctionInvoker, SchedulerSchedules, Tables, load_sdk_config};
use hikyaku_core::doctor::SetupProbe;
use hikyaku_core::ids::RunRef;
use hikyaku_core::lifecycle::Action;
use hikyaku_core::ports::JobQueue;
use hikyaku_core::ports::{CampaignStore, ContactStore, Ledger, RunStore, SuppressionList};
use hikyaku_core::redrive::DeadLetters;
use hikyaku_core::report::LedgerReader;
use hikyaku_core::schedule::Schedules;

use crate::cli::{CampaignCommand, Command, ContactsCommand, RunTarget, SuppressionCommand};
use crate::commands::doctor::{self, StackNames};
use crate::commands::schedule::ScheduleSettings;
use crate::commands::{self, campaign, contacts, report, schedule, suppression};
use crate::error::CliError;
use crate::invoke::FunctionInvoke;
use crate::output::Report;
use crate::progress::Progress;

pub const FANOUT_FUNCTION_VAR: &str = "HIKYAKU_FANOUT_FUNCTION";
pub const DEFAULT_FANOUT_FUNCTION: &str = "hikyaku-fanout";
pub const DEFAULT_FEEDBACK_FUNCTION: &str = "hikyaku-feedback";

pub struct Ports<'a> {
    pub contacts: &'a dyn ContactStore,
    pub campaigns: &'a dyn CampaignStore,
    pub runs: &'a dyn RunStore,
    pub ledger: &'a dyn Ledger,
    pub suppressions: &'a dyn SuppressionList,
    pub invoker: &'a dyn FunctionInvoke,
    /// The whole ledger of a run, for reports.
    pub reader: &'a dyn LedgerReader,
    /// What `doctor` asks the environment.
    pub probe: &'a dyn SetupProbe,
    /// The dead-letter queue and the send queue, when configured.
    pub queues: Option<(&'a dyn DeadLetters, &'a dyn JobQueue)>,
    /// The campaign schedules of the stack's schedule group.
    pub schedules: &'a dyn Schedules,
}

pub struct Settings {
    pub fanout_function: String,
    /// How often `campaign start --wait` looks at the run.
    pub poll_interval: Duration,
    pub progress: Progress,
    pub now: fn() -> DateTime<Utc>,
    /// Where the stack's parts are, for `doctor`.
    pub stack: StackNames,
    pub schedule: ScheduleSettings,
}

impl Settings {
    pub fn from_env() -> Result<Settings, CliError> {
        let fanout_function = env_opt(FANOUT_FUNCTION_VAR)
            .map_err(|err| CliError::new(err.to_string()))?
            .unwrap_or_else(|| DEFAULT_FANOUT_FUNCTION.to_owned());
        let var = |name: &str| env_opt(name).map_err(|err| CliError::new(err.to_string()));
        let stack = StackNames {
            // Aws::from_env says what is wrong with them; `doctor` only skips them.
            tables: Tables::from_env().ok(),
            feedback_topic_arn: var("HIKYAKU_FEEDBACK_TOPIC_ARN")?,
            send_queue_url: var("HIKYAKU_SEND_QUEUE_URL")?,
            dead_letter_queue_url: var("HIKYAKU_SEND_DLQ_URL")?,
            feedback_function: Some(
                var("HIKYAKU_FEEDBACK_FUNCTION")?
                    .unwrap_or_else(|| DEFAULT_FEEDBACK_FUNCTION.to_owned()),
            ),
        };
        Ok(Settings {
            fanout_function,
            poll_interval: Duration::from_secs(1),
            progress: Progress::for_stderr(),
            now: Utc::now,
            stack,
            schedule: ScheduleSettings::from_env()?,
        })
    }
}

/// The AWS adapters, built from the environment.
pub struct Aws {
    stores: DynamoStores,
    invoker: FunctionInvoker,
    probe: AwsSetupProbe,
    queues: Option<(SqsDeadLetters, SqsJobQueue)>,
    schedules: SchedulerSchedules,
}

impl Aws {
    /// The adapters on the environment's AWS configuration and the queues and schedule group
    /// `settings` read from it.
    pub async fn from_env(settings: &Settings) -> Result<Aws, CliError> {
        let tables = Tables::from_env().map_err(|err| {
            CliError::new(err.to_string()).hint(
                "set the five HIKYAKU_*_TABLE variables (see `hikyaku --help`); locally: \
                 `make local-up`, then `set -a; . .local/stack.env; set +a`",
            )
        })?;
        let sdk = load_sdk_config().await;
        if sdk.region().is_none() {
            return Err(CliError::new("no AWS region is configured")
                .hint("set AWS_REGION (or a region in your AWS profile)"));
        }
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let stack = &settings.stack;
        let queues = match (&stack.dead_letter_queue_url, &stack.send_queue_url) {
            (Some(dlq), Some(send)) => Some((
                SqsDeadLetters::new(sqs.clone(), dlq.clone()),
                SqsJobQueue::new(sqs, send.clone()),
            )),
            _ => None,
        };
        Ok(Aws {
            queues,
            stores: DynamoStores::new(&dynamodb, &tables),
            invoker: FunctionInvoker::new(aws_sdk_lambda::Client::new(&sdk)),
            probe: AwsSetupProbe::new(&sdk),
            schedules: SchedulerSchedules::new(
                aws_sdk_scheduler::Client::new(&sdk),
                settings.schedule.group.clone(),
            ),
        })
    }

    pub fn ports(&self) -> Ports<'_> {
        Ports {
            contacts: &self.stores.contacts,
            campaigns: &self.stores.campaigns,
            runs: &self.stores.runs,
            ledger: &self.stores.ledger,
            suppressions: &self.stores.suppressions,
            invoker: &self.invoker,
            reader: &self.stores.ledger,
            probe: &self.probe,
            queues: self
                .queues
                .as_ref()
                .map(|(dlq, send)| (dlq as &dyn DeadLetters, send as &dyn JobQueue)),
            schedules: &self.schedules,
        }
    }
}

/// The checks a command makes before any AWS client exists (a schedule's expression, zone,
/// time and settings).
pub fn check_before_aws(command: &Command, settings: &Settings) -> Result<(), CliError> {
    if let Command::Campaign(CampaignCommand::Schedule(args)) = command {
        schedule::check(&settings.schedule, args, (settings.now)())?;
    }
    Ok(())
}

pub async fn dispatch(
    command: &Command,
    ports: &Ports<'_>,
    settings: &Settings,
    json: bool,
) -> Result<Box<dyn Report>, CliError> {
    let progress = &settings.progress;
    let now = (settings.now)();
    Ok(match command {
        Command::Contacts(ContactsCommand::Import { file, list, format }) => Box::new(
            contacts::import(ports.contacts, list, file, format.map(Into::into), progress).await?,
        ),
        Command::Contacts(ContactsCommand::List {
            list,
            segment,
            limit,
        }) => Box::new(
            contacts::list(ports.contacts, list, segment.as_deref(), *limit, progress).await?,
        ),
        Command::Campaign(CampaignCommand::Create { file }) => {
            Box::new(campaign::create(ports.campaigns, ports.contacts, file).await?)
        }
        Command::Campaign(CampaignCommand::Preview { id, contact, out }) => Box::new(
            campaign::preview(
                ports.campaigns,
                ports.contacts,
                ports.suppressions,
                id,
                contact,
                out.as_deref(),
            )
            .await?,
        ),
        Command::Campaign(CampaignCommand::Start {
            id,
            wait,
            timeout,
            force,
        }) => {
            if !*force {
                doctor::gate(ports.probe, ports.campaigns, &settings.stack, id).await?;
            }
            let mut report = campaign::start(
                ports.campaigns,
                ports.invoker,
                &settings.fanout_function,
                id,
                now,
                progress,
            )
            .await?;
            if *wait {
                let run = RunRef::new(id.clone(), report.run_id.clone());
                let options = campaign::WaitOptions {
                    interval: settings.poll_interval,
                    timeout: timeout.map(Duration::from_secs),
                };
                let status =
                    campaign::wait(ports.runs, ports.ledger, &run, options, progress).await?;
                let guardrails = match ports.campaigns.get(id).await? {
                    Some(definition) => definition.limits.guardrails(),
                    None => hikyaku_core::campaign::Limits::default().guardrails(),
                };
                report.status = Some(campaign::status_report(
                    status,
                    guardrails,
                    (settings.now)(),
                ));
            }
            Box::new(report)
        }
        Command::Campaign(CampaignCommand::ResendFailed { id, run }) => {
            Box::new(commands::lifecycle::resend_failed(ports.runs, ports.queues, id, run).await?)
        }
        Command::Doctor { campaign } => Box::new(
            doctor::doctor(
                ports.probe,
                ports.campaigns,
                &settings.stack,
                campaign.as_ref(),
            )
            .await?,
        ),
        Command::Campaign(CampaignCommand::Pause { target, reason }) => {
            lifecycle(
                ports,
                settings,
                target,
                Action::Pause,
                reason.as_deref(),
                now,
            )
            .await?
        }
        Command::Campaign(CampaignCommand::Resume { target }) => {
            lifecycle(ports, settings, target, Action::Resume, None, now).await?
        }
        Command::Campaign(CampaignCommand::Cancel { target, reason }) => {
            lifecycle(
                ports,
                settings,
                target,
                Action::Cancel,
                reason.as_deref(),
                now,
            )
            .await?
        }
        Command::Campaign(CampaignCommand::Status { id, run, watch }) => {
            let mut run = run.clone();
            if *watch {
                let record = campaign::find_run(ports.runs, id, run.as_ref()).await?;
                let options = campaign::WaitOptions {
                    interval: settings.poll_interval,
                    timeout: None,
                };
                campaign::wait(ports.runs, ports.ledger, &record.run, options, progress).await?;
                // The run watched, even if a newer one started meanwhile.
                run = Some(record.run.run_id);
            }
            Box::new(
                campaign::status(
                    ports.campaigns,
                    ports.runs,
                    ports.ledger,
                    id,
                    run.as_ref(),
                    (settings.now)(),
                )
                .await?,
            )
        }
        Command::Campaign(CampaignCommand::Runs { id, limit }) => Box::new(
            report::runs(
                ports.campaigns,
                ports.runs,
                ports.ledger,
                id,
                usize::try_from(*limit).unwrap_or(usize::MAX),
                now,
            )
            .await?,
        ),
        Command::Campaign(CampaignCommand::Report {
            id,
            run,
            format,
            out,
        }) => {
            let request = report::ReportRequest {
                run: run.as_ref(),
                format: format.map(Into::into),
                out: out.as_deref(),
                json,
            };
            Box::new(
                report::report(ports.campaigns, ports.runs, ports.reader, id, &request, now)
                    .await?,
            )
        }
        Command::Campaign(CampaignCommand::Recipients {
            id,
            run,
            state,
            csv,
        }) => {
            if json && *csv {
                return Err(
                    CliError::new("--json and --csv ask for two outputs at once")
                        .hint("keep one: --json for JSON, --csv for CSV"),
                );
            }
            Box::new(
                report::recipients(
                    ports.campaigns,
                    ports.runs,
                    ports.reader,
                    id,
                    run,
                    (*state).into(),
                    *csv,
                )
                .await?,
            )
        }
        Command::Campaign(CampaignCommand::Schedule(args)) => Box::new({
            if !args.force {
                doctor::gate(ports.probe, ports.campaigns, &settings.stack, &args.id).await?;
            }
            schedule::schedule(
                ports.campaigns,
                ports.schedules,
                &settings.schedule,
                args,
                now,
            )
            .await?
        }),
        Command::Campaign(CampaignCommand::Schedules(args)) => Box::new(
            schedule::list(ports.schedules, &settings.schedule, args.id.as_ref(), now).await?,
        ),
        Command::Campaign(CampaignCommand::Unschedule(args)) => {
            Box::new(schedule::unschedule(ports.schedules, &settings.schedule, &args.id).await?)
        }
        Command::Suppression(SuppressionCommand::Add { emails, reason }) => {
            Box::new(suppression::add(ports.suppressions, emails, reason, now).await?)
        }
        Command::Suppression(SuppressionCommand::Import { file, reason }) => {
            Box::new(suppression::import(ports.suppressions, file, reason, now, progress).await?)
        }
        Command::Suppression(SuppressionCommand::Remove { emails, kind }) => {
            Box::new(suppression::remove(ports.suppressions, emails, (*kind).into()).await?)
        }
        Command::Suppression(SuppressionCommand::List { kind }) => {
            Box::new(suppression::list(ports.suppressions, kind.map(Into::into)).await?)
        }
        Command::Suppression(SuppressionCommand::Export { out, kind }) => Box::new(
            suppression::export(ports.suppressions, kind.map(Into::into), out.as_deref()).await?,
        ),
    })
}

async fn lifecycle(
    ports: &Ports<'_>,
    settings: &Settings,
    target: &RunTarget,
    action: Action,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Box<dyn Report>, CliError> {
    Ok(Box::new(
        commands::lifecycle::change(
            ports.runs,
            ports.invoker,
            &settings.fanout_function,
            &target.id,
            target.run.as_ref(),
            action,
            reason,
            now,
        )
        .await?,
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hikyaku_core::fakes::{
        FakeCampaigns, FakeContacts, FakeLedger, FakeQueue, FakeRuns, FakeSuppressions,
    };
    use hikyaku_core::fanout::{FanoutPorts, FanoutRequest, FanoutSettings, fan_out};
    use hikyaku_core::ledger::Outcome;

    use super::*;
    use crate::cli::Cli;

    #[derive(Default)]
    struct Fakes {
        contacts: FakeContacts,
        campaigns: FakeCampaigns,
        runs: FakeRuns,
        ledger: FakeLedger,
        suppressions: FakeSuppressions,
        queue: FakeQueue,
        probe: hikyaku_core::fakes::FakeSetupProbe,
        schedules: hikyaku_core::schedule::fake::FakeSchedules,
    }

    /// The fan-out and, at once, a sender that sends to every recipient not suppressed.
    struct Pipeline<'a>(&'a Fakes);

    #[async_trait::async_trait]
    impl FunctionInvoke for Pipeline<'_> {
        async fn invoke(
            &self,
            function: &str,
            payload: &serde_json::Value,
        ) -> Result<serde_json::Value, String> {
            assert_eq!(function, "fanout-under-test");
            let f = self.0;
            let request: FanoutRequest =
                serde_json::from_value(payload.clone()).map_err(|e| e.to_string())?;
            let ports = FanoutPorts {
                campaigns: &f.campaigns,
                runs: &f.runs,
                contacts: &f.contacts,
                queue: &f.queue,
                account: &hikyaku_core::fakes::FakeGate::default(),
            };
            let outcome = fan_out(
                &ports,
                &request,
                &FanoutSettings::default(),
                "test",
                &|| Duration::from_secs(600),
                &Utc::now,
            )
            .await
            .map_err(|e| e.to_string())?;
            let run = request.run();
            for job in f.queue.take_jobs() {
                for r in job.recipients {
                    let at = Utc::now();
                    let suppressed = f.suppressions.check(std::slice::from_ref(&r.email), None);
                    if suppressed.await.unwrap().is_empty() {
                        f.ledger.claim(&run, &r.email, "t", at).await.unwrap();
                        let sent = Outcome::Sent {
                            ses_message_id: "m".into(),
                        };
                        f.ledger
                            .complete(&run, &r.email, "t", &sent, at)
                            .await
                            .unwrap();
                    } else {
                        f.ledger
                            .record_suppressed(&run, &r.email, "manual", at)
                            .await
                            .unwrap();
                    }
                }
            }
            Ok(serde_json::to_value(outcome).unwrap())
        }
    }

    async fn hikyaku(fakes: &Fakes, args: &[&str]) -> Result<Box<dyn Report>, CliError> {
        let cli = Cli::try_parse_from(std::iter::once("hikyaku").chain(args.iter().copied()))
            .expect("arguments parse");
        let invoker = Pipeline(fakes);
        let ports = Ports {
            contacts: &fakes.contacts,
            campaigns: &fakes.campaigns,
            runs: &fakes.runs,
            ledger: &fakes.ledger,
            suppressions: &fakes.suppressions,
            invoker: &invoker,
            reader: &fakes.ledger,
            probe: &fakes.probe,
            queues: None,
            schedules: &fakes.schedules,
        };
        let settings = Settings {
            fanout_function: "fanout-under-test".into(),
            poll_interval: Duration::from_millis(1),
            progress: Progress::hidden(),
            now: Utc::now,
            stack: StackNames::default(),
            schedule: ScheduleSettings::default(),
        };
        dispatch(&cli.command, &ports, &settings, cli.json).await
    }

    #[tokio::test]
    async fn a_campaign_goes_from_a_contact_file_to_a_finished_run() {
        let fakes = Fakes::default();
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("contacts.csv");
        std::fs::write(
            &csv,
            "email,first_name,mail_allowed,account_type\n\
             a@example.com,Aiko,1,2\nb@example.com,Ben,1,2\nc@example.com,Chloé,0,2\nbad,X,1,2\n",
        )
        .unwrap();
        let toml = dir.path().join("campaign.toml");
        std::fs::write(
            &toml,
            "id = \"demo\"\nlist = \"news\"\nsegment = \"mail_allowed == 1 && account_type == 2\"\n\
             subject = \"Hi {{first_name}}\"\nhtml = \"<p>Hello {{first_name}}</p>\"\n\
             [from]\naddress = \"news@example.com\"\n",
        )
        .unwrap();
        let csv = csv.to_str().unwrap();
        let toml = toml.to_str().unwrap();

        let import = hikyaku(&fakes, &["contacts", "import", csv, "--list", "news"])
            .await
            .unwrap();
        assert_eq!(import.json()["imported"], 3);
        assert!(import.failure().is_none());
        hikyaku(&fakes, &["campaign", "create", toml])
            .await
            .unwrap();
        hikyaku(
            &fakes,
            &["suppression", "add", "b@example.com", "--reason", "asked"],
        )
        .await
        .unwrap();
        let listed = hikyaku(
            &fakes,
            &[
                "contacts",
                "list",
                "--list",
                "news",
                "--segment",
                "mail_allowed == 1",
            ],
        )
        .await
        .unwrap();
        assert_eq!(listed.json()["selected"], 2);

        let started = hikyaku(&fakes, &["campaign", "start", "demo", "--wait", "--json"])
            .await
            .unwrap();
        assert!(started.failure().is_none());
        let json = started.json();
        assert_eq!(json["fanout"]["status"], "completed");
        assert_eq!(json["status"]["phase"], "completed");
        assert_eq!(json["status"]["run"]["counts"]["sent"], 1);
        assert_eq!(json["status"]["run"]["counts"]["suppressed"], 1);
        let text = started.text();
        assert!(text.contains("Started campaign 'demo'"), "{text}");
        assert!(text.contains("phase      completed"), "{text}");

        let status = hikyaku(&fakes, &["campaign", "status", "demo"])
            .await
            .unwrap();
        assert_eq!(status.json()["run_id"], json["run_id"]);
        let preview = hikyaku(
            &fakes,
            &["campaign", "preview", "demo", "--contact", "a@example.com"],
        )
        .await
        .unwrap();
        assert_eq!(preview.json()["subject"], "Hi Aiko");
        let suppressions = hikyaku(&fakes, &["suppression", "list"]).await.unwrap();
        assert_eq!(
            suppressions.json()["suppressions"][0]["email"],
            "b@example.com"
        );
    }

    #[tokio::test]
    async fn a_run_is_paused_resumed_and_cancelled_by_the_operator() {
        let fakes = Fakes::default();
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("campaign.toml");
        std::fs::write(
            &toml,
            "id = \"demo\"\nlist = \"news\"\nsubject = \"Hi\"\nhtml = \"<p>Hello</p>\"\n\
             [from]\naddress = \"news@example.com\"\n",
        )
        .unwrap();
        let csv = dir.path().join("contacts.csv");
        std::fs::write(&csv, "email\na@example.com\n").unwrap();
        let csv = csv.to_str().unwrap();
        hikyaku(&fakes, &["contacts", "import", csv, "--list", "news"])
            .await
            .unwrap();
        hikyaku(&fakes, &["campaign", "create", toml.to_str().unwrap()])
            .await
            .unwrap();
        let no_run = hikyaku(&fakes, &["campaign", "pause", "demo"]).await.err();
        let no_run = no_run.expect("no run yet").to_string();
        assert!(no_run.contains("has not run yet"), "{no_run}");

        let started = hikyaku(&fakes, &["campaign", "start", "demo"])
            .await
            .unwrap();
        let run_id = started.json()["run_id"].as_str().unwrap().to_owned();
        let paused = hikyaku(
            &fakes,
            &[
                "campaign", "pause", "demo", "--run", &run_id, "--reason", "typo",
            ],
        )
        .await
        .unwrap();
        let json = paused.json();
        assert_eq!(
            (json["state"].as_str(), json["changed"].as_bool()),
            (Some("paused"), Some(true))
        );
        assert_eq!(json["reason"], "typo");
        // Watching a paused run ends at once, with its status.
        let status = hikyaku(&fakes, &["campaign", "status", "demo", "--watch"])
            .await
            .unwrap();
        assert_eq!(status.json()["phase"], "paused");
        assert!(status.text().contains("typo"), "{}", status.text());

        let resumed = hikyaku(&fakes, &["campaign", "resume", "demo"])
            .await
            .unwrap();
        assert_eq!(resumed.json()["state"], "sending");
        assert_eq!(resumed.json()["was"], "paused");
        let cancelled = hikyaku(&fakes, &["campaign", "cancel", "demo"])
            .await
            .unwrap();
        assert!(
            cancelled.text().contains("cancelled"),
            "{}",
            cancelled.text()
        );
        let refused = hikyaku(&fakes, &["campaign", "resume", "demo"]).await.err();
        let refused = refused
            .expect("a cancelled run stays cancelled")
            .to_string();
        assert!(refused.contains("cannot be resumed"), "{refused}");
        assert!(refused.contains("campaign start demo"), "{refused}");
    }

    #[tokio::test]
    async fn a_start_is_refused_while_the_doctor_finds_a_blocking_failure() {
        let fakes = Fakes::default();
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("contacts.csv");
        std::fs::write(&csv, "email\na@example.com\n").unwrap();
        hikyaku(
            &fakes,
            &[
                "contacts",
                "import",
                csv.to_str().unwrap(),
                "--list",
                "news",
            ],
        )
        .await
        .unwrap();
        let toml = dir.path().join("campaign.toml");
        std::fs::write(
            &toml,
            "id = \"demo\"\nlist = \"news\"\nsubject = \"Hi\"\nhtml = \"<p>Hello</p>\"\n\
             [from]\naddress = \"news@example.com\"\n",
        )
        .unwrap();
        hikyaku(&fakes, &["campaign", "create", toml.to_str().unwrap()])
            .await
            .unwrap();
        // Nothing answered: every check is skipped and nothing blocks.
        let report = hikyaku(&fakes, &["doctor", "--campaign", "demo"])
            .await
            .unwrap();
        assert!(report.failure().is_none());
        assert!(report.text().contains("skipped"), "{}", report.text());

        *fakes.probe.account.lock().unwrap() = Some(hikyaku_core::budget::AccountSnapshot {
            max_send_rate: 14.0,
            max_24_hour_send: 50_000.0,
            sent_last_24_hours: 0.0,
            sending_enabled: false,
            enforcement_status: "HEALTHY".into(),
            production_access: true,
            fetched_at: Utc::now(),
        });
        let report = hikyaku(&fakes, &["doctor", "--json"]).await.unwrap();
        assert_eq!(report.json()["blocking_failures"], 1);
        let failure = report.failure().expect("a blocking failure").to_string();
        assert!(failure.contains("sending is disabled"), "{failure}");
        let refused = hikyaku(&fakes, &["campaign", "start", "demo"]).await.err();
        let refused = refused.expect("start refused").to_string();
        assert!(
            refused.contains("SES account: sending is disabled"),
            "{refused}"
        );
        assert!(refused.contains("--force"), "{refused}");
        assert!(
            fakes.runs.runs.lock().unwrap().is_empty(),
            "no run was started"
        );
        let forced = hikyaku(&fakes, &["campaign", "start", "demo", "--force"]).await;
        assert!(forced.is_ok());
        assert_eq!(fakes.runs.runs.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_bad_schedule_is_refused_before_any_aws_client_exists() {
        let cli = Cli::try_parse_from([
            "hikyaku",
            "campaign",
            "schedule",
            "demo",
            "--cron",
            "0 9 * * MON",
        ])
        .unwrap();
        let settings = Settings {
            fanout_function: "f".into(),
            poll_interval: Duration::from_millis(1),
            progress: Progress::hidden(),
            now: Utc::now,
            stack: StackNames::default(),
            schedule: ScheduleSettings::default(),
        };
        let err = check_before_aws(&cli.command, &settings).unwrap_err();
        assert!(err.message.contains("has 5 fields"), "{err}");
        let other = Cli::try_parse_from(["hikyaku", "suppression", "list"]).unwrap();
        assert!(check_before_aws(&other.command, &settings).is_ok());
    }

    #[test]
    fn the_fanout_function_defaults_to_hikyaku_fanout() {
        // The variable is not set in the test environment.
        if std::env::var_os(FANOUT_FUNCTION_VAR).is_none() {
            assert_eq!(
                Settings::from_env().unwrap().fanout_function,
                "hikyaku-fanout"
            );
        }
    }
}
