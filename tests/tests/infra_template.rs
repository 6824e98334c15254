//! infra/template.yaml against the code, with no AWS and no local stack: per function, the
//! environment variables its configuration reads and the IAM actions its adapters declare
//! (crates/aws, `OPERATIONS`), both ways; and the tables' keys against what
//! `hikyaku-local setup` creates.
//!
//! The variables are found in the function crate's own source (every `"HIKYAKU_..."` literal
//! outside tests) plus those of the crates/aws/src/config.rs helpers it calls, followed through
//! the helpers they call and the constants they name. The adapters are found where the
//! function's main.rs builds them, each with the table it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hikyaku_aws::dynamodb::{
    DynamoBudget, DynamoCampaigns, DynamoContacts, DynamoLedger, DynamoRejects, DynamoRuns,
    DynamoSuppressions,
};
use hikyaku_aws::roles::RoleAssumer;
use hikyaku_aws::ses::SesAccount;
use hikyaku_aws::{FunctionInvoker, SesSender, SqsJobQueue};
use saphyr::{LoadableYamlNode, ScalarOwned, YamlOwned};
use serde_json::{Map, Value, json};

/// The template's function resources and the crates they are built from.
const FUNCTIONS: &[(&str, &str)] = &[
    ("FanoutFunction", "fanout"),
    ("SenderFunction", "sender"),
    ("FeedbackFunction", "feedback"),
];

/// Where an adapter's operations apply.
#[derive(Clone, Copy, Debug)]
enum Scope {
    /// The table it is built with (`tables.<field>`).
    Table,
    /// The send queue.
    SendQueue,
    /// SES: the sending identity, configuration set and contact list.
    Ses,
    /// The SES account (GetAccount has no resource type: `*`).
    SesAccount,
    /// The fan-out function, which invokes itself to continue.
    Fanout,
    /// The other accounts' sending roles the stack's parameter names.
    SendingRoles,
}

/// Every adapter of crates/aws a function may build, with what it declares.
const ADAPTERS: &[(&str, &[&str], Scope)] = &[
    ("DynamoBudget", DynamoBudget::OPERATIONS, Scope::Table),
    ("DynamoCampaigns", DynamoCampaigns::OPERATIONS, Scope::Table),
    ("DynamoContacts", DynamoContacts::OPERATIONS, Scope::Table),
    ("DynamoLedger", DynamoLedger::OPERATIONS, Scope::Table),
    ("DynamoRejects", DynamoRejects::OPERATIONS, Scope::Table),
    ("DynamoRuns", DynamoRuns::OPERATIONS, Scope::Table),
    (
        "DynamoSuppressions",
        DynamoSuppressions::OPERATIONS,
        Scope::Table,
    ),
    ("SesSender", SesSender::OPERATIONS, Scope::Ses),
    ("SesAccount", SesAccount::OPERATIONS, Scope::SesAccount),
    ("SqsJobQueue", SqsJobQueue::OPERATIONS, Scope::SendQueue),
    ("RoleAssumer", RoleAssumer::OPERATIONS, Scope::SendingRoles),
    (
        "FunctionInvoker",
        FunctionInvoker::OPERATIONS,
        Scope::Fanout,
    ),
];

/// Types a main.rs may take from hikyaku_aws that call no AWS operation.
const NOT_ADAPTERS: &[&str] = &["InvocationClock", "Tables", "ConfigError", "Backoff"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The template, as JSON with CloudFormation's short tags in their long form
// ---------------------------------------------------------------------------------------------

fn to_json(node: &YamlOwned) -> Value {
    match node {
        YamlOwned::Value(scalar) => match scalar {
            ScalarOwned::Null => Value::Null,
            ScalarOwned::Boolean(b) => json!(b),
            ScalarOwned::Integer(i) => json!(i),
            ScalarOwned::FloatingPoint(f) => json!(f.0),
            ScalarOwned::String(s) => json!(s),
        },
        YamlOwned::Representation(text, _, _) => json!(text),
        YamlOwned::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        YamlOwned::Mapping(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                let key = match to_json(key) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, to_json(value));
            }
            Value::Object(object)
        }
        YamlOwned::Tagged(tag, inner) => {
            assert_eq!(tag.handle, "!", "unexpected tag {tag:?}");
            let inner = to_json(inner);
            let (name, value) = match tag.suffix.as_str() {
                "Ref" => ("Ref".to_owned(), inner),
                "Condition" => ("Condition".to_owned(), inner),
                // `!GetAtt Resource.Attribute` is the list [Resource, Attribute].
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (resource, attribute) = s.split_once('.').expect("Resource.Attribute");
                        ("Fn::GetAtt".to_owned(), json!([resource, attribute]))
                    }
                    other => ("Fn::GetAtt".to_owned(), other),
                },
                function => (format!("Fn::{function}"), inner),
            };
            Value::Object(Map::from_iter([(name, value)]))
        }
        YamlOwned::Alias(_) | YamlOwned::BadValue => panic!("the template has no aliases"),
    }
}

