//! The guards of docs/design.md §5 that look past one tenant: the provider self-check, the
//! fallback sender check, and the fleet guard's shared state with its release.
//!
//! The two checks are evaluated at most once per [`GUARD_TTL`] for the whole fleet (one
//! evaluation at a time: concurrent reconciles wait for it and share its result), so a round
//! of checks costs one provider evaluation and one check per distinct fallback domain.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::runtime::events::{Event, EventType};

use crate::events::EventPublisher;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::alignment::SenderCheck;
use crate::alignment::{Provider, SenderInput, Verdict, check_sender};
use crate::api::{HelpdeskTenantStatus, RequiredAlignment};
use crate::decide::{Guards, provider_fault, turned_unaligned};
use crate::dns::Dns;
use crate::guard::{FleetGuard, GuardConfig, Outcome};
use crate::names::address_domain;
use crate::spf::{Evaluator, SpfQuery, SpfResult};
use crate::telemetry::Metrics;

/// How long a provider self-check or fallback sender check is reused.
pub const GUARD_TTL: Duration = Duration::from_secs(5);

/// The annotation on the operator's Lease that releases a fleet-guard hold.
pub const FLEET_GUARD_ANNOTATION: &str = "mail.helpdesk.io/fleet-guard";
/// Its value that releases the hold.
pub const RELEASE: &str = "release";

/// How often the Lease is read for the release annotation, while the guard holds.
const RELEASE_POLL: Duration = Duration::from_secs(2);

/// A change of the provider's health, reported once for the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderChange {
    /// The provider's own SPF record stopped passing an egress address: the message says how.
    Broke(String),
    /// Every egress address passes again.
    Recovered,
}

/// What one evaluation of the provider's own record found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ProviderHealthCheck {
    Passes,
    Fails(String),
    /// Only temporary errors (or no egress address): no verdict, the state stays.
    Unknown,
}

#[derive(Default)]
struct ProviderCache {
    checked_at: Option<Instant>,
    egress: Vec<IpAddr>,
    /// Set while the provider's record fails.
    broken: Option<String>,
}

/// One tenant's round of checks, as the guards look at it.
#[derive(Clone, Copy, Debug)]
pub struct TenantRound<'a> {
    pub previous: Option<&'a HelpdeskTenantStatus>,
    pub checks: &'a [SenderCheck],
    /// The tenant's fallback From address.
    pub fallback: &'a str,
    pub key: &'a (String, String),
    /// When the tenant's checks began.
    pub checks_started: Instant,
}

/// The fleet-wide guard state, shared by every reconcile.
pub struct FleetHealth {
    provider: tokio::sync::Mutex<ProviderCache>,
    fallback: tokio::sync::Mutex<HashMap<String, (Instant, Option<String>)>>,
    guard: std::sync::Mutex<FleetGuard<(String, String)>>,
    released: AtomicBool,
    metrics: Arc<Metrics>,
    /// The object fleet-wide Events go on: the operator's Lease.
    object: ObjectReference,
}

impl FleetHealth {
    /// `window` is the check interval the fleet guard counts over; fleet-wide Events go on
    /// the Lease `lease_name` in `lease_namespace`.
    pub fn new(
        config: GuardConfig,
        window: Duration,
        metrics: Arc<Metrics>,
        lease_namespace: &str,
        lease_name: &str,
    ) -> Self {
        Self {
            provider: tokio::sync::Mutex::new(ProviderCache::default()),
            fallback: tokio::sync::Mutex::new(HashMap::new()),
            guard: std::sync::Mutex::new(FleetGuard::new(config, window)),
            released: AtomicBool::new(false),
            metrics,
            object: ObjectReference {
                api_version: Some("coordination.k8s.io/v1".to_owned()),
                kind: Some("Lease".to_owned()),
                namespace: Some(lease_namespace.to_owned()),
                name: Some(lease_name.to_owned()),
                ..ObjectReference::default()
            },
        }
    }

