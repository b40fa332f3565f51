//! DNS: the one module that speaks to hickory.
//!
//! The SPF evaluator and the DMARC lookup see only the small [`Dns`] trait. The real
//! implementation, [`Resolver`], wraps one hickory resolver and adds one cache shared by every
//! clone: answers are kept for their TTL (negative answers for the SOA minimum, server failures
//! and timeouts for [`ERROR_TTL`]), and concurrent lookups of the same (name, type) wait for a
//! single upstream query. The cache is bounded, evicts in O(1) and grows with the fleet
//! (design §6 "DNS"). Every upstream query is counted so the operator can show how much DNS
//! traffic its checks cause.
//!
//! With the authoritative vantage on, [`Dns::authoritative_txt`] also asks a name's own
//! nameservers ([`authority`]); their answers share the cache, kept for the authority's TTL.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RecordType};

use crate::names::normalize_domain;

mod authority;
mod cache;
mod direct;
mod wire;

use authority::AuthorityConfig;
use cache::{AnswerCache, Entry, Key, Outcome, Records, Slot, Vantage};
use wire::{collect, map_error, records_empty, type_label};

/// Longest time a positive answer is kept, whatever its TTL says.
const MAX_POSITIVE_TTL: u32 = 86_400;
/// Longest time a negative answer (NXDOMAIN or NODATA) is kept.
const MAX_NEGATIVE_TTL: u32 = 3_600;
/// How long a negative answer is kept when the server sent no SOA to say.
const DEFAULT_NEGATIVE_TTL: u32 = 60;
/// How long a server failure, a refusal or a timeout is kept, so an outage does not multiply
/// queries (RFC 2308 §7 allows up to five minutes; design §6).
pub const ERROR_TTL: u32 = 5;
/// The cache capacity when nothing else says: the floor of [`cache_capacity_for_tenants`].
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
/// Cache entries set aside per tenant: its SPF record, its DMARC record, the names its
/// record and DKIM selectors lead to, and for the authoritative vantage the authority's answer
/// and its zone's NS RRset.
pub const ENTRIES_PER_TENANT: usize = 6;

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

/// What a name's authoritative servers answered (design §6 "Authoritative vantage").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authority {
    /// The authoritative check is off, or this DNS layer has no such vantage.
    NotAsked,
    /// One of the name's authoritative servers answered.
    Answered {
        /// The server, `host (ip:port)`.
        server: String,
        /// Its answer, with the TTL it publishes (the full TTL, not a cache's remainder).
        answer: Answer<Vec<u8>>,
    },
    /// No authoritative server was found, or none answered.
    Unreachable { reason: String },
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
/// A CNAME record: where a name points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CnameTarget {
    /// The canonical name, without the trailing dot.
    pub target: String,
    pub ttl: Option<u32>,
}

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
    /// The CNAME record at `name`: `Ok(None)` when there is none, or when this DNS layer
    /// follows CNAMEs out of sight (the default, and the shared [`Resolver`]), so that the
    /// other lookups already answer for the end of the chain.
    fn cname(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<CnameTarget>, DnsError>> + Send {
        let _ = name;
        async { Ok(None) }
    }
    /// The TXT records of `name` as its authoritative servers answer them: [`Authority::NotAsked`]
    /// by default, and from the shared [`Resolver`] while the authoritative check is off.
    fn authoritative_txt(&self, name: &str) -> impl Future<Output = Authority> + Send {
        let _ = name;
        async { Authority::NotAsked }
    }
}

/// The SPF resource record type of RFC 4408, which RFC 7208 §3.1 retired.
pub const SPF_RECORD_TYPE: RecordType = RecordType::Unknown(99);

/// The default time allowed for one DNS query attempt, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
/// The port authoritative servers are asked on unless a lab or a test says otherwise.
pub const DEFAULT_AUTHORITATIVE_PORT: u16 = 53;
/// Whether the authoritative vantage is on unless the operator turns it off.
pub const DEFAULT_AUTHORITATIVE_CHECK: bool = true;