fn template() -> Value {
    let text = read("infra/template.yaml");
    let docs = YamlOwned::load_from_str(&text).expect("infra/template.yaml is YAML");
    assert_eq!(docs.len(), 1, "one document");
    to_json(&docs[0])
}

fn resources(template: &Value) -> &Map<String, Value> {
    template["Resources"].as_object().expect("Resources")
}

fn resource<'t>(template: &'t Value, id: &str) -> &'t Value {
    resources(template)
        .get(id)
        .unwrap_or_else(|| panic!("the template has no resource {id}"))
}

/// The logical id a `Ref` or `Fn::GetAtt` names (or a `Fn::Sub` names first), if a resource.
fn referenced(template: &Value, value: &Value) -> Option<String> {
    let names = match value {
        Value::Object(o) if o.contains_key("Ref") => vec![o["Ref"].as_str()?.to_owned()],
        Value::Object(o) if o.contains_key("Fn::GetAtt") => {
            vec![o["Fn::GetAtt"][0].as_str()?.to_owned()]
        }
        Value::Object(o) if o.contains_key("Fn::Sub") => {
            let text = match &o["Fn::Sub"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts[0].as_str()?.to_owned(),
                _ => return None,
            };
            text.split("${")
                .skip(1)
                .filter_map(|part| part.split('}').next())
                .map(|name| name.split('.').next().unwrap_or(name).to_owned())
                .collect()
        }
        _ => return None,
    };
    names
        .into_iter()
        .find(|name| resources(template).contains_key(name))
}

fn sub_text(value: &Value) -> Option<&str> {
    match value.get("Fn::Sub")? {
        Value::String(s) => Some(s),
        Value::Array(parts) => parts.first()?.as_str(),
        _ => None,
    }
}

/// What an IAM statement's resource is: a resource of the stack (its logical id), a function of
/// the stack named by ARN, SES (`ses`), a parameter (its name), or the text itself.
fn resource_key(template: &Value, value: &Value) -> String {
    if let Some(text) = value.as_str() {
        return text.to_owned();
    }
    if let Some(text) = sub_text(value) {
        if text.contains(":ses:") {
            return "ses".to_owned();
        }
        if let Some(name) = text.split(":function:").nth(1) {
            for (id, _) in FUNCTIONS {
                let function_name = &resource(template, id)["Properties"]["FunctionName"];
                if sub_text(function_name) == Some(name) {
                    return (*id).to_owned();
                }
            }
        }
    }
    if let Some(id) = referenced(template, value) {
        return id;
    }
    match value.get("Ref").and_then(Value::as_str) {
        Some(parameter) => parameter.to_owned(),
        None => value.to_string(),
    }
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// (action, resource key) of every statement of `role`'s policies; a statement under `Fn::If`
/// counts with its first branch.
fn granted(template: &Value, role: &str) -> BTreeSet<(String, String)> {
    let properties = &resource(template, role)["Properties"];
    assert!(
        properties.get("ManagedPolicyArns").is_none(),
        "{role} has managed policies, which this test cannot see into"
    );
    let mut pairs = BTreeSet::new();
    for policy in properties["Policies"].as_array().expect("Policies") {
        for statement in policy["PolicyDocument"]["Statement"]
            .as_array()
            .expect("Statement")
        {
            let statement = match statement.get("Fn::If") {
                Some(branches) => &branches[1],
                None => statement,
            };
            assert_eq!(statement["Effect"], "Allow", "{role}: {statement}");
            for action in as_list(&statement["Action"]) {
                let action = action.as_str().expect("an action is text");
                for target in as_list(&statement["Resource"]) {
                    pairs.insert((action.to_owned(), resource_key(template, target)));
                }
            }
        }
    }
    pairs
}

// ---------------------------------------------------------------------------------------------
// The code
// ---------------------------------------------------------------------------------------------

/// `text` without comments and without the items under `#[cfg(test)]`.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut in_test = false;
    let mut test_indent = String::new();
    for line in text.lines() {
        let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
        if line.trim() == "#[cfg(test)]" {
            in_test = true;
            test_indent = indent;
            continue;
        }
        if in_test {
            // The gated item ends at its closing brace (at its own indentation), or is one line.
            let closes = line == format!("{test_indent}}}");
            let one_line = indent == test_indent && line.trim_end().ends_with(';');
            in_test = !(closes || one_line);
            continue;
        }
        out.push_str(without_comment(line));
        out.push('\n');
    }
    out
}

