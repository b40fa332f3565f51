//! End to end: the built operator binary, run as a user runs it, against the real control
//! plane and a real DNS server on loopback. Each scenario has its own namespace, its own DNS
//! server and its own operator process, which talks to the API server with a ServiceAccount
//! token bound to exactly the RBAC rules documented in `src/controller.rs`.

mod support;

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use futures::{StreamExt, TryStreamExt};
use helpdesk_mail_operator::api::{self, HelpdeskTenant, HelpdeskTenantSpec, Mode};
use helpdesk_mail_operator::decide::record_hash;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::cluster::{self, TestNamespace, eventually};
use support::dns::{Data, Fault, TestDns};
use support::operator::{
    EGRESS_IP, Operator, PROVIDER_SPF, SMTP_HOST, TTL, WAIT, http_get, include_record, mode_is,
    scenario, set_smtp_host, set_spf, txt,
};

/// The check interval of every scenario here.
const INTERVAL: Duration = Duration::from_secs(2);

fn set_fault(dns: &TestDns, domain: &str, fault: Option<Fault>) {
    let domain = domain.to_owned();
    dns.update(move |zone| {
        zone.set_fault(&domain, fault);
    });
}

fn spec(addresses: &[&str], mode: Mode) -> HelpdeskTenantSpec {
    HelpdeskTenantSpec {
        mode,
        ..HelpdeskTenantSpec::with_senders(addresses.iter().copied())
    }
}

fn condition<'a>(
    tenant: &'a HelpdeskTenant,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    tenant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
}

