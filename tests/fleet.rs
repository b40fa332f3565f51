//! Fleet behaviour (docs/design.md §8 "No herd after a restart or failover", "Watches, caches,
//! readiness, shutdown"): after a restart, settled tenants are re-checked spread over one
//! interval, and after a change of the provider's egress addresses over a tenth of one, not
//! all at once; reconciles read ConfigMaps from the watch store, never by GET.
//! The built operator binary runs against the real control plane and a loopback DNS server.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use helpdesk_mail_operator::api::{HelpdeskTenant, HelpdeskTenantSpec, Mode};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use support::cluster::{eventually, plane_command};
use support::operator::{
    Operator, PROVIDER_SPF, SMTP_HOST, TTL, World, scenario, set_smtp_host, set_spf,
};

const WAIT: Duration = Duration::from_secs(90);

/// How many of the world's tenants have been checked (have a verdict in status).
async fn checked(w: &World) -> anyhow::Result<usize> {
    Ok(w.tenants()
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.last_check_time.is_some())
        })
        .count())
}

async fn create_tenants(w: &World, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        w.create_tenant(&format!("tenant-{i:03}"), Mode::Enforce)
            .await?;
    }
    Ok(())
}

async fn wait_all_checked(w: &World, n: usize) -> anyhow::Result<()> {
    eventually("every tenant checked", WAIT, || async {
        Ok((checked(w).await? == n).then_some(()))
    })
    .await
}

