//! Creates the stack's resources on the emulators, idempotently.
//!
//! The shapes mirror what `infra/` deploys: on-demand DynamoDB tables, the send queue with its
//! dead-letter queue, the feedback topic and the schedule group of campaign schedules. One
//! resource is local-only: the feedback tap, an SQS queue subscribed to the feedback topic, from
//! which `hikyaku-local sns-pump` plays SNS's delivery to the feedback function (moto cannot
//! invoke a function it does not run).

use std::path::Path;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableDescription,
};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_types::error::display::DisplayErrorContext;

/// What to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupOptions {
    /// Prefix of every resource name: `<prefix>-contacts`, `<prefix>-send`, ...
    pub prefix: String,
    /// The send queue's visibility timeout. AWS asks for at least 6 × the function timeout.
    pub visibility_timeout_secs: u32,
    /// Receives before SQS moves a message to the dead-letter queue.
    pub max_receive_count: u32,
    /// The HTTP endpoint subscribed to the feedback topic (`hikyaku-local sns-pump`); none:
    /// the topic has no subscriber.
    pub feedback_endpoint: Option<String>,
}

impl Default for SetupOptions {
    fn default() -> Self {
        Self {
            prefix: "hikyaku".to_owned(),
            // 6 × the sender's 30 s timeout.
            visibility_timeout_secs: 180,
            max_receive_count: 5,
            feedback_endpoint: None,
        }
    }
}

/// Names, URLs and ARNs of what [`ensure_stack`] created or found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackResources {
    pub contacts_table: String,
    pub campaigns_table: String,
    pub runs_table: String,
    pub deliveries_table: String,
    pub suppressions_table: String,
    pub send_queue_url: String,
    pub send_queue_arn: String,
    pub send_dlq_url: String,
    pub send_dlq_arn: String,
    pub feedback_topic_arn: String,
    /// The schedule group of campaign schedules (`hikyaku-local scheduler` fires them).
    pub schedule_group: String,
    /// The role schedules name; moto does not check it, the deployed stack's SchedulerRole.
    pub scheduler_role_arn: String,
    /// The target of campaign schedules: the fan-out, by its ARN as on AWS.
    pub fanout_function_arn: String,
}

/// Where the functions find the emulators; written to the environment file next to the
/// resource names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoints {
    pub region: String,
    /// moto: DynamoDB, SQS, SNS, ... (`AWS_ENDPOINT_URL`).
    pub default: String,
    /// The SES proxy in front of the SES v2 emulator (`AWS_ENDPOINT_URL_SESV2`).
    pub sesv2: String,
    /// The Lambda proxy in front of `cargo lambda watch` (`AWS_ENDPOINT_URL_LAMBDA`).
    pub lambda: String,
}

impl Default for LocalEndpoints {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_owned(),
            default: "http://127.0.0.1:5000".to_owned(),
            sesv2: "http://127.0.0.1:8006".to_owned(),
            lambda: "http://127.0.0.1:9001".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{operation} {resource}: {message}")]
    Aws {
        operation: &'static str,
        resource: String,
        message: String,
    },
    #[error(
        "table {table} already exists with a different shape ({difference}); \
         restart the emulator (make local-down local-up) to start from empty tables"
    )]
    TableMismatch { table: String, difference: String },
    #[error("{operation} {resource}: the response lacks {field}")]
    MissingField {
        operation: &'static str,
        resource: String,
        field: &'static str,
    },
    #[error("building a {what} request: {message}")]
    Build { what: &'static str, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn aws_err<E: std::error::Error>(operation: &'static str, resource: &str, err: E) -> SetupError {
    SetupError::Aws {
        operation,
        resource: resource.to_owned(),
        message: DisplayErrorContext(err).to_string(),
    }
}

fn build_err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> SetupError {
    move |e| SetupError::Build {
        what,
        message: e.to_string(),
    }
}

/// One DynamoDB table: its key and its global secondary indexes, all string-typed.
#[derive(Clone, Copy, Debug)]
struct TableSpec {
    suffix: &'static str,
    hash_key: &'static str,
    range_key: Option<&'static str>,
    /// (index name, hash key); projection ALL.
    gsis: &'static [(&'static str, &'static str)],
}

