//! A real DNS server on loopback for tests and demos.
//!
//! It answers UDP and TCP queries on `127.0.0.1` from a [`Zone`] that a test builds and may edit
//! while the server runs. Names can be given faults: no answer at all, `SERVFAIL`, or a
//! truncated UDP answer that makes the client retry over TCP. Every answer carries the AA
//! bit, so one server can stand as a zone's authority as well as a resolver.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use helpdesk_mail_operator::dns::{DnsConfig, Resolver};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, PTR, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// TTL used when a test does not say.
pub const DEFAULT_TTL: u32 = 300;
/// Largest UDP answer sent to a client that does not use EDNS.
const CLASSIC_UDP_LIMIT: usize = 512;
/// Longest CNAME chain followed inside the zone.
const MAX_CNAME_CHAIN: usize = 16;

/// The data of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// A TXT record's character-strings, as bytes.
    Txt(Vec<Vec<u8>>),
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(u16, String),
    Ptr(String),
    Cname(String),
    /// A nameserver of the zone at this name.
    Ns(String),
    /// A record of the retired SPF type (99): character-strings, as bytes, like TXT.
    Spf99(Vec<Vec<u8>>),
}

impl Data {
    fn record_type(&self) -> RecordType {
        match self {
            Data::Txt(_) => RecordType::TXT,
            Data::A(_) => RecordType::A,
            Data::Aaaa(_) => RecordType::AAAA,
            Data::Mx(..) => RecordType::MX,
            Data::Ptr(_) => RecordType::PTR,
            Data::Cname(_) => RecordType::CNAME,
            Data::Ns(_) => RecordType::NS,
            Data::Spf99(_) => RecordType::Unknown(99),
        }
    }
}

/// What the server does wrong for a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Never answer.
    Timeout,
    /// Answer `SERVFAIL`.
    ServFail,
    /// Over UDP answer with the TC bit and no records; over TCP answer normally.
    Truncate,
    /// Answer queries for types the name has records of; never answer the others.
    TimeoutNoData,
}

/// The records and faults the server answers from. Names are compared without case and
/// without the trailing dot.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    records: HashMap<String, Vec<(u32, Data)>>,
    faults: HashMap<String, Fault>,
    /// SOA minimum sent with negative answers.
    pub negative_ttl: u32,
    /// When set, the server answers NXDOMAIN for every name except these and the names below
    /// them, as a broken resolver (a captive view, a misconfigured forwarder) does; an empty
    /// list means every name.
    pub nxdomain_except: Option<Vec<String>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A TXT text as character-strings of at most 255 bytes each (RFC 1035 §3.3.14).
fn character_strings(text: &str) -> Vec<Vec<u8>> {
    if text.is_empty() {
        return vec![Vec::new()];
    }
    text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()
}

impl Zone {
    /// Whether the NXDOMAIN-for-everything fault covers `name`.
    fn denies(&self, name: &str) -> bool {
        self.nxdomain_except.as_ref().is_some_and(|keep| {
            !keep
                .iter()
                .map(|k| key(k))
                .any(|k| name == k || name.ends_with(&format!(".{k}")))
        })
    }

    pub fn new() -> Self {
        Self {
            negative_ttl: 60,
            ..Self::default()
        }
    }

    /// Adds a record.
    pub fn add(&mut self, name: &str, ttl: u32, data: Data) -> &mut Self {
        self.records.entry(key(name)).or_default().push((ttl, data));
        self
    }

    /// Removes every record of `record_type` at `name`.
    pub fn remove(&mut self, name: &str, record_type: RecordType) -> &mut Self {
        if let Some(list) = self.records.get_mut(&key(name)) {
            list.retain(|(_, d)| d.record_type() != record_type);
        }
        self
    }

    /// Replaces the TXT records of `name` with one record holding `text`.
    pub fn set_txt(&mut self, name: &str, text: &str) -> &mut Self {
        self.remove(name, RecordType::TXT);
        self.add(name, DEFAULT_TTL, Data::Txt(character_strings(text)))
    }

