//! A real caching resolver for tests (docs/design.md §9): unbound, from Debian, on
//! `127.0.0.1:<port>`, forwarding every name to one loopback DNS server.
//!
//! No root hints and no outside traffic: the only upstream is the forward address; DNSSEC
//! validation and remote control are off. When the binary is missing and the test runs as
//! root (as CI does), it is installed with `apt-get install -y unbound`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running unbound. Dropping it stops the process and removes its directory.
pub struct Unbound {
    addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/unbound",
        "/usr/bin/unbound",
        "/usr/local/sbin/unbound",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The unbound binary, installed from Debian when missing and allowed.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(path) = find_binary() {
        return Ok(path);
    }
    if !is_root() {
        return Err("unbound is not installed: apt-get install -y unbound".to_string());
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "unbound"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get install unbound failed: {status}"));
    }
    find_binary().ok_or_else(|| "unbound still missing after apt-get".to_string())
}

fn config(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  logfile: "{dir}/unbound.log"
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  qname-minimisation: no
  prefetch: no
  serve-expired: no
  minimal-responses: yes
  cache-min-ttl: 0
remote-control:
  control-enable: no
forward-zone:
  name: "."
  forward-addr: {ip}@{upstream_port}
"#,
        ip = upstream.ip(),
        upstream_port = upstream.port(),
    )
}

/// A loopback port free for UDP and TCP at the time of asking.
fn free_port() -> std::io::Result<u16> {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free loopback port"))
}

/// A DNS query for `example.invalid. A`, to see whether unbound answers at all.
fn probe() -> Vec<u8> {
    let mut wire = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["example", "invalid"] {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.extend_from_slice(&[0, 0, 1, 0, 1]);
    wire
}

impl Unbound {
    /// Starts unbound forwarding to `upstream`, and waits until it answers (at most 10 s).
    pub fn start(upstream: SocketAddr) -> Result<Self, String> {
        let binary = binary()?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let conf = dir.path().join("unbound.conf");
        std::fs::write(&conf, config(dir.path(), port, upstream)).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting unbound: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut unbound = Self {
            addr,
            child,
            _dir: dir,
        };
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            if let Ok(Some(status)) = unbound.child.try_wait() {
                let log = std::fs::read_to_string(unbound._dir.path().join("unbound.log"))
                    .unwrap_or_default();
                return Err(format!("unbound exited ({status}): {log}"));
            }
            if socket.send_to(&probe(), addr).is_ok() && socket.recv_from(&mut buf).is_ok() {
                return Ok(unbound);
            }
        }
        Err("unbound did not answer within 10 s".to_string())
    }

    /// The address to give a resolver.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
