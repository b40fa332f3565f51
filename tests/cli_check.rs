//! The `check` command as a person runs it: the built binary against a real DNS server on
//! loopback, its stdout and its exit status.

mod support;

use std::process::Output;

use support::dns::{Data, Fault, TestDns, Zone};

const BIN: &str = env!("CARGO_BIN_EXE_helpdesk-mail-operator");
const PROVIDER: &str = "spf.provider.example";

fn zone() -> Zone {
    Zone::new().txt(
        PROVIDER,
        "v=spf1 ip4:203.0.113.0/24 ip6:2001:db8:1::/48 -all",
    )
}

/// Runs `check` against `server` with the provider flags and `extra` arguments.
async fn run(server: &TestDns, extra: &[&str]) -> Output {
    let nameserver = server.addr().to_string();
    let mut args = vec![
        "check",
        "--provider-spf-domain",
        PROVIDER,
        "--provider-egress-ip",
        "203.0.113.10",
        "--provider-egress-ip",
        "2001:db8:1::10",
        "--nameserver",
        &nameserver,
        "--dns-timeout-ms",
        "300",
    ];
    args.extend_from_slice(extra);
    tokio::process::Command::new(BIN)
        .args(&args)
        .env_remove("HDMO_PROVIDER_EGRESS_IP")
        .env_remove("HDMO_PROVIDER_SMTP_HOST")
        .env_remove("HDMO_NAMESERVER")
        .output()
        .await
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn aligned_domain_exits_zero_and_explains_the_tree() {
    let zone = zone()
        .txt(
            "customer.example",
            "v=spf1 include:spf.provider.example -all",
        )
        .txt("_dmarc.customer.example", "v=DMARC1; p=reject");
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let output = run(&server, &["--domain", "customer.example"]).await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("Verdict: Aligned"), "{text}");
    assert!(
        text.contains("Provider include:  include:spf.provider.example (reachable)"),
        "{text}"
    );
    assert!(text.contains("worst case 1 of 10 DNS lookups"), "{text}");
    assert!(
        text.contains("  customer.example  1 lookup  \"v=spf1 include:spf.provider.example -all\""),
        "{text}"
    );
    assert!(
        text.contains("    include:spf.provider.example  1 lookup"),
        "{text}"
    );
    assert!(text.contains("203.0.113.10    pass"), "{text}");
    assert!(text.contains("2001:db8:1::10  pass"), "{text}");
    assert!(
        text.contains("record:  _dmarc.customer.example \"v=DMARC1; p=reject\""),
        "{text}"
    );
    assert!(!text.contains("Suggested record"), "{text}");
}

#[tokio::test]
async fn missing_include_exits_one_with_the_suggested_record() {
    let zone = zone()
        .txt("customer.example", "v=spf1 a ~all")
        .a("customer.example", "198.51.100.7");
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let output = run(&server, &["--domain", "customer.example"]).await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Verdict: Unaligned (ProviderNotAuthorized)"),
        "{text}"
    );
    assert!(text.contains("203.0.113.10    softfail"), "{text}");
    assert!(text.contains("(missing)"), "{text}");
    assert!(
        text.contains("Suggested record for customer.example (2 of 10 DNS lookups):\n  v=spf1 a include:spf.provider.example ~all"),
        "{text}"
    );
}

#[tokio::test]
async fn servfail_exits_two() {
    let zone = zone().fault("customer.example", Fault::ServFail);
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let output = run(&server, &["--domain", "customer.example"]).await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("Verdict: TemporaryFailure"), "{text}");
    assert!(text.contains("temperror"), "{text}");
}

#[tokio::test]
async fn strict_alignment_failure_exits_one() {
    let zone = zone()
        .txt(
            "bounce.customer.example",
            "v=spf1 include:spf.provider.example -all",
        )
        .txt("_dmarc.customer.example", "v=DMARC1; p=reject; aspf=s");
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let output = run(
        &server,
        &[
            "--domain",
            "customer.example",
            "--envelope-domain",
            "bounce.customer.example",
        ],
    )
    .await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Verdict: Unaligned (DomainNotAligned)"),
        "{text}"
    );
    assert!(
        text.contains("MAIL FROM postmaster@bounce.customer.example"),
        "{text}"
    );
    assert!(
        text.contains("does not align with customer.example (strict)"),
        "{text}"
    );
}