/// `line` up to a `//` comment that is not inside a string literal.
fn without_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            // A '"' character literal opens no string.
            '"' if previous == '\'' && line[at + 1..].starts_with('\'') => {}
            '"' => in_string = !in_string,
            '/' if !in_string && previous == '/' => return &line[..at - 1],
            _ => {}
        }
        previous = c;
    }
    line
}

/// Every `"HIKYAKU_..."` string literal in `code`.
fn variable_literals(code: &str) -> BTreeSet<String> {
    code.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("HIKYAKU_")
                && s.len() > "HIKYAKU_".len()
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `code` calls `name(` (a whole identifier, or a path ending in it).
fn calls(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        !code[..at].chars().next_back().is_some_and(is_ident)
            && code[at + name.len()..].starts_with('(')
    })
}

/// The environment helpers of crates/aws/src/config.rs: for each function (`name`, or
/// `Type::name` for a method), the variables it reads, its own literals and constants and those
/// of the helpers it calls.
fn config_helpers() -> BTreeMap<String, BTreeSet<String>> {
    let text = code(&read("crates/aws/src/config.rs"));
    let lines: Vec<&str> = text.lines().collect();
    // Constants holding a variable's name.
    let mut constants = BTreeMap::new();
    for line in &lines {
        let line = line.trim().trim_start_matches("pub ");
        if let Some(rest) = line.strip_prefix("const ") {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if let Some(value) = variable_literals(rest).into_iter().next() {
                constants.insert(name, value);
            }
        }
    }
    // Function bodies, by indentation.
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    let mut implementing: Option<String> = None;
    for (at, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("impl ") {
            let header = rest.trim_end_matches('{').trim();
            implementing = header.split_whitespace().last().map(str::to_owned);
        } else if *line == "}" {
            implementing = None;
        }
        let trimmed = line.trim_start().trim_start_matches("pub ");
        let Some(rest) = trimmed.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        let indent = &line[..line.len() - line.trim_start().len()];
        let end = lines[at..]
            .iter()
            .position(|l| *l == format!("{indent}}}"))
            .map_or(lines.len(), |p| at + p);
        let key = match (&implementing, indent.is_empty()) {
            (Some(ty), false) => format!("{ty}::{name}"),
            _ => name,
        };
        bodies.insert(key, lines[at..=end.min(lines.len() - 1)].join("\n"));
    }
    let direct = |body: &str| -> BTreeSet<String> {
        let mut found = variable_literals(body);
        for (constant, value) in &constants {
            if body.match_indices(constant.as_str()).any(|(at, _)| {
                !body[..at].chars().next_back().is_some_and(is_ident)
                    && !body[at + constant.len()..].starts_with(is_ident)
            }) {
                found.insert(value.clone());
            }
        }
        found
    };
    // Follow calls between helpers until nothing changes.
    let mut reads: BTreeMap<String, BTreeSet<String>> = bodies
        .iter()
        .map(|(name, body)| (name.clone(), direct(body)))
        .collect();
    loop {
        let mut changed = false;
        for (name, body) in &bodies {
            for other in bodies.keys().filter(|other| *other != name) {
                let short = other.rsplit("::").next().unwrap_or(other);
                if calls(body, other) || calls(body, short) {
                    let more = reads[other].clone();
                    let mine = reads.get_mut(name).expect("every helper has an entry");
                    let before = mine.len();
                    mine.extend(more);
                    changed |= mine.len() != before;
                }
            }
        }
        if !changed {
            break;
        }
    }
    reads.retain(|_, vars| !vars.is_empty());
    reads
}

