//! DNS: the one module that speaks to hickory.
//!
//! The SPF evaluator and the DMARC lookup see only the small [`Dns`] trait. The real
//! implementation, [`Resolver`], wraps one hickory resolver and adds one cache shared by every
//! clone: answers are kept for their TTL (negative answers for the SOA minimum), and concurrent
//! lookups of the same (name, type) wait for a single upstream query. Every upstream query is
//! counted so the operator can show how much DNS traffic its checks cause.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::sync::OnceCell;

use crate::names::normalize_domain;

/// Longest time a positive answer is kept, whatever its TTL says.
const MAX_POSITIVE_TTL: u32 = 86_400;
/// Longest time a negative answer (NXDOMAIN or NODATA) is kept.
const MAX_NEGATIVE_TTL: u32 = 3_600;
/// How long a negative answer is kept when the server sent no SOA to say.
const DEFAULT_NEGATIVE_TTL: u32 = 60;

/// One DNS answer: the records of the asked type, possibly none.
///
/// An empty `records` is a void answer in the sense of RFC 7208 §4.6.4: NODATA, or NXDOMAIN
/// when `nxdomain` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    pub records: Arc<[T]>,
    /// The smallest TTL of the records; for a negative answer the SOA minimum, when known.
    pub ttl: Option<u32>,
    /// The name does not exist (RCODE 3).
    pub nxdomain: bool,
}

impl<T> Answer<T> {
    /// An answer holding `records`.
    pub fn new(records: Vec<T>, ttl: Option<u32>) -> Self {
        Self {
            records: records.into(),
            ttl,
            nxdomain: false,
        }
    }

    /// NODATA (`nxdomain == false`) or NXDOMAIN.
    pub fn empty(nxdomain: bool, ttl: Option<u32>) -> Self {
        Self {
            records: Vec::new().into(),
            ttl,
            nxdomain,
        }
    }

    /// Whether the answer holds no record (NXDOMAIN or NODATA).
    pub fn is_void(&self) -> bool {
        self.records.is_empty()
    }
}

/// A lookup that gave no answer at all: temporary in the sense of RFC 7208 §2.6.6.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// No answer within the configured time.
    #[error("DNS query timed out")]
    Timeout,
    /// The server answered with an RCODE other than NOERROR or NXDOMAIN (e.g. `SERVFAIL`).
    #[error("DNS server answered {0}")]
    Rcode(String),
    /// Anything else: the name cannot be queried, the connection failed, a CNAME loop.
    #[error("DNS lookup failed: {0}")]
    Other(String),
}

/// The lookups the SPF and DMARC evaluation needs.
///
/// Names are domain names with or without the trailing dot; they are always queried as
/// fully qualified (no search list).
pub trait Dns: Send + Sync {
    /// TXT records, one entry per record: its character-strings joined, as raw bytes.
    fn txt(&self, name: &str) -> impl Future<Output = Result<Answer<Vec<u8>>, DnsError>> + Send;
    /// A records.
    fn a(&self, name: &str) -> impl Future<Output = Result<Answer<Ipv4Addr>, DnsError>> + Send;
    /// AAAA records.
    fn aaaa(&self, name: &str) -> impl Future<Output = Result<Answer<Ipv6Addr>, DnsError>> + Send;
    /// MX exchange names (without the trailing dot), in the order received.
    fn mx(&self, name: &str) -> impl Future<Output = Result<Answer<String>, DnsError>> + Send;
    /// PTR target names (without the trailing dot).
    fn ptr(&self, name: &str) -> impl Future<Output = Result<Answer<String>, DnsError>> + Send;
    /// Records of the retired SPF type (99), shaped like [`Dns::txt`]. RFC 7208 §3.1 and §4.4
    /// leave them out of evaluation; they are asked for only to warn about them.
    fn spf99(&self, name: &str) -> impl Future<Output = Result<Answer<Vec<u8>>, DnsError>> + Send;
}

/// The SPF resource record type of RFC 4408, which RFC 7208 §3.1 retired.
pub const SPF_RECORD_TYPE: RecordType = RecordType::Unknown(99);

/// The default time allowed for one DNS query attempt, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;

/// How to build a [`Resolver`].
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Servers to query (`ip:port`), in order. Empty: the system's resolvers.
    pub nameservers: Vec<SocketAddr>,
    /// Time allowed for one query attempt; a query is tried twice before it times out.
    pub timeout: Duration,
    /// Number of (name, type) answers kept. 0 keeps nothing beyond the queries in flight.
    pub cache_size: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            cache_size: 10_000,
        }
    }
}

