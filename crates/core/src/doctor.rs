//! The preflight check: whether the SES setup and the stack will carry a campaign, each check
//! with its verdict and, when it fails, the fix in one line.
//!
//! What the environment answers comes through [`SetupProbe`]. A call the endpoint does not
//! answer at all (an emulator without that API) is [`Probe::Unanswered`]: its check is
//! skipped and says so, and never blocks a start.

use async_trait::async_trait;
use serde::Serialize;

use crate::budget::AccountSnapshot;

/// What a probe found.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe<T> {
    Found(T),
    /// The resource does not exist.
    Missing,
    /// The endpoint does not offer this call (an emulator): nothing can be said.
    Unanswered,
    /// The call failed (permissions, network): the reason.
    Failed(String),
}

/// An SES identity's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityState {
    pub verified_for_sending: bool,
    /// `SUCCESS`, `PENDING`, `FAILED`, `TEMPORARY_FAILURE`, `NOT_STARTED`.
    pub dkim_status: String,
}

/// One event destination of a configuration set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDestination {
    pub name: String,
    pub enabled: bool,
    pub sns_topic_arn: Option<String>,
    /// SES event types, upper case (`BOUNCE`, `COMPLAINT`, `DELIVERY`, ...).
    pub events: Vec<String>,
}

/// One subscription of an SNS topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub protocol: String,
    pub endpoint: String,
}

#[async_trait]
pub trait SetupProbe: Send + Sync {
    async fn account(&self) -> Probe<AccountSnapshot>;
    async fn identity(&self, identity: &str) -> Probe<IdentityState>;
    async fn event_destinations(&self, configuration_set: &str) -> Probe<Vec<EventDestination>>;
    /// The contact list's topic names.
    async fn contact_list_topics(&self, contact_list: &str) -> Probe<Vec<String>>;
    async fn subscriptions(&self, topic_arn: &str) -> Probe<Vec<Subscription>>;
    async fn table(&self, table: &str) -> Probe<()>;
    /// Messages waiting on the queue (visible and delayed).
    async fn queue_depth(&self, queue_url: &str) -> Probe<u64>;
}

/// What to check, from the campaign and the stack's configuration; `None`: not known, so
/// the check is skipped with what to set.
#[derive(Clone, Debug, Default)]
pub struct SetupToCheck {
    /// A campaign is checked: its identity, configuration set and contact list.
    pub with_campaign: bool,
    /// The sending identity: the campaign's from address, checked as its domain first.
    pub from_address: Option<String>,
    pub configuration_set: Option<String>,
    pub contact_list: Option<String>,
    pub topic: Option<String>,
    pub feedback_topic_arn: Option<String>,
    /// The feedback function's name, as the topic's subscription names it.
    pub feedback_function: Option<String>,
    /// (what it holds, table name)
    pub tables: Vec<(String, String)>,
    pub send_queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// Works, but worth knowing (sandbox, a quota nearly used up).
    Warn,
    Fail,
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    /// The fix, in one line, when it did not pass.
    pub fix: Option<String>,
    /// A failure here stops `campaign start` (unless `--force`).
    pub blocking: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Findings {
    pub checks: Vec<Check>,
}

impl Findings {
    /// The failed checks that stop a start.
    pub fn blocking(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.blocking && c.verdict == Verdict::Fail)
            .collect()
    }

    pub fn skipped(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Skipped)
            .collect()
    }

    fn push(&mut self, name: impl Into<String>, blocking: bool, outcome: Outcome) {
        let (verdict, detail, fix) = match outcome {
            Outcome::Pass(detail) => (Verdict::Pass, detail, None),
            Outcome::Warn(detail, fix) => (Verdict::Warn, detail, Some(fix)),
            Outcome::Fail(detail, fix) => (Verdict::Fail, detail, Some(fix)),
            Outcome::Skipped(detail) => (Verdict::Skipped, detail, None),
        };
        self.checks.push(Check {
            name: name.into(),
            verdict,
            detail,
            fix,
            blocking,
        });
    }
}

enum Outcome {
    Pass(String),
    Warn(String, String),
    Fail(String, String),
    Skipped(String),
}

