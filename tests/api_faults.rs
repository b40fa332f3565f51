//! API faults (docs/design.md §8 "Watches, caches, readiness, shutdown", §11): kube-apiserver
//! killed with SIGKILL while tenants' DNS breaks, and watches expired by etcd compaction. The
//! built operator binary runs against the real control plane, whose API server
//! `scripts/control-plane` kills and starts again with the same command line, and a loopback
//! DNS server. The tests of this file take the API server away, so they run one at a time.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use helpdesk_mail_operator::api::{HelpdeskTenant, HelpdeskTenantSpec, Mode};
use kube::api::PostParams;
use support::cluster::{eventually, plane_command};
use support::operator::{Operator, TTL, WAIT, World, include_record, scenario, set_spf, txt};

/// One test at a time holds the API server.
static PLANE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The API server is down from [`Outage::begin`] until [`Outage::end`]; a test that fails in
/// between starts it again when this is dropped, so later tests find it up.
struct Outage {
    down: bool,
}

impl Outage {
    fn begin() -> anyhow::Result<Self> {
        plane_command("apiserver-kill")?;
        Ok(Self { down: true })
    }

    /// Starts the API server again and returns when it was ready.
    fn end(&mut self) -> anyhow::Result<Instant> {
        plane_command("apiserver-start")?;
        self.down = false;
        Ok(Instant::now())
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.down {
            let _ = plane_command("apiserver-start");
        }
    }
}

/// The tenants' failure threshold (the spec's default).
const FAILURE_THRESHOLD: u32 = 2;

/// How soon after the API server's return every tenant must show its DNS: the checks of the
/// failure threshold and one more interval, plus 10 s (issue 14).
fn convergence_bound(interval: Duration) -> Duration {
    interval * (FAILURE_THRESHOLD + 1) + Duration::from_secs(10)
}

fn tenant_domain(w: &World, name: &str) -> String {
    format!("{name}.{}", w.domain)
}

/// A tenant sending from a domain of its own, whose SPF includes the provider.
async fn create_own_domain_tenant(w: &World, name: &str) -> anyhow::Result<()> {
    let domain = tenant_domain(w, name);
    w.dns.update(|zone| {
        zone.add(&domain, TTL, txt(&include_record()));
        zone.add(&format!("_dmarc.{domain}"), TTL, txt("v=DMARC1; p=reject"));
    });
    let address = format!("support@{domain}");
    let spec = HelpdeskTenantSpec {
        mode: Mode::Enforce,
        ..HelpdeskTenantSpec::with_senders([address.as_str()])
    };
    w.tenants()
        .create(&PostParams::default(), &HelpdeskTenant::new(name, spec))
        .await
        .with_context(|| format!("creating tenant {name}"))?;
    Ok(())
}

/// Waits until each named tenant's ConfigMap shows the expected `sender-mode`.
async fn wait_modes(
    w: &World,
    what: &str,
    timeout: Duration,
    expected: &BTreeMap<String, &str>,
) -> anyhow::Result<()> {
    eventually(what, timeout, || async {
        let list = w.config_maps().list(&Default::default()).await?;
        let modes: BTreeMap<&str, &str> = list
            .items
            .iter()
            .filter_map(|cm| {
                let name = cm
                    .metadata
                    .name
                    .as_deref()?
                    .strip_suffix("-mail-settings")?;
                let mode = cm.data.as_ref()?.get("sender-mode")?;
                Some((name, mode.as_str()))
            })
            .collect();
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(name, mode)| modes.get(name.as_str()) != Some(*mode))
            .map(|(name, _)| name.as_str())
            .collect();
        ensure!(wrong.is_empty(), "not yet as expected: {wrong:?}");
        Ok(Some(()))
    })
    .await
}

