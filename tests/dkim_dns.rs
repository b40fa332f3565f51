//! The DKIM path against a real DNS server on loopback: every selector outcome, through the
//! shared resolver (which follows CNAMEs out of sight) and through a resolver that also
//! reports CNAMEs (so chains are shown and loops told apart from server failures).

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use helpdesk_mail_operator::dkim::{
    DkimReport, DkimState, ProviderKey, ProviderSelector, SelectorOutcome, check_domain,
    fetch_provider_keys,
};
use helpdesk_mail_operator::dmarc::AlignmentMode;
use helpdesk_mail_operator::dns::{Answer, CnameTarget, Dns, DnsConfig, DnsError, Resolver};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use support::dns::{Data, Fault, TestDns, Zone};

/// The provider's current 2048-bit RSA key (longer than one 255-byte character-string).
const KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA3s2/mfI0ooRsRbbJJhdXWF68H5vnqFgXc2cADqwkM8YvrvfVPNgskRDi8oDFXBRLyvlofMvLJPqaBvroNeDc3FkjU4N+rszJBHLCoufZiOKib6GFmVf8IBg+ntPiHmOFi0ubJA2n6hXvQ5aymTLYTObZ7VaAzeGMbBaeOyPw9dywJxOUCeP3zB6kigkNKF/IWyAdK3lnxuzIR5qyugDTUaxC/jWp3l0/lAcq3CMcrtVw9LQNB6stbj3xXI5KP4jfh0D2Ny1yxGVoatGFbEG9CUdNqPRrB+NiwHtK6zN8SM8/oIYYL2J/B5wmVqUfMcWGZWp4vuv7vKCF0HJxwsUbIQIDAQAB";
/// The key the provider rotates to.
const ROTATED: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzUnqr9iAdaZ0qos5OESbXq1k6HMNjYVgDvIMtWWpFKwNentCVwA21XGCMWPcSqBce6punPSSf95IbkAp9GlimChGu/e8psTYGQdln5JMGGkjPiu+i04xfFLSJH/UYhAFiAo7lxkCHnq+BnFyUeVnsxtXYf7eiBn9w0BMnE0z64Gggr811FxUZP0PpTW3hOjMKRVcEml2Ue95l6E7Hf49bT/04gkUSblRMFn4XkG8+G2MH1Ctfj+p+sGOEyUWOg5IO8dsgrtVjNKa7zP3hYFhiuGjUb7RMgrBx9vzA+lp0uVRPJh3hL8ddmfV6GMD/bmJLj7flfuJEBZSOq/I5ZRcfQIDAQAB";
/// Someone else's 1024-bit key.
const OTHER: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDTZNt+KcsBLFajBDLWFVTv8qWWbTZnKi0pVJMqWu7KMSszpiDP8mWTeSlxeLBsXaCb8ibp2aCO/avtFqklmylmpI8Q2Gq1wn+9ESGJoxtpuSfOxE/Y7/F4YoGJnQASqSTe3R/Gzn3iafu/0GXTH6XucpnqfafsTIgmGni3q//p5QIDAQAB";

const PROVIDER_DOMAIN: &str = "dkim.provider.example";
const REF1: &str = "hd1._domainkey.dkim.provider.example";
const REF2: &str = "hd2._domainkey.dkim.provider.example";
const TENANT1: &str = "hd1._domainkey.customer.example";
const TENANT2: &str = "hd2._domainkey.customer.example";

fn key_record(key: &str) -> String {
    format!("v=DKIM1; k=rsa; p={key}")
}

/// The provider's zone: both selectors published with the current key.
fn provider_zone() -> Zone {
    Zone::new()
        .txt(REF1, &key_record(KEY))
        .txt(REF2, &key_record(KEY))
}

fn config(server: &TestDns) -> DnsConfig {
    server.resolver_config(Duration::from_millis(300), 0)
}

/// The shared resolver, without a cache so that zone edits show at once.
fn resolver(server: &TestDns) -> Resolver {
    Resolver::new(&config(server)).expect("resolver")
}

/// The shared resolver plus CNAME lookups, as a DNS layer that reports CNAMEs would do.
struct ChainDns {
    inner: Resolver,
    raw: TokioResolver,
}

impl ChainDns {
    fn new(server: &TestDns) -> Self {
        let mut ns = NameServerConfig::udp_and_tcp(server.addr().ip());
        for connection in &mut ns.connections {
            connection.port = server.addr().port();
        }
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        );
        let options = builder.options_mut();
        options.timeout = Duration::from_millis(300);
        options.attempts = 1;
        options.cache_size = 0;
        options.ndots = 0;
        Self {
            inner: resolver(server),
            raw: builder.build().expect("raw resolver"),
        }
    }
}