const UNANSWERED: &str = "the endpoint does not answer this call (an emulator?)";

/// The outcome of a probe that did not find its resource; `missing` says what to do then.
fn not_found<T>(probe: Probe<T>, missing: (String, String)) -> Result<T, Outcome> {
    match probe {
        Probe::Found(value) => Ok(value),
        Probe::Missing => Err(Outcome::Fail(missing.0, missing.1)),
        Probe::Unanswered => Err(Outcome::Skipped(UNANSWERED.to_owned())),
        Probe::Failed(reason) => Err(Outcome::Fail(
            format!("could not be checked: {reason}"),
            "check the AWS credentials, region and permissions of this shell".to_owned(),
        )),
    }
}

fn unknown(variable: &str) -> Outcome {
    Outcome::Skipped(format!("not known here: set {variable} to check it"))
}

/// Runs every check the input allows.
pub async fn diagnose(probe: &dyn SetupProbe, setup: &SetupToCheck) -> Findings {
    let mut findings = Findings::default();
    // One GetAccount for both checks: SES allows one a second.
    let account_probe = probe.account().await;
    findings.push("SES account", true, account(account_probe.clone()));
    findings.push("SES daily quota", false, quota(account_probe));
    findings.push("sending identity", true, identity(probe, setup).await);
    findings.push(
        "configuration set",
        true,
        configuration_set(probe, setup).await,
    );
    findings.push(
        "contact list and topic",
        true,
        contact_list(probe, setup).await,
    );
    findings.push("feedback subscription", false, feedback(probe, setup).await);
    for (what, table) in &setup.tables {
        let outcome = match not_found(
            probe.table(table).await,
            (
                format!("table {table} does not exist"),
                "deploy the stack (make deploy) or set the HIKYAKU_*_TABLE variables to its tables"
                    .to_owned(),
            ),
        ) {
            Ok(()) => Outcome::Pass(format!("{table} exists")),
            Err(outcome) => outcome,
        };
        findings.push(format!("{what} table"), true, outcome);
    }
    findings.push("send queue", false, queue(probe, setup, false).await);
    findings.push("dead-letter queue", false, queue(probe, setup, true).await);
    findings
}

fn account(probe: Probe<AccountSnapshot>) -> Outcome {
    let account = match not_found(
        probe,
        (
            "no SES account answered".to_owned(),
            "check the region: SES accounts are per region".to_owned(),
        ),
    ) {
        Ok(account) => account,
        Err(outcome) => return outcome,
    };
    if !account.sending_enabled {
        return Outcome::Fail(
            "sending is disabled for the account".to_owned(),
            "see the SES console's account dashboard; re-enable sending once the cause is fixed"
                .to_owned(),
        );
    }
    if account.enforcement_status != "HEALTHY" {
        return Outcome::Fail(
            format!(
                "the account's enforcement status is {}",
                account.enforcement_status
            ),
            "see the SES console's reputation metrics; send nothing until it is HEALTHY".to_owned(),
        );
    }
    if !account.production_access {
        return Outcome::Warn(
            "the account is in the SES sandbox: only verified recipients get mail".to_owned(),
            "request production access in the SES console (README: Production access)".to_owned(),
        );
    }
    Outcome::Pass(format!(
        "sending enabled, HEALTHY, production access, {:.0} emails/s",
        account.max_send_rate
    ))
}

fn quota(probe: Probe<AccountSnapshot>) -> Outcome {
    let Probe::Found(account) = probe else {
        return Outcome::Skipped("the account could not be read".to_owned());
    };
    match account.quota_left() {
        None => Outcome::Pass("no daily limit".to_owned()),
        Some(left) if left <= 0.0 => Outcome::Warn(
            format!(
                "the 24-hour quota of {:.0} is used up",
                account.max_24_hour_send
            ),
            "runs wait for quota and resume by themselves; or ask SES for a higher quota"
                .to_owned(),
        ),
        Some(left) => Outcome::Pass(format!(
            "{left:.0} of {:.0} left in the last 24 hours",
            account.max_24_hour_send
        )),
    }
}

