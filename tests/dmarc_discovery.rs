//! DMARC policy discovery (RFC 7489 §6.6.3) against a real DNS server on loopback.

mod support;

use std::time::Duration;

use helpdesk_mail_operator::dmarc::{AlignmentMode, Discovery, ParseError, Policy, discover};
use support::dns::{Fault, TestDns, Zone};

async fn discover_in(zone: Zone, from: &str) -> (Discovery, u64) {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let resolver = server.resolver(Duration::from_millis(300), 0);
    let found = discover(&resolver, from).await;
    (found, server.queries())
}

/// The policy domain and record of a `Found`, or a panic naming what was found instead.
fn found(discovery: Discovery) -> (String, helpdesk_mail_operator::dmarc::DmarcRecord, u32) {
    match discovery {
        Discovery::Found {
            policy_domain,
            record,
            ttl,
            ..
        } => (policy_domain, record, ttl),
        other => panic!("expected a record, got {other:?}"),
    }
}

#[tokio::test]
async fn record_at_the_from_domain() {
    let zone = Zone::new().txt(
        "_dmarc.customer.example",
        "v=DMARC1; p=reject; aspf=s; adkim=s",
    );
    let (discovery, queries) = discover_in(zone, "Customer.Example.").await;
    let (domain, record, ttl) = found(discovery);
    assert_eq!(domain, "customer.example");
    assert_eq!(record.p, Some(Policy::Reject));
    assert_eq!(record.aspf, AlignmentMode::Strict);
    assert_eq!(record.adkim, AlignmentMode::Strict);
    assert_eq!(ttl, 300);
    // The From domain is its own organizational domain: one query.
    assert_eq!(queries, 1);
}

#[tokio::test]
async fn falls_back_to_the_organizational_domain_on_nxdomain() {
    let zone = Zone::new().txt("_dmarc.customer.example", "v=DMARC1; p=quarantine");
    let (discovery, queries) = discover_in(zone, "eu.mail.customer.example").await;
    let (domain, record, _) = found(discovery);
    assert_eq!(domain, "customer.example");
    assert_eq!(record.p, Some(Policy::Quarantine));
    // `_dmarc.eu.mail.customer.example`, then the organizational domain; no walk in between.
    assert_eq!(queries, 2);
}

#[tokio::test]
async fn falls_back_past_nodata_and_other_txt_records() {
    let zone = Zone::new()
        .a("_dmarc.a.customer.example", "192.0.2.1")
        .txt("_dmarc.b.customer.example", "google-site-verification=abc")
        .txt("_dmarc.customer.example", "v=DMARC1; p=none");
    for from in ["a.customer.example", "b.customer.example"] {
        let (discovery, _) = discover_in(zone.clone(), from).await;
        let (domain, _, _) = found(discovery);
        assert_eq!(domain, "customer.example", "{from}");
    }
}

#[tokio::test]
async fn multi_label_public_suffixes() {
    let zone = Zone::new().txt("_dmarc.customer.co.uk", "v=DMARC1; p=reject");
    let (discovery, _) = discover_in(zone, "support.customer.co.uk").await;
    let (domain, _, _) = found(discovery);
    assert_eq!(domain, "customer.co.uk");
}

#[tokio::test]
async fn record_split_over_several_strings_is_joined() {
    let zone = Zone::new().txt_strings(
        "_dmarc.customer.example",
        &["v=DMARC1; p=rej", "ect; sp=none"],
    );
    let (discovery, _) = discover_in(zone, "customer.example").await;
    let (_, record, _) = found(discovery);
    assert_eq!(record.p, Some(Policy::Reject));
    assert_eq!(record.sp, Some(Policy::None));
}

#[tokio::test]
async fn several_records_mean_no_policy() {
    let zone = Zone::new()
        .txt("_dmarc.customer.example", "v=DMARC1; p=none")
        .txt("_dmarc.customer.example", "v=DMARC1; p=reject");
    let (discovery, _) = discover_in(zone, "customer.example").await;
    assert_eq!(
        discovery,
        Discovery::Multiple {
            policy_domain: "customer.example".to_string()
        }
    );
}

#[tokio::test]
async fn malformed_records_and_stray_bytes_are_reported() {
    let zone = Zone::new()
        .txt_bytes("_dmarc.customer.example", b"v=DMARC1; p=reject; x=\xff\xfe")
        .txt("_dmarc.other.example", "v=DMARC1; p=none; p=reject");
    let (discovery, _) = discover_in(zone.clone(), "customer.example").await;
    assert!(
        matches!(
            discovery,
            Discovery::Invalid { ref policy_domain, error: ParseError::Syntax(_), .. }
                if policy_domain == "customer.example"
        ),
        "{discovery:?}"
    );
    let (discovery, _) = discover_in(zone, "other.example").await;
    assert!(
        matches!(
            discovery,
            Discovery::Invalid {
                error: ParseError::DuplicateTag(_),
                ..
            }
        ),
        "{discovery:?}"
    );
}

#[tokio::test]
async fn no_record_anywhere() {
    let zone = Zone::new().txt("customer.example", "v=spf1 -all");
    let (discovery, _) = discover_in(zone, "mail.customer.example").await;
    assert_eq!(discovery, Discovery::NotFound);
}

#[tokio::test]
async fn dns_failures_stop_discovery_as_temporary() {
    let zone = Zone::new()
        .fault("_dmarc.slow.customer.example", Fault::Timeout)
        .fault("_dmarc.customer.example", Fault::ServFail);
    // A timeout at the From domain does not fall back: the record may exist.
    let (discovery, _) = discover_in(zone.clone(), "slow.customer.example").await;
    assert!(
        matches!(discovery, Discovery::TempError { ref name, .. } if name == "_dmarc.slow.customer.example"),
        "{discovery:?}"
    );
    let (discovery, _) = discover_in(zone, "fast.customer.example").await;
    assert!(
        matches!(discovery, Discovery::TempError { ref name, .. } if name == "_dmarc.customer.example"),
        "{discovery:?}"
    );
}

#[tokio::test]
async fn truncated_answer_is_retried_over_tcp() {
    let long = format!(
        "v=DMARC1; p=reject; rua=mailto:{}@customer.example",
        "r".repeat(900)
    );
    let zone = Zone::new()
        .txt("_dmarc.customer.example", &long)
        .fault("_dmarc.customer.example", Fault::Truncate);
    let (discovery, _) = discover_in(zone, "customer.example").await;
    let (_, record, _) = found(discovery);
    assert_eq!(record.p, Some(Policy::Reject));
}
