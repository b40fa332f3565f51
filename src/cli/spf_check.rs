//! `spf check`: one RFC 7208 `check_host()` evaluation, the contract of docs/design.md §6 that
//! the conformance suite drives.

use std::process::ExitCode;

use super::{Output, SpfCheckArgs, dns_config, one_shot_runtime, print, render};
use crate::dns::{DnsError, Resolver};
use crate::spf::{Evaluator, SpfQuery};

/// Runs `spf check`. Exits 0 whatever the SPF result; only a failure to run at all (no
/// resolver, no runtime, unwritable stdout) exits non-zero.
pub fn run(args: SpfCheckArgs) -> ExitCode {
    let config = dns_config(&args.nameservers, args.dns_timeout_ms, 1_024);
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("spf check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let resolver = Resolver::new(&config)?;
        let query = SpfQuery::mail_from(args.ip, &args.sender, &args.helo);
        Ok::<_, DnsError>(Evaluator::new(resolver).check_host(&query).await)
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("spf check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match args.output {
        Output::Json => match serde_json::to_string(&outcome) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("spf check: cannot encode the result: {e}");
                return ExitCode::FAILURE;
            }
        },
        Output::Text => render::spf_outcome(&outcome),
    };
    match print(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
