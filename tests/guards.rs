//! The guards before switching to fallback (docs/design.md §5): the provider self-check, the
//! fallback sender check and the fleet guard, and an outage of every tenant domain. The built
//! operator binary runs against the real control plane and a loopback DNS server, under the
//! chart's RBAC.

mod support;

use std::time::{Duration, Instant};

use anyhow::ensure;
use helpdesk_mail_operator::api::{HelpdeskTenant, HelpdeskTenantSpec, Mode, condition};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::cluster::eventually;
use support::dns::Fault;
use support::operator::{
    FALLBACK_DOMAIN, LEASE_NAME, Operator, PROVIDER_SPF, TTL, World, mode_is, scenario, set_spf,
};

const WAIT: Duration = Duration::from_secs(90);
const INTERVAL: Duration = Duration::from_secs(2);

/// The tenants' (condition status, reason) of `kind`, one entry per tenant.
async fn conditions(w: &World, kind: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let tenants = w.tenants().list(&ListParams::default()).await?;
    Ok(tenants
        .items
        .iter()
        .map(|t| {
            let c = t
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind));
            (
                t.metadata.name.clone().unwrap_or_default(),
                c.map(|c| c.status.clone()).unwrap_or_default(),
                c.map(|c| c.reason.clone()).unwrap_or_default(),
            )
        })
        .collect())
}

/// How many of `names` have mail settings in sender mode `mode`.
async fn in_mode(w: &World, names: &[String], mode: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    for name in names {
        if mode_is(
            &w.config_map_data(&format!("{name}-mail-settings")).await?,
            mode,
        ) {
            n += 1;
        }
    }
    Ok(n)
}

/// Events of `reason` in the namespace, counted with their series.
async fn events(w: &World, reason: &str) -> anyhow::Result<u32> {
    Ok(w.event_counts(reason).await?.values().sum())
}

/// Creates `n` tenants and waits until every one sends as its own address.
async fn settled_tenants(w: &World, prefix: &str, n: usize) -> anyhow::Result<Vec<String>> {
    settled_tenants_with(w, prefix, n, 2).await
}

/// Like [`settled_tenants`], with `spec.failureThreshold` set.
async fn settled_tenants_with(
    w: &World,
    prefix: &str,
    n: usize,
    failure_threshold: u32,
) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:02}")).collect();
    for name in &names {
        let spec = HelpdeskTenantSpec {
            mode: Mode::Enforce,
            failure_threshold,
            ..HelpdeskTenantSpec::with_senders([w.address().as_str()])
        };
        w.tenants()
            .create(&PostParams::default(), &HelpdeskTenant::new(name, spec))
            .await?;
    }
    eventually("every tenant sends as itself", WAIT, || async {
        Ok((in_mode(w, &names, "tenant").await? == n).then_some(()))
    })
    .await?;
    Ok(names)
}