    /// The provider self-check (docs/design.md §5): `Some(message)` while any egress address
    /// does not pass `--provider-spf-domain` itself; the change, to the one caller that saw it
    /// happen. Reused for [`GUARD_TTL`] while the egress set stays the same, except that a
    /// healthy result older than `suspect_since` is checked again: a sender check started
    /// then failed the way a broken provider record makes it fail, and may have seen a newer
    /// provider record than the cached result did.
    pub async fn provider_broken<D: Dns + Clone>(
        &self,
        dns: &D,
        provider: &Provider,
        suspect_since: Option<Instant>,
    ) -> (Option<String>, Option<ProviderChange>) {
        let mut cache = self.provider.lock().await;
        let fresh = cache.checked_at.is_some_and(|at| {
            at.elapsed() < GUARD_TTL
                && (cache.broken.is_some() || suspect_since.is_none_or(|since| at >= since))
        }) && cache.egress == provider.egress_ips;
        if fresh {
            return (cache.broken.clone(), None);
        }
        let health = evaluate_provider(dns, provider).await;
        cache.checked_at = Some(Instant::now());
        cache.egress = provider.egress_ips.clone();
        let change = match health {
            ProviderHealthCheck::Passes => cache.broken.take().map(|_| ProviderChange::Recovered),
            ProviderHealthCheck::Fails(message) => cache
                .broken
                .replace(message.clone())
                .is_none()
                .then_some(ProviderChange::Broke(message)),
            ProviderHealthCheck::Unknown => None,
        };
        match &change {
            Some(ProviderChange::Broke(message)) => {
                self.metrics.provider_healthy.set(0);
                error!(
                    provider = %provider.spf_domain,
                    %message,
                    "the provider's own SPF record fails; no tenant is moved to fallback for it"
                );
            }
            Some(ProviderChange::Recovered) => {
                self.metrics.provider_healthy.set(1);
                info!(provider = %provider.spf_domain, "the provider's own SPF record passes again");
            }
            None => {}
        }
        (cache.broken.clone(), change)
    }

    /// Publishes the Event of a provider health change on the operator's Lease.
    pub async fn publish(&self, recorder: &EventPublisher, change: &ProviderChange) {
        let event = match change {
            ProviderChange::Broke(message) => Event {
                type_: EventType::Warning,
                reason: "ProviderSpfBroken".to_owned(),
                note: Some(format!(
                    "{message}; no tenant is moved to the fallback sender for it"
                )),
                action: "CheckProvider".to_owned(),
                secondary: None,
            },
            ProviderChange::Recovered => Event {
                type_: EventType::Normal,
                reason: "ProviderSpfRestored".to_owned(),
                note: Some(
                    "the provider's own SPF record passes every egress address again".to_owned(),
                ),
                action: "CheckProvider".to_owned(),
                secondary: None,
            },
        };
        if let Err(error) = recorder.publish(&event, &self.object).await {
            warn!(%error, reason = %event.reason, "could not publish the Event");
        }
    }

    /// The fallback sender check (docs/design.md §5): `Some(message)` when the domain of
    /// `address` is not aligned for the provider's egress under the same SPF rules. Checked
    /// once per distinct domain and reused for [`GUARD_TTL`]. A temporary failure is no
    /// verdict and holds nothing.
    pub async fn fallback_unaligned<D: Dns + Clone>(
        &self,
        dns: &D,
        provider: &Provider,
        address: &str,
    ) -> Option<String> {
        let domain = address_domain(address)
            .unwrap_or(address)
            .to_ascii_lowercase();
        let mut cache = self.fallback.lock().await;
        if let Some((at, result)) = cache.get(&domain)
            && at.elapsed() < GUARD_TTL
        {
            return result.clone();
        }
        let input = SenderInput {
            address: address.to_owned(),
            envelope_domain: None,
            required: RequiredAlignment::Spf,
        };
        let check = check_sender(dns, provider, &input).await;
        let result = match check.verdict {
            Verdict::Unaligned { message, .. } => Some(format!(
                "the fallback sender {address} is not aligned either ({message}), so switching would not help"
            )),
            Verdict::Aligned | Verdict::TemporaryFailure { .. } => None,
        };
        cache.retain(|_, (at, _)| at.elapsed() < GUARD_TTL);
        cache.insert(domain, (Instant::now(), result.clone()));
        result
    }

