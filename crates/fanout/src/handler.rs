//! Translates the invocation into the core fan-out and its outcome into the response. When
//! time runs short the run is continued by an asynchronous invocation of this same function.

use hikyaku_aws::dynamodb::{DynamoBudget, DynamoCampaigns, DynamoContacts, DynamoRuns};
use hikyaku_aws::lambda::{FunctionInvoker, InvocationClock};
use hikyaku_aws::ses::SesAccount;
use hikyaku_aws::sqs::SqsJobQueue;
use hikyaku_core::budget::{Budget, BudgetSettings};
use hikyaku_core::fanout::{FanoutOutcome, FanoutPorts, FanoutRequest, FanoutSettings, fan_out};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

pub(crate) struct Deps {
    pub campaigns: DynamoCampaigns,
    pub runs: DynamoRuns,
    pub contacts: DynamoContacts,
    pub queue: SqsJobQueue,
    pub invoker: FunctionInvoker,
    pub budget: DynamoBudget,
    pub account: SesAccount,
    pub budget_settings: BudgetSettings,
    pub settings: FanoutSettings,
}

/// A payload that is not a fan-out request is answered, not retried: Lambda's asynchronous
/// retries would only fail the same way.
pub(crate) fn parse_request(payload: Value) -> Result<FanoutRequest, String> {
    serde_json::from_value(payload).map_err(|err| {
        format!(
            "the event is not a fan-out request ({err}); expected {{\"campaign_id\": \"...\", \"scheduled_time\": \"2026-12-24T09:00:00Z\"}}"
        )
    })
}

pub(crate) async fn function_handler(
    deps: &Deps,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    let request = match parse_request(payload) {
        Ok(request) => request,
        Err(problem) => {
            tracing::error!(request_id = %context.request_id, problem = %problem, "event rejected");
            return Ok(json!({"status": "rejected", "error": problem}));
        }
    };
    let account = Budget {
        store: &deps.budget,
        account: &deps.account,
        settings: &deps.budget_settings,
    };
    let ports = FanoutPorts {
        campaigns: &deps.campaigns,
        runs: &deps.runs,
        contacts: &deps.contacts,
        queue: &deps.queue,
        account: &account,
    };
    let clock = InvocationClock::new(context.deadline);
    let time_left = move || clock.time_left();
    let outcome = fan_out(
        &ports,
        &request,
        &deps.settings,
        &context.request_id,
        &time_left,
        &chrono::Utc::now,
    )
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(
            err @ (hikyaku_core::fanout::FanoutError::UnknownCampaign(_)
            | hikyaku_core::fanout::FanoutError::InvalidCampaign { .. }),
        ) => {
            tracing::error!(campaign = %request.campaign_id, error = %err, "event rejected");
            return Ok(json!({"status": "rejected", "error": err.to_string()}));
        }
        // Store and queue trouble: fail the invocation so Lambda retries it; the saved cursor
        // makes the retry carry on rather than start over.
        Err(err) => return Err(err.into()),
    };
    // Another invocation holds the run: fail, so Lambda retries this one later; the lease
    // lapses when its holder's time is up, and a duplicate then finds the run complete.
    if let FanoutOutcome::Busy { run } = &outcome {
        return Err(
            format!("run {run} is being fanned out by another invocation; retry later").into(),
        );
    }
    if let FanoutOutcome::Continue { run, .. } = &outcome {
        let continuation = serde_json::to_value(&request)?;
        deps.invoker
            .invoke_async(&context.env_config.function_name, &continuation)
            .await?;
        tracing::info!(run = %run, "continuation invoked");
    }
    Ok(serde_json::to_value(&outcome)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduler_input_is_a_fanout_request() {
        let fixture = include_str!("../../../events/fanout/scheduled-run.json");
        let request = parse_request(serde_json::from_str(fixture).unwrap()).unwrap();
        assert_eq!(request.campaign_id.as_str(), "winter-newsletter");
        assert_eq!(request.run().run_id.as_str(), "20261224T090000Z");
    }

    #[test]
    fn a_malformed_event_is_answered_with_the_problem() {
        let fixture = include_str!("../../../events/fanout/malformed.json");
        let problem = parse_request(serde_json::from_str(fixture).unwrap()).unwrap_err();
        assert!(problem.contains("scheduled_time"), "{problem}");
        let problem = parse_request(
            json!({"campaign_id": "bad id", "scheduled_time": "2026-12-24T09:00:00Z"}),
        )
        .unwrap_err();
        assert!(problem.contains("' '"), "{problem}");
    }
}
