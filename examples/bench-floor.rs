//! The fleet benchmark's helper (`scripts/bench-scale`, docs/design.md §10): creates the
//! benchmark's tenants, measures the floor (a plain concurrent client making the operator's
//! minimal writes), and waits for the operator's first full status.
//!
//! ```text
//! bench-floor create  PREFIX N NAMESPACES LABEL   # N tenants, spread over NAMESPACES
//! bench-floor floor   PREFIX N NAMESPACES LABEL CONCURRENCY [BODIES]
//!                     # per tenant: one status apply, one ConfigMap create, one Event;
//!                     # prints the seconds taken, then removes the ConfigMaps again
//! bench-floor wait    LABEL N TIMEOUT_SECONDS [METRICS_ADDR]
//!                     # seconds until N tenants have a verdict in status and their
//!                     # ConfigMap; with METRICS_ADDR (the operator's metrics server), a
//!                     # second line: the checks it had counted when the last verdict came
//! bench-floor switch  LABEL N EVERY TIMEOUT_SECONDS NEW_ZONE ZONE
//!                     # once the watches are synced, renames NEW_ZONE onto ZONE (the DNS
//!                     # server reloads it) and prints, for each tenant i < N with
//!                     # i % EVERY == EVERY / 2, the seconds until its first failing verdict
//!                     # and until its ConfigMap sends as the fallback
//! ```
//!
//! Tenant `i` lives in namespace `PREFIX-(i % NAMESPACES)`, is named `t<i>`, carries the
//! label `bench=LABEL`, and sends as `support@t<i>.bench`; every tenth (`i % 10 == 9`) is the
//! benchmark's unaligned kind.
//!
//! Without BODIES the floor writes a minimal status (one condition) and ConfigMap. BODIES is a
//! folder of what the operator wrote for tenants `t0` (aligned) and `t9` (unaligned):
//! `aligned.status.json`, `aligned.data.json`, `unaligned.status.json`,
//! `unaligned.data.json` (the status, and the ConfigMap's data); the floor then writes those,
//! renamed for each tenant, so it makes the operator's own writes.

use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use helpdesk_mail_operator::api::{HelpdeskTenant, HelpdeskTenantSpec, Mode, SenderState};
use helpdesk_mail_operator::mail_settings::keys;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde_json::json;

fn namespace(prefix: &str, i: usize, namespaces: usize) -> String {
    format!("{prefix}-{}", i % namespaces)
}

fn arg<T: std::str::FromStr>(args: &[String], n: usize, what: &str) -> anyhow::Result<T> {
    args.get(n)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("argument {n} ({what}) missing or invalid"))
}

