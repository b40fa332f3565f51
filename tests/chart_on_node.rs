//! The Helm chart's Deployment really runs on the test cluster's node: the operator's image
//! built here (`scripts/build-image`), confined as the chart says (checked in the kernel's own
//! view of the process), reconciling tenants against a DNS server on the bridge, serving
//! `/metrics` through its Service's ClusterIP, electing one leader of two replicas and handing
//! over when the leader's Pod is deleted, rolling on `helm upgrade`, and leaving the CRD and
//! the tenants behind on `helm uninstall`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, ensure};
use helpdesk_mail_operator::api::{HelpdeskTenant, crd};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use support::chart::helm;
use support::cluster::{self, TestNamespace};
use support::dns::{TestDns, Zone};
use support::node::{self, Image};

const CHART: &str = "charts/helpdesk-mail-operator";
const CRD_NAME: &str = "helpdesktenants.mail.helpdesk.io";
/// The chart's default provider (values.yaml), served by the test's DNS server.
const PROVIDER_INCLUDE: &str = "spf.mailing.provider.example";
/// Pod start, image already on the node: well under this.
const WAIT: Duration = Duration::from_secs(120);
/// The operator's Lease timings (client-go's): a holder that goes away is replaced within the
/// lease duration plus one retry period.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// A namespace whose API server enforces Pod Security `restricted`.
async fn restricted_namespace(
    client: &kube::Client,
    prefix: &str,
) -> anyhow::Result<TestNamespace> {
    let ns = TestNamespace::create(client, prefix).await?;
    ns.wait_default_service_account().await?;
    let labels = serde_json::json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    } } });
    Api::<Namespace>::all(client.clone())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .context("labelling the namespace for Pod Security")?;
    Ok(ns)
}

/// The chart's default provider include and egress addresses; one aligned and one unaligned
/// tenant domain.
fn zone() -> Zone {
    Zone::new()
        .txt(
            PROVIDER_INCLUDE,
            "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all",
        )
        .txt(
            "aligned.test",
            &format!("v=spf1 include:{PROVIDER_INCLUDE} -all"),
        )
        .txt("_dmarc.aligned.test", "v=DMARC1; p=reject")
        .txt(
            "late.test",
            &format!("v=spf1 include:{PROVIDER_INCLUDE} -all"),
        )
        .txt("_dmarc.late.test", "v=DMARC1; p=reject")
        .txt("unaligned.test", "v=spf1 ip4:198.51.100.1 -all")
        .txt("_dmarc.unaligned.test", "v=DMARC1; p=reject")
}

/// A DNS server on the bridge's host address, where the operator's Pod reaches it.
async fn dns_on_bridge(client: &kube::Client) -> anyhow::Result<TestDns> {
    let host = node::host_ip(client).await?;
    TestDns::start_on(SocketAddr::new(host, 0), zone())
        .await
        .with_context(|| format!("starting a DNS server on {host}"))
}

fn tenant(name: &str, address: &str) -> anyhow::Result<HelpdeskTenant> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "mail.helpdesk.io/v1alpha1",
        "kind": "HelpdeskTenant",
        "metadata": { "name": name },
        "spec": { "senders": [ { "address": address } ] }
    }))?)
}

async fn sender_mode(api: &Api<ConfigMap>, name: &str) -> anyhow::Result<Option<String>> {
    Ok(api
        .get_opt(&format!("{name}-mail-settings"))
        .await?
        .and_then(|cm| cm.data)
        .and_then(|data: BTreeMap<String, String>| data.get("sender-mode").cloned()))
}

async fn wait_sender_mode(ns: &TestNamespace, name: &str, mode: &str) -> anyhow::Result<()> {
    let configmaps: Api<ConfigMap> = ns.api();
    cluster::eventually(&format!("{name} with sender-mode {mode}"), WAIT, || async {
        Ok((sender_mode(&configmaps, name).await?.as_deref() == Some(mode)).then_some(()))
    })
    .await
}

fn available(deployment: &Deployment, replicas: i32) -> bool {
    let status = deployment.status.as_ref();
    let condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Available"))
        .is_some_and(|c| c.status == "True");
    condition
        && status.and_then(|s| s.ready_replicas) == Some(replicas)
        && status.and_then(|s| s.updated_replicas) == Some(replicas)
        && status.and_then(|s| s.replicas) == Some(replicas)
}