async fn identity(probe: &dyn SetupProbe, setup: &SetupToCheck) -> Outcome {
    let Some(address) = &setup.from_address else {
        return Outcome::Skipped(NO_CAMPAIGN.to_owned());
    };
    let domain = address.rsplit('@').next().unwrap_or(address);
    // A verified domain covers its addresses; an address may be verified on its own.
    let mut found = probe.identity(domain).await;
    let mut name = domain.to_owned();
    if found == Probe::Missing {
        found = probe.identity(address).await;
        name = address.clone();
    }
    let state = match not_found(
        found,
        (
            format!("neither {domain} nor {address} is an SES identity"),
            format!("verify {domain} in SES, with DKIM (README: Verify the sending identity)"),
        ),
    ) {
        Ok(state) => state,
        Err(outcome) => return outcome,
    };
    if !state.verified_for_sending {
        return Outcome::Fail(
            format!(
                "{name} is not verified for sending (DKIM {})",
                state.dkim_status
            ),
            format!("publish the DKIM records SES gives for {name} and wait for verification"),
        );
    }
    if state.dkim_status != "SUCCESS" {
        return Outcome::Warn(
            format!("{name} is verified, but DKIM is {}", state.dkim_status),
            format!("publish the three DKIM CNAME records of {name}"),
        );
    }
    Outcome::Pass(format!("{name} verified, DKIM SUCCESS"))
}

/// The SES event types the feedback function needs.
const NEEDED_EVENTS: [&str; 3] = ["BOUNCE", "COMPLAINT", "DELIVERY"];

const NO_CAMPAIGN: &str = "no campaign named: pass --campaign ID to check its settings";

async fn configuration_set(probe: &dyn SetupProbe, setup: &SetupToCheck) -> Outcome {
    if !setup.with_campaign {
        return Outcome::Skipped(NO_CAMPAIGN.to_owned());
    }
    let Some(name) = &setup.configuration_set else {
        return Outcome::Warn(
            "the campaign names no configuration set: no bounces, complaints or opens come back"
                .to_owned(),
            "name the stack's configuration set in the campaign's [ses] configuration_set"
                .to_owned(),
        );
    };
    let destinations = match not_found(
        probe.event_destinations(name).await,
        (
            format!("configuration set {name} does not exist"),
            "deploy the stack, or name its configuration set in the campaign".to_owned(),
        ),
    ) {
        Ok(destinations) => destinations,
        Err(outcome) => return outcome,
    };
    let Some(topic) = &setup.feedback_topic_arn else {
        return Outcome::Pass(format!(
            "{name} exists ({} event destinations); set HIKYAKU_FEEDBACK_TOPIC_ARN to check where they go",
            destinations.len()
        ));
    };
    let to_topic = destinations
        .iter()
        .find(|d| d.enabled && d.sns_topic_arn.as_deref() == Some(topic.as_str()));
    let Some(destination) = to_topic else {
        return Outcome::Fail(
            format!("{name} publishes no events to {topic}"),
            format!("add an enabled SNS event destination to {topic} (the stack's template does)"),
        );
    };
    let missing: Vec<&str> = NEEDED_EVENTS
        .into_iter()
        .filter(|needed| !destination.events.iter().any(|e| e == needed))
        .collect();
    if !missing.is_empty() {
        return Outcome::Fail(
            format!(
                "destination {} of {name} leaves out {}",
                destination.name,
                missing.join(", ")
            ),
            format!("add {} to its matching event types", missing.join(", ")),
        );
    }
    Outcome::Pass(format!(
        "{name} publishes {} to the feedback topic",
        destination.events.join(", ")
    ))
}

async fn contact_list(probe: &dyn SetupProbe, setup: &SetupToCheck) -> Outcome {
    if !setup.with_campaign {
        return Outcome::Skipped(NO_CAMPAIGN.to_owned());
    }
    let Some(list) = &setup.contact_list else {
        return Outcome::Warn(
            "the campaign names no SES contact list: SES adds no unsubscribe link or header"
                .to_owned(),
            "name the stack's contact list (and a topic) in the campaign's [ses]".to_owned(),
        );
    };
    let topics = match not_found(
        probe.contact_list_topics(list).await,
        (
            format!("contact list {list} does not exist"),
            "deploy the stack, or create the list with `aws sesv2 create-contact-list`".to_owned(),
        ),
    ) {
        Ok(topics) => topics,
        Err(outcome) => return outcome,
    };
    match &setup.topic {
        Some(topic) if !topics.contains(topic) => Outcome::Fail(
            format!(
                "contact list {list} has no topic {topic} (it has: {})",
                if topics.is_empty() {
                    "none".to_owned()
                } else {
                    topics.join(", ")
                }
            ),
            format!("add the topic to {list}, or name one of its topics in the campaign"),
        ),
        Some(topic) => Outcome::Pass(format!("{list} has the topic {topic}")),
        None => Outcome::Pass(format!("{list} exists")),
    }
}