async fn create(client: Client, args: &[String]) -> anyhow::Result<()> {
    let prefix: String = arg(args, 1, "PREFIX")?;
    let n: usize = arg(args, 2, "N")?;
    let namespaces: usize = arg(args, 3, "NAMESPACES")?;
    let label: String = arg(args, 4, "LABEL")?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for k in 0..namespaces.min(n) {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}-{k}")),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match ns_api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    stream::iter(0..n)
        .map(|i| {
            let (client, prefix, label) = (client.clone(), prefix.clone(), label.clone());
            async move {
                let api: Api<HelpdeskTenant> =
                    Api::namespaced(client, &namespace(&prefix, i, namespaces));
                let spec = HelpdeskTenantSpec {
                    mode: Mode::Enforce,
                    ..HelpdeskTenantSpec::with_senders([format!("support@t{i}.bench").as_str()])
                };
                let mut tenant = HelpdeskTenant::new(&format!("t{i}"), spec);
                tenant.metadata.labels = Some(BTreeMap::from([("bench".to_owned(), label)]));
                match api.create(&PostParams::default(), &tenant).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e)),
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// One tenant's status (the `status` object) and ConfigMap data.
type Written = (serde_json::Value, BTreeMap<String, String>);

/// The operator's own status and ConfigMap data for the benchmark's two kinds of tenant.
#[derive(Clone)]
struct Bodies {
    aligned: (String, String),
    unaligned: (String, String),
}

impl Bodies {
    fn read(dir: &std::path::Path) -> anyhow::Result<Self> {
        let read = |kind: &str| -> anyhow::Result<(String, String)> {
            let file = |part: &str| {
                let path = dir.join(format!("{kind}.{part}.json"));
                std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            };
            Ok((file("status")?, file("data")?))
        };
        Ok(Self {
            aligned: read("aligned")?,
            unaligned: read("unaligned")?,
        })
    }

    /// Tenant `i`'s status and ConfigMap data, and whether it is of the unaligned kind: the
    /// template of its kind with `t0` (or `t9`) renamed `t<i>`.
    fn for_tenant(&self, i: usize) -> anyhow::Result<(Written, bool)> {
        let unaligned = i % 10 == 9;
        let ((status, data), from) = if unaligned {
            (&self.unaligned, 9)
        } else {
            (&self.aligned, 0)
        };
        let rename = |text: &str| {
            text.replace(&format!("t{from}.bench"), &format!("t{i}.bench"))
                .replace(&format!("+t{from}@"), &format!("+t{i}@"))
        };
        Ok((
            (
                serde_json::from_str(&rename(status))?,
                serde_json::from_str(&rename(data))?,
            ),
            unaligned,
        ))
    }
}

async fn floor(client: Client, args: &[String]) -> anyhow::Result<()> {
    let prefix: String = arg(args, 1, "PREFIX")?;
    let n: usize = arg(args, 2, "N")?;
    let namespaces: usize = arg(args, 3, "NAMESPACES")?;
    let label: String = arg(args, 4, "LABEL")?;
    let concurrency: usize = arg(args, 5, "CONCURRENCY")?;
    let bodies = match args.get(6) {
        Some(dir) => Some(Bodies::read(std::path::Path::new(dir))?),
        None => None,
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "bench-floor".to_owned(),
            instance: None,
        },
    );
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let (client, prefix, label, recorder) =
                (client.clone(), prefix.clone(), label.clone(), recorder.clone());
            let bodies = bodies.clone();
            async move {
                let ns = namespace(&prefix, i, namespaces);
                let name = format!("t{i}");
                let tenants: Api<HelpdeskTenant> = Api::namespaced(client.clone(), &ns);
                let mut status = json!({
                    "apiVersion": HelpdeskTenant::api_version(&()),
                    "kind": HelpdeskTenant::kind(&()),
                    "status": {
                        "observedGeneration": 1,
                        "lastCheckTime": jiff::Timestamp::now().to_string(),
                        "alignedSenders": "1/1",
                        "conditions": [{
                            "type": "Ready", "status": "True", "reason": "Reconciled",
                            "message": "bench floor", "lastTransitionTime": jiff::Timestamp::now().to_string(),
                        }],
                    },
                });
                let mut data = BTreeMap::from([
                    ("sender-mode".to_owned(), "tenant".to_owned()),
                    ("from-address".to_owned(), format!("support@t{i}.bench")),
                ]);
                let mut reason = "TenantSenderActivated";
                if let Some(bodies) = &bodies {
                    let (found, unaligned) = bodies.for_tenant(i)?;
                    status["status"] = found.0;
                    data = found.1;
                    if unaligned {
                        reason = "SenderUnaligned";
                    }
                }
                let written = tenants
                    .patch_status(&name, &PatchParams::apply("bench-floor").force(), &Patch::Apply(&status))
                    .await?;
                let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("{name}-mail-settings")),
                        labels: Some(BTreeMap::from([("bench".to_owned(), label)])),
                        owner_references: written.controller_owner_ref(&()).map(|o| vec![o]),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                cms.create(&PostParams { field_manager: Some("bench-floor".into()), ..PostParams::default() }, &cm)
                    .await?;
                let event = Event {
                    type_: EventType::Normal,
                    reason: reason.to_owned(),
                    note: Some("bench floor".to_owned()),
                    action: "SwitchSender".to_owned(),
                    secondary: None,
                };
                recorder.publish(&event, &written.object_ref(&())).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    println!("{:.3}", started.elapsed().as_secs_f64());
    // Clean up the ConfigMaps; the script deletes the namespaces.
    for k in 0..namespaces.min(n) {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &format!("{prefix}-{k}"));
        cms.delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels("bench"),
        )
        .await?;
    }
    Ok(())
}

