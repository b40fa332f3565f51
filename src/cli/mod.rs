//! The command line: every clap type, the subcommands' dispatch, and the person-readable
//! renderers ([`render`]). The operator itself ([`crate::controller`]) takes a plain
//! [`controller::Config`] and knows nothing of clap.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};

use crate::api::RequiredAlignment;
use crate::controller;
use crate::dkim::ProviderSelector;
use crate::dns::{
    DEFAULT_AUTHORITATIVE_CHECK, DEFAULT_AUTHORITATIVE_PORT, DEFAULT_TIMEOUT_MS, DnsConfig,
};
use crate::guard::GuardConfig;
use crate::reconcile::Settings;

pub mod check;
pub mod render;
pub mod spf_check;
pub mod what_if;

/// Keeps helpdesk tenants' mail deliverable: verifies each tenant's SPF and DMARC against the
/// provider's SMTP egress and falls back to the provider's sender while they are unaligned.
#[derive(Parser)]
#[command(name = "helpdesk-mail-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<RunArgs>),
    /// Print the HelpdeskTenant CustomResourceDefinition as YAML.
    Crd,
    /// SPF tools.
    Spf {
        #[command(subcommand)]
        command: SpfCommand,
    },
    /// Explain one domain's alignment with the provider.
    Check(CheckArgs),
    /// Check every tenant against a provider SPF record or egress list not published yet.
    WhatIf(WhatIfArgs),
}

#[derive(Subcommand)]
enum SpfCommand {
    /// Evaluate RFC 7208 check_host() once.
    Check(SpfCheckArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Run(run) => match run.provider.validate() {
                Ok(()) => controller::main(run.config()),
                Err(message) => {
                    eprintln!("run: {message}");
                    ExitCode::FAILURE
                }
            },
            Command::Crd => print_crd(),
            Command::Spf {
                command: SpfCommand::Check(args),
            } => spf_check::run(args),
            Command::Check(args) => check::run(args),
            Command::WhatIf(args) => what_if::run(args),
        }
    }
}

/// Arguments of `run` (docs/design.md §3). Every flag can also be set by its `HDMO_*`
/// environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub provider: ProviderArgs,

    /// The From address used while a sender falls back, unless the tenant sets
    /// `spec.fallbackSender`. `{tenant}` and `{namespace}` are replaced by the tenant's name and
    /// namespace.
    #[arg(long, env = "HDMO_DEFAULT_SENDER")]
    pub default_sender: String,

    #[command(flatten)]
    pub dns: DnsArgs,

    #[command(flatten)]
    pub authority: AuthorityArgs,

    /// Default re-check interval of a tenant (`15m`, `1h`, `30s`); `spec.checkInterval` overrides it.
    #[arg(long, env = "HDMO_CHECK_INTERVAL", default_value = "15m", value_parser = parse_interval)]
    pub check_interval: Duration,

    /// Watch HelpdeskTenants in this namespace only. Default: all namespaces.
    #[arg(long, env = "HDMO_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Label selector limiting the HelpdeskTenants this instance handles (e.g. `shard=a`), for
    /// sharding across several leader-elected Deployments.
    #[arg(long, env = "HDMO_SELECTOR")]
    pub selector: Option<String>,

    /// Address serving `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "HDMO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Export per-tenant metric series (one set per HelpdeskTenant; costly with many tenants).
    #[arg(long, env = "HDMO_PER_TENANT_METRICS")]
    pub per_tenant_metrics: bool,

    /// Only the holder of a Lease reconciles; run several replicas for high availability.
    #[arg(long, env = "HDMO_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease. Default: the pod's namespace (`POD_NAMESPACE`),
    /// else `default`.
    #[arg(long, env = "HDMO_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "HDMO_LEASE_NAME",
        default_value = "helpdesk-mail-operator"
    )]
    pub lease_name: String,

    /// How long a Lease holds without renewal, in seconds.
    #[arg(long, env = "HDMO_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// Identity written into the Lease. Default: the hostname (the pod name).
    #[arg(long, env = "HDMO_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,

    /// Reconciles run at once (at least 1).
    #[arg(long, env = "HDMO_CONCURRENCY", default_value_t = 16, value_parser = parse_concurrency)]
    pub concurrency: u16,

    /// Fleet guard: hold switches to the fallback sender while more than this percentage of
    /// the tenants checked within one check interval turn from Aligned to Unaligned. 0 turns
    /// the guard off.
    #[arg(long, env = "HDMO_FLEET_GUARD_PERCENT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub fleet_guard_percent: u32,

    /// Fleet guard: the fewest tenants turning unaligned within one check interval that trip it.
    #[arg(long, env = "HDMO_FLEET_GUARD_MIN_TENANTS", default_value_t = 10)]
    pub fleet_guard_min_tenants: usize,

    /// Fleet guard: the longest one hold lasts (`1h`, `30m`). A person ends it sooner with the
    /// annotation `mail.helpdesk.io/fleet-guard=release` on the operator's Lease.
    #[arg(long, env = "HDMO_FLEET_GUARD_HOLD", default_value = "1h", value_parser = parse_interval)]
    pub fleet_guard_hold: Duration,
}

