#!/usr/bin/env python3
"""Writes the demo's contact list and suppression list, deterministically.

    python3 examples/generate_contacts.py        # rewrites examples/contacts.csv and suppressions.txt

contacts.csv: 1,200 contacts on example.com / example.org / example.net with the columns
email, first_name, last_name, city, mail_allowed (0/1) and account_type (1/2/3). About 60% match
the demo segment `mail_allowed == 1 && account_type == 2`. Mixed in, on purpose:
  - 3 rows repeating an earlier address (domain in another case, a new city): merged on import,
    the later row's values winning;
  - 7 invalid rows, each reported with its line and reason: two '@', a display name, no '@',
    a line break inside a quoted address (a header-injection attempt), a local part longer than
    64 octets, an empty address, a missing field;
  - quoted fields holding commas, and names in Japanese and with accents.
  - at the end, 24 contacts within the segment at the SES mailbox simulator's addresses
    (`bounce+...@simulator.amazonses.com` and the like): the local stack's simulator answers
    them with the bounces, complaints and auto-replies SES would, so the run's feedback has
    something to show.
suppressions.txt: 20 addresses of contacts within the segment (so the run reports them as
suppressed instead of sending), 2 outside it and 1 that is not a contact, with comments.

The numbers come from a seeded generator that uses nothing but random(), whose sequence Python
keeps stable, so every run writes the same files.
"""

import csv
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20260101
CONTACTS = 1200
DOMAINS = ["example.com", "example.org", "example.net"]

# (as written, ASCII form for the address)
FIRST_NAMES = [
    ("Aiko", "aiko"), ("Haruto", "haruto"), ("Yui", "yui"), ("Sota", "sota"),
    ("Mei", "mei"), ("Riku", "riku"), ("Hina", "hina"), ("Kaito", "kaito"),
    ("太郎", "taro"), ("花子", "hanako"), ("翔太", "shota"), ("さくら", "sakura"),
    ("Emma", "emma"), ("Liam", "liam"), ("Olivia", "olivia"), ("Noah", "noah"),
    ("Zoé", "zoe"), ("Éloïse", "eloise"), ("José", "jose"), ("Renée", "renee"),
    ("Søren", "soren"), ("Chloé", "chloe"), ("Björn", "bjorn"), ("Inès", "ines"),
]
LAST_NAMES = [
    ("Tanaka", "tanaka"), ("Suzuki", "suzuki"), ("Takahashi", "takahashi"),
    ("Watanabe", "watanabe"), ("Ito", "ito"), ("Nakamura", "nakamura"),
    ("山田", "yamada"), ("佐藤", "sato"), ("小林", "kobayashi"),
    ("Smith", "smith"), ("Smith, Jr.", "smithjr"), ("García", "garcia"),
    ("Müller", "muller"), ("Dubois", "dubois"), ("Lefèvre", "lefevre"), ("O'Brien", "obrien"),
]
CITIES = [
    "Tokyo", "Osaka", "Kyoto", "Sapporo", "Fukuoka", "東京", "大阪",
    "Paris", "Montréal", "Zürich", "São Paulo", "Berlin", "London",
    "Washington, D.C.", "Portland, Oregon", "New York",
]

# Mailbox simulator contacts (all within the segment), appended after the others: how many of
# each mailbox. `+label` keeps each address distinct; SES treats it as the bare mailbox.
SIMULATOR = [("bounce", 8), ("complaint", 1), ("ooto", 6), ("suppressionlist", 3), ("success", 6)]

# Data-row positions (0-based among all data rows) of the mixed-in rows.
DUPLICATE_AT = {150: 12, 640: 401, 1101: 777}  # position -> index of the contact repeated
INVALID_ROWS = {
    90: ["kenji.watanabe@@example.com", "Kenji", "Watanabe", "Tokyo", "1", "2"],
    233: ["Yuki Sato <yuki.sato@example.com>", "Yuki", "Sato", "Osaka", "1", "2"],
    377: ["hana.kobayashi.example.org", "Hana", "Kobayashi", "Kyoto", "1", "2"],
    512: ["ren.ito@example.net\nBcc: everyone@example.org", "Ren", "Ito", "Tokyo", "1", "2"],
    768: ["x" * 65 + "@example.com", "Long", "Local", "Paris", "1", "2"],
    905: ["", "Nobody", "Atall", "Berlin", "1", "2"],
    1050: ["sora.kato@example.com", "Sora", "Kato", "Osaka", "1"],
}


