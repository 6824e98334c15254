//! The HTML report: one self-contained page. Its figures are HTML tables; its two charts (send
//! rate over time, outcomes) are drawn into inline SVG by the page's inline script from the
//! report's JSON, embedded in the page. It loads nothing: no scripts, styles, fonts or images
//! from anywhere, and its Content-Security-Policy forbids the browser to fetch any.

use chrono::{DateTime, Utc};
use handlebars::html_escape;
use serde_json::json;

use super::{RunReport, report_time};

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// What the page allows itself: its own inline style and script, nothing fetched.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'";

/// JSON that is safe inside a `<script>` element: `<`, `>` and `&` escaped, so no value can
/// end the element or open a comment.
fn script_json(value: &serde_json::Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn esc(text: &str) -> String {
    html_escape(text)
}

fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

fn share(n: u64, of: u64) -> String {
    percent(super::ratio(n, of))
}

/// `42.0 s`, `3 min 05 s`, `2 h 03 min`.
pub fn human_duration(seconds: f64) -> String {
    let secs = seconds.max(0.0) as u64;
    if secs < 60 {
        format!("{:.1} s", seconds.max(0.0))
    } else if secs < 3600 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60)
    }
}

fn per_second(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{r:.1}/s"))
}

fn rows(rows: &[(&str, u64)], of: u64) -> String {
    rows.iter()
        .map(|(label, n)| {
            format!(
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(label),
                count(*n),
                share(*n, of)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn verdict(judged: bool, over: bool) -> &'static str {
    match (judged, over) {
        (false, _) => "<span class=\"pending\">not judged yet</span>",
        (true, false) => "<span class=\"ok\">within limit</span>",
        (true, true) => "<span class=\"over\">over limit</span>",
    }
}

/// The page of `report`, generated at `generated_at`.
pub fn render(report: &RunReport, generated_at: DateTime<Utc>) -> String {
    let data = json!({ "report": report, "outcomes": report.outcome_bars() });
    let t = &report.timing;
    let d = &report.deliveries;
    let o = &report.outcomes;
    let r = &report.rates;
    let s = &report.send_rate;
    let audience = report.audience.selected;
    let title = format!(
        "Campaign {} — run {}",
        esc(report.campaign.as_str()),
        esc(report.run_id.as_str())
    );
    let ended = t.ended_at.map_or_else(
        || "not ended".to_owned(),
        |at| format!("ended <b>{}</b>", report_time(at)),
    );
    let notice = report
        .pause_reason
        .as_deref()
        .map(|reason| {
            format!(
                "<p class=\"notice\">The run is {}: {}</p>",
                esc(&report.phase),
                esc(reason)
            )
        })
        .unwrap_or_default();
    let canary = report
        .canary
        .as_deref()
        .map(|line| format!("<p class=\"meta\">Canary slice: {}</p>", esc(line)))
        .unwrap_or_default();
    let cards = [
        ("audience", count(audience)),
        ("sent", count(d.sent)),
        ("delivered", count(o.delivered)),
        ("bounced", count(o.bounced)),
        ("complained", count(o.complained)),
        ("send rate", per_second(s.average_per_second)),
    ]
    .iter()
    .map(|(label, value)| {
        format!(
            "<div class=\"card\"><div class=\"label\">{label}</div><div class=\"value\">{value}</div></div>"
        )
    })
    .collect::<Vec<_>>()
    .join("\n");
    let deliveries = rows(
        &[
            ("sent", d.sent),
            ("failed", d.failed),
            ("suppressed", d.suppressed),
            ("unsubscribed", d.unsubscribed),
            ("uncertain", d.uncertain),
            ("in flight", d.in_flight),
            ("outstanding", d.outstanding),
        ],
        audience,
    );
    let outcomes = rows(
        &[
            ("delivered", o.delivered),
            ("opened", o.opened),
            ("clicked", o.clicked),
            ("bounced (hard)", o.hard_bounced),
            ("bounced (soft)", o.soft_bounced),
            ("bounced (undetermined)", o.undetermined_bounced),
            ("auto-replies", o.auto_replied),
            ("complained", o.complained),
            ("rejected by SES", o.rejected),
            ("rendering failures", o.rendering_failed),
            ("delayed", o.delayed),
        ],
        d.sent,
    );
    let rates = format!(
        "<tr><td>bounce rate (hard bounces)</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>\n\
         <tr><td>complaint rate</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>\n\
         <tr><td>delivery rate (of sent)</td><td class=\"n\">{}</td><td></td><td></td></tr>\n\
         <tr><td>open rate (of delivered)</td><td class=\"n\">{}</td><td></td><td></td></tr>\n\
         <tr><td>click rate (of delivered)</td><td class=\"n\">{}</td><td></td><td></td></tr>",
        percent(r.bounce_rate),
        percent(Some(r.max_bounce_rate)),
        verdict(r.judged, r.bounce_over_limit),
        percent(r.complaint_rate),
        percent(Some(r.max_complaint_rate)),
        verdict(r.judged, r.complaint_over_limit),
        percent(r.delivery_rate),
        percent(r.open_rate),
        percent(r.click_rate),
    );
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p class="meta">list <b>{list}</b> · <b>{phase}</b> · started <b>{started}</b> · {ended} · elapsed <b>{elapsed}</b></p>
{notice}
{canary}
<div class="cards">
{cards}
</div>
<h2>Send rate over time</h2>
<figure>
<svg id="send-rate-chart" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Emails sent per second over time"></svg>
<figcaption>Sends SES accepted, per bucket of {bucket} s (the ledger's send times); average {average}, peak {peak}.</figcaption>
</figure>
<h2>Outcomes</h2>
<figure>
<svg id="outcomes-chart" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Recipients by outcome"></svg>
<figcaption>Recipients per outcome; shares are of the audience of {audience}.</figcaption>
</figure>
<noscript><p class="notice">The charts are drawn by this page's script; the tables hold the same figures.</p></noscript>
<h2>Recipients</h2>
<table>
<thead><tr><th>state</th><th class="n">recipients</th><th class="n">of audience</th></tr></thead>
<tbody>
<tr><td>audience (selected)</td><td class="n">{audience}</td><td class="n">{audience_share}</td></tr>
{deliveries}
</tbody>
</table>
<h2>What SES reported</h2>
<table>
<thead><tr><th>outcome</th><th class="n">recipients</th><th class="n">of sent</th></tr></thead>
<tbody>
{outcomes}
<tr><td>opens (events)</td><td class="n">{opens}</td><td></td></tr>
<tr><td>clicks (events)</td><td class="n">{clicks}</td><td></td></tr>
</tbody>
</table>
<h2>Rates</h2>
<p class="meta">Bounce and complaint rates are over the {resolved} sends whose fate SES reported; the campaign's guardrails judge them from {min_sends} on.</p>
<table>
<thead><tr><th>rate</th><th class="n">value</th><th class="n">limit</th><th>guardrail</th></tr></thead>
<tbody>
{rates}
</tbody>
</table>
<footer>hikyaku campaign report · campaign {campaign} · run {run_id} · generated {generated}</footer>
<script type="application/json" id="report-data">{data}</script>
<script>
{SCRIPT}</script>
</body>
</html>
"#,
        csp = CONTENT_SECURITY_POLICY,
        list = esc(report.list.as_str()),
        phase = esc(&report.phase),
        started = report_time(t.started_at),
        elapsed = human_duration(t.elapsed_seconds),
        bucket = s.bucket_seconds,
        average = per_second(s.average_per_second),
        peak = per_second(s.peak_per_second),
        audience = count(audience),
        audience_share = share(audience, audience),
        opens = count(o.opens),
        clicks = count(o.clicks),
        resolved = count(r.resolved_sends),
        min_sends = count(r.min_sends),
        campaign = esc(report.campaign.as_str()),
        run_id = esc(report.run_id.as_str()),
        generated = report_time(generated_at),
        data = script_json(&data),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::Guardrails;
    use crate::ids::{CampaignId, ListId, RunId, RunRef};
    use crate::report::Tally;
    use crate::report::tests::{at, ledger};
    use crate::run::{RunRecord, RunState};

    fn report(pause_reason: Option<&str>) -> RunReport {
        let run = RunRef::new(
            CampaignId::parse("winter").unwrap(),
            RunId::from_scheduled_time(at(0)),
        );
        let mut record = RunRecord::new(run, ListId::parse("news").unwrap(), at(0));
        record.progress.selected = 10;
        record.fanout_complete = true;
        record.state = if pause_reason.is_some() {
            RunState::Paused
        } else {
            RunState::Sending
        };
        record.pause_reason = pause_reason.map(str::to_owned);
        RunReport::new(
            record,
            &Tally::of(&ledger()),
            Guardrails {
                max_bounce_rate: 0.05,
                max_complaint_rate: 0.001,
                min_sends: 4,
            },
            at(500),
        )
    }

    /// The JSON the page's script draws from.
    fn embedded_data(page: &str) -> serde_json::Value {
        let start = page
            .find("<script type=\"application/json\" id=\"report-data\">")
            .expect("data element")
            + "<script type=\"application/json\" id=\"report-data\">".len();
        let end = start + page[start..].find("</script>").expect("data element ends");
        serde_json::from_str(&page[start..end]).expect("the data is JSON")
    }

    #[test]
    fn the_page_loads_nothing_from_anywhere() {
        let page = render(&report(None), at(600));
        // The only URL is the SVG namespace, which is a name, not a fetch.
        let urls: Vec<&str> = page
            .match_indices("http")
            .map(|(i, _)| &page[i..(i + 26).min(page.len())])
            .collect();
        assert!(
            urls.iter()
                .all(|u| u.starts_with("http://www.w3.org/2000/svg")
                    || u.starts_with("http-equiv")),
            "{urls:?}"
        );
        for forbidden in [
            "<link",
            " src=",
            "href=",
            "@import",
            "url(",
            "@font-face",
            "fetch(",
            "XMLHttpRequest",
        ] {
            assert!(!page.contains(forbidden), "{forbidden} in the page");
        }
        assert!(page.contains(CONTENT_SECURITY_POLICY));
        assert!(page.contains("default-src 'none'"));
    }

    #[test]
    fn the_page_embeds_the_report_and_the_charts_bars() {
        let report = report(None);
        let page = render(&report, at(600));
        let data = embedded_data(&page);
        assert_eq!(data["report"]["deliveries"]["sent"], 6);
        assert_eq!(
            data["report"]["send_rate"]["buckets"]
                .as_array()
                .unwrap()
                .len(),
            report.send_rate.buckets.len()
        );
        let bars = data["outcomes"].as_array().unwrap();
        assert_eq!(bars.len(), report.outcome_bars().len());
        assert_eq!(bars[0]["key"], "sent");
        assert_eq!(bars[0]["value"], 6);
        assert!(page.contains("id=\"send-rate-chart\""));
        assert!(page.contains("id=\"outcomes-chart\""));
        assert!(page.contains("<title>Campaign winter — run 20261224T090000Z</title>"));
        assert!(page.contains("<span class=\"over\">over limit</span>"));
        assert!(page.contains("ended <b>2026-12-24T09:01:12Z</b>"));
        assert!(page.contains("elapsed <b>1 min 12 s</b>"));
    }

    #[test]
    fn text_from_the_store_cannot_break_out_of_the_page() {
        let page = render(
            &report(Some("</script><script>alert(1)</script> & <b>")),
            at(600),
        );
        assert!(!page.contains("<script>alert(1)"));
        assert!(
            page.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;")
        );
        // In the embedded JSON the reason survives, escaped for the script element.
        let data = embedded_data(&page);
        assert_eq!(
            data["report"]["pause_reason"],
            "</script><script>alert(1)</script> & <b>"
        );
        assert_eq!(page.matches("</script>").count(), 2);
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(human_duration(4.2), "4.2 s");
        assert_eq!(human_duration(185.0), "3 min 05 s");
        assert_eq!(human_duration(7380.0), "2 h 03 min");
    }
}