async fn feedback(probe: &dyn SetupProbe, setup: &SetupToCheck) -> Outcome {
    let Some(topic) = &setup.feedback_topic_arn else {
        return unknown("HIKYAKU_FEEDBACK_TOPIC_ARN");
    };
    let subscriptions = match not_found(
        probe.subscriptions(topic).await,
        (
            format!("topic {topic} does not exist"),
            "deploy the stack, or set HIKYAKU_FEEDBACK_TOPIC_ARN to its topic".to_owned(),
        ),
    ) {
        Ok(subscriptions) => subscriptions,
        Err(outcome) => return outcome,
    };
    let function = setup.feedback_function.as_deref();
    let subscribed = subscriptions.iter().find(|s| match function {
        Some(function) => s.protocol == "lambda" && s.endpoint.ends_with(&format!(":{function}")),
        None => s.protocol == "lambda",
    });
    match subscribed {
        Some(s) => Outcome::Pass(format!("{} is subscribed", s.endpoint)),
        // The local stack's SNS pump is an http subscriber that invokes the function.
        None if subscriptions.iter().any(|s| s.protocol.starts_with("http")) => Outcome::Pass(
            "an http subscriber forwards the events (the local stack's SNS pump)".to_owned(),
        ),
        None => Outcome::Fail(
            format!(
                "no Lambda subscription{} on {topic}",
                function.map(|f| format!(" of {f}")).unwrap_or_default()
            ),
            "subscribe the feedback function to the topic (the stack's template does)".to_owned(),
        ),
    }
}

