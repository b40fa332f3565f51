//! The provider's egress addresses: the configured ones merged with the A and AAAA records of
//! the provider's SMTP hosts, re-resolved every check interval, with a change epoch so the
//! controller can re-check every tenant when the set changes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::dns::{Dns, DnsError};

/// Why the provider's SMTP host names did not give a list of egress addresses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The name exists in no A or AAAA record.
    #[error("SMTP host {host} has no A or AAAA record")]
    NoAddress { host: String },
    /// A lookup failed temporarily; the previous list should be kept.
    #[error("resolving SMTP host {host}: {error}")]
    Dns { host: String, error: DnsError },
}

/// The A and AAAA addresses of every host (`--provider-smtp-host`), sorted, without
/// duplicates. Any failure fails the whole list, so a partial list never narrows the check.
async fn resolve_hosts<D: Dns>(dns: &D, hosts: &[String]) -> Result<Vec<IpAddr>, EgressError> {
    let lookups = hosts.iter().map(|host| async move {
        let (v4, v6) = futures::join!(dns.a(host), dns.aaaa(host));
        let dns_error = |error| EgressError::Dns {
            host: host.clone(),
            error,
        };
        let v4 = v4.map_err(dns_error)?;
        let v6 = v6.map_err(dns_error)?;
        let addresses: Vec<IpAddr> = v4
            .records
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(v6.records.iter().map(|a| IpAddr::V6(*a)))
            .collect();
        if addresses.is_empty() {
            return Err(EgressError::NoAddress { host: host.clone() });
        }
        Ok(addresses)
    });
    let mut all = Vec::new();
    for result in futures::future::join_all(lookups).await {
        all.extend(result?);
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// The provider's current egress set, shared by every reconcile.
pub struct Egress {
    configured: Vec<IpAddr>,
    smtp_hosts: Vec<String>,
    current: RwLock<BTreeSet<IpAddr>>,
    epoch: AtomicU64,
    changed: watch::Sender<u64>,
}

impl Egress {
    /// Starts from the configured addresses; [`Egress::refresh`] adds the SMTP hosts' ones.
    pub fn new(configured: Vec<IpAddr>, smtp_hosts: Vec<String>) -> Self {
        let current = configured.iter().copied().collect();
        let (changed, _) = watch::channel(0);
        Self {
            configured,
            smtp_hosts,
            current: RwLock::new(current),
            epoch: AtomicU64::new(0),
            changed,
        }
    }

    /// Whether any SMTP host is configured (else the set never changes).
    pub fn has_hosts(&self) -> bool {
        !self.smtp_hosts.is_empty()
    }

    /// The addresses known now.
    pub fn current(&self) -> BTreeSet<IpAddr> {
        self.current.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// Counts the changes of the set since start.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Notified with the new epoch whenever the set changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The configured addresses and those of every SMTP host, sorted, without duplicates. Any
    /// failed lookup fails the whole set, so a partial answer never narrows the check.
    pub async fn resolve<D: Dns>(&self, dns: &D) -> Result<BTreeSet<IpAddr>, EgressError> {
        let mut all: BTreeSet<IpAddr> = self.configured.iter().copied().collect();
        if self.has_hosts() {
            all.extend(resolve_hosts(dns, &self.smtp_hosts).await?);
        }
        Ok(all)
    }

    /// Re-resolves the SMTP hosts (through the shared cache) and bumps the epoch when the set
    /// changed. A failed lookup keeps the set as it was.
    pub async fn refresh<D: Dns>(&self, dns: &D) -> BTreeSet<IpAddr> {
        let current = self.current();
        if !self.has_hosts() {
            return current;
        }
        let fresh = match self.resolve(dns).await {
            Ok(fresh) => fresh,
            Err(error) => {
                warn!(%error, "could not re-resolve the provider SMTP hosts; keeping the previous addresses");
                return current;
            }
        };
        if fresh != current {
            info!(before = ?current, after = ?fresh, "provider egress addresses changed; re-checking every tenant");
            if let Ok(mut set) = self.current.write() {
                *set = fresh.clone();
            }
            let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            self.changed.send_replace(epoch);
        }
        fresh
    }
}
