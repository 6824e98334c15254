#!/usr/bin/env bash
# The demo: a real campaign on the local stack, from a contacts file to mail in the SES
# emulator's inbox. Called by `make demo` once the stack (with its pump) is up.
set -euo pipefail

: "${HIKYAKU:?path to the hikyaku binary}" "${STACK_ENV:?path to .local/stack.env}"
SES_URL=${SES_URL:-http://127.0.0.1:8005}
CAMPAIGN=winter-newsletter
LIST=newsletter
WORK=$(dirname "$STACK_ENV")/demo
mkdir -p "$WORK"

set -a
# shellcheck disable=SC1090
. "$STACK_ENV"
set +a

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Importing examples/contacts.csv into list '$LIST'"
"$HIKYAKU" --json contacts import examples/contacts.csv --list "$LIST" >"$WORK/import.json"
python3 - "$WORK/import.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"  rows {report['rows']}, imported {report['imported']}, "
      f"invalid {report['invalid_rows']}, duplicates merged {report['duplicates_merged']}")
for row in report["invalid"]:
    print(f"  line {row['line']}: {row['reason']}")
PY

step "Suppressing the addresses in examples/suppressions.txt"
"$HIKYAKU" suppression import examples/suppressions.txt --reason manual

step "Creating the campaign from examples/campaign.toml"
"$HIKYAKU" campaign create examples/campaign.toml

step "Previewing it for one contact"
"$HIKYAKU" campaign preview "$CAMPAIGN" --contact chloe.takahashi.0001@example.org \
    --out "$WORK/preview.html"
echo "(HTML written to $WORK/preview.html)"

step "Starting a run and waiting for it to finish"
"$HIKYAKU" campaign start "$CAMPAIGN" --wait --timeout 900

step "Waiting for SES's feedback (deliveries, bounces, complaints) to arrive"
# The mailbox simulator's events travel SNS and the feedback function on their own time.
for _ in $(seq 1 240); do
    "$HIKYAKU" --json campaign status "$CAMPAIGN" >"$WORK/status.json"
    if python3 - "$WORK/status.json" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
sent = status["run"]["counts"]["sent"]
feedback = status["run"]["record"]["feedback"]
resolved = feedback["delivered"] + feedback["hard_bounced"]
sys.exit(0 if resolved >= sent else 1)
PY
    then
        break
    fi
    sleep 1
done

step "Report"
"$HIKYAKU" --json campaign status "$CAMPAIGN" >"$WORK/status.json"
python3 - "$WORK/import.json" "$WORK/status.json" "$SES_URL" <<'PY'
import json, sys, urllib.request

imported = json.load(open(sys.argv[1]))
status = json.load(open(sys.argv[2]))
store = json.load(urllib.request.urlopen(sys.argv[3] + "/store"))

progress = status["run"]["record"]["progress"]
counts = status["run"]["counts"]
feedback = status["run"]["record"]["feedback"]
rates = status["rates"]

def percent(rate):
    return "-" if rate is None else f"{rate * 100:.2f}%"

elapsed = status["elapsed_seconds"]
rate = status["send_rate"]
rows = [
    ("contacts file rows", imported.get("rows")),
    ("invalid rows (reported, skipped)", imported.get("invalid_rows")),
    ("duplicates merged", imported.get("duplicates_merged")),
    ("contacts read by the run", progress.get("contacts_read")),
    ("audience (selected by the segment)", progress.get("selected")),
    ("filtered out by the segment", progress.get("filtered")),
    ("suppressed at send time", counts.get("suppressed")),
    ("sent", counts.get("sent")),
    ("failed", counts.get("failed")),
    ("uncertain", counts.get("uncertain")),
    ("delivered (SES feedback)", feedback.get("delivered")),
    ("bounced hard (now suppressed)", feedback.get("hard_bounced")),
    ("bounced soft", feedback.get("soft_bounced")),
    ("out-of-office replies", feedback.get("auto_replied")),
    ("complained (now suppressed)", feedback.get("complained")),
    ("bounce rate", f"{percent(rates['bounce_rate'])} (limit {percent(rates['max_bounce_rate'])})"),
    ("complaint rate", f"{percent(rates['complaint_rate'])} (limit {percent(rates['max_complaint_rate'])})"),
    ("run state", status.get("phase")),
    ("elapsed", f"{elapsed:.1f} s" if isinstance(elapsed, (int, float)) else elapsed),
    ("send rate", f"{rate:.1f} emails/s" if isinstance(rate, (int, float)) else rate),
    ("messages in the SES inbox", len(store.get("emails", []))),
]
width = max(len(label) for label, _ in rows)
print()
for label, value in rows:
    print(f"  {label:<{width}}  {value if value is not None else '-'}")
PY

step "Suppressions the feedback recorded (kind automatic)"
"$HIKYAKU" suppression list --kind automatic

cat <<TXT

The mail is in the SES emulator's inbox: open $SES_URL in a browser.
The stack keeps running so you can look around; \`make local-down\` stops it.
TXT
