//! RFC 7208 `check_host()` against a real DNS server on loopback, section by section.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use helpdesk_mail_operator::spf::{Evaluator, SpfOutcome, SpfQuery, SpfResult};
use support::dns::{TestDns, Zone};

async fn evaluate(zone: Zone, ip: &str, sender: &str, helo: &str) -> SpfOutcome {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let resolver = server.resolver(Duration::from_millis(500), 0);
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

/// A zone with one record at `example.com`.
fn record(text: &str) -> Zone {
    Zone::new().txt("example.com", text)
}

#[tokio::test]
async fn ip4_pass_and_fail() {
    let zone = || record("v=spf1 ip4:192.0.2.0/24 -all");
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
    let terms: Vec<&str> = outcome
        .trace
        .terms
        .iter()
        .map(|t| t.term.as_str())
        .collect();
    assert_eq!(
        terms,
        ["include:_spf.provider.example", "ip4:203.0.113.0/24"]
    );
}

// §4.3: initial processing and domain validity.

#[tokio::test]
async fn invalid_domains_give_none() {
    let long = format!("{}.example.com", "a".repeat(64));
    for domain in [long.as_str(), "a..example.com", "localhost", "[192.0.2.1]"] {
        let zone = record("v=spf1 -all");
        assert_eq!(
            result(zone, "192.0.2.1", domain).await,
            SpfResult::None,
            "{domain}"
        );
    }
    let ok = format!("{}.example.com", "a".repeat(63));
    let zone = Zone::new().txt(&ok, "v=spf1 -all");
    assert_eq!(result(zone, "192.0.2.1", &ok).await, SpfResult::Fail);
}

#[tokio::test]
async fn trailing_dot_is_ignored() {
    let outcome = evaluate(
        record("v=spf1 -all"),
        "192.0.2.1",
        "u@example.com.",
        "h.example",
    )
    .await;
    assert_eq!(outcome.result, SpfResult::Fail);
    assert_eq!(outcome.trace.tree.domain, "example.com");
}

#[tokio::test]
async fn empty_mail_from_uses_helo() {
    let zone = Zone::new().txt("mx.example.org", "v=spf1 ip4:192.0.2.1 -all");
    let outcome = evaluate(zone, "192.0.2.1", "", "mx.example.org").await;
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(outcome.trace.sender, "postmaster@mx.example.org");
}

#[tokio::test]
async fn nxdomain_and_no_record_give_none() {
    assert_eq!(
        result(Zone::new(), "192.0.2.1", "example.com").await,
        SpfResult::None
    );
    let zone = Zone::new().txt("example.com", "google-site-verification=abc");
    assert_eq!(
        result(zone, "192.0.2.1", "example.com").await,
        SpfResult::None
    );
}

// §4.5: record selection.

#[tokio::test]
async fn record_selection() {
    let two = record("v=spf1 -all").txt("example.com", "v=spf1 +all");
    assert_eq!(
        result(two, "192.0.2.1", "example.com").await,
        SpfResult::Permerror
    );
    let upper = record("V=SPF1 +all");
    assert_eq!(
        result(upper, "192.0.2.1", "example.com").await,
        SpfResult::Pass
    );
    let other_version = record("v=spf10 +all").txt("example.com", "v=spf1 -all");
    assert_eq!(
        result(other_version, "192.0.2.1", "example.com").await,
        SpfResult::Fail
    );
    let bare = record("v=spf1");
    assert_eq!(
        result(bare, "192.0.2.1", "example.com").await,
        SpfResult::Neutral
    );
}

#[tokio::test]
async fn multi_string_txt_is_joined() {
    let zone = Zone::new().txt_strings("example.com", &["v=spf1 ip4:192.0.2.1", " -all"]);
    assert_eq!(
        result(zone.clone(), "192.0.2.1", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone, "192.0.2.2", "example.com").await,
        SpfResult::Fail
    );
}

#[tokio::test]
async fn non_ascii_bytes() {
    let spf = Zone::new().txt_bytes("example.com", b"v=spf1 a:\xef\xbb\xbfbad.example.net -all");
    assert_eq!(
        result(spf, "192.0.2.1", "example.com").await,
        SpfResult::Permerror
    );
    let other = Zone::new()
        .txt_bytes("example.com", b"caf\xe9 \xff\xfe")
        .txt("example.com", "v=spf1 +all");
    assert_eq!(
        result(other, "192.0.2.1", "example.com").await,
        SpfResult::Pass
    );
}

// §4.6: syntax errors anywhere are permerror, unknown modifiers are ignored.

#[tokio::test]
async fn syntax_errors_and_unknown_modifiers() {
    for text in [
        "v=spf1 ip4:192.0.2.1 -all moo",
        "v=spf1 a:museum -all",
        "v=spf1 ip4:192.0.2.1/33 -all",
        "v=spf1 -all redirect=a.example.com redirect=b.example.com",
        "v=spf1 -all exp=a.example.com exp=b.example.com",
        "v=spf1 exists:%{x}.example.com",
    ] {
        assert_eq!(
            result(record(text), "192.0.2.1", "example.com").await,
            SpfResult::Permerror,
            "{text}"
        );
    }
    let unknown = record("v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.1 -all");
    assert_eq!(
        result(unknown, "192.0.2.1", "example.com").await,
        SpfResult::Pass
    );
}

// §4.6.2, §2.6: qualifiers.

#[tokio::test]
async fn qualifiers() {
    for (text, expected) in [
        ("v=spf1 +all", SpfResult::Pass),
        ("v=spf1 all", SpfResult::Pass),
        ("v=spf1 -all", SpfResult::Fail),
        ("v=spf1 ~all", SpfResult::Softfail),
        ("v=spf1 ?all", SpfResult::Neutral),
        ("v=spf1 ip4:198.51.100.1", SpfResult::Neutral),
    ] {
        assert_eq!(
            result(record(text), "192.0.2.1", "example.com").await,
            expected,
            "{text}"
        );
    }
}

// §5.2: include.

#[tokio::test]
async fn include_result_semantics() {
    let cases = [
        ("v=spf1 +all", SpfResult::Pass),
        ("v=spf1 -all", SpfResult::Fail),
        ("v=spf1 ~all", SpfResult::Fail),
        ("v=spf1 ?all", SpfResult::Fail),
        ("v=spf1 ip4:1.2.3.4/33", SpfResult::Permerror),
    ];
    for (inner, expected) in cases {
        let zone = record("v=spf1 include:inc.example.net -all").txt("inc.example.net", inner);
        assert_eq!(
            result(zone, "192.0.2.1", "example.com").await,
            expected,
            "{inner}"
        );
    }
    let missing = record("v=spf1 include:none.example.net -all");
    assert_eq!(
        result(missing, "192.0.2.1", "example.com").await,
        SpfResult::Permerror
    );
}

// §5.3 a, §5.4 mx with dual CIDR lengths; IPv4-mapped clients are IPv4.

#[tokio::test]
async fn a_and_mx_with_dual_cidr() {
    let zone = || {
        record("v=spf1 a/24//64 mx:mail.example.net/30 -all")
            .a("example.com", "192.0.2.10")
            .aaaa("example.com", "2001:db8:1::1")
            .mx("mail.example.net", 10, "mx1.example.net")
            .a("mx1.example.net", "198.51.100.4")
    };
    assert_eq!(
        result(zone(), "192.0.2.200", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone(), "2001:db8:1::ffff", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone(), "2001:db8:2::1", "example.com").await,
        SpfResult::Fail
    );
    assert_eq!(
        result(zone(), "198.51.100.7", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone(), "198.51.100.8", "example.com").await,
        SpfResult::Fail
    );
    assert_eq!(
        result(zone(), "::ffff:192.0.2.5", "example.com").await,
        SpfResult::Pass
    );
}

#[tokio::test]
async fn ip6_and_mapped_clients() {
    let zone = || record("v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/24 -all");
    assert_eq!(
        result(zone(), "2001:db8::5", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone(), "2001:db9::5", "example.com").await,
        SpfResult::Fail
    );
    assert_eq!(
        result(zone(), "::ffff:192.0.2.9", "example.com").await,
        SpfResult::Pass
    );
    let outcome = evaluate(zone(), "::ffff:192.0.2.9", "u@example.com", "h.example").await;
    assert_eq!(outcome.trace.ip.to_string(), "192.0.2.9");
}

// §5.5 ptr.

#[tokio::test]
async fn ptr_validates_the_reverse_name() {
    let zone = || {
        record("v=spf1 ptr -all")
            .ptr("1.2.0.192.in-addr.arpa", "mail.example.com")
            .a("mail.example.com", "192.0.2.1")
            .ptr("2.2.0.192.in-addr.arpa", "mail.example.com")
    };
    assert_eq!(
        result(zone(), "192.0.2.1", "example.com").await,
        SpfResult::Pass
    );
    // The reverse name exists but does not resolve back to the client.
    assert_eq!(
        result(zone(), "192.0.2.2", "example.com").await,
        SpfResult::Fail
    );
}

// §5.7 exists and §7 macros.

#[tokio::test]
async fn exists_with_macros() {
    let zone = || {
        record("v=spf1 exists:%{ir}.%{l1r-}.lp.%{d2} -all")
            .a("1.2.0.192.strong.lp.example.com", "127.0.0.2")
    };
    let outcome = evaluate(zone(), "192.0.2.1", "strong-bad@example.com", "h.example").await;
    assert_eq!(outcome.result, SpfResult::Pass);
    let outcome = evaluate(zone(), "192.0.2.1", "weak-bad@example.com", "h.example").await;
    assert_eq!(outcome.result, SpfResult::Fail);
}

#[tokio::test]
async fn explanation_only_letters_outside_exp_are_permerror() {
    let zone = record("v=spf1 exists:%{c}.example.com -all");
    assert_eq!(
        result(zone, "192.0.2.1", "example.com").await,
        SpfResult::Permerror
    );
}

// §6.1 redirect, §6.2 exp.

#[tokio::test]
async fn redirect() {
    let zone = || {
        record("v=spf1 ip4:198.51.100.1 redirect=_spf.example.net")
            .txt("_spf.example.net", "v=spf1 ip4:192.0.2.0/24 -all")
    };
    assert_eq!(
        result(zone(), "192.0.2.1", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone(), "198.51.100.1", "example.com").await,
        SpfResult::Pass
    );
    assert_eq!(
        result(zone(), "203.0.113.1", "example.com").await,
        SpfResult::Fail
    );
    // all wins over redirect.
    let with_all =
        record("v=spf1 ?all redirect=_spf.example.net").txt("_spf.example.net", "v=spf1 -all");
    assert_eq!(
        result(with_all, "192.0.2.1", "example.com").await,
        SpfResult::Neutral
    );
    let missing = record("v=spf1 redirect=none.example.net");
    assert_eq!(
        result(missing, "192.0.2.1", "example.com").await,
        SpfResult::Permerror
    );
}

#[tokio::test]
async fn explanation_for_fail() {
    let zone = || {
        record("v=spf1 ip4:198.51.100.1 -all exp=why.example.com").txt(
            "why.example.com",
            "%{i} is not one of %{d}'s senders (%{l})",
        )
    };
    let outcome = evaluate(zone(), "192.0.2.1", "jack@example.com", "h.example").await;
    assert_eq!(outcome.result, SpfResult::Fail);
    assert_eq!(
        outcome.explanation.as_deref(),
        Some("192.0.2.1 is not one of example.com's senders (jack)")
    );
    let pass = evaluate(zone(), "198.51.100.1", "jack@example.com", "h.example").await;
    assert_eq!(pass.explanation, None);
    // No explanation record: the result stands, the explanation is null.
    let bare = evaluate(
        record("v=spf1 -all exp=none.example.com"),
        "192.0.2.1",
        "u@example.com",
        "h.example",
    )
    .await;
    assert_eq!(bare.result, SpfResult::Fail);
    assert_eq!(bare.explanation, None);
}

#[tokio::test]
async fn redirected_record_supplies_the_explanation() {
    let zone = record("v=spf1 exp=outer.example.com redirect=_spf.example.net")
        .txt("_spf.example.net", "v=spf1 -all exp=inner.example.net")
        .txt("outer.example.com", "outer")
        .txt("inner.example.net", "inner %{c}");
    let outcome = evaluate(zone, "2001:db8::1", "u@example.com", "h.example").await;
    assert_eq!(outcome.result, SpfResult::Fail);
    assert_eq!(outcome.explanation.as_deref(), Some("inner 2001:db8::1"));
}
