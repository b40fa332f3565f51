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

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

/// Runs `spf check`: one RFC 7208 evaluation. Exits 0 whatever the SPF result; only a failure
/// to run at all (no resolver, no runtime, unwritable stdout) exits non-zero.
pub fn spf_check(args: SpfCheckArgs) -> ExitCode {
    use crate::dns::{DnsConfig, Resolver};
    use crate::spf::{Evaluator, SpfQuery, report};

    let config = DnsConfig {
        nameservers: args.nameservers.clone(),
        timeout: std::time::Duration::from_millis(args.dns_timeout_ms.max(1)),
        cache_size: 1_024,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("spf check: cannot start the runtime: {e}");
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
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs `check`.
pub fn check(_args: CheckArgs) -> ExitCode {
    eprintln!("check: not built yet");
    ExitCode::FAILURE
}
