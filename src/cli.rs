//! The `spf check` and `check` commands (design §6).

use std::process::ExitCode;

/// Arguments of `spf check`.
#[derive(clap::Args, Debug)]
pub struct SpfCheckArgs {}

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

/// Runs `spf check`.
pub fn spf_check(_args: SpfCheckArgs) -> ExitCode {
    eprintln!("spf check: not built yet");
    ExitCode::FAILURE
}

/// Runs `check`.
pub fn check(_args: CheckArgs) -> ExitCode {
    eprintln!("check: not built yet");
    ExitCode::FAILURE
}
