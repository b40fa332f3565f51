//! The test cluster's node: the operator's image built here (`scripts/build-image`), the
//! node's bridge address, and what a running container really is (read from `/proc`).
//!
//! `scripts/test` builds the image once and passes it on in `HDMO_OPERATOR_IMAGE` and
//! `HDMO_OPERATOR_IMAGE_ARCHIVE`; without them the first test to ask builds and imports it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster;

/// The operator's image as the node's containerd knows it.
#[derive(Clone, Debug)]
pub struct Image {
    /// `localhost/helpdesk-mail-operator:<version>-<digest>`.
    pub reference: String,
    /// The OCI archive it was imported from.
    pub archive: PathBuf,
}

impl Image {
    /// The repository part (`image.repository` of the chart).
    pub fn repository(&self) -> &str {
        self.reference
            .rsplit_once(':')
            .map_or(&self.reference, |(r, _)| r)
    }

    /// The tag part (`image.tag` of the chart).
    pub fn tag(&self) -> &str {
        self.reference.rsplit_once(':').map_or("", |(_, t)| t)
    }

    /// `--set` arguments that make the chart run this image and never pull.
    pub fn helm_sets(&self) -> Vec<String> {
        vec![
            "--set".into(),
            format!("image.repository={}", self.repository()),
            "--set".into(),
            format!("image.tag={}", self.tag()),
            "--set".into(),
            "image.pullPolicy=Never".into(),
        ]
    }
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The operator's image, imported into the node: from the environment, or built now.
pub fn operator_image() -> anyhow::Result<Image> {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_image().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|error| anyhow!("no operator image: {error}"))
}

fn build_image() -> anyhow::Result<Image> {
    if let (Some(reference), Some(archive)) = (
        std::env::var_os("HDMO_OPERATOR_IMAGE").filter(|v| !v.is_empty()),
        std::env::var_os("HDMO_OPERATOR_IMAGE_ARCHIVE").filter(|v| !v.is_empty()),
    ) {
        return Ok(Image {
            reference: reference.to_string_lossy().into_owned(),
            archive: PathBuf::from(archive),
        });
    }
    // The plane (and so its node) must run before the image can be imported.
    cluster::kubeconfig_env()?;
    let script = repo_root().join("scripts/build-image");
    let output = Command::new(&script)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "scripts/build-image failed with {}: {stdout}",
        output.status
    );
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    let reference = lines
        .next_back()
        .ok_or_else(|| anyhow!("scripts/build-image printed nothing"))?
        .to_owned();
    let archive = stdout
        .lines()
        .find_map(|l| l.strip_prefix("archive "))
        .ok_or_else(|| anyhow!("scripts/build-image printed no archive: {stdout}"))?;
    Ok(Image {
        reference,
        archive: PathBuf::from(archive.trim()),
    })
}

/// The node's InternalIP: the bridge's host address, where pods reach the host.
pub async fn host_ip(client: &Client) -> anyhow::Result<IpAddr> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let node = nodes
        .items
        .first()
        .ok_or_else(|| anyhow!("the test cluster has no node"))?;
    let address = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .ok_or_else(|| anyhow!("the node has no InternalIP"))?;
    address
        .address
        .parse()
        .with_context(|| format!("the node's InternalIP {:?}", address.address))
}

/// `GET path` over plain HTTP/1.0; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header from {addr}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line from {addr}: {head}"))?;
    Ok((code, body.to_owned()))
}

/// The sum of every sample of `name` in Prometheus text (all label sets).
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// What the kernel says about a container's main process.
#[derive(Debug)]
pub struct ProcessFacts {
    pub pid: u32,
    /// Real, effective, saved and filesystem user ids.
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// Effective, permitted and bounding capability sets, as hex masks.
    pub cap_eff: u64,
    pub cap_prm: u64,
    pub cap_bnd: u64,
    pub no_new_privs: bool,
    /// 2: a seccomp filter is in force.
    pub seccomp_mode: u32,
    /// The mount options of the process's root file system.
    pub root_mount_options: Vec<String>,
}

/// Finds the process of a running container (`containerd://<id>`) on this machine, through
/// the cgroup path kubelet gives it, and reads its credentials and confinement from `/proc`.
pub fn container_process(container_id: &str) -> anyhow::Result<ProcessFacts> {
    let id = container_id
        .strip_prefix("containerd://")
        .ok_or_else(|| anyhow!("not a containerd container id: {container_id}"))?;
    let mut pids: Vec<u32> = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if cgroup.lines().any(|l| l.ends_with(id)) {
            pids.push(pid);
        }
    }
    // The container's first process has the lowest pid among its processes.
    pids.sort_unstable();
    let pid = *pids
        .first()
        .ok_or_else(|| anyhow!("no process in the cgroup of container {id}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<&str> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    let ids = |name: &str| -> anyhow::Result<Vec<u32>> {
        field(name)?
            .split_whitespace()
            .map(|v| v.parse().context("an id"))
            .collect()
    };
    let hex = |name: &str| -> anyhow::Result<u64> {
        u64::from_str_radix(field(name)?, 16).with_context(|| format!("{name} of {pid}"))
    };
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    // Fields: id parent major:minor root mount-point options ...
    let root_mount_options = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"/")).then(|| f.get(5).map(|o| o.to_string()))
        })
        .flatten()
        .next_back()
        .map(|o| o.split(',').map(str::to_owned).collect())
        .ok_or_else(|| anyhow!("no root mount in /proc/{pid}/mountinfo"))?;
    let facts = ProcessFacts {
        pid,
        uids: ids("Uid")?,
        gids: ids("Gid")?,
        cap_eff: hex("CapEff")?,
        cap_prm: hex("CapPrm")?,
        cap_bnd: hex("CapBnd")?,
        no_new_privs: field("NoNewPrivs")? == "1",
        seccomp_mode: field("Seccomp")?.parse().context("Seccomp")?,
        root_mount_options,
    };
    if facts.uids.is_empty() {
        bail!("no uids for {pid}");
    }
    Ok(facts)
}
