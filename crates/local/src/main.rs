//! `hikyaku-local`: the local stack's glue. See `make local-up`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use clap::{Args, Parser, Subcommand};
use hikyaku_local::lambda_proxy::{LambdaProxy, LambdaProxyConfig};
use hikyaku_local::pump::{DuplicateDelivery, Pump, PumpConfig};
use hikyaku_local::scheduler::{SchedulerConfig, SchedulerLoop};
use hikyaku_local::ses_proxy::{AccountQuota, Faults, MailboxSimulator, SesProxy, SesProxyConfig};
use hikyaku_local::setup::{self, LocalEndpoints, SetupOptions};
use hikyaku_local::sns_pump::{SnsPump, SnsPumpConfig};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "hikyaku-local",
    version,
    about = "Local stack glue for hikyaku"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the tables, queues and topic on the emulator and write the stack's env file.
    Setup(SetupArgs),
    /// Feed the send queue to a function, as the SQS event source mapping does.
    Pump(PumpArgs),
    /// Deliver the feedback topic's notifications (from its tap queue) to a function, as an
    /// SNS subscription does.
    SnsPump(SnsPumpArgs),
    /// Serve the SES proxy in front of the SES v2 emulator.
    SesProxy(ProxyArgs),
    /// Serve the Lambda proxy in front of `cargo lambda watch` (async invokes, error shapes).
    LambdaProxy(LambdaProxyArgs),
    /// Fire the schedule group's due schedules at their targets, as EventBridge Scheduler does.
    Scheduler(SchedulerArgs),
}

#[derive(Args)]
struct SchedulerArgs {
    /// The schedule group to fire (on the emulator's Scheduler API).
    #[arg(long, env = "HIKYAKU_SCHEDULE_GROUP", default_value = "hikyaku")]
    group: String,
    /// How often the group is read.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    poll_interval_ms: u64,
    /// A firing that fell due at most this long before the scheduler started is still fired.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    catch_up_secs: u64,
}

