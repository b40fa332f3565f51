//! One reconcile of a HelpdeskTenant, as a pipeline: observe (provider egress addresses, the
//! engine's verdict per sender, the existing ConfigMap) -> decide ([`crate::decide`], pure) ->
//! act (apply the owned ConfigMap keys, replace the status, emit Events, all only when something
//! changed).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::alignment::{Provider, SenderCheck, SenderInput, Verdict, check_sender};
use crate::api::{
    FIELD_MANAGER, HelpdeskTenant, HelpdeskTenantStatus, RECHECK_ANNOTATION, condition,
};
use crate::conditions::{self, same_ignoring_timestamps, set_condition};
use crate::config_maps::{ConfigMapCache, OwnedConfigMap};
use crate::decide::{self, Decision, EventKind, Input};
use crate::dkim::ProviderSelector;
use crate::dns::Resolver;
use crate::egress::Egress;
use crate::events::EventPublisher;
use crate::fleet_health::{FleetHealth, TenantRound};
use crate::guard::GuardConfig;
use crate::leader::{Leadership, NotLeader};
use crate::mail_settings::keys;
use crate::schedule::{MAX_BACKOFF, Schedule, State, TenantKey, backoff, jitter};
use crate::telemetry::{DirectionLabels, KindLabels, Metrics, ResultLabels};

/// Wait before retrying a reconcile whose conditional write met a newer object.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// Label put on every mail-settings ConfigMap; the operator watches only labelled ConfigMaps.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// What went wrong in a reconcile, and whether retrying soon can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed (network, apiserver restart, conflict): retry soon.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The provider has no egress address right now (SMTP hosts did not resolve): retry soon.
    #[error("the provider has no egress address to check against")]
    NoEgressAddresses,
    /// The mail-settings ConfigMap is controlled by another object: needs the user.
    #[error(
        "ConfigMap {0} is controlled by another object; set spec.mailSettings.configMapName to a free name"
    )]
    ConfigMapTaken(String),
    /// The object lacks a namespace or name: needs the user (cannot happen for a valid object).
    #[error("the HelpdeskTenant has no {0}")]
    Incomplete(&'static str),
    /// The object changed since it was read (409): retry at once from the fresh object.
    #[error("{0} changed since it was read; retrying from the fresh object")]
    Conflict(&'static str),
    /// This replica may not write (docs/design.md §8 "High availability").
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
}

impl Error {
    /// Maps a 409 of a conditional write to [`Error::Conflict`].
    fn from_write(error: kube::Error, what: &'static str) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 409 => Self::Conflict(what),
            other => Self::Kube(other),
        }
    }
}

impl Error {
    /// Whether a retry with backoff can succeed without anyone changing anything.
    pub fn retry_soon(&self) -> bool {
        matches!(
            self,
            Self::Kube(_) | Self::NoEgressAddresses | Self::Conflict(_) | Self::NotLeader(_)
        )
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::NoEgressAddresses => "no_egress",
            Self::ConfigMapTaken(_) => "configmap_taken",
            Self::Incomplete(_) => "incomplete",
            Self::Conflict(_) => "conflict",
            Self::NotLeader(_) => "not_leader",
        }
    }
}

