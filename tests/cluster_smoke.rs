//! Smoke tests of the real control plane: the API-server behaviour the operator relies on.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::{CustomResource, CustomResourceExt, KubeSchema, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use support::cluster::{self, CONVERGE_TIMEOUT, FIELD_MANAGER, TestNamespace};

const RANGE_MESSAGE: &str = "max must not be below min";

/// A small custom resource with everything a real CRD of ours has: a status subresource,
/// printer columns and a CEL rule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smoke.helpdesk.io",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    printcolumn = r#"{"name": "Min", "type": "integer", "jsonPath": ".spec.min"}"#,
    printcolumn = r#"{"name": "Max", "type": "integer", "jsonPath": ".spec.max"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#
)]
#[x_kube(validation = Rule::new("self.max >= self.min").message(RANGE_MESSAGE))]
pub struct WidgetSpec {
    pub min: i32,
    pub max: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    pub phase: String,
}

fn widget(name: &str, min: i32, max: i32) -> Widget {
    Widget::new(name, WidgetSpec { min, max })
}

/// A CRD shared by the tests of this file; applying it is idempotent.
async fn widgets(namespace: &TestNamespace) -> anyhow::Result<Api<Widget>> {
    let client = cluster::client().await?;
    cluster::apply_crd(&client, &Widget::crd()).await?;
    Ok(namespace.api())
}

async fn setup(prefix: &str) -> anyhow::Result<(kube::Client, TestNamespace)> {
    let client = cluster::client().await?;
    let namespace = TestNamespace::create(&client, prefix).await?;
    Ok((client, namespace))
}

#[tokio::test]
async fn crd_is_established_and_its_cel_rule_rejects_a_bad_widget() -> anyhow::Result<()> {
    let (client, namespace) = setup("smoke-cel").await?;
    let crd = cluster::apply_crd(&client, &Widget::crd()).await?;
    let version = crd
        .spec
        .versions
        .first()
        .ok_or_else(|| anyhow!("the CRD has no version"))?;
    ensure!(
        version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some()),
        "the status subresource is missing"
    );

    let api: Api<Widget> = namespace.api();
    let rejected = api
        .create(&PostParams::default(), &widget("inverted", 5, 1))
        .await;
    match rejected {
        Err(kube::Error::Api(status)) => {
            ensure!(status.code == 422, "expected 422 Invalid, got {status:?}");
            ensure!(
                status.message.contains(RANGE_MESSAGE),
                "the rejection does not carry the rule's message: {}",
                status.message
            );
        }
        Ok(created) => bail!("a widget breaking the CEL rule was accepted: {created:?}"),
        Err(error) => bail!("unexpected error: {error}"),
    }
    ensure!(
        api.get_opt("inverted").await?.is_none(),
        "the rejected widget exists"
    );

    api.create(&PostParams::default(), &widget("fine", 1, 5))
        .await
        .context("a widget obeying the rule")?;
    namespace.cleanup().await
}

#[tokio::test]
async fn widgets_are_created_read_listed_watched_and_printed() -> anyhow::Result<()> {
    let (_client, namespace) = setup("smoke-crud").await?;
    let api = widgets(&namespace).await?;

    let first = api
        .create(&PostParams::default(), &widget("first", 1, 2))
        .await?;
    let fetched = api.get("first").await?;
    ensure!(
        fetched.spec == WidgetSpec { min: 1, max: 2 },
        "got {fetched:?}"
    );
    ensure!(fetched.uid() == first.uid(), "get returned another object");

    let list = api.list(&ListParams::default()).await?;
    let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
    ensure!(names == ["first"], "listed {names:?}");
    let version = list
        .metadata
        .resource_version
        .ok_or_else(|| anyhow!("the list has no resourceVersion"))?;

    // A watch from the list's resourceVersion sees exactly what happened after it.
    let mut events = api
        .watch(&WatchParams::default().timeout(30), &version)
        .await?
        .boxed();
    api.create(&PostParams::default(), &widget("second", 3, 4))
        .await?;
    let event = tokio::time::timeout(Duration::from_secs(20), events.try_next())
        .await
        .context("no watch event within 20 s")??
        .ok_or_else(|| anyhow!("the watch ended without an event"))?;
    match event {
        WatchEvent::Added(added) => {
            ensure!(added.name_any() == "second", "added {}", added.name_any());
            ensure!(added.spec.max == 4, "watched {:?}", added.spec);
        }
        other => bail!("expected Added, got {other:?}"),
    }

    // kubectl reads the printer columns through the Table API.
    let printed = cluster::run_tool("kubectl", &["get", "widgets", "-n", namespace.name()])?;
    let header = printed.lines().next().unwrap_or_default();
    for column in ["NAME", "MIN", "MAX", "PHASE"] {
        ensure!(header.contains(column), "no {column} column in {header:?}");
    }
    ensure!(
        printed.lines().any(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            cells.starts_with(&["second", "3", "4"])
        }),
        "kubectl printed {printed:?}"
    );
    namespace.cleanup().await
}

