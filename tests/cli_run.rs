//! `run` refuses what it cannot work with, in one short message: a concurrency of 0, and a
//! cluster that is not configured or cannot be reached.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `run` with `args`; kills it when it has not exited within 30 s.
fn run(args: &[&str], kubeconfig: &std::path::Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
        .arg("run")
        .args(["--provider-spf-domain", "spf.provider.test"])
        .args(["--provider-egress-ip", "192.0.2.10"])
        .args(["--default-sender", "notify@provider.test"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("HDMO_CONCURRENCY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the operator binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child
        .try_wait()
        .expect("waiting for the operator")
        .is_none()
    {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("the operator's output")
}

#[test]
fn concurrency_zero_is_refused_at_parse_time() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&["--concurrency", "0"], &dir.path().join("none"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--concurrency") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

/// The error of the operator's failure log line (a JSON line).
fn failure_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("operator failed"))
        .unwrap_or_else(|| panic!("no failure line in:\n{stderr}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    json["fields"]["error"]
        .as_str()
        .expect("the line has an error field")
        .to_owned()
}

#[test]
fn a_missing_kubeconfig_fails_with_one_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.kubeconfig");
    let output = run(&[], &missing);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = failure_line(&stderr);
    assert!(line.contains("no Kubernetes cluster configured"), "{line}");
    assert_eq!(line.matches("No such file").count(), 1, "repeated: {line}");
    assert!(line.len() < 300, "too long: {line}");
}

#[test]
fn an_unreachable_cluster_fails_fast_with_one_short_message() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, learn it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("kubeconfig");
    let text = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "c", "cluster": {
            "server": format!("https://127.0.0.1:{port}"),
            "insecure-skip-tls-verify": true,
        } }],
        "users": [{ "name": "u", "user": { "token": "t" } }],
        "contexts": [{ "name": "x", "context": { "cluster": "c", "user": "u" } }],
        "current-context": "x",
    });
    std::fs::write(&kubeconfig, text.to_string()).unwrap();
    let output = run(&[], &kubeconfig);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "not exited within 30 s: {stderr}"
    );
    let line = failure_line(&stderr);
    assert!(
        line.contains("cannot reach the Kubernetes API server"),
        "{line}"
    );
    assert!(line.len() < 200, "too long: {line}");
}
