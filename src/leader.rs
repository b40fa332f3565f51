//! Leader election that fences (docs/design.md §8 "High availability", §11), on a
//! `coordination.k8s.io/v1` Lease.
//!
//! The rules, as client-go's leader election has them:
//!
//! - A candidate takes the Lease only when it is free, or when the record it last observed has
//!   not changed for a whole lease duration, measured on its own monotonic clock (no clock
//!   comparison across machines). Every take and renewal is a patch carrying the Lease's
//!   resourceVersion, so two candidates can never both win.
//! - The holder renews every retry period. Its [`Leadership`] is valid only until the start of
//!   the last successful renewal plus the renew deadline, which is shorter than the lease
//!   duration: it stops writing while its Lease is still valid in everyone else's eyes.
//! - When a renewal fails for good or the deadline passes, the term ends at once: its
//!   cancellation token fires (reconciles in flight stop, docs/design.md §8) and every later
//!   write is refused by [`Leadership::check`]. A process paused past the deadline (SIGSTOP, a
//!   GC stall) finds its leadership expired when it resumes, before it can write anything, and
//!   leads again only after winning the Lease again.
//!
//! The RBAC needed is `create` on Leases and `get`, `patch` on the one Lease
//! (`charts/helpdesk-mail-operator/files/rbac-rules.yaml`).

use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The three durations of leader election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease holds without renewal, in other candidates' eyes.
    pub lease_duration: Duration,
    /// How long the holder keeps writing after its last successful renewal began.
    pub renew_deadline: Duration,
    /// Pause between renewals, and between attempts to take the Lease.
    pub retry_period: Duration,
}

impl Timing {
    /// client-go's 15 s / 10 s / 2 s, scaled to `lease_seconds` (at least 2 s).
    pub fn scaled(lease_seconds: u64) -> Self {
        let lease_duration = Duration::from_secs(lease_seconds.max(2));
        Self {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
    }
}

/// A write refused because this process does not hold a valid Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader: the Lease is not held or its renew deadline has passed")]
pub struct NotLeader;

#[derive(Debug)]
enum Gate {
    /// No leader election: every write may go.
    Open,
    /// Writes may go until the instant, within the term of the token.
    Until(Instant, CancellationToken),
    /// Between terms.
    Closed,
}

/// The write gate: every API write checks it first. Shared by the elector and the reconciles.
#[derive(Debug)]
pub struct Leadership {
    gate: Mutex<Gate>,
}

impl Leadership {
    /// Writes always allowed (leader election off).
    pub fn open() -> Self {
        Self {
            gate: Mutex::new(Gate::Open),
        }
    }

    /// No writes until a term begins.
    pub fn closed() -> Self {
        Self {
            gate: Mutex::new(Gate::Closed),
        }
    }

    /// Ok while this process may write: it holds the Lease and the renew deadline of its last
    /// renewal has not passed.
    pub fn check(&self) -> Result<(), NotLeader> {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        match &*gate {
            Gate::Open => Ok(()),
            Gate::Until(until, term) if Instant::now() < *until && !term.is_cancelled() => Ok(()),
            _ => Err(NotLeader),
        }
    }

    /// A token cancelled when the current term ends (already cancelled between terms; never
    /// without leader election).
    pub fn term(&self) -> CancellationToken {
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        match &*gate {
            Gate::Open => CancellationToken::new(),
            Gate::Until(_, term) => term.clone(),
            Gate::Closed => {
                let token = CancellationToken::new();
                token.cancel();
                token
            }
        }
    }

    /// Begins a term valid until `until`; returns its token.
    fn begin(&self, until: Instant) -> CancellationToken {
        let term = CancellationToken::new();
        *self.gate.lock().unwrap_or_else(|p| p.into_inner()) = Gate::Until(until, term.clone());
        term
    }

    /// Moves the deadline of the current term to `until` (never backwards).
    fn extend(&self, until: Instant) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Gate::Until(current, _) = &mut *gate
            && until > *current
        {
            *current = until;
        }
    }