    /// The guards one tenant's checks meet (docs/design.md §5), and a provider health change
    /// for the one caller that saw it.
    pub async fn guards<D: Dns + Clone>(
        &self,
        dns: &D,
        provider: &Provider,
        round: &TenantRound<'_>,
    ) -> (Guards, Option<ProviderChange>) {
        let TenantRound {
            previous,
            checks,
            fallback,
            key,
            checks_started,
        } = *round;
        let suspect = checks.iter().any(provider_fault).then_some(checks_started);
        let (provider_broken, change) = self.provider_broken(dns, provider, suspect).await;
        let turned = checks.iter().any(|check| {
            let before = previous.and_then(|p| {
                p.senders
                    .iter()
                    .find(|s| s.address.eq_ignore_ascii_case(&check.address))
            });
            turned_unaligned(before, check) && !(provider_broken.is_some() && provider_fault(check))
        });
        let fallback_unaligned = if turned {
            self.fallback_unaligned(dns, provider, fallback).await
        } else {
            None
        };
        let fleet_hold = self.observe(key, turned);
        (
            Guards {
                provider_broken,
                fallback_unaligned,
                fleet_hold,
            },
            change,
        )
    }

    /// Records one tenant's check in the fleet guard (`turned`: a sender sending as the
    /// tenant got an Unaligned verdict) and says whether switches to fallback are held.
    pub fn observe(&self, key: &(String, String), turned: bool) -> bool {
        let released = self.released.load(Ordering::SeqCst);
        let outcome = {
            let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
            guard.observe(key, turned, Instant::now(), released)
        };
        self.report(outcome);
        outcome.holding
    }

    /// Whether the guard holds now.
    pub fn holding(&self) -> bool {
        let released = self.released.load(Ordering::SeqCst);
        let outcome = {
            let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
            guard.evaluate(Instant::now(), released)
        };
        self.report(outcome);
        outcome.holding
    }

    fn report(&self, outcome: Outcome) {
        if !outcome.changed {
            return;
        }
        let Outcome {
            turned, checked, ..
        } = outcome;
        if outcome.holding {
            self.metrics.fleet_guard_holding.set(1);
            error!(
                turned,
                checked,
                "fleet guard: too many tenants turned unaligned within one check interval; holding switches to the fallback sender"
            );
        } else {
            self.metrics.fleet_guard_holding.set(0);
            warn!(
                turned,
                checked, "fleet guard: hold ended; switches to the fallback sender resume"
            );
        }
    }

    /// Reads the release annotation from the operator's Lease every [`RELEASE_POLL`] while
    /// the guard holds or a release is in force, until `shutdown`.
    pub async fn watch_release(
        self: Arc<Self>,
        api: Api<Lease>,
        name: String,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RELEASE_POLL) => {}
            }
            if !self.released.load(Ordering::SeqCst) && !self.holding() {
                continue;
            }
            match api.get_opt(&name).await {
                Ok(lease) => {
                    let release = lease.as_ref().is_some_and(|l| {
                        l.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(FLEET_GUARD_ANNOTATION))
                            .is_some_and(|v| v == RELEASE)
                    });
                    if self.released.swap(release, Ordering::SeqCst) != release {
                        info!(release, "fleet guard release annotation changed");
                        self.holding();
                    }
                }
                Err(error) => {
                    debug!(%error, "could not read the Lease for the fleet guard release")
                }
            }
        }
    }
}

/// `check_host()` of every egress address on the provider's SPF domain itself.
async fn evaluate_provider<D: Dns + Clone>(dns: &D, provider: &Provider) -> ProviderHealthCheck {
    if provider.egress_ips.is_empty() {
        return ProviderHealthCheck::Unknown;
    }
    let evaluator = Evaluator::new(dns.clone());
    let queries: Vec<SpfQuery> = provider
        .egress_ips
        .iter()
        .map(|ip| SpfQuery::for_domain(*ip, &provider.spf_domain))
        .collect();
    let outcomes = futures::future::join_all(queries.iter().map(|q| evaluator.check_host(q))).await;
    let failing: Vec<String> = queries
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !matches!(o.result, SpfResult::Pass | SpfResult::Temperror))
        .map(|(q, o)| format!("{} ({})", q.ip, o.result.as_str()))
        .collect();
    if !failing.is_empty() {
        return ProviderHealthCheck::Fails(format!(
            "the provider's SPF record {} does not pass {}",
            provider.spf_domain,
            failing.join(", ")
        ));
    }
    if outcomes.iter().any(|o| o.result == SpfResult::Temperror) {
        return ProviderHealthCheck::Unknown;
    }
    ProviderHealthCheck::Passes
}
