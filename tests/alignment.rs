//! `check_sender` against a real DNS server on loopback: the verdicts of docs/design.md §5, the
//! provider include, DMARC discovery and the suggested record.

mod support;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helpdesk_mail_operator::alignment::{
    Provider, SenderCheck, SenderInput, UnalignedReason, Verdict, check_sender,
};
use helpdesk_mail_operator::api::RequiredAlignment;
use helpdesk_mail_operator::dns::{QueryEvent, QueryObserver, Resolver};
use helpdesk_mail_operator::egress::{Egress, EgressError};
use helpdesk_mail_operator::spf::SpfResult;
use support::dns::{Data, Fault, TestDns, Zone};

const PROVIDER: &str = "spf.provider.example";
const PROVIDER_RECORD: &str = "v=spf1 ip4:203.0.113.0/24 ip6:2001:db8:1::/48 -all";
const EGRESS: [&str; 2] = ["203.0.113.10", "2001:db8:1::10"];

fn provider() -> Provider {
    Provider {
        spf_domain: PROVIDER.to_string(),
        egress_ips: EGRESS
            .iter()
            .map(|ip| ip.parse().expect("test address"))
            .collect(),
        dkim_selectors: Vec::new(),
    }
}

fn sender(address: &str, envelope: Option<&str>) -> SenderInput {
    SenderInput {
        address: address.to_string(),
        envelope_domain: envelope.map(str::to_string),
        required: RequiredAlignment::Spf,
    }
}

/// The provider's own zone plus whatever the test adds.
fn zone() -> Zone {
    Zone::new().txt(PROVIDER, PROVIDER_RECORD)
}

async fn check(zone: Zone, input: SenderInput) -> SenderCheck {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let resolver = server.resolver(Duration::from_millis(300), 0);
    let provider = provider();
    // The check runs on a spawned task, as the controller runs it: its future must be Send.
    tokio::spawn(async move { check_sender(&resolver, &provider, &input).await })
        .await
        .expect("check task")
}

fn reason(check: &SenderCheck) -> Option<UnalignedReason> {
    match &check.verdict {
        Verdict::Unaligned { reason, .. } => Some(*reason),
        _ => None,
    }
}

fn results(check: &SenderCheck) -> Vec<SpfResult> {
    check.spf.results.iter().map(|r| r.result).collect()
}

#[tokio::test]
async fn aligned_when_every_address_passes_through_the_include() {
    let zone = zone()
        .with_ttl(
            "customer.example",
            1200,
            Data::Txt(vec![
                b"v=spf1 mx include:spf.provider.example -all".to_vec(),
            ]),
        )
        .mx("customer.example", 10, "mail.customer.example")
        .a("mail.customer.example", "198.51.100.5")
        .txt(
            "_dmarc.customer.example",
            "v=DMARC1; p=reject; rua=mailto:d@customer.example",
        );
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(check.verdict, Verdict::Aligned, "{check:#?}");
    assert_eq!(check.envelope_domain, "customer.example");
    assert_eq!(results(&check), vec![SpfResult::Pass, SpfResult::Pass]);
    let ips: Vec<IpAddr> = check.spf.results.iter().map(|r| r.ip).collect();
    assert_eq!(ips, provider().egress_ips);
    assert!(check.spf.provider_include_reachable);
    assert_eq!(check.spf.record_ttl, Some(1200));
    assert_eq!(
        check.spf.record.as_deref(),
        Some("v=spf1 mx include:spf.provider.example -all")
    );
    // mx, then the include, for both addresses.
    assert_eq!(check.spf.lookups, 2);
    assert!(check.spf.warnings.is_empty(), "{:?}", check.spf.warnings);
    assert_eq!(check.suggested_record, None);
    assert_eq!(check.dmarc.p.as_deref(), Some("reject"));
    assert_eq!(check.dmarc.aspf, 'r');
    assert!(check.dmarc.envelope_aligned);
    assert_eq!(
        check.dmarc.policy_domain.as_deref(),
        Some("customer.example")
    );
}