fn function_sources(krate: &str) -> String {
    let dir = repo().join("crates").join(krate).join("src");
    let mut all = String::new();
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all.push_str(&code(&std::fs::read_to_string(&path).expect("source")));
            }
        }
    }
    all
}

/// The variables function crate `krate` reads.
fn variables_read(krate: &str, helpers: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let source = function_sources(krate);
    let mut vars = variable_literals(&source);
    for (helper, read) in helpers {
        if calls(&source, helper) {
            vars.extend(read.iter().cloned());
        }
    }
    vars
}

/// The arguments of the first call in `text`: `new(a(b), c)` → `a(b), c`.
fn arguments(text: &str) -> &str {
    let open = text.find('(').expect("a call");
    let mut depth = 0;
    for (at, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + at];
                }
            }
            _ => {}
        }
    }
    panic!("an unclosed call: {text}")
}

/// The adapters `krate`'s main.rs builds: (type, table field for DynamoDB adapters).
fn adapters_built(krate: &str) -> Vec<(String, Option<String>)> {
    let main = code(&read(format!("crates/{krate}/src/main.rs")));
    let mut built = Vec::new();
    // Every hikyaku_aws type main.rs names must be known.
    for statement in main
        .split(';')
        .filter(|s| s.trim().starts_with("use hikyaku_aws"))
    {
        for name in statement
            .split(|c: char| !is_ident(c))
            .filter(|n| n.starts_with(|c: char| c.is_ascii_uppercase()))
        {
            let known = ADAPTERS.iter().any(|(a, _, _)| *a == name) || NOT_ADAPTERS.contains(&name);
            assert!(
                known,
                "crates/{krate}/src/main.rs uses hikyaku_aws::{name}: add it to this test's \
                 ADAPTERS (with its OPERATIONS) or NOT_ADAPTERS"
            );
        }
    }
    for (adapter, _, scope) in ADAPTERS {
        for (at, _) in main.match_indices(&format!("{adapter}::")) {
            let call = arguments(&main[at..]);
            let table = match scope {
                Scope::Table => {
                    let field = call
                        .split("tables.")
                        .nth(1)
                        .map(|rest| rest.chars().take_while(|&c| is_ident(c)).collect())
                        .unwrap_or_else(|| panic!("{krate}: which table is {adapter} built on?"));
                    Some(field)
                }
                _ => None,
            };
            built.push((adapter.to_string(), table));
        }
    }
    assert!(
        !built.is_empty(),
        "crates/{krate}/src/main.rs builds no adapter"
    );
    built
}

/// `contacts` → `ContactsTable`.
fn table_resource(field: &str) -> String {
    let mut chars = field.chars();
    let first = chars.next().expect("a table field").to_ascii_uppercase();
    format!("{first}{}Table", chars.as_str())
}

/// (action, resource key) the adapters `krate` builds declare.
fn declared(krate: &str) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for (adapter, table) in adapters_built(krate) {
        let (_, operations, scope) = ADAPTERS
            .iter()
            .find(|(a, _, _)| *a == adapter)
            .expect("a known adapter");
        let key = match scope {
            Scope::Table => table_resource(table.as_deref().expect("a table")),
            Scope::SendQueue => "SendQueue".to_owned(),
            Scope::Ses => "ses".to_owned(),
            Scope::SesAccount => "*".to_owned(),
            Scope::Fanout => "FanoutFunction".to_owned(),
            Scope::SendingRoles => "CrossAccountSendingRoleArns".to_owned(),
        };
        for operation in *operations {
            pairs.insert((operation.to_string(), key.clone()));
        }
    }
    pairs
}