const TABLES: [TableSpec; 5] = [
    TableSpec {
        suffix: "contacts",
        hash_key: "list_id",
        range_key: Some("sk"),
        gsis: &[],
    },
    TableSpec {
        suffix: "campaigns",
        hash_key: "campaign_id",
        range_key: None,
        gsis: &[],
    },
    TableSpec {
        suffix: "runs",
        hash_key: "campaign_id",
        range_key: Some("run_id"),
        gsis: &[],
    },
    TableSpec {
        suffix: "deliveries",
        hash_key: "run_key",
        range_key: Some("email"),
        gsis: &[("by_message_id", "ses_message_id")],
    },
    TableSpec {
        suffix: "suppressions",
        hash_key: "email",
        range_key: None,
        gsis: &[],
    },
];

/// Creates every resource that does not exist yet and returns all of them. Running it again
/// changes nothing except the send queue's attributes, which it sets to `options` each time.
pub async fn ensure_stack(
    sdk: &SdkConfig,
    options: &SetupOptions,
) -> Result<StackResources, SetupError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let sns = aws_sdk_sns::Client::new(sdk);
    let name = |suffix: &str| format!("{}-{suffix}", options.prefix);

    for spec in &TABLES {
        ensure_table(&dynamodb, &name(spec.suffix), spec).await?;
    }

    let dlq_name = name("send-dlq");
    let send_dlq_url = create_queue(&sqs, &dlq_name).await?;
    let send_dlq_arn = queue_arn(&sqs, &send_dlq_url).await?;
    // The longest retention SQS allows, as deployed: dead letters wait for an operator.
    set_queue_attributes(
        &sqs,
        &send_dlq_url,
        &[(
            QueueAttributeName::MessageRetentionPeriod,
            "1209600".to_owned(),
        )],
    )
    .await?;

    let send_queue_url = create_queue(&sqs, &name("send")).await?;
    let send_queue_arn = queue_arn(&sqs, &send_queue_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": send_dlq_arn,
        "maxReceiveCount": options.max_receive_count,
    });
    set_queue_attributes(
        &sqs,
        &send_queue_url,
        &[
            (
                QueueAttributeName::VisibilityTimeout,
                options.visibility_timeout_secs.to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ],
    )
    .await?;

    let topic_name = name("feedback");
    let feedback_topic_arn = sns
        .create_topic()
        .name(&topic_name)
        .send()
        .await
        .map_err(|e| aws_err("CreateTopic", &topic_name, e))?
        .topic_arn
        .ok_or(SetupError::MissingField {
            operation: "CreateTopic",
            resource: topic_name,
            field: "TopicArn",
        })?;
    if let Some(endpoint) = &options.feedback_endpoint {
        subscribe_endpoint(&sns, &feedback_topic_arn, endpoint).await?;
    }

    let schedule_group = options.prefix.clone();
    ensure_schedule_group(&aws_sdk_scheduler::Client::new(sdk), &schedule_group).await?;
    let region = sdk
        .region()
        .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string());
    let account = send_queue_arn
        .split(':')
        .nth(4)
        .unwrap_or("123456789012")
        .to_owned();

    Ok(StackResources {
        contacts_table: name("contacts"),
        campaigns_table: name("campaigns"),
        runs_table: name("runs"),
        deliveries_table: name("deliveries"),
        suppressions_table: name("suppressions"),
        send_queue_url,
        send_queue_arn,
        send_dlq_url,
        send_dlq_arn,
        feedback_topic_arn,
        scheduler_role_arn: format!("arn:aws:iam::{account}:role/{schedule_group}-scheduler"),
        fanout_function_arn: format!(
            "arn:aws:lambda:{region}:{account}:function:{FANOUT_FUNCTION}"
        ),
        schedule_group,
    })
}

/// The function `cargo lambda watch` runs the fan-out as (its binary's name).
const FANOUT_FUNCTION: &str = "hikyaku-fanout";

/// Creates the schedule group unless it exists: moto's CreateScheduleGroup would replace an
/// existing group, schedules and all.
async fn ensure_schedule_group(
    scheduler: &aws_sdk_scheduler::Client,
    name: &str,
) -> Result<(), SetupError> {
    match scheduler.get_schedule_group().name(name).send().await {
        Ok(_) => return Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(err) => return Err(aws_err("GetScheduleGroup", name, err)),
    }
    scheduler
        .create_schedule_group()
        .name(name)
        .send()
        .await
        .map_err(|e| aws_err("CreateScheduleGroup", name, e))?;
    Ok(())
}

