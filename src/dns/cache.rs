//! The answers kept between lookups: records, errors, freshness, the largest TTL seen, and
//! the queries in flight.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RecordType;
use lru::LruCache;
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
/// Bounded by a number of entries and evicting the least recently used one in O(1): an `lru`
/// map (a hash map over a linked list, about 100 bytes per entry besides the key and answer)
/// under one mutex, held only for a lookup or an insert. An entry stays after it stops being
/// fresh, until it is evicted or [`RETAIN_ENTRY`] old, so the largest TTL seen for a record
/// outlives the record's own TTL. The capacity only grows ([`AnswerCache::ensure_capacity`]),
/// by at least a quarter each time.
pub(super) struct AnswerCache {
    cache: Mutex<LruCache<Key, Kept>>,
    capacity: AtomicU64,
    /// The capacity was set by the operator (`--dns-cache-size`) and does not grow.
    fixed: bool,
}

/// An entry and when it was stored.
struct Kept {
    entry: Arc<Entry>,
    stored: Instant,
}

/// Longest time an entry is kept at all, fresh or not.
pub(super) const RETAIN_ENTRY: Duration = Duration::from_secs(MAX_POSITIVE_TTL as u64);

impl AnswerCache {
    pub(super) fn new(capacity: usize, fixed: bool) -> Self {
        Self {
            cache: Mutex::new(LruCache::new(Self::bound(capacity))),
            capacity: AtomicU64::new(capacity as u64),
            fixed,
        }
    }

    /// `lru` wants at least one entry; capacity 0 is handled before it is asked.
    fn bound(capacity: usize) -> NonZeroUsize {
        NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<Key, Kept>> {
        // A poisoned lock still holds a whole map: every change to it is one call.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn capacity(&self) -> usize {
        usize::try_from(self.capacity.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    pub(super) fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        if self.capacity() == 0 {
            return None;
        }
        let mut cache = self.lock();
        let kept = cache.get(key)?;
        if kept.stored.elapsed() < RETAIN_ENTRY {
            return Some(kept.entry.clone());
        }
        cache.pop(key);
        None
    }

    pub(super) fn insert(&self, key: Key, entry: Arc<Entry>) {
        if self.capacity() > 0 {
            let stored = Instant::now();
            self.lock().put(key, Kept { entry, stored });
        }
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    /// Raises the capacity to at least `entries` unless it is fixed. Returns whether it grew.
    pub(super) fn ensure_capacity(&self, entries: usize) -> bool {
        if self.fixed {
            return false;
        }
        let mut cache = self.lock();
        let current = self.capacity();
        if entries <= current {
            return false;
        }
        let grown = entries.max(current.saturating_add(current / 4));
        cache.resize(Self::bound(grown));
        self.capacity.store(grown as u64, Ordering::Relaxed);
        true
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        self.lock().len() as u64
    }
}