fn condition_is(tenant: &HelpdeskTenant, kind: &str, status: &str) -> bool {
    condition(tenant, kind).is_some_and(|c| c.status == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aligned_tenant_flips_to_fallback_and_back() {
    scenario("flip", INTERVAL, |w| async move {
        let _operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Enforce).await?;
        let address = w.address();

        // Aligned: the tenant's own address.
        w.wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| {
            mode_is(d, "tenant")
        })
        .await?;
        let cm = w.config_maps().get("acme-mail-settings").await?;
        let data = cm.data.clone().unwrap_or_default();
        assert_eq!(data["from"], address);
        assert_eq!(data["reply-to"], "");
        let owner = &cm.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("HelpdeskTenant", "acme", Some(true))
        );
        let t = w
            .wait_tenant("acme", "Ready", |t| {
                condition_is(t, "Ready", "True") && condition_is(t, "SpfAligned", "True")
            })
            .await?;
        let status = t.status.clone().unwrap_or_default();
        assert_eq!(status.aligned_senders.as_deref(), Some("1/1"));
        assert_eq!(status.observed_generation, t.metadata.generation);
        assert!(condition_is(&t, "FallbackActive", "False"));
        w.wait_event("TenantSenderActivated").await?;

        // Include removed: fallback after two definitive failures.
        let removed_at = Instant::now();
        set_spf(&w.dns, &w.domain, "v=spf1 -all", TTL);
        w.wait_config_map("acme-mail-settings", "sender-mode fallback", WAIT, |d| {
            mode_is(d, "fallback")
        })
        .await?;
        let flip = removed_at.elapsed();
        let cm = w.config_maps().get("acme-mail-settings").await?;
        let data = cm.data.unwrap_or_default();
        assert_eq!(data["from"], "notify+acme@provider.test");
        assert_eq!(data["reply-to"], address);
        let senders: serde_json::Value = serde_json::from_str(&data["senders.json"])?;
        assert_eq!(senders[&address]["mode"], "fallback");
        let t = w
            .wait_tenant("acme", "FallbackActive", |t| {
                condition_is(t, "FallbackActive", "True")
            })
            .await?;
        let aligned = condition(&t, "SpfAligned").ok_or_else(|| anyhow!("no SpfAligned"))?;
        assert_eq!(
            (aligned.status.as_str(), aligned.reason.as_str()),
            ("False", "ProviderNotAuthorized")
        );
        let sender = &t
            .status
            .as_ref()
            .ok_or_else(|| anyhow!("no status"))?
            .senders[0];
        assert_eq!(sender.state, api::SenderState::Unaligned);
        assert_eq!(sender.sending_as, api::SendingAs::Fallback);
        assert_eq!(sender.consecutive_failures, 2);
        let spf = sender
            .spf
            .as_ref()
            .ok_or_else(|| anyhow!("no SPF detail"))?;
        assert_eq!(spf.record.as_deref(), Some("v=spf1 -all"));
        assert_eq!(spf.results.get(EGRESS_IP), Some("fail"));
        assert!(!spf.provider_include_reachable);
        let suggested = sender
            .suggested_record
            .as_ref()
            .ok_or_else(|| anyhow!("no suggested record"))?;
        assert!(
            suggested
                .record
                .contains(&format!("include:{PROVIDER_SPF}")),
            "{}",
            suggested.record
        );
        assert_eq!(
            sender.dmarc.as_ref().and_then(|d| d.p.as_deref()),
            Some("reject")
        );
        w.wait_event("FallbackActivated").await?;
        let reasons = w.event_reasons().await?;
        assert_eq!(
            reasons.iter().filter(|r| *r == "FallbackActivated").count(),
            1,
            "{reasons:?}"
        );
        assert!(
            flip < INTERVAL * 2 + Duration::from_secs(15),
            "fallback took {flip:?}"
        );

        // Include restored with a 4 s TTL: back after two aligned checks and validAfter.
        set_spf(&w.dns, &w.domain, &include_record(), 4);
        let t = w
            .wait_tenant("acme", "a success streak", |t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| s.senders[0].valid_after.is_some())
            })
            .await?;
        let valid_after = t
            .status
            .as_ref()
            .and_then(|s| s.senders[0].valid_after.clone())
            .ok_or_else(|| anyhow!("no validAfter"))?;
        w.wait_config_map(
            "acme-mail-settings",
            "sender-mode tenant again",
            WAIT,
            |d| mode_is(d, "tenant"),
        )
        .await?;
        let switched = jiff::Timestamp::now();
        assert!(
            switched >= valid_after.0,
            "returned at {switched} before validAfter {}",
            valid_after.0
        );
        w.wait_event("TenantSenderRestored").await?;
        let t = w
            .wait_tenant("acme", "aligned again", |t| {
                condition_is(t, "FallbackActive", "False")
            })
            .await?;
        assert!(condition_is(&t, "SpfAligned", "True"));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failures_keep_the_sender_and_show_unknown() {
    scenario("tempfail", INTERVAL, |w| async move {
        let _operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Enforce).await?;
        w.wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| {
            mode_is(d, "tenant")
        })
        .await?;

        for fault in [Fault::Timeout, Fault::ServFail] {
            set_fault(&w.dns, &w.domain, Some(fault));
            let t = w
                .wait_tenant("acme", "SpfAligned Unknown", |t| {
                    condition_is(t, "SpfAligned", "Unknown")
                })
                .await?;
            let aligned = condition(&t, "SpfAligned").ok_or_else(|| anyhow!("no condition"))?;
            assert_eq!(aligned.reason, "DnsTemporaryFailure");
            assert!(
                !aligned.message.contains("SERVFAIL") && !aligned.message.contains("timed out"),
                "{}",
                aligned.message
            );
            let sender = &t
                .status
                .as_ref()
                .ok_or_else(|| anyhow!("no status"))?
                .senders[0];
            assert_eq!(sender.state, api::SenderState::TemporaryFailure);
            // Several intervals later the tenant still sends as itself.
            tokio::time::sleep(INTERVAL * 3).await;
            let data = w
                .config_maps()
                .get("acme-mail-settings")
                .await?
                .data
                .unwrap_or_default();
            assert!(
                mode_is(&data, "tenant"),
                "{fault:?} switched the sender: {data:?}"
            );
            let t = w.tenants().get("acme").await?;
            assert!(condition_is(&t, "FallbackActive", "False"));
            assert_eq!(
                t.status.as_ref().map(|s| s.senders[0].consecutive_failures),
                Some(0)
            );
            set_fault(&w.dns, &w.domain, None);
            w.wait_tenant("acme", "aligned again", |t| {
                condition_is(t, "SpfAligned", "True")
            })
            .await?;
        }
        w.wait_event("DnsTemporaryFailure").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_config_map_is_repaired_recreated_and_collected() {
    scenario("owned", INTERVAL, |w| async move {
        let _operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Enforce).await?;
        let address = w.address();
        w.wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| {
            mode_is(d, "tenant")
        })
        .await?;

        // A person edits an owned key and adds a key of their own.
        let edit = json!({ "data": { "from": "someone@else.test", "signature": "Cheers" } });
        w.config_maps()
            .patch(
                "acme-mail-settings",
                &PatchParams::default(),
                &Patch::Merge(&edit),
            )
            .await?;
        let data = w
            .wait_config_map("acme-mail-settings", "the owned key put back", WAIT, |d| {
                d.get("from") == Some(&address)
            })
            .await?;
        assert_eq!(
            data.get("signature").map(String::as_str),
            Some("Cheers"),
            "other keys kept"
        );

        // Deleted: recreated.
        w.config_maps()
            .delete("acme-mail-settings", &DeleteParams::default())
            .await?;
        w.wait_config_map("acme-mail-settings", "the ConfigMap recreated", WAIT, |d| {
            mode_is(d, "tenant")
        })
        .await?;

        // Tenant deleted: the garbage collector removes the ConfigMap.
        w.tenants()
            .delete("acme", &DeleteParams::background())
            .await?;
        let api = w.config_maps();
        eventually("the ConfigMap collected", WAIT, || async {
            Ok(api
                .get_opt("acme-mail-settings")
                .await?
                .is_none()
                .then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_with_the_rule_message() {
    let client = cluster::client().await.expect("client");
    cluster::apply_crd(&client, &api::crd()).await.expect("CRD");
    let ns = TestNamespace::create(&client, "invalid")
        .await
        .expect("namespace");
    let api: Api<HelpdeskTenant> = ns.api();
    // Raw objects, so shapes the Rust types cannot express reach the API server too.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &ApiResource::erase::<HelpdeskTenant>(&()),
    );
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({ "senders": [{ "address": "not-an-address" }] }),
            "address must be an email address",
        ),
        (
            json!({ "senders": [{ "address": "a@acme.test", "envelopeDomain": "other.test" }] }),
            "envelopeDomain must be the address's domain or a subdomain of it",
        ),
        (
            json!({ "senders": [{ "address": "a@acme.test", "envelopeDomain": "bad_domain!" }] }),
            "envelopeDomain must be a domain name",
        ),
        (
            json!({ "senders": [{ "address": "a@acme.test" }, { "address": "A@acme.test" }] }),
            "each sender address may appear only once",
        ),
        (json!({ "senders": [] }), "should have at least 1 items"),
        (
            json!({ "senders": [{ "address": "a@acme.test" }], "checkInterval": "5 minutes" }),
            "checkInterval must be a duration",
        ),
        (
            json!({ "senders": [{ "address": "a@acme.test" }], "mode": "Sometimes" }),
            "Unsupported value",
        ),
        (
            json!({ "senders": [{ "address": "a@acme.test" }], "failureThreshold": 0 }),
            "should be greater than or equal to 1",
        ),
    ];
    for (i, (spec, message)) in cases.into_iter().enumerate() {
        let object = json!({
            "apiVersion": "mail.helpdesk.io/v1alpha1",
            "kind": "HelpdeskTenant",
            "metadata": { "name": format!("bad-{i}") },
            "spec": spec,
        });
        let tenant: DynamicObject = serde_json::from_value(object).expect("an object");
        match raw.create(&PostParams::default(), &tenant).await {
            Ok(_) => panic!("case {i} was accepted: {spec}"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "case {i}: {status:?}");
                assert!(
                    status.message.contains(message),
                    "case {i}: {:?} lacks {message:?}",
                    status.message
                );
            }
            Err(other) => panic!("case {i}: {other}"),
        }
    }
    // Valid edge cases pass: a subdomain envelope, seconds as interval, defaults filled in.
    let ok = json!({
        "apiVersion": "mail.helpdesk.io/v1alpha1",
        "kind": "HelpdeskTenant",
        "metadata": { "name": "good" },
        "spec": { "senders": [{ "address": "a@acme.test", "envelopeDomain": "bounce.ACME.test" }], "checkInterval": "30s" },
    });
    let tenant: HelpdeskTenant = serde_json::from_value(ok).expect("shape");
    let created = api
        .create(&PostParams::default(), &tenant)
        .await
        .expect("a valid spec is accepted");
    assert_eq!(created.spec.mode, Mode::Enforce);
    assert_eq!(
        (
            created.spec.failure_threshold,
            created.spec.success_threshold
        ),
        (2, 2)
    );
    ns.cleanup().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_reports_without_switching() {
    scenario("observe", INTERVAL, |w| async move {
        let _operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Observe).await?;
        w.wait_tenant("acme", "aligned", |t| condition_is(t, "SpfAligned", "True"))
            .await?;
        set_spf(&w.dns, &w.domain, "v=spf1 -all", TTL);
        let t = w
            .wait_tenant("acme", "would fall back", |t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| s.senders[0].sending_as == api::SendingAs::Fallback)
            })
            .await?;
        let fallback = condition(&t, "FallbackActive").ok_or_else(|| anyhow!("no condition"))?;
        assert_eq!(
            (fallback.status.as_str(), fallback.reason.as_str()),
            ("False", "ObserveMode")
        );
        assert!(
            fallback.message.contains("would send as"),
            "{}",
            fallback.message
        );
        assert!(condition_is(&t, "SpfAligned", "False"));
        w.wait_event("WouldFallBack").await?;
        assert!(
            w.config_maps()
                .get_opt("acme-mail-settings")
                .await?
                .is_none(),
            "Observe wrote mail settings"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_writes_nothing_and_recheck_forces_a_check() {
    scenario("steady", INTERVAL, |w| async move {
        let operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Enforce).await?;
        w.wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| mode_is(d, "tenant")).await?;
        w.wait_tenant("acme", "Ready", |t| condition_is(t, "Ready", "True")).await?;
        // Let the first checks settle, then count every change for several intervals.
        tokio::time::sleep(INTERVAL * 2).await;
        let checks_before = operator.metric("helpdesk_checks_total").await?;
        let tenant_rv = w.tenants().get("acme").await?.resource_version();
        let cm_rv = w.config_maps().get("acme-mail-settings").await?.resource_version();
        let tenants = watcher::watcher(w.tenants(), watcher::Config::default()).applied_objects();
        let cms = watcher::watcher(
            w.config_maps(),
            watcher::Config::default().fields("metadata.name=acme-mail-settings"),
        )
        .applied_objects();
        let mut both = futures::stream::select(
            tenants.map_ok(|t| ("tenant", t.resource_version())).boxed(),
            cms.map_ok(|c| ("configmap", c.resource_version())).boxed(),
        );
        let mut writes = Vec::new();
        let window = tokio::time::sleep(INTERVAL * 5);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                item = both.next() => match item {
                    Some(Ok((kind, rv))) if (kind == "tenant" && rv != tenant_rv) || (kind == "configmap" && rv != cm_rv) => writes.push((kind, rv)),
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error.into()),
                    None => break,
                },
            }
        }
        let checks_after = operator.metric("helpdesk_checks_total").await?;
        assert!(writes.is_empty(), "steady state wrote: {writes:?}");
        assert!(checks_after - checks_before >= 3.0, "checks kept running: {checks_before} -> {checks_after}");

        // The recheck annotation forces a check now, even with a long interval.
        let long = json!({ "spec": { "checkInterval": "1h" } });
        w.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&long)).await?;
        w.wait_tenant("acme", "the new generation observed", |t| {
            t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
        })
        .await?;
        set_spf(&w.dns, &w.domain, "v=spf1 -all", TTL);
        tokio::time::sleep(Duration::from_secs(u64::from(TTL) + 1)).await;
        let annotate = json!({ "metadata": { "annotations": { api::RECHECK_ANNOTATION: "now-1" } } });
        w.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&annotate)).await?;
        let t = w
            .wait_tenant("acme", "the forced check", |t| t.status.as_ref().and_then(|s| s.last_recheck.as_deref()) == Some("now-1"))
            .await?;
        assert_eq!(t.status.as_ref().map(|s| s.senders[0].state), Some(api::SenderState::Unaligned));
        let (code, _) = http_get(operator.metrics_port, "/readyz").await?;
        assert_eq!(code, 200);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_killed_holder_hands_over() {
    scenario("leader", INTERVAL, |w| async move {
        let lease_args = |name: &str| -> Vec<String> {
            vec![
                "--leader-election".into(),
                "--lease-namespace".into(),
                w.ns.name().to_owned(),
                "--lease-duration-seconds".into(),
                "10".into(),
                "--lease-identity".into(),
                name.to_owned(),
            ]
        };
        let a_args = lease_args("replica-a");
        let b_args = lease_args("replica-b");
        let a = w.operator(
            "replica-a",
            &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let b = w.operator(
            "replica-b",
            &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let leases: Api<Lease> = w.ns.api();
        eventually("a Lease holder", WAIT, || async {
            Ok(leases
                .get_opt("helpdesk-mail-operator")
                .await?
                .and_then(|l| l.spec?.holder_identity))
        })
        .await?;
        w.create_tenant("acme", Mode::Enforce).await?;
        w.wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| {
            mode_is(d, "tenant")
        })
        .await?;
        // The holder now (under load a Lease can change hands before this point).
        let holder = leases
            .get("helpdesk-mail-operator")
            .await?
            .spec
            .and_then(|s| s.holder_identity)
            .ok_or_else(|| anyhow!("the Lease has no holder"))?;
        let (mut leader, standby) = if holder == "replica-a" {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(leader.metric("helpdesk_leader").await?, 1.0);
        assert_eq!(standby.metric("helpdesk_leader").await?, 0.0);
        let writes = |op: &Operator| {
            let port = op.metrics_port;
            async move {
                let text = http_get(port, "/metrics").await?.1;
                let sum: f64 = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("helpdesk_status_writes_total ")
                            || l.starts_with("helpdesk_configmap_writes_total ")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                anyhow::Ok(sum)
            }
        };
        let standby_before = writes(&standby).await?;
        let leader_before = writes(&leader).await?;
        // Force a check that writes status: only the holder may write it.
        let annotate =
            json!({ "metadata": { "annotations": { api::RECHECK_ANNOTATION: "leader-1" } } });
        w.tenants()
            .patch("acme", &PatchParams::default(), &Patch::Merge(&annotate))
            .await?;
        w.wait_tenant("acme", "the forced check", |t| {
            t.status.as_ref().and_then(|s| s.last_recheck.as_deref()) == Some("leader-1")
        })
        .await?;
        assert!(
            writes(&leader).await? > leader_before,
            "the holder did not write"
        );
        assert_eq!(writes(&standby).await?, standby_before, "the standby wrote");

        // Kill the holder without letting it release the Lease.
        leader.signal("-KILL")?;
        let killed = Instant::now();
        let _ = leader.wait_exit(Duration::from_secs(10)).await?;
        let new_holder = eventually("the standby holds the Lease", WAIT, || async {
            Ok(leases
                .get_opt("helpdesk-mail-operator")
                .await?
                .and_then(|l| l.spec?.holder_identity)
                .filter(|h| *h != holder))
        })
        .await?;
        let handover = killed.elapsed();
        assert!(
            handover < Duration::from_secs(10 + 10),
            "handover took {handover:?} to {new_holder}"
        );
        set_spf(&w.dns, &w.domain, "v=spf1 -all", TTL);
        w.wait_config_map("acme-mail-settings", "the new leader acts", WAIT, |d| {
            mode_is(d, "fallback")
        })
        .await?;
        assert!(standby.metric("helpdesk_configmap_writes_total").await? >= 1.0);

        // SIGTERM: the holder releases the Lease and exits cleanly.
        let mut standby = standby;
        standby.signal("-TERM")?;
        assert!(
            standby.wait_exit(Duration::from_secs(20)).await?,
            "exit status after SIGTERM\n{}",
            standby.log()
        );
        let lease = leases.get("helpdesk-mail-operator").await?;
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity),
            None,
            "Lease not released"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_change_rechecks_every_tenant() {
    scenario("egress", INTERVAL, |w| async move {
        // The provider's SMTP host resolves to the authorized address at first.
        set_smtp_host(&w.dns, "192.0.2.10");
        // The provider's record lists the next address already, so the change is not the
        // provider's fault (docs/design.md §5); the tenants authorize the first address by
        // itself instead of through the include, so the change fails them.
        set_spf(
            &w.dns,
            PROVIDER_SPF,
            "v=spf1 ip4:192.0.2.10 ip4:198.51.100.7 -all",
            TTL,
        );
        set_spf(&w.dns, &w.domain, "v=spf1 ip4:192.0.2.10 -all", TTL);
        let _operator = w.operator("operator", &["--provider-smtp-host", SMTP_HOST])?;
        // Tenants check only hourly: only the egress change can trigger the next check.
        for name in ["acme", "beta"] {
            let mut tenant = HelpdeskTenant::new(name, spec(&[&w.address()], Mode::Enforce));
            tenant.spec.check_interval = Some("1h".to_owned());
            w.tenants().create(&PostParams::default(), &tenant).await?;
            w.wait_tenant(name, "aligned", |t| condition_is(t, "SpfAligned", "True"))
                .await?;
        }
        // The printer columns show real values.
        let table = cluster::run_tool("kubectl", &["get", "hdt", "-n", w.ns.name(), "-o", "wide"])?;
        let header = table.lines().next().unwrap_or_default().to_owned();
        for column in [
            "ALIGNED",
            "FALLBACK",
            "SENDERS",
            "REASON",
            "LAST CHECK",
            "AGE",
        ] {
            assert!(header.contains(column), "{column} missing in\n{table}");
        }
        let acme = table
            .lines()
            .find(|l| l.starts_with("acme"))
            .unwrap_or_default();
        let cells: Vec<&str> = acme.split_whitespace().collect();
        assert_eq!(&cells[1..5], ["True", "False", "1/1", "Aligned"], "{table}");

        // The host moves to an address the provider's SPF does not list.
        set_smtp_host(&w.dns, "198.51.100.7");
        for name in ["acme", "beta"] {
            let t = w
                .wait_tenant(name, "re-checked against the new egress", |t| {
                    t.status.as_ref().is_some_and(|s| {
                        s.senders[0]
                            .spf
                            .as_ref()
                            .is_some_and(|spf| spf.results.contains_key("198.51.100.7"))
                    })
                })
                .await?;
            let sender = &t
                .status
                .as_ref()
                .ok_or_else(|| anyhow!("no status"))?
                .senders[0];
            assert_eq!(sender.state, api::SenderState::Unaligned);
            assert_eq!(
                sender.consecutive_failures, 1,
                "one failure, still below the threshold"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_of_another_tenant_is_left_alone_and_reported() {
    scenario("conflict", INTERVAL, |w| async move {
        let _operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Enforce).await?;
        w.wait_config_map("acme-mail-settings", "sender-mode tenant", WAIT, |d| {
            mode_is(d, "tenant")
        })
        .await?;
        // A second tenant points at the first one's ConfigMap.
        let mut other = HelpdeskTenant::new("other", spec(&[&w.address()], Mode::Enforce));
        other.spec.mail_settings = Some(api::MailSettings {
            config_map_name: Some("acme-mail-settings".to_owned()),
        });
        w.tenants().create(&PostParams::default(), &other).await?;
        let t = w
            .wait_tenant("other", "Ready=False ConfigMapConflict", |t| {
                condition(t, "Ready").is_some_and(|c| c.reason == "ConfigMapConflict")
            })
            .await?;
        let ready = condition(&t, "Ready").ok_or_else(|| anyhow!("no Ready"))?;
        assert_eq!(ready.status, "False");
        assert!(
            ready.message.contains("acme-mail-settings"),
            "{}",
            ready.message
        );
        let cm = w.config_maps().get("acme-mail-settings").await?;
        let owners: Vec<&str> = cm
            .owner_references()
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(owners, ["acme"], "the ConfigMap keeps its one owner");
        Ok(())
    })
    .await;
}

/// The provider's DKIM setup in the end-to-end zone.
mod dkim_zone {
    pub const DOMAIN: &str = "dkim.provider.test";
    pub const SELECTOR: &str = "hd1";
    /// The provider's key, and the key it rotates to (each short enough for one TXT string).
    pub const KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDTZNt+KcsBLFajBDLWFVTv8qWWbTZnKi0pVJMqWu7KMSszpiDP8mWTeSlxeLBsXaCb8ibp2aCO/avtFqklmylmpI8Q2Gq1wn+9ESGJoxtpuSfOxE/Y7/F4YoGJnQASqSTe3R/Gzn3iafu/0GXTH6XucpnqfafsTIgmGni3q//p5QIDAQAB";
    pub const ROTATED: &str = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";
    /// A key that is not the provider's.
    pub const OTHER: &str = "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    pub fn record(key: &str) -> String {
        format!("v=DKIM1; k=rsa; p={key}")
    }

    pub fn reference() -> String {
        format!("{SELECTOR}._domainkey.{DOMAIN}")
    }

    pub fn selector_name(domain: &str) -> String {
        format!("{SELECTOR}._domainkey.{domain}")
    }
}

/// Every `requiredAlignment` with SPF good or bad and DKIM good or bad, the provider rotating
/// its key behind the tenants' CNAMEs, and a selector record that disappears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_alignment_combines_spf_and_dkim() {
    use helpdesk_mail_operator::api::RequiredAlignment::{self, Spf, SpfAndDkim, SpfOrDkim};
    scenario("dkim", INTERVAL, |w| async move {
        let reference = dkim_zone::reference();
        w.dns.update(|zone| {
            zone.add(&reference, TTL, txt(&dkim_zone::record(dkim_zone::KEY)));
        });
        // (required, SPF good, DKIM good, sends as the tenant)
        let table: Vec<(RequiredAlignment, bool, bool, bool)> = vec![
            (Spf, true, true, true),
            (Spf, true, false, true),
            (Spf, false, true, false),
            (Spf, false, false, false),
            (SpfOrDkim, true, true, true),
            (SpfOrDkim, true, false, true),
            (SpfOrDkim, false, true, true),
            (SpfOrDkim, false, false, false),
            (SpfAndDkim, true, true, true),
            (SpfAndDkim, true, false, false),
            (SpfAndDkim, false, true, false),
            (SpfAndDkim, false, false, false),
        ];
        let domain = |i: usize| format!("t{i}.{}", w.domain);
        for (i, (_, spf_good, dkim_good, _)) in table.iter().enumerate() {
            let domain = domain(i);
            let spf = if *spf_good {
                include_record()
            } else {
                "v=spf1 -all".to_owned()
            };
            let selector = dkim_zone::selector_name(&domain);
            let reference = reference.clone();
            let dkim_good = *dkim_good;
            w.dns.update(move |zone| {
                zone.add(&domain, TTL, txt(&spf));
                if dkim_good {
                    zone.add(&selector, TTL, Data::Cname(reference));
                } else {
                    zone.add(&selector, TTL, txt(&dkim_zone::record(dkim_zone::OTHER)));
                }
            });
        }
        let _operator = w.operator(
            "operator",
            &[
                "--provider-dkim-selector",
                dkim_zone::SELECTOR,
                "--provider-dkim-domain",
                dkim_zone::DOMAIN,
            ],
        )?;
        for (i, (required, ..)) in table.iter().enumerate() {
            let spec = HelpdeskTenantSpec {
                required_alignment: *required,
                ..spec(&[&format!("support@{}", domain(i))], Mode::Enforce)
            };
            w.tenants()
                .create(
                    &PostParams::default(),
                    &HelpdeskTenant::new(&format!("t{i}"), spec),
                )
                .await?;
        }
        for (i, (required, spf_good, dkim_good, tenant)) in table.iter().enumerate() {
            let name = format!("t{i}");
            let checked = w
                .wait_tenant(&name, "a first verdict", |t| {
                    t.status.as_ref().is_some_and(|s| {
                        s.senders
                            .iter()
                            .all(|s| s.state != helpdesk_mail_operator::api::SenderState::Pending)
                    })
                })
                .await?;
            let mode = if *tenant { "tenant" } else { "fallback" };
            w.wait_config_map(
                &format!("{name}-mail-settings"),
                &format!("{name} ({required:?}, SPF {spf_good}, DKIM {dkim_good}) sends as {mode}"),
                WAIT,
                |data| mode_is(data, mode),
            )
            .await?;
            let sender = &checked.status.as_ref().expect("status").senders[0];
            let dkim = sender.dkim.as_ref().expect("DKIM detail in status");
            let expected = if *dkim_good { "Aligned" } else { "KeyMismatch" };
            ensure!(
                dkim.selectors[0].outcome.as_str() == expected,
                "{name}: selector outcome {:?}, expected {expected}",
                dkim.selectors[0].outcome
            );
            if *required == SpfOrDkim && !spf_good && *dkim_good {
                ensure!(
                    condition(&checked, "SpfAligned")
                        .is_some_and(|c| c.status == "True" && c.reason == "AlignedByDkim"),
                    "{name}: SpfAligned names the DKIM path: {:?}",
                    condition(&checked, "SpfAligned")
                );
            }
        }

        // The provider rotates its key; the tenants' CNAMEs follow, so they stay aligned.
        let dkim_only = "t6";
        let rotated_reference = reference.clone();
        w.dns.update(move |zone| {
            zone.remove(&rotated_reference, hickory_proto::rr::RecordType::TXT);
            zone.add(
                &rotated_reference,
                TTL,
                txt(&dkim_zone::record(dkim_zone::ROTATED)),
            );
        });
        let rotated = |t: &HelpdeskTenant| {
            t.status.as_ref().is_some_and(|s| {
                s.senders[0]
                    .dkim
                    .as_ref()
                    .and_then(|d| d.selectors[0].record.as_deref())
                    .is_some_and(|r| r.contains(dkim_zone::ROTATED))
            })
        };
        let after = w
            .wait_tenant(dkim_only, "a check that sees the rotated key", rotated)
            .await?;
        let sender = &after.status.as_ref().expect("status").senders[0];
        ensure!(
            sender.state == helpdesk_mail_operator::api::SenderState::Aligned
                && sender.sending_as == helpdesk_mail_operator::api::SendingAs::Tenant,
            "after the rotation {dkim_only} stays aligned on its own address: {sender:?}"
        );

        // The selector record disappears: with SPF bad too, the sender falls back after the
        // failure threshold.
        let selector = dkim_zone::selector_name(&domain(6));
        w.dns.update(move |zone| {
            zone.remove(&selector, hickory_proto::rr::RecordType::CNAME);
        });
        w.wait_config_map(
            &format!("{dkim_only}-mail-settings"),
            "the DKIM-only tenant falls back once its selector is gone",
            WAIT,
            |data| mode_is(data, "fallback"),
        )
        .await?;
        let fallen = w.tenants().get(dkim_only).await?;
        let sender = &fallen.status.as_ref().expect("status").senders[0];
        ensure!(
            sender.consecutive_failures >= 2
                && sender
                    .dkim
                    .as_ref()
                    .is_some_and(|d| d.selectors[0].outcome.as_str() == "Missing"),
            "fell back after the threshold with the selector Missing: {sender:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_edit_is_kept_in_the_history_and_reported_once() {
    scenario("history", INTERVAL, |w| async move {
        let operator = w.operator("operator", &[])?;
        w.create_tenant("acme", Mode::Enforce).await?;
        let spf_history = |t: &HelpdeskTenant| {
            t.status
                .as_ref()
                .and_then(|s| s.senders.first())
                .and_then(|s| s.history.as_ref())
                .map(|h| h.spf.clone())
                .unwrap_or_default()
        };
        let t = w
            .wait_tenant("acme", "a first record in the history", |t| {
                spf_history(t).len() == 1
            })
            .await?;
        let old = include_record();
        assert_eq!(spf_history(&t)[0].hash, record_hash(Some(&old)));
        assert_eq!(spf_history(&t)[0].lookups, Some(1));

        // One more lookup before the include: `a` on the domain.
        let new = format!("v=spf1 a include:{PROVIDER_SPF} -all");
        set_spf(&w.dns, &w.domain, &new, TTL);
        let t = w
            .wait_tenant("acme", "the edited record in the history", |t| {
                spf_history(t).len() == 2
            })
            .await?;
        let history = spf_history(&t);
        assert_eq!(history[1].hash, record_hash(Some(&new)));
        assert_eq!(history[1].lookups, Some(2));
        assert!(history[0].first_seen.0 < history[1].first_seen.0);
        w.wait_event("SpfRecordChanged").await?;
        let events = w.ns.api::<Event>().list(&ListParams::default()).await?;
        let notes: Vec<String> = events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("SpfRecordChanged"))
            .filter_map(|e| e.note.clone())
            .collect();
        assert_eq!(notes.len(), 1, "one Event for one edit: {notes:?}");
        assert!(
            notes[0].contains(&format!("{old:?}"))
                && notes[0].contains(&format!("{new:?}"))
                && notes[0].contains("lookups 1 -> 2 (+1)"),
            "{}",
            notes[0]
        );

        // Unchanged DNS: two more checks write nothing and keep the history as it is.
        let written = operator.metric("helpdesk_status_writes_total").await?;
        let checks = operator.metric("helpdesk_checks_total").await?;
        eventually("two more checks", WAIT, || async {
            Ok((operator.metric("helpdesk_checks_total").await? >= checks + 2.0).then_some(()))
        })
        .await?;
        assert_eq!(
            operator.metric("helpdesk_status_writes_total").await?,
            written,
            "a steady state writes nothing"
        );
        let t = w.tenants().get("acme").await?;
        assert_eq!(spf_history(&t), history);

        // `kubectl describe` shows both records and the Event.
        let described =
            cluster::run_tool("kubectl", &["-n", w.ns.name(), "describe", "hdt", "acme"])?;
        for needle in [
            "History:",
            record_hash(Some(&old)).as_str(),
            record_hash(Some(&new)).as_str(),
            "SpfRecordChanged",
        ] {
            assert!(described.contains(needle), "{needle} in\n{described}");
        }
        Ok(())
    })
    .await;
}
