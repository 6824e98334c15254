//! Sending through another account's role on the local stack: the real sender assumes the
//! campaign's `sending_role_arn` at moto's STS, signs its SES calls with the role's
//! credentials (seen at the SES proxy), keeps them across sends, and keeps that account's
//! send budget apart from its own.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_sts::config::Credentials;
use hikyaku_core::budget::BudgetStore;
use hikyaku_core::ids::RunRef;
use hikyaku_local::ses_proxy::RecordedSend;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);
const PARTNER_ACCOUNT: &str = "222222222222";
const ROLE: &str = "arn:aws:iam::222222222222:role/hikyaku-sending";

/// The proxy's record of the run's accepted sends.
async fn sends_of(stack: &Stack, run: &RunRef) -> Vec<RecordedSend> {
    let run_id = run.run_id.to_string();
    let campaign = run.campaign_id.to_string();
    stack
        .proxy
        .sends()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| {
            s.tag(hikyaku_core::send::RUN_TAG) == Some(run_id.as_str())
                && s.tag(hikyaku_core::send::CAMPAIGN_TAG) == Some(campaign.as_str())
        })
        .collect()
}

/// Who STS says an access key belongs to (moto knows the keys it handed out).
async fn caller_arn(stack: &Stack, access_key_id: &str) -> String {
    let config = aws_sdk_sts::config::Builder::from(&stack.sdk)
        .credentials_provider(Credentials::new(
            access_key_id,
            "unused",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity")
        .arn()
        .unwrap_or_default()
        .to_owned()
}

fn keys(sends: &[RecordedSend]) -> BTreeSet<String> {
    sends
        .iter()
        .map(|s| s.access_key_id.clone().expect("a signed request"))
        .collect()
}

#[tokio::test]
async fn a_campaign_with_a_sending_role_sends_with_that_roles_credentials_and_budget() {
    let stack = Stack::connect().await;
    let own = Scenario::seed(&stack, ScenarioSpec::plain("own-account", 60)).await;
    let extra = format!("sending_role_arn = \"{ROLE}\"\nexternal_id = \"partner-7f3a9c2e-5b1d\"");
    let partner = Scenario::seed(
        &stack,
        ScenarioSpec {
            extra_toml: &extra,
            ..ScenarioSpec::plain("partner-account", 120)
        },
    )
    .await;

    let (own_run, _) = stack.start_run(&own).await;
    let (partner_run, _) = stack.start_run(&partner).await;
    let config = stack.pump_config();
    let instances = config.max_concurrency;
    stack.pump_until_finished(config, &partner_run, LIMIT).await;
    stack
        .pump_until_finished(stack.pump_config(), &own_run, LIMIT)
        .await;
    own.assert_each_eligible_got_exactly_one(&stack).await;
    partner.assert_each_eligible_got_exactly_one(&stack).await;

    // The own campaign is signed with the functions' own credentials.
    let own_sends = sends_of(&stack, &own_run).await;
    assert_eq!(own_sends.len(), own.eligible.len());
    let own_key = stack.vars["AWS_ACCESS_KEY_ID"].clone();
    assert_eq!(keys(&own_sends), BTreeSet::from([own_key.clone()]));

    // The partner's with credentials STS issued for the role, to the sender's session.
    let partner_sends = sends_of(&stack, &partner_run).await;
    assert_eq!(partner_sends.len(), partner.eligible.len());
    let partner_keys = keys(&partner_sends);
    assert!(!partner_keys.contains(&own_key), "{partner_keys:?}");
    for key in &partner_keys {
        let arn = caller_arn(&stack, key).await;
        assert_eq!(
            arn,
            format!("arn:aws:sts::{PARTNER_ACCOUNT}:assumed-role/hikyaku-sending/hikyaku-sender"),
            "access key {key}"
        );
    }
    // Kept, not fetched per send: at most one set per sender instance.
    assert!(
        partner_keys.len() <= instances,
        "{} sets of credentials for {} sends by {instances} instances",
        partner_keys.len(),
        partner_sends.len()
    );

    // Each account has a budget of its own.
    let own_budget = stack.budget.load("default").await.unwrap();
    let partner_budget = stack
        .budget
        .load(&format!("{PARTNER_ACCOUNT}/default"))
        .await
        .unwrap()
        .expect("the partner account's budget");
    assert!(own_budget.is_some());
    assert!(
        partner_budget.account.is_some(),
        "its quota was read through the role"
    );
}
