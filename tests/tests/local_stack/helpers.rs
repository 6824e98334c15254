//! The harness: clients for the running local stack (read from `.local/stack.env`), seeded
//! scenarios with addresses of their own, a sender pump per test, and counts taken at the SES
//! emulator's own `GET /store`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use hikyaku_aws::dynamodb::{
    DynamoBudget, DynamoCampaigns, DynamoContacts, DynamoLedger, DynamoRuns, DynamoSuppressions,
};
use hikyaku_aws::lambda::FunctionInvoker;
use hikyaku_aws::ses::SesAccount;
use hikyaku_aws::sqs::SqsJobQueue;
use hikyaku_core::budget::{Budget, BudgetSettings};
use hikyaku_core::campaign::CampaignDefinition;
use hikyaku_core::contact::{AttrValue, Attributes, Contact, ListSchema};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::feedback::FeedbackCounts;
use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
use hikyaku_core::ports::{
    CampaignStore, ContactStore, Ledger, RunStore, Suppression, SuppressionList,
};
use hikyaku_core::run::{RunRecord, RunStatus};
use hikyaku_local::pump::{Pump, PumpConfig, PumpStats};
use hikyaku_local::ses_proxy::{Faults, SesProxyClient};
use hikyaku_local::setup::StackResources;
use serde_json::{Value, json};

pub const SENDER: &str = "hikyaku-sender";
pub const FANOUT: &str = "hikyaku-fanout";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

pub struct Stack {
    pub vars: BTreeMap<String, String>,
    pub resources: StackResources,
    pub sdk: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub invoker: FunctionInvoker,
    pub contacts: DynamoContacts,
    pub campaigns: DynamoCampaigns,
    pub runs: DynamoRuns,
    pub ledger: DynamoLedger,
    pub suppressions: DynamoSuppressions,
    pub queue: SqsJobQueue,
    /// The send budget's item, and SES GetAccount (answered by the SES proxy).
    pub budget: DynamoBudget,
    pub ses_account: SesAccount,
    pub budget_settings: BudgetSettings,
    pub proxy: SesProxyClient,
    pub ses_store_url: String,
    pub watch_url: String,
    http: reqwest::Client,
}

fn var<'a>(vars: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    vars.get(name)
        .unwrap_or_else(|| panic!("{name} missing from the stack environment"))
}