/// Waits, within [`convergence_bound`] of the API server's return at `back`, until every
/// tenant shows what its DNS says.
async fn wait_converged(
    w: &World,
    what: &str,
    expected: &BTreeMap<String, &str>,
    back: Instant,
) -> anyhow::Result<()> {
    let deadline = back + convergence_bound(w.interval);
    let left = deadline.saturating_duration_since(Instant::now());
    wait_modes(w, what, left, expected).await?;
    eprintln!(
        "converged {:.1} s after the API server was back",
        back.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How often each (object, reason) Event happened.
async fn event_counts(w: &World) -> anyhow::Result<BTreeMap<(String, String), u32>> {
    let mut counts = BTreeMap::new();
    for (event, n) in w.events().await? {
        let object = event.regarding.and_then(|r| r.name).unwrap_or_default();
        let reason = event.reason.unwrap_or_default();
        *counts.entry((object, reason)).or_insert(0) += n;
    }
    Ok(counts)
}

/// The Events counted in `after` and not in `before`.
fn new_events(
    before: &BTreeMap<(String, String), u32>,
    after: &BTreeMap<(String, String), u32>,
) -> BTreeMap<(String, String), u32> {
    after
        .iter()
        .filter_map(|(key, n)| {
            let new = n - before.get(key).copied().unwrap_or(0);
            (new > 0).then(|| (key.clone(), new))
        })
        .collect()
}

fn ensure_running(operator: &mut Operator) -> anyhow::Result<()> {
    let exited = operator.exited()?;
    ensure!(exited.is_none(), "the operator exited: {exited:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_api_server_returns_to_a_fleet_that_converges_with_one_event_per_change() {
    const TENANTS: usize = 50;
    const BROKEN: usize = 10;
    const OUTAGE: Duration = Duration::from_secs(15);
    // Two watches retrying every 1-2 s once their back-off is at its cap try about 10 times
    // each in 15 s; a watch retrying without one, hundreds of times.
    const MAX_WATCH_ERRORS: usize = 40;
    let _plane = PLANE.lock().await;
    scenario("apikill", Duration::from_secs(3), |w| async move {
        // Leader-elected with the default Lease, as the chart runs it: the outage outlasts
        // the renew deadline, so the term ends and must be won again.
        let lease = w.lease_args("replica-a", 15);
        let mut operator = w.operator(
            "operator",
            &lease.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let names: Vec<String> = (0..TENANTS).map(|i| format!("t{i:02}")).collect();
        for name in &names {
            create_own_domain_tenant(&w, name).await?;
        }
        let mut expected: BTreeMap<String, &str> =
            names.iter().map(|n| (n.clone(), "tenant")).collect();
        wait_modes(&w, "every tenant sending as itself", WAIT, &expected).await?;
        let before = event_counts(&w).await?;

        let mut outage = Outage::begin()?;
        for name in &names[..BROKEN] {
            set_spf(&w.dns, &tenant_domain(&w, name), "v=spf1 -all", TTL);
            expected.insert(name.clone(), "fallback");
        }
        tokio::time::sleep(OUTAGE).await;
        let back = outage.end()?;
        create_own_domain_tenant(&w, "late").await?;
        expected.insert("late".to_owned(), "tenant");
        wait_converged(&w, "every tenant as its DNS says", &expected, back).await?;

        // The watches retried with a back-off, not in a loop.
        let watch_errors = operator.log().matches("controller error").count();
        eprintln!("{watch_errors} watch errors logged");
        ensure!(
            watch_errors <= MAX_WATCH_ERRORS,
            "{watch_errors} watch errors logged during a {OUTAGE:?} outage"
        );

        // Two more intervals for a repeated Event to show, then each change has one.
        tokio::time::sleep(2 * w.interval).await;
        let new = new_events(&before, &event_counts(&w).await?);
        let repeated: Vec<_> = new.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(repeated.is_empty(), "Events repeated: {repeated:?}");
        for name in &names[..BROKEN] {
            for reason in ["SenderUnaligned", "FallbackActivated"] {
                ensure!(
                    new.contains_key(&(name.clone(), reason.to_owned())),
                    "{name} has no {reason} Event; new Events: {new:?}"
                );
            }
        }
        let healthy: Vec<_> = new
            .keys()
            .filter(|(object, _)| names[BROKEN..].contains(object))
            .collect();
        ensure!(
            healthy.is_empty(),
            "tenants whose DNS did not change got Events: {healthy:?}"
        );
        ensure!(
            new.get(&("late".to_owned(), "TenantSenderActivated".to_owned())) == Some(&1),
            "the tenant created after the restart was not activated once: {new:?}"
        );
        ensure_running(&mut operator)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_expired_by_etcd_compaction_still_sees_the_next_change() {
    let _plane = PLANE.lock().await;
    scenario("compact", Duration::from_secs(2), |w| async move {
        let mut operator = w.operator("operator", &[])?;
        create_own_domain_tenant(&w, "acme").await?;
        let mut expected = BTreeMap::from([("acme".to_owned(), "tenant")]);
        wait_modes(&w, "acme sending as itself", WAIT, &expected).await?;
        let before = event_counts(&w).await?;

        // The watches' last resourceVersion is compacted away while the API server is down:
        // when they resume from it, the API server answers 410 Gone.
        let mut outage = Outage::begin()?;
        let revision = plane_command("etcd-compact")?;
        let back = outage.end()?;
        eprintln!("etcd compacted at revision {revision}");
        set_spf(&w.dns, &tenant_domain(&w, "acme"), "v=spf1 -all", TTL);
        create_own_domain_tenant(&w, "beta").await?;
        expected.insert("acme".to_owned(), "fallback");
        expected.insert("beta".to_owned(), "tenant");
        wait_converged(&w, "both changes acted on", &expected, back).await?;
        ensure!(
            operator.log().contains("too old resource version"),
            "no watch was expired (no 410 in the operator's log)"
        );
        tokio::time::sleep(2 * w.interval).await;
        let new = new_events(&before, &event_counts(&w).await?);
        for (object, reason) in [
            ("acme", "SenderUnaligned"),
            ("acme", "FallbackActivated"),
            ("beta", "TenantSenderActivated"),
        ] {
            let n = new.get(&(object.to_owned(), reason.to_owned()));
            ensure!(
                n == Some(&1),
                "{object}: {n:?} {reason} Events; new Events: {new:?}"
            );
        }
        ensure_running(&mut operator)
    })
    .await;
}
