//! The harness: clients for the running local stack (read from `.local/stack.env`), seeded
//! scenarios with addresses of their own, a sender pump per test, and counts taken at the SES
//! emulator's own `GET /store`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use hikyaku_aws::dynamodb::{
    DynamoCampaigns, DynamoContacts, DynamoLedger, DynamoRuns, DynamoSuppressions,
};
use hikyaku_aws::lambda::FunctionInvoker;
use hikyaku_aws::sqs::SqsJobQueue;
use hikyaku_core::campaign::CampaignDefinition;
use hikyaku_core::contact::{AttrValue, Attributes, Contact, ListSchema};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
use hikyaku_core::ports::{
    CampaignStore, ContactStore, Ledger, RunStore, Suppression, SuppressionList,
};
use hikyaku_core::run::RunStatus;
use hikyaku_local::pump::{Pump, PumpConfig, PumpStats};
use hikyaku_local::ses_proxy::SesProxyClient;
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
                if status.is_finished() || Instant::now() > deadline {
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
        let status = self.status(run).await;
        assert!(
            status.is_finished(),
            "run {run} unfinished after {limit:?}: {status:#?}\npump: {stats:#?}"
        );
        (stats, status)
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
}

impl ScenarioSpec<'_> {
    pub fn plain(name: &str, contacts: usize) -> ScenarioSpec<'_> {
        ScenarioSpec {
            name,
            contacts,
            filtered_every: 0,
            suppressed_every: 0,
            odd_domain: None,
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
            let email = EmailAddress::parse(&format!("{unique}-{i:05}@{domain}")).unwrap();
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
"#
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