impl Stack {
    /// Connects to the stack `make local-up` started; its environment file says where.
    pub async fn connect() -> Stack {
        let path = std::env::var("HIKYAKU_STACK_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".local/stack.env"));
        let vars = hikyaku_local::env_file::read(&path).unwrap_or_else(|err| {
            panic!(
                "{}: {err}; the integration tests need the local stack: run them with `make test`",
                path.display()
            )
        });
        let resources = StackResources::from_env_map(&vars).expect("stack environment complete");
        let credentials = aws_sdk_dynamodb::config::Credentials::new(
            var(&vars, "AWS_ACCESS_KEY_ID"),
            var(&vars, "AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "stack-env",
        );
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(var(&vars, "AWS_REGION").to_owned()))
            .credentials_provider(credentials)
            .endpoint_url(var(&vars, "AWS_ENDPOINT_URL"))
            .load()
            .await;
        let watch_url = var(&vars, "AWS_ENDPOINT_URL_LAMBDA").to_owned();
        let lambda = aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&sdk)
                .endpoint_url(&watch_url)
                .build(),
        );
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let proxy_url = var(&vars, "AWS_ENDPOINT_URL_SESV2").to_owned();
        // The emulator itself, not the proxy in front of it (`make test` passes its address).
        let ses_store_url = std::env::var("HIKYAKU_SES_STORE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8005".to_owned());
        Stack {
            contacts: DynamoContacts::new(dynamodb.clone(), resources.contacts_table.clone()),
            campaigns: DynamoCampaigns::new(dynamodb.clone(), resources.campaigns_table.clone()),
            runs: DynamoRuns::new(dynamodb.clone(), resources.runs_table.clone()),
            ledger: DynamoLedger::new(dynamodb.clone(), resources.deliveries_table.clone()),
            suppressions: DynamoSuppressions::new(
                dynamodb.clone(),
                resources.suppressions_table.clone(),
            ),
            queue: SqsJobQueue::new(sqs.clone(), resources.send_queue_url.clone()),
            budget: DynamoBudget::new(dynamodb.clone(), resources.runs_table.clone()),
            ses_account: SesAccount::from_client(aws_sdk_sesv2::Client::from_conf(
                aws_sdk_sesv2::config::Builder::from(&sdk)
                    .endpoint_url(&proxy_url)
                    .build(),
            )),
            budget_settings: BudgetSettings::default(),
            invoker: FunctionInvoker::new(lambda),
            proxy: SesProxyClient::new(proxy_url),
            http: reqwest::Client::new(),
            dynamodb,
            sqs,
            sdk,
            vars,
            resources,
            ses_store_url,
            watch_url,
        }
    }

    /// How many messages the SES emulator holds per recipient address.
    pub async fn ses_store_counts(&self) -> HashMap<String, usize> {
        let store: Value = self
            .http
            .get(format!("{}/store", self.ses_store_url))
            .send()
            .await
            .expect("SES emulator reachable")
            .json()
            .await
            .expect("SES emulator store is JSON");
        let mut counts = HashMap::new();
        for email in store["emails"].as_array().into_iter().flatten() {
            for to in email["destination"]["to"].as_array().into_iter().flatten() {
                if let Some(address) = to.as_str() {
                    *counts.entry(address.to_lowercase()).or_default() += 1;
                }
            }
        }
        counts
    }

    /// The account check the functions make, on the stack's budget item and SES proxy.
    pub fn account_gate(&self) -> Budget<'_> {
        Budget {
            store: &self.budget,
            account: &self.ses_account,
            settings: &self.budget_settings,
        }
    }

    pub async fn status(&self, run: &RunRef) -> RunStatus {
        let record = self
            .runs
            .get(run)
            .await
            .expect("runs table readable")
            .unwrap_or_else(|| panic!("run {run} exists"));
        let counts = self.ledger.counts(run).await.expect("ledger readable");
        RunStatus { record, counts }
    }

    /// Starts a run through the real fan-out function, as the CLI and Scheduler do.
    pub async fn start_run(&self, scenario: &Scenario) -> (RunRef, Value) {
        let scheduled = chrono::Utc::now();
        let payload = json!({
            "campaign_id": scenario.campaign_id.as_str(),
            "scheduled_time": scheduled.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        let answer = self
            .invoker
            .invoke(FANOUT, &payload)
            .await
            .expect("fan-out invocation");
        let run = RunRef::new(
            scenario.campaign_id.clone(),
            RunId::parse(&scheduled.format("%Y%m%dT%H%M%SZ").to_string()).unwrap(),
        );
        (run, answer)
    }

    pub fn pump_config(&self) -> PumpConfig {
        let mut config = PumpConfig::new(self.resources.send_queue_url.clone(), SENDER);
        config.max_concurrency = 4;
        config.receive_wait = Duration::from_millis(500);
        config
    }

    /// Runs a sender pump until the run is finished (or `limit` passes), then stops it.
    pub async fn pump_until_finished(
        &self,
        config: PumpConfig,
        run: &RunRef,
        limit: Duration,
    ) -> (PumpStats, RunStatus) {
        let (stats, status) = self
            .pump_until(config, run, limit, RunStatus::is_finished)
            .await;
        assert!(
            status.is_finished(),
            "run {run} unfinished after {limit:?}: {status:#?}\npump: {stats:#?}"
        );
        (stats, status)
    }

    /// Runs a sender pump until `done` says so of the run's status (or `limit` passes), then
    /// stops it; the status at that point.
    pub async fn pump_until(
        &self,
        config: PumpConfig,
        run: &RunRef,
        limit: Duration,
        done: impl Fn(&RunStatus) -> bool,
    ) -> (PumpStats, RunStatus) {
        // No SDK retries on invoke: a retried invoke is a delivery AWS would not make.
        let lambda = aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&self.sdk)
                .endpoint_url(&self.watch_url)
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .build(),
        );
        let region = var(&self.vars, "AWS_REGION").to_owned();
        let pump = Pump::from_clients(self.sqs.clone(), lambda, region, config)
            .expect("pump config valid");
        let deadline = Instant::now() + limit;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = async {
            loop {
                let status = self.status(run).await;
                if done(&status) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let _ = stop_tx.send(());
        };
        let stop = async move {
            let _ = stop_rx.await;
        };
        let (stats, ()) = tokio::join!(pump.run_until(stop), watcher);
        let stats = stats.expect("pump runs");
        (stats, self.status(run).await)
    }

    /// Waits until the SNS pump holds no notification still to deliver (the feedback of
    /// earlier tests is done), so that what follows is judged on its own events.
    pub async fn wait_for_quiet_feedback(&self, limit: Duration) {
        let url = std::env::var("HIKYAKU_SNS_PUMP_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8007".to_owned());
        let deadline = Instant::now() + limit;
        loop {
            let stats: Value = self
                .http
                .get(format!("{url}/_hikyaku/stats"))
                .send()
                .await
                .expect("SNS pump reachable")
                .json()
                .await
                .expect("SNS pump stats are JSON");
            if stats["pending"] == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the SNS pump still holds notifications after {limit:?}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the run's status satisfies `reached`; the status then.
    pub async fn wait_until(
        &self,
        run: &RunRef,
        limit: Duration,
        reached: impl Fn(&RunStatus) -> bool,
    ) -> RunStatus {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status(run).await;
            if reached(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} not there after {limit:?}: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the run's feedback counters satisfy `reached` (the SES events of its sends
    /// travel the simulator, SNS and the feedback function on their own time); the run then.
    pub async fn wait_for_feedback(
        &self,
        run: &RunRef,
        limit: Duration,
        reached: impl Fn(&FeedbackCounts) -> bool,
    ) -> RunRecord {
        let deadline = Instant::now() + limit;
        loop {
            let record = self.status(run).await.record;
            if reached(&record.feedback) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "feedback of run {run} incomplete after {limit:?}: {:#?}",
                record.feedback
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Invokes `function` with an event file through `cargo lambda invoke` against `cargo
    /// lambda watch` itself (not the Lambda proxy); its JSON answer.
    pub async fn invoke_fixture(&self, function: &str, file: &std::path::Path) -> Value {
        let root = workspace_root();
        let port = std::env::var("LAMBDA_PORT").unwrap_or_else(|_| "9000".to_owned());
        let output = tokio::process::Command::new(root.join(".tools/venv/bin/cargo-lambda"))
            .arg("lambda")
            .arg("invoke")
            .arg(function)
            .arg("--invoke-address")
            .arg("127.0.0.1")
            .arg("--invoke-port")
            .arg(&port)
            .arg("--data-file")
            .arg(file)
            .arg("--output-format")
            .arg("json")
            .current_dir(&root)
            .output()
            .await
            .expect("cargo lambda runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {}\n{stdout}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{}: answer is not JSON ({e}): {stdout}", file.display()))
    }

    /// The record the functions keep of a rejected input (`rejected#{source}` in the ledger
    /// table): its reason.
    pub async fn rejected_reason(&self, source: &str, id: &str) -> Option<String> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.resources.deliveries_table)
            .key(
                "run_key",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("rejected#{source}")),
            )
            .key(
                "email",
                aws_sdk_dynamodb::types::AttributeValue::S(id.to_owned()),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("ledger table readable");
        output
            .item
            .and_then(|item| item.get("reason")?.as_s().ok().cloned())
    }
}

/// A campaign of its own with a contact list of its own: addresses unique to this test and
/// this execution, so tests never see each other's mail.
pub struct Scenario {
    pub campaign_id: CampaignId,
    /// Contacts the segment selects and consent allows: each must get exactly one email.
    pub eligible: Vec<EmailAddress>,
    /// Contacts the segment leaves out.
    pub filtered: Vec<EmailAddress>,
    /// Selected but suppressed.
    pub suppressed: Vec<EmailAddress>,
}

pub struct ScenarioSpec<'a> {
    pub name: &'a str,
    pub contacts: usize,
    /// Every n-th contact does not allow mail (outside the segment).
    pub filtered_every: usize,
    /// Every n-th contact is suppressed.
    pub suppressed_every: usize,
    /// Addresses of every n-th contact get this domain (for SES fault injection).
    pub odd_domain: Option<(usize, &'a str)>,
    /// Which contacts get an SES mailbox simulator address (`bounce`, `complaint`, `ooto`,
    /// `suppressionlist`, `success`), as `<box>+<unique>-<i>@simulator.amazonses.com`.
    pub simulator: Option<fn(usize) -> Option<&'static str>>,
    /// TOML appended to the campaign file (e.g. a `[limits]` table).
    pub extra_toml: &'a str,
    /// Put before the other addresses' local parts. The fan-out reads a list in address order,
    /// so `bounce+` mixes them among `bounce+...@simulator.amazonses.com` instead of after.
    pub local_prefix: &'a str,
}

impl ScenarioSpec<'_> {
    pub fn plain(name: &str, contacts: usize) -> ScenarioSpec<'_> {
        ScenarioSpec {
            name,
            contacts,
            filtered_every: 0,
            suppressed_every: 0,
            odd_domain: None,
            simulator: None,
            extra_toml: "",
            local_prefix: "",
        }
    }
}

