//! Controller wiring: watches, leader election, shutdown.
//!
//! # RBAC
//!
//! The operator needs exactly these permissions (no wildcards, no Secrets); the end-to-end
//! tests run it with a ServiceAccount bound to nothing more:
//!
//! | API group | resource | verbs |
//! |---|---|---|
//! | `mail.helpdesk.io` | `helpdesktenants` | get, list, watch |
//! | `mail.helpdesk.io` | `helpdesktenants/status` | patch |
//! | `""` (core) | `configmaps` | get, list, watch, create, patch |
//! | `events.k8s.io` | `events` | create, patch |
//! | `coordination.k8s.io` | `leases` | get, create, patch (only with `--leader-election`, in the Lease namespace) |
//!
//! With `--watch-namespace`, a Role in that namespace suffices; otherwise a ClusterRole. Where
//! the `OwnerReferencesPermissionEnforcement` admission plugin is on, the ConfigMaps' owner
//! references (`blockOwnerDeletion`) also need `update` on `helpdesktenants/finalizers`.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{FIELD_MANAGER, HelpdeskTenant};
use crate::cli::{DnsArgs, ProviderArgs};
use crate::dns::{DnsConfig, QueryEvent, QueryObserver, Resolver};
use crate::reconcile::{self, Context, MANAGED_BY_LABEL, Settings};
use crate::telemetry::{self, Health, Metrics, StateLabels, TenantLabels};

/// Arguments of `run` (design §3). Every flag can also be set by its `HDMO_*` environment
/// variable.
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

/// Runs the operator until SIGTERM or SIGINT.
pub fn main(args: RunArgs) -> ExitCode {
    telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            error!(error = format!("{error:#}"), "operator failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    args.provider.require_egress().map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));

    let metrics = Arc::new(Metrics::new(args.per_tenant_metrics));
    let health = Health::new(metrics.clone());
    let server = tokio::spawn(telemetry::serve(
        args.metrics_addr,
        health.clone(),
        shutdown.clone(),
    ));

    let observer_metrics = metrics.clone();
    let observer: QueryObserver = Arc::new(move |event: &QueryEvent| {
        observer_metrics.observe_dns(event.record_type, event.outcome, event.elapsed);
    });
    let resolver = Resolver::with_observer(
        &args.dns.config(DnsConfig::default().cache_size),
        Some(observer),
    )
    .context("building the DNS resolver")?;
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let identity = args
        .lease_identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("helpdesk-mail-operator-{}", std::process::id()));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity.clone()),
        },
    );
    let settings = Settings {
        provider_spf_domain: args.provider.provider_spf_domain.clone(),
        egress_ips: args.provider.provider_egress_ips.clone(),
        smtp_hosts: args.provider.provider_smtp_hosts.clone(),
        default_sender: args.default_sender.clone(),
        default_interval: args.check_interval,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        resolver,
        settings,
        recorder,
        metrics.clone(),
    ));
    ctx.refresh_egress().await;
    tokio::spawn(refresh_egress_periodically(
        ctx.clone(),
        args.check_interval,
        shutdown.clone(),
    ));

    if args.leader_election {
        run_with_lease(
            &args,
            client,
            ctx,
            health.clone(),
            identity,
            shutdown.clone(),
        )
        .await?;
    } else {
        metrics.leader.set(1);
        run_controller(
            &args,
            ctx,
            health.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await;
    }
    shutdown.cancel();
    health.set_ready(false);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "metrics server failed"),
        Err(error) => warn!(%error, "metrics server task failed"),
    }
    Ok(())
}