/// Waits until the Deployment is Available with `replicas` ready Pods of its latest template,
/// and returns those Pods.
async fn wait_available(ns: &TestNamespace, name: &str, replicas: i32) -> anyhow::Result<Vec<Pod>> {
    let deployments: Api<Deployment> = ns.api();
    let pods: Api<Pod> = ns.api();
    cluster::eventually(&format!("Deployment {name} Available"), WAIT, || async {
        let Some(deployment) = deployments.get_opt(name).await? else {
            return Ok(None);
        };
        if !available(&deployment, replicas) {
            return Ok(None);
        }
        let selector = deployment
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .ok_or_else(|| anyhow!("the Deployment has no selector"))?;
        let listed = pods.list(&ListParams::default().labels(&selector)).await?;
        let running: Vec<Pod> = listed
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(pod_ready)
            .collect();
        Ok((running.len() == replicas as usize).then_some(running))
    })
    .await
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn container_id(pod: &Pod) -> anyhow::Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "operator"))
        .and_then(|c| c.container_id.clone())
        .ok_or_else(|| anyhow!("pod {} has no operator container id", pod_name(pod)))
}

fn env_value(pod: &Pod, name: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "operator")?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// `/metrics` through the metrics Service's ClusterIP: kube-proxy's rules on this machine take
/// the connection to a ready Pod.
async fn scrape_service(ns: &TestNamespace, service: &str) -> anyhow::Result<String> {
    let svc = ns.api::<Service>().get(service).await?;
    let spec = svc.spec.ok_or_else(|| anyhow!("{service} has no spec"))?;
    let ip = spec
        .cluster_ip
        .filter(|ip| ip != "None")
        .ok_or_else(|| anyhow!("{service} has no ClusterIP"))?;
    let port = spec
        .ports
        .and_then(|p| p.first().map(|p| p.port))
        .ok_or_else(|| anyhow!("{service} has no port"))?;
    let addr = SocketAddr::new(ip.parse()?, u16::try_from(port)?);
    let (code, body) = node::http_get(addr, "/metrics").await?;
    ensure!(code == 200, "GET http://{addr}/metrics: {code}");
    Ok(body)
}

/// `/metrics` of one Pod, straight at its address on the bridge.
async fn scrape_pod(pod: &Pod) -> anyhow::Result<String> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| anyhow!("pod {} has no IP", pod_name(pod)))?;
    let addr = SocketAddr::new(ip.parse()?, 8080);
    let (code, body) = node::http_get(addr, "/metrics").await?;
    ensure!(code == 200, "GET http://{addr}/metrics: {code}");
    Ok(body)
}

