//! The Helm chart, rendered and linted: every option renders, the Deployment meets Pod Security
//! `restricted`, RBAC holds no wildcard and no Secret, and the chart's CRD is the committed one.
//!
//! helm comes from the project's tools cache (`scripts/build-tools`, or `HDMO_TOOLS_BIN`).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const CHART: &str = "charts/helpdesk-mail-operator";
const CRD_FILE: &str = "helpdesktenants.mail.helpdesk.io.yaml";
const FULL_VALUES: &str = "tests/fixtures/values-all.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs helm with `args` in the repository root; returns (success, stdout, stderr).
fn helm(args: &[&str]) -> (bool, String, String) {
    let helm = support::cluster::tool("helm").expect("helm from the tools cache");
    let out = Command::new(helm)
        .args(args)
        .current_dir(root())
        // Keep helm's own config and cache out of the user's home.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("hdmo-helm-config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("hdmo-helm-cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("hdmo-helm-data"),
        )
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` with extra arguments; panics with helm's message on failure.
fn render(extra: &[&str]) -> Vec<Value> {
    support::chart::render(extra)
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("?").to_string())
        .collect();
    kinds.sort();
    kinds
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, got {}",
        found.len()
    );
    found[0]
}

fn container(docs: &[Value]) -> &Value {
    let containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers is a list");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args is a list")
        .iter()
        .map(|a| a.as_str().expect("every arg is a string").to_string())
        .collect()
}

/// The container's environment variables that have a literal value.
fn env(docs: &[Value]) -> BTreeMap<String, String> {
    container(docs)["env"]
        .as_array()
        .expect("env is a list")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Asserts every (variable, value) pair is set, and every name of `absent` is not.
fn assert_env(docs: &[Value], expected: &[(&str, &str)], absent: &[&str]) {
    let env = env(docs);
    for (name, value) in expected {
        assert_eq!(
            env.get(*name).map(String::as_str),
            Some(*value),
            "{name} in {env:?}"
        );
    }
    for name in absent {
        assert!(!env.contains_key(*name), "unexpected {name} in {env:?}");
    }
}

#[test]
fn helm_lint_passes_for_default_and_full_values() {
    let (ok, stdout, stderr) = helm(&["lint", "--strict", CHART]);
    assert!(ok, "helm lint (defaults) failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
    let (ok, stdout, stderr) = helm(&["lint", "--strict", CHART, "-f", FULL_VALUES]);
    assert!(ok, "helm lint (values-all) failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
}

#[test]
fn default_values_render_the_minimal_set() {
    let docs = render(&[]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount"
        ]
    );
    assert_eq!(
        args(&docs),
        ["run"],
        "configuration goes through HDMO_* variables"
    );
    assert_env(
        &docs,
        &[
            ("HDMO_PROVIDER_SPF_DOMAIN", "spf.mailing.provider.example"),
            ("HDMO_PROVIDER_EGRESS_IP", "192.0.2.10,2001:db8::10"),
            (
                "HDMO_DEFAULT_SENDER",
                "notifications+{tenant}@mailing.provider.example",
            ),
            ("HDMO_AUTHORITATIVE_CHECK", "true"),
            ("HDMO_CHECK_INTERVAL", "15m"),
            ("HDMO_FLEET_GUARD_PERCENT", "20"),
            ("HDMO_FLEET_GUARD_MIN_TENANTS", "10"),
            ("HDMO_FLEET_GUARD_HOLD", "1h"),
            ("HDMO_METRICS_ADDR", "0.0.0.0:8080"),
            ("RUST_LOG", "info"),
        ],
        &[
            "HDMO_PROVIDER_SMTP_HOST",
            "HDMO_PROVIDER_DKIM_SELECTOR",
            "HDMO_PROVIDER_DKIM_DOMAIN",
            "HDMO_NAMESERVER",
            "HDMO_DNS_TIMEOUT_MS",
            "HDMO_DNS_CACHE_SIZE",
            "HDMO_WATCH_NAMESPACE",
            "HDMO_SELECTOR",
            "HDMO_PER_TENANT_METRICS",
            "HDMO_LEADER_ELECTION",
            "HDMO_LEASE_NAMESPACE",
            "HDMO_LEASE_NAME",
        ],
    );
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "a single writer without leader election is replaced, never rolled"
    );
    let sa = one(&docs, "ServiceAccount");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn full_values_render_every_option() {
    let docs = render(&["-f", FULL_VALUES]);
    assert_eq!(
        kinds(&docs),
        [
            "ConfigMap",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    assert_eq!(args(&docs), ["run", "--example-extra-flag=1"]);
    assert_env(
        &docs,
        &[
            ("HDMO_PROVIDER_SPF_DOMAIN", "spf.mailing.provider.example"),
            (
                "HDMO_PROVIDER_EGRESS_IP",
                "198.51.100.25,198.51.100.26,2001:db8:25::1",
            ),
            (
                "HDMO_PROVIDER_SMTP_HOST",
                "smtp-out.mailing.provider.example",
            ),
            (
                "HDMO_DEFAULT_SENDER",
                "notifications+{tenant}.{namespace}@mailing.provider.example",
            ),
            ("HDMO_PROVIDER_DKIM_SELECTOR", "hd1,hd2"),
            ("HDMO_PROVIDER_DKIM_DOMAIN", "dkim.mailing.provider.example"),
            ("HDMO_NAMESERVER", "10.96.0.10:53,[2001:db8::53]:53"),
            ("HDMO_DNS_TIMEOUT_MS", "1500"),
            ("HDMO_DNS_CACHE_SIZE", "50000"),
            ("HDMO_AUTHORITATIVE_CHECK", "false"),
            ("HDMO_CHECK_INTERVAL", "5m"),
            ("HDMO_FLEET_GUARD_PERCENT", "30"),
            ("HDMO_FLEET_GUARD_MIN_TENANTS", "5"),
            ("HDMO_FLEET_GUARD_HOLD", "30m"),
            ("HDMO_WATCH_NAMESPACE", "helpdesk-tenants"),
            ("HDMO_SELECTOR", "shard=a"),
            ("HDMO_METRICS_ADDR", "0.0.0.0:9090"),
            ("HDMO_PER_TENANT_METRICS", "true"),
            ("HDMO_LEADER_ELECTION", "true"),
            ("HDMO_LEASE_NAMESPACE", "mail-system"),
            ("HDMO_LEASE_NAME", "hdmo-shard-a"),
            ("RUST_LOG", "info,helpdesk_mail_operator=debug"),
            ("TZ", "UTC"),
        ],
        &[],
    );
    let identity = container(&docs)["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "HDMO_LEASE_IDENTITY"))
        .expect("the Lease holder is named after the pod");
    assert_eq!(
        identity["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let c = container(&docs);
    assert_eq!(
        c["image"],
        "registry.internal.example/platform/helpdesk-mail-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "hdmo-shard-a");
    assert_eq!(deployment["metadata"]["labels"]["team"], "platform-mail");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(
        deployment["spec"]["strategy"].is_null(),
        "leader election allows rolling updates"
    );
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["example.com/scrape"], "true");
    assert_eq!(pod["metadata"]["labels"]["example.com/shard"], "a");
    assert_eq!(pod["spec"]["serviceAccountName"], "hdmo-shard-a-sa");
    assert_eq!(
        pod["spec"]["imagePullSecrets"][0]["name"],
        "registry-credentials"
    );
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert!(pod["spec"]["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["spec"]["topologySpreadConstraints"][0]["maxSkew"], 1);
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 10001);
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 10);
    assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 10);

    // watchNamespace turns the ClusterRole into a Role in that namespace.
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Role").collect();
    let tenants_role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "hdmo-shard-a")
        .expect("tenant Role");
    assert_eq!(tenants_role["metadata"]["namespace"], "helpdesk-tenants");
    let lease_role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "hdmo-shard-a-leader-election")
        .expect("lease Role");
    assert_eq!(lease_role["metadata"]["namespace"], "mail-system");
    assert_eq!(lease_role["rules"][1]["resourceNames"][0], "hdmo-shard-a");

    let sa = one(&docs, "ServiceAccount");
    assert_eq!(
        sa["metadata"]["annotations"]["example.com/owner"],
        "platform-mail"
    );

    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 9091);
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "30s");
    assert_eq!(monitor["spec"]["endpoints"][0]["scrapeTimeout"], "5s");

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(
        pdb["spec"]["maxUnavailable"].is_null(),
        "minAvailable wins over maxUnavailable"
    );

    let crd = one(&docs, "CustomResourceDefinition");
    assert!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null(),
        "crds.keep=false drops the keep annotation"
    );
}

#[test]
fn network_policy_allows_only_the_api_server_and_dns() {
    let docs = render(&["-f", FULL_VALUES]);
    let np = &one(&docs, "NetworkPolicy")["spec"];
    assert_eq!(np["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    let egress = np["egress"].as_array().expect("egress rules");
    assert_eq!(
        egress.len(),
        2,
        "one rule for the API server, one for the resolvers (the authoritative check is off)"
    );
    assert_eq!(egress[0]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
    assert_eq!(
        egress[0]["ports"],
        serde_json::json!([{"port": 443, "protocol": "TCP"}])
    );
    assert_eq!(
        egress[1]["ports"],
        serde_json::json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
    );
    assert_eq!(egress[1]["to"][1]["ipBlock"]["cidr"], "2001:db8::53/128");
    let ingress = np["ingress"].as_array().expect("ingress rules");
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"][0]["port"], "metrics");
    assert_eq!(
        ingress[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    // Without CIDRs the rules still restrict ports. The authoritative check (on by default)
    // adds DNS to any address.
    let docs = render(&["--set", "networkPolicy.enabled=true"]);
    let egress = one(&docs, "NetworkPolicy")["spec"]["egress"]
        .as_array()
        .expect("egress")
        .clone();
    assert_eq!(egress.len(), 3);
    assert_eq!(
        egress[2],
        serde_json::json!({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]})
    );
    for rule in &egress {
        assert!(
            rule["ports"].as_array().is_some_and(|p| !p.is_empty()),
            "every egress rule names ports"
        );
    }
}

/// Checks one rendered Deployment against the Pod Security `restricted` profile, field by field.
fn assert_restricted(docs: &[Value], label: &str) {
    let pod = &one(docs, "Deployment")["spec"]["template"]["spec"];
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{label}: pod runAsNonRoot");
    assert_eq!(
        psc["seccompProfile"]["type"], "RuntimeDefault",
        "{label}: pod seccomp"
    );
    assert!(
        psc["runAsUser"].as_u64().is_some_and(|u| u > 0),
        "{label}: pod runAsUser non-zero"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "{label}: the operator needs its token"
    );
    for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(
            pod[forbidden].is_null() || pod[forbidden] == false,
            "{label}: {forbidden}"
        );
    }
    assert!(
        pod["volumes"].is_null(),
        "{label}: no volumes (no hostPath)"
    );
    let containers = pod["containers"].as_array().expect("containers");
    let init = pod["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in containers.iter().chain(init.iter()) {
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{label}: allowPrivilegeEscalation"
        );
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{label}: readOnlyRootFilesystem"
        );
        assert_eq!(sc["runAsNonRoot"], true, "{label}: container runAsNonRoot");
        assert!(
            sc["privileged"].is_null() || sc["privileged"] == false,
            "{label}: privileged"
        );
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{label}: drop ALL"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{label}: no added capabilities"
        );
        assert_eq!(
            sc["seccompProfile"]["type"], "RuntimeDefault",
            "{label}: container seccomp"
        );
        assert!(
            c["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().all(|p| p["hostPort"].is_null()))
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{label}: liveness"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{label}: readiness"
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{label}: memory request"
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{label}: memory limit"
        );
    }
}

#[test]
fn deployment_meets_pod_security_restricted() {
    assert_restricted(&render(&[]), "defaults");
    assert_restricted(&render(&["-f", FULL_VALUES]), "values-all");
}

/// Every rule of every (Cluster)Role: no wildcard, no Secret, only the verbs the operator uses.
fn assert_least_privilege(docs: &[Value]) {
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
        .collect();
    assert!(!roles.is_empty());
    for role in roles {
        let rules = role["rules"].as_array().expect("rules");
        for rule in rules {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for item in rule[field].as_array().into_iter().flatten() {
                    let s = item.as_str().expect("RBAC entries are strings");
                    assert!(!s.contains('*'), "wildcard in {field}: {rule}");
                }
            }
            assert!(
                rule["nonResourceURLs"].is_null(),
                "no non-resource URLs: {rule}"
            );
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for r in &resources {
                assert!(
                    !r.starts_with("secrets"),
                    "Secrets are never granted: {rule}"
                );
                assert!(
                    [
                        "helpdesktenants",
                        "helpdesktenants/status",
                        "helpdesktenants/finalizers",
                        "configmaps",
                        "events",
                        "leases"
                    ]
                    .contains(r),
                    "unexpected resource {r}"
                );
            }
            for v in &verbs {
                assert!(
                    ![
                        "delete",
                        "deletecollection",
                        "escalate",
                        "bind",
                        "impersonate"
                    ]
                    .contains(v),
                    "verb {v}: {rule}"
                );
            }
            if resources.contains(&"helpdesktenants") {
                assert!(
                    !verbs.contains(&"create") && !verbs.contains(&"update"),
                    "tenants are the user's: {rule}"
                );
            }
        }
    }
}

/// The rules of the rendered Role or ClusterRole named `name`.
fn role_rules(docs: &[Value], name: &str) -> Value {
    docs.iter()
        .find(|d| {
            d["kind"].as_str().is_some_and(|k| k.ends_with("Role")) && d["metadata"]["name"] == name
        })
        .map(|d| d["rules"].clone())
        .unwrap_or_else(|| panic!("no Role named {name}"))
}

#[test]
fn rbac_grants_exactly_the_rules_file() {
    // values-all.yaml names the release's objects and its Lease hdmo-shard-a.
    for (values, fullname) in [
        (
            &["--set", "replicaCount=2"][..],
            "hdmo-helpdesk-mail-operator",
        ),
        (&["-f", FULL_VALUES], "hdmo-shard-a"),
    ] {
        let rules = support::rbac::operator_rules(fullname);
        let tenants = serde_json::to_value(&rules.tenants).expect("rules serialize");
        let lease = serde_json::to_value(&rules.lease).expect("rules serialize");
        let docs = render(values);
        assert_eq!(role_rules(&docs, fullname), tenants, "{values:?}");
        assert_eq!(
            role_rules(&docs, &format!("{fullname}-leader-election")),
            lease,
            "{values:?}"
        );
    }
}

#[test]
fn rbac_is_least_privilege() {
    let docs = render(&[]);
    assert_least_privilege(&docs);
    let cluster_role = one(&docs, "ClusterRole");
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["namespace"], "mail-system");
    let docs = render(&["-f", FULL_VALUES]);
    assert_least_privilege(&docs);
    assert!(
        docs.iter().all(|d| d["kind"] != "ClusterRole"),
        "watchNamespace needs no ClusterRole"
    );
    let docs = render(&["--set", "rbac.create=false"]);
    assert!(
        docs.iter()
            .all(|d| !d["kind"].as_str().unwrap_or("").contains("Role"))
    );
}

#[test]
fn leader_election_turns_on_with_more_than_one_replica() {
    for (set, expected) in [
        ("replicaCount=1", false),
        ("replicaCount=2", true),
        ("leaderElection.enabled=true", true),
    ] {
        let docs = render(&["--set", set]);
        let env = env(&docs);
        assert_eq!(
            env.get("HDMO_LEADER_ELECTION").map(String::as_str),
            expected.then_some("true"),
            "{set}: {env:?}"
        );
        assert_eq!(
            env.get("HDMO_LEASE_NAME").map(String::as_str),
            expected.then_some("hdmo-helpdesk-mail-operator"),
            "{set}: lease name defaults to the release's full name"
        );
        let lease_role = docs
            .iter()
            .any(|d| d["kind"] == "Role" && d["rules"][0]["resources"][0] == "leases");
        assert_eq!(lease_role, expected, "{set}: lease Role");
    }
}

#[test]
fn crd_template_is_the_committed_crd() {
    let committed_path = root().join("crds").join(CRD_FILE);
    let copy_path = root().join(CHART).join("files").join(CRD_FILE);
    let committed = std::fs::read_to_string(&committed_path).expect("crds/ holds the CRD");
    let copy = std::fs::read_to_string(&copy_path).expect("the chart holds a copy of the CRD");
    assert!(
        committed == copy,
        "{} differs from {}: run `make chart-crd` (copies crds/ into the chart) or `make crd` (regenerates both)",
        copy_path.display(),
        committed_path.display()
    );

    let docs = render(&[]);
    let mut rendered = one(&docs, "CustomResourceDefinition").clone();
    let meta = rendered["metadata"].as_object_mut().expect("metadata");
    let annotations = meta.remove("annotations").expect("annotations");
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    let labels = meta.remove("labels").expect("labels");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
    let mut expected: Value = serde_saphyr::from_str(&committed).expect("committed CRD parses");
    if let Some(meta) = expected["metadata"].as_object_mut() {
        meta.remove("annotations");
        meta.remove("labels");
    }
    assert!(
        rendered == expected,
        "the rendered CRD differs from crds/{CRD_FILE} beyond labels and annotations"
    );

    // Byte for byte: the rendered text is the file with the chart's metadata lines inserted.
    let (ok, text, stderr) = helm(&[
        "template",
        "hdmo",
        CHART,
        "--kube-version",
        "1.30.0",
        "--show-only",
        "templates/crd.yaml",
    ]);
    assert!(ok, "{stderr}");
    let start = text.find("\nmetadata:\n").expect("top-level metadata") + "\nmetadata:\n".len();
    let name = text[start..].find("  name: ").expect("metadata.name") + start;
    let body = text.find("apiVersion:").expect("document start");
    let unwrapped = format!("{}{}", &text[body..start], &text[name..]);
    assert_eq!(
        unwrapped.trim_end(),
        committed.trim_end(),
        "the CRD template must emit the committed file verbatim"
    );

    let docs = render(&["--set", "crds.enabled=false"]);
    assert!(docs.iter().all(|d| d["kind"] != "CustomResourceDefinition"));
}

#[test]
fn schema_rejects_bad_values() {
    for (set, why) in [
        ("provider.spfDomain=", "an empty provider include"),
        ("provider.defaultSender=nobody", "a sender without @"),
        ("checkInterval=soon", "an unparsable interval"),
        ("fleetGuard.percent=101", "a percentage over 100"),
        ("fleetGuard.hold=forever", "an unparsable hold"),
        ("dns.nameservers={10.0.0.1}", "a nameserver without a port"),
        ("image.pullPolicy=Sometimes", "an unknown pull policy"),
        ("metrics.port=80", "a privileged port"),
        ("unknownKey=1", "an unknown top-level key"),
    ] {
        let (ok, _, stderr) = helm(&[
            "template",
            "hdmo",
            CHART,
            "--kube-version",
            "1.30.0",
            "--set",
            set,
        ]);
        assert!(!ok, "{why} ({set}) must be refused");
        assert!(!stderr.is_empty(), "{set}: helm says why");
    }
    let (ok, _, stderr) = helm(&[
        "template",
        "hdmo",
        CHART,
        "--kube-version",
        "1.30.0",
        "--set",
        "provider.egressIPs=null",
        "--set",
        "provider.smtpHosts=null",
    ]);
    assert!(
        !ok && stderr.contains("egress"),
        "no egress source at all is refused: {stderr}"
    );
}

#[test]
fn image_and_chart_agree_on_the_user() {
    let dockerfile =
        std::fs::read_to_string(root().join("Dockerfile")).expect("the Dockerfile is readable");
    let runtime_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a multi-stage Dockerfile");
    assert!(
        runtime_stage
            .lines()
            .any(|l| l.trim() == "USER 65532:65532"),
        "the runtime stage runs as 65532"
    );
    assert!(
        dockerfile.contains("cargo build --locked --release"),
        "the image is built from the locked dependency set"
    );
    let docs = render(&[]);
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
    let ignored =
        std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore is readable");
    for needed in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "benches",
        "examples",
        "tests",
    ] {
        assert!(
            !ignored.lines().any(|l| l.trim() == needed),
            "{needed} is needed in the build context"
        );
    }
    assert!(
        ignored.lines().any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );
}
