//! Controller wiring: watches, leader election, shutdown.
//!
//! The permissions the operator needs are listed once, in
//! `charts/helpdesk-mail-operator/files/rbac-rules.yaml`: the chart grants exactly those and
//! the end-to-end tests run the operator under nothing more.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{FIELD_MANAGER, HelpdeskTenant};
use crate::dns::{self, DnsConfig, QueryEvent, QueryObserver, Resolver};
use crate::events::EventPublisher;
use crate::leader::{Elector, Leadership, TermEnd, Timing};
use crate::reconcile::{self, Context, MANAGED_BY_LABEL, Settings};
use crate::schedule::Schedule;
use crate::telemetry::{self, Health, Metrics};
use std::sync::atomic::Ordering;

/// The operator's configuration (docs/design.md §3), built from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub dns: DnsConfig,
    /// Watch HelpdeskTenants in this namespace only; `None`: all namespaces.
    pub watch_namespace: Option<String>,
    /// Label selector of the tenants (and their ConfigMaps) this instance handles.
    pub selector: Option<String>,
    pub metrics_addr: SocketAddr,
    pub per_tenant_metrics: bool,
    /// Leader election; `None`: reconcile without a Lease.
    pub lease: Option<LeaseConfig>,
    /// Reconciles run at once.
    pub concurrency: u16,
}

/// The leader-election Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Default: the pod's namespace (`POD_NAMESPACE`), else `default`.
    pub namespace: Option<String>,
    pub name: String,
    /// How long the Lease holds without renewal.
    pub duration_seconds: u64,
    /// Default: the pod name (`POD_NAME`), else the hostname.
    pub identity: Option<String>,
}