/// Operator-wide settings (docs/design.md §3).
#[derive(Clone, Debug)]
pub struct Settings {
    pub provider_spf_domain: String,
    pub egress_ips: Vec<IpAddr>,
    pub smtp_hosts: Vec<String>,
    /// The provider's DKIM selectors; empty: the DKIM path is off.
    pub dkim_selectors: Vec<ProviderSelector>,
    pub default_sender: String,
    pub default_interval: Duration,
    /// The fleet guard's flags (docs/design.md §5).
    pub fleet_guard: GuardConfig,
    /// The operator's Lease: fleet-wide Events go on it, and it carries the fleet guard's
    /// release annotation.
    pub lease_namespace: String,
    pub lease_name: String,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub resolver: Resolver,
    pub settings: Settings,
    pub recorder: EventPublisher,
    pub metrics: Arc<Metrics>,
    /// The provider's egress set.
    pub egress: Egress,
    /// The fleet-wide guards of docs/design.md §5.
    pub fleet: Arc<FleetHealth>,
    /// When each tenant is due.
    pub schedule: Schedule,
    /// The write gate: every API write checks it first (docs/design.md §8).
    pub leadership: Arc<Leadership>,
    /// Per tenant, the resourceVersion our last status write replaced: a cached object still
    /// at that version is older than what we recorded, and is not acted on.
    superseded: Mutex<HashMap<TenantKey, String>>,
    /// The owned ConfigMaps of the running Controller's watch (docs/design.md §8 "Watches,
    /// caches, readiness, shutdown"): reconciles read ConfigMaps only from it.
    pub config_maps: ConfigMapCache,
    /// Per tenant, the ConfigMap our last write returned, until the watch has caught up.
    written_config_maps: Mutex<HashMap<TenantKey, WrittenConfigMap>>,
    /// Tenants in the cache that were never checked; while any wait, due re-checks wait a
    /// little (docs/design.md §8 "No herd after a restart or failover").
    pub first_checks_pending: AtomicUsize,
}

/// A ConfigMap this process wrote, kept until the watch store shows it.
struct WrittenConfigMap {
    /// The resourceVersion the write replaced; `None`: it created the ConfigMap.
    replaced: Option<String>,
    object: Arc<OwnedConfigMap>,
    at: Instant,
}

/// How long a written ConfigMap stands in for the store's older copy. The watch delivers it
/// well within this; past it, the store is trusted again (a deletion, say).
const WRITTEN_CONFIG_MAP_TTL: Duration = Duration::from_secs(10);

/// How long a reconcile waits for the ConfigMap watch's first list before it is requeued.
const CONFIG_MAP_LIST_WAIT: Duration = Duration::from_secs(1);

/// How long a due re-check waits, each time, while tenants that were never checked are still
/// waiting.
const FIRST_CHECKS_FIRST: Duration = Duration::from_secs(5);