/// Subscribes the SNS pump's HTTP endpoint to the topic. Subscribe is idempotent for the same
/// topic, protocol and endpoint, on SNS and on moto, which delivers to `http` subscriptions at
/// publish time and confirms them itself.
async fn subscribe_endpoint(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    endpoint: &str,
) -> Result<(), SetupError> {
    let subscription = sns
        .subscribe()
        .topic_arn(topic_arn)
        .protocol(if endpoint.starts_with("https:") {
            "https"
        } else {
            "http"
        })
        .endpoint(endpoint)
        .return_subscription_arn(true)
        .send()
        .await
        .map_err(|e| aws_err("Subscribe", endpoint, e))?;
    tracing::info!(
        endpoint,
        subscription = subscription.subscription_arn().unwrap_or_default(),
        "SNS pump subscribed to the feedback topic"
    );
    Ok(())
}

impl StackResources {
    /// The `HIKYAKU_*` variables the functions and the CLI read, and the local stack's own
    /// (`HIKYAKU_SEND_DLQ_URL`, `HIKYAKU_FEEDBACK_TOPIC_ARN`: the SES proxy's simulator
    /// publishes to the topic).
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HIKYAKU_CONTACTS_TABLE", self.contacts_table.clone()),
            ("HIKYAKU_CAMPAIGNS_TABLE", self.campaigns_table.clone()),
            ("HIKYAKU_RUNS_TABLE", self.runs_table.clone()),
            ("HIKYAKU_DELIVERIES_TABLE", self.deliveries_table.clone()),
            (
                "HIKYAKU_SUPPRESSIONS_TABLE",
                self.suppressions_table.clone(),
            ),
            ("HIKYAKU_SEND_QUEUE_URL", self.send_queue_url.clone()),
            ("HIKYAKU_SEND_DLQ_URL", self.send_dlq_url.clone()),
            (
                "HIKYAKU_FEEDBACK_TOPIC_ARN",
                self.feedback_topic_arn.clone(),
            ),
            ("HIKYAKU_SCHEDULE_GROUP", self.schedule_group.clone()),
            (
                "HIKYAKU_SCHEDULER_ROLE_ARN",
                self.scheduler_role_arn.clone(),
            ),
            (
                "HIKYAKU_FANOUT_FUNCTION_ARN",
                self.fanout_function_arn.clone(),
            ),
        ]
    }

    /// Reads the resources back from the variables [`Self::env_vars`] names (for example from
    /// `.local/stack.env` via [`crate::env_file::read`]). ARNs that the file does not carry are
    /// derived from the queue URLs the way moto and SQS shape them.
    pub fn from_env_map(
        vars: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, MissingVar> {
        let get = |key: &'static str| vars.get(key).cloned().ok_or(MissingVar(key));
        let region = vars
            .get("AWS_REGION")
            .cloned()
            .unwrap_or_else(|| "us-east-1".to_owned());
        let send_queue_url = get("HIKYAKU_SEND_QUEUE_URL")?;
        let send_dlq_url = get("HIKYAKU_SEND_DLQ_URL")?;
        Ok(Self {
            contacts_table: get("HIKYAKU_CONTACTS_TABLE")?,
            campaigns_table: get("HIKYAKU_CAMPAIGNS_TABLE")?,
            runs_table: get("HIKYAKU_RUNS_TABLE")?,
            deliveries_table: get("HIKYAKU_DELIVERIES_TABLE")?,
            suppressions_table: get("HIKYAKU_SUPPRESSIONS_TABLE")?,
            send_queue_arn: queue_arn_from_url(&send_queue_url, &region).unwrap_or_default(),
            send_dlq_arn: queue_arn_from_url(&send_dlq_url, &region).unwrap_or_default(),
            send_queue_url,
            send_dlq_url,
            feedback_topic_arn: get("HIKYAKU_FEEDBACK_TOPIC_ARN")?,
            schedule_group: get("HIKYAKU_SCHEDULE_GROUP")?,
            scheduler_role_arn: get("HIKYAKU_SCHEDULER_ROLE_ARN")?,
            fanout_function_arn: get("HIKYAKU_FANOUT_FUNCTION_ARN")?,
        })
    }
}

