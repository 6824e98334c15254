//! `hikyaku`, the operator's command line: import contacts, create, preview, start and follow
//! campaigns, manage suppressions. Configuration comes from environment variables only (see
//! `hikyaku --help`).

mod app;
mod cli;
mod commands;
mod error;
mod invoke;
mod output;
mod progress;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::app::{Aws, Settings, check_before_aws, dispatch};
use crate::cli::Cli;
use crate::error::CliError;
use crate::output::Report;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&cli).await {
        Ok(report) => print(report.as_ref(), cli.json),
        Err(err) => fail(&err),
    }
}

async fn run(cli: &Cli) -> Result<Box<dyn Report>, CliError> {
    let settings = Settings::from_env()?;
    check_before_aws(&cli.command, &settings)?;
    let aws = Aws::from_env(&settings).await?;
    dispatch(&cli.command, &aws.ports(), &settings, cli.json).await
}

/// Prints the report on stdout; a report can still end in failure (nothing imported, a run
/// that stopped), told on stderr.
fn print(report: &dyn Report, json: bool) -> ExitCode {
    let body = if json {
        serde_json::to_string_pretty(&report.json()).unwrap_or_default()
    } else {
        report.text()
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error of the command.
    let _ = writeln!(stdout, "{body}").and_then(|()| stdout.flush());
    match report.failure() {
        Some(err) => fail(&err),
        None => ExitCode::SUCCESS,
    }
}

fn fail(err: &CliError) -> ExitCode {
    eprintln!("{err}");
    ExitCode::FAILURE
}
