//! The resolver's cache against a real DNS server on loopback (design §6 "DNS"): sized for the
//! fleet, one upstream query per (name, type) per TTL however many lookups run at once, and
//! server failures and timeouts kept briefly.

mod support;

use std::time::Duration;

use futures::future::join_all;
use helpdesk_mail_operator::dns::Dns;
use helpdesk_mail_operator::dns::{
    DnsConfig, DnsError, ERROR_TTL, Resolver, cache_capacity_for_tenants,
};
use support::dns::{Data, Fault, TestDns, Zone};

const NAMES: usize = 600;
const CONCURRENT: usize = 8;

fn fleet_zone() -> Zone {
    let mut zone = Zone::new();
    for n in 0..NAMES {
        zone = zone
            .txt(
                &format!("t{n}.example.com"),
                "v=spf1 include:spf.provider.test ~all",
            )
            .a(&format!("t{n}.example.com"), "192.0.2.1");
    }
    zone
}

/// `CONCURRENT` lookups of every name at once, TXT and A.
async fn round(dns: &Resolver) {
    let lookups = (0..NAMES).flat_map(|n| {
        let name = format!("t{n}.example.com");
        (0..CONCURRENT).map(move |i| {
            let name = name.clone();
            async move {
                if i % 2 == 0 {
                    dns.txt(&name).await.map(|a| a.records.len())
                } else {
                    dns.a(&name).await.map(|a| a.records.len())
                }
            }
        })
    });
    for result in join_all(lookups).await {
        assert_eq!(result, Ok(1));
    }
}

#[tokio::test]
async fn one_upstream_query_per_name_and_type_per_ttl_for_a_grown_cache() {
    let server = TestDns::start(fleet_zone()).await.expect("server");
    // Starts far too small for the working set, as a fixed cache would be for a large fleet,
    // and is raised the way the controller raises it when it sees the tenant count.
    let dns = Resolver::new(&DnsConfig {
        cache_size: 100,
        cache_size_fixed: false,
        ..server.resolver_config(Duration::from_secs(2), 100)
    })
    .expect("resolver");
    assert!(dns.ensure_capacity(4 * NAMES));
    assert_eq!(dns.cache_capacity(), 4 * NAMES);
    for _ in 0..3 {
        round(&dns).await;
    }
    let unique = 2 * NAMES as u64;
    assert_eq!(dns.upstream_queries(), unique, "{:?}", dns.stats());
    assert_eq!(server.queries(), unique);
    let stats = dns.stats();
    assert_eq!(stats.lookups, 3 * (NAMES * CONCURRENT) as u64);
    assert_eq!(stats.cache_hits, stats.lookups - unique);
}

#[tokio::test]
async fn a_fixed_cache_size_is_kept() {
    let server = TestDns::start(fleet_zone()).await.expect("server");
    let dns = server.resolver(Duration::from_secs(2), 100);
    assert!(!dns.ensure_capacity(cache_capacity_for_tenants(NAMES)));
    assert_eq!(dns.cache_capacity(), 100);
}

#[tokio::test]
async fn answers_are_asked_again_after_their_ttl() {
    let zone = Zone::new().with_ttl(
        "short.example.com",
        1,
        Data::Txt(vec![b"v=spf1 -all".to_vec()]),
    );
    let server = TestDns::start(zone).await.expect("server");
    let dns = server.resolver(Duration::from_secs(2), 100);
    let first = join_all((0..20).map(|_| dns.txt("short.example.com"))).await;
    assert!(first.iter().all(Result::is_ok));
    assert_eq!(server.queries(), 1);
    // The TTL is the scenario here, not a stand-in for a check.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = join_all((0..20).map(|_| dns.txt("short.example.com"))).await;
    assert!(again.iter().all(Result::is_ok));
    assert_eq!(server.queries(), 2);
}

/// Lookups of `name`: `CONCURRENT` at once, then one after another.
async fn many_lookups(dns: &Resolver, name: &str) -> Vec<Result<usize, DnsError>> {
    let mut results: Vec<_> = join_all((0..CONCURRENT).map(|_| dns.txt(name)))
        .await
        .into_iter()
        .map(|r| r.map(|a| a.records.len()))
        .collect();
    for _ in 0..CONCURRENT {
        results.push(dns.txt(name).await.map(|a| a.records.len()));
    }
    results
}

