//! The HTML report in a real browser: headless Chromium loads a report page from a file and
//! its script draws the charts; the DOM afterwards holds one bar per send-rate bucket and one
//! per outcome, with the report's figures. Needs no local stack, only Chromium (`make test`
//! installs it; see tests/support/chromium.rs).

#[path = "support/chromium.rs"]
mod chromium;

use chrono::{DateTime, Duration, TimeZone, Utc};
use hikyaku_core::email::EmailAddress;
use hikyaku_core::feedback::{Guardrails, Mark, Marks};
use hikyaku_core::ids::{CampaignId, ListId, RunId, RunRef};
use hikyaku_core::ledger::{DeliveryRecord, DeliveryState};
use hikyaku_core::report::{RunReport, Tally, html};
use hikyaku_core::run::{RunRecord, RunState};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 24, 9, 0, 0).unwrap() + Duration::seconds(secs)
}

/// 300 recipients over 100 seconds at a rate that ramps up: 290 sent (every 20th bounced
/// hard, every 50th complained after its delivery, every 10th opened), 6 failed, 4 suppressed.
fn ledger() -> Vec<DeliveryRecord> {
    (0..300)
        .map(|i: i64| {
            let (state, reason) = match i {
                290..=295 => (
                    DeliveryState::Failed,
                    Some("MessageRejected: bad".to_owned()),
                ),
                296..=299 => (DeliveryState::Suppressed, Some("complaint".to_owned())),
                _ => (DeliveryState::Sent, None),
            };
            // Faster and faster: the i-th send at 10·sqrt(i) seconds.
            let sent_at = at(10 + (10.0 * (i as f64).sqrt()) as i64);
            let mut marks = Marks::default();
            if state == DeliveryState::Sent {
                if i % 20 == 0 {
                    marks.record(Mark::HardBounced, sent_at + Duration::seconds(2));
                } else {
                    marks.record(Mark::Delivered, sent_at + Duration::seconds(1));
                    if i % 50 == 1 {
                        marks.record(Mark::Complained, sent_at + Duration::seconds(9));
                    }
                    if i % 10 == 3 {
                        marks.record(Mark::Opened, sent_at + Duration::seconds(30));
                    }
                }
            }
            DeliveryRecord {
                email: EmailAddress::parse(&format!("reader-{i:03}@example.com")).unwrap(),
                state,
                claim_token: Some("t".into()),
                claimed_at: Some(sent_at),
                ses_message_id: (state == DeliveryState::Sent).then(|| format!("m-{i}")),
                reason,
                updated_at: sent_at,
                marks,
                feedback_detail: None,
            }
        })
        .collect()
}

#[test]
fn chromium_draws_the_send_rate_and_outcome_charts_of_a_report() {
    let run = RunRef::new(
        CampaignId::parse("winter").unwrap(),
        RunId::from_scheduled_time(at(0)),
    );
    let mut record = RunRecord::new(run, ListId::parse("news").unwrap(), at(0));
    record.state = RunState::Sending;
    record.fanout_complete = true;
    record.progress.selected = 300;
    let report = RunReport::new(
        record,
        &Tally::of(&ledger()),
        Guardrails {
            max_bounce_rate: 0.1,
            max_complaint_rate: 0.01,
            min_sends: 100,
        },
        at(600),
    );
    assert_eq!(report.deliveries.sent, 290);
    assert_eq!(report.outcomes.hard_bounced, 15);
    // Sends from 10 s to about 183 s: 5-second buckets.
    assert_eq!(report.send_rate.bucket_seconds, 5);
    assert!(report.send_rate.buckets.len() > 30);

    let dir = chromium::tempfile_dir("hikyaku-html-report");
    let page = dir.join("report.html");
    std::fs::write(&page, html::render(&report, at(600))).unwrap();
    let dom = chromium::dump_dom(&page);
    let json = serde_json::to_value(&report).unwrap();
    chromium::assert_charts_drawn(&dom, &json);
    assert_eq!(
        chromium::svg(&dom, "send-rate-chart")["data-total"],
        "290",
        "the chart counted every send"
    );
    // The script drew axis labels too, not only bars.
    assert!(dom.contains("buckets of 5 s; 290 emails"), "{dom}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chromium_shows_a_run_without_sends_as_such() {
    let run = RunRef::new(
        CampaignId::parse("winter").unwrap(),
        RunId::from_scheduled_time(at(0)),
    );
    let mut record = RunRecord::new(run, ListId::parse("news").unwrap(), at(0));
    record.progress.selected = 10;
    let report = RunReport::new(
        record,
        &Tally::default(),
        hikyaku_core::campaign::Limits::default().guardrails(),
        at(5),
    );
    let dir = chromium::tempfile_dir("hikyaku-html-empty");
    let page = dir.join("report.html");
    std::fs::write(&page, html::render(&report, at(5))).unwrap();
    let dom = chromium::dump_dom(&page);
    assert_eq!(chromium::svg(&dom, "send-rate-chart")["data-drawn"], "0");
    assert!(dom.contains("No sends recorded yet."), "{dom}");
    assert!(chromium::with_class(&dom, "rect", "rate-bar").is_empty());
    assert_eq!(chromium::svg(&dom, "outcomes-chart")["data-drawn"], "12");
    let _ = std::fs::remove_dir_all(&dir);
}