    /// Sets or clears a fault on `name`.
    pub fn set_fault(&mut self, name: &str, fault: Option<Fault>) -> &mut Self {
        match fault {
            Some(f) => self.faults.insert(key(name), f),
            None => self.faults.remove(&key(name)),
        };
        self
    }

    /// One TXT record of one string (split into 255-byte strings when longer).
    pub fn txt(mut self, name: &str, text: &str) -> Self {
        self.add(name, DEFAULT_TTL, Data::Txt(character_strings(text)));
        self
    }

    /// One TXT record made of several character-strings.
    pub fn txt_strings(mut self, name: &str, strings: &[&str]) -> Self {
        let strings = strings.iter().map(|s| s.as_bytes().to_vec()).collect();
        self.add(name, DEFAULT_TTL, Data::Txt(strings));
        self
    }

    /// One TXT record of raw bytes (any byte values).
    pub fn txt_bytes(mut self, name: &str, bytes: &[u8]) -> Self {
        let strings = bytes.chunks(255).map(<[u8]>::to_vec).collect();
        self.add(name, DEFAULT_TTL, Data::Txt(strings));
        self
    }

    /// One record of the retired SPF type (99) holding `text` (split into 255-byte strings).
    pub fn spf99(mut self, name: &str, text: &str) -> Self {
        let strings = text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect();
        self.add(name, DEFAULT_TTL, Data::Spf99(strings));
        self
    }

    pub fn a(mut self, name: &str, ip: &str) -> Self {
        let ip = ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
        self.add(name, DEFAULT_TTL, Data::A(ip));
        self
    }

    pub fn aaaa(mut self, name: &str, ip: &str) -> Self {
        let ip = ip.parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        self.add(name, DEFAULT_TTL, Data::Aaaa(ip));
        self
    }

    pub fn mx(mut self, name: &str, preference: u16, exchange: &str) -> Self {
        self.add(
            name,
            DEFAULT_TTL,
            Data::Mx(preference, exchange.to_string()),
        );
        self
    }

    pub fn ptr(mut self, name: &str, target: &str) -> Self {
        self.add(name, DEFAULT_TTL, Data::Ptr(target.to_string()));
        self
    }

    /// A nameserver of the zone at `name` (for the authoritative vantage).
    pub fn ns(mut self, name: &str, host: &str) -> Self {
        self.add(name, DEFAULT_TTL, Data::Ns(host.to_string()));
        self
    }

    pub fn cname(mut self, name: &str, target: &str) -> Self {
        self.add(name, DEFAULT_TTL, Data::Cname(target.to_string()));
        self
    }

    /// A record with an explicit TTL.
    pub fn with_ttl(mut self, name: &str, ttl: u32, data: Data) -> Self {
        self.add(name, ttl, data);
        self
    }

    pub fn fault(mut self, name: &str, fault: Fault) -> Self {
        self.set_fault(name, Some(fault));
        self
    }

    /// Whether the name owns records or has names below it (an empty non-terminal).
    fn exists(&self, name: &str) -> bool {
        if self.records.get(name).is_some_and(|r| !r.is_empty()) {
            return true;
        }
        let suffix = format!(".{name}");
        self.records
            .iter()
            .any(|(n, r)| !r.is_empty() && n.ends_with(&suffix))
    }