async fn queue(probe: &dyn SetupProbe, setup: &SetupToCheck, dead_letters: bool) -> Outcome {
    let (url, variable) = if dead_letters {
        (&setup.dead_letter_queue_url, "HIKYAKU_SEND_DLQ_URL")
    } else {
        (&setup.send_queue_url, "HIKYAKU_SEND_QUEUE_URL")
    };
    let Some(url) = url else {
        return unknown(variable);
    };
    let depth = match not_found(
        probe.queue_depth(url).await,
        (
            format!("queue {url} does not exist"),
            format!("deploy the stack, or set {variable} to its queue"),
        ),
    ) {
        Ok(depth) => depth,
        Err(outcome) => return outcome,
    };
    match (dead_letters, depth) {
        (true, 0) => Outcome::Pass("empty".to_owned()),
        (true, n) => Outcome::Warn(
            format!("{n} messages: jobs the sender gave up on"),
            "look at them (aws sqs receive-message) and redrive once the cause is fixed".to_owned(),
        ),
        (false, n) => Outcome::Pass(format!("exists, {n} messages waiting")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Answers what the test sets; anything unset is missing.
    #[derive(Default)]
    struct FakeProbe {
        account: Option<AccountSnapshot>,
        identities: HashMap<String, IdentityState>,
        destinations: HashMap<String, Vec<EventDestination>>,
        lists: HashMap<String, Vec<String>>,
        subscriptions: HashMap<String, Vec<Subscription>>,
        tables: Vec<String>,
        queues: HashMap<String, u64>,
        unanswered: bool,
        asked: Mutex<Vec<String>>,
    }

    impl FakeProbe {
        fn answer<T: Clone>(&self, what: String, found: Option<&T>) -> Probe<T> {
            self.asked.lock().unwrap().push(what);
            match (self.unanswered, found) {
                (true, _) => Probe::Unanswered,
                (false, Some(value)) => Probe::Found(value.clone()),
                (false, None) => Probe::Missing,
            }
        }
    }

    #[async_trait]
    impl SetupProbe for FakeProbe {
        async fn account(&self) -> Probe<AccountSnapshot> {
            self.answer("account".into(), self.account.as_ref())
        }
        async fn identity(&self, identity: &str) -> Probe<IdentityState> {
            self.answer(
                format!("identity {identity}"),
                self.identities.get(identity),
            )
        }
        async fn event_destinations(&self, name: &str) -> Probe<Vec<EventDestination>> {
            self.answer(format!("set {name}"), self.destinations.get(name))
        }
        async fn contact_list_topics(&self, name: &str) -> Probe<Vec<String>> {
            self.answer(format!("list {name}"), self.lists.get(name))
        }
        async fn subscriptions(&self, topic: &str) -> Probe<Vec<Subscription>> {
            self.answer(format!("topic {topic}"), self.subscriptions.get(topic))
        }
        async fn table(&self, table: &str) -> Probe<()> {
            let found = self.tables.iter().any(|t| t == table).then_some(());
            self.answer(format!("table {table}"), found.as_ref())
        }
        async fn queue_depth(&self, url: &str) -> Probe<u64> {
            self.answer(format!("queue {url}"), self.queues.get(url))
        }
    }

    const TOPIC: &str = "arn:aws:sns:eu-west-1:111122223333:hikyaku-feedback";

    fn healthy() -> AccountSnapshot {
        AccountSnapshot {
            max_send_rate: 14.0,
            max_24_hour_send: 50_000.0,
            sent_last_24_hours: 1_000.0,
            sending_enabled: true,
            enforcement_status: "HEALTHY".into(),
            production_access: true,
            fetched_at: chrono::Utc::now(),
        }
    }

    fn setup() -> SetupToCheck {
        SetupToCheck {
            with_campaign: true,
            from_address: Some("news@hikyaku.example".into()),
            configuration_set: Some("hikyaku".into()),
            contact_list: Some("newsletter".into()),
            topic: Some("weekly".into()),
            feedback_topic_arn: Some(TOPIC.into()),
            feedback_function: Some("hikyaku-feedback".into()),
            tables: vec![("contacts".into(), "hikyaku-contacts".into())],
            send_queue_url: Some("https://sqs/send".into()),
            dead_letter_queue_url: Some("https://sqs/dlq".into()),
        }
    }

    fn all_good() -> FakeProbe {
        FakeProbe {
            account: Some(healthy()),
            identities: HashMap::from([(
                "hikyaku.example".into(),
                IdentityState {
                    verified_for_sending: true,
                    dkim_status: "SUCCESS".into(),
                },
            )]),
            destinations: HashMap::from([(
                "hikyaku".into(),
                vec![EventDestination {
                    name: "feedback".into(),
                    enabled: true,
                    sns_topic_arn: Some(TOPIC.into()),
                    events: ["BOUNCE", "COMPLAINT", "DELIVERY", "OPEN", "CLICK"]
                        .map(String::from)
                        .to_vec(),
                }],
            )]),
            lists: HashMap::from([("newsletter".into(), vec!["weekly".into()])]),
            subscriptions: HashMap::from([(
                TOPIC.into(),
                vec![Subscription {
                    protocol: "lambda".into(),
                    endpoint: "arn:aws:lambda:eu-west-1:111122223333:function:hikyaku-feedback"
                        .into(),
                }],
            )]),
            tables: vec!["hikyaku-contacts".into()],
            queues: HashMap::from([
                ("https://sqs/send".into(), 3),
                ("https://sqs/dlq".into(), 0),
            ]),
            ..FakeProbe::default()
        }
    }

    fn verdict<'a>(findings: &'a Findings, name: &str) -> &'a Check {
        findings
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {findings:#?}"))
    }

    #[tokio::test]
    async fn a_sound_setup_passes_every_check() {
        let findings = diagnose(&all_good(), &setup()).await;
        for check in &findings.checks {
            assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
            assert!(check.fix.is_none());
        }
        assert!(findings.blocking().is_empty());
        assert_eq!(findings.checks.len(), 9);
    }

    #[tokio::test]
    async fn each_broken_part_fails_its_check_with_a_fix() {
        let mut probe = all_good();
        probe.account.as_mut().unwrap().enforcement_status = "PROBATION".into();
        probe
            .identities
            .get_mut("hikyaku.example")
            .unwrap()
            .verified_for_sending = false;
        probe.destinations.get_mut("hikyaku").unwrap()[0].events = vec!["DELIVERY".into()];
        probe
            .lists
            .insert("newsletter".into(), vec!["offers".into()]);
        probe.subscriptions.insert(TOPIC.into(), vec![]);
        probe.tables.clear();
        probe.queues.insert("https://sqs/dlq".into(), 12);
        let findings = diagnose(&probe, &setup()).await;
        let account = verdict(&findings, "SES account");
        assert_eq!(account.verdict, Verdict::Fail);
        assert!(account.detail.contains("PROBATION"));
        let set = verdict(&findings, "configuration set");
        assert!(set.detail.contains("BOUNCE, COMPLAINT"), "{set:?}");
        let list = verdict(&findings, "contact list and topic");
        assert!(list.detail.contains("has: offers"), "{list:?}");
        assert_eq!(
            verdict(&findings, "feedback subscription").verdict,
            Verdict::Fail
        );
        assert_eq!(verdict(&findings, "contacts table").verdict, Verdict::Fail);
        assert_eq!(
            verdict(&findings, "dead-letter queue").verdict,
            Verdict::Warn
        );
        let blocking: Vec<&str> = findings
            .blocking()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            blocking,
            [
                "SES account",
                "sending identity",
                "configuration set",
                "contact list and topic",
                "contacts table"
            ]
        );
        for check in findings
            .checks
            .iter()
            .filter(|c| c.verdict != Verdict::Pass)
        {
            let fix = check.fix.as_deref().unwrap_or_default();
            assert!(!fix.is_empty() && !fix.contains('\n'), "{check:?}");
        }
    }

    #[tokio::test]
    async fn an_address_identity_is_tried_when_the_domain_is_none_and_the_sandbox_warns() {
        let mut probe = all_good();
        let state = probe.identities.remove("hikyaku.example").unwrap();
        probe
            .identities
            .insert("news@hikyaku.example".into(), state);
        probe.account.as_mut().unwrap().production_access = false;
        probe.account.as_mut().unwrap().sent_last_24_hours = 50_000.0;
        let findings = diagnose(&probe, &setup()).await;
        assert_eq!(
            verdict(&findings, "sending identity").verdict,
            Verdict::Pass
        );
        assert_eq!(verdict(&findings, "SES account").verdict, Verdict::Warn);
        assert_eq!(verdict(&findings, "SES daily quota").verdict, Verdict::Warn);
        assert!(findings.blocking().is_empty());
    }

    #[tokio::test]
    async fn what_the_endpoint_cannot_answer_is_skipped_and_never_blocks() {
        let probe = FakeProbe {
            unanswered: true,
            ..FakeProbe::default()
        };
        let findings = diagnose(&probe, &setup()).await;
        assert!(findings.blocking().is_empty());
        assert!(findings.skipped().len() >= 8, "{findings:#?}");
        assert!(findings.skipped()[0].detail.contains("does not answer"));
        // Nothing known, nothing asked.
        let bare = diagnose(&all_good(), &SetupToCheck::default()).await;
        let identity = verdict(&bare, "sending identity");
        assert_eq!(identity.verdict, Verdict::Skipped);
        assert!(identity.detail.contains("--campaign"));
        assert!(
            verdict(&bare, "send queue")
                .detail
                .contains("HIKYAKU_SEND_QUEUE_URL")
        );
        assert_eq!(
            verdict(&bare, "configuration set").verdict,
            Verdict::Skipped
        );
        // A campaign without a configuration set gets no feedback: worth a warning.
        let without = SetupToCheck {
            with_campaign: true,
            ..SetupToCheck::default()
        };
        let findings = diagnose(&all_good(), &without).await;
        assert_eq!(
            verdict(&findings, "configuration set").verdict,
            Verdict::Warn
        );
        assert_eq!(
            verdict(&findings, "contact list and topic").verdict,
            Verdict::Warn
        );
    }
}
