//! The built operator binary as a user runs it, against the test control plane and a loopback
//! DNS server, with a ServiceAccount bound to exactly the RBAC rules of
//! `charts/helpdesk-mail-operator/files/rbac-rules.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use helpdesk_mail_operator::api::{self, HelpdeskTenant, HelpdeskTenantSpec, Mode};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use super::cluster::{self, TestNamespace, eventually};
use super::dns::{Data, TestDns, Zone};
use super::rbac;

pub const PROVIDER_SPF: &str = "spf.provider.test";
pub const EGRESS_IP: &str = "192.0.2.10";
pub const TTL: u32 = 1;
pub const LEASE_NAME: &str = "helpdesk-mail-operator";
/// How long a scenario waits for the cluster to converge.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn include_record() -> String {
    format!("v=spf1 include:{PROVIDER_SPF} -all")
}

/// The provider's zone and a tenant domain whose SPF includes the provider.
pub fn zone(domain: &str) -> Zone {
    let mut zone = Zone::new();
    zone.negative_ttl = TTL;
    zone.add(
        PROVIDER_SPF,
        TTL,
        txt(&format!("v=spf1 ip4:{EGRESS_IP} -all")),
    );
    zone.add(domain, TTL, txt(&include_record()));
    zone.add(&format!("_dmarc.{domain}"), TTL, txt("v=DMARC1; p=reject"));
    // The fallback sender's domain is aligned itself (docs/design.md §5).
    zone.add(FALLBACK_DOMAIN, TTL, txt(&include_record()));
    zone
}

/// The domain of the operators' `--default-sender`.
pub const FALLBACK_DOMAIN: &str = "provider.test";

pub fn txt(text: &str) -> Data {
    Data::Txt(vec![text.as_bytes().to_vec()])
}

/// The provider's SMTP host of the egress tests.
pub const SMTP_HOST: &str = "smtp.provider.test";

/// Points [`SMTP_HOST`] at one address, replacing what it had.
pub fn set_smtp_host(dns: &TestDns, ip: &str) {
    let ip = ip.parse().expect("an IPv4 address");
    dns.update(move |zone| {
        zone.remove(SMTP_HOST, hickory_proto::rr::RecordType::A);
        zone.add(SMTP_HOST, TTL, Data::A(ip));
    });
}

pub fn set_spf(dns: &TestDns, domain: &str, text: &str, ttl: u32) {
    let (domain, text) = (domain.to_owned(), text.to_owned());
    dns.update(move |zone| {
        zone.remove(&domain, hickory_proto::rr::RecordType::TXT);
        zone.add(&domain, ttl, txt(&text));
    });
}

/// The operator's RBAC, tenants and Leases alike, as one namespaced Role.
fn operator_rules(leases: &[&str]) -> Vec<PolicyRule> {
    let mut rules = rbac::operator_rules(LEASE_NAME).tenants;
    for lease in leases {
        rules.extend(rbac::operator_rules(lease).lease);
    }
    rules
}

/// A kubeconfig for a ServiceAccount of the namespace bound to [`operator_rules`].
async fn operator_kubeconfig(
    ns: &TestNamespace,
    dir: &Path,
    leases: &[&str],
) -> anyhow::Result<PathBuf> {
    let name = "helpdesk-mail-operator";
    let meta = || ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    let pp = PostParams::default();
    ns.api::<ServiceAccount>()
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(),
                ..Default::default()
            },
        )
        .await?;
    ns.api::<Role>()
        .create(
            &pp,
            &Role {
                metadata: meta(),
                rules: Some(operator_rules(leases)),
            },
        )
        .await?;
    ns.api::<RoleBinding>()
        .create(
            &pp,
            &RoleBinding {
                metadata: meta(),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "Role".to_owned(),
                    name: name.to_owned(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".to_owned(),
                    name: name.to_owned(),
                    namespace: Some(ns.name().to_owned()),
                    ..Subject::default()
                }]),
            },
        )
        .await?;
    let token = cluster::service_account_token(&ns.api(), name).await?;
    let path = dir.join("operator.kubeconfig");
    cluster::token_kubeconfig(&path, &token, Some(ns.name()))?;
    Ok(path)
}

/// A running operator process; killed when dropped.
pub struct Operator {
    child: Child,
    log: PathBuf,
    pub metrics_port: u16,
}

impl Operator {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric's value from `/metrics` (summed over label sets), 0 when absent.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = http_get(self.metrics_port, "/metrics").await?.1;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Status patches plus ConfigMap applies this process has sent.
    pub async fn writes(&self) -> anyhow::Result<f64> {
        Ok(self.metric("helpdesk_status_writes_total").await?
            + self.metric("helpdesk_configmap_writes_total").await?)
    }

    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()?;
        ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// How the process ended, or `None` while it runs.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            ensure!(
                Instant::now() < deadline,
                "the operator did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // A stopped process must run again to die of SIGKILL's cleanup in every kernel.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A bare HTTP/1.0 GET on loopback: (status code, body).
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP response"))?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((code, body))
}

/// One scenario's world: namespace, DNS server, operator credentials, check interval.
pub struct World {
    pub ns: TestNamespace,
    pub dns: TestDns,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub domain: String,
    pub interval: Duration,
    _logs: tempfile::TempDir,
}

impl World {
    pub async fn new(prefix: &str, interval: Duration) -> anyhow::Result<Self> {
        Self::with_leases(prefix, interval, &[LEASE_NAME]).await
    }