/// How to build a [`Resolver`].
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Servers to query (`ip:port`), in order. Empty: the system's resolvers.
    pub nameservers: Vec<SocketAddr>,
    /// Time allowed for one query attempt; a query is tried twice before it times out.
    pub timeout: Duration,
    /// Number of (name, type) answers kept at first. 0 keeps nothing beyond the queries in
    /// flight.
    pub cache_size: usize,
    /// `cache_size` is the operator's choice: [`Resolver::ensure_capacity`] leaves it alone.
    pub cache_size_fixed: bool,
    /// Also ask names' authoritative servers ([`Dns::authoritative_txt`]).
    pub authoritative_check: bool,
    /// The port the authoritative servers are asked on.
    pub authoritative_port: u16,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            cache_size: DEFAULT_CACHE_SIZE,
            cache_size_fixed: false,
            authoritative_check: DEFAULT_AUTHORITATIVE_CHECK,
            authoritative_port: DEFAULT_AUTHORITATIVE_PORT,
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
    /// Queries sent to authoritative servers (one per server asked).
    pub authority_queries: u64,
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

struct Inner {
    resolver: TokioResolver,
    budget: Duration,
    answers: AnswerCache,
    flights: Mutex<HashMap<Key, Arc<Slot>>>,
    lookups: AtomicU64,
    cache_hits: AtomicU64,
    upstream_queries: AtomicU64,
    upstream_errors: AtomicU64,
    authority_queries: AtomicU64,
    observer: Option<QueryObserver>,
    authority: Option<AuthorityConfig>,
}

/// The real DNS client: cheap to clone, every clone shares one cache and one set of counters.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("cache_capacity", &self.cache_capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