/// What Lambda itself does with the function's role: write its logs, poll its event source
/// mappings, and send failed asynchronous events to its dead-letter queue.
fn platform_grants(template: &Value, function: &str) -> BTreeSet<(String, String)> {
    let properties = &resource(template, function)["Properties"];
    let mut pairs = BTreeSet::new();
    let log_group = referenced(template, &properties["LoggingConfig"]["LogGroup"])
        .unwrap_or_else(|| panic!("{function} has no log group of the stack"));
    for action in ["logs:CreateLogStream", "logs:PutLogEvents"] {
        pairs.insert((action.to_owned(), log_group.clone()));
    }
    if let Some(target) = properties.get("DeadLetterQueue") {
        let queue = referenced(template, &target["TargetArn"]).expect("a queue of the stack");
        pairs.insert(("sqs:SendMessage".to_owned(), queue));
    }
    for (_, mapping) in resources(template)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Lambda::EventSourceMapping")
    {
        let properties = &mapping["Properties"];
        if referenced(template, &properties["FunctionName"]).as_deref() == Some(function) {
            let queue = referenced(template, &properties["EventSourceArn"]).expect("a queue");
            for action in [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
            ] {
                pairs.insert((action.to_owned(), queue.clone()));
            }
        }
    }
    pairs
}

fn environment(template: &Value, function: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    let own = &resource(template, function)["Properties"]["Environment"]["Variables"];
    for variables in [globals, own] {
        if let Some(variables) = variables.as_object() {
            names.extend(variables.keys().cloned());
        }
    }
    names
}

fn show(set: &BTreeSet<impl std::fmt::Debug>) -> String {
    set.iter()
        .map(|item| format!("\n    {item:?}"))
        .collect::<String>()
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_function_gets_exactly_the_variables_its_configuration_reads() {
    let template = template();
    let helpers = config_helpers();
    assert!(
        helpers.contains_key("Tables::from_env")
            && helpers.contains_key("address_display_from_env"),
        "the config helpers were not found: {helpers:?}"
    );
    for (function, krate) in FUNCTIONS {
        let read = variables_read(krate, &helpers);
        assert!(
            read.contains("HIKYAKU_RUNS_TABLE"),
            "{krate}: the table variables were not found: {read:?}"
        );
        let expected = read;
        let set = environment(&template, function);
        let missing: BTreeSet<_> = expected.difference(&set).collect();
        let extra: BTreeSet<_> = set.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{function}'s environment differs from what crates/{krate} reads:\n  missing:{}\n  \
             not read by the code:{}",
            show(&missing),
            show(&extra)
        );
    }
}

#[test]
fn every_function_may_call_exactly_the_operations_its_adapters_declare() {
    let template = template();
    for (function, krate) in FUNCTIONS {
        let properties = &resource(&template, function)["Properties"];
        assert!(
            properties.get("Policies").is_none(),
            "{function}: its permissions belong in its role"
        );
        let role = referenced(&template, &properties["Role"])
            .unwrap_or_else(|| panic!("{function} has no role of the stack"));
        let mut expected = declared(krate);
        expected.extend(platform_grants(&template, function));
        let granted = granted(&template, &role);
        let missing: BTreeSet<_> = expected.difference(&granted).collect();
        let extra: BTreeSet<_> = granted.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{role} ({function}) differs from what crates/{krate}'s adapters declare:\n  \
             missing:{}\n  not called by the code:{}",
            show(&missing),
            show(&extra)
        );
    }
}

#[test]
fn schedules_may_only_invoke_the_fanout() {
    let template = template();
    let granted = granted(&template, "SchedulerRole");
    let expected = BTreeSet::from([(
        "lambda:InvokeFunction".to_owned(),
        "FanoutFunction".to_owned(),
    )]);
    assert_eq!(granted, expected);
}

/// One table of crates/local/src/setup.rs's `TABLES`.
#[derive(Debug, Default, PartialEq, Eq)]
struct TableKeys {
    hash: String,
    range: Option<String>,
    indexes: BTreeSet<(String, String)>,
}

