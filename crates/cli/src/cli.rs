//! The command line: commands, arguments and the help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use hikyaku_core::ids::{CampaignId, ListId, RunId};
use hikyaku_core::import::ImportFormat;
use hikyaku_core::ports::SuppressionKind;

const ENVIRONMENT: &str = "\
Environment (configuration comes from these variables only):
  HIKYAKU_CONTACTS_TABLE       DynamoDB table of contacts (name or ARN); required
  HIKYAKU_CAMPAIGNS_TABLE      DynamoDB table of campaigns; required
  HIKYAKU_RUNS_TABLE           DynamoDB table of runs; required
  HIKYAKU_DELIVERIES_TABLE     DynamoDB table of the delivery ledger; required
  HIKYAKU_SUPPRESSIONS_TABLE   DynamoDB table of suppressions; required
  HIKYAKU_FANOUT_FUNCTION      Lambda function `campaign start` invokes [default: hikyaku-fanout]
  HIKYAKU_FEEDBACK_TOPIC_ARN   `doctor`: the topic SES's events go to (skipped without it)
  HIKYAKU_FEEDBACK_FUNCTION    `doctor`: the function subscribed to it [default: hikyaku-feedback]
  HIKYAKU_SEND_QUEUE_URL       `doctor`, `resend-failed`: the send queue
  HIKYAKU_SEND_DLQ_URL         `doctor`, `resend-failed`: its dead-letter queue
  HIKYAKU_FANOUT_FUNCTION_ARN  the fan-out's ARN, the target of `campaign schedule`
  HIKYAKU_SCHEDULER_ROLE_ARN   the role schedules invoke the fan-out with (`campaign schedule`)
  HIKYAKU_SCHEDULE_GROUP       the schedule group of campaign schedules [default: hikyaku]
  AWS_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...
                               the AWS SDK's standard settings
  AWS_ENDPOINT_URL             another endpoint for every AWS service (locally: moto)
  AWS_ENDPOINT_URL_LAMBDA      another endpoint for Lambda (locally: the Lambda proxy in
                               front of cargo lambda watch, http://127.0.0.1:9001)
  RUST_LOG                     diagnostics on stderr, e.g. RUST_LOG=debug [default: warn]

Locally, `make local-up` writes all of them to .local/stack.env; load it with
`set -a; . .local/stack.env; set +a`.

Exit status: 0 on success (invalid rows of an import are reported, not fatal), 1 when the
command failed (the error and a hint are on stderr), 2 for a usage error.";

#[derive(Parser, Debug)]
#[command(
    name = "hikyaku",
    version,
    about = "Bulk email through Amazon SES: contacts, campaigns, runs and suppressions",
    after_long_help = ENVIRONMENT,
    after_help = "See `hikyaku --help` for the environment variables.",
    propagate_version = true
)]
pub struct Cli {
    /// Print the result as one JSON document on stdout (errors stay on stderr)
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Import contact lists and see what a segment selects
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Create, preview, start campaigns and follow their runs
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Addresses that are never mailed
    #[command(subcommand)]
    Suppression(SuppressionCommand),
    /// Check that the SES setup and the stack will carry a campaign: account, identity and
    /// DKIM, configuration set and its events, contact list and topic, the feedback
    /// subscription, tables and queues; each finding with its fix
    Doctor {
        /// Check this campaign's from identity, configuration set, contact list and topic too
        #[arg(long, value_name = "ID")]
        campaign: Option<CampaignId>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContactsCommand {
    /// Import a CSV or JSON Lines file into a list; invalid rows are reported, the rest imported
    #[command(long_about = "Import a CSV or JSON Lines file into a list.\n\n\
CSV: a header row with an `email` column (any case); every other column is an attribute, \
its cells typed as true/false, integers, decimals or text; an empty cell is no value. \
UTF-8 with or without a byte order mark; quoted fields may hold commas and line breaks.\n\
JSON Lines: one object a line with an \"email\" key; other keys are attributes with \
true/false, number or string values.\n\n\
Invalid rows are listed with their line and reason and the valid rows are imported; rows \
repeating an address are merged (later values win). Importing the same file again changes \
nothing.")]
    Import {
        /// The contact file (.csv, .jsonl or .ndjson)
        file: PathBuf,
        /// The list to import into
        #[arg(long)]
        list: ListId,
        /// Read the file as this format, whatever its extension
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
    /// Show a list's contacts, or those a segment selects, with counts over the whole list
    List {
        #[arg(long)]
        list: ListId,
        /// A CEL expression over the contact's attributes, e.g. 'mail_allowed == 1 && account_type == 2'
        #[arg(long)]
        segment: Option<String>,
        /// Show at most this many contacts (the counts cover the whole list)
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Csv,
    Jsonl,
}

impl From<FormatArg> for ImportFormat {
    fn from(format: FormatArg) -> ImportFormat {
        match format {
            FormatArg::Csv => ImportFormat::Csv,
            FormatArg::Jsonl => ImportFormat::Jsonl,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum CampaignCommand {
    /// Validate a campaign file against its list and store it
    Create {
        /// The campaign's TOML file
        file: PathBuf,
    },
    /// Render a campaign for one contact of its list
    Preview {
        /// The campaign id
        id: CampaignId,
        /// The contact's address
        #[arg(long, value_name = "EMAIL")]
        contact: String,
        /// Write the HTML part to this file
        #[arg(long, value_name = "FILE.html")]
        out: Option<PathBuf>,
    },
    /// Start a run now by invoking the fan-out function
    Start {
        /// The campaign id
        id: CampaignId,
        /// Wait until every recipient is done (or the run is paused), then print its status
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this many seconds (the run goes on)
        #[arg(long, value_name = "SECONDS", requires = "wait")]
        timeout: Option<u64>,
        /// Start even if a blocking check of `hikyaku doctor` fails
        #[arg(long)]
        force: bool,
    },
    /// Pause a run: senders stop within one batch; `resume` carries on where it stood
    Pause {
        #[command(flatten)]
        target: RunTarget,
        /// Why, shown by `status` [default: paused by the operator]
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Resume a paused run: nobody is sent twice, nobody is skipped; a fan-out cut short by
    /// the pause is continued from its checkpoint; a run its canary slice paused goes on
    /// without the canary's verdict
    Resume {
        #[command(flatten)]
        target: RunTarget,
    },
    /// Cancel a run for good: nothing more is sent, unsent recipients are recorded `cancelled`
    Cancel {
        #[command(flatten)]
        target: RunTarget,
        /// Why, shown by `status` [default: cancelled by the operator]
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Give the recipients of a run that failed for a transient reason a new attempt: its jobs
    /// in the dead-letter queue go back to the send queue; nobody already sent, suppressed,
    /// failed for good, uncertain or cancelled is mailed
    ResendFailed {
        /// The campaign id
        id: CampaignId,
        /// The run (its scheduled time, YYYYMMDDTHHMMSSZ)
        #[arg(long = "run", value_name = "RUN_ID", value_parser = parse_run_id)]
        run: RunId,
    },
    /// Show a run's progress, counts per delivery state and send rate
    Status {
        /// The campaign id
        id: CampaignId,
        /// The run (its scheduled time, YYYYMMDDTHHMMSSZ); the latest without it
        #[arg(long = "run", value_name = "RUN_ID", value_parser = parse_run_id)]
        run: Option<RunId>,
        /// Follow the run (a progress bar on a terminal) until every recipient is done or it
        /// is paused or cancelled, then print its status
        #[arg(long)]
        watch: bool,
    },
    /// List a campaign's runs, newest first, with their state, counts and timings
    #[command(
        long_about = "List a campaign's runs, newest first: phase (and pause reason), \
started, ended, elapsed, audience, sent, failed, suppressed, uncertain, outstanding, and SES's \
delivered, bounced and complained so far, with the send rate.\n\n\
Each run listed costs one read of its ledger; --limit bounds how many are read."
    )]
    Runs {
        /// The campaign id
        id: CampaignId,
        /// Show the newest this many runs
        #[arg(long, value_name = "N", default_value_t = 20,
              value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
    /// The report of a run: audience, delivery states, SES's feedback, rates, send rate over time
    #[command(
        long_about = "The report of a run, read from its whole ledger: the audience; \
every terminal delivery state (sent, failed, suppressed, unsubscribed, uncertain) with what is \
in flight or outstanding; what SES reported per recipient (delivered, opened, clicked, bounced \
hard/soft/undetermined, auto-replies, complaints, rejects, rendering failures, delays); the \
bounce and complaint rates against the campaign's limits; the elapsed time; and the send rate \
over time, in buckets of the ledger's send times (1 s up to a day, at most 60 buckets).\n\n\
Formats: table (for a terminal), json (the same figures for programs), csv (rows of \
section,name,value; one sent_per_bucket row per bucket), html (one self-contained page with \
charts of the send rate and the outcomes; it loads nothing from the network).\n\n\
Without --format the format follows the name of --out (.html, .csv, .json; else table), \
and --json alone means json. With --json and --out FILE, the file gets the format and stdout \
gets JSON about the file and the report."
    )]
    Report {
        /// The campaign id
        id: CampaignId,
        /// The run (its scheduled time, YYYYMMDDTHHMMSSZ); the latest without it
        #[arg(long = "run", value_name = "RUN_ID", value_parser = parse_run_id)]
        run: Option<RunId>,
        /// How to render it [default: table, or what the name of --out implies]
        #[arg(long, value_enum)]
        format: Option<ReportFormatArg>,
        /// Write the report to this file instead of printing it
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Who of a run is in a state, with the time and the reason (addresses in full)
    #[command(
        long_about = "The recipients of a run in one state, oldest first, with the time \
they reached it and the reason or detail recorded (a failure's reason, a bounce's diagnostic, \
a complaint's feedback type, a suppression's reason). Addresses are shown in full: they are \
the operator's own data; they are not logged."
    )]
    Recipients {
        /// The campaign id
        id: CampaignId,
        /// The run (its scheduled time, YYYYMMDDTHHMMSSZ; `hikyaku campaign runs ID` lists them)
        #[arg(long = "run", value_name = "RUN_ID", value_parser = parse_run_id)]
        run: RunId,
        /// The state to list
        #[arg(long, value_enum)]
        state: StateArg,
        /// Print CSV (email,state,at,reason,ses_message_id) instead of a table
        #[arg(long)]
        csv: bool,
    },
    /// Schedule runs on EventBridge Scheduler: once (--at) or repeatedly (--cron, --rate)
    #[command(long_about = crate::commands::schedule::LONG_ABOUT)]
    Schedule(crate::commands::schedule::ScheduleArgs),
    /// List the schedule group's schedules with their next firing
    Schedules(crate::commands::schedule::SchedulesArgs),
    /// Remove a campaign's schedule (runs already started go on)
    Unschedule(crate::commands::schedule::UnscheduleArgs),
}

/// Which run a lifecycle command acts on.
#[derive(clap::Args, Debug)]
pub struct RunTarget {
    /// The campaign id
    pub id: CampaignId,
    /// The run (its scheduled time, YYYYMMDDTHHMMSSZ); the latest without it
    #[arg(long = "run", value_name = "RUN_ID", value_parser = parse_run_id)]
    pub run: Option<RunId>,
}

fn parse_run_id(value: &str) -> Result<RunId, String> {
    RunId::parse(value).map_err(|err| err.to_string())
}

/// `campaign report --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormatArg {
    /// Tables for a terminal
    Table,
    /// The report's figures as one JSON document
    Json,
    /// section,name,value rows
    Csv,
    /// One self-contained page with charts
    Html,
}

impl From<ReportFormatArg> for crate::commands::report::Format {
    fn from(format: ReportFormatArg) -> Self {
        use crate::commands::report::Format;
        match format {
            ReportFormatArg::Table => Format::Table,
            ReportFormatArg::Json => Format::Json,
            ReportFormatArg::Csv => Format::Csv,
            ReportFormatArg::Html => Format::Html,
        }
    }
}

/// `campaign recipients --state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// SES accepted the message (whatever it reported later)
    Sent,
    /// SES reported the delivery
    Delivered,
    /// The recipient opened it
    Opened,
    /// The recipient clicked a link
    Clicked,
    /// SES reported a hard, soft or undetermined bounce
    Bounced,
    /// The recipient complained
    Complained,
    /// SES refused the message for good, or it could not be rendered
    Failed,
    /// A sender vanished mid-send: SES may have it; never resent
    Uncertain,
    /// Not mailed: the run was cancelled first
    Cancelled,
    /// Not mailed: the address is suppressed
    Suppressed,
    /// Not mailed: the contact unsubscribed
    Unsubscribed,
}

impl From<StateArg> for hikyaku_core::report::RecipientState {
    fn from(state: StateArg) -> Self {
        use hikyaku_core::report::RecipientState as S;
        match state {
            StateArg::Sent => S::Sent,
            StateArg::Delivered => S::Delivered,
            StateArg::Opened => S::Opened,
            StateArg::Clicked => S::Clicked,
            StateArg::Bounced => S::Bounced,
            StateArg::Complained => S::Complained,
            StateArg::Failed => S::Failed,
            StateArg::Uncertain => S::Uncertain,
            StateArg::Cancelled => S::Cancelled,
            StateArg::Suppressed => S::Suppressed,
            StateArg::Unsubscribed => S::Unsubscribed,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum SuppressionCommand {
    /// Suppress addresses by hand (kind "manual"); entries of other kinds stay as they are
    Add {
        /// The addresses
        #[arg(required = true, value_name = "EMAIL")]
        emails: Vec<String>,
        /// Why they must not be mailed
        #[arg(long)]
        reason: String,
    },
    /// Suppress every address of a file by hand: one a line, `#` starts a comment
    Import {
        file: PathBuf,
        /// Why they must not be mailed
        #[arg(long)]
        reason: String,
    },
    /// Remove the addresses' entries of one kind; entries of other kinds keep them suppressed
    Remove {
        #[arg(required = true, value_name = "EMAIL")]
        emails: Vec<String>,
        /// Which entries: those made by hand, or those recorded from bounces and complaints
        #[arg(long, value_enum, default_value = "manual")]
        kind: RemovableKind,
    },
    /// List every entry: address, kind, reason, diagnostic, source run, events, since
    List {
        /// Only entries of this kind
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    /// Write every entry as CSV, to a file or to standard output
    Export {
        /// The file to write; without it the CSV is the output
        #[arg(long, value_name = "FILE.csv")]
        out: Option<PathBuf>,
        /// Only entries of this kind
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
}

/// The kinds of suppression entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Entered by hand
    Manual,
    /// Recorded from hard bounces, complaints and repeated soft bounces
    Automatic,
    /// Mirrored from SES subscription management
    Unsubscribed,
}

/// The kinds an operator may remove (unsubscribes are the contact's own choice, kept by SES).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RemovableKind {
    Manual,
    Automatic,
}

impl From<KindArg> for SuppressionKind {
    fn from(kind: KindArg) -> SuppressionKind {
        match kind {
            KindArg::Manual => SuppressionKind::Manual,
            KindArg::Automatic => SuppressionKind::Automatic,
            KindArg::Unsubscribed => SuppressionKind::Unsubscribed,
        }
    }
}

impl From<RemovableKind> for SuppressionKind {
    fn from(kind: RemovableKind) -> SuppressionKind {
        match kind {
            RemovableKind::Manual => SuppressionKind::Manual,
            RemovableKind::Automatic => SuppressionKind::Automatic,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hikyaku").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn contacts_import_takes_a_file_a_list_and_an_optional_format() {
        let cli = parse(&[
            "contacts", "import", "c.txt", "--list", "news", "--format", "csv", "--json",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Contacts(ContactsCommand::Import { file, list, format }) => {
                assert_eq!(file, PathBuf::from("c.txt"));
                assert_eq!(list.as_str(), "news");
                assert_eq!(format, Some(FormatArg::Csv));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["contacts", "import", "c.csv"]).is_err());
        assert!(parse(&["contacts", "import", "c.csv", "--list", "a.b"]).is_err());
        assert!(
            parse(&[
                "contacts", "import", "c.csv", "--list", "x", "--format", "xlsx"
            ])
            .is_err()
        );
    }

    #[test]
    fn json_is_accepted_anywhere() {
        assert!(parse(&["--json", "suppression", "list"]).unwrap().json);
        assert!(parse(&["suppression", "list", "--json"]).unwrap().json);
        assert!(!parse(&["suppression", "list"]).unwrap().json);
    }

    #[test]
    fn contacts_list_has_a_default_limit() {
        match parse(&["contacts", "list", "--list", "news", "--segment", "x == 1"])
            .unwrap()
            .command
        {
            Command::Contacts(ContactsCommand::List { limit, segment, .. }) => {
                assert_eq!(limit, 20);
                assert_eq!(segment.as_deref(), Some("x == 1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn campaign_commands_parse_their_ids() {
        match parse(&["campaign", "start", "winter", "--wait", "--timeout", "60"])
            .unwrap()
            .command
        {
            Command::Campaign(CampaignCommand::Start {
                id, wait, timeout, ..
            }) => {
                assert_eq!(id.as_str(), "winter");
                assert!(wait);
                assert_eq!(timeout, Some(60));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["campaign", "start", "winter", "--timeout", "60"]).is_err());
        assert!(parse(&["campaign", "start", "bad id"]).is_err());
        match parse(&["campaign", "status", "winter", "--run", "20260101T090000Z"])
            .unwrap()
            .command
        {
            Command::Campaign(CampaignCommand::Status { run, .. }) => {
                assert_eq!(run.unwrap().as_str(), "20260101T090000Z");
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["campaign", "status", "winter", "--run", "yesterday"]).unwrap_err();
        assert!(err.to_string().contains("YYYYMMDDTHHMMSSZ"), "{err}");
        assert!(parse(&["campaign", "preview", "winter"]).is_err());
        assert!(
            parse(&[
                "campaign",
                "preview",
                "winter",
                "--contact",
                "a@example.com",
                "--out",
                "x.html"
            ])
            .is_ok()
        );
    }

    #[test]
    fn suppression_add_needs_addresses_and_a_reason() {
        assert!(parse(&["suppression", "add", "--reason", "x"]).is_err());
        assert!(parse(&["suppression", "add", "a@example.com"]).is_err());
        match parse(&[
            "suppression",
            "add",
            "a@example.com",
            "b@example.com",
            "--reason",
            "asked",
        ])
        .unwrap()
        .command
        {
            Command::Suppression(SuppressionCommand::Add { emails, reason }) => {
                assert_eq!(emails.len(), 2);
                assert_eq!(reason, "asked");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_help_names_every_environment_variable() {
        let help = Cli::command().render_long_help().to_string();
        use hikyaku_aws::Tables;
        for var in [
            Tables::CONTACTS_VAR,
            Tables::CAMPAIGNS_VAR,
            Tables::RUNS_VAR,
            Tables::DELIVERIES_VAR,
            Tables::SUPPRESSIONS_VAR,
            crate::app::FANOUT_FUNCTION_VAR,
            crate::commands::schedule::FANOUT_ARN_VAR,
            crate::commands::schedule::SCHEDULER_ROLE_VAR,
            crate::commands::schedule::SCHEDULE_GROUP_VAR,
            "AWS_ENDPOINT_URL_LAMBDA",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
    }
}
