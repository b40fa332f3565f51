//! A DNS server for demos and conformance runs: serves a zone file on loopback and reloads it
//! when the file changes.
//!
//! ```text
//! cargo run --example dns-server -- zones.txt [127.0.0.1:5353]
//! ```
//!
//! The zone file has one entry a line, `name TYPE ttl value` (TXT, A, AAAA, MX, PTR, CNAME), or
//! `name SERVFAIL`, `name TIMEOUT`, `name TRUNCATE` to make a name misbehave. The first line of
//! stdout is `listening on <ip:port>`. With `HDMO_DNS_QUERIES_FILE` set, the number of queries
//! received so far is kept in that file (for `scripts/bench-scale`).

#[path = "../tests/support/dns.rs"]
#[allow(dead_code)]
mod dns;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use dns::{TestDns, Zone};

fn read_zone(path: &PathBuf) -> Result<(Zone, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((Zone::parse(&text)?, modified))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: dns-server ZONE_FILE [LISTEN_ADDR]");
        return ExitCode::from(2);
    };
    let listen: SocketAddr = match args.next().as_deref().unwrap_or("127.0.0.1:0").parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("bad listen address: {e}");
            return ExitCode::from(2);
        }
    };
    let (zone, mut modified) = match read_zone(&path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match TestDns::start_on(listen, zone).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.addr());
    let queries_file = std::env::var_os("HDMO_DNS_QUERIES_FILE").map(PathBuf::from);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        }
        if let Some(file) = &queries_file {
            // Written aside and renamed, so a reader never sees the file half written.
            let aside = file.with_extension("tmp");
            if std::fs::write(&aside, format!("{}\n", server.queries())).is_ok() {
                let _ = std::fs::rename(&aside, file);
            }
        }
        let now = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if now == modified {
            continue;
        }
        match read_zone(&path) {
            Ok((zone, stamp)) => {
                server.replace(zone);
                modified = stamp;
                eprintln!("reloaded {}", path.display());
            }
            // Keep serving the last good zone; try again on the next change.
            Err(e) => {
                modified = now;
                eprintln!("not reloaded: {e}");
            }
        }
    }
}