/// Counters of a [`Resolver`] since it was built (all clones share them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Lookups asked of the resolver.
    pub lookups: u64,
    /// Lookups answered from the cache or by joining a query already in flight.
    pub cache_hits: u64,
    /// Queries sent upstream (one per cache miss, whatever the retries underneath).
    pub upstream_queries: u64,
    /// Upstream queries that ended in a timeout or an error RCODE.
    pub upstream_errors: u64,
}

/// What an observer learns about each upstream query (for latency histograms).
#[derive(Clone, Debug)]
pub struct QueryEvent {
    pub record_type: &'static str,
    pub elapsed: Duration,
    /// `ok`, `nxdomain`, `nodata`, `timeout`, `rcode` or `error`.
    pub outcome: &'static str,
}

/// A callback told about every upstream query.
pub type QueryObserver = Arc<dyn Fn(&QueryEvent) + Send + Sync>;

/// The records of one answer, kept in the cache.
#[derive(Clone, Debug)]
enum Records {
    Txt(Arc<[Vec<u8>]>),
    A(Arc<[Ipv4Addr]>),
    Aaaa(Arc<[Ipv6Addr]>),
    Names(Arc<[String]>),
}

#[derive(Clone, Debug)]
struct CachedAnswer {
    records: Records,
    ttl: Option<u32>,
    nxdomain: bool,
}

type Outcome = Result<CachedAnswer, DnsError>;

/// One cache entry: filled once by whichever lookup gets there first.
struct Slot {
    cell: OnceCell<(Outcome, Instant)>,
}

impl Slot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            cell: OnceCell::new(),
        })
    }

    /// Filled and past its expiry.
    fn expired(&self, now: Instant) -> bool {
        matches!(self.cell.get(), Some((_, expires)) if *expires <= now)
    }
}

type Key = (String, RecordType);

struct Inner {
    resolver: TokioResolver,
    budget: Duration,
    cache_size: usize,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    upstream_queries: AtomicU64,
    upstream_errors: AtomicU64,
    observer: Option<QueryObserver>,
}