/// How far past its due time a re-check waits for first checks at most, when the check
/// interval is shorter: a first pass of ten thousand tenants takes minutes.
const FIRST_CHECKS_MAX_WAIT: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(
        client: Client,
        resolver: Resolver,
        settings: Settings,
        recorder: EventPublisher,
        metrics: Arc<Metrics>,
        leadership: Arc<Leadership>,
    ) -> Self {
        let egress = Egress::new(settings.egress_ips.clone(), settings.smtp_hosts.clone());
        let fleet = Arc::new(FleetHealth::new(
            settings.fleet_guard,
            settings.default_interval,
            metrics.clone(),
            &settings.lease_namespace,
            &settings.lease_name,
        ));
        Self {
            fleet,
            client,
            resolver,
            settings,
            recorder,
            metrics,
            egress,
            schedule: Schedule::default(),
            leadership,
            superseded: Mutex::new(HashMap::new()),
            config_maps: ConfigMapCache::default(),
            written_config_maps: Mutex::new(HashMap::new()),
            first_checks_pending: AtomicUsize::new(0),
        }
    }

    /// The tenant's ConfigMap as this process knows it: the watch store's object, or the one
    /// our last write returned while the store still shows the version that write replaced.
    fn config_map(&self, key: &TenantKey, name: &str) -> Option<Arc<OwnedConfigMap>> {
        let stored = self.config_maps.get(&key.0, name);
        let mut written = self
            .written_config_maps
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(mine) = written.get(key) else {
            return stored;
        };
        let stored_version = stored.as_ref().and_then(|cm| cm.resource_version.clone());
        let fresh = mine.at.elapsed() < WRITTEN_CONFIG_MAP_TTL && mine.object.name == name;
        if fresh && stored_version == mine.replaced {
            return Some(mine.object.clone());
        }
        written.remove(key);
        stored
    }

    fn record_config_map_write(
        &self,
        key: &TenantKey,
        replaced: Option<String>,
        object: ConfigMap,
    ) {
        self.written_config_maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.clone(),
                WrittenConfigMap {
                    replaced,
                    object: Arc::new(OwnedConfigMap::from_object(&object)),
                    at: Instant::now(),
                },
            );
    }

    /// The owned-ConfigMap watch has delivered `cm` (the store holds it now): a written copy
    /// of that very version stands in for nothing any more and is dropped at once, rather than
    /// at the tenant's next reconcile, so a first pass does not keep a copy per tenant.
    pub fn config_map_seen(&self, cm: &ConfigMap) {
        let (Some(namespace), Some(version)) = (
            cm.metadata.namespace.as_deref(),
            cm.metadata.resource_version.as_deref(),
        ) else {
            return;
        };
        let owners = cm.metadata.owner_references.iter().flatten();
        let mut written = self
            .written_config_maps
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for owner in owners.filter(|o| o.kind == "HelpdeskTenant") {
            let key = Schedule::key(namespace, &owner.name);
            let same = written.get(&key).is_some_and(|mine| {
                cm.metadata.name.as_deref() == Some(mine.object.name.as_str())
                    && mine.object.resource_version.as_deref() == Some(version)
            });
            if same {
                written.remove(&key);
            }
        }
    }

    /// Whether `tenant` is an older version than the one our last status write produced.
    fn is_superseded(&self, key: &TenantKey, tenant: &HelpdeskTenant) -> bool {
        let mut superseded = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
        let Some(version) = superseded.get(key) else {
            return false;
        };
        if tenant.metadata.resource_version.as_deref() == Some(version.as_str()) {
            return true;
        }
        // The cache has moved past the version our write replaced and never goes back to it:
        // nothing is left to wait for, and a fleet does not keep a version per tenant.
        superseded.remove(key);
        false
    }

    fn record_write(&self, key: &TenantKey, replaced: Option<String>) {
        let mut superseded = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
        match replaced {
            Some(version) => superseded.insert(key.clone(), version),
            None => superseded.remove(key),
        };
    }

    fn forget(&self, key: &TenantKey) {
        self.schedule.forget(key);
        self.superseded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.written_config_maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// What the watch stores keep of a HelpdeskTenant: no `managedFields`, and of the
/// annotations only the recheck one (docs/design.md §8 "Watches, caches, readiness,
/// shutdown").
pub fn strip_tenant(tenant: &mut HelpdeskTenant) {
    tenant.metadata.managed_fields = None;
    if let Some(annotations) = tenant.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k == RECHECK_ANNOTATION);
        if annotations.is_empty() {
            tenant.metadata.annotations = None;
        }
    }
}

/// The labels of a tenant's ConfigMap: the tenant's own (so the ConfigMap watch can use the
/// tenants' `--selector`, docs/design.md §8) and the managed-by label.
fn config_map_labels(tenant: &HelpdeskTenant) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = tenant
        .labels()
        .iter()
        .filter(|(k, _)| k.as_str() != MANAGED_BY_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned());
    labels
}

/// Why a check runs now.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Due {
    No,
    Yes {
        recheck: Option<String>,
    },
    /// Due, but first checks of other tenants go first: look again after this.
    Later(Duration),
}

/// Reconciles one HelpdeskTenant. A reconcile runs within the current leadership term and is
/// cancelled the moment the term ends (docs/design.md §8 "High availability").
pub async fn reconcile(tenant: Arc<HelpdeskTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = tenant.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = tenant
        .metadata
        .name
        .clone()
        .ok_or(Error::Incomplete("name"))?;
    let span = info_span!("reconcile", tenant = %name, namespace = %namespace);
    let started = Instant::now();
    let term = ctx.leadership.term();
    let result = tokio::select! {
        biased;
        _ = term.cancelled() => Err(Error::NotLeader(NotLeader)),
        result = reconcile_inner(&tenant, &ctx, &namespace, &name).instrument(span) => result,
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.schedule.succeeded(&Schedule::key(&namespace, &name));
    }
    result
}

