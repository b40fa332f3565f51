//! The `spf check` and `check` commands (design §6).

use std::process::ExitCode;

/// Arguments of `spf check`.
#[derive(clap::Args, Debug)]
pub struct SpfCheckArgs {
    /// The SMTP client address (IPv4 or IPv6; IPv4-mapped IPv6 is checked as IPv4).
    #[arg(long)]
    pub ip: std::net::IpAddr,
    /// The MAIL FROM address; empty means `postmaster@<helo>`.
    #[arg(long, default_value = "")]
    pub sender: String,
    /// The HELO/EHLO name.
    #[arg(long, default_value = "")]
    pub helo: String,
    /// DNS server to query, `ip:port` (repeatable); the only resolvers used. Default: the
    /// system's.
    #[arg(long = "nameserver", value_parser = parse_nameserver)]
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Time allowed for one DNS query, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub dns_timeout_ms: u64,
    /// `json`: one JSON object on stdout; `text`: the same for a person.
    #[arg(long, value_enum, default_value_t = SpfOutput::Json)]
    pub output: SpfOutput,
}

/// Output format of `spf check`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpfOutput {
    Json,
    Text,
}

/// `ip:port`, or a bare IP meaning port 53.
fn parse_nameserver(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not ip:port"))
}

/// The provider's side of a check (design §3), shared by `run` and `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProviderArgs {
    /// The SPF include the provider asks customers to add, e.g. `spf.mailing.provider.example`.
    #[arg(long, env = "HDMO_PROVIDER_SPF_DOMAIN")]
    pub provider_spf_domain: String,

    /// A provider SMTP source address, IPv4 or IPv6. Repeat the flag (or separate with commas in
    /// the environment variable) for several.
    #[arg(
        long = "provider-egress-ip",
        env = "HDMO_PROVIDER_EGRESS_IP",
        value_delimiter = ','
    )]
    pub provider_egress_ips: Vec<std::net::IpAddr>,

    /// A hostname whose A and AAAA records are provider SMTP source addresses, re-resolved every
    /// check interval. Repeatable. A change of the resolved set re-checks every tenant.
    #[arg(
        long = "provider-smtp-host",
        env = "HDMO_PROVIDER_SMTP_HOST",
        value_delimiter = ','
    )]
    pub provider_smtp_hosts: Vec<String>,
}

impl ProviderArgs {
    /// Fails unless at least one egress address or SMTP host is given.
    pub fn require_egress(&self) -> Result<(), String> {
        if self.provider_egress_ips.is_empty() && self.provider_smtp_hosts.is_empty() {
            return Err(
                "give at least one --provider-egress-ip or --provider-smtp-host".to_owned(),
            );
        }
        Ok(())
    }
}

/// How DNS is queried, shared by `run` and `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// A DNS resolver to query, as IP:PORT (a bare IP means port 53). Repeatable. Default: the
    /// system's resolvers.
    #[arg(long = "nameserver", env = "HDMO_NAMESERVER", value_delimiter = ',', value_parser = parse_nameserver)]
    pub nameservers: Vec<std::net::SocketAddr>,

    /// Timeout of one DNS query, in milliseconds.
    #[arg(long, env = "HDMO_DNS_TIMEOUT_MS", default_value_t = 2000)]
    pub dns_timeout_ms: u64,
}

impl DnsArgs {
    /// The resolver configuration these flags describe.
    pub fn config(&self, cache_size: usize) -> crate::dns::DnsConfig {
        dns_config(&self.nameservers, self.dns_timeout_ms, cache_size)
    }
}

fn dns_config(
    nameservers: &[std::net::SocketAddr],
    timeout_ms: u64,
    cache_size: usize,
) -> crate::dns::DnsConfig {
    crate::dns::DnsConfig {
        nameservers: nameservers.to_vec(),
        timeout: std::time::Duration::from_millis(timeout_ms.max(1)),
        cache_size,
    }
}