impl Dns for ChainDns {
    async fn txt(&self, name: &str) -> Result<Answer<Vec<u8>>, DnsError> {
        self.inner.txt(name).await
    }
    async fn a(&self, name: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        self.inner.a(name).await
    }
    async fn aaaa(&self, name: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        self.inner.aaaa(name).await
    }
    async fn mx(&self, name: &str) -> Result<Answer<String>, DnsError> {
        self.inner.mx(name).await
    }
    async fn ptr(&self, name: &str) -> Result<Answer<String>, DnsError> {
        self.inner.ptr(name).await
    }
    async fn spf99(&self, name: &str) -> Result<Answer<Vec<u8>>, DnsError> {
        self.inner.spf99(name).await
    }
    async fn cname(&self, name: &str) -> Result<Option<CnameTarget>, DnsError> {
        let fqdn =
            Name::from_ascii(format!("{name}.")).map_err(|e| DnsError::Other(e.to_string()))?;
        match self.raw.lookup(fqdn, RecordType::CNAME).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .find_map(|record| match &record.data {
                    RData::CNAME(target) => Some(CnameTarget {
                        target: target.0.to_ascii().trim_end_matches('.').to_string(),
                        ttl: Some(record.ttl),
                    }),
                    _ => None,
                })),
            Err(NetError::Dns(HickoryDnsError::NoRecordsFound(none)))
                if matches!(
                    none.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                Ok(None)
            }
            Err(NetError::Timeout) => Err(DnsError::Timeout),
            Err(other) => Err(DnsError::Rcode(other.to_string())),
        }
    }
}

fn selectors() -> Vec<ProviderSelector> {
    vec![
        ProviderSelector::new("hd1", PROVIDER_DOMAIN),
        ProviderSelector::new("hd2", PROVIDER_DOMAIN),
    ]
}

async fn check_with<D: Dns>(dns: &D, from: &str, adkim: AlignmentMode) -> DkimReport {
    let keys: Vec<ProviderKey> = fetch_provider_keys(dns, &selectors()).await;
    check_domain(dns, &keys, "customer.example", from, Some(adkim)).await
}

/// The report for `zone` (the provider's records included) through the shared resolver.
async fn check(zone: Zone) -> DkimReport {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    check_with(
        &resolver(&server),
        "customer.example",
        AlignmentMode::Relaxed,
    )
    .await
}

/// The report through the CNAME-aware resolver.
async fn check_chain(zone: Zone) -> DkimReport {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    check_with(
        &ChainDns::new(&server),
        "customer.example",
        AlignmentMode::Relaxed,
    )
    .await
}

fn outcomes(report: &DkimReport) -> Vec<SelectorOutcome> {
    report.selectors.iter().map(|s| s.outcome).collect()
}

#[tokio::test]
async fn cname_to_the_provider_record() {
    let zone = provider_zone().cname(TENANT1, REF1).cname(TENANT2, REF2);
    let report = check(zone.clone()).await;
    assert_eq!(
        outcomes(&report),
        [SelectorOutcome::Aligned; 2],
        "{report:#?}"
    );
    assert_eq!(report.verdict.state, DkimState::Aligned);
    let first = &report.selectors[0];
    assert_eq!(first.name, TENANT1);
    assert_eq!(first.record.as_deref(), Some(key_record(KEY).as_str()));
    assert_eq!(first.ttl, Some(300));
    // The shared resolver follows the CNAME out of sight; a CNAME-aware layer shows it.
    assert!(first.cname_chain.is_empty());
    let report = check_chain(zone).await;
    assert_eq!(report.verdict.state, DkimState::Aligned);
    assert_eq!(report.selectors[0].cname_chain, vec![REF1.to_string()]);
    assert_eq!(report.selectors[1].cname_chain, vec![REF2.to_string()]);
}

#[tokio::test]
async fn txt_with_the_same_key_split_and_folded() {
    // The tenant copied the key by hand: other tags, several character-strings, whitespace.
    let (head, tail) = KEY.split_at(200);
    let zone = provider_zone().txt_strings(TENANT1, &["k=rsa; t=s; p=", head, " ", tail, " ;"]);
    let report = check(zone).await;
    assert_eq!(
        report.selectors[0].outcome,
        SelectorOutcome::Aligned,
        "{report:#?}"
    );
    assert!(report.selectors[0].cname_chain.is_empty());
    assert_eq!(report.selectors[1].outcome, SelectorOutcome::Missing);
    assert_eq!(
        report.verdict.state,
        DkimState::Aligned,
        "one aligned selector is enough"
    );
}

