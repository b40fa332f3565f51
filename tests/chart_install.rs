//! The chart in the real control plane: `helpdesk-mail-operator` installs with Helm, and the
//! operator binary, run with nothing but a TokenRequest token of the chart's ServiceAccount,
//! reconciles tenants end to end (the chart's RBAC is enough) and is refused Secrets (it is not
//! too much).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use helpdesk_mail_operator::api::{HelpdeskTenant, crd};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use support::chart::helm;
use support::cluster::{self, TestNamespace};
use support::dns::{TestDns, Zone};

const CHART: &str = "charts/helpdesk-mail-operator";
const PROVIDER_INCLUDE: &str = "spf.mailing.provider.test";
const EGRESS_V4: &str = "192.0.2.25";
const EGRESS_V6: &str = "2001:db8::25";
const WAIT: Duration = Duration::from_secs(90);

/// The operator process; killed and reaped when dropped, its log kept for failure messages.
struct Operator {
    child: Mutex<Child>,
    log: PathBuf,
}

impl Operator {
    /// Fails once the process has exited, so waits end early with its log.
    fn ensure_running(&self) -> anyhow::Result<()> {
        let mut child = self
            .child
            .lock()
            .map_err(|_| anyhow!("operator lock poisoned"))?;
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("the operator exited with {status}"),
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn tenant(name: &str, label: (&str, &str), address: &str) -> anyhow::Result<HelpdeskTenant> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "mail.helpdesk.io/v1alpha1",
        "kind": "HelpdeskTenant",
        "metadata": { "name": name, "labels": { label.0: label.1 } },
        "spec": { "checkInterval": "2s", "senders": [ { "address": address } ] }
    }))?)
}