/// The real DNS client: cheap to clone, every clone shares one cache and one set of counters.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("cache_size", &self.inner.cache_size)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Resolver {
    /// Builds a resolver. Fails only when the system configuration is needed and unreadable.
    pub fn new(config: &DnsConfig) -> Result<Self, DnsError> {
        Self::with_observer(config, None)
    }

    /// Builds a resolver that reports every upstream query to `observer`.
    pub fn with_observer(
        config: &DnsConfig,
        observer: Option<QueryObserver>,
    ) -> Result<Self, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| DnsError::Other(format!("reading the system resolver: {e}")))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = config.timeout;
        options.attempts = 1;
        options.cache_size = 0;
        options.edns0 = true;
        options.ndots = 0;
        options.preserve_intermediates = false;
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Other(format!("building the resolver: {e}")))?;
        let servers = config.nameservers.len().max(1) as u32;
        // Two attempts per server, plus a little slack for the TCP retry after truncation.
        let budget = config.timeout * 2 * servers + Duration::from_millis(50);
        Ok(Self {
            inner: Arc::new(Inner {
                resolver,
                budget,
                cache_size: config.cache_size,
                slots: Mutex::new(HashMap::new()),
                lookups: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                upstream_queries: AtomicU64::new(0),
                upstream_errors: AtomicU64::new(0),
                observer,
            }),
        })
    }

    /// Counters since the resolver was built.
    pub fn stats(&self) -> DnsStats {
        let inner = &self.inner;
        DnsStats {
            lookups: inner.lookups.load(Ordering::Relaxed),
            cache_hits: inner.cache_hits.load(Ordering::Relaxed),
            upstream_queries: inner.upstream_queries.load(Ordering::Relaxed),
            upstream_errors: inner.upstream_errors.load(Ordering::Relaxed),
        }
    }

    /// Queries sent upstream since the resolver was built.
    pub fn upstream_queries(&self) -> u64 {
        self.inner.upstream_queries.load(Ordering::Relaxed)
    }

    /// Forgets every cached answer (queries in flight complete as usual).
    pub fn clear_cache(&self) {
        self.lock_slots().clear();
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        // A panic while holding the lock leaves the map consistent (no partial updates).
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The slot for `key`: the cached or in-flight one, or a fresh one.
    fn slot(&self, key: &Key) -> (Arc<Slot>, bool) {
        let now = Instant::now();
        let mut slots = self.lock_slots();
        if let Some(slot) = slots.get(key)
            && !slot.expired(now)
        {
            return (Arc::clone(slot), true);
        }
        if slots.len() >= self.inner.cache_size.max(1) && !slots.contains_key(key) {
            slots.retain(|_, slot| slot.cell.get().is_none() || !slot.expired(now));
            if slots.len() >= self.inner.cache_size.max(1) {
                // Still full of live answers: drop the one closest to expiry.
                let oldest = slots
                    .iter()
                    .filter_map(|(k, slot)| slot.cell.get().map(|(_, exp)| (k, *exp)))
                    .min_by_key(|(_, exp)| *exp)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    slots.remove(&oldest);
                }
            }
        }
        let slot = Slot::new();
        slots.insert(key.clone(), Arc::clone(&slot));
        (slot, false)
    }

    /// Removes `slot` from the map unless another lookup has replaced it already.
    fn forget(&self, key: &Key, slot: &Arc<Slot>) {
        let mut slots = self.lock_slots();
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
    }

    async fn lookup(&self, name: &str, record_type: RecordType) -> Outcome {
        self.inner.lookups.fetch_add(1, Ordering::Relaxed);
        let key = (normalize_domain(name), record_type);
        let (slot, existing) = self.slot(&key);
        let mut queried = false;
        let (outcome, expires) = slot
            .cell
            .get_or_init(|| {
                queried = true;
                self.query_upstream(&key.0, record_type)
            })
            .await;
        if existing && !queried {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        if queried && (self.inner.cache_size == 0 || *expires <= Instant::now()) {
            self.forget(&key, &slot);
        }
        outcome.clone()
    }

    async fn query_upstream(&self, name: &str, record_type: RecordType) -> (Outcome, Instant) {
        self.inner.upstream_queries.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        // Labels go on the wire as they are: SPF targets may hold any visible character.
        let outcome = match Name::from_labels(name.split('.').map(str::as_bytes)) {
            Ok(fqdn) => {
                match tokio::time::timeout(
                    self.inner.budget,
                    self.inner.resolver.lookup(fqdn, record_type),
                )
                .await
                {
                    Ok(Ok(lookup)) => Ok(collect(lookup.answers(), record_type)),
                    Ok(Err(err)) => map_error(err, record_type),
                    Err(_) => Err(DnsError::Timeout),
                }
            }
            Err(err) => Err(DnsError::Other(format!("not a domain name: {err}"))),
        };
        let label = match &outcome {
            Ok(answer) if answer.nxdomain => "nxdomain",
            Ok(answer) if answer.ttl.is_none() || records_empty(&answer.records) => "nodata",
            Ok(_) => "ok",
            Err(DnsError::Timeout) => "timeout",
            Err(DnsError::Rcode(_)) => "rcode",
            Err(DnsError::Other(_)) => "error",
        };
        if outcome.is_err() {
            self.inner.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(observer) = &self.inner.observer {
            observer(&QueryEvent {
                record_type: type_label(record_type),
                elapsed: started.elapsed(),
                outcome: label,
            });
        }
        let now = Instant::now();
        let keep = match &outcome {
            Ok(answer) if records_empty(&answer.records) => answer
                .ttl
                .unwrap_or(DEFAULT_NEGATIVE_TTL)
                .min(MAX_NEGATIVE_TTL),
            Ok(answer) => answer.ttl.unwrap_or(0).min(MAX_POSITIVE_TTL),
            Err(_) => 0,
        };
        (outcome, now + Duration::from_secs(u64::from(keep)))
    }

    async fn typed<T>(
        &self,
        name: &str,
        record_type: RecordType,
        pick: fn(Records) -> Option<Arc<[T]>>,
    ) -> Result<Answer<T>, DnsError> {
        let cached = self.lookup(name, record_type).await?;
        let records = pick(cached.records)
            .ok_or_else(|| DnsError::Other("cached answer of another type".to_string()))?;
        Ok(Answer {
            records,
            ttl: cached.ttl,
            nxdomain: cached.nxdomain,
        })
    }
}

impl Dns for Resolver {
    async fn txt(&self, name: &str) -> Result<Answer<Vec<u8>>, DnsError> {
        self.typed(name, RecordType::TXT, |r| match r {
            Records::Txt(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn a(&self, name: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        self.typed(name, RecordType::A, |r| match r {
            Records::A(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn aaaa(&self, name: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        self.typed(name, RecordType::AAAA, |r| match r {
            Records::Aaaa(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn mx(&self, name: &str) -> Result<Answer<String>, DnsError> {
        self.typed(name, RecordType::MX, |r| match r {
            Records::Names(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn ptr(&self, name: &str) -> Result<Answer<String>, DnsError> {
        self.typed(name, RecordType::PTR, |r| match r {
            Records::Names(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn spf99(&self, name: &str) -> Result<Answer<Vec<u8>>, DnsError> {
        self.typed(name, SPF_RECORD_TYPE, |r| match r {
            Records::Txt(v) => Some(v),
            _ => None,
        })
        .await
    }
}

/// The reverse-lookup name of an address (`4.3.2.1.in-addr.arpa`, nibbles for IPv6).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    name.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    name.push('.');
                }
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

fn records_empty(records: &Records) -> bool {
    match records {
        Records::Txt(v) => v.is_empty(),
        Records::A(v) => v.is_empty(),
        Records::Aaaa(v) => v.is_empty(),
        Records::Names(v) => v.is_empty(),
    }
}

fn type_label(record_type: RecordType) -> &'static str {
    match record_type {
        RecordType::TXT => "TXT",
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::MX => "MX",
        RecordType::PTR => "PTR",
        SPF_RECORD_TYPE => "SPF",
        _ => "other",
    }
}

/// A name's labels joined with dots, without escapes or the trailing dot.
fn name_text(name: &Name) -> String {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).into_owned())
        .collect();
    labels.join(".")
}

/// The records of the asked type in an answer section (CNAMEs already followed).
fn collect(
    answers: &[hickory_resolver::proto::rr::Record],
    record_type: RecordType,
) -> CachedAnswer {
    let mut ttl: Option<u32> = None;
    let mut txt = Vec::new();
    let mut a = Vec::new();
    let mut aaaa = Vec::new();
    let mut names = Vec::new();
    for record in answers {
        let matched = match (record_type, &record.data) {
            (RecordType::TXT, RData::TXT(data)) => {
                txt.push(
                    data.txt_data
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect(),
                );
                true
            }
            (RecordType::A, RData::A(addr)) => {
                a.push(addr.0);
                true
            }
            (RecordType::AAAA, RData::AAAA(addr)) => {
                aaaa.push(addr.0);
                true
            }
            (RecordType::MX, RData::MX(mx)) => {
                names.push(name_text(&mx.exchange));
                true
            }
            (RecordType::PTR, RData::PTR(ptr)) => {
                names.push(name_text(&ptr.0));
                true
            }
            (SPF_RECORD_TYPE, RData::Unknown { code, rdata }) if *code == SPF_RECORD_TYPE => {
                // Malformed data (a string running past the end) is no record at all.
                if let Some(text) = character_strings(&rdata.anything) {
                    txt.push(text);
                }
                true
            }
            _ => false,
        };
        if matched {
            ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
        }
    }
    let records = match record_type {
        RecordType::TXT | SPF_RECORD_TYPE => Records::Txt(txt.into()),
        RecordType::A => Records::A(a.into()),
        RecordType::AAAA => Records::Aaaa(aaaa.into()),
        _ => Records::Names(names.into()),
    };
    CachedAnswer {
        records,
        ttl,
        nxdomain: false,
    }
}

/// The character-strings of TXT-shaped wire data (each a length byte and that many bytes),
/// joined; `None` when a length runs past the end.
fn character_strings(mut wire: &[u8]) -> Option<Vec<u8>> {
    let mut text = Vec::with_capacity(wire.len());
    while let Some((&len, rest)) = wire.split_first() {
        let len = usize::from(len);
        let chunk = rest.get(..len)?;
        text.extend_from_slice(chunk);
        wire = &rest[len..];
    }
    Some(text)
}

fn empty_records(record_type: RecordType) -> Records {
    match record_type {
        RecordType::TXT | SPF_RECORD_TYPE => Records::Txt(Vec::new().into()),
        RecordType::A => Records::A(Vec::new().into()),
        RecordType::AAAA => Records::Aaaa(Vec::new().into()),
        _ => Records::Names(Vec::new().into()),
    }
}

fn map_error(err: NetError, record_type: RecordType) -> Outcome {
    match err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(none)) => match none.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(CachedAnswer {
                records: empty_records(record_type),
                ttl: none.negative_ttl,
                nxdomain: none.response_code == ResponseCode::NXDomain,
            }),
            code => Err(DnsError::Rcode(code.to_string())),
        },
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => match code {
            ResponseCode::NXDomain => Ok(CachedAnswer {
                records: empty_records(record_type),
                ttl: None,
                nxdomain: true,
            }),
            code => Err(DnsError::Rcode(code.to_string())),
        },
        NetError::Timeout => Err(DnsError::Timeout),
        other => Err(DnsError::Other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.1".parse().unwrap()),
            "1.2.0.192.in-addr.arpa"
        );
        let v6 = reverse_name("2001:db8::cb01".parse().unwrap());
        assert_eq!(
            v6,
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn character_strings_join_and_reject_overruns() {
        assert_eq!(
            character_strings(b"\x07v=spf1 \x04-all").as_deref(),
            Some(&b"v=spf1 -all"[..])
        );
        assert_eq!(character_strings(b"").as_deref(), Some(&b""[..]));
        assert_eq!(character_strings(b"\x05abc"), None);
    }

    #[test]
    fn answer_void() {
        let answer: Answer<u8> = Answer::empty(true, Some(30));
        assert!(answer.is_void());
        assert!(answer.nxdomain);
        assert!(!Answer::new(vec![1u8], Some(5)).is_void());
    }
}