fn every(n: usize, i: usize) -> bool {
    n > 0 && i % n == n - 1
}

impl Scenario {
    pub async fn seed(stack: &Stack, spec: ScenarioSpec<'_>) -> Scenario {
        let unique = format!("{}-{}", spec.name, chrono::Utc::now().format("%H%M%S%3f"));
        let list = ListId::parse(&unique).unwrap();
        let campaign_id = CampaignId::parse(&unique).unwrap();
        let mut contacts = Vec::new();
        let mut scenario = Scenario {
            campaign_id: campaign_id.clone(),
            eligible: Vec::new(),
            filtered: Vec::new(),
            suppressed: Vec::new(),
        };
        let mut schema = ListSchema::default();
        for i in 0..spec.contacts {
            let domain = match spec.odd_domain {
                Some((n, domain)) if every(n, i) => domain,
                _ => "example.com",
            };
            let address = match spec.simulator.and_then(|mailbox| mailbox(i)) {
                Some(mailbox) => format!("{mailbox}+{unique}-{i:05}@simulator.amazonses.com"),
                None => format!("{}{unique}-{i:05}@{domain}", spec.local_prefix),
            };
            let email = EmailAddress::parse(&address).unwrap();
            let allowed = !every(spec.filtered_every, i);
            let mut attributes = Attributes::new();
            attributes.insert("first_name".into(), AttrValue::Str(format!("Reader {i}")));
            attributes.insert("mail_allowed".into(), AttrValue::Int(allowed as i64));
            schema.observe(&attributes);
            if !allowed {
                scenario.filtered.push(email.clone());
            } else if every(spec.suppressed_every, i) {
                scenario.suppressed.push(email.clone());
            } else {
                scenario.eligible.push(email.clone());
            }
            contacts.push(Contact { email, attributes });
        }
        stack.contacts.merge_schema(&list, &schema).await.unwrap();
        stack.contacts.put_many(&list, &contacts).await.unwrap();
        for email in &scenario.suppressed {
            stack
                .suppressions
                .add(&Suppression {
                    email: email.clone(),
                    reason: "complaint".into(),
                    source: "manual".into(),
                    at: chrono::Utc::now(),
                })
                .await
                .unwrap();
        }
        let toml = format!(
            r#"
id = "{campaign_id}"
list = "{list}"
segment = "mail_allowed == 1"
subject = "Integration {{{{first_name}}}}"
html = "<p>Hello {{{{first_name}}}}</p><p><a href=\"{{{{amazonSESUnsubscribeUrl}}}}\">Unsubscribe</a></p>"
[from]
address = "news@hikyaku.example"
name = "Hikyaku Tests"
[ses]
configuration_set = "hikyaku"
contact_list = "newsletter"
topic = "weekly"
{extra}
"#,
            extra = spec.extra_toml
        );
        let definition = CampaignDefinition::from_toml_str(&toml, None).expect("valid campaign");
        hikyaku_core::campaign::Campaign::from_definition(definition.clone(), Some(&schema))
            .expect("campaign fits the list");
        assert!(stack.campaigns.create(&definition).await.unwrap());
        scenario
    }