async fn sender_mode(api: &Api<ConfigMap>, name: &str) -> anyhow::Result<Option<String>> {
    Ok(api
        .get_opt(&format!("{name}-mail-settings"))
        .await?
        .and_then(|cm| cm.data)
        .and_then(|data: BTreeMap<String, String>| data.get("sender-mode").cloned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_and_its_service_account_runs_the_operator() -> anyhow::Result<()> {
    install_and_run(Scope::Cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_with_watch_namespace_grants_one_namespace_only() -> anyhow::Result<()> {
    install_and_run(Scope::Namespace).await
}

/// RBAC the chart creates: a ClusterRole (the default) or, with `watchNamespace`, a Role.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Cluster,
    Namespace,
}

async fn install_and_run(scope: Scope) -> anyhow::Result<()> {
    let client = cluster::client().await?;
    // The CRD is shared by every test of the plane, so this release leaves it out
    // (crds.enabled=false); tests/chart.rs proves the chart's CRD is this one.
    cluster::apply_crd(&client, &crd()).await?;
    let ns = TestNamespace::create(&client, "chart").await?;
    ns.wait_default_service_account().await?;
    // The API server's Pod Security admission enforces `restricted` in this namespace.
    let labels = serde_json::json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    } } });
    Api::<Namespace>::all(client.clone())
        .patch(ns.name(), &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .context("labelling the namespace for Pod Security")?;
    let release = ns.name().to_owned();
    let fullname = format!("{release}-helpdesk-mail-operator");
    let shard = format!("shard={release}");
    let scratch = tempfile::tempdir()?;

    // Install: leader election on, the shard's selector, and the RBAC scope under test.
    let selector_set = format!("selector={shard}");
    let watch_set = format!("watchNamespace={}", ns.name());
    let mut install = vec![
        "install",
        &release,
        CHART,
        "--namespace",
        ns.name(),
        "--set",
        "crds.enabled=false",
        // The operator runs here with the ServiceAccount's token; the cluster's node runs no
        // Pod of this release (tests/chart_on_node.rs runs the chart's Pods).
        "--set",
        "replicaCount=0",
        "--set",
        "leaderElection.enabled=true",
        "--set",
        &selector_set,
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "podDisruptionBudget.enabled=true",
    ];
    if scope == Scope::Namespace {
        install.extend(["--set", &watch_set]);
    }
    let installed = helm(scratch.path(), &install)?;
    ensure!(
        installed.contains("STATUS: deployed"),
        "helm install: {installed}"
    );
    let status = helm(
        scratch.path(),
        &["status", &release, "--namespace", ns.name()],
    )?;
    ensure!(status.contains("STATUS: deployed"), "helm status: {status}");

    // Pod Security `restricted`, judged by the API server: a Pod from the Deployment's own
    // template is admitted in the enforcing namespace (dry run: no kubelet here).
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns.name())
        .get(&fullname)
        .await?;
    let template = deployment
        .spec
        .map(|s| s.template)
        .ok_or_else(|| anyhow!("the Deployment has no spec"))?;
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{fullname}-pss")),
            labels: template.metadata.and_then(|m| m.labels),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        ..Pod::default()
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns.name())
        .create(&dry_run, &pod)
        .await
        .context("Pod Security `restricted` admits the operator's pod")?;

    // A token of the chart's ServiceAccount, and nothing else.
    let token = cluster::service_account_token(&ns.api(), &fullname).await?;
    let kubeconfig = scratch.path().join("operator.kubeconfig");
    cluster::token_kubeconfig(&kubeconfig, &token, None)?;

    // Not too much: Secrets are refused, here and in every other namespace.
    let as_operator = cluster::client_with_token(&token).await?;
    for namespace in [ns.name(), "kube-system", "default"] {
        let secrets: Api<Secret> = Api::namespaced(as_operator.clone(), namespace);
        match secrets.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            other => {
                anyhow::bail!("listing Secrets in {namespace} must be forbidden, got {other:?}")
            }
        }
    }
    let all_secrets: Api<Secret> = Api::all(as_operator.clone());
    match all_secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => anyhow::bail!("listing Secrets cluster-wide must be forbidden, got {other:?}"),
    }
    // With watchNamespace, tenants elsewhere are out of reach too.
    let everywhere: Api<HelpdeskTenant> = Api::all(as_operator.clone());
    let listed = everywhere.list(&ListParams::default()).await;
    match (scope, listed) {
        (Scope::Cluster, Ok(_)) => {}
        (Scope::Namespace, Err(kube::Error::Api(status))) if status.code == 403 => {}
        (_, other) => anyhow::bail!("listing tenants in all namespaces: unexpected {other:?}"),
    }

    // DNS: one tenant aligned, one missing the provider include.
    let zone = Zone::new()
        .txt(
            PROVIDER_INCLUDE,
            &format!("v=spf1 ip4:{EGRESS_V4} ip6:{EGRESS_V6} -all"),
        )
        .txt(
            "aligned.test",
            &format!("v=spf1 include:{PROVIDER_INCLUDE} -all"),
        )
        .txt("_dmarc.aligned.test", "v=DMARC1; p=reject")
        .txt("unaligned.test", "v=spf1 ip4:198.51.100.1 -all")
        .txt("_dmarc.unaligned.test", "v=DMARC1; p=reject")
        // The fallback sender's domain is aligned itself (docs/design.md §5).
        .txt(
            "mailing.provider.test",
            &format!("v=spf1 include:{PROVIDER_INCLUDE} -all"),
        );
    let dns = TestDns::start(zone).await?;

    let tenants: Api<HelpdeskTenant> = ns.api();
    let (key, value) = shard.split_once('=').ok_or_else(|| anyhow!("bad shard"))?;
    tenants
        .create(
            &PostParams::default(),
            &tenant("aligned", (key, value), "support@aligned.test")?,
        )
        .await?;
    tenants
        .create(
            &PostParams::default(),
            &tenant("unaligned", (key, value), "help@unaligned.test")?,
        )
        .await?;

    // The operator, as the chart would run it, with the token kubeconfig.
    let log = scratch.path().join("operator.log");
    let log_file = std::fs::File::create(&log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
        .args([
            "run",
            &format!("--provider-spf-domain={PROVIDER_INCLUDE}"),
            &format!("--provider-egress-ip={EGRESS_V4}"),
            &format!("--provider-egress-ip={EGRESS_V6}"),
            "--default-sender=notifications+{tenant}@mailing.provider.test",
            &format!("--nameserver={}", dns.addr()),
            "--dns-timeout-ms=500",
            "--check-interval=2s",
            &format!("--selector={shard}"),
            "--metrics-addr=127.0.0.1:0",
            "--leader-election",
            &format!("--lease-namespace={}", ns.name()),
            &format!("--lease-name={fullname}"),
        ])
        .args(match scope {
            Scope::Namespace => vec![format!("--watch-namespace={}", ns.name())],
            Scope::Cluster => Vec::new(),
        })
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("starting the operator")?;
    let operator = Operator {
        child: Mutex::new(child),
        log,
    };

    let configmaps: Api<ConfigMap> = ns.api();
    let checks = async {
        cluster::eventually("the aligned tenant sends as itself", WAIT, || async {
            Ok(
                (sender_mode(&configmaps, "aligned").await?.as_deref() == Some("tenant"))
                    .then_some(()),
            )
        })
        .await?;
        cluster::eventually("the unaligned tenant falls back", WAIT, || async {
            Ok(
                (sender_mode(&configmaps, "unaligned").await?.as_deref() == Some("fallback"))
                    .then_some(()),
            )
        })
        .await?;
        // Status written through the status subresource.
        cluster::eventually("status conditions", WAIT, || async {
            let t = tenants.get("unaligned").await?;
            let aligned = t
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SpfAligned"))
                .map(|c| c.status.clone());
            Ok((aligned.as_deref() == Some("False")).then_some(()))
        })
        .await?;
        // The Lease it holds, in the release namespace.
        let leases: Api<Lease> = ns.api();
        cluster::eventually("the operator's Lease", WAIT, || async {
            Ok(leases
                .get_opt(&fullname)
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity))
        })
        .await?;
        anyhow::Ok(())
    };
    // Stop waiting as soon as the operator exits.
    let exited = async {
        while operator.ensure_running().is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let outcome = tokio::select! {
        result = checks => result,
        () = exited => Err(anyhow!("the operator exited before reconciling")),
    };
    let still_running = operator.ensure_running().is_ok();
    if let Err(error) = outcome {
        return Err(error.context(format!("operator log:\n{}", operator.log_tail())));
    }
    ensure!(
        still_running,
        "the operator exited:\n{}",
        operator.log_tail()
    );
    let log = std::fs::read_to_string(&operator.log)?;
    ensure!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the operator met a permission error:\n{}",
        operator.log_tail()
    );
    drop(operator);

    helm(
        scratch.path(),
        &["uninstall", &release, "--namespace", ns.name()],
    )?;
    ns.cleanup().await?;
    Ok(())
}
