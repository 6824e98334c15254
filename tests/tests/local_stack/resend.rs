//! `campaign resend-failed` on the local stack: a run's jobs in the dead-letter queue go back
//! to the send queue through the real CLI, and the sender mails each recipient once; other
//! runs' dead letters stay; a job sent again finds its recipients done.

use std::time::Duration;

use hikyaku_core::job::SendJob;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);

/// Moves every message of the send queue to the dead-letter queue, as SQS does after the
/// redrive policy's receive count; the bodies moved.
async fn send_queue_to_dead_letters(stack: &Stack, dlq: &str) -> Vec<String> {
    let mut moved = Vec::new();
    let mut empty = 0;
    while empty < 3 {
        let output = stack
            .sqs
            .receive_message()
            .queue_url(&stack.resources.send_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if output.messages().is_empty() {
            empty += 1;
            continue;
        }
        for message in output.messages() {
            let body = message.body().unwrap().to_owned();
            stack
                .sqs
                .send_message()
                .queue_url(dlq)
                .message_body(&body)
                .send()
                .await
                .unwrap();
            stack
                .sqs
                .delete_message()
                .queue_url(&stack.resources.send_queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            moved.push(body);
        }
    }
    moved
}

async fn dead_letter_count(stack: &Stack, dlq: &str) -> u64 {
    let output = stack
        .sqs
        .get_queue_attributes()
        .queue_url(dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    output
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_runs_dead_letters_are_sent_once_and_other_runs_stay() {
    let stack = Stack::connect().await;
    let dlq = stack.vars["HIKYAKU_SEND_DLQ_URL"].clone();
    let scenario = Scenario::seed(&stack, ScenarioSpec::plain("resend", 120)).await;
    let (run, _) = stack.start_run(&scenario).await;
    let moved: Vec<String> = send_queue_to_dead_letters(&stack, &dlq)
        .await
        .into_iter()
        .filter(|body| SendJob::from_body(body).is_ok_and(|job| job.run() == run))
        .collect();
    assert!(!moved.is_empty());
    // A dead letter of another run.
    let other = SendJob::from_body(&moved[0]).unwrap();
    let mut other_job = other.clone();
    other_job.campaign_id = hikyaku_core::ids::CampaignId::parse("someone-else").unwrap();
    let before = dead_letter_count(&stack, &dlq).await;
    stack
        .sqs
        .send_message()
        .queue_url(&dlq)
        .message_body(other_job.to_body())
        .send()
        .await
        .unwrap();

    let id = scenario.campaign_id.as_str();
    let run_id = run.run_id.to_string();
    let report = hikyaku_json(
        &stack,
        &["campaign", "resend-failed", id, "--run", &run_id, "--json"],
    )
    .await;
    assert_eq!(report["jobs"], moved.len());
    assert_eq!(report["recipients"], scenario.eligible.len());
    assert!(report["other_runs"].as_u64().unwrap() >= 1, "{report:#}");
    stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
    assert_eq!(
        dead_letter_count(&stack, &dlq).await,
        before + 1 - moved.len() as u64
    );

    // The same job dead again: resent, and its recipients are found done.
    stack
        .sqs
        .send_message()
        .queue_url(&dlq)
        .message_body(&moved[0])
        .send()
        .await
        .unwrap();
    let again = hikyaku_json(
        &stack,
        &["campaign", "resend-failed", id, "--run", &run_id, "--json"],
    )
    .await;
    assert_eq!(again["jobs"], 1);
    stack
        .pump_until_finished(stack.pump_config(), &run, LIMIT)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
}
