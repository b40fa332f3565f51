//! RFC 7208 `check_host()` against a real DNS server on loopback, section by section.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use helpdesk_mail_operator::dns::{DnsConfig, Resolver};
use helpdesk_mail_operator::spf::{Evaluator, SpfOutcome, SpfQuery, SpfResult};
use support::dns::{TestDns, Zone};

async fn evaluate(zone: Zone, ip: &str, sender: &str, helo: &str) -> SpfOutcome {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let resolver = Resolver::new(&DnsConfig {
        nameservers: vec![server.addr()],
        timeout: Duration::from_millis(500),
        cache_size: 0,
    })
    .expect("resolver");
    let ip: IpAddr = ip.parse().expect("test address");
    Evaluator::new(resolver)
        .check_host(&SpfQuery::mail_from(ip, sender, helo))
        .await
}

async fn result(zone: Zone, ip: &str, domain: &str) -> SpfResult {
    evaluate(zone, ip, &format!("user@{domain}"), "helo.example.net")
        .await
        .result
}

#[tokio::test]
async fn ip4_pass_and_fail() {
    let zone = || Zone::new().txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all");
    assert_eq!(
        result(zone(), "192.0.2.77", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone(), "198.51.100.1", "example.com").await,
        SpfResult::Fail
    );
}

#[tokio::test]
async fn trace_reports_matching_term_and_tree() {
    let zone = Zone::new()
        .txt("example.com", "v=spf1 include:_spf.provider.example -all")
        .txt("_spf.provider.example", "v=spf1 ip4:203.0.113.0/24 ~all");
    let outcome = evaluate(zone, "203.0.113.5", "a@example.com", "h.example.net").await;
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(outcome.trace.lookups, 1);
    let matched = outcome.trace.matched.expect("a term matched");
    assert_eq!(matched.term, "include:_spf.provider.example");
    assert_eq!(matched.domain, "example.com");
    assert_eq!(outcome.trace.tree.children.len(), 1);
    let include = &outcome.trace.tree.children[0];
    assert_eq!(include.domain, "_spf.provider.example");
    assert_eq!(include.result, SpfResult::Pass);
    assert_eq!(include.lookups, 1);
    assert_eq!(
        outcome.trace.tree.record.as_deref(),
        Some("v=spf1 include:_spf.provider.example -all")
    );
    assert_eq!(outcome.trace.tree.record_ttl, Some(300));
    assert_eq!(outcome.trace.terms.len(), 2);
}
