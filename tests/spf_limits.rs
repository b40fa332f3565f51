//! RFC 7208 §4.6.4 limits and hostile DNS (docs/design.md §11), over a real DNS server on loopback.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use helpdesk_mail_operator::spf::lints::strict_void_lint;
use helpdesk_mail_operator::spf::{Evaluator, SpfOutcome, SpfQuery, SpfResult};
use support::dns::{Fault, TestDns, Zone};

const TIMEOUT: Duration = Duration::from_millis(300);

async fn evaluate(zone: Zone, ip: &str, domain: &str) -> SpfOutcome {
    let server = TestDns::start(zone).await.expect("DNS server starts");
    let resolver = server.resolver(TIMEOUT, 0);
    let ip: IpAddr = ip.parse().expect("test address");
    Evaluator::new(resolver)
        .check_host(&SpfQuery::for_domain(ip, domain))
        .await
}

/// `n` chained includes below example.com, the last one passing 192.0.2.0/24.
fn include_chain(n: usize) -> Zone {
    let mut zone = Zone::new().txt("example.com", "v=spf1 include:i1.example.net -all");
    for i in 1..n {
        zone = zone.txt(
            &format!("i{i}.example.net"),
            &format!("v=spf1 include:i{}.example.net", i + 1),
        );
    }
    zone.txt(&format!("i{n}.example.net"), "v=spf1 ip4:192.0.2.0/24")
}

#[tokio::test]
async fn ten_lookups_pass_eleven_are_permerror() {
    let ten = evaluate(include_chain(10), "192.0.2.1", "example.com").await;
    assert_eq!(ten.result, SpfResult::Pass);
    assert_eq!(ten.trace.lookups, 10);
    let eleven = evaluate(include_chain(11), "192.0.2.1", "example.com").await;
    assert_eq!(eleven.result, SpfResult::Permerror);
    assert_eq!(eleven.trace.lookups, 11);
}

#[tokio::test]
async fn lookups_count_across_redirect_and_flat_terms() {
    // 9 a-terms that do not match, then a redirect whose record has 2 more lookups.
    let terms: String = (1..=9).map(|i| format!(" a:h{i}.example.net")).collect();
    let mut zone = Zone::new()
        .txt(
            "example.com",
            &format!("v=spf1{terms} redirect=r.example.net"),
        )
        .txt(
            "r.example.net",
            "v=spf1 a:h1.example.net ip4:192.0.2.1 -all",
        );
    for i in 1..=9 {
        zone = zone.a(&format!("h{i}.example.net"), "198.51.100.1");
    }
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Permerror);
    assert_eq!(outcome.trace.lookups, 11);
}

#[tokio::test]
async fn two_voids_are_fine_three_are_permerror() {
    let two = Zone::new().txt(
        "example.com",
        "v=spf1 a:v1.example.net exists:v2.example.net ip4:192.0.2.1 -all",
    );
    let outcome = evaluate(two, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(outcome.trace.void_lookups, 2);
    let three = Zone::new()
        .txt(
            "example.com",
            "v=spf1 a:v1.example.net mx:v2.example.net exists:v3.example.net ip4:192.0.2.1 -all",
        )
        // NODATA counts as void as much as NXDOMAIN does.
        .txt("v3.example.net", "not an address");
    let outcome = evaluate(three, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Permerror);
    assert_eq!(outcome.trace.void_lookups, 3);
}

#[tokio::test]
async fn empty_address_answers_of_mx_hosts_and_ptr_names_count_only_strictly() {
    // Three mx hosts with only AAAA records: an IPv4 client gets three empty A answers. The
    // engine does not count them as void (design §6); pyspf and Mail::SPF do.
    let zone = Zone::new()
        .txt("example.com", "v=spf1 mx:m.example.com ip4:192.0.2.1 -all")
        .mx("m.example.com", 10, "h1.example.com")
        .mx("m.example.com", 20, "h2.example.com")
        .mx("m.example.com", 30, "h3.example.com")
        .aaaa("h1.example.com", "2001:db8::1")
        .aaaa("h2.example.com", "2001:db8::2")
        .aaaa("h3.example.com", "2001:db8::3");
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(
        outcome.result,
        SpfResult::Pass,
        "the verdict is the lenient one"
    );
    assert_eq!(outcome.trace.void_lookups, 0);
    assert_eq!(outcome.trace.void_lookups_strict, 3);
    let lint = strict_void_lint(&outcome.trace).expect("the strict reading is permerror");
    assert!(lint.starts_with("3 void lookups of 2"), "{lint}");
    assert!(
        lint.contains(
            "permerror at receivers that count void address lookups of mx/ptr names, such as \
             pyspf and Mail::SPF"
        ),
        "{lint}"
    );

    // A ptr whose names have no address, plus one ordinary void: 1 + 2 strictly.
    let zone = Zone::new()
        .txt(
            "example.com",
            "v=spf1 a:gone.example.net ptr ip4:192.0.2.1 -all",
        )
        .ptr("1.2.0.192.in-addr.arpa", "p1.example.org")
        .ptr("1.2.0.192.in-addr.arpa", "p2.example.org")
        .txt("p1.example.org", "no address here");
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Pass);
    assert_eq!(outcome.trace.void_lookups, 1);
    assert_eq!(outcome.trace.void_lookups_strict, 3);
    assert!(strict_void_lint(&outcome.trace).is_some());

    // Two strict voids are within the limit either way: no lint.
    let zone = Zone::new()
        .txt("example.com", "v=spf1 mx:m.example.com ip4:192.0.2.1 -all")
        .mx("m.example.com", 10, "h1.example.com")
        .mx("m.example.com", 20, "h2.example.com")
        .a("h1.example.com", "198.51.100.1");
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.trace.void_lookups_strict, 1);
    assert_eq!(strict_void_lint(&outcome.trace), None);
}