/// Lets helm adopt the shared CRD (it exists already when other tests ran first), so that this
/// release installs it with the default `crds.enabled=true` and `helm uninstall` really meets
/// the `keep` policy.
async fn crd_for_release(
    client: &kube::Client,
    release: &str,
    namespace: &str,
) -> anyhow::Result<()> {
    cluster::apply_crd(client, &crd()).await?;
    let adopt = serde_json::json!({ "metadata": {
        "labels": { "app.kubernetes.io/managed-by": "Helm" },
        "annotations": {
            "meta.helm.sh/release-name": release,
            "meta.helm.sh/release-namespace": namespace,
        },
    } });
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(CRD_NAME, &PatchParams::default(), &Patch::Merge(&adopt))
        .await
        .context("handing the CRD to the release")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_with_default_values_runs_confined_reconciles_upgrades_and_uninstalls()
-> anyhow::Result<()> {
    let client = cluster::client().await?;
    let image: Image = tokio::task::spawn_blocking(node::operator_image).await??;
    let ns = restricted_namespace(&client, "node-chart").await?;
    let release = ns.name().to_owned();
    let fullname = format!("{release}-helpdesk-mail-operator");
    crd_for_release(&client, &release, ns.name()).await?;
    let dns = dns_on_bridge(&client).await?;
    let scratch = tempfile::tempdir()?;

    // Default values, but for the image built here and a resolver the Pod can reach.
    let mut install = strings(&["install", &release, CHART, "--namespace", ns.name()]);
    install.extend(image.helm_sets());
    install.extend([
        "--set".into(),
        format!("dns.nameservers={{{}}}", dns.addr()),
    ]);
    let started = Instant::now();
    let installed = helm(scratch.path(), &install)?;
    ensure!(
        installed.contains("STATUS: deployed"),
        "helm install: {installed}"
    );
    let pods = wait_available(&ns, &fullname, 1).await?;
    eprintln!(
        "measured: helm install to an Available Deployment in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pod = &pods[0];

    // What the Pod runs as, in the kernel's view, not only in its spec.
    let facts = node::container_process(&container_id(pod)?)?;
    ensure!(facts.uids == [65532; 4], "uids {:?}", facts.uids);
    ensure!(facts.gids == [65532; 4], "gids {:?}", facts.gids);
    ensure!(
        facts.cap_eff == 0 && facts.cap_prm == 0 && facts.cap_bnd == 0,
        "capabilities left: {facts:?}"
    );
    ensure!(facts.no_new_privs, "no_new_privs is off: {facts:?}");
    ensure!(facts.seccomp_mode == 2, "no seccomp filter: {facts:?}");
    ensure!(
        facts.root_mount_options.iter().any(|o| o == "ro"),
        "the root file system is writable: {facts:?}"
    );
    let spec = pod.spec.as_ref().ok_or_else(|| anyhow!("no pod spec"))?;
    let seccomp = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.clone());
    ensure!(
        seccomp.as_deref() == Some("RuntimeDefault"),
        "seccomp {seccomp:?}"
    );
    let image_id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.image.clone());
    ensure!(
        image_id.as_deref() == Some(image.reference.as_str()),
        "the Pod runs {image_id:?}, not {}",
        image.reference
    );

    // The operator in the Pod reconciles against the DNS server on the bridge.
    let tenants: Api<HelpdeskTenant> = ns.api();
    tenants
        .create(
            &PostParams::default(),
            &tenant("aligned", "support@aligned.test")?,
        )
        .await?;
    tenants
        .create(
            &PostParams::default(),
            &tenant("unaligned", "help@unaligned.test")?,
        )
        .await?;
    wait_sender_mode(&ns, "aligned", "tenant").await?;
    wait_sender_mode(&ns, "unaligned", "fallback").await?;
    cluster::eventually("unaligned's SpfAligned condition", WAIT, || async {
        let t = tenants.get("unaligned").await?;
        let reason = t
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SpfAligned"))
            .map(|c| (c.status.clone(), c.reason.clone()));
        Ok((reason == Some(("False".into(), "ProviderNotAuthorized".into()))).then_some(()))
    })
    .await?;
    ensure!(
        dns.queries() > 0,
        "the operator never asked the test's DNS server"
    );

    // /metrics through the metrics Service's ClusterIP.
    let service = format!("{fullname}-metrics");
    let metrics = cluster::eventually("metrics through the ClusterIP", WAIT, || async {
        let body = scrape_service(&ns, &service).await?;
        let checks = node::metric_sum(&body, "helpdesk_checks_total").unwrap_or(0.0);
        Ok((checks >= 2.0).then_some(body))
    })
    .await?;
    ensure!(
        node::metric_sum(&metrics, "helpdesk_leader") == Some(1.0),
        "the only replica is not reconciling: {metrics}"
    );

    // helm upgrade with a new checkInterval rolls the Pod, and the new Pod checks at that pace:
    // with the default 15m, two tenants are checked twice in the first interval; with 3s they
    // are checked again and again.
    let old_pod = pod_name(pod);
    let mut upgrade = strings(&[
        "upgrade",
        &release,
        CHART,
        "--namespace",
        ns.name(),
        "--reuse-values",
        "--set",
        "checkInterval=3s",
    ]);
    upgrade.extend(image.helm_sets());
    helm(scratch.path(), &upgrade)?;
    let rolled = cluster::eventually("the upgraded Pod", WAIT, || async {
        let pods = wait_available(&ns, &fullname, 1).await?;
        Ok(pods.into_iter().find(|p| {
            pod_name(p) != old_pod && env_value(p, "HDMO_CHECK_INTERVAL").as_deref() == Some("3s")
        }))
    })
    .await?;
    let old_gone = ns.api::<Pod>().get_opt(&old_pod).await?.is_none();
    ensure!(old_gone, "the old Pod {old_pod} is still there");
    cluster::eventually("checks every 3s in the new Pod", WAIT, || async {
        let body = scrape_pod(&rolled).await?;
        Ok((node::metric_sum(&body, "helpdesk_checks_total").unwrap_or(0.0) >= 8.0).then_some(()))
    })
    .await?;

    // helm uninstall leaves the CRD (helm.sh/resource-policy: keep) and every tenant.
    helm(
        scratch.path(),
        &strings(&["uninstall", &release, "--namespace", ns.name(), "--wait"]),
    )?;
    let deployments: Api<Deployment> = ns.api();
    ensure!(
        deployments.get_opt(&fullname).await?.is_none(),
        "the Deployment outlived helm uninstall"
    );
    let crd_left = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(CRD_NAME)
        .await?;
    ensure!(
        crd_left.is_some_and(|c| c.metadata.deletion_timestamp.is_none()),
        "helm uninstall deleted the CRD"
    );
    let left: Vec<String> = tenants
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    ensure!(
        left == ["aligned", "unaligned"],
        "tenants after helm uninstall: {left:?}"
    );
    ns.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_hand_over_when_its_pod_is_deleted() -> anyhow::Result<()>
{
    let client = cluster::client().await?;
    let image: Image = tokio::task::spawn_blocking(node::operator_image).await??;
    // The CRD is shared by every test of the plane: this release leaves it out.
    cluster::apply_crd(&client, &crd()).await?;
    let ns = restricted_namespace(&client, "node-ha").await?;
    let release = ns.name().to_owned();
    let fullname = format!("{release}-helpdesk-mail-operator");
    let dns = dns_on_bridge(&client).await?;
    let scratch = tempfile::tempdir()?;

    let mut install = strings(&[
        "install",
        &release,
        CHART,
        "--namespace",
        ns.name(),
        "--set",
        "crds.enabled=false",
        "--set",
        "replicaCount=2",
    ]);
    install.extend(image.helm_sets());
    install.extend([
        "--set".into(),
        format!("dns.nameservers={{{}}}", dns.addr()),
    ]);
    helm(scratch.path(), &install)?;
    let pods = wait_available(&ns, &fullname, 2).await?;
    let names: Vec<String> = pods.iter().map(pod_name).collect();

    // One leader: the Lease names one of the two Pods, and only that one reports leading.
    let leases: Api<Lease> = ns.api();
    // The chart names the Lease after the release's full name.
    let leader =
        cluster::eventually("a Lease holder", WAIT, || lease_holder(&leases, &fullname)).await?;
    ensure!(
        names.contains(&leader),
        "the Lease holder {leader} is none of {names:?}"
    );
    let tenants: Api<HelpdeskTenant> = ns.api();
    tenants
        .create(
            &PostParams::default(),
            &tenant("aligned", "support@aligned.test")?,
        )
        .await?;
    tenants
        .create(
            &PostParams::default(),
            &tenant("unaligned", "help@unaligned.test")?,
        )
        .await?;
    wait_sender_mode(&ns, "aligned", "tenant").await?;
    wait_sender_mode(&ns, "unaligned", "fallback").await?;
    let mut leading = BTreeMap::new();
    for pod in &pods {
        let body = scrape_pod(pod).await?;
        leading.insert(pod_name(pod), node::metric_sum(&body, "helpdesk_leader"));
    }
    let expected: BTreeMap<String, Option<f64>> = names
        .iter()
        .map(|n| (n.clone(), Some(if *n == leader { 1.0 } else { 0.0 })))
        .collect();
    ensure!(leading == expected, "helpdesk_leader per Pod: {leading:?}");

    // Deleting the leader's Pod: another Pod holds the Lease within lease duration + retry
    // period (the standby, or the Deployment's replacement Pod if it starts first).
    // The hand-over's instant is the new holder's acquireTime (same machine, same clock), so
    // the time this test takes to notice does not count.
    let deleted = SystemTime::now();
    ns.api::<Pod>()
        .delete(&leader, &DeleteParams::default())
        .await
        .context("deleting the leader's Pod")?;
    let budget = LEASE_DURATION + RETRY_PERIOD;
    let (new_leader, acquired) = cluster::eventually("a new Lease holder", WAIT, || async {
        let spec = leases.get_opt(&fullname).await?.and_then(|l| l.spec);
        Ok(spec.and_then(|s| {
            let holder = s
                .holder_identity
                .filter(|h| !h.is_empty() && *h != leader)?;
            let acquired = s.acquire_time.map(|t| t.0.as_millisecond());
            Some((holder, acquired))
        }))
    })
    .await?;
    let acquired = acquired.ok_or_else(|| anyhow!("the new Lease has no acquireTime"))?;
    let deleted_ms = i64::try_from(deleted.duration_since(UNIX_EPOCH)?.as_millis())?;
    let handover = Duration::from_millis(u64::try_from(acquired - deleted_ms).unwrap_or(0));
    eprintln!(
        "measured: leader hand-over {:.1} s after deleting its Pod",
        handover.as_secs_f64()
    );
    ensure!(
        handover <= budget,
        "hand-over took {handover:?}, over {budget:?}"
    );
    // Still one leader, and it is the Lease holder.
    let pods = wait_available(&ns, &fullname, 2).await?;
    let mut leading = BTreeMap::new();
    for pod in &pods {
        let body = scrape_pod(pod).await?;
        leading.insert(pod_name(pod), node::metric_sum(&body, "helpdesk_leader"));
    }
    let expected: BTreeMap<String, Option<f64>> = pods
        .iter()
        .map(pod_name)
        .map(|n| {
            let value = if n == new_leader { 1.0 } else { 0.0 };
            (n, Some(value))
        })
        .collect();
    ensure!(
        leading == expected,
        "after the hand-over to {new_leader}, helpdesk_leader per Pod: {leading:?}"
    );

    // Reconciling goes on under the new leader: a tenant created now gets its verdict.
    tenants
        .create(
            &PostParams::default(),
            &tenant("late", "support@late.test")?,
        )
        .await?;
    wait_sender_mode(&ns, "late", "tenant").await?;
    ns.cleanup().await
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> anyhow::Result<Option<String>> {
    Ok(leases
        .get_opt(name)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}
