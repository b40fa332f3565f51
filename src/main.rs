//! Command-line entry point: parses the arguments and runs the chosen subcommand.

use std::process::ExitCode;

use clap::Parser;
use helpdesk_mail_operator::cli::Cli;

fn main() -> ExitCode {
    Cli::parse().run()
}
