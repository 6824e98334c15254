//! Keeps every adapter's `OPERATIONS` true to its code, by reading the adapters' own sources.
//!
//! An AWS operation shows in the source as a method call on a client: `client.get_item()`,
//! `self.client\n    .query()`, `self.client_for(region).send_email()`, or as a call of one of
//! `dynamodb/write.rs`'s helpers, whose own bodies are read the same way. Each operation found is
//! turned into the IAM action that authorises it (`get_item` in a DynamoDB module is
//! `dynamodb:GetItem`) and compared both ways with what the adapters of that module declare:
//! per adapter for the code in its `impl` blocks, per module for free functions.
//!
//! The infrastructure test (tests/tests/infra_template.rs) then holds the deployed IAM policies
//! to the declared lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::dynamodb::{
    DynamoBudget, DynamoCampaigns, DynamoContacts, DynamoLedger, DynamoRejects, DynamoRuns,
    DynamoSuppressions, DynamoTables,
};
use crate::roles::RoleAssumer;
use crate::scheduler::SchedulerSchedules;
use crate::ses::{SesAccount, SesSetup};
use crate::sns::SnsTopics;
use crate::sqs::{SqsDeadLetters, SqsQueues};
use crate::{FunctionInvoker, SesSender, SqsJobQueue};