/// A variable [`StackResources::from_env_map`] needs is missing.
#[derive(Debug, thiserror::Error)]
#[error("the stack environment lacks {0}; run `make local-up` (or `hikyaku-local setup`)")]
pub struct MissingVar(pub &'static str);

/// `http://host/123456789012/name` → `arn:aws:sqs:<region>:123456789012:name`.
fn queue_arn_from_url(url: &str, region: &str) -> Option<String> {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let name = parts.next()?;
    let account = parts.next()?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("arn:aws:sqs:{region}:{account}:{name}"))
}

impl LocalEndpoints {
    /// Region, dummy credentials and endpoint variables for the functions.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_ENDPOINT_URL", self.default.clone()),
            ("AWS_ENDPOINT_URL_SESV2", self.sesv2.clone()),
            ("AWS_ENDPOINT_URL_LAMBDA", self.lambda.clone()),
        ]
    }
}

/// The full environment file: endpoints first, then the resources.
pub fn stack_env(
    endpoints: &LocalEndpoints,
    resources: &StackResources,
) -> Vec<(&'static str, String)> {
    let mut vars = endpoints.env_vars();
    vars.extend(resources.env_vars());
    vars
}

/// Writes [`stack_env`] to `path` (atomically), followed by `function_env`: settings of the
/// functions themselves (e.g. a smaller fan-out page for tests).
pub fn write_env_file(
    path: &Path,
    endpoints: &LocalEndpoints,
    resources: &StackResources,
    function_env: &[(String, String)],
) -> Result<(), SetupError> {
    let mut vars: Vec<(String, String)> = stack_env(endpoints, resources)
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    vars.extend(function_env.iter().cloned());
    crate::env_file::write(path, &vars).map_err(|source| SetupError::Write {
        path: path.display().to_string(),
        source,
    })
}

async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    spec: &TableSpec,
) -> Result<(), SetupError> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => {
            let description = out.table.ok_or(SetupError::MissingField {
                operation: "DescribeTable",
                resource: table.to_owned(),
                field: "Table",
            })?;
            return check_table(table, spec, &description);
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_not_found_exception()) => {}
        Err(e) => return Err(aws_err("DescribeTable", table, e)),
    }

    let mut attributes = vec![spec.hash_key];
    attributes.extend(spec.range_key);
    attributes.extend(spec.gsis.iter().map(|(_, key)| *key));
    attributes.sort_unstable();
    attributes.dedup();

    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(spec.hash_key, spec.range_key)?));
    for attribute in attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err("AttributeDefinition"))?,
        );
    }
    for (index, key) in spec.gsis {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(*index)
                .set_key_schema(Some(key_schema(key, None)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(build_err("GlobalSecondaryIndex"))?,
        );
    }
    match request.send().await {
        Ok(_) => {
            tracing::info!(table, "created table");
            Ok(())
        }
        // Someone else created it between our describe and create.
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(aws_err("CreateTable", table, e)),
    }
}

fn key_schema(hash: &str, range: Option<&str>) -> Result<Vec<KeySchemaElement>, SetupError> {
    let mut schema = vec![
        KeySchemaElement::builder()
            .attribute_name(hash)
            .key_type(KeyType::Hash)
            .build()
            .map_err(build_err("KeySchemaElement"))?,
    ];
    if let Some(range) = range {
        schema.push(
            KeySchemaElement::builder()
                .attribute_name(range)
                .key_type(KeyType::Range)
                .build()
                .map_err(build_err("KeySchemaElement"))?,
        );
    }
    Ok(schema)
}

fn describe_keys(schema: &[KeySchemaElement]) -> Vec<(String, String)> {
    schema
        .iter()
        .map(|k| (k.attribute_name.clone(), k.key_type.as_str().to_owned()))
        .collect()
}

/// An existing table must have the key schema and indexes we would have created.
fn check_table(
    table: &str,
    spec: &TableSpec,
    description: &TableDescription,
) -> Result<(), SetupError> {
    let want = describe_keys(&key_schema(spec.hash_key, spec.range_key)?);
    let have = describe_keys(description.key_schema());
    if want != have {
        return Err(SetupError::TableMismatch {
            table: table.to_owned(),
            difference: format!("key schema {have:?}, expected {want:?}"),
        });
    }
    for (index, key) in spec.gsis {
        let found = description
            .global_secondary_indexes()
            .iter()
            .find(|gsi| gsi.index_name() == Some(*index));
        let Some(gsi) = found else {
            return Err(SetupError::TableMismatch {
                table: table.to_owned(),
                difference: format!("index {index} is missing"),
            });
        };
        let want = describe_keys(&key_schema(key, None)?);
        if describe_keys(gsi.key_schema()) != want {
            return Err(SetupError::TableMismatch {
                table: table.to_owned(),
                difference: format!("index {index} has a different key schema"),
            });
        }
    }
    tracing::info!(table, "table exists");
    Ok(())
}