#[tokio::test]
async fn server_failures_are_cached_briefly() {
    let zone = Zone::new().fault("down.example.com", Fault::ServFail);
    let server = TestDns::start(zone).await.expect("server");
    let dns = server.resolver(Duration::from_millis(300), 100);
    let results = many_lookups(&dns, "down.example.com").await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(DnsError::Rcode(code)) if code.contains("Server Failure"))),
        "{results:?}"
    );
    assert_eq!(dns.upstream_queries(), 1);
    // hickory asks over TCP too before it gives up on a server failure.
    assert!((1..=2).contains(&server.queries()), "{}", server.queries());
    let before = server.queries();

    // Once the window has passed the server is asked again, and its recovery is seen.
    server.update(|zone| {
        zone.set_fault("down.example.com", None)
            .set_txt("down.example.com", "v=spf1 -all");
    });
    tokio::time::sleep(Duration::from_secs(u64::from(ERROR_TTL)) + Duration::from_millis(100))
        .await;
    let results = many_lookups(&dns, "down.example.com").await;
    assert!(results.iter().all(|r| *r == Ok(1)), "{results:?}");
    assert_eq!(dns.upstream_queries(), 2);
    assert_eq!(server.queries(), before + 1);
}

#[tokio::test]
async fn timeouts_are_cached_briefly() {
    let zone = Zone::new().fault("slow.example.com", Fault::Timeout);
    let server = TestDns::start(zone).await.expect("server");
    let dns = server.resolver(Duration::from_millis(200), 100);
    let started = std::time::Instant::now();
    let results = many_lookups(&dns, "slow.example.com").await;
    assert!(
        results.iter().all(|r| *r == Err(DnsError::Timeout)),
        "{results:?}"
    );
    assert_eq!(dns.upstream_queries(), 1);
    let sent = server.queries();
    assert!(
        (1..=2).contains(&sent),
        "one query, retried at most once: {sent}"
    );
    // Sixteen lookups waited out one timeout, not sixteen.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_secs(u64::from(ERROR_TTL)) + Duration::from_millis(100))
        .await;
    let results = many_lookups(&dns, "slow.example.com").await;
    assert!(results.iter().all(|r| *r == Err(DnsError::Timeout)));
    assert_eq!(dns.upstream_queries(), 2);
}

#[tokio::test]
async fn the_reported_ttl_is_the_largest_seen_for_the_same_data() {
    // A caching resolver hands out what is left of its entry's TTL; the record's TTL as
    // published is the largest seen (design §6).
    let text = b"v=spf1 -all".to_vec();
    let zone = Zone::new().with_ttl("counted.example.com", 1, Data::Txt(vec![text.clone()]));
    let server = TestDns::start(zone).await.expect("server");
    let dns = server.resolver(Duration::from_secs(2), 100);
    assert_eq!(
        dns.txt("counted.example.com").await.expect("txt").ttl,
        Some(1)
    );
    server.update(|zone| {
        zone.remove("counted.example.com", hickory_proto::rr::RecordType::TXT)
            .add("counted.example.com", 0, Data::Txt(vec![text.clone()]));
    });
    // The TTL is the scenario here: the first answer must have expired.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..3 {
        let answer = dns.txt("counted.example.com").await.expect("txt");
        assert_eq!(answer.ttl, Some(1), "the same data keeps its largest TTL");
    }
    assert_eq!(server.queries(), 4, "a TTL of 0 is asked for each time");

    // New data starts over with its own TTL.
    server.update(|zone| {
        zone.remove("counted.example.com", hickory_proto::rr::RecordType::TXT)
            .add(
                "counted.example.com",
                0,
                Data::Txt(vec![b"v=spf1 ~all".to_vec()]),
            );
    });
    let answer = dns.txt("counted.example.com").await.expect("txt");
    assert_eq!(&*answer.records, &[b"v=spf1 ~all".to_vec()]);
    assert_eq!(answer.ttl, Some(0));
}