/// An adapter's type and the IAM actions it declares.
type Adapter = (&'static str, &'static [&'static str]);

/// Every module under src/ that talks to AWS, with its IAM service prefix and its adapters.
const ADAPTER_MODULES: &[(&str, &str, &[Adapter])] = &[
    (
        "dynamodb/budget.rs",
        "dynamodb",
        &[("DynamoBudget", DynamoBudget::OPERATIONS)],
    ),
    (
        "dynamodb/campaigns.rs",
        "dynamodb",
        &[("DynamoCampaigns", DynamoCampaigns::OPERATIONS)],
    ),
    (
        "dynamodb/contacts.rs",
        "dynamodb",
        &[("DynamoContacts", DynamoContacts::OPERATIONS)],
    ),
    (
        "dynamodb/deliveries.rs",
        "dynamodb",
        &[
            ("DynamoLedger", DynamoLedger::OPERATIONS),
            ("DynamoRejects", DynamoRejects::OPERATIONS),
        ],
    ),
    (
        "dynamodb/runs.rs",
        "dynamodb",
        &[("DynamoRuns", DynamoRuns::OPERATIONS)],
    ),
    (
        "dynamodb/suppressions.rs",
        "dynamodb",
        &[("DynamoSuppressions", DynamoSuppressions::OPERATIONS)],
    ),
    (
        "ses.rs",
        "ses",
        &[
            ("SesSender", SesSender::OPERATIONS),
            ("SesAccount", SesAccount::OPERATIONS),
            ("SesSetup", SesSetup::OPERATIONS),
        ],
    ),
    (
        "sqs.rs",
        "sqs",
        &[
            ("SqsJobQueue", SqsJobQueue::OPERATIONS),
            ("SqsQueues", SqsQueues::OPERATIONS),
            ("SqsDeadLetters", SqsDeadLetters::OPERATIONS),
        ],
    ),
    ("sns.rs", "sns", &[("SnsTopics", SnsTopics::OPERATIONS)]),
    (
        "dynamodb/tables.rs",
        "dynamodb",
        &[("DynamoTables", DynamoTables::OPERATIONS)],
    ),
    (
        "roles.rs",
        "sts",
        &[("RoleAssumer", RoleAssumer::OPERATIONS)],
    ),
    (
        "lambda.rs",
        "lambda",
        &[("FunctionInvoker", FunctionInvoker::OPERATIONS)],
    ),
    (
        "scheduler.rs",
        "scheduler",
        &[("SchedulerSchedules", SchedulerSchedules::OPERATIONS)],
    ),
];

/// Modules without adapters of their own. `dynamodb/write.rs` holds the conditional-write
/// helpers, whose operations count where they are called.
const OTHER_MODULES: &[&str] = &[
    "config.rs",
    "setup.rs",
    "error.rs",
    "retry.rs",
    "dynamodb/mod.rs",
    "dynamodb/item.rs",
    "dynamodb/write.rs",
];

/// Operations an aws-config credentials provider calls for the code that builds it.
const PROVIDER_OPERATIONS: &[(&str, &str)] = &[("AssumeRoleProvider::builder(", "assume_role")];

/// Client methods that are not AWS operations.
const NOT_OPERATIONS: &[&str] = &["clone", "config", "to_owned"];

fn source(module: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(module);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The module's code without its tests (items under `#[cfg(test)]`) and comments, as lines.
fn code_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_test = false;
    for line in text.lines() {
        if line == "#[cfg(test)]" {
            in_test = true;
            continue;
        }
        if in_test {
            // The gated item ends at its closing brace, or is one line.
            in_test = !(line == "}" || (!line.starts_with(' ') && line.ends_with(';')));
            continue;
        }
        lines.push(match line.find("//") {
            // No string literal of the adapters holds "//" before a call worth seeing.
            Some(at) => line[..at].to_owned(),
            None => line.to_owned(),
        });
    }
    lines
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names of the argument-less methods called on a client in `code`: `<…client>.name()` or
/// `<…client…>(…).name()`.
fn client_calls(code: &str) -> BTreeSet<String> {
    let bytes: Vec<char> = code.chars().collect();
    let mut found = BTreeSet::new();
    for (at, _) in code.char_indices().filter(|&(_, c)| c == '.') {
        let at = code[..at].chars().count();
        let rest: String = bytes[at + 1..].iter().collect();
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if name.is_empty() || !rest[name.len()..].starts_with("()") {
            continue;
        }
        // What the method is called on, going back over whitespace and one call's arguments.
        let mut end = at;
        while end > 0 && bytes[end - 1].is_whitespace() {
            end -= 1;
        }
        if end > 0 && bytes[end - 1] == ')' {
            let mut depth = 0;
            let mut open = end;
            while open > 0 {
                open -= 1;
                match bytes[open] {
                    ')' => depth += 1,
                    '(' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            end = open;
        }
        let start = (0..end)
            .rev()
            .find(|&i| !is_ident(bytes[i]))
            .map_or(0, |i| i + 1);
        let receiver: String = bytes[start..end].iter().collect();
        if receiver.contains("client") && !NOT_OPERATIONS.contains(&name.as_str()) {
            found.insert(name);
        }
    }
    found
}

/// The top-level items of `lines` that span lines, each with its first line, and everything else
/// as one more entry with an empty first line. rustfmt puts such an item's closing `}` (or `};`,
/// `];`, `);`) alone at the start of a line.
fn blocks(lines: &[String]) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut rest = String::new();
    let mut open: Option<(String, String)> = None;
    for line in lines {
        let starts_block = open.is_none()
            && !line.trim().is_empty()
            && !line.starts_with(char::is_whitespace)
            && !line.starts_with("#[")
            && !line.trim_end().ends_with(';');
        if starts_block {
            open = Some((line.clone(), String::new()));
        }
        match open.as_mut() {
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
                if matches!(line.trim_end(), "}" | "};" | "];" | ");") {
                    blocks.extend(open.take());
                }
            }
            None => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    blocks.extend(open);
    blocks.push((String::new(), rest));
    blocks
}

/// The type an `impl` header implements: `impl EmailSender for SesSender {` → `SesSender`.
fn implemented_type(header: &str) -> Option<String> {
    let header = header.strip_prefix("impl")?.trim_end_matches('{').trim();
    let last = header.rsplit(' ').next().unwrap_or(header);
    Some(last.chars().take_while(|&c| is_ident(c)).collect())
}

/// `get_item` → `GetItem`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The IAM action of SDK operation `snake` of `service`.
fn iam_action(service: &str, snake: &str) -> String {
    let operation = pascal(snake);
    let action = match (service, operation.as_str()) {
        ("lambda", "Invoke") => "InvokeFunction".to_owned(),
        // SQS authorises each batch operation by its single-message action.
        ("sqs", batch) if batch.ends_with("Batch") => batch.trim_end_matches("Batch").to_owned(),
        _ => operation,
    };
    format!("{service}:{action}")
}

/// The helpers of dynamodb/write.rs and the operations each calls, itself or through another.
fn write_helpers() -> BTreeMap<String, BTreeSet<String>> {
    let lines = code_lines(&source("dynamodb/write.rs"));
    let mut bodies = BTreeMap::new();
    for (header, text) in blocks(&lines) {
        let Some(rest) = header.strip_prefix("pub(crate) async fn ") else {
            continue;
        };
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        bodies.insert(name, text);
    }
    assert!(!bodies.is_empty(), "write.rs has no helpers");
    let mut helpers: BTreeMap<String, BTreeSet<String>> = bodies
        .iter()
        .map(|(name, body)| (name.clone(), client_calls(body)))
        .collect();
    loop {
        let before = helpers.clone();
        for (name, body) in &bodies {
            let called = operations_in(body, &before);
            helpers.get_mut(name).expect("a helper").extend(called);
        }
        if helpers == before {
            break;
        }
    }
    for (name, calls) in &helpers {
        assert!(
            !calls.is_empty(),
            "write.rs helper {name} calls no operation"
        );
    }
    helpers
}

/// The SDK operations `text` calls, directly or through a write.rs helper.
fn operations_in(text: &str, helpers: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut found = client_calls(text);
    for (builder, operation) in PROVIDER_OPERATIONS {
        if text.contains(builder) {
            found.insert((*operation).to_owned());
        }
    }
    for (helper, calls) in helpers {
        let called = text.match_indices(helper.as_str()).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + helper.len()..].chars().next();
            !before.is_some_and(is_ident) && after == Some('(')
        });
        if called {
            found.extend(calls.iter().cloned());
        }
    }
    found
}

#[test]
fn every_adapters_operations_are_the_ones_its_code_calls() {
    let helpers = write_helpers();
    for (module, service, adapters) in ADAPTER_MODULES {
        let lines = code_lines(&source(module));
        let mut per_adapter: BTreeMap<&str, BTreeSet<String>> = adapters
            .iter()
            .map(|(name, _)| (*name, BTreeSet::new()))
            .collect();
        let mut unattributed = BTreeSet::new();
        for (header, text) in blocks(&lines) {
            let actions: BTreeSet<String> = operations_in(&text, &helpers)
                .iter()
                .map(|op| iam_action(service, op))
                .collect();
            match implemented_type(&header).and_then(|ty| per_adapter.get_mut(ty.as_str())) {
                Some(set) => set.extend(actions),
                None => unattributed.extend(actions),
            }
        }
        let declared_anywhere: BTreeSet<String> = adapters
            .iter()
            .flat_map(|(_, ops)| ops.iter().map(|op| op.to_string()))
            .collect();
        let undeclared: Vec<_> = unattributed.difference(&declared_anywhere).collect();
        assert!(
            undeclared.is_empty(),
            "{module}: code outside its adapters calls {undeclared:?}, which no adapter declares"
        );
        for (adapter, declared) in adapters.iter() {
            let declared: BTreeSet<String> = declared.iter().map(|op| op.to_string()).collect();
            let called = &per_adapter[adapter];
            let missing: Vec<_> = called.difference(&declared).collect();
            assert!(
                missing.is_empty(),
                "{module}: {adapter} calls {missing:?}; add them to {adapter}::OPERATIONS"
            );
            let unused: Vec<_> = declared
                .difference(called)
                .filter(|op| !unattributed.contains(*op))
                .collect();
            assert!(
                unused.is_empty(),
                "{module}: {adapter}::OPERATIONS lists {unused:?}, which its code never calls"
            );
        }
    }
}

#[test]
fn every_module_is_checked_or_known_to_have_no_adapter() {
    let mut modules = BTreeSet::new();
    for (file, prefix) in [("lib.rs", ""), ("dynamodb/mod.rs", "dynamodb/")] {
        for line in code_lines(&source(file)) {
            let line = line
                .trim()
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = line.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                let path = if name == "dynamodb" {
                    "dynamodb/mod.rs".to_owned()
                } else {
                    format!("{prefix}{name}.rs")
                };
                modules.insert(path);
            }
        }
    }
    let known: BTreeSet<String> = ADAPTER_MODULES
        .iter()
        .map(|(module, _, _)| module.to_string())
        .chain(OTHER_MODULES.iter().map(|m| m.to_string()))
        .collect();
    assert_eq!(
        modules, known,
        "a module was added or removed: list it in ADAPTER_MODULES (it calls AWS) or OTHER_MODULES"
    );
    // A module without adapters must not call AWS itself (write.rs's helpers count where they
    // are called). This module, gated on `cfg(test)`, is not among them.
    for module in OTHER_MODULES.iter().filter(|m| **m != "dynamodb/write.rs") {
        let calls = client_calls(&code_lines(&source(module)).join("\n"));
        assert!(
            calls.is_empty(),
            "{module} calls {calls:?}: give it an adapter with OPERATIONS"
        );
    }
}

#[test]
fn calls_on_clients_are_found_and_named_as_iam_actions() {
    let code = "let a = self.client\n    .get_item()\n;\nclient.put_item().table_name(t);\n\
                self.client_for(email.region.as_deref())\n    .send_email()\n;\n\
                self.default.config();\nclient.clone();\nvalue.to_string();";
    let calls: Vec<_> = client_calls(code).into_iter().collect();
    assert_eq!(calls, ["get_item", "put_item", "send_email"]);
    assert_eq!(
        iam_action("dynamodb", "batch_get_item"),
        "dynamodb:BatchGetItem"
    );
    assert_eq!(iam_action("sqs", "send_message_batch"), "sqs:SendMessage");
    assert_eq!(iam_action("lambda", "invoke"), "lambda:InvokeFunction");
    assert_eq!(iam_action("ses", "send_email"), "ses:SendEmail");
}