#[derive(Args)]
struct SetupArgs {
    /// Where to write the KEY=VALUE environment file.
    #[arg(long, default_value = ".local/stack.env")]
    env_file: PathBuf,
    /// Resource name prefix.
    #[arg(long, default_value = "hikyaku")]
    prefix: String,
    /// Visibility timeout of the send queue, in seconds (6 × the sender's timeout).
    #[arg(long, default_value_t = 180)]
    visibility_timeout: u32,
    /// Receives before a message moves to the dead-letter queue.
    #[arg(long, default_value_t = 5)]
    max_receive_count: u32,
    /// SES v2 endpoint the functions use (the SES proxy).
    #[arg(long, default_value = "http://127.0.0.1:8006")]
    sesv2_endpoint: String,
    /// Lambda endpoint the functions and the pump use (the Lambda proxy).
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    lambda_endpoint: String,
    /// The SNS pump's endpoint, subscribed to the feedback topic; empty: no subscription.
    #[arg(long, default_value = "http://127.0.0.1:8007/")]
    feedback_endpoint: String,
    /// Allow an endpoint that is not on loopback (or none: real AWS).
    #[arg(long)]
    allow_remote: bool,
    /// A setting for the functions, written to the environment file (repeatable), e.g.
    /// `--function-env HIKYAKU_FANOUT_PAGE_SIZE=200`.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    function_env: Vec<(String, String)>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains(char::is_whitespace) => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

#[derive(Args)]
struct PumpArgs {
    /// The queue to drain.
    #[arg(long, env = "HIKYAKU_SEND_QUEUE_URL")]
    queue_url: String,
    /// Function to invoke.
    #[arg(long, default_value = "hikyaku-sender")]
    function: String,
    /// Records per invocation (BatchSize, 1-10000).
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// MaximumBatchingWindow in milliseconds.
    #[arg(long, default_value_t = 0)]
    batching_window_ms: u64,
    /// Batches in flight at once (ScalingConfig.MaximumConcurrency).
    #[arg(long, default_value_t = 2)]
    max_concurrency: usize,
    /// Long-poll wait per ReceiveMessage, in seconds (0-20).
    #[arg(long, default_value_t = 1)]
    receive_wait_secs: u64,
    /// Deliver every batch twice: `concurrent` (default when given without a value) or
    /// `sequential`.
    #[arg(long, num_args = 0..=1, default_missing_value = "concurrent", value_name = "MODE")]
    duplicate_delivery: Option<DuplicateDelivery>,
    /// Exit after the queue has been empty (nothing visible, in flight or delayed) this long.
    #[arg(long, value_name = "MS")]
    stop_when_idle_ms: Option<u64>,
    /// Give up on an invocation after this many seconds (its batch then counts as failed).
    #[arg(long, default_value_t = 900)]
    invoke_timeout_secs: u64,
    /// Ignore batchItemFailures: any successful invocation deletes its whole batch.
    #[arg(long)]
    no_report_batch_item_failures: bool,
}

#[derive(Args)]
struct SnsPumpArgs {
    /// Where the feedback topic's `http` subscription delivers (`setup --feedback-endpoint`).
    #[arg(long, default_value = "127.0.0.1:8007")]
    listen: SocketAddr,
    /// Function to invoke.
    #[arg(long, default_value = "hikyaku-feedback")]
    function: String,
    /// Invocations in flight at once.
    #[arg(long, default_value_t = 4)]
    max_concurrency: usize,
    /// Retries of a failed invocation before the notification is dropped.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Wait before the first retry; doubles per retry.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    retry_delay_ms: u64,
    /// Give up on an invocation after this many seconds (it then counts as failed).
    #[arg(long, default_value_t = 120)]
    invoke_timeout_secs: u64,
}

#[derive(Args)]
struct ProxyArgs {
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: SocketAddr,
    /// The SES v2 emulator.
    #[arg(long, default_value = "http://127.0.0.1:8005")]
    upstream: String,
    /// Answer every Nth SendEmail with 429 TooManyRequestsException.
    #[arg(long, value_name = "N")]
    throttle_every: Option<u64>,
    /// Reject SendEmail to this address or `@domain` (MessageRejected); repeatable.
    #[arg(long = "reject-recipient", value_name = "ADDRESS")]
    reject_recipients: Vec<String>,
    /// Answer every SendEmail with SendingPausedException.
    #[arg(long)]
    pause_sending: bool,
    /// Delay each SendEmail by this many milliseconds.
    #[arg(long, value_name = "MS")]
    delay_ms: Option<u64>,
    /// The account's send rate (recipients a second): GetAccount's `MaxSendRate`, and beyond
    /// it SendEmail answers 429 TooManyRequestsException.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 200.0)]
    max_send_rate: f64,
    /// The account's 24-hour quota (recipients; negative: unlimited): GetAccount's
    /// `Max24HourSend`, and beyond it SendEmail answers LimitExceededException.
    #[arg(
        long,
        value_name = "RECIPIENTS",
        default_value_t = 1_000_000.0,
        allow_negative_numbers = true
    )]
    max_24_hour_send: f64,
    /// Publish the SES events of every accepted SendEmail (mailbox simulator) to this SNS
    /// topic; without it no events are published.
    #[arg(long, env = "HIKYAKU_FEEDBACK_TOPIC_ARN", value_name = "ARN")]
    feedback_topic_arn: Option<String>,
    /// No mailbox simulator, even with a feedback topic: accepted sends produce no SES events
    /// (benchmarks of the send path alone).
    #[arg(long)]
    no_events: bool,
    /// Publish `Send` events too (by default, as in the deployed configuration set, only what
    /// happened after the send: deliveries, bounces, complaints, ...).
    #[arg(long)]
    send_events: bool,
}