/// Watches for `span`, checking `invariant` every 200 ms; fails at the first breach.
async fn holds_for<F, Fut>(what: &str, span: Duration, mut invariant: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let end = Instant::now() + span;
    while Instant::now() < end {
        ensure!(invariant().await?, "{what}: broken");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn metric_is(op: &Operator, name: &str, value: f64) -> anyhow::Result<Option<()>> {
    Ok((op.metric(name).await? == value).then_some(()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_provider_record_moves_no_tenant_and_is_reported_once() {
    scenario("provider-broken", INTERVAL, |w| async move {
        let ns = w.ns.name().to_owned();
        let op = w.operator("operator", &["--lease-namespace", &ns])?;
        let names = settled_tenants(&w, "prov", 5).await?;
        ensure!(op.metric("helpdesk_provider_healthy").await? == 1.0);

        // The provider's own record stops authorizing its egress address.
        set_spf(&w.dns, PROVIDER_SPF, "v=spf1 ip4:192.0.2.99 -all", TTL);
        eventually("helpdesk_provider_healthy 0", WAIT, || {
            metric_is(&op, "helpdesk_provider_healthy", 0.0)
        })
        .await?;
        eventually("every tenant shows ProviderSpfBroken", WAIT, || async {
            let all = conditions(&w, condition::SPF_ALIGNED).await?;
            Ok(all
                .iter()
                .all(|(_, s, r)| s == "Unknown" && r == "ProviderSpfBroken")
                .then_some(()))
        })
        .await?;
        // Five intervals (past every failure threshold): nobody moves.
        holds_for("every tenant sends as itself", INTERVAL * 5, || async {
            Ok(in_mode(&w, &names, "tenant").await? == names.len())
        })
        .await?;
        ensure!(events(&w, "FallbackActivated").await? == 0);
        let broken = w.event_counts("ProviderSpfBroken").await?;
        ensure!(
            broken.get(LEASE_NAME) == Some(&1) && broken.len() == 1,
            "one ProviderSpfBroken Event, on the Lease: {broken:?}"
        );
        let lines = op
            .log()
            .lines()
            .filter(|l| l.contains("the provider's own SPF record fails"))
            .count();
        ensure!(lines == 1, "one error line for the fleet, saw {lines}");

        // The record comes back: every tenant is Aligned, still on its own address.
        set_spf(
            &w.dns,
            PROVIDER_SPF,
            &format!("v=spf1 ip4:{} -all", support::operator::EGRESS_IP),
            TTL,
        );
        eventually("helpdesk_provider_healthy 1", WAIT, || {
            metric_is(&op, "helpdesk_provider_healthy", 1.0)
        })
        .await?;
        eventually("every tenant Aligned again", WAIT, || async {
            let all = conditions(&w, condition::SPF_ALIGNED).await?;
            Ok(all.iter().all(|(_, s, _)| s == "True").then_some(()))
        })
        .await?;
        ensure!(in_mode(&w, &names, "tenant").await? == names.len());
        ensure!(events(&w, "FallbackActivated").await? == 0);
        ensure!(events(&w, "ProviderSpfBroken").await? == 1);
        ensure!(events(&w, "ProviderSpfRestored").await? == 1);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unaligned_fallback_sender_is_not_switched_to() {
    scenario("fallback", INTERVAL, |w| async move {
        // The fallback domain stops authorizing the provider.
        set_spf(&w.dns, FALLBACK_DOMAIN, "v=spf1 -all", TTL);
        let op = w.operator("operator", &[])?;
        let names = settled_tenants(&w, "fb", 1).await?;
        set_spf(&w.dns, &w.domain, "v=spf1 -all", TTL);
        eventually(
            "FallbackActive=False FallbackSenderUnaligned",
            WAIT,
            || async {
                let all = conditions(&w, condition::FALLBACK_ACTIVE).await?;
                Ok(all
                    .iter()
                    .all(|(_, s, r)| s == "False" && r == "FallbackSenderUnaligned")
                    .then_some(()))
            },
        )
        .await?;
        holds_for("the tenant keeps its own address", INTERVAL * 5, || async {
            Ok(in_mode(&w, &names, "tenant").await? == 1)
        })
        .await?;
        ensure!(events(&w, "FallbackActivated").await? == 0);
        let warned = events(&w, "FallbackSenderUnaligned").await?;
        ensure!(
            warned == 1,
            "one FallbackSenderUnaligned Event, saw {warned}"
        );
        // The fallback domain is fixed: the switch that was due happens.
        set_spf(
            &w.dns,
            FALLBACK_DOMAIN,
            &support::operator::include_record(),
            TTL,
        );
        w.wait_config_map(
            &format!("{}-mail-settings", names[0]),
            "fallback",
            WAIT,
            |d| mode_is(d, "fallback"),
        )
        .await?;
        ensure!(op.metric("helpdesk_provider_healthy").await? == 1.0);
        Ok(())
    })
    .await;
}

const FLEET: usize = 50;
/// The guard's share of [`FLEET`] at 20 %.
const SHARE: usize = FLEET / 5;

/// Turns on a resolver that answers NXDOMAIN for every name but the provider's, and waits for
/// the guard to hold; returns the tenants switched by then.
async fn nxdomain_trips_the_guard(
    w: &World,
    op: &Operator,
    names: &[String],
) -> anyhow::Result<usize> {
    w.dns
        .update(|zone| zone.nxdomain_except = Some(vec![FALLBACK_DOMAIN.to_owned()]));
    eventually("the fleet guard holds", WAIT, || {
        metric_is(op, "helpdesk_fleet_guard_holding", 1.0)
    })
    .await?;
    eventually("switches are held", WAIT, || async {
        Ok((op
            .metric("helpdesk_fleet_guard_held_switches_total")
            .await?
            > 0.0)
            .then_some(()))
    })
    .await?;
    // A few intervals of holding: never more than the guard's share switched.
    holds_for(
        "at most the guard's share switched",
        INTERVAL * 3,
        || async {
            Ok(in_mode(w, names, "fallback").await? <= SHARE
                && op.metric("helpdesk_fleet_guard_holding").await? == 1.0)
        },
    )
    .await?;
    let switched = in_mode(w, names, "fallback").await?;
    let held = conditions(w, condition::FALLBACK_ACTIVE)
        .await?
        .iter()
        .filter(|(_, _, r)| r == "FleetGuardHold")
        .count();
    ensure!(held > 0, "held tenants show FleetGuardHold");
    eprintln!("switched while the guard held: {switched} of {FLEET}");
    Ok(switched)
}

const GUARD_ARGS: [&str; 4] = [
    "--fleet-guard-percent",
    "20",
    "--fleet-guard-min-tenants",
    "2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_guard_holds_until_the_rate_drops() {
    scenario("guard-rate", INTERVAL, |w| async move {
        let op = w.operator("operator", &GUARD_ARGS)?;
        // A single failure switches: the guard alone limits how many switch.
        let names = settled_tenants_with(&w, "rate", FLEET, 1).await?;
        let switched = nxdomain_trips_the_guard(&w, &op, &names).await?;
        // The resolver is fixed: the rate drops, the hold ends, nobody else switched.
        w.dns.update(|zone| zone.nxdomain_except = None);
        eventually("the hold ends", WAIT, || {
            metric_is(&op, "helpdesk_fleet_guard_holding", 0.0)
        })
        .await?;
        eventually("held tenants are Aligned again", WAIT, || async {
            let all = conditions(&w, condition::SPF_ALIGNED).await?;
            Ok(all.iter().all(|(_, s, _)| s == "True").then_some(()))
        })
        .await?;
        let after = events(&w, "FallbackActivated").await? as usize;
        ensure!(
            after == switched,
            "{after} switched in all, {switched} before the hold"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_guard_hold_expires() {
    scenario("guard-expiry", INTERVAL, |w| async move {
        let mut args = GUARD_ARGS.to_vec();
        args.extend(["--fleet-guard-hold", "10s"]);
        let op = w.operator("operator", &args)?;
        let names = settled_tenants(&w, "exp", FLEET).await?;
        let started = Instant::now();
        nxdomain_trips_the_guard(&w, &op, &names).await?;
        eventually("the hold expires", WAIT, || {
            metric_is(&op, "helpdesk_fleet_guard_holding", 0.0)
        })
        .await?;
        ensure!(
            started.elapsed() >= Duration::from_secs(10),
            "expired early"
        );
        // The fault is still there: once released, the switches go ahead.
        eventually("every tenant falls back", WAIT, || async {
            Ok((in_mode(&w, &names, "fallback").await? == FLEET).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_guard_is_released_by_the_lease_annotation() {
    scenario("guard-release", INTERVAL, |w| async move {
        let mut args: Vec<String> = GUARD_ARGS.iter().map(|a| a.to_string()).collect();
        args.extend(w.lease_args("replica", 15));
        let op = w.operator(
            "operator",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let leases: Api<Lease> = w.ns.api();
        eventually("the Lease is held", WAIT, || async {
            Ok(leases.get_opt(LEASE_NAME).await?.map(|_| ()))
        })
        .await?;
        let names = settled_tenants(&w, "rel", FLEET).await?;
        nxdomain_trips_the_guard(&w, &op, &names).await?;
        leases
            .patch(
                LEASE_NAME,
                &PatchParams::default(),
                &Patch::Merge(&json!({
                    "metadata": { "annotations": { "mail.helpdesk.io/fleet-guard": "release" } }
                })),
            )
            .await?;
        eventually("the hold is released", WAIT, || {
            metric_is(&op, "helpdesk_fleet_guard_holding", 0.0)
        })
        .await?;
        eventually("every tenant falls back", WAIT, || async {
            Ok((in_mode(&w, &names, "fallback").await? == FLEET).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_every_tenant_domain_moves_no_one() {
    const TENANTS: usize = 10;
    scenario("outage", INTERVAL, |w| async move {
        let op = w.operator("operator", &[])?;
        // Tenants on ten domains of their own.
        let mut names = Vec::new();
        let mut domains = Vec::new();
        for i in 0..TENANTS {
            let domain = format!("outage-{i}.test");
            let name = format!("out-{i:02}");
            let (d, record) = (domain.clone(), support::operator::include_record());
            w.dns.update(move |zone| {
                zone.add(&d, 1, support::operator::txt(&record));
                zone.add(
                    &format!("_dmarc.{d}"),
                    1,
                    support::operator::txt("v=DMARC1; p=reject"),
                );
            });
            let spec = HelpdeskTenantSpec {
                mode: Mode::Enforce,
                ..HelpdeskTenantSpec::with_senders([format!("support@{domain}").as_str()])
            };
            w.tenants()
                .create(&PostParams::default(), &HelpdeskTenant::new(&name, spec))
                .await?;
            names.push(name);
            domains.push(domain);
        }
        eventually("every tenant sends as itself", WAIT, || async {
            Ok((in_mode(&w, &names, "tenant").await? == TENANTS).then_some(()))
        })
        .await?;
        let fault_domains = domains.clone();
        w.dns.update(move |zone| {
            for d in &fault_domains {
                zone.set_fault(d, Some(Fault::ServFail));
                zone.set_fault(&format!("_dmarc.{d}"), Some(Fault::ServFail));
            }
        });
        let before = w.dns.queries();
        let span = INTERVAL * 5;
        holds_for("nobody switched", span, || async {
            Ok(in_mode(&w, &names, "tenant").await? == TENANTS)
        })
        .await?;
        let queries = w.dns.queries() - before;
        // Failures are cached for 5 s: per failing name (2 per tenant) one query per 5 s,
        // plus the provider's and the first round's; a resolver without error caching asks
        // every check, twice (retries), for each of the ~25 checks per tenant.
        let bound = (TENANTS as u64 * 2) * (span.as_secs() / 5 + 2) + 20;
        eprintln!("upstream queries during {span:?} of outage: {queries} (bound {bound})");
        ensure!(
            queries <= bound,
            "{queries} queries over {span:?}, bound {bound}"
        );
        let unknown = conditions(&w, condition::SPF_ALIGNED)
            .await?
            .iter()
            .filter(|(_, s, _)| s == "Unknown")
            .count();
        ensure!(unknown == TENANTS, "every tenant Unknown, {unknown} were");
        ensure!(events(&w, "FallbackActivated").await? == 0);
        ensure!(op.metric("helpdesk_fleet_guard_holding").await? == 0.0);
        Ok(())
    })
    .await;
}