fn quoted(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn setup_tables() -> BTreeMap<String, TableKeys> {
    let setup = code(&read("crates/local/src/setup.rs"));
    let start = setup.find("const TABLES").expect("setup.rs has TABLES");
    let body = &setup[start
        ..setup[start..]
            .find("];")
            .map(|e| start + e)
            .expect("its end")];
    let mut tables = BTreeMap::new();
    for spec in body.split("TableSpec {").skip(1) {
        let field = |name: &str| -> &str {
            let at = spec.find(&format!("{name}:")).expect("a TableSpec field");
            let rest = &spec[at + name.len() + 1..];
            rest[..rest.find('\n').unwrap_or(rest.len())].trim()
        };
        let suffix = quoted(field("suffix")).remove(0);
        let indexes = quoted(field("gsis"));
        tables.insert(
            suffix,
            TableKeys {
                hash: quoted(field("hash_key")).remove(0),
                range: quoted(field("range_key")).into_iter().next(),
                indexes: indexes
                    .chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
            },
        );
    }
    tables
}

fn key_of(schema: &Value, kind: &str) -> Option<String> {
    schema
        .as_array()?
        .iter()
        .find(|k| k["KeyType"] == kind)
        .map(|k| k["AttributeName"].as_str().expect("a name").to_owned())
}

#[test]
fn the_tables_have_the_keys_and_indexes_the_local_setup_creates() {
    let template = template();
    let setup = setup_tables();
    assert_eq!(setup.len(), 5, "setup.rs's tables: {setup:?}");
    let deployed: BTreeMap<String, TableKeys> = resources(&template)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::DynamoDB::Table")
        .map(|(id, table)| {
            let p = &table["Properties"];
            let indexes = p["GlobalSecondaryIndexes"]
                .as_array()
                .map(|gsis| {
                    gsis.iter()
                        .map(|g| {
                            assert!(key_of(&g["KeySchema"], "RANGE").is_none(), "{id}: {g}");
                            assert_eq!(g["Projection"]["ProjectionType"], "ALL", "{id}");
                            (
                                g["IndexName"].as_str().expect("a name").to_owned(),
                                key_of(&g["KeySchema"], "HASH").expect("an index key"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Every key attribute is a string, as setup.rs defines them.
            for attribute in p["AttributeDefinitions"].as_array().expect("attributes") {
                assert_eq!(attribute["AttributeType"], "S", "{id}: {attribute}");
            }
            assert_eq!(p["BillingMode"], "PAY_PER_REQUEST", "{id}");
            let suffix = id.trim_end_matches("Table").to_ascii_lowercase();
            let keys = TableKeys {
                hash: key_of(&p["KeySchema"], "HASH").expect("a partition key"),
                range: key_of(&p["KeySchema"], "RANGE"),
                indexes,
            };
            (suffix, keys)
        })
        .collect();
    assert_eq!(deployed, setup);
}

#[test]
fn short_tags_parse_into_intrinsic_functions() {
    let yaml = "a: !Ref Table\nb: !GetAtt Queue.Arn\nc: !Sub '${X.Arn}/index/*'\n\
                d: !If [Cond, !Ref AWS::NoValue, [1, 2]]\n";
    let docs = YamlOwned::load_from_str(yaml).expect("YAML");
    let value = to_json(&docs[0]);
    assert_eq!(value["a"], json!({"Ref": "Table"}));
    assert_eq!(value["b"], json!({"Fn::GetAtt": ["Queue", "Arn"]}));
    assert_eq!(value["c"], json!({"Fn::Sub": "${X.Arn}/index/*"}));
    assert_eq!(
        value["d"],
        json!({"Fn::If": ["Cond", {"Ref": "AWS::NoValue"}, [1, 2]]})
    );
}

#[test]
fn helpers_and_literals_are_found_in_source() {
    let text = "fn a() { env_parse(\"HIKYAKU_A\", 1) } // \"HIKYAKU_COMMENT\"\n\
                #[cfg(test)]\nmod tests {\n    const X: &str = \"HIKYAKU_TEST\";\n}\n\
                fn b() { Tables::from_env() }\n";
    let code = code(text);
    assert_eq!(
        variable_literals(&code).into_iter().collect::<Vec<_>>(),
        ["HIKYAKU_A"]
    );
    assert!(calls(&code, "Tables::from_env"));
    assert!(calls(&code, "from_env"));
    assert!(!calls(&code, "env"));
}