/// Runs the operator until SIGTERM or SIGINT.
pub fn main(config: Config) -> ExitCode {
    telemetry::init_logging();
    // One thread carries every task (docs/design.md §8 "One thread"): the operator waits on
    // the API server and DNS, and workers handing tasks to each other cost more CPU than the
    // checks themselves.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
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

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));

    let metrics = Arc::new(Metrics::new(config.per_tenant_metrics));
    let health = Health::new(metrics.clone());
    let server = tokio::spawn(telemetry::serve(
        config.metrics_addr,
        health.clone(),
        shutdown.clone(),
    ));

    let observer_metrics = metrics.clone();
    let observer: QueryObserver = Arc::new(move |event: &QueryEvent| {
        observer_metrics.observe_dns(event.record_type, event.outcome, event.elapsed);
    });
    let resolver = Resolver::with_observer(&config.dns, Some(observer))
        .context("building the DNS resolver")?;
    let client = connect().await?;
    let identity = config
        .lease
        .as_ref()
        .and_then(|lease| lease.identity.clone())
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("helpdesk-mail-operator-{}", std::process::id()));
    let recorder = EventPublisher::new(client.clone(), FIELD_MANAGER.to_owned(), identity.clone());
    // With leader election, nothing may be written before the Lease is won (docs/design.md §8).
    let leadership = if config.lease.is_some() {
        Leadership::closed()
    } else {
        Leadership::open()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        resolver,
        config.settings.clone(),
        recorder,
        metrics.clone(),
        Arc::new(leadership),
    ));
    ctx.egress.refresh(&ctx.resolver).await;
    // The fleet guard's release annotation is read from the Lease (docs/design.md §5).
    if config.lease.is_some() {
        tokio::spawn(ctx.fleet.clone().watch_release(
            Api::namespaced(client.clone(), &ctx.settings.lease_namespace),
            ctx.settings.lease_name.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(refresh_egress_periodically(
        ctx.clone(),
        config.settings.default_interval,
        shutdown.clone(),
    ));

    if let Some(lease) = &config.lease {
        run_with_lease(
            &config,
            lease,
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
            &config,
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

/// Reconciles only while holding the Lease (docs/design.md §8 "High availability"): a term
/// ends the moment a renewal fails or its deadline passes, which cancels the reconciles in
/// flight and closes the write gate; the Lease is given back on shutdown.
async fn run_with_lease(
    config: &Config,
    lease: &LeaseConfig,
    client: Client,
    ctx: Arc<Context>,
    health: Arc<Health>,
    identity: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let namespace = lease
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_owned());
    let timing = Timing::scaled(lease.duration_seconds);
    let mut elector = Elector::new(
        Api::namespaced(client, &namespace),
        lease.name.clone(),
        identity.clone(),
        timing,
        format!("{FIELD_MANAGER}-lease"),
    );
    info!(
        lease = %lease.name,
        %namespace,
        %identity,
        lease_seconds = timing.lease_duration.as_secs_f64(),
        renew_deadline_seconds = timing.renew_deadline.as_secs_f64(),
        retry_seconds = timing.retry_period.as_secs_f64(),
        "waiting for the Lease"
    );
    // A replica waiting for the Lease has nothing to sync: it is ready to take over.
    health.set_ready(true);
    while let Some(term) = elector.acquire(&ctx.leadership, &shutdown).await {
        info!(%identity, "acquired the Lease; reconciling");
        ctx.metrics.leader.set(1);
        health.set_ready(false);
        let stop = term.clone().cancelled_owned();
        let (_, end) = tokio::join!(
            run_controller(config, ctx.clone(), health.clone(), stop),
            async {
                let end = elector.keep(&ctx.leadership, &shutdown).await;
                // Whatever ended the term, the controller stops with it.
                term.cancel();
                end
            }
        );
        ctx.metrics.leader.set(0);
        if end == TermEnd::Shutdown {
            return Ok(());
        }
        warn!(%identity, "lost the Lease; stopped reconciling");
        health.set_ready(true);
    }
    Ok(())
}

/// A client for the cluster of the kubeconfig or the pod's service account. When there is
/// none, or it does not answer, the error says so once (kube's errors repeat their sources in
/// their own text, so only one level of each is shown).
async fn connect() -> anyhow::Result<Client> {
    let config = kube::Config::infer()
        .await
        .map_err(|error| anyhow::anyhow!("no Kubernetes cluster configured: {error}"))?;
    let url = config.cluster_url.clone();
    let client = Client::try_from(config)
        .map_err(|error| anyhow::anyhow!("cannot build a client for {url}: {error}"))?;
    // Ask once, so an unreachable cluster shows now and in one line.
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(error)) => Err(anyhow::anyhow!(
            "cannot reach the Kubernetes API server at {url}: {}",
            innermost(&error)
        )),
        Err(_) => Err(anyhow::anyhow!(
            "cannot reach the Kubernetes API server at {url}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// How long the first request to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The last cause of an error chain.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// How a watch comes back after an error (the API server gone, a 410 Gone after etcd
/// compaction): from 200 ms doubling to 1 s, each delay with up to as much again of jitter,
/// and from the start again after a minute without errors. A 410 costs one more delay before
/// the list that repairs the cache, so a longer cap keeps reconciles on a stale cache that much
/// longer after the API server returns (docs/design.md §8 "Watches, caches, readiness,
/// shutdown"); one client retrying every second or two is no load.
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let retries = backon::ExponentialBuilder::default()
        .with_min_delay(WATCH_RETRY_FIRST)
        .with_max_delay(WATCH_RETRY_CAP)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(retries.into(), WATCH_RETRY_RESET)
}

const WATCH_RETRY_FIRST: Duration = Duration::from_millis(200);
const WATCH_RETRY_CAP: Duration = Duration::from_secs(1);
const WATCH_RETRY_RESET: Duration = Duration::from_secs(60);

/// Runs the Controller until `stop` resolves. Reconciles still running then have been
/// cancelled with the term (see [`reconcile::reconcile`]), so the shutdown does not wait for
/// their writes.
async fn run_controller(
    config: &Config,
    ctx: Arc<Context>,
    health: Arc<Health>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (tenants, config_maps): (Api<HelpdeskTenant>, Api<ConfigMap>) =
        match &config.watch_namespace {
            Some(namespace) => (
                Api::namespaced(client.clone(), namespace),
                Api::namespaced(client, namespace),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let mut tenant_watch = watcher::Config::default();
    if let Some(selector) = &config.selector {
        tenant_watch = tenant_watch.labels(selector);
    }
    let owned_watch =
        watcher::Config::default().labels(&owned_selector(config.selector.as_deref()));

    // Tenants feed a store without managedFields, ConfigMaps the context's compact cache
    // (docs/design.md §8 "Watches, caches, readiness, shutdown"), which reconciles read.
    let (store, tenant_writer) = reflector::store::<HelpdeskTenant>();
    let tenant_stream = watcher(tenants, tenant_watch)
        .backoff(watch_backoff())
        .modify(reconcile::strip_tenant)
        .reflect(tenant_writer)
        .applied_objects();
    ctx.config_maps.reset();
    let config_map_stream = watcher(config_maps, owned_watch)
        .backoff(watch_backoff())
        .inspect_ok({
            let ctx = ctx.clone();
            move |event| ctx.config_maps.apply(event)
        })
        .touched_objects()
        .inspect_ok({
            let ctx = ctx.clone();
            move |cm| ctx.config_map_seen(cm)
        });

    let egress_changes = futures::stream::unfold(ctx.egress.changes(), |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });
    let controller = Controller::for_stream(tenant_stream, store.clone())
        .owns_stream(config_map_stream)
        .reconcile_all_on(egress_changes)
        .with_config(ControllerConfig::default().concurrency(config.concurrency))
        .graceful_shutdown_on(stop);

    let ready_store = store.clone();
    let ready_health = health.clone();
    let ready_resolver = ctx.resolver.clone();
    let ready_ctx = ctx.clone();
    let ready = tokio::spawn(async move {
        // The store's readiness signal wakes only its latest waiter, and the controller waits
        // on it too: poll again every so often instead of trusting one wake-up. Ready once
        // both stores have their first list.
        let tenants_ready = ready_store.clone();
        let waits: [futures::future::BoxFuture<'static, _>; 2] = [
            Box::pin(async move { tenants_ready.wait_until_ready().await }),
            Box::pin(async move {
                ready_ctx.config_maps.wait_until_ready().await;
                Ok(())
            }),
        ];
        for mut waiting in waits {
            loop {
                match tokio::time::timeout(Duration::from_millis(250), &mut waiting).await {
                    Ok(Ok(())) => break,
                    Ok(Err(error)) => {
                        warn!(%error, "the cache will not sync");
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
        // The DNS cache is sized for the fleet (design §6 "DNS").
        ready_resolver.ensure_capacity(dns::cache_capacity_for_tenants(ready_store.state().len()));
        info!("caches synced");
        ready_health.set_ready(true);
    });
    // How many cached tenants were never checked (and are not failing): while any wait,
    // re-checks wait for them (docs/design.md §8 "No herd after a restart or failover").
    let pending_store = store.clone();
    let pending_ctx = ctx.clone();
    let pending = tokio::spawn(async move {
        loop {
            let unchecked = pending_store
                .state()
                .iter()
                .filter(|t| {
                    !t.spec.suspend
                        && t.status
                            .as_ref()
                            .is_none_or(|s| s.last_check_time.is_none())
                        && !pending_ctx.schedule.failing(&Schedule::key(
                            t.metadata.namespace.as_deref().unwrap_or_default(),
                            t.metadata.name.as_deref().unwrap_or_default(),
                        ))
                })
                .count();
            pending_ctx
                .first_checks_pending
                .store(unchecked, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let per_tenant = config.per_tenant_metrics;
    let refresh_store = store.clone();
    health.set_refresh(Some(Arc::new(move |metrics: &Metrics| {
        telemetry::refresh_tenant_metrics(metrics, &refresh_store.state(), per_tenant);
    })));

    let prune_store = store.clone();
    let prune_ctx = ctx.clone();
    let every = config.settings.default_interval;
    let prune = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let live: std::collections::HashSet<(String, String)> = prune_store
                .state()
                .iter()
                .map(|t| (t.namespace().unwrap_or_default(), t.name_any()))
                .collect();
            prune_ctx
                .resolver
                .ensure_capacity(dns::cache_capacity_for_tenants(live.len()));
            prune_ctx
                .schedule
                .retain(|namespace, name| live.contains(&(namespace.to_owned(), name.to_owned())));
        }
    });
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
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
    pending.abort();
    ctx.config_maps.reset();
    health.set_refresh(None);
}

/// The label selector of the owned-ConfigMap watch: the managed-by label and the tenants'
/// `--selector`, whose labels each ConfigMap carries from its tenant (docs/design.md §8).
pub fn owned_selector(selector: Option<&str>) -> String {
    let managed = format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}");
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(selector) => format!("{managed},{selector}"),
        None => managed,
    }
}

async fn refresh_egress_periodically(
    ctx: Arc<Context>,
    every: Duration,
    shutdown: CancellationToken,
) {
    if !ctx.egress.has_hosts() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        ctx.egress.refresh(&ctx.resolver).await;
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