    pub fn addresses(list: &[EmailAddress]) -> Vec<String> {
        list.iter().map(|e| e.as_str().to_lowercase()).collect()
    }

    /// Every eligible address exactly once at the SES emulator, and no other of this scenario.
    pub async fn assert_each_eligible_got_exactly_one(&self, stack: &Stack) {
        let counts = stack.ses_store_counts().await;
        let mut missing = Vec::new();
        let mut twice = Vec::new();
        for address in Self::addresses(&self.eligible) {
            match counts.get(&address).copied().unwrap_or(0) {
                1 => {}
                0 => missing.push(address),
                _ => twice.push(address),
            }
        }
        assert!(
            missing.is_empty(),
            "{} eligible never mailed: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert!(
            twice.is_empty(),
            "{} eligible mailed twice: {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        );
        for address in Self::addresses(&self.filtered)
            .into_iter()
            .chain(Self::addresses(&self.suppressed))
        {
            assert!(
                !counts.contains_key(&address),
                "{address} must not be mailed"
            );
        }
    }
}

/// Sets SES faults for the length of a test, and clears them whatever happens.
pub struct FaultGuard {
    proxy_url: String,
}

impl FaultGuard {
    pub async fn set(stack: &Stack, faults: Faults) -> FaultGuard {
        stack.proxy.set_faults(&faults).await.unwrap();
        FaultGuard {
            proxy_url: stack.vars["AWS_ENDPOINT_URL_SESV2"].clone(),
        }
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        // Drop cannot await: clear on a runtime of its own, with a client of its own (a client's
        // connections belong to the runtime that made them).
        let url = self.proxy_url.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(SesProxyClient::new(url).clear_faults())
        })
        .join()
        .unwrap()
        .unwrap();
    }
}

/// The `hikyaku` binary: `HIKYAKU_CLI` (`make test` sets it), else the one next to this test
/// binary's `deps/` folder.
pub fn cli_binary() -> PathBuf {
    let path = std::env::var_os("HIKYAKU_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test binary path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("test binary in <target>/debug/deps")
                .join("hikyaku")
        });
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p hikyaku-cli` (`make test` does)",
        path.display()
    );
    path
}

/// Runs `hikyaku ARGS` with the stack's environment.
pub async fn hikyaku(stack: &Stack, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(cli_binary())
        .args(args)
        .envs(&stack.vars)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("hikyaku runs")
}

/// The JSON `hikyaku ARGS` printed, after checking it succeeded and kept stderr quiet.
pub async fn hikyaku_json(stack: &Stack, args: &[&str]) -> Value {
    let output = hikyaku(stack, args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "hikyaku {args:?} failed: {stderr}");
    assert!(stderr.trim().is_empty(), "hikyaku {args:?} wrote: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "hikyaku {args:?} printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