#[tokio::test]
async fn a_different_key() {
    let zone = provider_zone()
        .txt(TENANT1, &key_record(OTHER))
        .txt(TENANT2, &format!("v=DKIM1; k=ed25519; p={KEY}"));
    let report = check(zone).await;
    assert_eq!(
        outcomes(&report),
        [SelectorOutcome::KeyMismatch, SelectorOutcome::KeyMismatch]
    );
    assert!(report.selectors[1].message.contains("key type ed25519"));
    assert_eq!(report.verdict.state, DkimState::Unaligned);
}

#[tokio::test]
async fn revoked_and_garbage() {
    let zone = provider_zone()
        .txt(TENANT1, "v=DKIM1; k=rsa; p=")
        .txt(TENANT2, "v=DKIM1; k=rsa; p=this is not base64!");
    let report = check(zone).await;
    assert_eq!(
        outcomes(&report),
        [SelectorOutcome::Revoked, SelectorOutcome::Invalid]
    );
    assert!(
        report.selectors[1].message.contains("base64"),
        "{}",
        report.selectors[1].message
    );
    assert_eq!(report.verdict.state, DkimState::Unaligned);
}

#[tokio::test]
async fn several_records_at_one_selector_and_stray_bytes() {
    let zone = provider_zone()
        .txt(TENANT1, &key_record(KEY))
        .txt(TENANT1, "google-site-verification=abc")
        .txt_bytes(TENANT2, b"v=DKIM1; p=\xff\xfe");
    let report = check(zone).await;
    assert_eq!(outcomes(&report), [SelectorOutcome::Invalid; 2]);
    assert!(report.selectors[0].message.contains("2 TXT records"));
    assert_eq!(report.selectors[0].record, None);
}

#[tokio::test]
async fn a_cname_chain() {
    // The tenant points at its own alias, which points at the provider (two hops).
    let zone = provider_zone()
        .cname(TENANT1, "hd1.dkim.customer.example")
        .cname("hd1.dkim.customer.example", REF1)
        .with_ttl(
            TENANT2,
            120,
            Data::Cname("hd2.dkim.customer.example".to_string()),
        )
        .cname("hd2.dkim.customer.example", REF2);
    let report = check(zone.clone()).await;
    assert_eq!(
        outcomes(&report),
        [SelectorOutcome::Aligned; 2],
        "{report:#?}"
    );
    let report = check_chain(zone).await;
    assert_eq!(
        outcomes(&report),
        [SelectorOutcome::Aligned; 2],
        "{report:#?}"
    );
    assert_eq!(
        report.selectors[0].cname_chain,
        vec!["hd1.dkim.customer.example".to_string(), REF1.to_string()]
    );
    assert_eq!(
        report.selectors[1].ttl,
        Some(120),
        "the smallest TTL along the chain"
    );
}

#[tokio::test]
async fn a_cname_loop() {
    let zone = provider_zone()
        .cname(TENANT1, "a.customer.example")
        .cname("a.customer.example", TENANT1)
        .cname(TENANT2, REF2);
    // Through the shared resolver a loop is the server's SERVFAIL: no verdict.
    let report = check(zone.clone()).await;
    assert_eq!(
        report.selectors[0].outcome,
        SelectorOutcome::TemporaryFailure
    );
    assert_eq!(report.verdict.state, DkimState::Aligned, "hd2 still holds");
    // A CNAME-aware layer sees the loop itself: a broken setup.
    let report = check_chain(zone).await;
    assert_eq!(
        report.selectors[0].outcome,
        SelectorOutcome::Invalid,
        "{report:#?}"
    );
    assert!(report.selectors[0].message.contains("CNAME loop"));
    assert_eq!(
        report.selectors[0].cname_chain,
        vec!["a.customer.example".to_string(), TENANT1.to_string()]
    );
}

#[tokio::test]
async fn servfail_and_timeout_are_no_verdict() {
    let zone = provider_zone()
        .fault(TENANT1, Fault::ServFail)
        .fault(TENANT2, Fault::Timeout);
    for report in [check(zone.clone()).await, check_chain(zone).await] {
        assert_eq!(
            outcomes(&report),
            [SelectorOutcome::TemporaryFailure; 2],
            "{report:#?}"
        );
        assert_eq!(report.verdict.state, DkimState::TemporaryFailure);
        assert!(
            report.verdict.message.contains("timed out"),
            "{}",
            report.verdict.message
        );
    }
    // A CNAME whose target fails is as temporary.
    let zone = provider_zone()
        .cname(TENANT1, "broken.provider.example")
        .fault("broken.provider.example", Fault::ServFail);
    let report = check(zone).await;
    assert_eq!(
        report.selectors[0].outcome,
        SelectorOutcome::TemporaryFailure
    );
    // A temporary failure does not hide a definitive one elsewhere from the selector view,
    // but the path has no verdict.
    assert_eq!(report.selectors[1].outcome, SelectorOutcome::Missing);
    assert_eq!(report.verdict.state, DkimState::TemporaryFailure);
}

