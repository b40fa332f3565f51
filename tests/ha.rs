//! High availability and API faults (docs/design.md §8 "High availability", "Safe writes";
//! §11): a paused leader that resumes writes nothing, owned ConfigMap keys rewritten by another
//! client come back, and a thousand new tenants get exactly one activation Event each. The
//! built operator binary runs against the real control plane and a loopback DNS server.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use futures::{StreamExt, TryStreamExt};
use helpdesk_mail_operator::api::Mode;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::cluster::eventually;
use support::operator::{LEASE_NAME, TTL, WAIT, World, mode_is, scenario, set_spf};

async fn holder(leases: &Api<Lease>) -> anyhow::Result<Option<String>> {
    Ok(leases
        .get_opt(LEASE_NAME)
        .await?
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// Events the replica `identity` reported, counted with their series.
async fn events_by(w: &World, identity: &str) -> anyhow::Result<u32> {
    Ok(w.events()
        .await?
        .into_iter()
        .filter(|(e, _)| e.reporting_instance.as_deref() == Some(identity))
        .map(|(_, n)| n)
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_writes_nothing_after_it_resumes() {
    const LEASE_SECONDS: u64 = 4;
    scenario("paused", Duration::from_secs(2), |w| async move {
        let a_args = w.lease_args("replica-a", LEASE_SECONDS);
        let b_args = w.lease_args("replica-b", LEASE_SECONDS);
        let a = w.operator("replica-a", &a_args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let b = w.operator("replica-b", &b_args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let leases: Api<Lease> = w.ns.api();
        eventually("a Lease holder", WAIT, || holder(&leases)).await?;
        w.create_tenant("acme", Mode::Enforce).await?;
        w.wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| {
            mode_is(d, "tenant")
        })
        .await?;
        let old = holder(&leases)
            .await?
            .ok_or_else(|| anyhow!("the Lease has no holder"))?;
        let (leader, standby) = if old == "replica-a" { (a, b) } else { (b, a) };
        let new = if old == "replica-a" { "replica-b" } else { "replica-a" };
        ensure!(leader.metric("helpdesk_leader").await? == 1.0, "the holder does not lead");
        // The leader counts a write when its response is back: the baseline must hold the
        // status and the ConfigMap the cluster already shows.
        eventually("the leader to count its first two writes", WAIT, || async {
            Ok((leader.writes().await? >= 2.0).then_some(()))
        })
        .await?;

        let writes_before = leader.writes().await?;
        let events_before = events_by(&w, &old).await?;
        leader.signal("-STOP")?;
        let stopped = Instant::now();
        eventually("the standby holds the Lease", WAIT, || async {
            Ok(holder(&leases).await?.filter(|h| h == new))
        })
        .await?;
        let failover = stopped.elapsed();
        eprintln!("fail-over after SIGSTOP: {:.1} s", failover.as_secs_f64());
        ensure!(
            failover < Duration::from_secs(2 * LEASE_SECONDS),
            "fail-over took {failover:?}"
        );

        // The tenant's DNS breaks: the new leader switches it to fallback.
        set_spf(&w.dns, &w.domain, "v=spf1 -all", TTL);
        w.wait_config_map("acme-mail-settings", "the new leader switches", WAIT, |d| {
            mode_is(d, "fallback")
        })
        .await?;
        ensure!(standby.writes().await? >= 1.0, "the new leader wrote nothing");

        // Paused for three lease durations in all.
        let pause = Duration::from_secs(3 * LEASE_SECONDS);
        if let Some(rest) = pause.checked_sub(stopped.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        leader.signal("-CONT")?;
        let resumed = Instant::now();
        // For two check intervals after it resumes, the old leader writes nothing and the
        // ConfigMap keeps the new leader's value.
        while resumed.elapsed() < 2 * w.interval {
            let data = w.config_map_data("acme-mail-settings").await?;
            ensure!(
                mode_is(&data, "fallback"),
                "the ConfigMap went back to {:?} {:.1} s after SIGCONT",
                data.get("sender-mode"),
                resumed.elapsed().as_secs_f64()
            );
            let writes = leader.writes().await?;
            ensure!(
                writes == writes_before,
                "the resumed old leader wrote ({writes_before} -> {writes} writes) {:.1} s after SIGCONT",
                resumed.elapsed().as_secs_f64()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let events_after = events_by(&w, &old).await?;
        ensure!(
            events_after == events_before,
            "the resumed old leader sent {} Events",
            events_after - events_before
        );
        ensure!(
            leader.metric("helpdesk_leader").await? == 0.0,
            "the resumed old leader still reports leading"
        );
        ensure!(
            holder(&leases).await?.as_deref() == Some(new),
            "the Lease changed hands again"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_keys_rewritten_every_second_come_back() {
    scenario("rewrite", Duration::from_secs(2), |w| async move {
        let operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Enforce).await?;
        let good = w
            .wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| {
                mode_is(d, "tenant")
            })
            .await?;
        let status_writes = operator.metric("helpdesk_status_writes_total").await?;
        let events_before = w.events().await?.len();
        let intruder = PatchParams {
            field_manager: Some("intruder".to_owned()),
            ..PatchParams::default()
        };
        for i in 0..30 {
            let patch = json!({ "data": {
                "from": format!("intruder-{i}@elsewhere.test"),
                "sender-mode": "fallback",
            } });
            w.config_maps()
                .patch("acme-mail-settings", &intruder, &Patch::Merge(&patch))
                .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let keys = ["from", "sender-mode", "reply-to", "senders.json"];
        let same = |d: &BTreeMap<String, String>| keys.iter().all(|k| d.get(*k) == good.get(*k));
        w.wait_config_map(
            "acme-mail-settings",
            "the owned keys restored",
            w.interval,
            same,
        )
        .await?;
        ensure!(
            operator.metric("helpdesk_status_writes_total").await? == status_writes,
            "ConfigMap edits caused status writes"
        );
        ensure!(
            w.events().await?.len() == events_before,
            "ConfigMap edits caused Events"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_new_tenants_get_one_activation_event_each() {
    const TENANTS: usize = 1000;
    scenario("thousand", Duration::from_secs(20), |w| async move {
        let _operator = w.operator("operator", &["--concurrency", "32"])?;
        let started = Instant::now();
        futures::stream::iter(0..TENANTS)
            .map(|i| {
                let w = &w;
                async move { w.create_tenant(&format!("t{i:04}"), Mode::Enforce).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await?;
        let activated = |min: usize| {
            let w = &w;
            async move {
                let counts = w.event_counts("TenantSenderActivated").await?;
                Ok((counts.len() >= min).then_some(counts))
            }
        };
        eventually("every tenant activated", Duration::from_secs(240), || {
            activated(TENANTS)
        })
        .await?;
        // Every tenant's ConfigMap is written after its status: once all are there, any second
        // check set off by them has had its chance.
        let config_maps = w.config_maps();
        eventually("every ConfigMap", Duration::from_secs(120), || async {
            let list = config_maps.list(&Default::default()).await?;
            let tenant_mode = list
                .items
                .iter()
                .filter(|cm| cm.data.as_ref().is_some_and(|d| mode_is(d, "tenant")))
                .count();
            Ok((tenant_mode >= TENANTS).then_some(()))
        })
        .await?;
        eprintln!(
            "{TENANTS} tenants activated in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let counts = w.event_counts("TenantSenderActivated").await?;
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
        ensure!(
            twice.is_empty() && counts.len() == TENANTS,
            "{} of {} tenants got more than one TenantSenderActivated: {:?}",
            twice.len(),
            counts.len(),
            twice.iter().take(10).collect::<Vec<_>>()
        );
        Ok(())
    })
    .await;
}
