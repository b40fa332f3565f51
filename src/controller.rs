//! Controller wiring: watches, leader election, shutdown.

use std::process::ExitCode;

/// Arguments of `run` (design §3).
#[derive(clap::Args, Debug)]
pub struct RunArgs {}

/// Runs the operator until SIGTERM.
pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("run: not built yet");
    ExitCode::FAILURE
}

/// Prints the CRD YAML.
pub fn print_crd() -> ExitCode {
    eprintln!("crd: not built yet");
    ExitCode::FAILURE
}