/// A runtime on this thread for a one-shot command.
fn one_shot_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Writes a command's report to stdout.
fn print(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 when the domain is aligned with the provider, 1 when it \
    is not (a definitive SPF failure or DMARC misalignment), 2 on a temporary DNS failure or a \
    usage error."
)]
pub struct CheckArgs {
    /// The From domain to check (the tenant's address domain).
    #[arg(long)]
    pub domain: String,
    /// The MAIL FROM domain the provider uses for this sender. Default: the From domain.
    #[arg(long)]
    pub envelope_domain: Option<String>,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub dns: DnsArgs,
    /// `text` for a person (the default), or `json`: one JSON object.
    #[arg(long, value_enum, default_value_t = SpfOutput::Text)]
    pub output: SpfOutput,
}

/// Runs `spf check`: one RFC 7208 evaluation. Exits 0 whatever the SPF result; only a failure
/// to run at all (no resolver, no runtime, unwritable stdout) exits non-zero.
pub fn spf_check(args: SpfCheckArgs) -> ExitCode {
    use crate::dns::Resolver;
    use crate::spf::{Evaluator, SpfQuery, report};

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
        Ok::<_, crate::dns::DnsError>(Evaluator::new(resolver).check_host(&query).await)
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("spf check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match args.output {
        SpfOutput::Json => match serde_json::to_string(&outcome) {
            Ok(json) => json + "\n",
            Err(e) => {
                eprintln!("spf check: cannot encode the result: {e}");
                return ExitCode::FAILURE;
            }
        },
        SpfOutput::Text => report::render_text(&outcome),
    };
    match print(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Exit status of `check` on a temporary failure or a usage error (clap's own code for the
/// latter).
const CHECK_EXIT_TEMPORARY: u8 = 2;

/// Runs `check`: explains one domain's alignment with the provider. Exit status: 0 aligned,
/// 1 unaligned, 2 temporary failure or usage error.
pub fn check(args: CheckArgs) -> ExitCode {
    use crate::alignment::{
        Provider, SenderInput, Verdict, check_sender_detailed, render_text, resolve_egress,
    };
    use crate::dns::Resolver;

    let fail = |message: String| {
        eprintln!("check: {message}");
        ExitCode::from(CHECK_EXIT_TEMPORARY)
    };
    if let Err(message) = args.provider.require_egress() {
        return fail(message);
    }
    let config = args.dns.config(1_024);
    let runtime = match one_shot_runtime() {
        Ok(runtime) => runtime,
        Err(message) => return fail(message),
    };
    let domain = args.domain.trim().trim_end_matches('.').to_string();
    let detail = runtime.block_on(async {
        let resolver = Resolver::new(&config).map_err(|e| e.to_string())?;
        let mut egress_ips = args.provider.provider_egress_ips.clone();
        if !args.provider.provider_smtp_hosts.is_empty() {
            let resolved = resolve_egress(&resolver, &args.provider.provider_smtp_hosts)
                .await
                .map_err(|e| e.to_string())?;
            egress_ips.extend(resolved);
            egress_ips.sort_unstable();
            egress_ips.dedup();
        }
        let provider = Provider {
            spf_domain: args.provider.provider_spf_domain.clone(),
            egress_ips,
        };
        let sender = SenderInput {
            address: format!("postmaster@{domain}"),
            envelope_domain: args.envelope_domain.clone(),
        };
        Ok::<_, String>(check_sender_detailed(&resolver, &provider, &sender).await)
    });
    let detail = match detail {
        Ok(detail) => detail,
        Err(message) => return fail(message),
    };
    let text = match args.output {
        SpfOutput::Text => render_text(&detail, &args.provider.provider_spf_domain),
        SpfOutput::Json => {
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
        return ExitCode::from(CHECK_EXIT_TEMPORARY);
    }
    match detail.check.verdict {
        Verdict::Aligned => ExitCode::SUCCESS,
        Verdict::Unaligned { .. } => ExitCode::from(1),
        Verdict::TemporaryFailure { .. } => ExitCode::from(CHECK_EXIT_TEMPORARY),
    }
}
