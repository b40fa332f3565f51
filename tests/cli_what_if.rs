//! `what-if` against the real control plane and DNS server (docs/design.md §3): it names exactly
//! the tenants a provider change breaks, and once the change is published for real the
//! operator's own verdicts agree with what it predicted.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use helpdesk_mail_operator::api::{self, HelpdeskTenant, HelpdeskTenantSpec, SenderState};
use kube::api::PostParams;
use serde_json::Value;
use support::cluster::{self, TestNamespace, eventually};
use support::dns::{Data, TestDns, Zone};

const PROVIDER_SPF: &str = "spf.provider.test";
const LIVE_EGRESS: &str = "192.0.2.10";
const NEW_EGRESS: &str = "192.0.2.20";
const WAIT: Duration = Duration::from_secs(90);

/// The provider's proposed record: two more lookups, before the new egress address.
fn proposed_record() -> String {
    format!(
        "v=spf1 include:relay1.provider.test include:relay2.provider.test ip4:{NEW_EGRESS} -all"
    )
}

fn txt(text: &str) -> Data {
    Data::Txt(vec![text.as_bytes().to_vec()])
}

/// `n` includes of domains that match nothing, each one lookup.
fn fillers(n: usize) -> String {
    (1..=n)
        .map(|i| format!("include:filler{i}.test "))
        .collect()
}

/// Tenant name -> its domain's SPF record. The proposal breaks `hardcoded` (it lists the live
/// address instead of the include) and `heavy` (9 lookups now, 11 with the proposal), fixes
/// `fixed`, brings `near` to 9 lookups and leaves `include` and `unaligned` as they are.
fn tenants() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("include", format!("v=spf1 include:{PROVIDER_SPF} -all")),
        ("hardcoded", format!("v=spf1 ip4:{LIVE_EGRESS} -all")),
        (
            "heavy",
            format!("v=spf1 {}include:{PROVIDER_SPF} -all", fillers(8)),
        ),
        (
            "near",
            format!("v=spf1 {}include:{PROVIDER_SPF} -all", fillers(6)),
        ),
        ("fixed", format!("v=spf1 ip4:{NEW_EGRESS} -all")),
        ("unaligned", "v=spf1 -all".to_owned()),
    ])
}

fn zone() -> Zone {
    let mut zone = Zone::new();
    zone.negative_ttl = 1;
    zone.add(
        PROVIDER_SPF,
        1,
        txt(&format!("v=spf1 ip4:{LIVE_EGRESS} -all")),
    );
    for relay in ["relay1.provider.test", "relay2.provider.test"] {
        zone.add(relay, 1, txt("v=spf1 ip4:198.51.100.1 -all"));
    }
    for i in 1..=8 {
        zone.add(&format!("filler{i}.test"), 1, txt("v=spf1 -all"));
    }
    for (name, record) in tenants() {
        let domain = format!("{name}.test");
        zone.add(&domain, 1, txt(&record));
        zone.add(&format!("_dmarc.{domain}"), 1, txt("v=DMARC1; p=reject"));
    }
    zone
}

/// Runs `what-if` on the namespace; (exit code, stdout).
fn what_if(ns: &str, dns: &TestDns, output: &str) -> anyhow::Result<(i32, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
        .arg("what-if")
        .args(["--provider-spf-domain", PROVIDER_SPF])
        .args(["--provider-egress-ip", LIVE_EGRESS])
        .args(["--provider-spf-record", &proposed_record()])
        .args(["--proposed-egress-ip", NEW_EGRESS])
        .args(["--namespace", ns])
        .args(["--nameserver", &dns.addr().to_string()])
        .args(["--dns-timeout-ms", "500"])
        .args(["--output", output])
        .env("KUBECONFIG", cluster::kubeconfig_env()?)
        .stdin(Stdio::null())
        .output()
        .context("running what-if")?;
    anyhow::ensure!(
        out.stderr.is_empty(),
        "what-if wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
    ))
}

