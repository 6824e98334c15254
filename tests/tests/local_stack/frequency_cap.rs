//! The frequency cap on the local stack: a second run of a campaign with
//! `skip_mailed_within_days` leaves out everyone the first run mailed, reading the contacts'
//! last sends from DynamoDB.

use std::time::Duration;

use hikyaku_core::ports::RunStore;

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_second_run_skips_the_contacts_the_first_one_mailed() {
    let stack = Stack::connect().await;
    let scenario = Scenario::seed(
        &stack,
        ScenarioSpec {
            extra_toml: "[limits]\nskip_mailed_within_days = 7",
            filtered_every: 5,
            ..ScenarioSpec::plain("frequency-cap", 40)
        },
    )
    .await;
    let (first, _) = stack.start_run(&scenario).await;
    let (_, status) = stack
        .pump_until_finished(stack.pump_config(), &first, LIMIT)
        .await;
    assert_eq!(status.record.progress.recently_mailed, 0);
    assert_eq!(status.counts.sent as usize, scenario.eligible.len());

    // A run id is the scheduled second: the next run starts a second later.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (second, _) = stack.start_run(&scenario).await;
    let record = stack.runs.get(&second).await.unwrap().expect("second run");
    assert!(record.fanout_complete);
    let progress = &record.progress;
    assert_eq!(progress.recently_mailed as usize, scenario.eligible.len());
    assert_eq!(progress.selected, 0);
    assert_eq!(progress.messages, 0);
    assert_eq!(progress.filtered as usize, scenario.filtered.len());
    // Nobody got a second copy.
    scenario.assert_each_eligible_got_exactly_one(&stack).await;
}