#[tokio::test]
async fn json_output_is_one_object() {
    let zone = zone().txt("customer.example", "v=spf1 mx -all");
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let output = run(
        &server,
        &["--domain", "customer.example", "--output", "json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    let check = &value["check"];
    assert_eq!(check["verdict"]["state"], "Unaligned");
    assert_eq!(check["verdict"]["reason"], "ProviderNotAuthorized");
    assert_eq!(check["envelopeDomain"], "customer.example");
    assert_eq!(check["spf"]["results"][0]["ip"], "203.0.113.10");
    assert_eq!(check["spf"]["results"][0]["result"], "fail");
    assert_eq!(check["spf"]["providerIncludeReachable"], false);
    assert_eq!(
        check["suggestedRecord"]["record"],
        "v=spf1 mx include:spf.provider.example -all"
    );
    assert_eq!(value["includeTree"]["domain"], "customer.example");
    assert_eq!(value["evaluations"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn smtp_hosts_give_the_egress_addresses() {
    let zone = zone()
        .txt(
            "customer.example",
            "v=spf1 include:spf.provider.example -all",
        )
        .a("smtp.provider.example", "203.0.113.99");
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let output = run(
        &server,
        &[
            "--domain",
            "customer.example",
            "--provider-smtp-host",
            "smtp.provider.example",
        ],
    )
    .await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("203.0.113.99    pass"), "{text}");
}

#[tokio::test]
async fn usage_errors_exit_two_and_help_documents_the_exit_status() {
    let server = TestDns::start(zone()).await.expect("DNS server starts");
    let output = run(&server, &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--domain"),
        "{output:?}"
    );
    let help = tokio::process::Command::new(BIN)
        .args(["check", "--help"])
        .output()
        .await
        .expect("the binary runs");
    assert_eq!(help.status.code(), Some(0));
    let help = stdout(&help);
    assert!(
        help.contains("Exit status: 0 when the domain is aligned"),
        "{help}"
    );
    assert!(help.contains("--envelope-domain"), "{help}");
}

#[tokio::test]
async fn provider_settings_come_from_the_operator_environment() {
    // The chart passes the operator's configuration as HDMO_* variables, so `kubectl exec ...
    // check --domain D` inside the pod needs no provider flags.
    let zone = zone().txt(
        "customer.example",
        "v=spf1 include:spf.provider.example -all",
    );
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let output = tokio::process::Command::new(BIN)
        .args(["check", "--domain", "customer.example"])
        .env("HDMO_PROVIDER_SPF_DOMAIN", PROVIDER)
        .env("HDMO_PROVIDER_EGRESS_IP", "203.0.113.10,2001:db8:1::10")
        .env_remove("HDMO_PROVIDER_SMTP_HOST")
        .env("HDMO_NAMESERVER", server.addr().to_string())
        .env("HDMO_DNS_TIMEOUT_MS", "300")
        .output()
        .await
        .expect("the binary runs");
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("203.0.113.10    pass"), "{text}");
    assert!(text.contains("2001:db8:1::10  pass"), "{text}");
}

#[tokio::test]
async fn dkim_section_explains_each_selector_and_can_carry_the_verdict() {
    const KEY: &str = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";
    let record = format!("v=DKIM1; k=rsa; p={KEY}");
    let zone = zone()
        .txt("customer.example", "v=spf1 -all")
        .txt("hd1._domainkey.dkim.provider.example", &record)
        .txt("hd2._domainkey.dkim.provider.example", &record)
        .cname(
            "hd1._domainkey.customer.example",
            "hd1._domainkey.dkim.provider.example",
        );
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let dkim = [
        "--domain",
        "customer.example",
        "--provider-dkim-selector",
        "hd1",
        "--provider-dkim-selector",
        "hd2",
        "--provider-dkim-domain",
        "dkim.provider.example",
    ];
    let output = run(&server, &dkim).await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "SPF alone decides:\n{text}");
    assert!(text.contains("\nDKIM\n"), "{text}");
    assert!(
        text.contains("hd1._domainkey.customer.example  Aligned"),
        "{text}"
    );
    assert!(
        text.contains("hd2._domainkey.customer.example  Missing"),
        "{text}"
    );
    let mut either = dkim.to_vec();
    either.extend(["--required-alignment", "SpfOrDkim"]);
    let output = run(&server, &either).await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("Verdict: Aligned (through DKIM)"), "{text}");

    let output = run(&server, &["--domain", "customer.example"]).await;
    assert!(
        stdout(&output).contains("off: the provider configures no DKIM selector"),
        "{}",
        stdout(&output)
    );
}

/// The tenant zone with its nameserver on loopback and `record` at customer.example.
fn tenant_zone(record: &str, ttl: u32) -> Zone {
    zone()
        .ns("customer.example", "ns1.customer.example")
        .a("ns1.customer.example", "127.0.0.1")
        .with_ttl(
            "customer.example",
            ttl,
            Data::Txt(vec![record.as_bytes().to_vec()]),
        )
}

#[tokio::test]
async fn the_authoritys_answer_ttl_and_split_verdict_are_shown() {
    const ALIGNED: &str = "v=spf1 include:spf.provider.example -all";
    let authority = TestDns::start(tenant_zone(ALIGNED, 900))
        .await
        .expect("authority starts");
    let resolver = TestDns::start(tenant_zone("v=spf1 -all", 120))
        .await
        .expect("resolver starts");
    let port = authority.addr().port().to_string();
    let args = [
        "--domain",
        "customer.example",
        "--authoritative-port",
        &port,
    ];

    let output = run(&resolver, &args).await;
    assert_eq!(output.status.code(), Some(1), "the resolver's verdict");
    let text = stdout(&output);
    let server = format!("ns1.customer.example ({})", authority.addr());
    assert!(
        text.contains(&format!(
            "authority: {server} answers \"{ALIGNED}\" (TTL 900 s): split view"
        )),
        "{text}"
    );
    assert!(text.contains("(TTL 900 s)\n"), "{text}");
    assert!(
        text.contains("warning: split view of customer.example"),
        "{text}"
    );

    let output = run(&resolver, &[&args[..], &["--output", "json"]].concat()).await;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let spf = &value["check"]["spf"];
    assert_eq!(spf["recordTtl"], 900);
    assert_eq!(spf["authority"]["state"], "answered");
    assert_eq!(spf["authority"]["server"], server.as_str());
    assert_eq!(spf["authority"]["records"][0], ALIGNED);
    assert_eq!(spf["authority"]["ttl"], 900);
    assert_eq!(spf["authority"]["agrees"], false);

    let output = run(
        &resolver,
        &[&args[..], &["--no-authoritative-check"]].concat(),
    )
    .await;
    let text = stdout(&output);
    assert!(!text.contains("authority:"), "{text}");
    assert!(text.contains("(TTL 120 s)"), "{text}");
    assert_eq!(
        authority.queries(),
        2,
        "asked once per run with the check on"
    );
}

#[tokio::test]
async fn an_unreachable_authority_is_said_and_the_check_goes_on() {
    let resolver = TestDns::start(tenant_zone("v=spf1 include:spf.provider.example -all", 120))
        .await
        .expect("resolver starts");
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port()
        .to_string();
    let output = run(
        &resolver,
        &[
            "--domain",
            "customer.example",
            "--authoritative-port",
            &closed,
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("authority: unreachable ("), "{text}");
    assert!(text.contains("(TTL 120 s)"), "{text}");
    assert!(!text.contains("split view"), "{text}");
}
