//! Controller wiring: watches, leader election, shutdown.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `run` (design §3). Every flag can also be set by its `HDMO_*` environment
/// variable.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
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

    /// The From address used while a sender falls back, unless the tenant sets
    /// `spec.fallbackSender`. `{tenant}` and `{namespace}` are replaced by the tenant's name and
    /// namespace.
    #[arg(long, env = "HDMO_DEFAULT_SENDER")]
    pub default_sender: String,

    /// A DNS resolver to query, as IP:PORT. Repeatable. Default: the system's resolvers.
    #[arg(long = "nameserver", env = "HDMO_NAMESERVER", value_delimiter = ',')]
    pub nameservers: Vec<SocketAddr>,

    /// Timeout of one DNS query, in milliseconds.
    #[arg(long, env = "HDMO_DNS_TIMEOUT_MS", default_value_t = 2000)]
    pub dns_timeout_ms: u64,

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

    /// Reconciles run at once.
    #[arg(long, env = "HDMO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match crate::api::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("{text:?} is not a duration such as 15m, 1h or 30s")),
    }
}

/// Runs the operator until SIGTERM.
pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("run: not built yet");
    ExitCode::FAILURE
}

/// Prints the CRD YAML.
pub fn print_crd() -> ExitCode {
    match crate::api::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot serialize the CRD: {error}");
            ExitCode::FAILURE
        }
    }
}