    /// A world whose operator credentials may hold each of these Leases.
    pub async fn with_leases(
        prefix: &str,
        interval: Duration,
        leases: &[&str],
    ) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir()?;
        let dir = logs.path().to_owned();
        let client = cluster::client().await?;
        cluster::apply_crd(&client, &api::crd()).await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let domain = format!("{prefix}.test");
        let dns = TestDns::start(zone(&domain)).await?;
        let kubeconfig = operator_kubeconfig(&ns, &dir, leases).await?;
        Ok(Self {
            ns,
            dns,
            dir,
            kubeconfig,
            domain,
            interval,
            _logs: logs,
        })
    }

    /// Starts an operator process watching this world's namespace.
    pub fn operator(&self, name: &str, extra: &[&str]) -> anyhow::Result<Operator> {
        let metrics_port = free_port()?;
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
            .arg("run")
            .args(["--provider-spf-domain", PROVIDER_SPF])
            .args(["--provider-egress-ip", EGRESS_IP])
            .args(["--default-sender", "notify+{tenant}@provider.test"])
            .args(["--nameserver", &self.dns.addr().to_string()])
            .args(["--dns-timeout-ms", "300"])
            .args([
                "--check-interval",
                &format!("{}s", self.interval.as_secs().max(1)),
            ])
            .args(["--watch-namespace", self.ns.name()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,helpdesk_mail_operator=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting the operator binary")?;
        Ok(Operator {
            child,
            log,
            metrics_port,
        })
    }

    /// The arguments of a leader-elected replica.
    pub fn lease_args(&self, identity: &str, seconds: u64) -> Vec<String> {
        vec![
            "--leader-election".into(),
            "--lease-namespace".into(),
            self.ns.name().to_owned(),
            "--lease-duration-seconds".into(),
            seconds.to_string(),
            "--lease-identity".into(),
            identity.to_owned(),
        ]
    }

    pub fn address(&self) -> String {
        format!("support@{}", self.domain)
    }

    pub fn tenants(&self) -> Api<HelpdeskTenant> {
        self.ns.api()
    }

    pub fn config_maps(&self) -> Api<ConfigMap> {
        self.ns.api()
    }

    pub async fn create_tenant(&self, name: &str, mode: Mode) -> anyhow::Result<HelpdeskTenant> {
        let spec = HelpdeskTenantSpec {
            mode,
            ..HelpdeskTenantSpec::with_senders([self.address().as_str()])
        };
        let tenant = HelpdeskTenant::new(name, spec);
        Ok(self
            .tenants()
            .create(&PostParams::default(), &tenant)
            .await?)
    }

    pub async fn config_map_data(&self, name: &str) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(self
            .config_maps()
            .get_opt(name)
            .await?
            .and_then(|cm| cm.data)
            .unwrap_or_default())
    }

    pub async fn wait_config_map(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        eventually(what, timeout, || async {
            Ok(Some(self.config_map_data(name).await?).filter(|d| pred(d)))
        })
        .await
    }

    pub async fn wait_tenant(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&HelpdeskTenant) -> bool,
    ) -> anyhow::Result<HelpdeskTenant> {
        let api = self.tenants();
        eventually(what, WAIT, || async {
            Ok(api.get_opt(name).await?.filter(|t| pred(t)))
        })
        .await
    }

    /// The reasons of every Event of the namespace.
    pub async fn event_reasons(&self) -> anyhow::Result<Vec<String>> {
        let events = self.ns.api::<Event>().list(&ListParams::default()).await?;
        Ok(events.items.into_iter().filter_map(|e| e.reason).collect())
    }

    pub async fn wait_event(&self, reason: &str) -> anyhow::Result<()> {
        eventually(&format!("a {reason} Event"), WAIT, || async {
            Ok(self
                .event_reasons()
                .await?
                .iter()
                .any(|r| r == reason)
                .then_some(()))
        })
        .await
    }

    /// Every Event of the namespace, each counted as often as its series says it happened.
    pub async fn events(&self) -> anyhow::Result<Vec<(Event, u32)>> {
        let events = self.ns.api::<Event>().list(&ListParams::default()).await?;
        Ok(events
            .items
            .into_iter()
            .map(|e| {
                let n = e
                    .series
                    .as_ref()
                    .map(|s| s.count.max(1) as u32)
                    .unwrap_or(1);
                (e, n)
            })
            .collect())
    }

    /// How often an Event with `reason` happened, per object name.
    pub async fn event_counts(&self, reason: &str) -> anyhow::Result<BTreeMap<String, u32>> {
        let mut counts = BTreeMap::new();
        for (event, n) in self.events().await? {
            if event.reason.as_deref() == Some(reason) {
                let object = event.regarding.and_then(|r| r.name).unwrap_or_default();
                *counts.entry(object).or_insert(0) += n;
            }
        }
        Ok(counts)
    }

    /// Prints the operators' logs (the last lines of each) to the test output.
    pub fn dump_logs(&self) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("--- {} (last lines)", entry.path().display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

pub fn mode_is(data: &BTreeMap<String, String>, mode: &str) -> bool {
    data.get("sender-mode").map(String::as_str) == Some(mode)
}

/// Runs a scenario in a world of its own and prints the operator logs when it fails.
pub async fn scenario<F, Fut>(prefix: &str, interval: Duration, body: F)
where
    F: FnOnce(std::sync::Arc<World>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let world = std::sync::Arc::new(
        World::new(prefix, interval)
            .await
            .expect("the scenario's world starts"),
    );
    let result = body(world.clone()).await;
    if let Err(error) = result {
        world.dump_logs();
        panic!("{prefix}: {error:#}");
    }
}
