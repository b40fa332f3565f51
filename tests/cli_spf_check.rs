//! `spf check` as a user runs it: the built binary against a DNS server on loopback.

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::dns::{Fault, TestDns, Zone};

fn zone() -> Zone {
    Zone::new()
        .txt(
            "example.com",
            "v=spf1 include:_spf.provider.example -all exp=why.example.com",
        )
        .txt(
            "_spf.provider.example",
            "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all",
        )
        .txt("why.example.com", "%{i} may not send for %{d}")
        .txt("helo.example.org", "v=spf1 ip4:198.51.100.7 -all")
        .txt(
            "slow.example.com",
            "v=spf1 include:timeout.example.com -all",
        )
        .fault("timeout.example.com", Fault::Timeout)
}

fn spf_check(server: &TestDns, args: &[&str]) -> Output {
    let nameserver = server.addr().to_string();
    Command::new(env!("CARGO_BIN_EXE_helpdesk-mail-operator"))
        .args([
            "spf",
            "check",
            "--nameserver",
            &nameserver,
            "--dns-timeout-ms",
            "300",
        ])
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json(output: &Output) -> Value {
    let stdout = String::from_utf8(output.stdout.clone()).expect("utf-8 stdout");
    assert_eq!(stdout.lines().count(), 1, "one line on stdout: {stdout}");
    serde_json::from_str(&stdout).expect("stdout is one JSON object")
}

#[tokio::test(flavor = "multi_thread")]
async fn pass_through_include() {
    let server = TestDns::start(zone()).await.expect("server");
    let out = spf_check(
        &server,
        &[
            "--ip",
            "192.0.2.10",
            "--sender",
            "a@example.com",
            "--helo",
            "mx.example.net",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["result"], "pass");
    assert_eq!(v["explanation"], Value::Null);
    assert_eq!(v["trace"]["lookups"], 1);
    assert_eq!(v["trace"]["void_lookups"], 0);
    assert_eq!(
        v["trace"]["matched"]["term"],
        "include:_spf.provider.example"
    );
    assert_eq!(
        v["trace"]["tree"]["children"][0]["domain"],
        "_spf.provider.example"
    );
    assert_eq!(v["trace"]["tree"]["children"][0]["result"], "pass");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_with_explanation_exits_zero() {
    let server = TestDns::start(zone()).await.expect("server");
    let out = spf_check(
        &server,
        &[
            "--ip",
            "203.0.113.9",
            "--sender",
            "a@example.com",
            "--helo",
            "mx.example.net",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["result"], "fail");
    assert_eq!(v["explanation"], "203.0.113.9 may not send for example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_sender_checks_postmaster_at_helo() {
    let server = TestDns::start(zone()).await.expect("server");
    let out = spf_check(
        &server,
        &[
            "--ip",
            "198.51.100.7",
            "--sender",
            "",
            "--helo",
            "helo.example.org",
            "--output",
            "json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["result"], "pass");
    assert_eq!(v["trace"]["sender"], "postmaster@helo.example.org");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_temperror_and_exit_zero() {
    let server = TestDns::start(zone()).await.expect("server");
    let out = spf_check(
        &server,
        &[
            "--ip",
            "192.0.2.1",
            "--sender",
            "b@slow.example.com",
            "--helo",
            "h.example",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["result"], "temperror");
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv4_mapped_and_ipv6_clients() {
    let server = TestDns::start(zone()).await.expect("server");
    for ip in ["::ffff:192.0.2.10", "2001:db8::25"] {
        let out = spf_check(
            &server,
            &[
                "--ip",
                ip,
                "--sender",
                "a@example.com",
                "--helo",
                "h.example",
            ],
        );
        assert_eq!(json(&out)["result"], "pass", "{ip}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_output_for_a_person() {
    let server = TestDns::start(zone()).await.expect("server");
    let out = spf_check(
        &server,
        &[
            "--ip",
            "203.0.113.9",
            "--sender",
            "a@example.com",
            "--helo",
            "h.example",
            "--output",
            "text",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.starts_with("result:       fail\n"), "{text}");
    assert!(
        text.contains("explanation:  203.0.113.9 may not send for example.com"),
        "{text}"
    );
    assert!(
        text.contains("  include _spf.provider.example: softfail (1 lookup)"),
        "{text}"
    );
    assert!(text.contains("lookups:      1 of 10"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_usage_errors() {
    let server = TestDns::start(zone()).await.expect("server");
    let out = spf_check(&server, &["--ip", "not-an-ip", "--sender", "a@example.com"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty());
}
