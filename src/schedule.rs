//! When each tenant is checked next: its due time and the egress epoch it was scheduled
//! under, the retry counters of failing reconciles, jitter and backoff.
//!
//! The schedule lives in memory only: a steady state writes nothing to the API, so a due time
//! can not depend on a status write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;

/// Longest wait between retries of a failing reconcile.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
const MIN_BACKOFF: Duration = Duration::from_secs(1);

/// A tenant: (namespace, name).
pub type TenantKey = (String, String);

#[derive(Clone, Copy, Debug)]
struct Entry {
    due: Instant,
    egress_epoch: u64,
}

/// Every tenant's next check and retry count, shared by all reconciles.
#[derive(Debug, Default)]
pub struct Schedule {
    due: Mutex<HashMap<TenantKey, Entry>>,
    failures: Mutex<HashMap<TenantKey, u32>>,
    /// How many tenants took a place in a spread so far (see [`spread_fraction`]).
    spread: AtomicU64,
}

/// Where a tenant stands in the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No due time in this process: just started or took over the Lease.
    Unknown,
    /// Scheduled before the egress set last changed.
    EgressChanged,
    /// Its due time has passed, by this much.
    Due { overdue: Duration },
    /// Not due yet.
    Waiting,
}

impl Schedule {
    /// The key of a tenant.
    pub fn key(namespace: &str, name: &str) -> TenantKey {
        (namespace.to_owned(), name.to_owned())
    }

    /// Whether a check is due: the tenant was never scheduled (a restart, a new tenant), was
    /// scheduled before the egress set last changed, or its time has come.
    pub fn is_due(&self, key: &TenantKey, egress_epoch: u64) -> bool {
        !matches!(self.state(key, egress_epoch), State::Waiting)
    }

    /// Where the tenant stands (see [`State`]).
    pub fn state(&self, key: &TenantKey, egress_epoch: u64) -> State {
        let entry = self.due.lock().ok().and_then(|s| s.get(key).copied());
        let now = Instant::now();
        match entry {
            None => State::Unknown,
            Some(e) if e.egress_epoch != egress_epoch => State::EgressChanged,
            Some(e) if e.due <= now => State::Due {
                overdue: now - e.due,
            },
            Some(_) => State::Waiting,
        }
    }

    /// Gives a tenant that already has a verdict, but no due time in this process, its place
    /// in a spread over one `interval` from now, or its `next_check` when that is later than
    /// the place but within the interval (docs/design.md §8 "No herd after a restart or
    /// failover"). A `next_check` further away than one interval was planned under a longer
    /// interval than the tenant has now and is not waited for. Returns the wait.
    pub fn adopt(
        &self,
        key: &TenantKey,
        interval: Duration,
        next_check: Option<Duration>,
        egress_epoch: u64,
    ) -> Duration {
        let place = interval.mul_f64(self.next_fraction());
        let wait = match next_check {
            Some(next) if next > place && next <= interval => next,
            _ => place,
        };
        self.set(key, wait, egress_epoch);
        wait
    }

    /// Re-plans a tenant scheduled before an egress change: due within `window`, spread
    /// evenly with the others. Returns the wait.
    pub fn respread(&self, key: &TenantKey, window: Duration, egress_epoch: u64) -> Duration {
        let wait = window.mul_f64(self.next_fraction());
        self.set(key, wait, egress_epoch);
        wait
    }

    fn next_fraction(&self) -> f64 {
        spread_fraction(self.spread.fetch_add(1, Ordering::Relaxed))
    }

    fn set(&self, key: &TenantKey, wait: Duration, egress_epoch: u64) {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        due.insert(
            key.clone(),
            Entry {
                due: Instant::now() + wait,
                egress_epoch,
            },
        );
    }

    /// Schedules the next check `after` from now (with jitter) when a check just ran or the
    /// tenant has no due time yet, and returns the wait until the tenant's due time.
    pub fn plan(
        &self,
        key: &TenantKey,
        after: Duration,
        checked: bool,
        egress_epoch: u64,
    ) -> Duration {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if checked || !due.contains_key(key) {
            due.insert(
                key.clone(),
                Entry {
                    due: Instant::now() + jitter(after),
                    egress_epoch,
                },
            );
        }
        due.get(key)
            .map(|e| e.due.saturating_duration_since(Instant::now()))
            .unwrap_or(after)
    }

    /// Drops the due time (checks are suspended).
    pub fn unschedule(&self, key: &TenantKey) {
        if let Ok(mut due) = self.due.lock() {
            due.remove(key);
        }
    }