async fn reconcile_inner(
    tenant: &HelpdeskTenant,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action, Error> {
    let key = Schedule::key(namespace, name);
    if tenant.metadata.deletion_timestamp.is_some() {
        ctx.forget(&key);
        return Ok(Action::await_change());
    }
    // Our own status write has not reached the cache yet: its watch event reconciles again.
    // Acting on the older object would check twice and announce the same change twice.
    if ctx.is_superseded(&key, tenant) {
        debug!("cached object older than our last status write; waiting for it");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // ConfigMaps are read from their watch store only (docs/design.md §8): wait for its list,
    // here, so the first reconciles go on the moment it lands.
    if !ctx.config_maps.is_ready()
        && tokio::time::timeout(CONFIG_MAP_LIST_WAIT, ctx.config_maps.wait_until_ready())
            .await
            .is_err()
    {
        debug!("ConfigMap cache not synced yet");
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    let previous = tenant.status.as_ref();

    // Observe.
    let due = due(tenant, previous, ctx, &key);
    let mut epoch = ctx.egress.epoch();
    let mut guards = decide::Guards::default();
    let (checks, recheck) = match &due {
        Due::Yes { recheck } => {
            let egress = ctx.egress.refresh(&ctx.resolver).await;
            epoch = ctx.egress.epoch();
            if egress.is_empty() {
                return Err(Error::NoEgressAddresses);
            }
            let provider = Provider {
                spf_domain: ctx.settings.provider_spf_domain.clone(),
                egress_ips: egress.into_iter().collect(),
                dkim_selectors: ctx.settings.dkim_selectors.clone(),
            };
            let checks_started = Instant::now();
            let checks = check_all(tenant, &provider, ctx).await;
            let fallback = decide::fallback_sender(
                &tenant.spec,
                &ctx.settings.default_sender,
                name,
                namespace,
            );
            let (found, change) = ctx
                .fleet
                .guards(
                    &ctx.resolver,
                    &provider,
                    &TenantRound {
                        previous,
                        checks: &checks,
                        fallback: &fallback,
                        key: &key,
                        checks_started,
                    },
                )
                .await;
            guards = found;
            if let Some(change) = change
                && ctx.leadership.check().is_ok()
            {
                ctx.fleet.publish(&ctx.recorder, &change).await;
            }
            (Some(checks), recheck.clone())
        }
        Due::No | Due::Later(_) => (None, None),
    };
    let epoch_after = ctx.egress.epoch();
    let cm_name = tenant.config_map_name();
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    // From the watch store, never a GET (docs/design.md §8).
    let mut existing = ctx.config_map(&key, &cm_name);

    // Decide.
    let now = Timestamp::now();
    let decision = decide::decide(&Input {
        name,
        namespace,
        generation: tenant.metadata.generation,
        spec: &tenant.spec,
        previous,
        checks: checks.as_deref(),
        now,
        default_sender: &ctx.settings.default_sender,
        default_interval: ctx.settings.default_interval,
        recheck: recheck.as_deref(),
        guards,
    });
    ctx.metrics
        .fleet_guard_held_switches
        .inc_by(u64::from(decision.held_switches));

    // Act: the status first, the ConfigMap from the recorded status after it, the Events
    // once the status write recording them went through (docs/design.md §5, §7).
    if let Some(existing) = &existing
        && config_map_taken(tenant, existing)?
    {
        let error = Error::ConfigMapTaken(cm_name.clone());
        // Tell the user in status: kstatus Ready=False with the reason.
        let mut status = decision.status.clone();
        set_condition(
            &mut status.conditions,
            condition::READY,
            "False",
            conditions::reason::CONFIG_MAP_CONFLICT,
            &error.to_string(),
            tenant.metadata.generation,
            now,
        );
        if previous.is_none_or(|p| !same_ignoring_timestamps(p, &status)) {
            write_status(tenant, ctx, &key, &status).await?;
            publish_events(tenant, ctx, &decision).await?;
        }
        return Err(error);
    }
    if decision.status_changed {
        write_status(tenant, ctx, &key, &decision.status).await?;
        publish_events(tenant, ctx, &decision).await?;
    }
    if let Some(data) = &decision.config_map {
        match apply_config_map(
            tenant,
            ctx,
            &key,
            &cm_api,
            &cm_name,
            existing.as_deref(),
            data,
        )
        .await
        {
            // Not in the store, yet it exists: not labelled as ours. Look at it once, so a
            // ConfigMap controlled by another object is reported, not overwritten.
            Err(Error::Conflict(_)) if existing.is_none() => {
                existing = cm_api
                    .get_opt(&cm_name)
                    .await?
                    .map(|cm| Arc::new(OwnedConfigMap::from_object(&cm)));
                if let Some(found) = &existing
                    && config_map_taken(tenant, found)?
                {
                    return Err(Error::ConfigMapTaken(cm_name.clone()));
                }
                apply_config_map(
                    tenant,
                    ctx,
                    &key,
                    &cm_api,
                    &cm_name,
                    existing.as_deref(),
                    data,
                )
                .await?;
            }
            other => other?,
        }
    }

    // Schedule.
    let Some(next) = decision.next_check else {
        ctx.schedule.unschedule(&key);
        return Ok(Action::await_change());
    };
    // A change of the egress set during the check is caught by the next reconcile.
    let egress_epoch = if epoch == epoch_after {
        epoch
    } else {
        epoch_after.wrapping_sub(1)
    };
    let mut wait = ctx
        .schedule
        .plan(&key, next, checks.is_some(), egress_epoch);
    if let Due::Later(after) = due {
        wait = wait.max(after);
    }
    debug!(
        checked = checks.is_some(),
        wait_seconds = wait.as_secs_f64(),
        "reconciled"
    );
    Ok(Action::requeue(wait.max(Duration::from_millis(100))))
}

fn due(
    tenant: &HelpdeskTenant,
    previous: Option<&HelpdeskTenantStatus>,
    ctx: &Context,
    key: &TenantKey,
) -> Due {
    if tenant.spec.suspend {
        return Due::No;
    }
    let recheck = tenant
        .annotations()
        .get(RECHECK_ANNOTATION)
        .filter(|v| previous.and_then(|p| p.last_recheck.as_ref()) != Some(*v))
        .cloned();
    if recheck.is_some() {
        info!(
            value = recheck.as_deref().unwrap_or_default(),
            "recheck requested"
        );
        return Due::Yes { recheck };
    }
    // Never checked: first checks go first.
    let Some(previous) = previous.filter(|p| p.last_check_time.is_some()) else {
        return Due::Yes { recheck: None };
    };
    if previous.observed_generation != tenant.metadata.generation {
        return Due::Yes { recheck: None };
    }
    let interval = decide::check_interval(&tenant.spec, ctx.settings.default_interval);
    match ctx.schedule.state(key, ctx.egress.epoch()) {
        // A start or a Lease handover: the status holds a verdict, so this tenant takes its
        // place in a spread over one interval, or waits for a later nextCheckTime
        // (docs/design.md §8 "No herd after a restart or failover").
        State::Unknown => {
            let next_check = previous
                .next_check_time
                .as_ref()
                .and_then(|t| Timestamp::from_second(t.0.as_second()).ok())
                .map(|t| {
                    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default()
                });
            ctx.schedule
                .adopt(key, interval, next_check, ctx.egress.epoch());
            Due::No
        }
        // The egress set changed: re-check, spread over a short window.
        State::EgressChanged => {
            ctx.schedule
                .respread(key, egress_window(interval), ctx.egress.epoch());
            Due::No
        }
        State::Due { overdue } => {
            if ctx.first_checks_pending.load(Ordering::Relaxed) > 0
                && overdue < interval.max(FIRST_CHECKS_MAX_WAIT)
            {
                debug!("re-check waits for first checks");
                return Due::Later(jitter(FIRST_CHECKS_FIRST));
            }
            Due::Yes { recheck: None }
        }
        State::Waiting => Due::No,
    }
}

/// The window re-checks after an egress change are spread over: a tenth of the interval,
/// at most a minute.
fn egress_window(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(60))
}

async fn check_all(
    tenant: &HelpdeskTenant,
    provider: &Provider,
    ctx: &Context,
) -> Vec<SenderCheck> {
    let inputs = SenderInput::of(&tenant.spec);
    let checks = join_all(
        inputs
            .iter()
            .map(|input| check_sender(&ctx.resolver, provider, input)),
    )
    .await;
    for check in &checks {
        let result = match check.verdict {
            Verdict::Aligned => "aligned",
            Verdict::Unaligned { .. } => "unaligned",
            Verdict::TemporaryFailure { .. } => "temporary_failure",
        };
        ctx.metrics
            .checks
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
        debug!(sender = %check.address, result, "checked");
    }
    checks
}

/// Writes the owned keys: a create when the store has no such ConfigMap (a 409 then means one
/// exists that is not labelled as ours), else an apply conditional on the store's
/// resourceVersion, so an edit made since is looked at first.
async fn apply_config_map(
    tenant: &HelpdeskTenant,
    ctx: &Context,
    key: &TenantKey,
    api: &Api<ConfigMap>,
    cm_name: &str,
    existing: Option<&OwnedConfigMap>,
    data: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let owner = tenant
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    let labels = config_map_labels(tenant);
    if let Some(existing) = existing {
        let labelled = labels
            .iter()
            .all(|(k, v)| existing.label(k) == Some(v.as_str()));
        if existing.holds(data) && existing.controller_uid.is_some() && labelled {
            return Ok(());
        }
    }
    let replaced = existing.and_then(|cm| cm.resource_version.clone());
    ctx.leadership.check()?;
    let written = match &replaced {
        Some(version) => {
            let patch = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": cm_name,
                    "labels": labels,
                    "ownerReferences": [owner],
                    "resourceVersion": version,
                },
                "data": data,
            });
            api.patch(
                cm_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(cm_name.to_owned()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner]),
                    ..ObjectMeta::default()
                },
                data: Some(data.clone()),
                ..ConfigMap::default()
            };
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            api.create(&params, &cm).await
        }
    }
    .map_err(|e| Error::from_write(e, "the ConfigMap"))?;
    ctx.metrics.config_map_writes.inc();
    ctx.record_config_map_write(key, replaced, written);
    info!(
        configmap = cm_name,
        sender_mode = data
            .get(keys::SENDER_MODE)
            .map(String::as_str)
            .unwrap_or_default(),
        "applied mail settings"
    );
    Ok(())
}

