//! The README's demo command, end to end: `scripts/demo` must show an aligned tenant, a
//! fallen-back tenant, a tenant whose DNS fails, the switch back after the fix, and leave
//! nothing running.

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
    // The binaries cargo test built: the operator always; the demo DNS server when the run
    // built the examples too (`cargo test --all-targets`, as scripts/test does). Otherwise the
    // demo builds them itself.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dns_server = target.join("debug/examples/dns-server");
    if dns_server.is_file() {
        demo.env(
            "HDMO_OPERATOR_BIN",
            env!("CARGO_BIN_EXE_helpdesk-mail-operator"),
        )
        .env("HDMO_DNS_SERVER_BIN", &dns_server);
    }
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
        "suggested: v=spf1 include:_spf.globex-mail.example include:spf.mailing.provider.example ~all",
        "it may not read Secrets: no",
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

    // Nothing left behind: the operator's process and the demo's folder are gone.
    let log_line = after(&stdout, "pid ").expect("the demo prints the operator's pid");
    let (pid, log) = log_line.split_once(", log ").expect("pid N, log PATH");
    let work = Path::new(log)
        .parent()
        .expect("the log lives in the demo's folder");
    assert!(!work.exists(), "{} was left behind", work.display());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("helpdesk-mail-operator"),
        "the operator (pid {pid}) is still running"
    );
    let plane = after(&stderr, "data in ").map(str::to_owned);
    if let Some(plane) = plane {
        assert!(
            !Path::new(&plane).exists(),
            "the demo's control plane data {plane} was left behind"
        );
    }
}