/// Tenants of the report's rows with this change.
fn rows_with(report: &Value, change: &str) -> BTreeSet<String> {
    report["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["change"] == change)
        .filter_map(|r| r["tenant"].as_str().map(str::to_owned))
        .collect()
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_names_the_tenants_the_change_breaks_and_the_operator_agrees() {
    let client = cluster::client().await.expect("the test cluster");
    cluster::apply_crd(&client, &api::crd())
        .await
        .expect("the CRD");
    let ns = TestNamespace::create(&client, "what-if")
        .await
        .expect("a namespace");
    let dns = TestDns::start(zone()).await.expect("the DNS server");
    let api = ns.api::<HelpdeskTenant>();
    for name in tenants().keys() {
        let address = format!("support@{name}.test");
        let spec = HelpdeskTenantSpec::with_senders([address.as_str()]);
        api.create(&PostParams::default(), &HelpdeskTenant::new(name, spec))
            .await
            .expect("a tenant");
    }
    let mut suspended = HelpdeskTenant::new(
        "suspended",
        HelpdeskTenantSpec::with_senders(["a@hardcoded.test"]),
    );
    suspended.spec.suspend = true;
    api.create(&PostParams::default(), &suspended)
        .await
        .expect("a suspended tenant");

    let (code, stdout) = what_if(ns.name(), &dns, "json").expect("what-if runs");
    assert_eq!(code, 1, "some tenants would break: {stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(report["tenants"], 7);
    assert_eq!(report["senders"], 6, "the suspended tenant is not checked");
    assert_eq!(report["suspended"], 1);
    assert_eq!(report["tenantsBreaking"], 2);
    assert_eq!(rows_with(&report, "breaks"), set(&["hardcoded", "heavy"]));
    assert_eq!(rows_with(&report, "fixed"), set(&["fixed"]));
    assert_eq!(rows_with(&report, "nearLimit"), set(&["near"]));
    assert_eq!(report["rows"].as_array().map(Vec::len), Some(4));
    let heavy = report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["tenant"] == "heavy"))
        .expect("the heavy row");
    assert_eq!(heavy["now"]["lookups"], 9);
    assert_eq!(heavy["proposed"]["reason"], "SpfPermError");
    let near = report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["tenant"] == "near"))
        .expect("the near row");
    assert_eq!(near["proposed"]["worstCaseLookups"], 9);

    let (code, text) = what_if(ns.name(), &dns, "text").expect("what-if runs");
    assert_eq!(code, 1);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE"), "{text}");
    assert!(
        lines[1].contains("hardcoded") && lines[1].contains("breaks"),
        "breaking tenants first: {text}"
    );
    let summary = lines.last().expect("a summary line");
    assert!(
        summary.starts_with("what-if: 7 tenants (6 senders, 1 suspended tenants skipped)")
            && summary.contains("2 tenants would break"),
        "{summary}"
    );

    // Publish the change for real and let the operator judge with the new egress.
    let record = proposed_record();
    dns.update(move |zone| {
        zone.remove(PROVIDER_SPF, hickory_proto::rr::RecordType::TXT);
        zone.add(PROVIDER_SPF, 1, txt(&record));
    });
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
            .arg("run")
            .args(["--provider-spf-domain", PROVIDER_SPF])
            .args(["--provider-egress-ip", NEW_EGRESS])
            .args(["--default-sender", "notify+{tenant}@provider.test"])
            .args(["--nameserver", &dns.addr().to_string()])
            .args(["--dns-timeout-ms", "500"])
            .args(["--watch-namespace", ns.name()])
            .args(["--metrics-addr", &metrics.to_string()])
            .env("KUBECONFIG", cluster::kubeconfig_env().expect("kubeconfig"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the operator starts"),
    );
    let verdicts = eventually("a verdict for every tenant", WAIT, || async {
        let list = api.list(&Default::default()).await?;
        let mut verdicts = BTreeMap::new();
        for tenant in list.items.iter().filter(|t| !t.spec.suspend) {
            let Some(sender) = tenant.status.as_ref().and_then(|s| s.senders.first()) else {
                return Ok(None);
            };
            if sender.state == SenderState::Pending {
                return Ok(None);
            }
            verdicts.insert(
                tenant.metadata.name.clone().unwrap_or_default(),
                (sender.state, sender.reason.clone()),
            );
        }
        Ok(Some(verdicts))
    })
    .await
    .expect("the operator judges every tenant");
    let unaligned_now: BTreeSet<String> = verdicts
        .iter()
        .filter(|(_, (state, _))| *state != SenderState::Aligned)
        .map(|(name, _)| name.clone())
        .collect();
    assert_eq!(
        unaligned_now,
        set(&["hardcoded", "heavy", "unaligned"]),
        "the broken ones, and the one that was never aligned: {verdicts:?}"
    );
    for row in report["rows"].as_array().expect("rows") {
        let tenant = row["tenant"].as_str().expect("tenant");
        let (state, reason) = &verdicts[tenant];
        assert_eq!(
            serde_json::to_value(state).expect("a state"),
            row["proposed"]["state"],
            "{tenant}"
        );
        if let Some(expected) = row["proposed"]["reason"].as_str() {
            assert_eq!(reason.as_deref(), Some(expected), "{tenant}");
        }
    }
    ns.cleanup().await.expect("cleanup");
}