#[tokio::test]
async fn status_is_applied_through_the_subresource_by_its_own_field_manager() -> anyhow::Result<()>
{
    let (_client, namespace) = setup("smoke-status").await?;
    let api = widgets(&namespace).await?;
    api.create(&PostParams::default(), &widget("gadget", 1, 2))
        .await?;

    let status_manager = "smoke-status-writer";
    let status = serde_json::json!({
        "apiVersion": Widget::api_version(&()),
        "kind": Widget::kind(&()),
        "status": { "phase": "Ready" },
    });
    let patched = api
        .patch_status(
            "gadget",
            &PatchParams::apply(status_manager),
            &Patch::Apply(&status),
        )
        .await?;
    ensure!(
        patched.status
            == Some(WidgetStatus {
                phase: "Ready".into()
            }),
        "status after apply: {:?}",
        patched.status
    );
    let managed = patched.managed_fields();
    ensure!(
        managed.iter().any(|entry| {
            entry.manager.as_deref() == Some(status_manager)
                && entry.subresource.as_deref() == Some("status")
                && entry.operation.as_deref() == Some("Apply")
        }),
        "no Apply entry of {status_manager} on the status subresource: {managed:?}"
    );

    // Through the main resource the status is ignored, as the status subresource promises.
    let mut spec_apply = widget("gadget", 1, 3);
    spec_apply.status = Some(WidgetStatus {
        phase: "Overwritten".into(),
    });
    let after = api
        .patch(
            "gadget",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&spec_apply),
        )
        .await?;
    ensure!(after.spec.max == 3, "spec not applied: {:?}", after.spec);
    ensure!(
        after.status.as_ref().map(|s| s.phase.as_str()) == Some("Ready"),
        "the main resource changed the status: {:?}",
        after.status
    );
    namespace.cleanup().await
}

#[tokio::test]
async fn an_owned_config_map_is_garbage_collected_with_its_owner() -> anyhow::Result<()> {
    let (_client, namespace) = setup("smoke-gc").await?;
    let api = widgets(&namespace).await?;
    let owner = api
        .create(&PostParams::default(), &widget("owner", 1, 2))
        .await?;
    let owner_ref = owner
        .controller_owner_ref(&())
        .ok_or_else(|| anyhow!("the widget has no uid"))?;

    let config_maps: Api<ConfigMap> = namespace.api();
    let owned = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![owner_ref]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..ConfigMap::default()
    };
    config_maps.create(&PostParams::default(), &owned).await?;
    let bystander = ConfigMap {
        metadata: ObjectMeta {
            name: Some("bystander".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &bystander)
        .await?;

    api.delete("owner", &DeleteParams::background()).await?;
    cluster::eventually(
        "the owned ConfigMap to be garbage-collected",
        CONVERGE_TIMEOUT,
        || async { Ok(config_maps.get_opt("owned").await?.is_none().then_some(())) },
    )
    .await?;
    ensure!(
        config_maps.get_opt("bystander").await?.is_some(),
        "the garbage collector took a ConfigMap with no owner"
    );
    namespace.cleanup().await
}

#[tokio::test]
async fn a_narrow_role_gets_403_on_secrets_with_a_token_request_token() -> anyhow::Result<()> {
    let (_client, namespace) = setup("smoke-rbac").await?;
    let accounts: Api<ServiceAccount> = namespace.api();
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await?;

    let role = Role {
        metadata: ObjectMeta {
            name: Some("config-map-reader".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    namespace
        .api::<Role>()
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "config-map-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(namespace.name().to_owned()),
            ..Subject::default()
        }]),
    };
    namespace
        .api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await?;

    let token = cluster::service_account_token(&accounts, "reader").await?;

    let as_reader = cluster::client_with_token(&token).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(as_reader.clone(), namespace.name());
    // RBAC caches catch up with a new binding quickly but not instantly.
    cluster::eventually(
        "the Role to allow listing ConfigMaps",
        CONVERGE_TIMEOUT,
        || async { Ok(config_maps.list(&ListParams::default()).await.ok()) },
    )
    .await?;

    let secrets: Api<Secret> = Api::namespaced(as_reader, namespace.name());
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => ensure!(
            status.code == 403 && status.is_forbidden(),
            "expected 403 Forbidden, got {status:?}"
        ),
        Ok(list) => bail!("the reader listed {} secrets", list.items.len()),
        Err(error) => bail!("unexpected error: {error}"),
    }
    match secrets.get("anything").await {
        Err(kube::Error::Api(status)) => ensure!(status.code == 403, "got {status:?}"),
        other => bail!("expected 403 on get, got {other:?}"),
    }
    namespace.cleanup().await
}

