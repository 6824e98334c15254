//! Headless Chromium for the HTML report tests: loads a page from a file, lets its script run,
//! and hands back the DOM as it stands then, with a reader for the drawn elements.
//!
//! `make test` installs Debian's `chromium` (`make chromium`) and passes its path in
//! `HIKYAKU_CHROMIUM`. The machine may have no network: Chromium is started without any of
//! its background fetches, with a profile of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Chromium binary: `HIKYAKU_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("HIKYAKU_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: `make chromium` installs it (`make test` does so by itself)",
        path.display()
    );
    path
}

/// The DOM of `page` after its scripts ran, as Chromium serialises it.
pub fn dump_dom(page: &Path) -> String {
    let profile = tempfile_dir("hikyaku-chromium-profile");
    let url = format!(
        "file://{}",
        page.canonicalize().expect("page exists").display()
    );
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium starts");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && !dom.is_empty(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

pub fn tempfile_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The attributes of every `<tag ...>` start tag in `dom` (values as serialised, entities
/// undone for `&amp;`, `&lt;`, `&gt;` and `&quot;`).
pub fn elements(dom: &str, tag: &str) -> Vec<HashMap<String, String>> {
    let open = format!("<{tag}");
    let mut found = Vec::new();
    let mut rest = dom;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find('>') else { break };
        let (head, tail) = (&after[..end], &after[end..]);
        rest = tail;
        if !head.is_empty() && !head.starts_with([' ', '\n', '\t', '/']) {
            continue; // a longer tag name (`<rectx`)
        }
        found.push(attributes(head));
    }
    found
}

fn attributes(mut head: &str) -> HashMap<String, String> {
    let mut attrs = HashMap::new();
    loop {
        head = head.trim_start();
        let Some(eq) = head.find('=') else { break };
        let name = head[..eq].trim().to_owned();
        let value_part = &head[eq + 1..];
        let Some(value_part) = value_part.strip_prefix('"') else {
            break;
        };
        let Some(close) = value_part.find('"') else {
            break;
        };
        let value = value_part[..close]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        attrs.insert(name, value);
        head = &value_part[close + 1..];
    }
    attrs
}

/// The elements of `tag` whose class list holds `class`.
pub fn with_class(dom: &str, tag: &str, class: &str) -> Vec<HashMap<String, String>> {
    elements(dom, tag)
        .into_iter()
        .filter(|attrs| {
            attrs
                .get("class")
                .is_some_and(|c| c.split_whitespace().any(|c| c == class))
        })
        .collect()
}

/// The `<svg>` element with `id`.
pub fn svg(dom: &str, id: &str) -> HashMap<String, String> {
    elements(dom, "svg")
        .into_iter()
        .find(|attrs| attrs.get("id").map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no <svg id=\"{id}\"> in the DOM"))
}

/// Checks that Chromium drew both charts of a report: one rate bar per bucket with the
/// bucket's sends, one outcome bar per outcome with its count.
pub fn assert_charts_drawn(dom: &str, report: &serde_json::Value) {
    let buckets = report["send_rate"]["buckets"].as_array().expect("buckets");
    let rate = svg(dom, "send-rate-chart");
    assert_eq!(
        rate.get("data-drawn").map(String::as_str),
        Some(buckets.len().to_string().as_str()),
        "the send-rate chart was not drawn: {rate:?}"
    );
    let bars = with_class(dom, "rect", "rate-bar");
    assert_eq!(bars.len(), buckets.len(), "one bar per bucket");
    for (bar, bucket) in bars.iter().zip(buckets) {
        assert_eq!(
            bar["data-sent"],
            bucket["sent"].as_u64().unwrap().to_string()
        );
        assert_eq!(bar["data-start"], bucket["start"].as_str().unwrap());
        let height: f64 = bar["height"].parse().unwrap();
        if bucket["sent"].as_u64().unwrap() > 0 {
            assert!(
                height > 0.0,
                "a bucket with sends has a visible bar: {bar:?}"
            );
        }
    }
    let tallest = bars
        .iter()
        .map(|b| b["height"].parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert!(
        tallest > 50.0,
        "the busiest bucket fills the chart: {tallest}"
    );

    let outcomes = svg(dom, "outcomes-chart");
    let drawn = with_class(dom, "rect", "outcome-bar");
    assert_eq!(
        outcomes.get("data-drawn").map(String::as_str),
        Some(drawn.len().to_string().as_str())
    );
    let value = |key: &str| -> u64 {
        drawn
            .iter()
            .find(|b| b["data-key"] == key)
            .unwrap_or_else(|| panic!("no outcome bar {key}"))["data-value"]
            .parse()
            .unwrap()
    };
    let d = &report["deliveries"];
    let o = &report["outcomes"];
    for (key, expected) in [
        ("sent", &d["sent"]),
        ("failed", &d["failed"]),
        ("suppressed", &d["suppressed"]),
        ("unsubscribed", &d["unsubscribed"]),
        ("uncertain", &d["uncertain"]),
        ("delivered", &o["delivered"]),
        ("opened", &o["opened"]),
        ("clicked", &o["clicked"]),
        ("hard_bounced", &o["hard_bounced"]),
        ("soft_bounced", &o["soft_bounced"]),
        ("complained", &o["complained"]),
    ] {
        assert_eq!(value(key), expected.as_u64().unwrap(), "outcome bar {key}");
    }
    // Bars are as long as their counts: the longest is the largest count.
    let widest = drawn
        .iter()
        .max_by(|a, b| {
            let w = |x: &HashMap<String, String>| x["width"].parse::<f64>().unwrap();
            w(a).total_cmp(&w(b))
        })
        .unwrap();
    let max = drawn
        .iter()
        .map(|b| b["data-value"].parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert_eq!(widest["data-value"].parse::<u64>().unwrap(), max);
}
