//! The project's Helm chart, rendered or installed with the pinned helm.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::{Context as _, ensure};
use serde_json::Value;

use super::cluster;

/// The chart, relative to the repository root.
pub const CHART: &str = "charts/helpdesk-mail-operator";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs helm against the test cluster with its config and cache folders under `home`; fails
/// when helm fails or relays a Pod Security warning.
pub fn helm<S: AsRef<OsStr>>(home: &Path, args: &[S]) -> anyhow::Result<String> {
    let shown = || {
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let output = cluster::tool_command("helm")?
        .args(args)
        .current_dir(root())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .context("running helm")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "helm {} failed: {stderr}", shown());
    // A namespace enforcing `restricted` warns on violations; helm relays the warnings.
    ensure!(
        !stderr.contains("PodSecurity"),
        "helm {}: {stderr}",
        shown()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `helm template` of the chart with `extra` arguments, for the oldest Kubernetes the chart
/// supports: the rendered documents. Panics with helm's message on failure.
pub fn render(extra: &[&str]) -> Vec<Value> {
    let home = std::env::temp_dir().join("hdmo-helm");
    let mut args = vec![
        "template",
        "hdmo",
        CHART,
        "--namespace",
        "mail-system",
        "--kube-version",
        "1.30.0",
    ];
    args.extend_from_slice(extra);
    let stdout = helm(&home, &args).unwrap_or_else(|e| panic!("{e:#}"));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).expect("rendered YAML parses");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}