/// Waits until the operator's `/readyz` answers 200.
async fn wait_ready(operator: &Operator) -> anyhow::Result<()> {
    eventually("the operator ready", WAIT, || async {
        let ready = support::operator::http_get(operator.metrics_port, "/readyz")
            .await
            .is_ok_and(|(code, _)| code == 200);
        Ok(ready.then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_spreads_the_rechecks_over_one_interval() {
    const TENANTS: usize = 30;
    let interval = Duration::from_secs(20);
    scenario("restart-spread", interval, |w| async move {
        let first = w.operator("first", &[])?;
        create_tenants(&w, TENANTS).await?;
        wait_all_checked(&w, TENANTS).await?;
        drop(first);

        // The new process knows no due times; every status holds a verdict.
        let second = w.operator("second", &[])?;
        let started = Instant::now();
        wait_ready(&second).await?;
        let quarter = interval / 4;
        let until = started + quarter;
        tokio::time::sleep_until(until.into()).await;
        let early = second.metric("helpdesk_checks_total").await?;
        eprintln!("checks in the first quarter interval: {early} of {TENANTS}");
        // Evenly spread, a quarter of the tenants fall in the first quarter; the margin
        // covers the spread's start a moment after the process's.
        let limit = (TENANTS / 4 + 3) as f64;
        ensure!(
            early <= limit,
            "{early} checks within {quarter:?} of the restart (at most {limit})"
        );
        // And every tenant is re-checked within about one interval.
        eventually("every tenant re-checked", interval * 2, || async {
            let checks = second.metric("helpdesk_checks_total").await?;
            Ok((checks >= TENANTS as f64).then_some(checks))
        })
        .await?;
        let within = started.elapsed();
        ensure!(
            within <= interval + interval / 2,
            "the re-checks took {within:?}, more than about one interval {interval:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_change_spreads_the_rechecks_over_a_tenth_of_the_interval() {
    const TENANTS: usize = 30;
    // The tenants' own interval sets the spread; the operator's short one makes it re-resolve
    // the provider's SMTP host every 2 s.
    let tenant_interval = Duration::from_secs(20);
    let window = tenant_interval / 10;
    scenario("egress-spread", Duration::from_secs(2), |w| async move {
        set_smtp_host(&w.dns, "192.0.2.10");
        // Both addresses are the provider's: the change moves no verdict.
        set_spf(
            &w.dns,
            PROVIDER_SPF,
            "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all",
            TTL,
        );
        let operator = w.operator("operator", &["--provider-smtp-host", SMTP_HOST])?;
        for i in 0..TENANTS {
            let spec = HelpdeskTenantSpec {
                check_interval: Some(format!("{}s", tenant_interval.as_secs())),
                ..HelpdeskTenantSpec::with_senders([w.address().as_str()])
            };
            let tenant = HelpdeskTenant::new(&format!("tenant-{i:03}"), spec);
            w.tenants().create(&PostParams::default(), &tenant).await?;
        }
        wait_all_checked(&w, TENANTS).await?;
        let before = operator.metric("helpdesk_checks_total").await?;

        set_smtp_host(&w.dns, "192.0.2.11");
        // When each re-check happened, sampled every 50 ms.
        let mut times = Vec::new();
        let mut seen = before;
        let deadline = Instant::now() + tenant_interval / 2;
        while seen < before + TENANTS as f64 {
            ensure!(
                Instant::now() < deadline,
                "{} of {TENANTS} tenants re-checked after the egress change",
                seen - before
            );
            let now = operator.metric("helpdesk_checks_total").await?;
            for _ in 0..(now - seen) as usize {
                times.push(Instant::now());
            }
            seen = now;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let span = times[TENANTS - 1] - times[0];
        eprintln!(
            "{TENANTS} re-checks over {:.2} s (window {window:?})",
            span.as_secs_f64()
        );
        ensure!(
            span >= window / 2,
            "the re-checks came within {span:?}, not spread over the {window:?} window"
        );
        ensure!(
            span <= window + Duration::from_secs(1),
            "the re-checks took {span:?}, longer than the {window:?} window"
        );
        Ok(())
    })
    .await;
}

/// ConfigMap GETs in `namespace` by the operator's ServiceAccount there, from the API server's
/// audit log (`scripts/control-plane audit-log`), so other tests' traffic does not count.
fn operator_config_map_gets(namespace: &str) -> anyhow::Result<usize> {
    let path = plane_command("audit-log")?;
    let log = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let user = format!("system:serviceaccount:{namespace}:helpdesk-mail-operator");
    Ok(log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry["verb"] == "get"
                && entry["user"]["username"] == user.as_str()
                && entry["objectRef"]["resource"] == "configmaps"
                && entry["objectRef"]["namespace"] == namespace
        })
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_read_config_maps_from_the_watch_store() {
    const TENANTS: usize = 10;
    // A short interval, so the window below holds several reconciles per tenant.
    let interval = Duration::from_secs(2);
    scenario("no-get", interval, |w| async move {
        let operator = w.operator("operator", &[])?;
        wait_ready(&operator).await?;
        let reconciles_before = operator
            .metric("helpdesk_reconcile_duration_seconds_count")
            .await?;
        create_tenants(&w, TENANTS).await?;
        wait_all_checked(&w, TENANTS).await?;
        // Reconciles go on with every requeue; count them until there are plenty.
        eventually("several reconciles per tenant", WAIT, || async {
            let n = operator
                .metric("helpdesk_reconcile_duration_seconds_count")
                .await?;
            Ok((n - reconciles_before >= (3 * TENANTS) as f64).then_some(()))
        })
        .await?;
        let reconciles = operator
            .metric("helpdesk_reconcile_duration_seconds_count")
            .await?
            - reconciles_before;
        let gets = operator_config_map_gets(w.ns.name())?;
        eprintln!("{reconciles} reconciles, {gets} ConfigMap GETs by the operator");
        ensure!(
            gets == 0,
            "{gets} ConfigMap GETs during {reconciles} reconciles (none expected)"
        );
        // The count sees a GET made with the operator's credentials.
        let kubeconfig = Kubeconfig::read_from(&w.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let as_operator: Api<ConfigMap> =
            Api::namespaced(kube::Client::try_from(config)?, w.ns.name());
        as_operator.get("tenant-000-mail-settings").await?;
        eventually("the audit log to show one GET", WAIT, || async {
            Ok((operator_config_map_gets(w.ns.name())? == 1).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}
