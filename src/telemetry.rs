//! Logs, metrics and the `/metrics`, `/healthz` and `/readyz` endpoints.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use kube::ResourceExt;

use crate::api::{HelpdeskTenant, Mode, SenderState, SendingAs, condition};

/// JSON logs on stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        // Every line inside a reconcile carries the `reconcile` span with tenant and namespace.
        .with_current_span(false)
        .with_span_list(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    pub record_type: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsTypeLabels {
    pub record_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub namespace: String,
    pub tenant: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The operator's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// HelpdeskTenants by state (`aligned`, `fallback`, `unaligned`, `unknown`, `pending`,
    /// `suspended`, `observe`), recomputed from the cache at every scrape.
    pub tenants: Family<StateLabels, Gauge>,
    /// Sender checks by result (`aligned`, `unaligned`, `temporary_failure`).
    pub checks: Family<ResultLabels, Counter>,
    /// Upstream DNS queries by record type and outcome.
    pub dns_queries: Family<DnsLabels, Counter>,
    /// Upstream DNS query latency by record type.
    pub dns_latency: HistogramFamily<DnsTypeLabels>,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Reconcile errors by kind.
    pub reconcile_errors: Family<KindLabels, Counter>,
    /// Mail-settings switches by direction (`to_fallback`, `to_tenant`).
    pub fallback_transitions: Family<DirectionLabels, Counter>,
    /// Status patches sent.
    pub status_writes: Counter,
    /// ConfigMap applies sent.
    pub config_map_writes: Counter,
    /// 1 while this replica holds the Lease (or runs without leader election).
    pub leader: Gauge,
    /// 1 while every egress address passes the provider's own SPF record, 0 while one does
    /// not (docs/design.md §5 "Provider self-check"). 1 from start until a check says otherwise.
    pub provider_healthy: Gauge,
    /// 1 while the fleet guard holds switches to fallback (docs/design.md §5 "Fleet guard").
    pub fleet_guard_holding: Gauge,
    /// Switches to fallback the fleet guard held, one per sender and check.
    pub fleet_guard_held_switches: Counter,
    /// Per tenant (behind `--per-tenant-metrics`): aligned senders.
    pub tenant_aligned_senders: Option<Family<TenantLabels, Gauge>>,
    /// Per tenant (behind `--per-tenant-metrics`): senders falling back.
    pub tenant_fallback_senders: Option<Family<TenantLabels, Gauge>>,
}

impl Metrics {
    /// Registers every metric under the `helpdesk_` prefix.
    pub fn new(per_tenant: bool) -> Self {
        let mut registry = Registry::with_prefix("helpdesk");
        let tenants = Family::<StateLabels, Gauge>::default();
        registry.register("tenants", "HelpdeskTenants by state", tenants.clone());
        let checks = Family::<ResultLabels, Counter>::default();
        registry.register("checks", "Sender checks by result", checks.clone());
        let dns_queries = Family::<DnsLabels, Counter>::default();
        registry.register(
            "dns_queries",
            "Upstream DNS queries by record type and outcome",
            dns_queries.clone(),
        );
        let dns_latency: HistogramFamily<DnsTypeLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "dns_query_duration_seconds",
            "Upstream DNS query latency",
            dns_latency.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            reconcile_errors.clone(),
        );
        let fallback_transitions = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "fallback_transitions",
            "Mail-settings switches by direction",
            fallback_transitions.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status patches sent",
            status_writes.clone(),
        );
        let config_map_writes = Counter::default();
        registry.register(
            "configmap_writes",
            "Mail-settings ConfigMap applies sent",
            config_map_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica reconciles (holds the Lease)",
            leader.clone(),
        );
        let provider_healthy = Gauge::default();
        provider_healthy.set(1);
        registry.register(
            "provider_healthy",
            "1 while every provider egress address passes the provider's own SPF record",
            provider_healthy.clone(),
        );
        let fleet_guard_holding = Gauge::default();
        registry.register(
            "fleet_guard_holding",
            "1 while the fleet guard holds switches to the fallback sender",
            fleet_guard_holding.clone(),
        );
        let fleet_guard_held_switches = Counter::default();
        registry.register(
            "fleet_guard_held_switches",
            "Switches to the fallback sender held by the fleet guard (one per sender and check)",
            fleet_guard_held_switches.clone(),
        );
        let (tenant_aligned_senders, tenant_fallback_senders) = if per_tenant {
            let aligned = Family::<TenantLabels, Gauge>::default();
            registry.register(
                "tenant_aligned_senders",
                "Aligned senders of one tenant",
                aligned.clone(),
            );
            let fallback = Family::<TenantLabels, Gauge>::default();
            registry.register(
                "tenant_fallback_senders",
                "Senders of one tenant sending as the fallback sender",
                fallback.clone(),
            );
            (Some(aligned), Some(fallback))
        } else {
            (None, None)
        };
        Self {
            registry: Mutex::new(registry),
            tenants,
            checks,
            dns_queries,
            dns_latency,
            reconcile_duration,
            reconcile_errors,
            fallback_transitions,
            status_writes,
            config_map_writes,
            leader,
            provider_healthy,
            fleet_guard_holding,
            fleet_guard_held_switches,
            tenant_aligned_senders,
            tenant_fallback_senders,
        }
    }

    /// Records one upstream DNS query.
    pub fn observe_dns(&self, record_type: &str, outcome: &str, elapsed: Duration) {
        self.dns_queries
            .get_or_create(&DnsLabels {
                record_type: record_type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.dns_latency
            .get_or_create(&DnsTypeLabels {
                record_type: record_type.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(registry) => registry,
            Err(poisoned) => poisoned.into_inner(),
        };
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Called before each scrape to refresh gauges computed from the cache.
pub type Refresh = Arc<dyn Fn(&Metrics) + Send + Sync>;

/// Shared state of the HTTP endpoints.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// True once this replica's caches are synced (or while it waits for the Lease).
    pub ready: AtomicBool,
    pub refresh: Mutex<Option<Refresh>>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            ready: AtomicBool::new(false),
            refresh: Mutex::new(None),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn set_refresh(&self, refresh: Option<Refresh>) {
        if let Ok(mut slot) = self.refresh.lock() {
            *slot = refresh;
        }
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let refresh = health.refresh.lock().ok().and_then(|r| r.clone());
    if let Some(refresh) = refresh {
        refresh(&health.metrics);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

/// Serves the endpoints until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Recomputes the tenant gauges from the cache (so deleted tenants disappear).
pub fn refresh_tenant_metrics(
    metrics: &Metrics,
    tenants: &[Arc<HelpdeskTenant>],
    per_tenant: bool,
) {
    let mut counts: std::collections::BTreeMap<&'static str, i64> = [
        "aligned",
        "fallback",
        "unaligned",
        "unknown",
        "pending",
        "suspended",
        "observe",
    ]
    .into_iter()
    .map(|state| (state, 0))
    .collect();
    for tenant in tenants {
        *counts.entry(tenant_state(tenant)).or_insert(0) += 1;
    }
    for (state, count) in counts {
        metrics
            .tenants
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .set(count);
    }
    if per_tenant
        && let (Some(aligned), Some(fallback)) = (
            &metrics.tenant_aligned_senders,
            &metrics.tenant_fallback_senders,
        )
    {
        aligned.clear();
        fallback.clear();
        for tenant in tenants {
            let labels = TenantLabels {
                namespace: tenant.namespace().unwrap_or_default(),
                tenant: tenant.name_any(),
            };
            let (a, f) = sender_counts(tenant);
            aligned.get_or_create(&labels).set(a);
            fallback.get_or_create(&labels).set(f);
        }
    }
}

/// The state a tenant is counted under in the `helpdesk_tenants` metric.
pub fn tenant_state(tenant: &HelpdeskTenant) -> &'static str {
    if tenant.spec.suspend {
        return "suspended";
    }
    let Some(status) = tenant.status.as_ref() else {
        return "pending";
    };
    let get = |kind: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.as_str())
    };
    if tenant.spec.mode == Mode::Observe {
        return "observe";
    }
    if get(condition::FALLBACK_ACTIVE) == Some("True") {
        if !status.senders.is_empty()
            && status
                .senders
                .iter()
                .all(|s| s.state == SenderState::Pending)
        {
            return "pending";
        }
        return "fallback";
    }
    match get(condition::SPF_ALIGNED) {
        Some("True") => "aligned",
        Some("False") => "unaligned",
        _ => "unknown",
    }
}

/// Aligned and falling-back sender counts of a tenant, for per-tenant metrics.
pub fn sender_counts(tenant: &HelpdeskTenant) -> (i64, i64) {
    let senders = tenant
        .status
        .as_ref()
        .map(|s| s.senders.as_slice())
        .unwrap_or(&[]);
    let aligned = senders
        .iter()
        .filter(|s| s.state == SenderState::Aligned)
        .count();
    let fallback = senders
        .iter()
        .filter(|s| s.sending_as == SendingAs::Fallback)
        .count();
    (aligned as i64, fallback as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_its_prefix() {
        let metrics = Metrics::new(true);
        metrics.observe_dns("TXT", "ok", Duration::from_millis(3));
        metrics
            .checks
            .get_or_create(&ResultLabels {
                result: "aligned".into(),
            })
            .inc();
        if let Some(family) = &metrics.tenant_aligned_senders {
            family
                .get_or_create(&TenantLabels {
                    namespace: "ns".into(),
                    tenant: "acme".into(),
                })
                .set(2);
        }
        let text = metrics.encode();
        for name in [
            "helpdesk_dns_queries_total{record_type=\"TXT\",outcome=\"ok\"} 1",
            "helpdesk_checks_total{result=\"aligned\"} 1",
            "helpdesk_dns_query_duration_seconds_count{record_type=\"TXT\"} 1",
            "# TYPE helpdesk_reconcile_duration_seconds histogram",
            "# TYPE helpdesk_leader gauge",
            "helpdesk_tenant_aligned_senders{namespace=\"ns\",tenant=\"acme\"} 2",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(
            !Metrics::new(false)
                .encode()
                .contains("tenant_aligned_senders")
        );
    }

    #[test]
    fn tenant_states_for_the_metrics() {
        use jiff::Timestamp;

        use crate::api::{HelpdeskTenantSpec, HelpdeskTenantStatus};
        use crate::conditions::set_condition;
        let spec = HelpdeskTenantSpec::with_senders(["a@acme.example"]);
        let mut tenant = HelpdeskTenant::new("acme", spec);
        assert_eq!(tenant_state(&tenant), "pending");
        let mut status = HelpdeskTenantStatus::default();
        let now = Timestamp::UNIX_EPOCH;
        set_condition(
            &mut status.conditions,
            "SpfAligned",
            "True",
            "Aligned",
            "",
            None,
            now,
        );
        set_condition(
            &mut status.conditions,
            "FallbackActive",
            "False",
            "TenantSendersActive",
            "",
            None,
            now,
        );
        tenant.status = Some(status.clone());
        assert_eq!(tenant_state(&tenant), "aligned");
        set_condition(
            &mut status.conditions,
            "SpfAligned",
            "Unknown",
            "DnsTemporaryFailure",
            "",
            None,
            now,
        );
        tenant.status = Some(status.clone());
        assert_eq!(tenant_state(&tenant), "unknown");
        set_condition(
            &mut status.conditions,
            "FallbackActive",
            "True",
            "SendersUnaligned",
            "",
            None,
            now,
        );
        tenant.status = Some(status);
        assert_eq!(tenant_state(&tenant), "fallback");
        tenant.spec.mode = Mode::Observe;
        assert_eq!(tenant_state(&tenant), "observe");
        tenant.spec.suspend = true;
        assert_eq!(tenant_state(&tenant), "suspended");
        assert_eq!(sender_counts(&tenant), (0, 0));
    }
}
