//! The fleet guard of docs/design.md §5, as pure state: which tenants turned from Aligned to
//! Unaligned within one check interval, and whether switches to fallback are held.
//!
//! A tenant counts as turned when one of its senders that sends as the tenant's own address
//! (so was Aligned when it last moved) gets an Unaligned verdict: it is on its way to the
//! fallback sender. Only each tenant's latest check within the window counts, so the rate is
//! "of the tenants checked in the last interval, how many are turning now". The guard trips
//! when more than `percent` of them, and at least `min_tenants`, turn. It holds until the rate
//! falls back under that threshold, the hold duration passes, or a person releases it; after
//! an expiry or a release it re-arms only once the rate has fallen under the threshold, so the
//! same episode does not trip it again.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The guard's flags (`--fleet-guard-percent`, `--fleet-guard-min-tenants`,
/// `--fleet-guard-hold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Percentage of checked tenants that must turn, exclusive; 0 turns the guard off.
    pub percent: u32,
    /// Tenants that must turn at least.
    pub min_tenants: usize,
    /// How long one hold lasts at most.
    pub hold: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            percent: 20,
            min_tenants: 10,
            hold: Duration::from_secs(3600),
        }
    }
}

/// Where the guard stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not holding; trips when the threshold is passed.
    Armed,
    /// Holding switches to fallback since the instant given.
    Holding { since: Instant },
    /// The hold expired or was released; re-arms when the rate falls under the threshold.
    Released,
}

/// What one evaluation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether switches to fallback are held now.
    pub holding: bool,
    /// Whether `holding` changed with this evaluation.
    pub changed: bool,
    /// Tenants turning and tenants checked within the window.
    pub turned: usize,
    pub checked: usize,
}

/// The guard's state over the fleet.
#[derive(Debug)]
pub struct FleetGuard<K> {
    config: GuardConfig,
    window: Duration,
    /// Per tenant, its latest check in the window and whether it turned.
    latest: HashMap<K, (Instant, bool)>,
    /// The checks in the order they came, to drop those leaving the window without a scan of
    /// `latest`; an entry whose tenant was checked again since is skipped.
    arrivals: VecDeque<(Instant, K)>,
    /// How many of `latest` turned.
    turned: usize,
    phase: Phase,
}

impl<K: Hash + Eq + Clone> FleetGuard<K> {
    /// A guard over checks of the last `window` (the check interval).
    pub fn new(config: GuardConfig, window: Duration) -> Self {
        Self {
            config,
            window,
            latest: HashMap::new(),
            arrivals: VecDeque::new(),
            turned: 0,
            phase: Phase::Armed,
        }
    }