impl RunArgs {
    /// The operator's configuration these flags describe.
    pub fn config(&self) -> controller::Config {
        controller::Config {
            settings: Settings {
                provider_spf_domain: self.provider.provider_spf_domain.clone(),
                egress_ips: self.provider.provider_egress_ips.clone(),
                smtp_hosts: self.provider.provider_smtp_hosts.clone(),
                dkim_selectors: self.provider.dkim_selectors(),
                default_sender: self.default_sender.clone(),
                default_interval: self.check_interval,
                fleet_guard: GuardConfig {
                    percent: self.fleet_guard_percent,
                    min_tenants: self.fleet_guard_min_tenants,
                    hold: self.fleet_guard_hold,
                },
                lease_namespace: self
                    .lease_namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "default".to_owned()),
                lease_name: self.lease_name.clone(),
            },
            dns: self
                .authority
                .apply(self.dns.config(DnsConfig::default().cache_size)),
            watch_namespace: self.watch_namespace.clone(),
            selector: self.selector.clone(),
            metrics_addr: self.metrics_addr,
            per_tenant_metrics: self.per_tenant_metrics,
            lease: self.leader_election.then(|| controller::LeaseConfig {
                namespace: self.lease_namespace.clone(),
                name: self.lease_name.clone(),
                duration_seconds: self.lease_duration_seconds,
                identity: self.lease_identity.clone(),
            }),
            concurrency: self.concurrency,
        }
    }
}

/// The provider's side of a check (docs/design.md §3), shared by `run` and `check`.
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
    pub provider_egress_ips: Vec<IpAddr>,

    /// A hostname whose A and AAAA records are provider SMTP source addresses, re-resolved every
    /// check interval. Repeatable. A change of the resolved set re-checks every tenant.
    #[arg(
        long = "provider-smtp-host",
        env = "HDMO_PROVIDER_SMTP_HOST",
        value_delimiter = ','
    )]
    pub provider_smtp_hosts: Vec<String>,

    /// A DKIM selector the provider signs tenant mail with; customers publish the provider's
    /// key at `<selector>._domainkey.<their domain>`. Repeatable. Turns the DKIM path on,
    /// together with --provider-dkim-domain.
    #[arg(
        long = "provider-dkim-selector",
        env = "HDMO_PROVIDER_DKIM_SELECTOR",
        value_delimiter = ','
    )]
    pub provider_dkim_selectors: Vec<String>,

    /// Where the provider publishes its reference key of each selector:
    /// `<selector>._domainkey.<this domain>`.
    #[arg(long, env = "HDMO_PROVIDER_DKIM_DOMAIN")]
    pub provider_dkim_domain: Option<String>,
}

impl ProviderArgs {
    /// Fails unless at least one egress address or SMTP host is given, and unless the DKIM
    /// flags come together.
    pub fn validate(&self) -> Result<(), String> {
        if self.provider_egress_ips.is_empty() && self.provider_smtp_hosts.is_empty() {
            return Err(
                "give at least one --provider-egress-ip or --provider-smtp-host".to_owned(),
            );
        }
        match (
            &self.provider_dkim_selectors[..],
            &self.provider_dkim_domain,
        ) {
            ([], Some(_)) => {
                Err("--provider-dkim-domain needs --provider-dkim-selector".to_owned())
            }
            ([_, ..], None) => {
                Err("--provider-dkim-selector needs --provider-dkim-domain".to_owned())
            }
            _ => Ok(()),
        }
    }