def pick(rng, items):
    return items[int(rng.random() * len(items))]


def make_contacts(rng):
    contacts = []
    for i in range(CONTACTS):
        first, first_ascii = pick(rng, FIRST_NAMES)
        last, last_ascii = pick(rng, LAST_NAMES)
        domain = DOMAINS[i % len(DOMAINS)]
        contacts.append({
            "email": f"{first_ascii}.{last_ascii}.{i:04d}@{domain}",
            "first_name": first,
            "last_name": last,
            "city": pick(rng, CITIES),
            # 80% allow mail and 75% have account type 2: about 60% are in the segment.
            "mail_allowed": 1 if rng.random() < 0.80 else 0,
            "account_type": 2 if rng.random() < 0.75 else (1 if rng.random() < 0.5 else 3),
        })
    return contacts


def in_segment(contact):
    return contact["mail_allowed"] == 1 and contact["account_type"] == 2


def main():
    rng = random.Random(SEED)
    contacts = make_contacts(rng)
    columns = ["email", "first_name", "last_name", "city", "mail_allowed", "account_type"]

    rows = []
    next_contact = 0
    total_rows = CONTACTS + len(DUPLICATE_AT) + len(INVALID_ROWS)
    for position in range(total_rows):
        if position in INVALID_ROWS:
            rows.append(INVALID_ROWS[position])
        elif position in DUPLICATE_AT:
            original = contacts[DUPLICATE_AT[position]]
            assert DUPLICATE_AT[position] < next_contact, "a duplicate must follow its original"
            local, domain = original["email"].split("@")
            original["city"] = "Nagoya"  # the later row wins
            rows.append([f"{local}@{domain.upper()}", original["first_name"],
                         original["last_name"], "Nagoya",
                         str(original["mail_allowed"]), str(original["account_type"])])
        else:
            c = contacts[next_contact]
            next_contact += 1
            rows.append([c["email"], c["first_name"], c["last_name"], c["city"],
                         str(c["mail_allowed"]), str(c["account_type"])])
    assert next_contact == CONTACTS
    simulated = 0
    for mailbox, count in SIMULATOR:
        for n in range(count):
            simulated += 1
            rows.append([f"{mailbox}+reader{n + 1:02d}@simulator.amazonses.com", "Sim",
                         mailbox.capitalize(), "Seattle", "1", "2"])

    with open(HERE / "contacts.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)

    segment = [c for c in contacts if in_segment(c)]
    outside = [c for c in contacts if not in_segment(c)]
    # Every 20th contact of the segment, from the 5th: spread over the file.
    suppressed = segment[5::len(segment) // 20][:20]
    suppressed_outside = outside[3:5]
    with open(HERE / "suppressions.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write("# Addresses that must never be mailed: one a line, '#' starts a comment.\n")
        f.write("# Load with: hikyaku suppression import examples/suppressions.txt --reason manual\n")
        f.write("# Generated by examples/generate_contacts.py.\n\n")
        f.write("# Contacts within the demo segment: the run records them as suppressed.\n")
        for c in suppressed:
            f.write(c["email"] + "\n")
        f.write("\n# Contacts outside the segment: the run never selects them anyway.\n")
        for c in suppressed_outside:
            f.write(c["email"] + "\n")
        f.write("\n# Not a contact of the list.\n")
        f.write("unsubscribed.long.ago@example.org\n")

    summary = {
        "data rows": len(rows),
        "valid rows": CONTACTS + len(DUPLICATE_AT) + simulated,
        "simulator contacts": simulated,
        "invalid rows": len(INVALID_ROWS),
        "duplicates merged": len(DUPLICATE_AT),
        "contacts": CONTACTS,
        "in the segment": len(segment),
        "outside the segment": len(outside),
        "suppressed in the segment": len(suppressed),
        "to be sent": len(segment) - len(suppressed) + simulated,
    }
    for name, value in summary.items():
        print(f"{name:>26}: {value}", file=sys.stderr)


if __name__ == "__main__":
    main()