/// Whether another object controls the ConfigMap of that name.
fn config_map_taken(tenant: &HelpdeskTenant, existing: &OwnedConfigMap) -> Result<bool, Error> {
    let uid = tenant
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::Incomplete("uid"))?;
    Ok(existing
        .controller_uid
        .as_deref()
        .is_some_and(|controller| controller != uid))
}

/// Replaces the status, conditional on the resourceVersion the decision was computed from
/// (docs/design.md §8 "Safe writes"): a conflict means another write came first, and the
/// reconcile starts over from the fresh object. An update rather than an apply: the whole
/// status is the operator's, and an update is the cheaper write for the API server.
async fn write_status(
    tenant: &HelpdeskTenant,
    ctx: &Context,
    key: &TenantKey,
    status: &HelpdeskTenantStatus,
) -> Result<(), Error> {
    let (namespace, name) = key;
    let api: Api<HelpdeskTenant> = Api::namespaced(ctx.client.clone(), namespace);
    let version = tenant
        .metadata
        .resource_version
        .clone()
        .ok_or(Error::Incomplete("resourceVersion"))?;
    let body = HelpdeskTenant {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            resource_version: Some(version.clone()),
            ..ObjectMeta::default()
        },
        spec: tenant.spec.clone(),
        status: Some(status.clone()),
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    ctx.leadership.check()?;
    let written = api
        .replace_status(name, &params, &body)
        .await
        .map_err(|e| Error::from_write(e, "the HelpdeskTenant"))?;
    ctx.metrics.status_writes.inc();
    let replaced =
        (written.metadata.resource_version.as_deref() != Some(version.as_str())).then_some(version);
    ctx.record_write(key, replaced);
    debug!(generation = tenant.metadata.generation, "status written");
    Ok(())
}