async fn wait(client: Client, args: &[String]) -> anyhow::Result<()> {
    let label: String = arg(args, 1, "LABEL")?;
    let n: usize = arg(args, 2, "N")?;
    let timeout: u64 = arg(args, 3, "TIMEOUT_SECONDS")?;
    let selector = watcher::Config::default().labels(&format!("bench={label}"));
    let started = Instant::now();
    // Tenants with a verdict, and tenants whose ConfigMap exists (by its controller).
    let (mut checked, mut configured) = (HashSet::new(), HashSet::new());
    let mut tenants = watcher(Api::<HelpdeskTenant>::all(client.clone()), selector.clone())
        .applied_objects()
        .boxed();
    let mut config_maps = watcher(Api::<ConfigMap>::all(client), selector)
        .applied_objects()
        .boxed();
    let metrics: Option<String> = args.get(4).cloned();
    let mut checks_at_last_verdict = None;
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    tokio::pin!(deadline);
    while checked.len() < n || configured.len() < n {
        if checked.len() == n
            && checks_at_last_verdict.is_none()
            && let Some(addr) = &metrics
        {
            checks_at_last_verdict = Some(checks_counted(addr).await?);
        }
        tokio::select! {
            _ = &mut deadline => anyhow::bail!(
                "after {timeout} s, {} of {n} tenants have a verdict and {} their ConfigMap",
                checked.len(),
                configured.len()
            ),
            next = tenants.try_next() => match next? {
                Some(t) if t.status.as_ref().is_some_and(|s| s.last_check_time.is_some()) => {
                    checked.insert((t.metadata.namespace.clone(), t.metadata.name.clone()));
                }
                Some(_) => {}
                None => anyhow::bail!("the tenant watch ended"),
            },
            next = config_maps.try_next() => match next? {
                Some(cm) => {
                    let owner = cm.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
                    if let Some(owner) = owner {
                        configured.insert((cm.metadata.namespace.clone(), Some(owner.name.clone())));
                    }
                }
                None => anyhow::bail!("the ConfigMap watch ended"),
            },
        }
    }
    println!("{:.3}", started.elapsed().as_secs_f64());
    if let Some(addr) = &metrics {
        // The last ConfigMap may have come before the last verdict.
        let checks = match checks_at_last_verdict {
            Some(checks) => checks,
            None => checks_counted(addr).await?,
        };
        println!("{checks}");
    }
    Ok(())
}

/// The operator's `helpdesk_checks_total`, summed over its results, from its metrics server.
async fn checks_counted(addr: &str) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut page = String::new();
    stream.read_to_string(&mut page).await?;
    let mut total = 0;
    for line in page.lines() {
        if line.starts_with("helpdesk_checks_total{") || line.starts_with("helpdesk_checks_total ")
        {
            let value = line.rsplit(' ').next().unwrap_or_default();
            total += value
                .parse::<f64>()
                .map_err(|_| anyhow::anyhow!("metrics line {line:?}: not a number"))?
                as u64;
        }
    }
    Ok(total)
}