    /// The DKIM selectors with their reference names; empty when the DKIM path is off.
    pub fn dkim_selectors(&self) -> Vec<ProviderSelector> {
        let Some(domain) = &self.provider_dkim_domain else {
            return Vec::new();
        };
        self.provider_dkim_selectors
            .iter()
            .map(|selector| ProviderSelector::new(selector, domain))
            .collect()
    }
}

/// How DNS is queried, shared by `run` and `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// A DNS resolver to query, as IP:PORT (a bare IP means port 53). Repeatable. Default: the
    /// system's resolvers.
    #[arg(long = "nameserver", env = "HDMO_NAMESERVER", value_delimiter = ',', value_parser = parse_nameserver)]
    pub nameservers: Vec<SocketAddr>,

    /// Timeout of one DNS query, in milliseconds.
    #[arg(long, env = "HDMO_DNS_TIMEOUT_MS", default_value_t = DEFAULT_TIMEOUT_MS)]
    pub dns_timeout_ms: u64,

    /// Number of (name, type) answers the DNS cache holds. Default: 6 per tenant, at least
    /// 10000, growing with the tenant count.
    #[arg(long, env = "HDMO_DNS_CACHE_SIZE")]
    pub dns_cache_size: Option<usize>,
}

impl DnsArgs {
    /// The resolver configuration these flags describe; `default_cache_size` is the starting
    /// capacity when `--dns-cache-size` is not given, and may then grow.
    pub fn config(&self, default_cache_size: usize) -> DnsConfig {
        let mut config = dns_config(
            &self.nameservers,
            self.dns_timeout_ms,
            self.dns_cache_size.unwrap_or(default_cache_size),
        );
        config.cache_size_fixed = self.dns_cache_size.is_some();
        config
    }
}

/// The authoritative vantage (docs/design.md §6), shared by `run` and `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthorityArgs {
    /// Also ask each tenant's authoritative nameservers for its SPF record: the TTL behind
    /// `validAfter` comes from them, and an answer that differs from the resolver's (a stale
    /// cache, a split-horizon view) is reported as a warning. On by default;
    /// `--authoritative-check=false` or --no-authoritative-check turns it off.
    #[arg(
        long,
        env = "HDMO_AUTHORITATIVE_CHECK",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = DEFAULT_AUTHORITATIVE_CHECK,
        default_missing_value = "true",
        overrides_with = "no_authoritative_check"
    )]
    pub authoritative_check: bool,

    /// Do not ask authoritative nameservers (see --authoritative-check).
    #[arg(long, overrides_with = "authoritative_check")]
    pub no_authoritative_check: bool,

    /// The port authoritative nameservers are asked on. For labs and tests whose
    /// authoritative servers listen elsewhere; leave it at 53 in production.
    #[arg(long, env = "HDMO_AUTHORITATIVE_PORT", default_value_t = DEFAULT_AUTHORITATIVE_PORT)]
    pub authoritative_port: u16,
}

impl AuthorityArgs {
    /// Whether the authoritative check is on: the last of the two flags given wins.
    pub fn enabled(&self) -> bool {
        self.authoritative_check && !self.no_authoritative_check
    }

    /// `config` with the authoritative vantage these flags describe.
    pub fn apply(&self, config: DnsConfig) -> DnsConfig {
        DnsConfig {
            authoritative_check: self.enabled(),
            authoritative_port: self.authoritative_port,
            ..config
        }
    }
}

