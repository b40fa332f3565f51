//! The authoritative vantage (docs/design.md §6) against real DNS servers on loopback: one
//! test server as the tenant zone's authority, reached at a lab port, and either unbound or a
//! second test server as the configured resolver.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use helpdesk_mail_operator::alignment::{
    AuthorityReport, Provider, SenderCheck, SenderInput, UnalignedReason, Verdict, check_sender,
};
use helpdesk_mail_operator::api::RequiredAlignment;
use helpdesk_mail_operator::dns::{Dns, DnsConfig, Resolver};
use support::dns::{Data, Fault, TestDns, Zone};
use support::unbound::Unbound;

const PROVIDER: &str = "spf.provider.example";
const EGRESS: &str = "192.0.2.10";
const DOMAIN: &str = "customer.example";
const ALIGNED: &str = "v=spf1 include:spf.provider.example -all";
const TIMEOUT: Duration = Duration::from_millis(500);

fn provider() -> Provider {
    Provider {
        spf_domain: PROVIDER.to_string(),
        egress_ips: vec![EGRESS.parse().expect("address")],
        dkim_selectors: Vec::new(),
    }
}

fn sender(envelope: Option<&str>) -> SenderInput {
    SenderInput {
        address: format!("support@{DOMAIN}"),
        envelope_domain: envelope.map(str::to_string),
        required: RequiredAlignment::Spf,
    }
}

/// The tenant's zone with its nameserver (on loopback), the SPF record at `name` with `ttl`,
/// and the provider's record.
fn zone(name: &str, record: &str, ttl: u32) -> Zone {
    Zone::new()
        .ns(DOMAIN, "ns1.customer.example")
        .a("ns1.customer.example", "127.0.0.1")
        .with_ttl(name, ttl, Data::Txt(vec![record.as_bytes().to_vec()]))
        .txt(PROVIDER, "v=spf1 ip4:192.0.2.10 -all")
}

/// An authority publishing `published` (record, TTL) at `name`, and a test server standing
/// as the configured resolver that answers `cached` there.
async fn authority_and_resolver(
    name: &str,
    published: (&str, u32),
    cached: (&str, u32),
) -> (TestDns, TestDns) {
    let authority = TestDns::start(zone(name, published.0, published.1))
        .await
        .expect("authority");
    let resolver = TestDns::start(zone(name, cached.0, cached.1))
        .await
        .expect("resolver");
    (authority, resolver)
}

/// A resolver asking `resolver` and the authorities on `authority_port`.
fn resolver(resolver: std::net::SocketAddr, authority_port: u16) -> Resolver {
    Resolver::new(&DnsConfig {
        nameservers: vec![resolver],
        timeout: TIMEOUT,
        cache_size: 1_000,
        cache_size_fixed: true,
        authoritative_check: true,
        authoritative_port: authority_port,
    })
    .expect("resolver")
}

fn split_warnings(check: &SenderCheck) -> Vec<&String> {
    check
        .spf
        .warnings
        .iter()
        .filter(|w| w.starts_with("split view"))
        .collect()
}

/// (a) Behind a caching resolver whose TTLs count down, the TTL recorded is the authority's
/// full TTL from the first check on.
#[tokio::test]
async fn the_recorded_ttl_is_the_authoritys_full_ttl_behind_a_counting_down_cache() {
    const TTL: u32 = 30;
    let authority = TestDns::start(zone(DOMAIN, ALIGNED, TTL))
        .await
        .expect("authority");
    let unbound = Unbound::start(authority.addr()).expect("unbound");
    // Another client of the same cache asked a while ago.
    let other = resolver(unbound.addr(), authority.addr().port());
    other.txt(DOMAIN).await.expect("priming");
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let operator = resolver(unbound.addr(), authority.addr().port());
    let counted_down = operator.txt(DOMAIN).await.expect("txt").ttl;
    assert!(
        counted_down < Some(TTL),
        "the caching resolver hands out a remainder: {counted_down:?}"
    );
    let check = check_sender(&operator, &provider(), &sender(None)).await;
    assert_eq!(check.verdict, Verdict::Aligned);
    assert_eq!(check.spf.record_ttl, Some(TTL), "{:?}", check.spf);
    assert!(
        split_warnings(&check).is_empty(),
        "{:?}",
        check.spf.warnings
    );
    match &check.spf.authority {
        Some(AuthorityReport::Answered {
            server,
            records,
            ttl,
            agrees,
        }) => {
            assert_eq!(
                server,
                &format!("ns1.customer.example ({})", authority.addr())
            );
            assert_eq!(records, &[ALIGNED]);
            assert_eq!(*ttl, Some(TTL));
            assert!(agrees);
        }
        other => panic!("the authority answered: {other:?}"),
    }
}

