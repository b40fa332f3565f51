//! The image `scripts/build-image` builds here and the Dockerfile's image (for users with a
//! registry) have one layout: the binary's path, the user, the entrypoint and command, the
//! exposed port and the labels, and no shell. The Dockerfile's final stage is read as text; the
//! built image from its OCI archive.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, anyhow, ensure};
use serde_json::Value;
use support::node;

/// The final stage of the Dockerfile, one instruction per entry (continuations joined).
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head.trim_end());
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        instructions.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    let last_from = instructions
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .unwrap_or(0);
    instructions.split_off(last_from)
}

fn instruction<'a>(stage: &'a [(String, String)], keyword: &str) -> anyhow::Result<&'a str> {
    stage
        .iter()
        .rev()
        .find(|(k, _)| k == keyword)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| anyhow!("the Dockerfile's final stage has no {keyword}"))
}

/// `LABEL a="x" b="y"` pairs.
fn labels(stage: &[(String, String)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (_, text) in stage.iter().filter(|(k, _)| k == "LABEL") {
        let mut rest = text.as_str();
        while let Some((key, after)) = rest.split_once("=\"") {
            let Some((value, tail)) = after.split_once('"') else {
                break;
            };
            labels.insert(key.trim().to_owned(), value.to_owned());
            rest = tail;
        }
    }
    labels
}

/// One member of a tar archive, via the system's tar.
fn tar_member(archive: &Path, member: &str) -> anyhow::Result<Vec<u8>> {
    let output = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .context("running tar")?;
    ensure!(
        output.status.success(),
        "tar -xOf {} {member}: {}",
        archive.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

fn blob(archive: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("digest {digest}"))?;
    tar_member(archive, &format!("blobs/sha256/{hex}"))
}

#[test]
fn built_image_has_the_dockerfile_layout() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    let stage = final_stage(&dockerfile);

    let image = node::operator_image()?;
    let index: Value = serde_json::from_slice(&tar_member(&image.archive, "index.json")?)?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("index.json names no manifest"))?;
    ensure!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"]
            == image.reference.as_str(),
        "the archive is not {}: {index}",
        image.reference
    );
    let manifest: Value = serde_json::from_slice(&blob(&image.archive, manifest_digest)?)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("the manifest names no config"))?;
    let config: Value = serde_json::from_slice(&blob(&image.archive, config_digest)?)?;
    let config = &config["config"];

    // USER, ENTRYPOINT, CMD and EXPOSE of the Dockerfile's final stage.
    ensure!(
        config["User"] == instruction(&stage, "USER")?,
        "User {} vs the Dockerfile's USER",
        config["User"]
    );
    let entrypoint: Value = serde_json::from_str(instruction(&stage, "ENTRYPOINT")?)?;
    ensure!(
        config["Entrypoint"] == entrypoint,
        "Entrypoint {}",
        config["Entrypoint"]
    );
    let cmd: Value = serde_json::from_str(instruction(&stage, "CMD")?)?;
    ensure!(config["Cmd"] == cmd, "Cmd {}", config["Cmd"]);
    let exposed = format!("{}/tcp", instruction(&stage, "EXPOSE")?);
    ensure!(
        config["ExposedPorts"].get(&exposed).is_some(),
        "ExposedPorts {} lacks {exposed}",
        config["ExposedPorts"]
    );
    for (key, value) in labels(&stage) {
        ensure!(
            config["Labels"][&key] == value.as_str(),
            "label {key}: {} vs {value:?}",
            config["Labels"][&key]
        );
    }

    // The binary where the Dockerfile copies it and the entrypoint points; no shell anywhere.
    let copy = stage
        .iter()
        .find(|(k, v)| k == "COPY" && v.contains("helpdesk-mail-operator"))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| anyhow!("the Dockerfile copies no binary"))?;
    let destination = copy
        .split_whitespace()
        .next_back()
        .ok_or_else(|| anyhow!("COPY {copy}"))?;
    ensure!(
        entrypoint[0] == destination,
        "ENTRYPOINT is not the copied binary"
    );
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("the manifest has no layer"))?;
    ensure!(
        manifest["layers"].as_array().map(Vec::len) == Some(1),
        "one layer expected: {manifest}"
    );
    let scratch = tempfile::tempdir()?;
    let layer = scratch.path().join("layer.tar");
    std::fs::write(&layer, blob(&image.archive, layer_digest)?)?;
    let listing = Command::new("tar").arg("-tvf").arg(&layer).output()?;
    ensure!(listing.status.success(), "tar -tvf of the layer failed");
    let listing = String::from_utf8(listing.stdout)?;
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let mode = l.split_whitespace().next()?;
            let path = l.split_whitespace().next_back()?;
            Some((mode, path))
        })
        .collect();
    let binary = destination.trim_start_matches('/');
    let (mode, _) = entries
        .iter()
        .find(|(_, p)| *p == binary)
        .ok_or_else(|| anyhow!("no {binary} in the image:\n{listing}"))?;
    ensure!(
        mode.starts_with('-') && mode.contains('x'),
        "{binary} is not an executable file: {mode}"
    );
    let shells: Vec<&str> = entries
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            matches!(name, "sh" | "bash" | "dash" | "ash" | "busybox")
        })
        .collect();
    ensure!(shells.is_empty(), "the image has a shell: {shells:?}");
    Ok(())
}