    /// The deadline of the current term.
    fn deadline(&self) -> Option<Instant> {
        match &*self.gate.lock().unwrap_or_else(|p| p.into_inner()) {
            Gate::Until(until, _) => Some(*until),
            _ => None,
        }
    }

    /// Ends the current term: writes are refused and its token is cancelled.
    fn end(&self) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Gate::Until(_, term) = &*gate {
            term.cancel();
        }
        if !matches!(*gate, Gate::Open) {
            *gate = Gate::Closed;
        }
    }
}

/// Why a term ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermEnd {
    /// The renewal failed or its deadline passed; this process is a candidate again.
    Lost,
    /// Shutdown was requested.
    Shutdown,
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    field_manager: String,
    /// The Lease as last read or written.
    current: Option<Lease>,
    /// When the Lease's record (its resourceVersion) was last seen to change, by our clock.
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(
        api: Api<Lease>,
        name: String,
        identity: String,
        timing: Timing,
        field_manager: String,
    ) -> Self {
        Self {
            api,
            name,
            identity,
            timing,
            field_manager,
            current: None,
            observed: None,
        }
    }

    /// Waits until this process holds the Lease, then begins a term in `leadership` and
    /// returns its token; `None` on shutdown.
    pub async fn acquire(
        &mut self,
        leadership: &Leadership,
        shutdown: &CancellationToken,
    ) -> Option<CancellationToken> {
        loop {
            let started = Instant::now();
            match tokio::time::timeout(self.timing.renew_deadline, self.try_acquire()).await {
                Ok(Ok(true)) => {
                    return Some(leadership.begin(started + self.timing.renew_deadline));
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => debug!(%error, "could not take the Lease"),
                Err(_) => debug!("taking the Lease timed out"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(jittered(self.timing.retry_period)) => {}
            }
        }
    }

    /// Renews the Lease every retry period while the term lasts. Returns when a renewal has
    /// failed for good or its deadline has passed (the term is then already over), or on
    /// shutdown (the term is ended, the Lease released).
    pub async fn keep(&mut self, leadership: &Leadership, shutdown: &CancellationToken) -> TermEnd {
        loop {
            let Some(deadline) = leadership.deadline() else {
                return TermEnd::Lost;
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    leadership.end();
                    self.release().await;
                    return TermEnd::Shutdown;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    leadership.end();
                    warn!(identity = %self.identity, "renew deadline passed; stopped writing");
                    return TermEnd::Lost;
                }
                _ = tokio::time::sleep(self.timing.retry_period) => {}
            }
            let started = Instant::now();
            // A renewal must succeed before the deadline; the deadline wins a race with it.
            let renewed = tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => None,
                result = self.renew() => Some(result),
            };
            match renewed {
                Some(Ok(true)) if Instant::now() < deadline => {
                    leadership.extend(started + self.timing.renew_deadline);
                }
                Some(Ok(true)) | None => {
                    leadership.end();
                    warn!(identity = %self.identity, "renew deadline passed; stopped writing");
                    return TermEnd::Lost;
                }
                Some(Ok(false)) => {
                    leadership.end();
                    warn!(identity = %self.identity, "the Lease was taken over; stopped writing");
                    return TermEnd::Lost;
                }
                Some(Err(error)) => {
                    debug!(%error, "renewing the Lease failed; retrying until the deadline");
                }
            }
        }
    }

    /// One attempt to take (or keep) the Lease: `true` when this process holds it now.
    async fn try_acquire(&mut self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return self.create().await;
        };
        let now = Instant::now();
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != version)
        {
            self.observed = Some((version.clone(), now));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_other = holder.as_ref().is_some_and(|h| *h != self.identity);
        if held_by_other {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.timing.lease_duration);
            let since = self.observed.as_ref().map(|(_, at)| *at).unwrap_or(now);
            if now < since + duration {
                self.current = Some(lease);
                return Ok(false);
            }
        }
        let taking_over = holder.as_deref() != Some(self.identity.as_str());
        let now_time = MicroTime(Timestamp::now());
        let mut patch_spec = json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds(),
            "renewTime": now_time,
        });
        if taking_over {
            patch_spec["acquireTime"] = json!(now_time);
            patch_spec["leaseTransitions"] =
                json!(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        let taken = self.patch(&version, patch_spec).await?;
        if taken {
            info!(identity = %self.identity, lease = %self.name, "took the Lease");
        }
        Ok(taken)
    }

    async fn create(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        let params = PostParams {
            field_manager: Some(self.field_manager.clone()),
            ..PostParams::default()
        };
        match self.api.create(&params, &lease).await {
            Ok(created) => {
                info!(identity = %self.identity, lease = %self.name, "created the Lease");
                self.current = Some(created);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Renews the Lease this process holds: `false` when it changed hands meanwhile.
    async fn renew(&mut self) -> Result<bool, kube::Error> {
        let version = self
            .current
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
            .unwrap_or_default();
        let spec = json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds(),
            "renewTime": MicroTime(Timestamp::now()),
        });
        self.patch(&version, spec).await
    }

    /// Gives the Lease up so a standby takes over at once (client-go's `ReleaseOnCancel`).
    async fn release(&mut self) {
        let Some(version) = self
            .current
            .as_ref()
            .filter(|l| {
                l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                    == Some(self.identity.as_str())
            })
            .and_then(|l| l.metadata.resource_version.clone())
        else {
            return;
        };
        let spec = json!({
            "holderIdentity": null,
            "leaseDurationSeconds": 1,
            "renewTime": MicroTime(Timestamp::now()),
        });
        match self.patch(&version, spec).await {
            Ok(true) => info!(identity = %self.identity, "released the Lease"),
            Ok(false) => info!(identity = %self.identity, "the Lease had changed hands"),
            Err(error) => warn!(%error, "could not release the Lease"),
        }
    }

    /// A merge patch of the Lease's spec conditional on `version`: `false` on a conflict (the
    /// Lease changed since this process last saw it).
    async fn patch(&mut self, version: &str, spec: serde_json::Value) -> Result<bool, kube::Error> {
        let patch = json!({
            "metadata": { "resourceVersion": version },
            "spec": spec,
        });
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        match self
            .api
            .patch(&self.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(lease) => {
                let version = lease.metadata.resource_version.clone().unwrap_or_default();
                self.observed = Some((version, Instant::now()));
                self.current = Some(lease);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.current = None;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The retry period plus up to 20 %, so candidates do not move in lockstep.
fn jittered(period: Duration) -> Duration {
    use rand::Rng;
    period + period.mul_f64(rand::rng().random_range(0.0..0.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_scales_client_go_defaults() {
        let t = Timing::scaled(15);
        assert_eq!(t.lease_duration, Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        let short = Timing::scaled(4);
        assert!(short.renew_deadline < short.lease_duration);
        assert!(short.retry_period < short.renew_deadline);
        assert_eq!(Timing::scaled(0).lease_duration, Duration::from_secs(2));
    }

    #[test]
    fn the_gate_closes_at_the_deadline_and_when_the_term_ends() {
        assert!(Leadership::open().check().is_ok());
        assert!(!Leadership::open().term().is_cancelled());
        let leadership = Leadership::closed();
        assert_eq!(leadership.check(), Err(NotLeader));
        assert!(leadership.term().is_cancelled());

        let hour = Duration::from_secs(3600);
        let term = leadership.begin(Instant::now() + hour);
        assert!(leadership.check().is_ok());
        assert!(!leadership.term().is_cancelled());
        leadership.end();
        assert!(term.is_cancelled());
        assert_eq!(leadership.check(), Err(NotLeader));

        // A deadline in the past (a process resumed after a pause) refuses every write, even
        // before the elector has noticed.
        let term = leadership.begin(Instant::now() - Duration::from_millis(1));
        assert_eq!(leadership.check(), Err(NotLeader));
        assert!(!term.is_cancelled(), "the elector ends the term");
        // Renewals move the deadline forward only.
        leadership.extend(Instant::now() + hour);
        assert!(leadership.check().is_ok());
        leadership.extend(Instant::now() - hour);
        assert!(leadership.check().is_ok());
    }
}