#[tokio::test]
async fn strict_void_reading_is_a_lint_not_a_verdict() {
    // The mx hosts have no address of either family: each egress address's evaluation sees
    // three empty address answers, which only the strict reading counts as void.
    let zone = zone()
        .txt(
            "customer.example",
            "v=spf1 mx include:spf.provider.example -all",
        )
        .mx("customer.example", 10, "h1.customer.example")
        .mx("customer.example", 20, "h2.customer.example")
        .mx("customer.example", 30, "h3.customer.example")
        .txt("h1.customer.example", "no address")
        .txt("h2.customer.example", "no address")
        .txt("h3.customer.example", "no address");
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(check.verdict, Verdict::Aligned, "{check:#?}");
    assert_eq!(results(&check), vec![SpfResult::Pass, SpfResult::Pass]);
    assert_eq!(check.spf.void_lookups, 0);
    let lints: Vec<&String> = check
        .spf
        .warnings
        .iter()
        .filter(|w| w.contains("such as pyspf and Mail::SPF"))
        .collect();
    assert_eq!(lints.len(), 1, "{:?}", check.spf.warnings);
    assert!(lints[0].starts_with("3 void lookups"), "{}", lints[0]);
}

#[tokio::test]
async fn missing_include_is_unaligned_with_a_suggestion() {
    let zone = zone()
        .txt("customer.example", "v=spf1 mx -all")
        .mx("customer.example", 10, "mail.customer.example")
        .a("mail.customer.example", "198.51.100.5");
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(
        reason(&check),
        Some(UnalignedReason::ProviderNotAuthorized),
        "{check:#?}"
    );
    assert_eq!(results(&check), vec![SpfResult::Fail, SpfResult::Fail]);
    assert!(!check.spf.provider_include_reachable);
    let suggested = check.suggested_record.expect("a suggestion");
    assert_eq!(
        suggested.record,
        "v=spf1 mx include:spf.provider.example -all"
    );
    // mx, the include itself; the provider record queries nothing more.
    assert_eq!(suggested.lookups, 2);
    assert_eq!(suggested.warning, None);
}