#[derive(Args)]
struct LambdaProxyArgs {
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// `cargo lambda watch`.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    upstream: String,
    /// Retries of a failed asynchronous (Event) invocation.
    #[arg(long, default_value_t = 2)]
    async_retries: u32,
    /// Wait before the first retry of an asynchronous invocation; doubles per retry.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    async_retry_delay_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => run_setup(args).await,
        Command::Pump(args) => run_pump(args).await,
        Command::SnsPump(args) => run_sns_pump(args).await,
        Command::SesProxy(args) => run_proxy(args).await,
        Command::LambdaProxy(args) => run_lambda_proxy(args).await,
        Command::Scheduler(args) => run_scheduler(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// True for `http(s)://127.x.x.x`, `localhost` and `[::1]` URLs.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn run_setup(args: SetupArgs) -> Result<(), BoxError> {
    let sdk = sdk_config().await;
    let endpoint = sdk.endpoint_url().map(str::to_owned);
    if !args.allow_remote && !endpoint.as_deref().is_some_and(is_loopback) {
        return Err(format!(
            "refusing to create resources at {}: set AWS_ENDPOINT_URL to the local emulator \
             (e.g. http://127.0.0.1:5000) or pass --allow-remote",
            endpoint.as_deref().unwrap_or("AWS (no AWS_ENDPOINT_URL)")
        )
        .into());
    }
    let options = SetupOptions {
        prefix: args.prefix,
        visibility_timeout_secs: args.visibility_timeout,
        max_receive_count: args.max_receive_count,
        feedback_endpoint: Some(args.feedback_endpoint).filter(|e| !e.is_empty()),
    };
    let resources = setup::ensure_stack(&sdk, &options).await?;
    let endpoints = LocalEndpoints {
        region: sdk
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string()),
        default: endpoint.unwrap_or_default(),
        sesv2: args.sesv2_endpoint,
        lambda: args.lambda_endpoint,
    };
    setup::write_env_file(&args.env_file, &endpoints, &resources, &args.function_env)?;
    tracing::info!(env_file = %args.env_file.display(), "stack ready");
    Ok(())
}