    /// Counts one more failed reconcile of the tenant; returns the attempts so far.
    pub fn failed(&self, key: &TenantKey) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Resets the failure count after a successful reconcile.
    /// Whether the tenant's last reconcile failed (and none succeeded since).
    pub fn failing(&self, key: &TenantKey) -> bool {
        self.failures
            .lock()
            .is_ok_and(|failures| failures.contains_key(key))
    }

    pub fn succeeded(&self, key: &TenantKey) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Forgets every tenant `keep` rejects (deleted tenants).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        if let Ok(mut due) = self.due.lock() {
            due.retain(|(namespace, name), _| keep(namespace, name));
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|(namespace, name), _| keep(namespace, name));
        }
    }

    /// Forgets one tenant (it was deleted).
    pub fn forget(&self, key: &TenantKey) {
        self.unschedule(key);
        self.succeeded(key);
    }
}

/// The `n`-th place in a spread, as a fraction of the window: the golden-ratio sequence,
/// whose first `n` places cover every part of the window in proportion to its length, so
/// however many tenants take a place, no quarter of the window gets much more than a
/// quarter of them.
pub fn spread_fraction(n: u64) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    (n as f64 * GOLDEN).fract()
}

/// Adds up to 10 % so tenants created together spread out; never shortens the wait.
pub fn jitter(wait: Duration) -> Duration {
    let extra = wait.as_secs_f64() * rand::rng().random_range(0.0..0.1);
    wait + Duration::from_secs_f64(extra)
}

/// Exponential backoff: 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    (MIN_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn jitter_never_shortens_and_adds_at_most_ten_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(100));
            assert!(
                j >= Duration::from_secs(100) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }

    #[test]
    fn a_tenant_is_due_until_planned_and_again_after_an_egress_change() {
        let schedule = Schedule::default();
        let key = Schedule::key("ns", "acme");
        assert!(schedule.is_due(&key, 0));
        let wait = schedule.plan(&key, Duration::from_secs(60), true, 0);
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        assert!(!schedule.is_due(&key, 0));
        assert!(schedule.is_due(&key, 1), "a new egress epoch makes it due");
        // A reconcile without a check keeps the due time.
        let again = schedule.plan(&key, Duration::from_secs(1), false, 0);
        assert!(again > Duration::from_secs(50), "{again:?}");
        schedule.forget(&key);
        assert!(schedule.is_due(&key, 0));
    }

    #[test]
    fn spread_places_fill_every_quarter_evenly() {
        for n in [7u64, 30, 200, 10_000] {
            let mut quarters = [0u64; 4];
            for i in 0..n {
                let f = spread_fraction(i);
                assert!((0.0..1.0).contains(&f));
                quarters[(f * 4.0) as usize] += 1;
            }
            for q in quarters {
                assert!(q <= n / 4 + 2, "n={n} quarters={quarters:?}");
            }
        }
    }

    #[test]
    fn an_adopted_tenant_waits_its_place_or_a_later_next_check() {
        let schedule = Schedule::default();
        let key = Schedule::key("ns", "acme");
        assert_eq!(schedule.state(&key, 0), State::Unknown);
        let interval = Duration::from_secs(100);
        // The first place is at the start of the interval; the second is well inside it.
        let first = schedule.adopt(&Schedule::key("ns", "first"), interval, None, 0);
        assert_eq!(first, Duration::ZERO);
        let wait = schedule.adopt(&key, interval, Some(Duration::from_secs(5)), 0);
        assert!(wait > Duration::ZERO && wait < interval, "{wait:?}");
        assert_eq!(schedule.state(&key, 0), State::Waiting);
        // A later next check within the interval is kept.
        let later = schedule.adopt(&key, interval, Some(Duration::from_secs(99)), 0);
        assert_eq!(later, Duration::from_secs(99));
        // One planned under a longer interval (the tenant's interval shrank) is not waited for.
        let stale = schedule.adopt(&key, interval, Some(Duration::from_secs(500)), 0);
        assert!(stale < interval, "{stale:?}");
        assert_eq!(schedule.state(&key, 1), State::EgressChanged);
        let window = Duration::from_secs(10);
        assert!(schedule.respread(&key, window, 1) < window);
        assert_eq!(schedule.state(&key, 1), State::Waiting);
    }

    #[test]
    fn failures_count_until_a_success() {
        let schedule = Schedule::default();
        let key = Schedule::key("ns", "acme");
        assert_eq!(schedule.failed(&key), 1);
        assert_eq!(schedule.failed(&key), 2);
        schedule.succeeded(&key);
        assert_eq!(schedule.failed(&key), 1);
        schedule.retain(|_, _| false);
        assert_eq!(schedule.failed(&key), 1);
    }
}