/// Arguments of `spf check`.
#[derive(clap::Args, Debug)]
pub struct SpfCheckArgs {
    /// The SMTP client address (IPv4 or IPv6; IPv4-mapped IPv6 is checked as IPv4).
    #[arg(long)]
    pub ip: IpAddr,
    /// The MAIL FROM address; empty means `postmaster@<helo>`.
    #[arg(long, default_value = "")]
    pub sender: String,
    /// The HELO/EHLO name.
    #[arg(long, default_value = "")]
    pub helo: String,
    /// DNS server to query, `ip:port` (repeatable); the only resolvers used. Default: the
    /// system's.
    #[arg(long = "nameserver", value_parser = parse_nameserver)]
    pub nameservers: Vec<SocketAddr>,
    /// Time allowed for one DNS query, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS)]
    pub dns_timeout_ms: u64,
    /// `json`: one JSON object on stdout; `text`: the same for a person.
    #[arg(long, value_enum, default_value_t = Output::Json)]
    pub output: Output,
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
    /// The paths that must align for the verdict, as a tenant's `spec.requiredAlignment`:
    /// `Spf`, `SpfOrDkim` or `SpfAndDkim`.
    #[arg(long, default_value = "Spf", value_parser = parse_required_alignment)]
    pub required_alignment: RequiredAlignment,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub authority: AuthorityArgs,
    /// `text` for a person (the default), or `json`: one JSON object.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Arguments of `what-if` (docs/design.md §3). The provider flags describe the live provider,
/// as for `run` (and read the same `HDMO_*` variables); the proposal is given apart.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Lists the senders whose verdict the proposal would change, that would go over \
    10 DNS lookups, or reach 9 of 10. Exit status: 0 when no tenant would break, 1 when some \
    would (a sender no longer aligned, or over 10 lookups), 2 on an error."
)]
pub struct WhatIfArgs {
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// The proposed SPF record of --provider-spf-domain, e.g. `v=spf1 ip4:198.51.100.0/24
    /// -all`; it is served to the evaluation in place of the published one.
    #[arg(long = "provider-spf-record", alias = "proposed-spf-record")]
    pub proposed_spf_record: Option<String>,
    /// A proposed provider SMTP source address (repeatable): the proposed egress set replaces
    /// the live one (--provider-egress-ip and --provider-smtp-host).
    #[arg(long = "proposed-egress-ip", value_delimiter = ',')]
    pub proposed_egress_ips: Vec<IpAddr>,
    /// Only the HelpdeskTenants of this namespace. Default: every one the kubeconfig can list.
    #[arg(long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub dns: DnsArgs,
    /// `text`: a table and a summary line (the default), or `json`: one JSON object.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Output format of a one-shot command.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Text,
}

/// `ip:port`, or a bare IP meaning port 53.
fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not ip:port"))
}

fn parse_required_alignment(text: &str) -> Result<RequiredAlignment, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not one of Spf, SpfOrDkim, SpfAndDkim"))
}

/// A reconcile limit: 1 to 65535. The controller would read 0 as "no limit".
fn parse_concurrency(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) => Err("must be at least 1 (0 would mean no limit at all)".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a number from 1 to 65535")),
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match crate::api::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{text:?} is not a duration such as 15m, 1h or 30s")),
    }
}

fn dns_config(nameservers: &[SocketAddr], timeout_ms: u64, cache_size: usize) -> DnsConfig {
    DnsConfig {
        nameservers: nameservers.to_vec(),
        timeout: Duration::from_millis(timeout_ms.max(1)),
        cache_size,
        cache_size_fixed: true,
        // One evaluation or a proposal asks the configured resolvers only; `run` and `check`
        // turn the vantage on with their `AuthorityArgs`.
        authoritative_check: false,
        authoritative_port: DEFAULT_AUTHORITATIVE_PORT,
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

/// Prints the CRD YAML.
fn print_crd() -> ExitCode {
    match crate::api::crd_yaml() {
        Ok(yaml) if print(&yaml).is_ok() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("cannot serialize the CRD: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The authoritative vantage `check` would use with `flags`.
    fn vantage(flags: &[&str]) -> (bool, u16) {
        let mut args = vec![
            "helpdesk-mail-operator",
            "check",
            "--domain",
            "customer.example",
            "--provider-spf-domain",
            "spf.provider.example",
        ];
        args.extend_from_slice(flags);
        let Cli {
            command: Command::Check(check),
        } = Cli::try_parse_from(args).expect("flags parse")
        else {
            panic!("a check");
        };
        let config = check.authority.apply(check.dns.config(1));
        (config.authoritative_check, config.authoritative_port)
    }

    #[test]
    fn the_authoritative_check_is_on_unless_turned_off() {
        assert_eq!(vantage(&[]), (true, 53));
        assert_eq!(vantage(&["--authoritative-check"]), (true, 53));
        assert_eq!(vantage(&["--no-authoritative-check"]), (false, 53));
        assert_eq!(vantage(&["--authoritative-check=false"]), (false, 53));
        assert_eq!(vantage(&["--authoritative-port", "5353"]), (true, 5353));
        // The last of the two flags wins.
        assert_eq!(
            vantage(&["--authoritative-check", "--no-authoritative-check"]),
            (false, 53)
        );
        assert_eq!(
            vantage(&["--no-authoritative-check", "--authoritative-check"]),
            (true, 53)
        );
    }

    #[test]
    fn one_shot_evaluations_ask_the_resolver_only() {
        assert!(!dns_config(&[], 100, 1).authoritative_check);
    }
}