async fn create_queue(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, SetupError> {
    // Without attributes CreateQueue is idempotent; attributes are set separately so a changed
    // option updates an existing queue instead of failing with QueueNameExists.
    let out = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| aws_err("CreateQueue", name, e))?;
    tracing::info!(queue = name, "queue ready");
    out.queue_url.ok_or(SetupError::MissingField {
        operation: "CreateQueue",
        resource: name.to_owned(),
        field: "QueueUrl",
    })
}

async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> Result<String, SetupError> {
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_err("GetQueueAttributes", url, e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or(SetupError::MissingField {
            operation: "GetQueueAttributes",
            resource: url.to_owned(),
            field: "QueueArn",
        })
}

async fn set_queue_attributes(
    client: &aws_sdk_sqs::Client,
    url: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<(), SetupError> {
    let mut request = client.set_queue_attributes().queue_url(url);
    for (name, value) in attributes {
        request = request.attributes(name.clone(), value);
    }
    request
        .send()
        .await
        .map_err(|e| aws_err("SetQueueAttributes", url, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> StackResources {
        StackResources {
            contacts_table: "p-contacts".into(),
            campaigns_table: "p-campaigns".into(),
            runs_table: "p-runs".into(),
            deliveries_table: "p-deliveries".into(),
            suppressions_table: "p-suppressions".into(),
            send_queue_url: "http://127.0.0.1:5000/123456789012/p-send".into(),
            send_queue_arn: "arn:aws:sqs:us-east-1:123456789012:p-send".into(),
            send_dlq_url: "http://127.0.0.1:5000/123456789012/p-send-dlq".into(),
            send_dlq_arn: "arn:aws:sqs:us-east-1:123456789012:p-send-dlq".into(),
            feedback_topic_arn: "arn:aws:sns:us-east-1:123456789012:p-feedback".into(),
            schedule_group: "p".into(),
            scheduler_role_arn: "arn:aws:iam::123456789012:role/p-scheduler".into(),
            fanout_function_arn: "arn:aws:lambda:us-east-1:123456789012:function:hikyaku-fanout"
                .into(),
        }
    }

    #[test]
    fn env_file_carries_endpoints_and_resources_and_reads_back() {
        let text = crate::env_file::render(&stack_env(&LocalEndpoints::default(), &resources()));
        for line in [
            "AWS_REGION=us-east-1",
            "AWS_ENDPOINT_URL=http://127.0.0.1:5000",
            "AWS_ENDPOINT_URL_SESV2=http://127.0.0.1:8006",
            "AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:9001",
            "HIKYAKU_DELIVERIES_TABLE=p-deliveries",
            "HIKYAKU_SEND_DLQ_URL=http://127.0.0.1:5000/123456789012/p-send-dlq",
            "HIKYAKU_FEEDBACK_TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:p-feedback",
            "HIKYAKU_SCHEDULE_GROUP=p",
            "HIKYAKU_FANOUT_FUNCTION_ARN=arn:aws:lambda:us-east-1:123456789012:function:hikyaku-fanout",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        let back = StackResources::from_env_map(&crate::env_file::parse(&text)).unwrap();
        assert_eq!(back, resources());
    }

    #[test]
    fn queue_arn_is_derived_from_a_moto_url() {
        assert_eq!(
            queue_arn_from_url("http://localhost:5000/123456789012/q", "eu-west-1").as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:q")
        );
        assert_eq!(
            queue_arn_from_url("http://localhost:5000/q", "eu-west-1"),
            None
        );
    }

    #[test]
    fn every_table_defines_the_attributes_its_keys_use() {
        let deliveries = TABLES.iter().find(|t| t.suffix == "deliveries").unwrap();
        assert_eq!(deliveries.gsis, &[("by_message_id", "ses_message_id")]);
        assert_eq!(TABLES.len(), 5);
    }
}
