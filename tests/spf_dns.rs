//! The DNS layer against a real DNS server on loopback: typed answers and errors, the shared
//! cache, in-flight de-duplication, live zone edits.

mod support;

use std::time::Duration;

use helpdesk_mail_operator::dns::{Dns, DnsError};
use support::dns::{Data, Fault, TestDns, Zone};

#[tokio::test]
async fn typed_answers_with_ttl() {
    let zone = Zone::new()
        .with_ttl(
            "example.com",
            120,
            Data::Txt(vec![b"v=spf1 ".to_vec(), b"-all".to_vec()]),
        )
        .a("example.com", "192.0.2.1")
        .aaaa("example.com", "2001:db8::1")
        .mx("example.com", 10, "mx.example.com")
        .ptr("1.2.0.192.in-addr.arpa", "mail.example.com");
    let server = TestDns::start(zone).await.expect("server");
    let dns = server.resolver(Duration::from_millis(300), 100);
    let txt = dns.txt("example.com").await.expect("txt");
    assert_eq!(&*txt.records, &[b"v=spf1 -all".to_vec()]);
    assert_eq!(txt.ttl, Some(120));
    assert_eq!(
        &*dns.a("example.com.").await.expect("a").records,
        &["192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let aaaa = dns.aaaa("example.com").await.expect("aaaa");
    assert_eq!(
        &*aaaa.records,
        &["2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    assert_eq!(
        &*dns.mx("example.com").await.expect("mx").records,
        &["mx.example.com".to_string()]
    );
    let ptr = dns.ptr("1.2.0.192.in-addr.arpa").await.expect("ptr");
    assert_eq!(&*ptr.records, &["mail.example.com".to_string()]);
}

#[tokio::test]
async fn nxdomain_nodata_and_errors_are_told_apart() {
    let zone = Zone::new()
        .a("example.com", "192.0.2.1")
        .fault("slow.example.com", Fault::Timeout)
        .fault("broken.example.com", Fault::ServFail);
    let server = TestDns::start(zone).await.expect("server");
    let dns = server.resolver(Duration::from_millis(300), 100);
    let nodata = dns.txt("example.com").await.expect("nodata is an answer");
    assert!(nodata.is_void() && !nodata.nxdomain);
    let nx = dns
        .txt("missing.example.com")
        .await
        .expect("nxdomain is an answer");
    assert!(nx.is_void() && nx.nxdomain);
    assert_eq!(nx.ttl, Some(60), "negative TTL from the SOA");
    assert_eq!(dns.txt("slow.example.com").await, Err(DnsError::Timeout));
    assert!(matches!(
        dns.txt("broken.example.com").await,
        Err(DnsError::Rcode(_))
    ));
    assert_eq!(dns.stats().upstream_errors, 2);
}

#[tokio::test]
async fn cache_answers_repeats_and_joins_queries_in_flight() {
    let server = TestDns::start(Zone::new().txt("example.com", "v=spf1 -all"))
        .await
        .expect("server");
    let dns = server.resolver(Duration::from_millis(300), 100);
    let lookups: Vec<_> = (0..20)
        .map(|_| {
            let dns = dns.clone();
            tokio::spawn(async move { dns.txt("example.com").await })
        })
        .collect();
    for lookup in lookups {
        assert!(lookup.await.expect("task").is_ok());
    }
    dns.txt("EXAMPLE.com.").await.expect("cached");
    let stats = dns.stats();
    assert_eq!(stats.upstream_queries, 1, "{stats:?}");
    assert_eq!(stats.lookups, 21);
    assert_eq!(stats.cache_hits, 20);
    assert_eq!(server.queries(), 1);
}

#[tokio::test]
async fn errors_are_kept_briefly_and_cache_zero_sees_edits() {
    let server = TestDns::start(Zone::new().txt("example.com", "v=spf1 -all"))
        .await
        .expect("server");
    let uncached = server.resolver(Duration::from_millis(300), 0);
    let cached = server.resolver(Duration::from_millis(300), 100);
    assert_eq!(
        &*uncached.txt("example.com").await.unwrap().records,
        &[b"v=spf1 -all".to_vec()]
    );
    cached.txt("example.com").await.unwrap();
    server.update(|zone| {
        zone.set_txt("example.com", "v=spf1 +all");
    });
    assert_eq!(
        &*uncached.txt("example.com").await.unwrap().records,
        &[b"v=spf1 +all".to_vec()]
    );
    // The caching resolver keeps the old answer for its TTL.
    assert_eq!(
        &*cached.txt("example.com").await.unwrap().records,
        &[b"v=spf1 -all".to_vec()]
    );
    cached.clear_cache();
    assert_eq!(
        &*cached.txt("example.com").await.unwrap().records,
        &[b"v=spf1 +all".to_vec()]
    );

    server.update(|zone| {
        zone.set_fault("example.com", Some(Fault::ServFail));
    });
    cached.clear_cache();
    assert!(cached.txt("example.com").await.is_err());
    server.update(|zone| {
        zone.set_fault("example.com", None);
    });
    // A server failure is kept briefly (tests/dns_cache.rs); clearing the cache forgets it.
    assert!(
        cached.txt("example.com").await.is_err(),
        "the error is kept"
    );
    cached.clear_cache();
    assert!(cached.txt("example.com").await.is_ok());
    assert!(uncached.txt("example.com").await.is_ok());
    assert_eq!(uncached.stats().cache_hits, 0);
}

#[tokio::test]
async fn small_cache_evicts() {
    let mut zone = Zone::new();
    for i in 0..10 {
        zone = zone.a(&format!("h{i}.example.com"), "192.0.2.1");
    }
    let server = TestDns::start(zone).await.expect("server");
    let dns = server.resolver(Duration::from_millis(300), 3);
    for i in 0..10 {
        dns.a(&format!("h{i}.example.com")).await.expect("a");
    }
    for i in 0..10 {
        dns.a(&format!("h{i}.example.com")).await.expect("a");
    }
    let stats = dns.stats();
    assert!(stats.upstream_queries >= 17, "{stats:?}");
}