/// Reconciles only while holding the Lease; gives it back on shutdown.
async fn run_with_lease(
    args: &RunArgs,
    client: Client,
    ctx: Arc<Context>,
    health: Arc<Health>,
    identity: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_owned());
    let duration = args.lease_duration_seconds.max(2);
    let manager = LeaseManagerBuilder::new(client, args.lease_name.clone())
        .with_namespace(namespace.clone())
        .with_identity(identity.clone())
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(format!("{FIELD_MANAGER}-lease"))
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = %args.lease_name, %namespace, %identity, "waiting for the Lease");
    // A replica waiting for the Lease has nothing to sync: it is ready to take over.
    health.set_ready(true);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.wait_for(|leader| *leader) => {
                if changed.is_err() {
                    warn!("leader election stopped");
                    break;
                }
            }
        }
        info!(%identity, "acquired the Lease; reconciling");
        ctx.metrics.leader.set(1);
        health.set_ready(false);
        let mut watch = leading.clone();
        let stop = shutdown.clone();
        let lost = async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = watch.wait_for(|leader| !*leader) => {}
            }
        };
        run_controller(args, ctx.clone(), health.clone(), lost).await;
        ctx.metrics.leader.set(0);
        if shutdown.is_cancelled() {
            break;
        }
        warn!(%identity, "lost the Lease; stopped reconciling");
        health.set_ready(true);
    }
    drop(leading);
    match task.await {
        Ok(Ok(_)) => info!("released the Lease"),
        Ok(Err(error)) => warn!(%error, "could not release the Lease"),
        Err(error) => warn!(%error, "leader election task failed"),
    }
    Ok(())
}

/// Runs the Controller until `stop` resolves, then lets running reconciles finish.
async fn run_controller(
    args: &RunArgs,
    ctx: Arc<Context>,
    health: Arc<Health>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (tenants, config_maps): (Api<HelpdeskTenant>, Api<ConfigMap>) = match &args.watch_namespace
    {
        Some(namespace) => (
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client, namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let mut tenant_watch = watcher::Config::default();
    if let Some(selector) = &args.selector {
        tenant_watch = tenant_watch.labels(selector);
    }
    let owned_watch =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));

    let egress_changes = futures::stream::unfold(ctx.egress_changes(), |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    let controller = Controller::new(tenants, tenant_watch)
        .owns(config_maps, owned_watch)
        .reconcile_all_on(egress_changes)
        .with_config(ControllerConfig::default().concurrency(args.concurrency))
        .graceful_shutdown_on(stop);

    let store = controller.store();
    let ready_store = store.clone();
    let ready_health = health.clone();
    let ready = tokio::spawn(async move {
        // The store's readiness signal wakes only its latest waiter, and the controller waits
        // on it too: poll again every so often instead of trusting one wake-up.
        loop {
            match tokio::time::timeout(Duration::from_millis(250), ready_store.wait_until_ready())
                .await
            {
                Ok(Ok(())) => {
                    info!("caches synced");
                    ready_health.set_ready(true);
                    return;
                }
                Ok(Err(error)) => {
                    warn!(%error, "the cache will not sync");
                    return;
                }
                Err(_) => {}
            }
        }
    });
    let per_tenant = args.per_tenant_metrics;
    let refresh_store = store.clone();
    health.set_refresh(Some(Arc::new(move |metrics: &Metrics| {
        refresh_tenant_metrics(metrics, &refresh_store.state(), per_tenant);
    })));

    let prune_store = store.clone();
    let prune_ctx = ctx.clone();
    let every = args.check_interval;
    let prune = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let live: std::collections::HashSet<(String, String)> = prune_store
                .state()
                .iter()
                .map(|t| (t.namespace().unwrap_or_default(), t.name_any()))
                .collect();
            prune_ctx
                .retain(|namespace, name| live.contains(&(namespace.to_owned(), name.to_owned())));
        }
    });
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(%error, "controller error"),
            }
        })
        .await;
    ready.abort();
    prune.abort();
    health.set_refresh(None);
}

/// Recomputes the tenant gauges from the cache (so deleted tenants disappear).
fn refresh_tenant_metrics(metrics: &Metrics, tenants: &[Arc<HelpdeskTenant>], per_tenant: bool) {
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
        *counts.entry(reconcile::tenant_state(tenant)).or_insert(0) += 1;
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
            let (a, f) = reconcile::sender_counts(tenant);
            aligned.get_or_create(&labels).set(a);
            fallback.get_or_create(&labels).set(f);
        }
    }
}

async fn refresh_egress_periodically(
    ctx: Arc<Context>,
    every: Duration,
    shutdown: CancellationToken,
) {
    if ctx.settings.smtp_hosts.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        ctx.refresh_egress().await;
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            warn!("cannot listen for signals");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = int.recv() => info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
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