/// Sends the decision's Events; called only after the status write recording them.
async fn publish_events(
    tenant: &HelpdeskTenant,
    ctx: &Context,
    decision: &Decision,
) -> Result<(), Error> {
    if decision.events.is_empty() {
        return Ok(());
    }
    let reference = tenant.object_ref(&());
    for plan in &decision.events {
        if plan.kind.is_switch_to_fallback() {
            ctx.metrics
                .fallback_transitions
                .get_or_create(&DirectionLabels {
                    direction: "to_fallback".into(),
                })
                .inc();
        } else if plan.kind.is_switch_to_tenant() {
            ctx.metrics
                .fallback_transitions
                .get_or_create(&DirectionLabels {
                    direction: "to_tenant".into(),
                })
                .inc();
        }
        let event = Event {
            type_: if plan.kind.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: plan.kind.reason().to_owned(),
            note: Some(truncate(&plan.note, 1000)),
            action: if matches!(
                plan.kind,
                EventKind::FallbackActivated
                    | EventKind::TenantSenderRestored
                    | EventKind::TenantSenderActivated
            ) {
                "SwitchSender".to_owned()
            } else {
                "CheckSender".to_owned()
            },
            secondary: None,
        };
        info!(reason = %event.reason, note = %plan.note, "state change");
        ctx.leadership.check()?;
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "could not publish the Event");
        }
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Error policy: back off exponentially (capped) while retrying can help; otherwise wait for
/// the user, looking again after the cap.
pub fn error_policy(tenant: Arc<HelpdeskTenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let namespace = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    ctx.metrics
        .reconcile_errors
        .get_or_create(&KindLabels {
            kind: error.kind().to_owned(),
        })
        .inc();
    match error {
        // Start over from the fresh object as soon as the cache has it; no backoff, as nothing
        // failed (docs/design.md §8 "Safe writes").
        Error::Conflict(_) => {
            debug!(tenant = %name, namespace = %namespace, %error, "write conflict; retrying");
            return Action::requeue(jitter(CONFLICT_RETRY));
        }
        // The term ended; the next term's controller looks at every tenant again.
        Error::NotLeader(_) => {
            debug!(tenant = %name, namespace = %namespace, "not the leader; reconcile stopped");
            return Action::await_change();
        }
        _ => {}
    }
    if !error.retry_soon() {
        warn!(tenant = %name, namespace = %namespace, %error, "reconcile needs a change by the user");
        return Action::requeue(MAX_BACKOFF);
    }
    let attempts = ctx.schedule.failed(&Schedule::key(&namespace, &name));
    let wait = backoff(attempts);
    warn!(tenant = %name, namespace = %namespace, %error, attempts, retry_seconds = wait.as_secs_f64(), "reconcile failed; retrying");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_policy_classes() {
        assert!(Error::NoEgressAddresses.retry_soon());
        assert!(!Error::ConfigMapTaken("x".into()).retry_soon());
        assert!(!Error::Incomplete("namespace").retry_soon());
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