    /// Parses the demo zone-file format, one entry a line:
    ///
    /// ```text
    /// # comment
    /// example.com TXT 300 "v=spf1 " "ip4:192.0.2.0/24 -all"
    /// example.com A 300 192.0.2.1
    /// example.com MX 300 10 mail.example.com
    /// broken.example.com SERVFAIL
    /// slow.example.com TIMEOUT
    /// big.example.com TRUNCATE
    /// ```
    ///
    /// TXT values are quoted strings (`\"`, `\\` and `\DDD` escapes) or the bare rest of the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut zone = Zone::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let fail = |msg: &str| format!("line {}: {msg}: {line}", n + 1);
            let mut fields = line.splitn(4, char::is_whitespace);
            let name = unescape_name(fields.next().ok_or_else(|| fail("no name"))?);
            let name = name.as_str();
            let kind = fields
                .next()
                .ok_or_else(|| fail("no type"))?
                .to_ascii_uppercase();
            match kind.as_str() {
                "SERVFAIL" => {
                    zone.set_fault(name, Some(Fault::ServFail));
                    continue;
                }
                "TIMEOUT" => {
                    zone.set_fault(name, Some(Fault::Timeout));
                    continue;
                }
                "TRUNCATE" => {
                    zone.set_fault(name, Some(Fault::Truncate));
                    continue;
                }
                "TIMEOUT-NODATA" => {
                    zone.set_fault(name, Some(Fault::TimeoutNoData));
                    continue;
                }
                _ => {}
            }
            let ttl: u32 = fields
                .next()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| fail("bad TTL"))?;
            let value = fields.next().unwrap_or("").trim();
            let data = match kind.as_str() {
                "TXT" => Data::Txt(parse_txt_value(value).map_err(|e| fail(&e))?),
                "SPF" => Data::Spf99(parse_txt_value(value).map_err(|e| fail(&e))?),
                "A" => Data::A(value.parse().map_err(|_| fail("bad IPv4 address"))?),
                "AAAA" => Data::Aaaa(value.parse().map_err(|_| fail("bad IPv6 address"))?),
                "MX" => {
                    let (pref, host) = value
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| fail("MX needs a preference and a host"))?;
                    Data::Mx(
                        pref.parse().map_err(|_| fail("bad MX preference"))?,
                        host.trim().to_string(),
                    )
                }
                "PTR" => Data::Ptr(value.to_string()),
                "CNAME" => Data::Cname(value.to_string()),
                "NS" => Data::Ns(value.to_string()),
                other => return Err(fail(&format!("unknown type {other}"))),
            };
            zone.add(name, ttl, data);
        }
        Ok(zone)
    }
}

/// A name's labels as raw text (no escaping), the form zone keys use.
fn wire_key(name: &Name) -> String {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).into_owned())
        .collect();
    key(&labels.join("."))
}

/// A zone-file name with `\DDD` escapes (for spaces and other odd bytes) decoded.
fn unescape_name(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).unwrap_or(&[]);
        if bytes[i] == b'\\' && digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
            let value = digits
                .iter()
                .fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `"a" "b"` with escapes, or the bare text as one string.
fn parse_txt_value(value: &str) -> Result<Vec<Vec<u8>>, String> {
    if !value.starts_with('"') {
        return Ok(vec![value.as_bytes().to_vec()]);
    }
    let bytes = value.as_bytes();
    let mut strings = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' => i += 1,
            b'"' => {
                i += 1;
                let mut current = Vec::new();
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated string".to_string()),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let digits = bytes.get(i + 1..i + 4).unwrap_or(&[]);
                            if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
                                let v = std::str::from_utf8(digits)
                                    .ok()
                                    .and_then(|d| d.parse::<u16>().ok())
                                    .filter(|v| *v <= 255)
                                    .ok_or_else(|| "bad \\DDD escape".to_string())?;
                                current.push(v as u8);
                                i += 4;
                            } else {
                                let c = bytes.get(i + 1).ok_or("dangling backslash")?;
                                current.push(*c);
                                i += 2;
                            }
                        }
                        Some(c) => {
                            current.push(*c);
                            i += 1;
                        }
                    }
                }
                strings.push(current);
            }
            _ => return Err("text outside quotes".to_string()),
        }
    }
    Ok(strings)
}

