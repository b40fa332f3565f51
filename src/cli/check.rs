//! `check`: explains one domain's alignment with the provider (docs/design.md §6).

use std::process::ExitCode;

use super::{CheckArgs, Output, one_shot_runtime, print, render};
use crate::alignment::{Provider, SenderInput, Verdict, check_sender_detailed};
use crate::dns::Resolver;
use crate::egress::Egress;
use crate::names::normalize_domain;

/// Exit status of `check` on a temporary failure or a usage error (clap's own code for the
/// latter).
const EXIT_TEMPORARY: u8 = 2;

/// Runs `check`. Exit status: 0 aligned, 1 unaligned, 2 temporary failure or usage error.
pub fn run(args: CheckArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("check: {message}");
        ExitCode::from(EXIT_TEMPORARY)
    };
    if let Err(message) = args.provider.validate() {
        return fail(message);
    }
    let config = args.authority.apply(args.dns.config(1_024));
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(message) => return fail(message),
    };
    let domain = normalize_domain(args.domain.trim());
    let detail = runtime.block_on(async {
        let resolver = Resolver::new(&config).map_err(|e| e.to_string())?;
        let egress = Egress::new(
            args.provider.provider_egress_ips.clone(),
            args.provider.provider_smtp_hosts.clone(),
        )
        .resolve(&resolver)
        .await
        .map_err(|e| e.to_string())?;
        let provider = Provider {
            spf_domain: args.provider.provider_spf_domain.clone(),
            egress_ips: egress.into_iter().collect(),
            dkim_selectors: args.provider.dkim_selectors(),
        };
        let sender = SenderInput {
            address: format!("postmaster@{domain}"),
            envelope_domain: args.envelope_domain.clone(),
            required: args.required_alignment,
        };
        Ok::<_, String>(check_sender_detailed(&resolver, &provider, &sender).await)
    });
    let detail = match detail {
        Ok(detail) => detail,
        Err(message) => return fail(message),
    };
    let text = match args.output {
        Output::Text => render::check(&detail, &args.provider.provider_spf_domain),
        Output::Json => {
            let value = serde_json::json!({
                "domain": domain,
                "providerSpfDomain": args.provider.provider_spf_domain,
                "check": detail.check,
                "includeTree": detail.tree.as_ref().map(|t| &t.trace.tree),
                "worstCaseLookups": detail.tree.as_ref().map(|t| t.trace.lookups),
                "evaluations": detail.evaluations,
            });
            match serde_json::to_string(&value) {
                Ok(json) => json + "\n",
                Err(e) => return fail(format!("cannot encode the result: {e}")),
            }
        }
    };
    if print(&text).is_err() {
        return ExitCode::from(EXIT_TEMPORARY);
    }
    match detail.check.verdict {
        Verdict::Aligned => ExitCode::SUCCESS,
        Verdict::Unaligned { .. } => ExitCode::from(1),
        Verdict::TemporaryFailure { .. } => ExitCode::from(EXIT_TEMPORARY),
    }
}