#[tokio::test]
async fn missing_nxdomain_nodata_and_dangling_cname() {
    let zone = provider_zone()
        .a(TENANT1, "192.0.2.1")
        .cname(TENANT2, "hd2.old-provider.example");
    let report = check(zone).await;
    assert_eq!(
        outcomes(&report),
        [SelectorOutcome::Missing; 2],
        "{report:#?}"
    );
    assert!(report.selectors[0].message.contains("has no TXT record"));
    assert!(report.selectors[1].message.contains("does not exist"));
    assert_eq!(report.verdict.state, DkimState::Unaligned);
    let report = check(Zone::new().txt(REF1, &key_record(KEY))).await;
    assert_eq!(outcomes(&report)[0], SelectorOutcome::Missing);
}

#[tokio::test]
async fn strict_and_relaxed_adkim() {
    let zone = provider_zone().cname(TENANT1, REF1).cname(TENANT2, REF2);
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let dns = resolver(&server);
    // The provider signs as the organizational domain; From is a subdomain.
    let relaxed = check_with(&dns, "support.customer.example", AlignmentMode::Relaxed).await;
    assert_eq!(relaxed.verdict.state, DkimState::Aligned);
    let strict = check_with(&dns, "support.customer.example", AlignmentMode::Strict).await;
    assert_eq!(outcomes(&strict), [SelectorOutcome::DomainNotAligned; 2]);
    assert_eq!(strict.verdict.state, DkimState::Unaligned);
    assert!(
        strict.verdict.message.contains("strict adkim"),
        "{}",
        strict.verdict.message
    );
    let strict_same = check_with(&dns, "customer.example", AlignmentMode::Strict).await;
    assert_eq!(strict_same.verdict.state, DkimState::Aligned);
}

#[tokio::test]
async fn the_provider_reference_missing_or_failing() {
    // The provider's own record is gone: its fault, not the tenant's.
    let zone = Zone::new()
        .txt(REF2, "v=DKIM1; p=")
        .txt(TENANT1, &key_record(KEY))
        .txt(TENANT2, &key_record(KEY));
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let dns = resolver(&server);
    let keys = fetch_provider_keys(&dns, &selectors()).await;
    assert!(keys.iter().all(ProviderKey::is_broken), "{keys:#?}");
    let report = check_domain(&dns, &keys, "customer.example", "customer.example", None).await;
    assert_eq!(outcomes(&report), [SelectorOutcome::ProviderKeyBroken; 2]);
    assert_eq!(report.verdict.state, DkimState::ProviderBroken);
    assert!(
        report.verdict.message.contains("revoked"),
        "{}",
        report.verdict.message
    );
    // The provider's server fails: no verdict.
    server.update(|zone| {
        zone.set_fault(REF1, Some(Fault::ServFail));
        zone.set_fault(REF2, Some(Fault::ServFail));
    });
    let report = check_with(&dns, "customer.example", AlignmentMode::Relaxed).await;
    assert_eq!(
        report.verdict.state,
        DkimState::TemporaryFailure,
        "{report:#?}"
    );
}

#[tokio::test]
async fn key_rotation_at_the_provider() {
    let zone = provider_zone()
        .cname(TENANT1, REF1)
        .txt(TENANT2, &key_record(KEY));
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let dns = resolver(&server);
    let before = check_with(&dns, "customer.example", AlignmentMode::Relaxed).await;
    assert_eq!(outcomes(&before), [SelectorOutcome::Aligned; 2]);
    server.update(|zone| {
        for name in [REF1, REF2] {
            zone.set_txt(name, &key_record(ROTATED));
        }
    });
    let after = check_with(&dns, "customer.example", AlignmentMode::Relaxed).await;
    // The CNAME follows the provider; the copied TXT does not.
    assert_eq!(
        outcomes(&after),
        [SelectorOutcome::Aligned, SelectorOutcome::KeyMismatch]
    );
    assert_eq!(after.verdict.state, DkimState::Aligned);
    assert_eq!(
        after.selectors[0].record.as_deref(),
        Some(key_record(ROTATED).as_str())
    );
}

#[tokio::test]
async fn the_report_serializes_for_status() {
    let report = check(provider_zone().cname(TENANT1, REF1)).await;
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["signingDomain"], "customer.example");
    assert_eq!(json["verdict"]["state"], "Aligned");
    assert_eq!(json["selectors"][0]["outcome"], "Aligned");
    assert_eq!(json["selectors"][1]["outcome"], "Missing");
    let back: DkimReport = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, report);
}
