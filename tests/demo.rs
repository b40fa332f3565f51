//! The README's demo command, end to end: `scripts/demo` must install the operator as a Pod
//! on the node, show an aligned tenant, a fallen-back tenant, a tenant whose DNS fails, the
//! switch back after the fix, and leave nothing behind. It runs in the tests' cluster (one node
//! per machine), with the image the tests use.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's own budget; it usually needs about a minute once the tools are cached.
const BUDGET: Duration = Duration::from_secs(300);

/// The text after `marker` on the first line containing it.
fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.split_once(marker).map(|(_, rest)| rest.trim()))
}

#[test]
fn demo_shows_aligned_fallback_and_restored_tenants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut demo = Command::new(root.join("scripts/demo"));
    // The demo DNS server cargo test built, when the run built the examples too (`cargo test
    // --examples`, as scripts/test does). Otherwise the demo builds it itself.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dns_server = target.join("debug/examples/dns-server");
    if dns_server.is_file() {
        demo.env("HDMO_DNS_SERVER_BIN", &dns_server);
    }
    let kubeconfig = support::cluster::kubeconfig_env().expect("the tests' cluster");
    let image = support::node::operator_image().expect("the operator's image");
    demo.env("HDMO_DEMO_KUBECONFIG", &kubeconfig)
        .env("HDMO_OPERATOR_IMAGE", &image.reference);
    let started = Instant::now();
    let output = demo
        .current_dir(root)
        .env("HDMO_DEMO_TIMEOUT", "120")
        .stdin(Stdio::null())
        .output()
        .expect("scripts/demo runs");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/demo failed with {}:\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        elapsed < BUDGET,
        "scripts/demo took {elapsed:?}, over {BUDGET:?}"
    );

    // Before the fix: one aligned tenant, one falling back, one with failing DNS.
    let (before, after_fix) = stdout
        .split_once("==> globex sends as itself again")
        .unwrap_or_else(|| panic!("the demo never showed the switch back:\n{stdout}"));
    for expected in [
        "acme-mail-settings: sender-mode=tenant from=support@acme.example",
        "globex-mail-settings: sender-mode=fallback from=notifications+globex@mailing.provider.example reply-to=help@globex.example",
        "initech-mail-settings: sender-mode=fallback",
        "hooli-mail-settings: sender-mode=tenant from=support@hooli.example",
        "suggested: v=spf1 include:_spf.globex-mail.example include:spf.mailing.provider.example ~all",
        "it may not read Secrets: no",
        "on node helpdesk-mail-operator-node, ready",
        &format!("image {}", image.reference),
    ] {
        assert!(
            before.contains(expected),
            "missing {expected:?} in:\n{before}"
        );
    }
    let table_row = |text: &str, tenant: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with(&format!("{tenant} ")))
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|row| row.len() >= 5)
            .unwrap_or_else(|| panic!("no `kubectl get hdt` row for {tenant} in:\n{text}"))
    };
    // NAME ALIGNED FALLBACK SENDERS REASON ...
    assert_eq!(
        table_row(before, "acme")[1..5],
        ["True", "False", "1/1", "Aligned"]
    );
    assert_eq!(
        table_row(before, "globex")[1..5],
        ["False", "True", "0/1", "ProviderNotAuthorized"]
    );
    assert_eq!(
        table_row(before, "initech")[1..5],
        ["Unknown", "True", "0/1", "DnsTemporaryFailure"]
    );

    // After the fix: globex is back on its own address, the others unchanged.
    for expected in [
        "acme-mail-settings: sender-mode=tenant",
        "globex-mail-settings: sender-mode=tenant from=help@globex.example reply-to=",
        "initech-mail-settings: sender-mode=fallback",
        "hooli-mail-settings: sender-mode=tenant from=support@hooli.example",
        "TenantSenderRestored",
        "nothing is left running",
    ] {
        assert!(
            after_fix.contains(expected),
            "missing {expected:?} in:\n{after_fix}"
        );
    }
    assert_eq!(
        table_row(after_fix, "globex")[1..5],
        ["True", "False", "1/1", "Aligned"]
    );

    // Nothing left behind: the release's namespace is gone or going, and the demo's folder too.
    let pod = after(&stdout, "operator pod ").expect("the demo names the operator's Pod");
    assert!(
        pod.starts_with("demo-helpdesk-mail-operator-"),
        "the operator's Pod: {pod}"
    );
    let work = after(&stdout, "DNS server on ")
        .and_then(|rest| rest.split_once(" serving "))
        .and_then(|(_, zones)| Path::new(zones).parent().map(Path::to_path_buf))
        .expect("the demo names its zone file");
    assert!(!work.exists(), "{} was left behind", work.display());
    let phase = support::cluster::run_tool(
        "kubectl",
        &[
            "get",
            "namespace",
            "helpdesk-mail-system",
            "--ignore-not-found",
            "-o",
            "jsonpath={.status.phase}",
        ],
    )
    .expect("kubectl get namespace");
    assert!(
        phase.is_empty() || phase == "Terminating",
        "the demo's namespace is still {phase}"
    );
}
