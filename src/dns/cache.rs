//! The answers kept between lookups: records, errors, freshness, the largest TTL seen, and
//! the queries in flight.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RecordType;
use tokio::sync::OnceCell;

use super::{DnsError, MAX_POSITIVE_TTL};

/// The records of one answer, kept in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Records {
    Txt(Arc<[Vec<u8>]>),
    A(Arc<[Ipv4Addr]>),
    Aaaa(Arc<[Ipv6Addr]>),
    Names(Arc<[String]>),
}

#[derive(Clone, Debug)]
pub(super) struct CachedAnswer {
    pub(super) records: Records,
    pub(super) ttl: Option<u32>,
    pub(super) nxdomain: bool,
    /// The server that gave an authoritative answer, `name (ip:port)`; `None` for the
    /// configured resolvers' answers.
    pub(super) server: Option<Arc<str>>,
}

impl CachedAnswer {
    /// The same DNS data: the same records (in the same order) and the same RCODE.
    pub(super) fn same_data(&self, other: &CachedAnswer) -> bool {
        self.nxdomain == other.nxdomain && self.records == other.records
    }
}

pub(super) type Outcome = Result<CachedAnswer, DnsError>;

/// One finished upstream query, as the cache keeps it.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) outcome: Outcome,
    /// Until when lookups are answered from `outcome` without asking upstream.
    pub(super) fresh_until: Instant,
    /// The latest answer (not error) seen for the key, with the largest TTL seen for its data:
    /// what the next answer with the same data reports as its TTL (design §6).
    pub(super) last_answer: Option<CachedAnswer>,
}

impl Entry {
    pub(super) fn fresh(&self, now: Instant) -> bool {
        self.fresh_until > now
    }
}

/// A query in flight: filled once by whichever lookup gets there first.
pub(super) struct Slot {
    pub(super) cell: OnceCell<Arc<Entry>>,
}

impl Slot {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            cell: OnceCell::new(),
        })
    }
}

/// Who is asked: the configured resolvers, or the name's authoritative servers
/// (design §6 "Authoritative vantage"). Their answers are kept apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Vantage {
    Resolver,
    Authority,
}

pub(super) type Key = (String, RecordType, Vantage);

/// The answers kept between lookups (design §6 "DNS").
///
/// Bounded by a number of entries and evicting the least recently used one in O(1): a moka
/// cache with its LRU policy. An entry stays after it stops being fresh, until it is evicted or
/// [`RETAIN_ENTRY`] old, so the largest TTL seen for a record outlives the record's own TTL.
/// The capacity only grows ([`AnswerCache::ensure_capacity`]); growing rebuilds the cache once
/// and copies its entries, and grows by at least a quarter so that happens rarely.
pub(super) struct AnswerCache {
    pub(super) cache: RwLock<moka::sync::Cache<Key, Arc<Entry>>>,
    pub(super) capacity: AtomicU64,
    /// The capacity was set by the operator (`--dns-cache-size`) and does not grow.
    pub(super) fixed: bool,
}

/// Longest time an entry is kept at all, fresh or not.
pub(super) const RETAIN_ENTRY: Duration = Duration::from_secs(MAX_POSITIVE_TTL as u64);

impl AnswerCache {
    pub(super) fn new(capacity: usize, fixed: bool) -> Self {
        let capacity = capacity as u64;
        Self {
            cache: RwLock::new(Self::build(capacity)),
            capacity: AtomicU64::new(capacity),
            fixed,
        }
    }

    pub(super) fn build(capacity: u64) -> moka::sync::Cache<Key, Arc<Entry>> {
        moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_live(RETAIN_ENTRY)
            .build()
    }

    pub(super) fn handle(&self) -> moka::sync::Cache<Key, Arc<Entry>> {
        // The handle is a cheap clone of shared state; a poisoned lock still holds a whole one.
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(super) fn capacity(&self) -> usize {
        usize::try_from(self.capacity.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    pub(super) fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        if self.capacity() == 0 {
            return None;
        }
        self.handle().get(key)
    }

    pub(super) fn insert(&self, key: Key, entry: Arc<Entry>) {
        // Capacity 0 keeps nothing: moka would hold an entry until its next maintenance.
        if self.capacity() > 0 {
            let cache = self.handle();
            cache.insert(key, entry);
            // moka evicts in batches; settling them on each insert (once per upstream query,
            // amortized O(1)) keeps the bound exact rather than eventual.
            cache.run_pending_tasks();
        }
    }

    pub(super) fn clear(&self) {
        self.handle().invalidate_all();
    }

    /// Raises the capacity to at least `entries` unless it is fixed. Returns whether it grew.
    pub(super) fn ensure_capacity(&self, entries: usize) -> bool {
        if self.fixed {
            return false;
        }
        let entries = entries as u64;
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.capacity.load(Ordering::Relaxed);
        if entries <= current {
            return false;
        }
        let grown = entries.max(current.saturating_add(current / 4));
        let bigger = Self::build(grown);
        for (key, entry) in cache.iter() {
            bigger.insert(Key::clone(&key), entry);
        }
        *cache = bigger;
        self.capacity.store(grown, Ordering::Relaxed);
        true
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        let cache = self.handle();
        cache.run_pending_tasks();
        cache.entry_count()
    }
}