/// Times the benchmark's DNS change row: the tenants whose record `NEW_ZONE` breaks, from the
/// change to their first failing verdict in status and to the fallback in their ConfigMap.
async fn switch(client: Client, args: &[String]) -> anyhow::Result<()> {
    let label: String = arg(args, 1, "LABEL")?;
    let n: usize = arg(args, 2, "N")?;
    let every: usize = arg(args, 3, "EVERY")?;
    let timeout: u64 = arg(args, 4, "TIMEOUT_SECONDS")?;
    let new_zone: String = arg(args, 5, "NEW_ZONE")?;
    let zone: String = arg(args, 6, "ZONE")?;
    let changed: HashSet<String> = (0..n)
        .filter(|i| i % every == every / 2)
        .map(|i| format!("t{i}"))
        .collect();
    let selector = watcher::Config::default().labels(&format!("bench={label}"));
    let tenants = watcher(Api::<HelpdeskTenant>::all(client.clone()), selector.clone());
    let config_maps = watcher(Api::<ConfigMap>::all(client), selector);
    // Both watches as one stream; the change is made once both have listed.
    enum Seen {
        Tenant(Box<HelpdeskTenant>),
        ConfigMap(Box<ConfigMap>),
        Synced,
    }
    fn seen<K>(event: watcher::Event<K>, wrap: fn(K) -> Seen) -> Option<Seen> {
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => Some(wrap(o)),
            watcher::Event::InitDone => Some(Seen::Synced),
            _ => None,
        }
    }
    let mut events = stream::select(
        tenants.map_ok(|e| seen(e, |t| Seen::Tenant(Box::new(t)))),
        config_maps.map_ok(|e| seen(e, |c| Seen::ConfigMap(Box::new(c)))),
    )
    .try_filter_map(|e| std::future::ready(Ok(e)))
    .boxed();
    let (mut synced, mut changed_at) = (0, None::<Instant>);
    let (mut failed, mut switched) = (BTreeMap::new(), BTreeMap::new());
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    tokio::pin!(deadline);
    // Both times for every changed tenant: the two watches need not deliver in write order.
    while switched.len() < changed.len() || failed.len() < changed.len() {
        let next = tokio::select! {
            _ = &mut deadline => anyhow::bail!(
                "after {timeout} s, {} of {} changed tenants failed and {} sent as the fallback",
                failed.len(),
                changed.len(),
                switched.len()
            ),
            next = events.try_next() => next?.ok_or_else(|| anyhow::anyhow!("a watch ended"))?,
        };
        let Some(since) = changed_at else {
            if matches!(next, Seen::Synced) {
                synced += 1;
                if synced == 2 {
                    std::fs::rename(&new_zone, &zone)?;
                    changed_at = Some(Instant::now());
                }
            }
            continue;
        };
        match next {
            Seen::Tenant(t) => {
                let name = t.metadata.name.clone().unwrap_or_default();
                let failing = t
                    .status
                    .iter()
                    .flat_map(|s| &s.senders)
                    .any(|s| s.state == SenderState::Unaligned);
                if failing && changed.contains(&name) {
                    failed.entry(name).or_insert_with(|| since.elapsed());
                }
            }
            Seen::ConfigMap(cm) => {
                let owner = cm
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true));
                let fallback = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(keys::SENDER_MODE))
                    .is_some_and(|m| m == "fallback");
                if let Some(owner) = owner.filter(|o| fallback && changed.contains(&o.name)) {
                    switched
                        .entry(owner.name.clone())
                        .or_insert_with(|| since.elapsed());
                }
            }
            Seen::Synced => {}
        }
    }
    for (name, applied) in &switched {
        let failed = failed[name];
        println!(
            "{name} {:.3} {:.3}",
            failed.as_secs_f64(),
            applied.as_secs_f64()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = async {
        let client = Client::try_default().await?;
        match args.first().map(String::as_str) {
            Some("create") => create(client, &args).await,
            Some("floor") => floor(client, &args).await,
            Some("wait") => wait(client, &args).await,
            Some("switch") => switch(client, &args).await,
            _ => anyhow::bail!("usage: bench-floor create|floor|wait|switch ..."),
        }
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-floor: {error:#}");
            ExitCode::FAILURE
        }
    }
}