/// A running DNS server. Dropping it stops the server.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<RwLock<Zone>>,
    queries: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl TestDns {
    /// Starts a server on a random loopback port (the same port for UDP and TCP).
    pub async fn start(zone: Zone) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address"), zone).await
    }

    /// Starts a server on `addr` (port 0 picks one).
    pub async fn start_on(addr: SocketAddr, zone: Zone) -> std::io::Result<Self> {
        // Find a port free for both UDP and TCP.
        let mut attempts = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(addr).await?;
            let local = udp.local_addr()?;
            match TcpListener::bind(local).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if attempts >= 20 || addr.port() != 0 => return Err(e),
                Err(_) => attempts += 1,
            }
        };
        let addr = udp.local_addr()?;
        let zone = Arc::new(RwLock::new(zone));
        let queries = Arc::new(AtomicU64::new(0));
        let udp = Arc::new(udp);
        let udp_task = {
            let (zone, queries, udp) = (Arc::clone(&zone), Arc::clone(&queries), Arc::clone(&udp));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    let request = buf[..len].to_vec();
                    let (zone, udp) = (Arc::clone(&zone), Arc::clone(&udp));
                    tokio::spawn(async move {
                        if let Some(reply) = answer(&zone, &request, true) {
                            let _ = udp.send_to(&reply, peer).await;
                        }
                    });
                }
            })
        };
        let tcp_task = {
            let (zone, queries) = (Arc::clone(&zone), Arc::clone(&queries));
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let (zone, queries) = (Arc::clone(&zone), Arc::clone(&queries));
                    tokio::spawn(serve_tcp(stream, zone, queries));
                }
            })
        };
        Ok(Self {
            addr,
            zone,
            queries,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// A resolver that asks this server only, with `cache_size` answers cached (0 for tests
    /// that edit the zone between lookups).
    pub fn resolver(&self, timeout: Duration, cache_size: usize) -> Resolver {
        Resolver::new(&self.resolver_config(timeout, cache_size)).expect("resolver")
    }

    /// The configuration of [`TestDns::resolver`].
    pub fn resolver_config(&self, timeout: Duration, cache_size: usize) -> DnsConfig {
        DnsConfig {
            nameservers: vec![self.addr()],
            timeout,
            cache_size,
            cache_size_fixed: true,
            // Tests of the authoritative vantage turn it on themselves.
            authoritative_check: false,
            ..DnsConfig::default()
        }
    }

    /// The address to give a resolver.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Edits the zone while the server runs.
    pub fn update(&self, edit: impl FnOnce(&mut Zone)) {
        let mut zone = self.zone.write().unwrap_or_else(|p| p.into_inner());
        edit(&mut zone);
    }

    /// Replaces the whole zone.
    pub fn replace(&self, zone: Zone) {
        self.update(|z| *z = zone);
    }
}

async fn serve_tcp(mut stream: TcpStream, zone: Arc<RwLock<Zone>>, queries: Arc<AtomicU64>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        queries.fetch_add(1, Ordering::Relaxed);
        let Some(reply) = answer(&zone, &request, false) else {
            continue;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_all(&reply_len.to_be_bytes()).await.is_err()
            || stream.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

/// A name from its text, each label taken byte for byte (test names may hold any character).
fn name(text: &str) -> Option<Name> {
    let text = text.trim_end_matches('.');
    if text.is_empty() {
        return Some(Name::root());
    }
    Name::from_labels(text.split('.').map(str::as_bytes)).ok()
}

fn to_rdata(data: &Data) -> Option<RData> {
    Some(match data {
        Data::Txt(strings) => {
            RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
        }
        Data::A(ip) => RData::A(A(*ip)),
        Data::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Data::Mx(pref, host) => RData::MX(MX::new(*pref, name(host)?)),
        Data::Ptr(target) => RData::PTR(PTR(name(target)?)),
        Data::Cname(target) => RData::CNAME(CNAME(name(target)?)),
        Data::Ns(host) => RData::NS(NS(name(host)?)),
        Data::Spf99(strings) => {
            let mut wire = Vec::new();
            for string in strings {
                wire.push(u8::try_from(string.len()).ok()?);
                wire.extend_from_slice(string);
            }
            if wire.is_empty() {
                wire.push(0);
            }
            RData::Unknown {
                code: RecordType::Unknown(99),
                rdata: NULL::with(wire),
            }
        }
    })
}

/// The wire answer to one request, or `None` to stay silent.
fn answer(zone: &RwLock<Zone>, request: &[u8], udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(request).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    let Some(query) = request.queries.first().cloned() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply.to_vec().ok();
    };
    reply.add_query(query.clone());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        reply.set_edns(edns);
    }
    if request.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return reply.to_vec().ok();
    }
    let limit = match &request.edns {
        Some(edns) => usize::from(edns.max_payload()).max(CLASSIC_UDP_LIMIT),
        None => CLASSIC_UDP_LIMIT,
    };
    let qtype = query.query_type();
    let qname = wire_key(query.name());
    {
        let zone = zone.read().unwrap_or_else(|p| p.into_inner());
        match zone.faults.get(&qname) {
            Some(Fault::Timeout) => return None,
            Some(Fault::ServFail) => {
                reply.metadata.response_code = ResponseCode::ServFail;
                return reply.to_vec().ok();
            }
            Some(Fault::Truncate) if udp => {
                reply.metadata.truncation = true;
                return reply.to_vec().ok();
            }
            Some(Fault::TimeoutNoData) => {
                let has_data = zone.records.get(&qname).is_some_and(|records| {
                    records.iter().any(|(_, d)| {
                        d.record_type() == qtype || d.record_type() == RecordType::CNAME
                    })
                });
                if !has_data {
                    return None;
                }
            }
            _ => {}
        }
        let mut current = qname.clone();
        let mut seen = HashSet::new();
        loop {
            if seen.len() >= MAX_CNAME_CHAIN || !seen.insert(current.clone()) {
                // A CNAME loop or an endless chain: answer as a recursive resolver does.
                reply.answers.clear();
                reply.metadata.response_code = ResponseCode::ServFail;
                break;
            }
            let records = if zone.denies(&current) {
                &[]
            } else {
                zone.records.get(&current).map(Vec::as_slice).unwrap_or(&[])
            };
            let owner = name(&current)?;
            let cname = records.iter().find_map(|(ttl, d)| match d {
                Data::Cname(target) if qtype != RecordType::CNAME => Some((*ttl, target.clone())),
                _ => None,
            });
            if let Some((ttl, target)) = cname {
                reply.add_answer(Record::from_rdata(
                    owner,
                    ttl,
                    RData::CNAME(CNAME(name(&target)?)),
                ));
                current = key(&target);
                continue;
            }
            let before = reply.answers.len();
            for (ttl, data) in records {
                if data.record_type() == qtype
                    && let Some(rdata) = to_rdata(data)
                {
                    reply.add_answer(Record::from_rdata(owner.clone(), *ttl, rdata));
                }
            }
            if reply.answers.len() == before {
                if !zone.exists(&current) || zone.denies(&current) {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
                let apex = apex(&current);
                let soa = SOA::new(
                    name(&format!("ns.{apex}"))?,
                    name(&format!("hostmaster.{apex}"))?,
                    1,
                    3600,
                    600,
                    86400,
                    zone.negative_ttl,
                );
                reply.add_authority(Record::from_rdata(
                    name(&apex)?,
                    zone.negative_ttl,
                    RData::SOA(soa),
                ));
            }
            break;
        }
    }
    let bytes = reply.to_vec().ok()?;
    if udp && bytes.len() > limit {
        return reply.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// The last two labels of a name, standing in for its zone apex.
fn apex(name: &str) -> String {
    let labels: Vec<&str> = name.rsplitn(3, '.').collect();
    match labels.as_slice() {
        [tld, sld, ..] => format!("{sld}.{tld}"),
        [tld] if !tld.is_empty() => (*tld).to_string(),
        _ => "test".to_string(),
    }
}