#[tokio::test]
async fn a_lease_is_created_and_renewed_with_optimistic_concurrency() -> anyhow::Result<()> {
    let (_client, namespace) = setup("smoke-lease").await?;
    let leases: Api<Lease> = namespace.api();
    let now = || MicroTime(jiff::Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("leader".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("replica-a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            ..LeaseSpec::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await?;
    let first_renew = created
        .spec
        .as_ref()
        .and_then(|spec| spec.renew_time.clone())
        .ok_or_else(|| anyhow!("the Lease has no renewTime"))?;

    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut renewal = created.clone();
    if let Some(spec) = renewal.spec.as_mut() {
        spec.renew_time = Some(now());
    }
    let renewed = leases
        .replace("leader", &PostParams::default(), &renewal)
        .await?;
    let second_renew = renewed
        .spec
        .as_ref()
        .and_then(|spec| spec.renew_time.clone())
        .ok_or_else(|| anyhow!("the renewed Lease has no renewTime"))?;
    ensure!(
        second_renew.0 > first_renew.0,
        "renewTime did not advance: {first_renew:?} -> {second_renew:?}"
    );
    ensure!(
        renewed.resource_version() != created.resource_version(),
        "the renewal did not produce a new resourceVersion"
    );

    // A replica holding the old resourceVersion cannot take the Lease over.
    let mut stale = created;
    if let Some(spec) = stale.spec.as_mut() {
        spec.holder_identity = Some("replica-b".into());
    }
    match leases
        .replace("leader", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(status)) => {
            ensure!(
                status.is_conflict(),
                "expected 409 Conflict, got {status:?}"
            )
        }
        other => bail!("a stale Lease update was not refused: {other:?}"),
    }
    let holder = leases
        .get("leader")
        .await?
        .spec
        .and_then(|spec| spec.holder_identity);
    ensure!(
        holder.as_deref() == Some("replica-a"),
        "holder is {holder:?}"
    );
    namespace.cleanup().await
}

/// The version a go.mod under tests/control-plane pins for `module`.
fn pinned(go_mod: &str, module: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/control-plane")
        .join(go_mod)
        .join("go.mod");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let (name, version) = if first == "require" {
                (words.next()?, words.next()?)
            } else {
                (first, words.next()?)
            };
            (name == module).then(|| version.to_owned())
        })
        .next()
        .ok_or_else(|| anyhow!("{} does not pin {module}", path.display()))
}

#[test]
fn the_tools_report_the_pinned_versions() -> anyhow::Result<()> {
    let kubernetes = pinned("kubernetes", "k8s.io/kubernetes")?;
    let helm = pinned("helm", "helm.sh/helm/v3")?;
    let etcd = pinned("etcd", "go.etcd.io/etcd/server/v3")?;

    let versions: serde_json::Value =
        serde_json::from_str(&cluster::run_tool("kubectl", &["version", "-o", "json"])?)
            .context("kubectl version -o json")?;
    for side in ["clientVersion", "serverVersion"] {
        let reported = versions[side]["gitVersion"].as_str();
        ensure!(
            reported == Some(kubernetes.as_str()),
            "kubectl {side} is {reported:?}, pinned {kubernetes}"
        );
    }
    let ready = cluster::run_tool("kubectl", &["get", "--raw", "/readyz"])?;
    ensure!(ready.trim() == "ok", "/readyz said {ready:?}");

    let helm_version = cluster::run_tool("helm", &["version", "--template", "{{.Version}}"])?;
    ensure!(
        helm_version.trim() == helm,
        "helm reports {helm_version:?}, pinned {helm}"
    );

    let etcd_version = cluster::run_tool("etcd", &["--version"])?;
    let expected = format!("etcd Version: {}", etcd.trim_start_matches('v'));
    ensure!(
        etcd_version.lines().any(|line| line.trim() == expected),
        "etcd reports {etcd_version:?}, pinned {etcd}"
    );
    Ok(())
}
