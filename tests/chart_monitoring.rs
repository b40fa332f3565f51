//! The chart's Grafana dashboard and PrometheusRule (docs/design.md §8): off by default, the
//! dashboard is Grafana JSON with panels, every PromQL expression in both names only metrics a
//! running operator exports on `/metrics`, and `promtool check rules` accepts the rules.
//!
//! helm comes from the project's tools cache (`scripts/build-tools`), promtool from
//! `scripts/build-promtool`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use helpdesk_mail_operator::api::{self, HelpdeskTenant, HelpdeskTenantSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use serde_json::Value;
use support::cluster::{self, TestNamespace, eventually};
use support::dns::{Data, Fault, TestDns, Zone};

const DASHBOARD_FILE: &str = "charts/helpdesk-mail-operator/files/dashboard.json";
const DASHBOARD_KEY: &str = "helpdesk-mail-operator.json";
const PROVIDER_SPF: &str = "spf.provider.test";
const EGRESS_IP: &str = "192.0.2.10";
const WAIT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `helm template` of the chart with `--set` values; the rendered documents.
fn render(sets: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = sets.iter().flat_map(|set| ["--set", set]).collect();
    support::chart::render(&args)
}

fn rendered_with_monitoring() -> Vec<Value> {
    render(&[
        "grafanaDashboard.enabled=true",
        "prometheusRule.enabled=true",
    ])
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The dashboard JSON as the rendered ConfigMap carries it.
fn rendered_dashboard(docs: &[Value]) -> Value {
    let maps = find(docs, "ConfigMap");
    assert_eq!(maps.len(), 1, "one dashboard ConfigMap");
    let text = maps[0]["data"][DASHBOARD_KEY]
        .as_str()
        .expect("the ConfigMap holds the dashboard");
    serde_json::from_str(text).expect("the dashboard is valid JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// (where, PromQL) of every dashboard target and templating query.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("panel {:?}", panel["title"]), expr.to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // A datasource variable's query is a plugin type, not PromQL.
        if variable["type"] == "query"
            && let Some(query) = variable["query"]
                .as_str()
                .or_else(|| variable["query"]["query"].as_str())
        {
            // `label_values(<selector>, <label>)`: the selector is PromQL, the label a name.
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map_or(query, |(selector, _)| selector);
            out.push((
                format!("variable {:?}", variable["name"]),
                selector.to_owned(),
            ));
        }
    }
    out
}

/// (alert, PromQL) of every rule of the rendered PrometheusRule.
fn rule_expressions(docs: &[Value]) -> Vec<(String, String)> {
    let rules = find(docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    let mut out = Vec::new();
    for group in rules[0]["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            out.push((
                format!("rule {name:?}"),
                rule["expr"]
                    .as_str()
                    .expect("every rule has an expr")
                    .to_owned(),
            ));
        }
    }
    out
}

/// Labels Prometheus adds to every series of a scrape target: matching on them is fine
/// although `/metrics` does not show them.
const TARGET_LABELS: &[&str] = &[
    "job",
    "namespace",
    "instance",
    "pod",
    "service",
    "container",
];

/// One vector selector of an expression: the metric name and the label names it matches on.
#[derive(Debug)]
struct Selector {
    metric: String,
    labels: Vec<String>,
}

