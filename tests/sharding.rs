//! Label-selector shards (docs/design.md §8 "Scaling out"): two leader-elected operator
//! instances with `--selector shard=a` and `--selector shard=b` in one namespace each
//! reconcile only their own tenants and ConfigMaps, each holding its own Lease. The built
//! operator binary runs against the real control plane and a loopback DNS server.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, ensure};
use helpdesk_mail_operator::api::{HelpdeskTenant, HelpdeskTenantSpec, Mode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::cluster::eventually;
use support::operator::{Operator, World, mode_is};

const WAIT: Duration = Duration::from_secs(60);
const SHARDS: [&str; 2] = ["a", "b"];
const PER_SHARD: usize = 3;

fn identity(shard: &str) -> String {
    format!("replica-{shard}")
}

fn tenant_name(shard: &str, i: usize) -> String {
    format!("{shard}-tenant-{i}")
}

async fn create_tenant(w: &World, name: &str, shard: &str) -> anyhow::Result<()> {
    let spec = HelpdeskTenantSpec {
        mode: Mode::Enforce,
        ..HelpdeskTenantSpec::with_senders([w.address().as_str()])
    };
    let mut tenant = HelpdeskTenant::new(name, spec);
    tenant.metadata.labels = Some(BTreeMap::from([("shard".to_owned(), shard.to_owned())]));
    w.tenants().create(&PostParams::default(), &tenant).await?;
    Ok(())
}

fn start(w: &World, shard: &str) -> anyhow::Result<Operator> {
    let mut args = vec![
        "--selector".to_owned(),
        format!("shard={shard}"),
        "--lease-name".to_owned(),
        format!("shard-{shard}"),
    ];
    args.extend(w.lease_args(&identity(shard), 4));
    w.operator(
        &format!("shard-{shard}"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_reconcile_only_their_own_tenants_and_config_maps() {
    let w = World::with_leases("sharding", Duration::from_secs(2), &["shard-a", "shard-b"])
        .await
        .expect("the scenario's world starts");
    let result = async {
        let a = start(&w, "a")?;
        let b = start(&w, "b")?;
        let operators = [(SHARDS[0], &a), (SHARDS[1], &b)];

        // Each shard holds its own Lease.
        let leases: Api<Lease> = w.ns.api();
        for shard in SHARDS {
            eventually(&format!("Lease shard-{shard} held"), WAIT, || async {
                let holder = leases
                    .get_opt(&format!("shard-{shard}"))
                    .await?
                    .and_then(|l| l.spec?.holder_identity);
                Ok(holder.filter(|h| *h == identity(shard)))
            })
            .await?;
        }

        for shard in SHARDS {
            for i in 0..PER_SHARD {
                create_tenant(&w, &tenant_name(shard, i), shard).await?;
            }
        }
        // Every tenant gets its ConfigMap, labelled with its shard.
        for shard in SHARDS {
            for i in 0..PER_SHARD {
                let cm_name = format!("{}-mail-settings", tenant_name(shard, i));
                eventually(
                    &format!("{cm_name} labelled shard={shard}"),
                    WAIT,
                    || async {
                        let cm = w.config_maps().get_opt(&cm_name).await?;
                        Ok(cm.filter(|cm| {
                            cm.metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get("shard"))
                                .is_some_and(|s| s == shard)
                                && mode_is(cm.data.as_ref().unwrap_or(&BTreeMap::new()), "tenant")
                        }))
                    },
                )
                .await?;
            }
        }
        // Each tenant's activation was announced by its own shard's replica only.
        for (event, _) in w.events().await? {
            let object = event
                .regarding
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            let shard = object
                .split('-')
                .next()
                .ok_or_else(|| anyhow!("an Event without an object"))?;
            ensure!(
                event.reporting_instance.as_deref() == Some(identity(shard).as_str()),
                "the Event {:?} about {object} came from {:?}",
                event.reason,
                event.reporting_instance
            );
        }
        // Each replica counts only its own tenants, and checked only those.
        for (shard, operator) in operators {
            let cached = operator.metric("helpdesk_tenants").await?;
            ensure!(
                cached == PER_SHARD as f64,
                "shard {shard} caches {cached} tenants, not {PER_SHARD}"
            );
        }
        // A ConfigMap of shard a rewritten by someone else is repaired by shard a alone.
        let before: Vec<f64> = futures::future::try_join_all(
            operators.map(|(_, o)| o.metric("helpdesk_configmap_writes_total")),
        )
        .await?;
        let cm_name = format!("{}-mail-settings", tenant_name("a", 0));
        let tamper = json!({ "data": { "sender-mode": "fallback" } });
        w.config_maps()
            .patch(&cm_name, &PatchParams::default(), &Patch::Merge(&tamper))
            .await?;
        w.wait_config_map(&cm_name, "repaired", WAIT, |d| mode_is(d, "tenant"))
            .await?;
        let after_a = a.metric("helpdesk_configmap_writes_total").await?;
        let after_b = b.metric("helpdesk_configmap_writes_total").await?;
        ensure!(after_a > before[0], "shard a did not repair its ConfigMap");
        ensure!(
            after_b == before[1],
            "shard b wrote a ConfigMap of shard a ({} -> {after_b})",
            before[1]
        );
        // No ConfigMap belongs to no shard.
        let cms = w
            .config_maps()
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by"))
            .await?;
        ensure!(
            cms.items.len() == SHARDS.len() * PER_SHARD,
            "{} managed ConfigMaps, expected {}",
            cms.items.len(),
            SHARDS.len() * PER_SHARD
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(error) = result {
        w.dump_logs();
        panic!("sharding: {error:#}");
    }
}
