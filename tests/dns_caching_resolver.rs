//! The resolver behind a real caching resolver (unbound, docs/design.md §9) whose answers'
//! TTLs count down: the TTL reported for a record stops changing once the full TTL has been
//! seen, however often the caching resolver refreshes (design §6).

mod support;

use std::time::{Duration, Instant};

use helpdesk_mail_operator::dns::{Dns, DnsConfig, Resolver};
use support::dns::{Data, TestDns, Zone};
use support::unbound::Unbound;

const NAME: &str = "tenant.example.com";
const TTL: u32 = 3;

#[tokio::test]
async fn reported_ttls_settle_behind_a_counting_down_cache() {
    let zone = Zone::new().with_ttl(NAME, TTL, Data::Txt(vec![b"v=spf1 -all".to_vec()]));
    let server = TestDns::start(zone).await.expect("server");
    let unbound = Unbound::start(server.addr()).expect("unbound");
    let config = DnsConfig {
        nameservers: vec![unbound.addr()],
        timeout: Duration::from_secs(2),
        cache_size: 100,
        cache_size_fixed: true,
        authoritative_check: false,
        ..DnsConfig::default()
    };
    // Other clients of the same cache, asking out of step with the operator.
    let others = Resolver::new(&DnsConfig {
        cache_size: 0,
        ..config.clone()
    })
    .expect("resolver");
    let operator = Resolver::new(&config).expect("resolver");

    others.txt(NAME).await.expect("priming");
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let started = Instant::now();
    let mut seen_by_others = Vec::new();
    let mut reported = Vec::new();
    // Checks every 250 ms for several of the cache's refreshes; the pacing is the scenario.
    while started.elapsed() < Duration::from_secs(u64::from(TTL) * 4) {
        seen_by_others.push(others.txt(NAME).await.expect("txt").ttl);
        reported.push((
            started.elapsed(),
            operator.txt(NAME).await.expect("txt").ttl,
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen_by_others.iter().any(|ttl| *ttl < Some(TTL)),
        "the caching resolver counts TTLs down: {seen_by_others:?}"
    );
    // Within one TTL the operator's own entry expires with the caching resolver's and the next
    // answer carries the full TTL; from then on the reported TTL does not change.
    let settled: Vec<_> = reported
        .iter()
        .filter(|(at, _)| *at > Duration::from_secs(u64::from(TTL) + 1))
        .map(|(_, ttl)| *ttl)
        .collect();
    assert!(settled.len() > 10, "{reported:?}");
    assert!(
        settled.iter().all(|ttl| *ttl == Some(TTL)),
        "reported TTLs after the first refresh: {reported:?}"
    );
    // Answers are kept for what the caching resolver says is left of its TTL, down to 0 s,
    // so a check may ask again near each refresh; most checks are still answered from the
    // cache.
    let checks = reported.len() as u64;
    let queries = operator.upstream_queries();
    eprintln!(
        "{queries} upstream queries for {checks} checks over {:?}",
        started.elapsed()
    );
    assert!(
        queries < checks / 2,
        "{queries} queries for {checks} checks"
    );
}