/// The cache capacity for a fleet of `tenants`: [`ENTRIES_PER_TENANT`] each, at least
/// [`DEFAULT_CACHE_SIZE`].
pub fn cache_capacity_for_tenants(tenants: usize) -> usize {
    tenants
        .saturating_mul(ENTRIES_PER_TENANT)
        .max(DEFAULT_CACHE_SIZE)
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
                answers: AnswerCache::new(config.cache_size, config.cache_size_fixed),
                flights: Mutex::new(HashMap::new()),
                lookups: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                upstream_queries: AtomicU64::new(0),
                upstream_errors: AtomicU64::new(0),
                authority_queries: AtomicU64::new(0),
                observer,
                authority: config.authoritative_check.then_some(AuthorityConfig {
                    port: config.authoritative_port,
                    timeout: config.timeout,
                }),
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
            authority_queries: inner.authority_queries.load(Ordering::Relaxed),
        }
    }

    /// Queries sent upstream since the resolver was built.
    pub fn upstream_queries(&self) -> u64 {
        self.inner.upstream_queries.load(Ordering::Relaxed)
    }

    /// Forgets every cached answer (queries in flight complete as usual).
    pub fn clear_cache(&self) {
        self.inner.answers.clear();
    }

    /// How many (name, type) entries the cache holds at most.
    pub fn cache_capacity(&self) -> usize {
        self.inner.answers.capacity()
    }

    /// Raises the cache capacity to at least `entries` (see [`cache_capacity_for_tenants`]),
    /// keeping what is cached. Does nothing when the capacity was fixed by
    /// [`DnsConfig::cache_size_fixed`] or is already as large. Returns whether it grew.
    pub fn ensure_capacity(&self, entries: usize) -> bool {
        self.inner.answers.ensure_capacity(entries)
    }

    fn lock_flights(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        // A panic while holding the lock leaves the map consistent (no partial updates).
        self.inner
            .flights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached entry for `key` while it is fresh.
    fn fresh(&self, key: &Key) -> Option<Arc<Entry>> {
        self.inner
            .answers
            .get(key)
            .filter(|entry| entry.fresh(Instant::now()))
    }

    /// Removes `slot` from the in-flight map unless another lookup has replaced it already.
    fn forget(&self, key: &Key, slot: &Arc<Slot>) {
        let mut flights = self.lock_flights();
        if flights.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            flights.remove(key);
        }
    }

    async fn lookup(&self, name: &str, record_type: RecordType, vantage: Vantage) -> Outcome {
        self.inner.lookups.fetch_add(1, Ordering::Relaxed);
        let key = (normalize_domain(name), record_type, vantage);
        if let Some(entry) = self.fresh(&key) {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
            return entry.outcome.clone();
        }
        let slot = {
            let mut flights = self.lock_flights();
            // Asked again under the lock: a finished query stores its entry before it leaves
            // the in-flight map, so a lookup sees one or the other.
            if let Some(entry) = self.fresh(&key) {
                self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
                return entry.outcome.clone();
            }
            Arc::clone(flights.entry(key.clone()).or_insert_with(Slot::new))
        };
        let mut queried = false;
        let entry = slot
            .cell
            .get_or_init(|| {
                queried = true;
                self.query_and_keep(&key)
            })
            .await;
        let outcome = entry.outcome.clone();
        if queried {
            self.forget(&key, &slot);
        } else {
            self.inner.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Asks the authoritative servers. Boxed: finding them looks names up through
    /// [`Resolver::lookup`], which may have led here.
    fn query_authority<'a>(
        &'a self,
        config: AuthorityConfig,
        key: &'a Key,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(authority::query(self, config, &key.0, key.1))
    }

    /// Asks upstream (or the authority, for its keys), stores the entry in the cache and
    /// returns it.
    async fn query_and_keep(&self, key: &Key) -> Arc<Entry> {
        let (outcome, keep) = match (key.2, self.inner.authority) {
            (Vantage::Authority, Some(config)) => {
                let outcome = self.query_authority(config, key).await;
                let keep = keep_for(&outcome);
                (outcome, keep)
            }
            (Vantage::Authority, None) => (
                Err(DnsError::Other(
                    "the authoritative check is off".to_string(),
                )),
                Duration::ZERO,
            ),
            (Vantage::Resolver, _) => self.query_upstream(&key.0, key.1).await,
        };
        let previous = self
            .inner
            .answers
            .get(key)
            .and_then(|entry| entry.last_answer.clone());
        let (outcome, last_answer) = match outcome {
            Ok(mut answer) => {
                // A caching resolver hands out the remainder of its own entry's TTL: report
                // the largest TTL seen for the same data instead (design §6). An authority
                // gives the full TTL itself.
                if key.2 == Vantage::Resolver
                    && let Some(previous) = previous.filter(|p| p.same_data(&answer))
                {
                    answer.ttl = match (answer.ttl, previous.ttl) {
                        (Some(now), Some(before)) => Some(now.max(before)),
                        (now, before) => now.or(before),
                    };
                }
                (Ok(answer.clone()), Some(answer))
            }
            Err(err) => (Err(err), previous),
        };
        let entry = Arc::new(Entry {
            outcome,
            fresh_until: Instant::now() + keep,
            last_answer,
        });
        self.inner.answers.insert(key.clone(), Arc::clone(&entry));
        entry
    }

    /// One upstream query: its outcome and how long the outcome may be cached.
    async fn query_upstream(&self, name: &str, record_type: RecordType) -> (Outcome, Duration) {
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
        let keep = keep_for(&outcome);
        (outcome, keep)
    }

    /// NS host names (without the trailing dot), for finding a zone's servers.
    async fn ns(&self, name: &str) -> Result<Answer<String>, DnsError> {
        self.typed(name, RecordType::NS, |r| match r {
            Records::Names(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn typed<T>(
        &self,
        name: &str,
        record_type: RecordType,
        pick: fn(Records) -> Option<Arc<[T]>>,
    ) -> Result<Answer<T>, DnsError> {
        let cached = self.lookup(name, record_type, Vantage::Resolver).await?;
        let records = pick(cached.records)
            .ok_or_else(|| DnsError::Other("cached answer of another type".to_string()))?;
        Ok(Answer {
            records,
            ttl: cached.ttl,
            nxdomain: cached.nxdomain,
        })
    }
}

/// How long an outcome may be cached: an answer for its TTL (negative answers for the SOA
/// minimum), a failure for [`ERROR_TTL`].
fn keep_for(outcome: &Outcome) -> Duration {
    let keep = match outcome {
        Ok(answer) if records_empty(&answer.records) => answer
            .ttl
            .unwrap_or(DEFAULT_NEGATIVE_TTL)
            .min(MAX_NEGATIVE_TTL),
        Ok(answer) => answer.ttl.unwrap_or(0).min(MAX_POSITIVE_TTL),
        Err(_) => ERROR_TTL,
    };
    Duration::from_secs(u64::from(keep))
}

impl Dns for Resolver {
    async fn authoritative_txt(&self, name: &str) -> Authority {
        if self.inner.authority.is_none() {
            return Authority::NotAsked;
        }
        match self.lookup(name, RecordType::TXT, Vantage::Authority).await {
            Ok(cached) => match cached.records {
                Records::Txt(records) => Authority::Answered {
                    server: cached.server.as_deref().unwrap_or_default().to_string(),
                    answer: Answer {
                        records,
                        ttl: cached.ttl,
                        nxdomain: cached.nxdomain,
                    },
                },
                _ => Authority::Unreachable {
                    reason: "cached answer of another type".to_string(),
                },
            },
            Err(error) => Authority::Unreachable {
                reason: error.to_string(),
            },
        }
    }

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

#[cfg(test)]
mod tests {
    use super::cache::CachedAnswer;
    use super::wire::character_strings;
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

    fn key(name: &str) -> Key {
        (name.to_string(), RecordType::TXT, Vantage::Resolver)
    }

    fn entry(text: &str) -> Arc<Entry> {
        let answer = CachedAnswer {
            records: Records::Txt(vec![text.as_bytes().to_vec()].into()),
            ttl: Some(300),
            nxdomain: false,
            server: None,
        };
        Arc::new(Entry {
            outcome: Ok(answer.clone()),
            fresh_until: Instant::now() + Duration::from_secs(300),
            last_answer: Some(answer),
        })
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let cache = AnswerCache::new(3, false);
        for name in ["a", "b", "c"] {
            cache.insert(key(name), entry(name));
        }
        assert!(cache.get(&key("a")).is_some());
        cache.insert(key("d"), entry("d"));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key("b")).is_none(), "b was used least recently");
        for name in ["a", "c", "d"] {
            assert!(cache.get(&key(name)).is_some(), "{name} kept");
        }
        cache.insert(key("e"), entry("e"));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key("a")).is_none(), "then a");
    }

    #[test]
    fn cache_holds_its_capacity_and_no_more() {
        let cache = AnswerCache::new(100, false);
        for n in 0..1_000 {
            cache.insert(key(&format!("n{n}.example")), entry("x"));
        }
        assert_eq!(cache.len(), 100);
        // The latest entries are the ones kept.
        assert!(cache.get(&key("n999.example")).is_some());
        assert!(cache.get(&key("n0.example")).is_none());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = AnswerCache::new(0, true);
        cache.insert(key("a"), entry("a"));
        assert!(cache.get(&key("a")).is_none());
    }

    #[test]
    fn capacity_grows_keeping_entries_unless_fixed() {
        let cache = AnswerCache::new(100, false);
        cache.insert(key("a"), entry("a"));
        cache.insert(key("b"), entry("b"));
        assert!(!cache.ensure_capacity(100), "not larger");
        // At least a quarter more, so growing one tenant at a time rebuilds rarely.
        assert!(cache.ensure_capacity(101));
        assert_eq!(cache.capacity(), 125);
        assert!(!cache.ensure_capacity(120));
        assert!(cache.ensure_capacity(1_000));
        assert_eq!(cache.capacity(), 1_000);
        assert!(cache.get(&key("a")).is_some() && cache.get(&key("b")).is_some());
        for n in 0..998 {
            cache.insert(key(&format!("n{n}")), entry("x"));
        }
        assert_eq!(cache.len(), 1_000, "nothing evicted at the new capacity");
        assert!(cache.get(&key("a")).is_some());

        let fixed = AnswerCache::new(2, true);
        assert!(!fixed.ensure_capacity(1_000));
        assert_eq!(fixed.capacity(), 2);
    }

    #[test]
    fn capacity_for_tenants_has_a_floor() {
        assert_eq!(cache_capacity_for_tenants(0), DEFAULT_CACHE_SIZE);
        assert_eq!(cache_capacity_for_tenants(1_000), DEFAULT_CACHE_SIZE);
        assert_eq!(cache_capacity_for_tenants(10_000), 60_000);
        assert_eq!(cache_capacity_for_tenants(usize::MAX), usize::MAX);
    }

    #[test]
    fn answer_void() {
        let answer: Answer<u8> = Answer::empty(true, Some(30));
        assert!(answer.is_void());
        assert!(answer.nxdomain);
        assert!(!Answer::new(vec![1u8], Some(5)).is_void());
    }
}
