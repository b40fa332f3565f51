//! SPF evaluation cost with a warm cache, and pyspf on the same zones side by side.
//!
//! ```text
//! scripts/bench-spf            # installs pyspf and dnspython if missing, then:
//! cargo bench --bench spf_eval
//! ```
//!
//! Both evaluators query the same DNS server on loopback. After one warm-up evaluation, every
//! answer comes from the evaluator's cache: the server's query counter shows it. CPU time is
//! the evaluating thread's own (`/proc/thread-self/schedstat`).

#[path = "../tests/support/dns.rs"]
#[allow(dead_code)]
mod dns;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use dns::{TestDns, Zone};
use helpdesk_mail_operator::dns::{DnsConfig, Resolver};
use helpdesk_mail_operator::spf::{Evaluator, SpfQuery};

const SENDER: &str = "support@customer.example";
const HELO: &str = "mx.helpdesk.example";
/// One address passing at the record's last mechanism, one failing: both walk every term.
const CLIENTS: [&str; 2] = ["198.51.100.77", "192.0.2.200"];

fn zone() -> Zone {
    Zone::new()
        .txt(
            "customer.example",
            "v=spf1 include:_spf.helpdesk.example include:_spf.mailer.example \
             include:spf.crm.example mx a ip4:198.51.100.0/24 -all",
        )
        .txt(
            "_spf.helpdesk.example",
            "v=spf1 ip4:203.0.113.0/25 ip4:203.0.113.128/26 ip6:2001:db8:10::/48 ~all",
        )
        .txt(
            "_spf.mailer.example",
            "v=spf1 include:_nb1.mailer.example include:_nb2.mailer.example ~all",
        )
        .txt(
            "_nb1.mailer.example",
            "v=spf1 ip4:100.64.0.0/16 ip4:100.65.0.0/16 ip4:100.66.0.0/16 ip4:100.67.0.0/16 ~all",
        )
        .txt(
            "_nb2.mailer.example",
            "v=spf1 ip6:2001:db8:20::/48 ip6:2001:db8:21::/48 ~all",
        )
        .txt("spf.crm.example", "v=spf1 exists:%{i}._ip.crm.example -all")
        .a("1.1.1.1._ip.crm.example", "127.0.0.2")
        .mx("customer.example", 10, "mx1.customer.example")
        .mx("customer.example", 20, "mx2.customer.example")
        .a("mx1.customer.example", "198.18.0.1")
        .a("mx2.customer.example", "198.18.0.2")
        .a("customer.example", "198.18.0.3")
}

/// CPU time of the calling thread.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

const PYSPF: &str = r#"
import json, sys, time
import dns.resolver, spf
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clients = sys.argv[4:]
r = dns.resolver.Resolver(configure=False)
r.nameservers = [addr]
r.port = port
dns.resolver.default_resolver = r
cache = {}
def check(ip):
    q = spf.query(i=ip, s="support@customer.example", h="mx.helpdesk.example")
    q.cache = cache
    return q.check()[0]
results = [check(ip) for ip in clients]
cpu0, wall0 = time.process_time(), time.perf_counter()
for k in range(n):
    check(clients[k % len(clients)])
cpu1, wall1 = time.process_time(), time.perf_counter()
print(json.dumps({"results": results, "wall_us": (wall1 - wall0) / n * 1e6,
                  "cpu_us": (cpu1 - cpu0) / n * 1e6}))
"#;

fn main() {
    let iterations: usize = std::env::var("SPF_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime
        .block_on(TestDns::start(zone()))
        .expect("DNS server starts");
    let resolver = Resolver::new(&DnsConfig {
        nameservers: vec![server.addr()],
        timeout: Duration::from_secs(2),
        cache_size: 10_000,
        cache_size_fixed: true,
        ..DnsConfig::default()
    })
    .expect("resolver");
    let evaluator = Evaluator::new(resolver.clone());
    let queries: Vec<SpfQuery> = CLIENTS
        .iter()
        .map(|ip| SpfQuery::mail_from(ip.parse::<IpAddr>().expect("ip"), SENDER, HELO))
        .collect();

    // The evaluation runs on this thread (a current-thread runtime) so its CPU time is ours.
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rust_results: Vec<&str> = queries
        .iter()
        .map(|q| local.block_on(evaluator.check_host(q)).result.as_str())
        .collect();
    let lookups = local
        .block_on(evaluator.check_host(&queries[1]))
        .trace
        .lookups;
    let upstream_before = server.queries();
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    local.block_on(async {
        for k in 0..iterations {
            let outcome = evaluator.check_host(&queries[k % queries.len()]).await;
            std::hint::black_box(outcome);
        }
    });
    let wall = wall0.elapsed();
    let cpu = cpu0.zip(thread_cpu()).map(|(a, b)| b - a);
    let upstream = server.queries() - upstream_before;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / iterations as f64;
    println!(
        "zone: customer.example, {lookups} DNS-querying terms per evaluation, clients {CLIENTS:?}"
    );
    println!("helpdesk-mail-operator: results {rust_results:?}");
    println!(
        "helpdesk-mail-operator: {iterations} evaluations, {:.2} us wall and {} CPU per evaluation, {upstream} DNS queries while timed",
        per(wall),
        cpu.map(|c| format!("{:.2} us", per(c)))
            .unwrap_or_else(|| "n/a".to_string()),
    );

    let py_iterations = (iterations / 10).max(100);
    let addr = server.addr();
    let before = server.queries();
    let output = Command::new("python3")
        .arg("-c")
        .arg(PYSPF)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(py_iterations.to_string())
        .args(CLIENTS)
        .output();
    let py_queries = server.queries() - before;
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
            let py_cpu = v["cpu_us"].as_f64().unwrap_or(f64::NAN);
            let py_wall = v["wall_us"].as_f64().unwrap_or(f64::NAN);
            println!("pyspf: results {}", v["results"]);
            println!(
                "pyspf: {py_iterations} evaluations, {py_wall:.2} us wall and {py_cpu:.2} us CPU per evaluation ({py_queries} DNS queries in all, warm-up included)"
            );
            let ours = cpu.map(per).unwrap_or_else(|| per(wall));
            println!(
                "ratio: pyspf / helpdesk-mail-operator = {:.1}x CPU, {:.1}x wall",
                py_cpu / ours,
                py_wall / per(wall)
            );
        }
        Ok(out) => println!(
            "pyspf: not run ({}); `pip install pyspf dnspython` to compare",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        ),
        Err(e) => println!("pyspf: not run (python3: {e})"),
    }
    drop(server);
    drop(runtime);
}