/// (b) The configured resolver and the authority disagree: a split-verdict warning naming
/// both answers and the server; the verdict is the resolver's.
#[tokio::test]
async fn a_split_view_is_a_warning_and_the_verdict_stays_the_resolvers() {
    let (authority, stale) =
        authority_and_resolver(DOMAIN, (ALIGNED, 600), ("v=spf1 -all", 300)).await;
    let dns = resolver(stale.addr(), authority.addr().port());

    let check = check_sender(&dns, &provider(), &sender(None)).await;
    assert!(
        matches!(
            check.verdict,
            Verdict::Unaligned {
                reason: UnalignedReason::ProviderNotAuthorized,
                ..
            }
        ),
        "{:?}",
        check.verdict
    );
    let warnings = split_warnings(&check);
    assert_eq!(warnings.len(), 1, "{:?}", check.spf.warnings);
    let warning = warnings[0];
    assert!(warning.contains("\"v=spf1 -all\""), "{warning}");
    assert!(warning.contains(&format!("{ALIGNED:?}")), "{warning}");
    assert!(
        warning.contains(&format!("ns1.customer.example ({})", authority.addr())),
        "{warning}"
    );
    assert_eq!(check.spf.record_ttl, Some(600), "the authority's TTL");
    assert!(matches!(
        check.spf.authority,
        Some(AuthorityReport::Answered { agrees: false, .. })
    ));

    // Nothing changed in DNS: the next check reports the very same (no status write).
    let again = check_sender(&dns, &provider(), &sender(None)).await;
    assert_eq!(again, check);
}

/// (c) The authority cannot be reached (a port nobody listens on, a server that never
/// answers): the check goes on with the resolver's answer and TTL, without a warning.
#[tokio::test]
async fn an_unreachable_authority_leaves_the_resolvers_answer() {
    let resolver_dns = TestDns::start(zone(DOMAIN, ALIGNED, 300))
        .await
        .expect("resolver");
    let closed = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let silent = TestDns::start(zone(DOMAIN, ALIGNED, 300).fault(DOMAIN, Fault::Timeout))
        .await
        .expect("silent authority");
    for port in [closed, silent.addr().port()] {
        let dns = resolver(resolver_dns.addr(), port);
        let check = check_sender(&dns, &provider(), &sender(None)).await;
        assert_eq!(check.verdict, Verdict::Aligned, "port {port}");
        assert_eq!(check.spf.record_ttl, Some(300), "port {port}");
        assert!(
            split_warnings(&check).is_empty(),
            "port {port}: {:?}",
            check.spf.warnings
        );
        assert!(
            matches!(
                check.spf.authority,
                Some(AuthorityReport::Unreachable { .. })
            ),
            "port {port}: {:?}",
            check.spf.authority
        );
    }
}

/// (d) Checks within the authority's TTL ask it nothing new, and the zone is found from a
/// subdomain (the envelope domain) by walking up.
#[tokio::test]
async fn repeated_checks_within_the_ttl_do_not_ask_the_authority_again() {
    let envelope = "bounce.customer.example";
    let (authority, resolver_dns) =
        authority_and_resolver(envelope, (ALIGNED, 600), (ALIGNED, 600)).await;
    let dns = resolver(resolver_dns.addr(), authority.addr().port());

    let first = check_sender(&dns, &provider(), &sender(Some(envelope))).await;
    assert_eq!(first.verdict, Verdict::Aligned);
    assert!(matches!(
        first.spf.authority,
        Some(AuthorityReport::Answered { agrees: true, .. })
    ));
    assert_eq!(authority.queries(), 1, "one question to the authority");
    assert_eq!(dns.stats().authority_queries, 1);
    let resolver_queries = resolver_dns.queries();

    for _ in 0..5 {
        let again = check_sender(&dns, &provider(), &sender(Some(envelope))).await;
        assert_eq!(again, first);
    }
    assert_eq!(authority.queries(), 1, "the authority's answer is cached");
    assert_eq!(dns.stats().authority_queries, 1);
    assert_eq!(
        resolver_dns.queries(),
        resolver_queries,
        "NS and address lookups are cached too"
    );
}

/// With the check off nothing but the configured resolver is asked.
#[tokio::test]
async fn with_the_check_off_no_authority_is_asked() {
    let (authority, resolver_dns) =
        authority_and_resolver(DOMAIN, (ALIGNED, 600), ("v=spf1 -all", 300)).await;
    let dns = Resolver::new(&DnsConfig {
        authoritative_check: false,
        authoritative_port: authority.addr().port(),
        ..resolver_dns.resolver_config(TIMEOUT, 1_000)
    })
    .expect("resolver");
    let check = check_sender(&dns, &provider(), &sender(None)).await;
    assert_eq!(check.spf.authority, None);
    assert_eq!(check.spf.record_ttl, Some(300));
    assert!(split_warnings(&check).is_empty());
    assert_eq!(authority.queries(), 0);
}
