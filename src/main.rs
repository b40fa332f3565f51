//! Command-line entry point: wiring only. Each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use helpdesk_mail_operator::{cli, controller};

/// Keeps helpdesk tenants' mail deliverable: verifies each tenant's SPF and DMARC against the
/// provider's SMTP egress and falls back to the provider's sender while they are unaligned.
#[derive(Parser)]
#[command(name = "helpdesk-mail-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<controller::RunArgs>),
    /// Print the HelpdeskTenant CustomResourceDefinition as YAML.
    Crd,
    /// SPF tools.
    Spf {
        #[command(subcommand)]
        command: SpfCommand,
    },
    /// Explain one domain's alignment with the provider.
    Check(cli::CheckArgs),
}

#[derive(Subcommand)]
enum SpfCommand {
    /// Evaluate RFC 7208 check_host() once.
    Check(cli::SpfCheckArgs),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        Command::Run(run) => controller::main(*run),
        Command::Crd => controller::print_crd(),
        Command::Spf {
            command: SpfCommand::Check(check),
        } => cli::spf_check(check),
        Command::Check(check) => cli::check(check),
    }
}