#[tokio::test]
async fn softfail_is_unaligned() {
    let zone = zone().txt("customer.example", "v=spf1 ip4:198.51.100.0/24 ~all");
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(
        results(&check),
        vec![SpfResult::Softfail, SpfResult::Softfail]
    );
    assert_eq!(reason(&check), Some(UnalignedReason::ProviderNotAuthorized));
    match &check.verdict {
        Verdict::Unaligned { message, .. } => assert!(message.contains("softfail"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        check.suggested_record.expect("a suggestion").record,
        "v=spf1 ip4:198.51.100.0/24 include:spf.provider.example ~all"
    );
}

#[tokio::test]
async fn no_record_suggests_a_new_one() {
    let check = check(zone(), sender("support@customer.example", None)).await;
    assert_eq!(results(&check), vec![SpfResult::None, SpfResult::None]);
    assert_eq!(reason(&check), Some(UnalignedReason::NoSpfRecord));
    assert_eq!(check.spf.record, None);
    let suggested = check.suggested_record.expect("a suggestion");
    assert_eq!(suggested.record, "v=spf1 include:spf.provider.example ~all");
    assert_eq!(suggested.lookups, 1);
}

#[tokio::test]
async fn permerror_is_unaligned() {
    let zone = zone().txt(
        "customer.example",
        "v=spf1 include:spf.provider.example ip4:300.1.1.1 -all",
    );
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(
        results(&check),
        vec![SpfResult::Permerror, SpfResult::Permerror]
    );
    assert_eq!(reason(&check), Some(UnalignedReason::SpfPermError));
}

#[tokio::test]
async fn two_records_are_permerror_and_no_suggestion_is_made() {
    let zone = zone()
        .txt(
            "customer.example",
            "v=spf1 include:spf.provider.example -all",
        )
        .txt("customer.example", "v=spf1 mx -all");
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(reason(&check), Some(UnalignedReason::SpfPermError));
    assert_eq!(check.suggested_record, None);
    assert!(
        check
            .spf
            .warnings
            .iter()
            .any(|w| w.contains("more than one SPF record")),
        "{:?}",
        check.spf.warnings
    );
}

#[tokio::test]
async fn servfail_without_definitive_failure_is_temporary() {
    let zone = zone()
        .txt(
            "customer.example",
            "v=spf1 include:spf.provider.example -all",
        )
        .fault(PROVIDER, Fault::ServFail);
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(
        results(&check),
        vec![SpfResult::Temperror, SpfResult::Temperror]
    );
    assert!(
        matches!(check.verdict, Verdict::TemporaryFailure { .. }),
        "{check:#?}"
    );
    // The tree could not be read, so no fix is proposed.
    assert_eq!(check.suggested_record, None);
}

#[tokio::test]
async fn timeout_without_definitive_failure_is_temporary() {
    let zone = zone().fault("customer.example", Fault::Timeout);
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(
        results(&check),
        vec![SpfResult::Temperror, SpfResult::Temperror]
    );
    match &check.verdict {
        Verdict::TemporaryFailure { message } => {
            assert!(message.contains("temporarily"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_definitive_failure_wins_over_a_temperror() {
    // The IPv4 address fails on the first term; the IPv6 one reaches the broken include.
    let zone = zone()
        .txt(
            "customer.example",
            "v=spf1 -ip4:203.0.113.10 include:spf.provider.example -all",
        )
        .fault(PROVIDER, Fault::ServFail);
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(results(&check), vec![SpfResult::Fail, SpfResult::Temperror]);
    assert_eq!(reason(&check), Some(UnalignedReason::ProviderNotAuthorized));
}

const BOUNCE_RECORD: &str = "v=spf1 include:spf.provider.example -all";

#[tokio::test]
async fn strict_aspf_rejects_a_subdomain_envelope() {
    let zone = zone()
        .txt("bounce.customer.example", BOUNCE_RECORD)
        .txt("_dmarc.customer.example", "v=DMARC1; p=reject; aspf=s");
    let check = check(
        zone,
        sender("support@customer.example", Some("bounce.customer.example")),
    )
    .await;
    assert_eq!(results(&check), vec![SpfResult::Pass, SpfResult::Pass]);
    assert_eq!(reason(&check), Some(UnalignedReason::DomainNotAligned));
    assert_eq!(check.dmarc.aspf, 's');
    assert!(!check.dmarc.envelope_aligned);
    match &check.verdict {
        Verdict::Unaligned { message, .. } => assert!(message.contains("strict"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn relaxed_aspf_accepts_a_subdomain_envelope() {
    let zone = zone()
        .txt("bounce.customer.example", BOUNCE_RECORD)
        .txt("_dmarc.customer.example", "v=DMARC1; p=quarantine");
    let check = check(
        zone,
        sender("support@customer.example", Some("Bounce.Customer.Example.")),
    )
    .await;
    assert_eq!(check.envelope_domain, "bounce.customer.example");
    assert_eq!(check.verdict, Verdict::Aligned, "{check:#?}");
    assert!(check.dmarc.envelope_aligned);
}

#[tokio::test]
async fn dmarc_is_found_at_the_organizational_domain() {
    let zone = zone().txt("eu.customer.example", BOUNCE_RECORD).txt(
        "_dmarc.customer.example",
        "v=DMARC1; p=quarantine; sp=reject; pct=50; x_extra=1",
    );
    let check = check(zone, sender("help@eu.customer.example", None)).await;
    assert_eq!(check.verdict, Verdict::Aligned, "{check:#?}");
    let dmarc = &check.dmarc;
    assert_eq!(dmarc.policy_domain.as_deref(), Some("customer.example"));
    assert_eq!(dmarc.p.as_deref(), Some("quarantine"));
    assert_eq!(dmarc.sp.as_deref(), Some("reject"));
    assert!(
        dmarc.warnings.iter().any(|w| w.contains("pct=50")),
        "{dmarc:?}"
    );
    assert!(
        dmarc.warnings.iter().any(|w| w.contains("x_extra=1")),
        "{dmarc:?}"
    );
}

#[tokio::test]
async fn unknown_dmarc_policy_leaves_relaxed_only_alignment_unknown() {
    let zone = zone()
        .txt("bounce.customer.example", BOUNCE_RECORD)
        .fault("_dmarc.customer.example", Fault::ServFail);
    let check = check(
        zone,
        sender("support@customer.example", Some("bounce.customer.example")),
    )
    .await;
    assert_eq!(results(&check), vec![SpfResult::Pass, SpfResult::Pass]);
    match &check.verdict {
        Verdict::TemporaryFailure { message } => assert!(message.contains("DMARC"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn suggestion_past_ten_lookups_warns() {
    let mut zone = Zone::new()
        .txt(
            PROVIDER,
            "v=spf1 include:a.provider.example include:b.provider.example -all",
        )
        .txt("a.provider.example", "v=spf1 ip4:203.0.113.0/25 -all")
        .txt(
            "b.provider.example",
            "v=spf1 ip4:203.0.113.128/25 ip6:2001:db8:1::/48 -all",
        );
    let mut record = String::from("v=spf1");
    for n in 1..=9 {
        let name = format!("s{n}.partners.example");
        record.push_str(&format!(" include:{name}"));
        zone = zone.txt(&name, "v=spf1 ip4:198.51.100.0/24 -all");
    }
    record.push_str(" ~all");
    let zone = zone.txt("customer.example", &record);
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(reason(&check), Some(UnalignedReason::ProviderNotAuthorized));
    assert!(
        check.spf.warnings.iter().any(|w| w.contains("9 of 10")),
        "{:?}",
        check.spf.warnings
    );
    let suggested = check.suggested_record.expect("a suggestion");
    // Nine includes, the new include, and the provider's two.
    assert_eq!(suggested.lookups, 12);
    assert!(
        suggested
            .record
            .ends_with("include:spf.provider.example ~all"),
        "{}",
        suggested.record
    );
    let warning = suggested.warning.expect("over the limit");
    assert!(warning.contains("12 DNS lookups"), "{warning}");
}

#[tokio::test]
async fn lints_reach_the_report() {
    let zone = zone().txt(
        "customer.example",
        "v=spf1 ptr include:spf.provider.example +all",
    );
    let check = check(zone, sender("support@customer.example", None)).await;
    // +all authorizes the provider too: aligned, and warned about.
    assert_eq!(check.verdict, Verdict::Aligned, "{check:#?}");
    let warnings = check.spf.warnings.join("\n");
    assert!(warnings.contains("+all"), "{warnings}");
    assert!(warnings.contains("ptr"), "{warnings}");
}

#[tokio::test]
async fn no_egress_address_gives_no_verdict() {
    let zone = zone().txt("customer.example", BOUNCE_RECORD);
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let resolver = server.resolver(Duration::from_millis(300), 0);
    let provider = Provider {
        spf_domain: PROVIDER.to_string(),
        egress_ips: Vec::new(),
        dkim_selectors: Vec::new(),
    };
    let check = check_sender(&resolver, &provider, &sender("a@customer.example", None)).await;
    assert!(
        matches!(check.verdict, Verdict::TemporaryFailure { .. }),
        "{check:#?}"
    );
}

#[tokio::test]
async fn egress_hosts_resolve_to_sorted_addresses() {
    let zone = Zone::new()
        .a("smtp1.provider.example", "203.0.113.20")
        .a("smtp2.provider.example", "203.0.113.10")
        .aaaa("smtp2.provider.example", "2001:db8:1::10")
        .a("smtp3.provider.example", "203.0.113.10")
        .txt("nothing.provider.example", "no addresses here")
        .fault("broken.provider.example", Fault::ServFail);
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let resolver = server.resolver(Duration::from_millis(300), 0);
    let resolve = |names: &[&str]| {
        let egress = Egress::new(Vec::new(), names.iter().map(|n| n.to_string()).collect());
        let resolver = resolver.clone();
        async move { egress.resolve(&resolver).await.map(Vec::from_iter) }
    };
    let ips = resolve(&[
        "smtp1.provider.example",
        "smtp2.provider.example",
        "smtp3.provider.example",
    ])
    .await
    .expect("resolves");
    let expected: Vec<IpAddr> = ["203.0.113.10", "203.0.113.20", "2001:db8:1::10"]
        .iter()
        .map(|ip| ip.parse().expect("address"))
        .collect();
    assert_eq!(ips, expected);
    assert_eq!(
        resolve(&["nothing.provider.example"]).await,
        Err(EgressError::NoAddress {
            host: "nothing.provider.example".to_string()
        })
    );
    assert!(matches!(
        resolve(&["smtp1.provider.example", "broken.provider.example"]).await,
        Err(EgressError::Dns { ref host, .. }) if host == "broken.provider.example"
    ));
}

#[tokio::test]
async fn includes_repeated_deeper_in_the_tree_are_named() {
    let zone = zone()
        .txt(
            "customer.example",
            "v=spf1 include:a.partners.example include:b.partners.example include:spf.provider.example -all",
        )
        .txt("a.partners.example", "v=spf1 include:shared.partners.example -all")
        .txt("b.partners.example", "v=spf1 include:shared.partners.example -all")
        .txt("shared.partners.example", "v=spf1 ip4:198.51.100.0/24 -all");
    let check = check(zone, sender("support@customer.example", None)).await;
    assert_eq!(check.verdict, Verdict::Aligned, "{check:#?}");
    assert!(
        check
            .spf
            .warnings
            .iter()
            .any(|w| w.contains("include:shared.partners.example is evaluated 2 times")),
        "{:?}",
        check.spf.warnings
    );
}

/// Runs one check with a resolver that records the type of every upstream query.
async fn check_counting_types(zone: Zone, input: SenderInput) -> (SenderCheck, Vec<&'static str>) {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let types = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&types);
    let observer: QueryObserver = Arc::new(move |event: &QueryEvent| {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.record_type);
    });
    let resolver = Resolver::with_observer(
        &server.resolver_config(Duration::from_millis(300), 0),
        Some(observer),
    )
    .expect("resolver");
    let check = check_sender(&resolver, &provider(), &input).await;
    let types = types.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (check, types)
}

#[tokio::test]
async fn a_type99_only_record_is_warned_about_and_never_evaluated() {
    const TYPE99: &str = "type-99 SPF record";
    let records = zone().spf99("legacy.example", "v=spf1 include:spf.provider.example -all");
    let (check, types) =
        check_counting_types(records, sender("support@legacy.example", None)).await;
    // Evaluation asks only for TXT: the type-99 record authorizes nothing.
    assert_eq!(
        reason(&check),
        Some(UnalignedReason::NoSpfRecord),
        "{check:#?}"
    );
    assert_eq!(results(&check), vec![SpfResult::None, SpfResult::None]);
    assert_eq!(check.spf.record, None);
    let type99: Vec<&String> = check
        .spf
        .warnings
        .iter()
        .filter(|w| w.contains(TYPE99))
        .collect();
    assert_eq!(type99.len(), 1, "{:?}", check.spf.warnings);
    assert!(type99[0].contains("publish it as TXT"), "{type99:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "SPF").count(),
        1,
        "{types:?}"
    );

    // A type-99 record that is not SPF gives no warning.
    let records = zone().spf99("other.example", "hello");
    let (check, types) = check_counting_types(records, sender("support@other.example", None)).await;
    assert_eq!(
        reason(&check),
        Some(UnalignedReason::NoSpfRecord),
        "{check:#?}"
    );
    assert!(!check.spf.warnings.iter().any(|w| w.contains(TYPE99)));
    assert_eq!(
        types.iter().filter(|t| **t == "SPF").count(),
        1,
        "{types:?}"
    );

    // A domain with a TXT record is never asked for type 99, even when it has one too.
    let records = zone()
        .txt("modern.example", "v=spf1 include:spf.provider.example -all")
        .spf99("modern.example", "v=spf1 -all");
    let (check, types) =
        check_counting_types(records, sender("support@modern.example", None)).await;
    assert_eq!(check.verdict, Verdict::Aligned, "{check:#?}");
    assert!(!check.spf.warnings.iter().any(|w| w.contains(TYPE99)));
    assert!(!types.contains(&"SPF"), "{types:?}");
    assert!(types.contains(&"TXT"), "{types:?}");

    // A failing type-99 lookup changes nothing and warns about nothing.
    let records = zone()
        .fault("broken.example", Fault::TimeoutNoData)
        .txt("broken.example", "x");
    let (check, _) = check_counting_types(records, sender("support@broken.example", None)).await;
    assert_eq!(
        reason(&check),
        Some(UnalignedReason::NoSpfRecord),
        "{check:#?}"
    );
    assert!(!check.spf.warnings.iter().any(|w| w.contains(TYPE99)));
}