/// PromQL keywords that are not metric names (aggregations, operators, modifiers, grouping).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// The vector selectors of a PromQL expression. A name followed by `(` is a function or an
/// aggregation; `by (...)`-style lists hold label names; strings, `[range]` and numbers are
/// skipped. Enough of the PromQL grammar for the expressions the chart ships.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let skip_until = |j: usize, end: char| {
        let mut k = j + 1;
        while k < chars.len() && chars[k] != end {
            k += 1;
        }
        k + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_until(i, c);
        } else if c == '[' {
            i = skip_until(i, ']');
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let is_list = [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&word.as_str());
            if is_list && chars.get(next) == Some(&'(') {
                i = skip_until(next, ')');
            } else if chars.get(next) == Some(&'(')
                || KEYWORDS.contains(&word.to_lowercase().as_str())
            {
                i = next;
            } else {
                let mut labels = Vec::new();
                if chars.get(next) == Some(&'{') {
                    let end = skip_until(next, '}');
                    let inside: String = chars[next + 1..end - 1].iter().collect();
                    for matcher in split_matchers(&inside) {
                        let name: String = matcher
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            labels.push(name);
                        }
                    }
                    i = end;
                }
                out.push(Selector {
                    metric: word,
                    labels,
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Splits `a="x",b=~"y|z"` at the commas outside quotes.
fn split_matchers(inside: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in inside.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

#[test]
fn selector_parsing_finds_metrics_and_skips_the_rest() {
    let found = selectors(
        "histogram_quantile(0.99, sum by (le, record_type) (rate(a_bucket{outcome=~\"x|y\",b=\"c,d\"}[$__rate_interval]))) / on (job) group_left b_total offset 5m > bool 1e3",
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b_total"]);
    assert_eq!(found[0].labels, ["outcome", "b"]);
}

/// The series names a scrape offers, from the exposition's `# TYPE` lines: prometheus-client
/// writes a counter `x` as the series `x_total`, a histogram `x` as `x_bucket`, `x_sum` and
/// `x_count`, a gauge `x` as `x`. A family with no labelled child yet has only its `# TYPE`
/// line, so the sample lines alone would miss it.
struct Exposition {
    series: BTreeSet<String>,
    /// Label names seen on each series name's samples.
    labels: BTreeMap<String, BTreeSet<String>>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut series = BTreeSet::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                series.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let set = labels.entry(name).or_default();
            if let Some(inside) = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(inside, _)| inside)
            {
                for matcher in split_matchers(inside) {
                    if let Some((label, _)) = matcher.split_once('=') {
                        set.insert(label.trim().to_owned());
                    }
                }
            }
        }
    }
    Exposition { series, labels }
}

#[test]
fn monitoring_is_off_by_default() {
    let docs = render(&[]);
    assert!(find(&docs, "PrometheusRule").is_empty());
    assert!(find(&docs, "ConfigMap").is_empty());
}

#[test]
fn dashboard_is_grafana_json_with_panels_and_the_sidecar_label() {
    let file = std::fs::read_to_string(root().join(DASHBOARD_FILE)).expect("the dashboard file");
    let from_file: Value = serde_json::from_str(&file).expect("files/dashboard.json is JSON");
    let docs = rendered_with_monitoring();
    let dashboard = rendered_dashboard(&docs);
    assert_eq!(
        dashboard, from_file,
        "the ConfigMap carries the file unchanged"
    );
    assert_eq!(dashboard["uid"], "helpdesk-mail-operator");
    let panels = panels(&dashboard);
    let graphs: Vec<&&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 10, "a fleet view has many panels");
    let mut ids = BTreeSet::new();
    for panel in &panels {
        assert!(
            ids.insert(panel["id"].as_i64().expect("a numeric id")),
            "ids unique"
        );
        assert!(
            panel["gridPos"]["w"].as_i64().is_some(),
            "every panel is placed"
        );
    }
    for panel in graphs {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has a query", panel["title"]);
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "job"]);
    for (place, expr) in dashboard_expressions(&dashboard) {
        if place.starts_with("panel") {
            for selector in selectors(&expr) {
                assert!(
                    selector.labels.iter().any(|l| l == "job"),
                    "{place}: {} is scoped to the chosen releases",
                    selector.metric
                );
            }
        }
    }
    let maps = find(&docs, "ConfigMap");
    assert_eq!(maps[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(maps[0]["metadata"]["namespace"], "mail-system");

    let custom = render(&[
        "grafanaDashboard.enabled=true",
        "grafanaDashboard.label=dashboards",
        "grafanaDashboard.labelValue=mail",
        "grafanaDashboard.namespace=monitoring",
    ]);
    let map = find(&custom, "ConfigMap")[0];
    assert_eq!(map["metadata"]["labels"]["dashboards"], "mail");
    assert!(map["metadata"]["labels"]["grafana_dashboard"].is_null());
    assert_eq!(map["metadata"]["namespace"], "monitoring");
}

#[test]
fn prometheus_rule_holds_the_fleet_alerts() {
    let docs = render(&[
        "prometheusRule.enabled=true",
        "prometheusRule.fallbackSpike.transitions=7",
        "prometheusRule.fallbackSpike.window=1h",
    ]);
    let rule = find(&docs, "PrometheusRule")[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let alerts: BTreeMap<String, &Value> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| (r["alert"].as_str().expect("alert").to_owned(), r))
        .collect();
    assert_eq!(
        alerts.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "HelpdeskDnsTemporaryErrors",
            "HelpdeskFallbackSpike",
            "HelpdeskFleetGuardHolding",
            "HelpdeskNoLeader",
            "HelpdeskOperatorAbsent",
            "HelpdeskProviderSpfBroken",
            "HelpdeskReconcileErrors"
        ]
    );
    let spike = alerts["HelpdeskFallbackSpike"]["expr"]
        .as_str()
        .expect("expr");
    assert!(spike.contains("[1h]") && spike.ends_with(">= 7"), "{spike}");
    for (name, alert) in &alerts {
        let description = alert["annotations"]["description"].as_str().expect("text");
        assert!(
            !description.contains("{{") || description.contains("{{ $"),
            "{name}: Prometheus templates survive helm: {description}"
        );
        assert!(
            alert["labels"]["severity"].is_string(),
            "{name} has a severity"
        );
    }
}

/// The rules file `promtool check rules` reads: the PrometheusRule's spec (JSON is YAML).
fn write_rules(dir: &Path) -> std::path::PathBuf {
    let docs = rendered_with_monitoring();
    let rule = find(&docs, "PrometheusRule")[0];
    let path = dir.join("rules.yaml");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&rule["spec"]).expect("the spec serializes"),
    )
    .expect("the rules file is written");
    path
}