fn mx_hosts(n: u16) -> Zone {
    let mut zone = Zone::new().txt("example.com", "v=spf1 mx -all");
    for i in 0..n {
        let host = format!("mx{i}.example.com");
        zone = zone
            .mx("example.com", i, &host)
            .a(&host, &format!("198.51.100.{i}"));
    }
    zone
}

#[tokio::test]
async fn mx_with_ten_hosts_matches_eleven_is_permerror() {
    let ten = evaluate(mx_hosts(10), "198.51.100.9", "example.com").await;
    assert_eq!(ten.result, SpfResult::Pass);
    let eleven = evaluate(mx_hosts(11), "198.51.100.1", "example.com").await;
    assert_eq!(eleven.result, SpfResult::Permerror);
}

#[tokio::test]
async fn include_loop_is_permerror() {
    let zone = Zone::new()
        .txt("example.com", "v=spf1 include:loop.example.net -all")
        .txt("loop.example.net", "v=spf1 include:example.com -all");
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Permerror);
    assert_eq!(outcome.trace.lookups, 11);
}

#[tokio::test]
async fn redirect_loop_is_permerror() {
    let zone = Zone::new().txt("example.com", "v=spf1 redirect=example.com");
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Permerror);
}

#[tokio::test]
async fn timeout_is_temperror_in_bounded_time() {
    let zone = Zone::new()
        .txt("example.com", "v=spf1 include:slow.example.net -all")
        .fault("slow.example.net", Fault::Timeout);
    let started = Instant::now();
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Temperror);
    assert!(
        started.elapsed() < TIMEOUT * 5,
        "took {:?}",
        started.elapsed()
    );
    let root = Zone::new().fault("example.com", Fault::Timeout);
    assert_eq!(
        evaluate(root, "192.0.2.1", "example.com").await.result,
        SpfResult::Temperror
    );
}

#[tokio::test]
async fn servfail_is_temperror() {
    let zone = Zone::new()
        .txt("example.com", "v=spf1 a:broken.example.net -all")
        .fault("broken.example.net", Fault::ServFail);
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Temperror);
    let root = Zone::new().fault("example.com", Fault::ServFail);
    assert_eq!(
        evaluate(root, "192.0.2.1", "example.com").await.result,
        SpfResult::Temperror
    );
}

#[tokio::test]
async fn truncated_answer_is_retried_over_tcp() {
    let zone = Zone::new()
        .txt("example.com", "v=spf1 ip4:192.0.2.1 -all")
        .fault("example.com", Fault::Truncate);
    assert_eq!(
        evaluate(zone, "192.0.2.1", "example.com").await.result,
        SpfResult::Pass
    );
}

#[tokio::test]
async fn four_kilobyte_txt_answer() {
    // 16 unrelated 250-byte TXT records next to the SPF record: over 4 KB, too big for UDP.
    let mut zone = Zone::new().txt("example.com", "v=spf1 ip4:192.0.2.1 -all");
    for i in 0..16 {
        zone = zone.txt("example.com", &format!("filler-{i:02}-{}", "x".repeat(240)));
    }
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    assert_eq!(outcome.result, SpfResult::Pass);
    // A single 4 KB SPF record also evaluates (the answer comes over TCP).
    let big = format!(
        "v=spf1{} ip4:192.0.2.1 -all",
        " ip4:198.51.100.1".repeat(250)
    );
    assert!(big.len() > 4000);
    let zone = Zone::new().txt("example.com", &big);
    assert_eq!(
        evaluate(zone, "192.0.2.1", "example.com").await.result,
        SpfResult::Pass
    );
}

#[tokio::test]
async fn cname_loop_is_bounded() {
    let zone = Zone::new()
        .txt(
            "example.com",
            "v=spf1 a:loop1.example.net ip4:192.0.2.1 -all",
        )
        .cname("loop1.example.net", "loop2.example.net")
        .cname("loop2.example.net", "loop1.example.net");
    let started = Instant::now();
    let outcome = evaluate(zone, "192.0.2.1", "example.com").await;
    // A resolver cannot answer for a name whose CNAMEs go round in a circle.
    assert_eq!(outcome.result, SpfResult::Temperror);
    assert_eq!(outcome.trace.terms[0].outcome, "temperror");
    assert!(
        started.elapsed() < TIMEOUT * 5,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cname_chain_is_followed() {
    let zone = Zone::new()
        .cname("example.com", "spf.example.net")
        .txt("spf.example.net", "v=spf1 a:host.example.com -all")
        .cname("host.example.com", "real.example.net")
        .a("real.example.net", "192.0.2.1");
    assert_eq!(
        evaluate(zone, "192.0.2.1", "example.com").await.result,
        SpfResult::Pass
    );
}