    /// Whether the guard is on at all (`--fleet-guard-percent 0` turns it off).
    pub fn enabled(&self) -> bool {
        self.config.percent > 0
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Records one tenant's check and evaluates the guard. `released`: a person asked for the
    /// hold to end.
    pub fn observe(&mut self, key: &K, turned: bool, now: Instant, released: bool) -> Outcome {
        if self.enabled() {
            if let Some((_, was)) = self.latest.insert(key.clone(), (now, turned)) {
                self.turned -= usize::from(was);
            }
            self.turned += usize::from(turned);
            self.arrivals.push_back((now, key.clone()));
        }
        self.evaluate(now, released)
    }

    /// Evaluates the guard without a new check.
    pub fn evaluate(&mut self, now: Instant, released: bool) -> Outcome {
        let before = matches!(self.phase, Phase::Holding { .. });
        self.expire(now);
        let checked = self.latest.len();
        let turned = self.turned;
        let over = self.over(turned, checked);
        self.phase = match self.phase {
            _ if !self.enabled() => Phase::Armed,
            Phase::Armed if over && !released => Phase::Holding { since: now },
            Phase::Armed => Phase::Armed,
            Phase::Holding { .. } if !over => Phase::Armed,
            Phase::Holding { .. } if released => Phase::Released,
            Phase::Holding { since }
                if now.saturating_duration_since(since) >= self.config.hold =>
            {
                Phase::Released
            }
            holding @ Phase::Holding { .. } => holding,
            Phase::Released if !over => Phase::Armed,
            Phase::Released => Phase::Released,
        };
        let holding = matches!(self.phase, Phase::Holding { .. });
        Outcome {
            holding,
            changed: holding != before,
            turned,
            checked,
        }
    }

    /// Drops the checks older than the window, oldest first.
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.arrivals.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            let Some((at, key)) = self.arrivals.pop_front() else {
                break;
            };
            // Only the tenant's latest check leaves with it; a later one stays.
            if let Some(&(latest, turned)) = self.latest.get(&key)
                && latest == at
            {
                self.latest.remove(&key);
                self.turned -= usize::from(turned);
            }
        }
    }

    /// More than `percent` of the checked tenants, and at least `min_tenants`, turned.
    fn over(&self, turned: usize, checked: usize) -> bool {
        self.enabled()
            && turned >= self.config.min_tenants.max(1)
            && turned as u128 * 100 > u128::from(self.config.percent) * checked as u128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn guard(percent: u32, min: usize, hold_secs: u64) -> FleetGuard<u32> {
        FleetGuard::new(
            GuardConfig {
                percent,
                min_tenants: min,
                hold: Duration::from_secs(hold_secs),
            },
            WINDOW,
        )
    }

    /// `fine` tenants checked fine, then `turned` tenants turning, all at `at`.
    fn fill(g: &mut FleetGuard<u32>, fine: u32, turned: u32, at: Instant) -> Outcome {
        let mut last = g.evaluate(at, false);
        for k in 0..fine {
            last = g.observe(&k, false, at, false);
        }
        for k in fine..fine + turned {
            last = g.observe(&k, true, at, false);
        }
        last
    }

    #[test]
    fn trips_only_above_the_percentage() {
        let t = Instant::now();
        let mut g = guard(20, 2, 3600);
        // 2 of 10 is 20 %, not more than 20 %.
        assert!(!fill(&mut g, 8, 2, t).holding);
        // 3 of 10 is.
        let out = g.observe(&7, true, t, false);
        assert!(out.holding && out.changed);
        assert_eq!((out.turned, out.checked), (3, 10));
    }

    #[test]
    fn needs_the_minimum_number_of_tenants() {
        let t = Instant::now();
        let mut g = guard(20, 10, 3600);
        // 9 of 9 turned: 100 %, but fewer than 10 tenants.
        assert!(!fill(&mut g, 0, 9, t).holding);
        assert!(g.observe(&9, true, t, false).holding);
    }

    #[test]
    fn zero_percent_turns_the_guard_off() {
        let t = Instant::now();
        let mut g = guard(0, 1, 3600);
        assert!(!fill(&mut g, 0, 50, t).holding);
        assert_eq!(g.phase(), Phase::Armed);
    }

    #[test]
    fn checks_older_than_the_window_drop_out() {
        let t = Instant::now();
        let mut g = guard(20, 2, 3600);
        assert!(fill(&mut g, 0, 5, t).holding);
        // One interval later nothing of that is in the window: the rate is back under.
        let later = t + WINDOW;
        let out = g.evaluate(later, false);
        assert!(!out.holding && out.changed);
        assert_eq!(out.checked, 0);
    }

    #[test]
    fn a_tenant_checked_again_stays_in_the_window_with_its_latest_check() {
        let t = Instant::now();
        let mut g = guard(20, 1, 3600);
        g.observe(&1, true, t, false);
        let t2 = t + Duration::from_secs(30);
        let out = g.observe(&1, false, t2, false);
        assert_eq!((out.turned, out.checked), (0, 1));
        // The first check leaves the window; the second, not yet.
        let out = g.evaluate(t + WINDOW, false);
        assert_eq!((out.turned, out.checked), (0, 1));
        let out = g.evaluate(t2 + WINDOW, false);
        assert_eq!((out.turned, out.checked), (0, 0));
    }

    #[test]
    fn the_rate_dropping_ends_the_hold() {
        let t = Instant::now();
        let mut g = guard(20, 2, 3600);
        assert!(fill(&mut g, 5, 5, t).holding);
        // The same tenants check fine again: 1 of 10 turned.
        let t2 = t + Duration::from_secs(1);
        for k in 5..9 {
            g.observe(&k, false, t2, false);
        }
        assert!(!g.evaluate(t2, false).holding);
        assert_eq!(g.phase(), Phase::Armed);
    }

    #[test]
    fn the_hold_expires_and_does_not_trip_again_in_the_same_episode() {
        let t = Instant::now();
        let mut g = guard(20, 2, 10);
        assert!(fill(&mut g, 0, 5, t).holding);
        assert!(g.evaluate(t + Duration::from_secs(9), false).holding);
        let expired = t + Duration::from_secs(10);
        for k in 0..5 {
            g.observe(&k, true, expired, false);
        }
        assert!(!g.evaluate(expired, false).holding);
        assert_eq!(g.phase(), Phase::Released);
        // Once the rate is under the threshold it arms again, and a new episode trips it.
        let calm = expired + Duration::from_secs(1);
        for k in 0..5 {
            g.observe(&k, false, calm, false);
        }
        assert_eq!(g.phase(), Phase::Armed);
        let again = calm + Duration::from_secs(1);
        assert!(fill(&mut g, 0, 5, again).holding);
    }

    #[test]
    fn a_release_ends_the_hold_and_keeps_it_from_tripping_while_given() {
        let t = Instant::now();
        let mut g = guard(20, 2, 3600);
        assert!(fill(&mut g, 0, 5, t).holding);
        let out = g.observe(&0, true, t, true);
        assert!(!out.holding && out.changed);
        assert_eq!(g.phase(), Phase::Released);
        // While released and over the threshold it stays released.
        assert!(!g.observe(&1, true, t, false).holding);
        // From armed, a release keeps it from tripping.
        let mut g = guard(20, 2, 3600);
        for k in 0..5 {
            assert!(!g.observe(&k, true, t, true).holding);
        }
    }
}