#[test]
fn promtool_accepts_the_rules() {
    let script = root().join("scripts/build-promtool");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/build-promtool runs");
    assert!(out.status.success(), "scripts/build-promtool failed");
    let bin = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the bin dir")
        .trim()
        .to_owned();
    let dir = tempfile::tempdir().expect("a temp dir");
    let rules = write_rules(dir.path());
    let out = Command::new(Path::new(&bin).join("promtool"))
        .args(["check", "rules", "--lint=all", "--lint-fatal"])
        .arg(&rules)
        .output()
        .expect("promtool runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "promtool check rules:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SUCCESS: 7 rules found"), "{stdout}");
}

/// The operator binary against the test plane, watching one namespace; killed when dropped.
struct Operator {
    child: Child,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| anyhow!("bad HTTP response"))
}

fn txt(text: &str) -> Data {
    Data::Txt(vec![text.as_bytes().to_vec()])
}

/// Every expression of the dashboard and of the rules names only series a running operator
/// exports, and matches only on labels those series carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_expression_names_an_exported_metric() {
    let docs = rendered_with_monitoring();
    let mut expressions = dashboard_expressions(&rendered_dashboard(&docs));
    expressions.extend(rule_expressions(&docs));
    assert!(expressions.len() > 15, "{expressions:?}");

    let text = scrape_a_working_operator()
        .await
        .expect("a running operator's /metrics");
    let exposition = parse_exposition(&text);
    for name in exposition.labels.keys() {
        assert!(
            exposition.series.contains(name),
            "the sample {name} is covered by the # TYPE suffix rules"
        );
    }
    for (place, expr) in &expressions {
        let found = selectors(expr);
        assert!(!found.is_empty(), "{place}: no metric in {expr}");
        for selector in found {
            assert!(
                exposition.series.contains(&selector.metric),
                "{place}: {} is not exported (exported: {:?})",
                selector.metric,
                exposition.series
            );
            // Label names are checked where the scrape has samples of the series to show them.
            if let Some(seen) = exposition.labels.get(&selector.metric) {
                for label in selector
                    .labels
                    .iter()
                    .filter(|l| !TARGET_LABELS.contains(&l.as_str()))
                {
                    assert!(
                        seen.contains(label),
                        "{place}: {} has no label {label} (has {seen:?})",
                        selector.metric
                    );
                }
            }
        }
    }
    // The labelled families the expressions filter on had samples to check against.
    for metric in [
        "helpdesk_tenants",
        "helpdesk_checks_total",
        "helpdesk_dns_queries_total",
        "helpdesk_fallback_transitions_total",
        "helpdesk_reconcile_errors_total",
    ] {
        assert!(
            exposition.labels.contains_key(metric),
            "{metric} has samples"
        );
    }
}