async fn run_pump(args: PumpArgs) -> Result<(), BoxError> {
    let sdk = sdk_config().await;
    let mut config = PumpConfig::new(args.queue_url, args.function);
    config.batch_size = args.batch_size;
    config.batching_window = Duration::from_millis(args.batching_window_ms);
    config.max_concurrency = args.max_concurrency;
    config.receive_wait = Duration::from_secs(args.receive_wait_secs);
    config.report_batch_item_failures = !args.no_report_batch_item_failures;
    config.duplicate_delivery = args.duplicate_delivery.unwrap_or_default();
    config.stop_when_idle = args.stop_when_idle_ms.map(Duration::from_millis);
    config.invoke_timeout = Duration::from_secs(args.invoke_timeout_secs);
    let pump = Pump::new(&sdk, config)?;
    let stats = pump.run_until(shutdown_signal()).await?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

async fn run_sns_pump(args: SnsPumpArgs) -> Result<(), BoxError> {
    let sdk = sdk_config().await;
    let mut config = SnsPumpConfig::new(args.function);
    config.max_concurrency = args.max_concurrency;
    config.retries = args.retries;
    config.retry_delay = Duration::from_millis(args.retry_delay_ms);
    config.invoke_timeout = Duration::from_secs(args.invoke_timeout_secs);
    let pump = SnsPump::new(&sdk, config)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    pump.serve(listener, shutdown_signal()).await?;
    println!("{}", serde_json::to_string(&pump.stats())?);
    Ok(())
}

async fn run_proxy(args: ProxyArgs) -> Result<(), BoxError> {
    let config = SesProxyConfig {
        upstream: args.upstream,
        faults: Faults {
            throttle_every: args.throttle_every,
            reject_recipients: args.reject_recipients,
            pause_sending: args.pause_sending,
            delay_ms: args.delay_ms,
        },
        account: AccountQuota {
            max_send_rate: args.max_send_rate,
            max_24_hour_send: args.max_24_hour_send,
            ..AccountQuota::default()
        },
    };
    let topic = args
        .feedback_topic_arn
        .filter(|arn| !arn.is_empty() && !args.no_events);
    let simulator = match topic {
        Some(topic_arn) => {
            tracing::info!(topic = %topic_arn, "mailbox simulator publishes SES events");
            Some(
                MailboxSimulator::new(&sdk_config().await, topic_arn)
                    .with_send_events(args.send_events),
            )
        }
        None => {
            tracing::info!("no feedback topic: the mailbox simulator is off");
            None
        }
    };
    let proxy = SesProxy::with_simulator(config, simulator)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, "SES proxy listening");
    proxy.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn run_lambda_proxy(args: LambdaProxyArgs) -> Result<(), BoxError> {
    let config = LambdaProxyConfig {
        upstream: args.upstream,
        async_retries: args.async_retries,
        async_retry_delay: Duration::from_millis(args.async_retry_delay_ms),
    };
    let proxy = LambdaProxy::new(config)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, "Lambda proxy listening");
    proxy.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn run_scheduler(args: SchedulerArgs) -> Result<(), BoxError> {
    let sdk = sdk_config().await;
    let schedules = hikyaku_aws::SchedulerSchedules::new(
        aws_sdk_scheduler::Client::new(&sdk),
        args.group.clone(),
    );
    // Scheduler's own retries are the loop's next poll; the SDK's would only delay it.
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let target = hikyaku_aws::FunctionInvoker::new(lambda);
    let config = SchedulerConfig {
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(10)),
        catch_up: Duration::from_secs(args.catch_up_secs),
    };
    tracing::info!(group = %args.group, "scheduler firing due schedules");
    let scheduler = SchedulerLoop::new(&schedules, &target, config, chrono::Utc::now());
    scheduler.run_until(shutdown_signal()).await;
    println!("{}", serde_json::to_string(&scheduler.stats())?);
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (what `make local-down` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:5000"));
        assert!(is_loopback("http://localhost:5000/"));
        assert!(is_loopback("http://[::1]:5000"));
        assert!(!is_loopback("https://dynamodb.us-east-1.amazonaws.com"));
        assert!(!is_loopback("http://10.0.0.1:5000"));
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "hikyaku-local",
            "pump",
            "--queue-url",
            "q",
            "--duplicate-delivery",
            "--stop-when-idle-ms",
            "500",
        ])
        .unwrap();
        let Command::Pump(args) = cli.command else {
            panic!("not pump")
        };
        assert_eq!(args.duplicate_delivery, Some(DuplicateDelivery::Concurrent));
        assert_eq!(args.stop_when_idle_ms, Some(500));

        let cli = Cli::try_parse_from(["hikyaku-local", "sns-pump"]).unwrap();
        let Command::SnsPump(args) = cli.command else {
            panic!("not sns-pump")
        };
        assert_eq!(args.function, "hikyaku-feedback");
        assert_eq!(args.listen.to_string(), "127.0.0.1:8007");
        assert_eq!((args.max_concurrency, args.retries), (4, 2));

        let cli = Cli::try_parse_from([
            "hikyaku-local",
            "ses-proxy",
            "--feedback-topic-arn",
            "arn:aws:sns:us-east-1:123456789012:t",
        ])
        .unwrap();
        let Command::SesProxy(args) = cli.command else {
            panic!("not ses-proxy")
        };
        assert_eq!(
            args.feedback_topic_arn.as_deref(),
            Some("arn:aws:sns:us-east-1:123456789012:t")
        );

        let cli = Cli::try_parse_from(["hikyaku-local", "scheduler", "--group", "g"]).unwrap();
        let Command::Scheduler(args) = cli.command else {
            panic!("not scheduler")
        };
        assert_eq!(args.group, "g");
        assert_eq!((args.poll_interval_ms, args.catch_up_secs), (1000, 60));
    }
}