/// Starts the operator with tenants that are aligned, unaligned, on a SERVFAIL domain and in a
/// ConfigMap conflict, so the labelled series exist, and returns `/metrics` once each has been
/// counted.
async fn scrape_a_working_operator() -> anyhow::Result<String> {
    let client = cluster::client().await?;
    cluster::apply_crd(&client, &api::crd()).await?;
    let ns = TestNamespace::create(&client, "monitoring").await?;
    let mut zone = Zone::new();
    zone.negative_ttl = 1;
    zone.add(
        PROVIDER_SPF,
        1,
        txt(&format!("v=spf1 ip4:{EGRESS_IP} -all")),
    );
    zone.add(
        "aligned.test",
        1,
        txt(&format!("v=spf1 include:{PROVIDER_SPF} -all")),
    );
    zone.add("_dmarc.aligned.test", 1, txt("v=DMARC1; p=reject"));
    zone.add("unaligned.test", 1, txt("v=spf1 -all"));
    zone.add("broken.test", 1, txt("v=spf1 -all"));
    let dns = TestDns::start(zone.fault("broken.test", Fault::ServFail)).await?;
    let metrics_port = free_port()?;
    let child = Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
        .arg("run")
        .args(["--provider-spf-domain", PROVIDER_SPF])
        .args(["--provider-egress-ip", EGRESS_IP])
        .args(["--default-sender", "notify+{tenant}@provider.test"])
        .args(["--nameserver", &dns.addr().to_string()])
        .args(["--dns-timeout-ms", "300"])
        .args(["--check-interval", "2s"])
        .args(["--watch-namespace", ns.name()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("KUBECONFIG", cluster::kubeconfig_env()?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the operator binary")?;
    let _operator = Operator { child };
    let tenants = ns.api::<HelpdeskTenant>();
    for name in ["aligned", "unaligned", "broken"] {
        let address = format!("support@{name}.test");
        let spec = HelpdeskTenantSpec::with_senders([address.as_str()]);
        tenants
            .create(&PostParams::default(), &HelpdeskTenant::new(name, spec))
            .await?;
    }
    let config_maps = ns.api::<ConfigMap>();
    eventually("the aligned tenant's ConfigMap", WAIT, || async {
        Ok(config_maps.get_opt("aligned-mail-settings").await?)
    })
    .await?;
    // A tenant naming another tenant's ConfigMap fails its reconciles (`configmap_taken`), so
    // the error family has a series.
    let mut conflict = HelpdeskTenant::new(
        "conflict",
        HelpdeskTenantSpec::with_senders(["support@aligned.test"]),
    );
    conflict.spec.mail_settings = Some(api::MailSettings {
        config_map_name: Some("aligned-mail-settings".to_owned()),
    });
    tenants.create(&PostParams::default(), &conflict).await?;
    let text = eventually("every tenant checked and counted", WAIT, || async {
        let text = http_get(metrics_port, "/metrics").await?;
        let checked = ["aligned", "unaligned", "temporary_failure"]
            .iter()
            .all(|r| text.contains(&format!("helpdesk_checks_total{{result=\"{r}\"}}")));
        let failed = text.contains("helpdesk_reconcile_errors_total{kind=\"configmap_taken\"}");
        // The aligned tenant's first Aligned verdict moves it to its own address.
        let switched = text.contains("helpdesk_fallback_transitions_total{");
        Ok((checked && failed && switched).then_some(text))
    })
    .await?;
    ns.cleanup().await?;
    Ok(text)
}
