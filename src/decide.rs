//! The decision of one reconcile, as a pure function (docs/design.md §5, §7).
//!
//! Input: the tenant's spec, its previous status, this round's checks (if a check ran), the
//! time, and the operator's defaults. Output: the desired status, whether it differs from the
//! previous one in anything but timestamps, the desired mail-settings ConfigMap data, the
//! Events to emit and when to check next. No client, no DNS, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::alignment::{AlignmentPath, SenderCheck, UnalignedReason, Verdict};
use crate::api::condition;
use crate::api::{
    DkimSelectorStatus, DkimStatus, DmarcStatus, HelpdeskTenantSpec, HelpdeskTenantStatus, Mode,
    RecordHistory, RecordHistoryEntry, SenderState, SenderStatus, SendingAs, SpfStatus,
    SuggestedRecordStatus, parse_duration,
};
use crate::conditions::{reason, same_ignoring_timestamps, set_condition, set_conditions};
use crate::mail_settings::config_map_data;
use crate::names::address_domain;

/// Records kept per sender and kind in `status.senders[].history` (docs/design.md §4).
pub const HISTORY_LENGTH: usize = 5;

/// The longest wait for a record's TTL before a sender returns to the tenant's address.
pub const MAX_VALID_AFTER_DELAY: Duration = Duration::from_secs(3600);
/// The re-check delay after a first failure (or a temporary failure), when the interval is longer.
pub const SHORT_RECHECK: Duration = Duration::from_secs(60);

/// Everything one decision looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a HelpdeskTenantSpec,
    pub previous: Option<&'a HelpdeskTenantStatus>,
    /// This round's checks, one per sender; `None` when no check ran (not due, or suspended).
    pub checks: Option<&'a [SenderCheck]>,
    pub now: Timestamp,
    /// The operator's `--default-sender` (with `{tenant}` / `{namespace}` placeholders).
    pub default_sender: &'a str,
    /// The operator's `--check-interval`.
    pub default_interval: Duration,
    /// The `mail.helpdesk.io/recheck` annotation value this round handled.
    pub recheck: Option<&'a str>,
    /// The fleet-wide guards this round's checks met (docs/design.md §5).
    pub guards: Guards,
}

/// The guards of docs/design.md §5 "Guards before switching to fallback", as this round's
/// checks found them. They matter only when a check ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guards {
    /// The provider's own SPF record fails: why. Senders whose failure it explains get no
    /// verdict ([`provider_fault`]).
    pub provider_broken: Option<String>,
    /// The fallback sender is not aligned either: why. No sender moves to it.
    pub fallback_unaligned: Option<String>,
    /// The fleet guard holds switches to the fallback sender.
    pub fleet_hold: bool,
}

/// Whether a broken provider record explains this check's failure: the sender reaches the
/// provider include and fails as the provider's record would make it fail (an address not
/// authorized, or a permerror from the include). Other failures are the tenant's own.
pub fn provider_fault(check: &SenderCheck) -> bool {
    matches!(
        check.verdict,
        Verdict::Unaligned {
            reason: UnalignedReason::ProviderNotAuthorized | UnalignedReason::SpfPermError,
            ..
        }
    ) && check.spf.provider_include_reachable
}

/// Whether a check counts toward the fleet guard (docs/design.md §5): a sender that sends
/// as the tenant's own address (and so was Aligned) got an Unaligned verdict that is not the
/// provider's fault.
pub fn turned_unaligned(previous: Option<&SenderStatus>, check: &SenderCheck) -> bool {
    matches!(check.verdict, Verdict::Unaligned { .. })
        && !provider_fault(check)
        && previous
            .is_some_and(|p| p.sending_as == SendingAs::Tenant && p.state != SenderState::Pending)
}

/// Kind of an Event: one per sender state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A sender that sent as the tenant now sends as the fallback sender.
    FallbackActivated,
    /// A falling-back sender returned to the tenant's address.
    TenantSenderRestored,
    /// A new sender's first verdict is Aligned: it sends as the tenant from now on.
    TenantSenderActivated,
    /// Observe mode: the sender would switch to the fallback sender.
    WouldFallBack,
    /// Observe mode: the sender would switch to the tenant's address.
    WouldUseTenantSender,
    /// The verdict became Aligned without a switch (yet).
    SenderAligned,
    /// The verdict became Unaligned without a switch (yet).
    SenderUnaligned,
    /// A temporary DNS failure: the sender keeps its current From.
    DnsTemporaryFailure,
    /// The SPF record text of the envelope domain changed.
    SpfRecordChanged,
    /// A switch to the fallback sender is not made: the fallback sender is not aligned.
    FallbackSenderUnaligned,
}

impl EventKind {
    /// The Event reason (CamelCase).
    pub fn reason(self) -> &'static str {
        match self {
            Self::FallbackActivated => "FallbackActivated",
            Self::TenantSenderRestored => "TenantSenderRestored",
            Self::TenantSenderActivated => "TenantSenderActivated",
            Self::WouldFallBack => "WouldFallBack",
            Self::WouldUseTenantSender => "WouldUseTenantSender",
            Self::SenderAligned => "SenderAligned",
            Self::SenderUnaligned => "SenderUnaligned",
            Self::DnsTemporaryFailure => "DnsTemporaryFailure",
            Self::SpfRecordChanged => "SpfRecordChanged",
            Self::FallbackSenderUnaligned => "FallbackSenderUnaligned",
        }
    }

    /// Whether the Event is a Warning (else Normal).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::FallbackActivated
                | Self::WouldFallBack
                | Self::SenderUnaligned
                | Self::DnsTemporaryFailure
                | Self::FallbackSenderUnaligned
        )
    }

    /// Whether mail settings switch to the fallback sender (Enforce mode).
    pub fn is_switch_to_fallback(self) -> bool {
        self == Self::FallbackActivated
    }

    /// Whether mail settings switch to the tenant's address (Enforce mode).
    pub fn is_switch_to_tenant(self) -> bool {
        matches!(
            self,
            Self::TenantSenderRestored | Self::TenantSenderActivated
        )
    }
}

/// One Event to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPlan {
    pub kind: EventKind,
    pub note: String,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: HelpdeskTenantStatus,
    /// The status differs from the previous one in more than timestamps.
    pub status_changed: bool,
    /// Data of the owned ConfigMap keys; `None` in Observe mode (mail settings untouched).
    pub config_map: Option<BTreeMap<String, String>>,
    pub events: Vec<EventPlan>,
    /// When to check next, from now; `None` while suspended.
    pub next_check: Option<Duration>,
    /// Senders whose switch to fallback the fleet guard held in this round.
    pub held_switches: u32,
}

/// The effective check interval of a tenant.
pub fn check_interval(spec: &HelpdeskTenantSpec, default: Duration) -> Duration {
    spec.check_interval
        .as_deref()
        .and_then(parse_duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// The fallback From address of a tenant, placeholders filled in.
pub fn fallback_sender(
    spec: &HelpdeskTenantSpec,
    default: &str,
    name: &str,
    namespace: &str,
) -> String {
    spec.fallback_sender
        .as_deref()
        .unwrap_or(default)
        .replace("{tenant}", name)
        .replace("{namespace}", namespace)
}

/// Decides the desired state of one tenant.
pub fn decide(input: &Input<'_>) -> Decision {
    let spec = input.spec;
    let now = input.now;
    let enforce = spec.mode == Mode::Enforce;
    let fallback = fallback_sender(spec, input.default_sender, input.name, input.namespace);
    let interval = check_interval(spec, input.default_interval);
    let previous_senders: &[SenderStatus] =
        input.previous.map(|s| s.senders.as_slice()).unwrap_or(&[]);

    let mut senders = Vec::with_capacity(spec.senders.len());
    let mut events = Vec::new();
    let mut held_switches = 0;
    for sender in &spec.senders {
        let envelope = sender.envelope_domain.clone().unwrap_or_else(|| {
            address_domain(&sender.address)
                .unwrap_or(&sender.address)
                .to_owned()
        });
        let previous = previous_senders.iter().find(|s| {
            s.address.eq_ignore_ascii_case(&sender.address)
                && s.envelope_domain.eq_ignore_ascii_case(&envelope)
        });
        let check = input.checks.and_then(|checks| {
            checks
                .iter()
                .find(|c| c.address.eq_ignore_ascii_case(&sender.address))
        });
        let mut status = previous.cloned().unwrap_or_else(|| SenderStatus {
            address: sender.address.clone(),
            envelope_domain: envelope.clone(),
            state: SenderState::Pending,
            sending_as: SendingAs::Fallback,
            effective_from: fallback.clone(),
            reason: Some(reason::NOT_CHECKED.to_owned()),
            message: Some("not checked yet; sends as the fallback sender".to_owned()),
            consecutive_failures: 0,
            consecutive_successes: 0,
            valid_after: None,
            spf: None,
            dmarc: None,
            suggested_record: None,
            dkim: None,
            history: None,
        });
        status.address = sender.address.clone();
        if let Some(check) = check {
            // Before `step`, which replaces `status.spf` with this check's record.
            let changed = record_history(&mut status, check, now);
            let (event, held) = step(&mut status, check, spec, now, enforce, &input.guards);
            events.extend(changed);
            events.extend(event);
            if held == Some(Hold::Fleet) {
                held_switches += 1;
            }
        }
        status.effective_from = match status.sending_as {
            SendingAs::Tenant => status.address.clone(),
            SendingAs::Fallback => fallback.clone(),
        };
        senders.push(status);
    }

    let checked = input.checks.is_some();
    let next_check = if spec.suspend {
        None
    } else {
        Some(next_check(&senders, spec, now, interval))
    };
    let previous = input.previous.cloned().unwrap_or_default();

    let mut status = HelpdeskTenantStatus {
        observed_generation: input.generation,
        last_check_time: if checked {
            Some(Time(now))
        } else {
            previous.last_check_time.clone()
        },
        next_check_time: match next_check {
            Some(after) if checked => Some(Time(add(now, after))),
            Some(_) => previous.next_check_time.clone(),
            None => None,
        },
        conditions: previous.conditions.clone(),
        aligned_senders: Some(format!(
            "{}/{}",
            senders
                .iter()
                .filter(|s| s.state == SenderState::Aligned)
                .count(),
            senders.len()
        )),
        last_recheck: input
            .recheck
            .map(str::to_owned)
            .or_else(|| previous.last_recheck.clone()),
        senders,
    };
    set_conditions(&mut status, spec, &fallback, input.generation, now);
    events.extend(apply_holds(&mut status, input, now));
    let status_changed = input
        .previous
        .is_none_or(|p| !same_ignoring_timestamps(p, &status));
    let config_map = enforce.then(|| config_map_data(&status.senders));

    Decision {
        status,
        status_changed,
        config_map,
        events,
        next_check,
        held_switches,
    }
}

/// Why a due switch to the fallback sender was not made (docs/design.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    FallbackUnaligned,
    Fleet,
}

/// Sets `FallbackActive` for senders a guard keeps on their own address, and returns the
/// Warning Event of a new `FallbackSenderUnaligned` hold. A held sender is Unaligned at its
/// failure threshold and still sends as the tenant. Without a check this round the previous
/// hold reason stays, so a reconcile that checked nothing writes nothing.
fn apply_holds(
    status: &mut HelpdeskTenantStatus,
    input: &Input<'_>,
    now: Timestamp,
) -> Option<EventPlan> {
    let threshold = input.spec.failure_threshold.max(1);
    let held: Vec<&SenderStatus> = status
        .senders
        .iter()
        .filter(|s| {
            s.sending_as == SendingAs::Tenant
                && s.state == SenderState::Unaligned
                && s.consecutive_failures >= threshold
        })
        .collect();
    if held.is_empty() {
        return None;
    }
    let previous = input.previous.and_then(|p| {
        p.conditions
            .iter()
            .find(|c| c.type_ == condition::FALLBACK_ACTIVE)
    });
    let hold = if input.checks.is_some() {
        if input.guards.fallback_unaligned.is_some() {
            Some(Hold::FallbackUnaligned)
        } else if input.guards.fleet_hold {
            Some(Hold::Fleet)
        } else {
            None
        }
    } else {
        match previous.map(|c| c.reason.as_str()) {
            Some(reason::FALLBACK_SENDER_UNALIGNED) => Some(Hold::FallbackUnaligned),
            Some(reason::FLEET_GUARD_HOLD) => Some(Hold::Fleet),
            _ => None,
        }
    }?;
    let names = held
        .iter()
        .map(|s| s.address.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (state, why, message) = match hold {
        Hold::FallbackUnaligned => {
            let detail = input
                .guards
                .fallback_unaligned
                .clone()
                .or_else(|| previous.map(|c| c.message.clone()))
                .unwrap_or_default();
            (
                "False".to_owned(),
                reason::FALLBACK_SENDER_UNALIGNED,
                if input.checks.is_some() {
                    format!("{names} keep their own address: {detail}")
                } else {
                    detail
                },
            )
        }
        Hold::Fleet => {
            let current = status
                .conditions
                .iter()
                .find(|c| c.type_ == condition::FALLBACK_ACTIVE)
                .map(|c| c.status.clone());
            (
                previous
                    .map(|c| c.status.clone())
                    .or(current)
                    .unwrap_or_else(|| "False".to_owned()),
                reason::FLEET_GUARD_HOLD,
                format!(
                    "the fleet guard holds switches to the fallback sender: too many tenants turned unaligned at once; {names} keep their own address"
                ),
            )
        }
    };
    set_condition(
        &mut status.conditions,
        condition::FALLBACK_ACTIVE,
        &state,
        why,
        &message,
        input.generation,
        now,
    );
    let new_hold = hold == Hold::FallbackUnaligned
        && previous.is_none_or(|c| c.reason != reason::FALLBACK_SENDER_UNALIGNED);
    new_hold.then_some(EventPlan {
        kind: EventKind::FallbackSenderUnaligned,
        note: message,
    })
}

/// Applies one verdict to one sender (docs/design.md §5); returns the Event for a state change.
fn step(
    status: &mut SenderStatus,
    check: &SenderCheck,
    spec: &HelpdeskTenantSpec,
    now: Timestamp,
    enforce: bool,
    guards: &Guards,
) -> (Option<EventPlan>, Option<Hold>) {
    let mut held = None;
    let failure_threshold = spec.failure_threshold.max(1);
    let success_threshold = spec.success_threshold.max(1);
    let before_state = status.state;
    let before_sending = status.sending_as;
    let address = status.address.clone();

    match &check.verdict {
        Verdict::Aligned => {
            record_detail(status, check);
            status.state = SenderState::Aligned;
            let (why, message) = aligned_reason(check);
            status.reason = Some(why.to_owned());
            status.message = Some(message);
            status.consecutive_failures = 0;
            match status.sending_as {
                SendingAs::Fallback if before_state == SenderState::Pending => {
                    status.sending_as = SendingAs::Tenant;
                    status.consecutive_successes = success_threshold;
                    status.valid_after = None;
                }
                SendingAs::Fallback => {
                    if status.consecutive_successes == 0 || status.valid_after.is_none() {
                        let ttl = u64::from(record_ttl(check));
                        let delay = Duration::from_secs(ttl).min(MAX_VALID_AFTER_DELAY);
                        status.valid_after = Some(Time(add(now, delay)));
                    }
                    status.consecutive_successes =
                        (status.consecutive_successes + 1).min(success_threshold);
                    let valid = status.valid_after.as_ref().is_none_or(|t| now >= t.0);
                    if status.consecutive_successes >= success_threshold && valid {
                        status.sending_as = SendingAs::Tenant;
                    }
                }
                SendingAs::Tenant => {
                    // Only a falling-back sender counts toward a return; an established one
                    // stays at the threshold so a steady state writes nothing.
                    status.consecutive_successes = success_threshold;
                }
            }
        }
        Verdict::Unaligned { .. } if guards.provider_broken.is_some() && provider_fault(check) => {
            // The provider's fault: no verdict, like a temporary failure (docs/design.md §5).
            if status.state != SenderState::Pending {
                status.state = SenderState::TemporaryFailure;
            }
            status.reason = Some(reason::PROVIDER_SPF_BROKEN.to_owned());
            status.message = Some(format!(
                "{}; the sender keeps its current From address",
                guards.provider_broken.as_deref().unwrap_or_default()
            ));
        }
        Verdict::Unaligned {
            reason: why,
            message,
        } => {
            record_detail(status, check);
            status.state = SenderState::Unaligned;
            status.reason = Some(why.as_str().to_owned());
            status.message = Some(clean_message(message, *why, &check.envelope_domain));
            status.consecutive_successes = 0;
            status.valid_after = None;
            // Only a sender that sends as the tenant counts toward a switch; one already on the
            // fallback sits at the threshold, so further unaligned checks write nothing.
            status.consecutive_failures = match status.sending_as {
                SendingAs::Tenant => (status.consecutive_failures + 1).min(failure_threshold),
                SendingAs::Fallback => failure_threshold,
            };
            if status.sending_as == SendingAs::Tenant
                && status.consecutive_failures >= failure_threshold
            {
                // The guards of docs/design.md §5 run before the switch.
                if guards.fallback_unaligned.is_some() {
                    held = Some(Hold::FallbackUnaligned);
                } else if guards.fleet_hold {
                    held = Some(Hold::Fleet);
                } else {
                    status.sending_as = SendingAs::Fallback;
                }
            }
        }
        Verdict::TemporaryFailure { .. } => {
            // No verdict: counters, detail and sender stay as they are (RFC 7489 §6.6.2).
            if status.state != SenderState::Pending {
                status.state = SenderState::TemporaryFailure;
            }
            status.reason = Some(reason::DNS_TEMPORARY_FAILURE.to_owned());
            status.message = Some(format!(
                "a DNS lookup for {} failed temporarily; the sender keeps its current From address",
                check.envelope_domain
            ));
        }
    }

    // The provider's fault is reported once for the fleet, not per tenant.
    if status.reason.as_deref() == Some(reason::PROVIDER_SPF_BROKEN) {
        return (None, held);
    }
    let kind = match (before_sending, status.sending_as) {
        (SendingAs::Tenant, SendingAs::Fallback) => Some(if enforce {
            EventKind::FallbackActivated
        } else {
            EventKind::WouldFallBack
        }),
        (SendingAs::Fallback, SendingAs::Tenant) if !enforce => {
            Some(EventKind::WouldUseTenantSender)
        }
        (SendingAs::Fallback, SendingAs::Tenant) if before_state == SenderState::Pending => {
            Some(EventKind::TenantSenderActivated)
        }
        (SendingAs::Fallback, SendingAs::Tenant) => Some(EventKind::TenantSenderRestored),
        _ if before_state == status.state => None,
        _ => match status.state {
            SenderState::Aligned => Some(EventKind::SenderAligned),
            SenderState::Unaligned => Some(EventKind::SenderUnaligned),
            SenderState::TemporaryFailure => Some(EventKind::DnsTemporaryFailure),
            SenderState::Pending => None,
        },
    };
    let Some(kind) = kind else {
        return (None, held);
    };
    let note = match kind {
        EventKind::FallbackActivated | EventKind::WouldFallBack => format!(
            "{address} {} the fallback sender after {} unaligned checks: {}",
            if enforce {
                "now sends as"
            } else {
                "would send as"
            },
            status.consecutive_failures,
            status.message.as_deref().unwrap_or_default()
        ),
        EventKind::TenantSenderRestored | EventKind::WouldUseTenantSender => format!(
            "{address} {} its own address after {} aligned checks",
            if enforce { "sends as" } else { "would send as" },
            status.consecutive_successes
        ),
        EventKind::TenantSenderActivated => {
            format!("{address} is aligned and sends as its own address")
        }
        EventKind::SenderAligned => format!(
            "{address} is aligned; it returns to its own address after {success_threshold} aligned checks and the record's TTL"
        ),
        EventKind::SenderUnaligned => format!(
            "{address} is not aligned: {}",
            status.message.as_deref().unwrap_or_default()
        ),
        EventKind::DnsTemporaryFailure => format!(
            "{address}: {}",
            status.message.as_deref().unwrap_or_default()
        ),
        // Not state changes of `step`: `record_history` and `apply_holds` write these.
        EventKind::SpfRecordChanged | EventKind::FallbackSenderUnaligned => return (None, held),
    };
    (Some(EventPlan { kind, note }), held)
}

/// The reason and sentence of an Aligned verdict, naming the paths that held.
fn aligned_reason(check: &SenderCheck) -> (&'static str, String) {
    let domain = &check.envelope_domain;
    match check.aligned_by {
        Some(AlignmentPath::Dkim) => {
            let spf = match &check.spf_verdict {
                Verdict::Unaligned { message, .. } | Verdict::TemporaryFailure { message } => {
                    message.as_str()
                }
                Verdict::Aligned => "aligned",
            };
            (
                reason::ALIGNED_BY_DKIM,
                format!(
                    "the provider's DKIM key is published and aligns with the From domain; SPF: {spf}"
                ),
            )
        }
        Some(AlignmentPath::SpfAndDkim) => (
            reason::ALIGNED,
            format!(
                "SPF of {domain} authorizes every provider address and the provider's DKIM key is published; both align with the From domain"
            ),
        ),
        _ => (
            reason::ALIGNED,
            format!(
                "SPF of {domain} authorizes every provider address and aligns with the From domain"
            ),
        ),
    }
}

/// The TTL receivers may cache the records behind an Aligned verdict for: the longest of the
/// SPF record's and the DKIM key records'.
fn record_ttl(check: &SenderCheck) -> u32 {
    let dkim = check
        .dkim
        .iter()
        .flat_map(|d| &d.selectors)
        .filter_map(|s| s.ttl);
    check
        .spf
        .record_ttl
        .into_iter()
        .chain(dkim)
        .max()
        .unwrap_or(0)
}

/// A short, stable hash of a record text (FNV-1a, 64 bits), or `none` for no record.
pub fn record_hash(record: Option<&str>) -> String {
    let Some(text) = record else {
        return "none".to_owned();
    };
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Appends `hash` to `entries` unless it is the newest one already, keeping the last
/// [`HISTORY_LENGTH`]; returns whether it was appended.
fn push_history(
    entries: &mut Vec<RecordHistoryEntry>,
    hash: String,
    lookups: Option<u32>,
    now: Timestamp,
) -> bool {
    if entries.last().is_some_and(|e| e.hash == hash) {
        return false;
    }
    entries.push(RecordHistoryEntry {
        hash,
        first_seen: Time(now),
        lookups,
    });
    let excess = entries.len().saturating_sub(HISTORY_LENGTH);
    entries.drain(..excess);
    true
}

/// Records this check's SPF and DMARC records in the sender's history (docs/design.md §4).
/// A temporary failure tells nothing about the records and is left out; an unchanged record
/// changes nothing, so a steady state writes nothing. Returns the `SpfRecordChanged` Event
/// when the SPF record text differs from the one the history last saw.
fn record_history(
    status: &mut SenderStatus,
    check: &SenderCheck,
    now: Timestamp,
) -> Option<EventPlan> {
    if matches!(check.verdict, Verdict::TemporaryFailure { .. }) {
        return None;
    }
    let old_record = status.spf.as_ref().and_then(|s| s.record.clone());
    let old_lookups = status.spf.as_ref().map_or(0, |s| s.lookups);
    let history = status.history.get_or_insert_with(RecordHistory::default);
    let had_spf = !history.spf.is_empty();
    let new_record = check.spf.record.as_deref();
    let spf_changed = push_history(
        &mut history.spf,
        record_hash(new_record),
        Some(check.spf.lookups),
        now,
    );
    push_history(
        &mut history.dmarc,
        record_hash(check.dmarc.record.as_deref()),
        None,
        now,
    );
    if !(spf_changed && had_spf) {
        return None;
    }
    let show = |record: Option<&str>| match record {
        Some(text) => format!("{text:?}"),
        None => "no record".to_owned(),
    };
    let delta = i64::from(check.spf.lookups) - i64::from(old_lookups);
    Some(EventPlan {
        kind: EventKind::SpfRecordChanged,
        note: format!(
            "{}: SPF record of {} changed from {} to {}; lookups {old_lookups} -> {} ({delta:+})",
            status.address,
            check.envelope_domain,
            show(old_record.as_deref()),
            show(new_record),
            check.spf.lookups,
        ),
    })
}

fn record_detail(status: &mut SenderStatus, check: &SenderCheck) {
    let spf = &check.spf;
    status.spf = Some(SpfStatus {
        record: spf.record.clone(),
        record_ttl: spf.record_ttl,
        results: spf
            .results
            .iter()
            .map(|r| (r.ip.to_string(), r.result.as_str().to_owned()))
            .collect(),
        lookups: spf.lookups,
        void_lookups: spf.void_lookups,
        provider_include_reachable: spf.provider_include_reachable,
        warnings: spf.warnings.clone(),
    });
    let dmarc = &check.dmarc;
    status.dmarc = Some(DmarcStatus {
        record: dmarc.record.clone(),
        policy_domain: dmarc.policy_domain.clone(),
        p: dmarc.p.clone(),
        sp: dmarc.sp.clone(),
        alignment_mode: if dmarc.aspf == 's' {
            "strict"
        } else {
            "relaxed"
        }
        .to_owned(),
        envelope_aligned: dmarc.envelope_aligned,
        warnings: dmarc.warnings.clone(),
    });
    status.suggested_record = check
        .suggested_record
        .as_ref()
        .map(|s| SuggestedRecordStatus {
            record: s.record.clone(),
            lookups: s.lookups,
            warning: s.warning.clone(),
        });
    status.dkim = check.dkim.as_ref().map(|d| DkimStatus {
        state: d.verdict.state,
        message: d.verdict.message.clone(),
        selectors: d
            .selectors
            .iter()
            .map(|s| DkimSelectorStatus {
                selector: s.selector.clone(),
                outcome: s.outcome,
                message: s.message.clone(),
                record: s.record.clone(),
            })
            .collect(),
    });
}

/// The engine's sentence, or a fixed one when it is empty or too long to be a sentence.
fn clean_message(message: &str, why: UnalignedReason, domain: &str) -> String {
    let message = message.trim();
    if !message.is_empty() && message.len() <= 300 && !message.contains('\n') {
        return message.to_owned();
    }
    match why {
        UnalignedReason::NoSpfRecord => format!("{domain} publishes no SPF record"),
        UnalignedReason::SpfPermError => format!("the SPF record of {domain} is invalid"),
        UnalignedReason::ProviderNotAuthorized => {
            format!("the SPF record of {domain} does not authorize every provider address")
        }
        UnalignedReason::DomainNotAligned => {
            format!("{domain} does not align with the From domain under DMARC")
        }
        UnalignedReason::DkimNotAligned => {
            "the provider's DKIM key is not published under any of its selectors".to_owned()
        }
    }
}

fn next_check(
    senders: &[SenderStatus],
    spec: &HelpdeskTenantSpec,
    now: Timestamp,
    interval: Duration,
) -> Duration {
    let short = SHORT_RECHECK.min(interval);
    let success_threshold = spec.success_threshold.max(1);
    let mut next = interval;
    for sender in senders {
        let wanted = match (sender.sending_as, sender.state) {
            // A first failure: confirm soon rather than a full interval later.
            (SendingAs::Tenant, SenderState::Unaligned) => short,
            (_, SenderState::TemporaryFailure) => short,
            (_, SenderState::Pending)
                if sender.reason.as_deref() == Some(reason::DNS_TEMPORARY_FAILURE) =>
            {
                short
            }
            (SendingAs::Fallback, SenderState::Aligned)
                if sender.consecutive_successes < success_threshold =>
            {
                short
            }
            (SendingAs::Fallback, SenderState::Aligned) => {
                // Threshold reached; waiting for validAfter.
                let until = sender
                    .valid_after
                    .as_ref()
                    .and_then(|t| Duration::try_from(t.0.duration_since(now)).ok())
                    .unwrap_or(Duration::ZERO);
                until.max(Duration::from_secs(1))
            }
            _ => interval,
        };
        next = next.min(wanted);
    }
    next
}

fn add(now: Timestamp, after: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(after)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::alignment::{DmarcReport, IpResult, SpfReport, SuggestedRecord};
    use crate::api::{MailSettings, condition};
    use crate::mail_settings::keys;
    use crate::spf::SpfResult;

    const DEFAULT_SENDER: &str = "notify+{tenant}@provider.example";
    const FALLBACK: &str = "notify+acme@provider.example";
    const A: &str = "support@acme.example";
    const B: &str = "billing@acme.example";

    fn spec(addresses: &[&str]) -> HelpdeskTenantSpec {
        HelpdeskTenantSpec {
            mail_settings: Some(MailSettings::default()),
            ..HelpdeskTenantSpec::with_senders(addresses.iter().copied())
        }
    }

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().expect("valid timestamp")
    }

    fn at(seconds: i64) -> Timestamp {
        t0().checked_add(jiff::SignedDuration::from_secs(seconds))
            .expect("in range")
    }

    fn check(address: &str, verdict: Verdict, ttl: u32) -> SenderCheck {
        let pass = matches!(verdict, Verdict::Aligned);
        SenderCheck {
            address: address.to_owned(),
            envelope_domain: "acme.example".to_owned(),
            spf: SpfReport {
                // One record for every verdict: a changed record is an Event of its own,
                // tested apart from the state machine.
                record: Some("v=spf1 include:spf.provider.example -all".to_owned()),
                record_ttl: Some(ttl),
                results: vec![IpResult {
                    ip: "192.0.2.1".parse().expect("ip"),
                    result: if pass {
                        SpfResult::Pass
                    } else {
                        SpfResult::Fail
                    },
                }],
                lookups: 1,
                void_lookups: 0,
                provider_include_reachable: pass,
                warnings: vec![],
                authority: None,
            },
            dmarc: DmarcReport {
                record: Some("v=DMARC1; p=reject".to_owned()),
                policy_domain: Some("acme.example".to_owned()),
                p: Some("reject".to_owned()),
                sp: None,
                aspf: 'r',
                adkim: 'r',
                envelope_aligned: true,
                warnings: vec![],
            },
            suggested_record: (!pass).then(|| SuggestedRecord {
                record: "v=spf1 include:spf.provider.example -all".to_owned(),
                lookups: 1,
                warning: None,
            }),
            aligned_by: pass.then_some(AlignmentPath::Spf),
            spf_verdict: verdict.clone(),
            verdict,
            dkim: None,
        }
    }

    fn aligned(address: &str) -> SenderCheck {
        check(address, Verdict::Aligned, 300)
    }

    fn unaligned(address: &str) -> SenderCheck {
        check(
            address,
            Verdict::Unaligned {
                reason: UnalignedReason::ProviderNotAuthorized,
                message: "the SPF record of acme.example gives fail for 192.0.2.1".to_owned(),
            },
            300,
        )
    }

    fn temporary(address: &str) -> SenderCheck {
        check(
            address,
            Verdict::TemporaryFailure {
                message: "DNS query timed out".to_owned(),
            },
            300,
        )
    }

    struct Run<'a> {
        spec: &'a HelpdeskTenantSpec,
        generation: i64,
        recheck: Option<&'a str>,
        guards: Guards,
    }

    impl<'a> Run<'a> {
        fn new(spec: &'a HelpdeskTenantSpec) -> Self {
            Self {
                spec,
                generation: 1,
                recheck: None,
                guards: Guards::default(),
            }
        }

        fn go(
            &self,
            previous: Option<&HelpdeskTenantStatus>,
            checks: Option<&[SenderCheck]>,
            now: Timestamp,
        ) -> Decision {
            decide(&Input {
                name: "acme",
                namespace: "tenants",
                generation: Some(self.generation),
                spec: self.spec,
                previous,
                checks,
                now,
                default_sender: DEFAULT_SENDER,
                default_interval: Duration::from_secs(900),
                recheck: self.recheck,
                guards: self.guards.clone(),
            })
        }
    }

    /// Feeds one check per step, each step `step_seconds` apart, returning every decision.
    fn sequence(
        spec: &HelpdeskTenantSpec,
        start: Option<HelpdeskTenantStatus>,
        steps: &[Vec<SenderCheck>],
        step_seconds: i64,
    ) -> Vec<Decision> {
        let run = Run::new(spec);
        let mut previous = start;
        let mut out = Vec::new();
        for (i, checks) in steps.iter().enumerate() {
            let decision = run.go(previous.as_ref(), Some(checks), at(i as i64 * step_seconds));
            previous = Some(decision.status.clone());
            out.push(decision);
        }
        out
    }

    fn cond<'a>(status: &'a HelpdeskTenantStatus, kind: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .expect("condition present")
    }

    fn kinds(decision: &Decision) -> Vec<EventKind> {
        decision.events.iter().map(|e| e.kind).collect()
    }

    /// A status where sender A sends as the tenant (first check Aligned).
    fn tenant_status(spec: &HelpdeskTenantSpec) -> HelpdeskTenantStatus {
        Run::new(spec).go(None, Some(&[aligned(A)]), t0()).status
    }

    /// A status where sender A fell back after two failures (checked at 0 and 60 s).
    fn fallback_status(spec: &HelpdeskTenantSpec) -> HelpdeskTenantStatus {
        let start = tenant_status(spec);
        let out = sequence(
            spec,
            Some(start),
            &[vec![unaligned(A)], vec![unaligned(A)]],
            60,
        );
        out[1].status.clone()
    }

    #[test]
    fn new_sender_is_pending_and_uses_the_fallback() {
        let spec = spec(&[A]);
        let d = Run::new(&spec).go(None, None, t0());
        let s = &d.status.senders[0];
        assert_eq!(s.state, SenderState::Pending);
        assert_eq!(s.sending_as, SendingAs::Fallback);
        assert_eq!(s.effective_from, FALLBACK);
        assert!(d.status_changed, "a first status is always written");
        assert!(d.events.is_empty());
        let cm = d.config_map.expect("enforce writes mail settings");
        assert_eq!(cm[keys::SENDER_MODE], "fallback");
        assert_eq!(cm[keys::FROM], FALLBACK);
        assert_eq!(cm[keys::REPLY_TO], A);
        assert_eq!(cond(&d.status, condition::READY).status, "False");
        assert_eq!(cond(&d.status, condition::SPF_ALIGNED).status, "Unknown");
        assert_eq!(cond(&d.status, condition::FALLBACK_ACTIVE).status, "True");
        assert_eq!(
            cond(&d.status, condition::FALLBACK_ACTIVE).reason,
            reason::AWAITING_ALIGNMENT
        );
        assert_eq!(d.status.last_check_time, None, "no check ran");
    }

    #[test]
    fn pending_to_tenant_on_the_first_aligned_verdict() {
        let spec = spec(&[A]);
        let d = Run::new(&spec).go(None, Some(&[aligned(A)]), t0());
        let s = &d.status.senders[0];
        assert_eq!(
            (s.state, s.sending_as),
            (SenderState::Aligned, SendingAs::Tenant)
        );
        assert_eq!(s.effective_from, A);
        assert_eq!(s.valid_after, None);
        assert_eq!(kinds(&d), vec![EventKind::TenantSenderActivated]);
        let cm = d.config_map.expect("mail settings");
        assert_eq!(cm[keys::SENDER_MODE], "tenant");
        assert_eq!(cm[keys::FROM], A);
        assert_eq!(cm[keys::REPLY_TO], "");
        assert_eq!(
            cm[keys::SENDERS_JSON],
            format!(r#"{{"{A}":{{"from":"{A}","replyTo":"","mode":"tenant"}}}}"#)
        );
        assert_eq!(cond(&d.status, condition::READY).status, "True");
        assert_eq!(cond(&d.status, condition::SPF_ALIGNED).status, "True");
        assert_eq!(cond(&d.status, condition::FALLBACK_ACTIVE).status, "False");
        assert_eq!(d.status.aligned_senders.as_deref(), Some("1/1"));
        assert_eq!(d.status.last_check_time, Some(Time(t0())));
        assert_eq!(d.next_check, Some(Duration::from_secs(900)));
        assert_eq!(d.status.next_check_time, Some(Time(at(900))));
        let spf = s.spf.as_ref().expect("spf detail");
        assert_eq!(spf.results.get("192.0.2.1"), Some("pass"));
        assert_eq!(
            s.dmarc.as_ref().expect("dmarc detail").alignment_mode,
            "relaxed"
        );
    }

    #[test]
    fn pending_to_unaligned_stays_on_the_fallback_with_detail() {
        let spec = spec(&[A]);
        let d = Run::new(&spec).go(None, Some(&[unaligned(A)]), t0());
        let s = &d.status.senders[0];
        assert_eq!(
            (s.state, s.sending_as),
            (SenderState::Unaligned, SendingAs::Fallback)
        );
        assert_eq!(
            s.reason.as_deref(),
            Some(UnalignedReason::ProviderNotAuthorized.as_str())
        );
        assert_eq!(kinds(&d), vec![EventKind::SenderUnaligned]);
        assert!(s.suggested_record.is_some());
        let aligned_condition = cond(&d.status, condition::SPF_ALIGNED);
        assert_eq!(aligned_condition.status, "False");
        assert_eq!(
            aligned_condition.reason,
            UnalignedReason::ProviderNotAuthorized.as_str()
        );
        assert!(aligned_condition.message.contains(A));
        assert_eq!(
            cond(&d.status, condition::FALLBACK_ACTIVE).reason,
            reason::SENDERS_UNALIGNED
        );
        assert_eq!(d.status.aligned_senders.as_deref(), Some("0/1"));
    }

    #[test]
    fn a_new_unaligned_sender_writes_once_and_then_nothing() {
        let spec = spec(&[A]);
        let out = sequence(&spec, None, &[vec![unaligned(A)], vec![unaligned(A)]], 30);
        assert!(out[0].status_changed);
        let s = &out[0].status.senders[0];
        assert_eq!(
            (s.state, s.sending_as, s.consecutive_failures),
            (SenderState::Unaligned, SendingAs::Fallback, 2),
            "already on the fallback: the failure counter sits at the threshold"
        );
        assert!(
            !out[1].status_changed,
            "a second unaligned check of a sender on the fallback writes nothing"
        );
        assert!(out[1].events.is_empty());
    }

    #[test]
    fn pending_with_a_temporary_failure_stays_pending_and_unknown() {
        let spec = spec(&[A]);
        let d = Run::new(&spec).go(None, Some(&[temporary(A)]), t0());
        let s = &d.status.senders[0];
        assert_eq!(
            (s.state, s.sending_as),
            (SenderState::Pending, SendingAs::Fallback)
        );
        let c = cond(&d.status, condition::SPF_ALIGNED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", reason::DNS_TEMPORARY_FAILURE)
        );
        assert!(
            !c.message.contains("timed out"),
            "no resolver noise in messages"
        );
        assert_eq!(d.next_check, Some(SHORT_RECHECK));
    }

    #[test]
    fn first_failure_keeps_the_tenant_and_rechecks_soon() {
        let spec = spec(&[A]);
        let start = tenant_status(&spec);
        let d = Run::new(&spec).go(Some(&start), Some(&[unaligned(A)]), at(900));
        let s = &d.status.senders[0];
        assert_eq!(
            (s.state, s.sending_as),
            (SenderState::Unaligned, SendingAs::Tenant)
        );
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(kinds(&d), vec![EventKind::SenderUnaligned]);
        assert_eq!(d.next_check, Some(SHORT_RECHECK));
        assert_eq!(d.config_map.expect("cm")[keys::SENDER_MODE], "tenant");
        assert_eq!(cond(&d.status, condition::FALLBACK_ACTIVE).status, "False");
        assert_eq!(cond(&d.status, condition::SPF_ALIGNED).status, "False");
    }

    #[test]
    fn short_recheck_is_the_interval_when_the_interval_is_shorter() {
        let mut spec = spec(&[A]);
        spec.check_interval = Some("5s".to_owned());
        let start = tenant_status(&spec);
        let d = Run::new(&spec).go(Some(&start), Some(&[unaligned(A)]), at(5));
        assert_eq!(d.next_check, Some(Duration::from_secs(5)));
    }

    #[test]
    fn threshold_failures_switch_to_the_fallback_with_one_event() {
        let spec = spec(&[A]);
        let out = sequence(
            &spec,
            Some(tenant_status(&spec)),
            &[vec![unaligned(A)], vec![unaligned(A)], vec![unaligned(A)]],
            60,
        );
        assert_eq!(kinds(&out[1]), vec![EventKind::FallbackActivated]);
        assert!(out[2].events.is_empty(), "no event without a state change");
        assert!(
            !out[2].status_changed,
            "an unchanged fallback writes nothing"
        );
        let s = &out[1].status.senders[0];
        assert_eq!(
            (s.state, s.sending_as, s.consecutive_failures),
            (SenderState::Unaligned, SendingAs::Fallback, 2)
        );
        assert_eq!(s.effective_from, FALLBACK);
        let cm = out[1].config_map.clone().expect("cm");
        assert_eq!(cm[keys::SENDER_MODE], "fallback");
        assert_eq!(cm[keys::FROM], FALLBACK);
        assert_eq!(cm[keys::REPLY_TO], A);
        assert_eq!(
            cm[keys::SENDERS_JSON],
            format!(r#"{{"{A}":{{"from":"{FALLBACK}","replyTo":"{A}","mode":"fallback"}}}}"#)
        );
        let fb = cond(&out[1].status, condition::FALLBACK_ACTIVE);
        assert_eq!(
            (fb.status.as_str(), fb.reason.as_str()),
            ("True", reason::SENDERS_UNALIGNED)
        );
        assert_eq!(fb.last_transition_time, Time(at(60)));
        assert_eq!(
            cond(&out[2].status, condition::FALLBACK_ACTIVE).last_transition_time,
            Time(at(60))
        );
        assert!(out[1].events[0].note.contains(A));
    }

    #[test]
    fn threshold_one_switches_on_the_first_failure() {
        let mut spec = spec(&[A]);
        spec.failure_threshold = 1;
        let d = Run::new(&spec).go(Some(&tenant_status(&spec)), Some(&[unaligned(A)]), at(900));
        assert_eq!(d.status.senders[0].sending_as, SendingAs::Fallback);
        assert_eq!(kinds(&d), vec![EventKind::FallbackActivated]);
    }

    #[test]
    fn failures_must_be_consecutive() {
        let spec = spec(&[A]);
        let out = sequence(
            &spec,
            Some(tenant_status(&spec)),
            &[vec![unaligned(A)], vec![aligned(A)], vec![unaligned(A)]],
            60,
        );
        assert_eq!(out[1].status.senders[0].consecutive_failures, 0);
        assert_eq!(kinds(&out[1]), vec![EventKind::SenderAligned]);
        let s = &out[2].status.senders[0];
        assert_eq!(
            (s.consecutive_failures, s.sending_as),
            (1, SendingAs::Tenant)
        );
    }

    #[test]
    fn temporary_failures_never_switch_and_show_unknown() {
        let spec = spec(&[A]);
        let out = sequence(
            &spec,
            Some(tenant_status(&spec)),
            &[
                vec![temporary(A)],
                vec![temporary(A)],
                vec![temporary(A)],
                vec![temporary(A)],
            ],
            60,
        );
        for d in &out {
            let s = &d.status.senders[0];
            assert_eq!(
                (s.state, s.sending_as, s.consecutive_failures),
                (SenderState::TemporaryFailure, SendingAs::Tenant, 0)
            );
            assert_eq!(
                d.config_map.as_ref().expect("cm")[keys::SENDER_MODE],
                "tenant"
            );
            assert_eq!(cond(&d.status, condition::SPF_ALIGNED).status, "Unknown");
        }
        assert_eq!(kinds(&out[0]), vec![EventKind::DnsTemporaryFailure]);
        assert!(out[1].events.is_empty() && !out[1].status_changed);
        // The SPF detail of the last definitive check is kept.
        assert_eq!(
            out[3].status.senders[0]
                .spf
                .as_ref()
                .expect("spf")
                .results
                .get("192.0.2.1"),
            Some("pass")
        );
    }

    #[test]
    fn temporary_failure_on_a_falling_back_sender_keeps_the_fallback() {
        let spec = spec(&[A]);
        let start = fallback_status(&spec);
        let d = Run::new(&spec).go(Some(&start), Some(&[temporary(A)]), at(1000));
        assert_eq!(d.status.senders[0].sending_as, SendingAs::Fallback);
        assert_eq!(d.config_map.expect("cm")[keys::SENDER_MODE], "fallback");
    }

    #[test]
    fn temporary_failure_does_not_count_toward_failures() {
        let spec = spec(&[A]);
        let out = sequence(
            &spec,
            Some(tenant_status(&spec)),
            &[vec![unaligned(A)], vec![temporary(A)], vec![unaligned(A)]],
            60,
        );
        assert_eq!(out[1].status.senders[0].consecutive_failures, 1);
        assert_eq!(out[1].status.senders[0].sending_as, SendingAs::Tenant);
        assert_eq!(
            out[2].status.senders[0].sending_as,
            SendingAs::Fallback,
            "1 + 1 definitive failures"
        );
    }

    #[test]
    fn return_waits_for_the_threshold_and_valid_after() {
        let spec = spec(&[A]);
        let start = fallback_status(&spec);
        let run = Run::new(&spec);
        // First aligned check at 1000 s: streak starts, validAfter = 1000 + TTL 300.
        let d1 = run.go(Some(&start), Some(&[aligned(A)]), at(1000));
        let s = &d1.status.senders[0];
        assert_eq!(
            (s.state, s.sending_as, s.consecutive_successes),
            (SenderState::Aligned, SendingAs::Fallback, 1)
        );
        assert_eq!(s.valid_after, Some(Time(at(1300))));
        assert_eq!(kinds(&d1), vec![EventKind::SenderAligned]);
        assert_eq!(d1.next_check, Some(SHORT_RECHECK));
        assert_eq!(
            d1.config_map.as_ref().expect("cm")[keys::SENDER_MODE],
            "fallback"
        );
        assert_eq!(cond(&d1.status, condition::SPF_ALIGNED).status, "True");
        assert_eq!(
            cond(&d1.status, condition::FALLBACK_ACTIVE).reason,
            reason::AWAITING_ALIGNMENT
        );
        // Second at 1060 s: threshold reached, validAfter not yet.
        let d2 = run.go(Some(&d1.status), Some(&[aligned(A)]), at(1060));
        let s = &d2.status.senders[0];
        assert_eq!(
            (s.sending_as, s.consecutive_successes),
            (SendingAs::Fallback, 2)
        );
        assert_eq!(
            s.valid_after,
            Some(Time(at(1300))),
            "validAfter does not move"
        );
        assert!(d2.events.is_empty());
        assert_eq!(
            d2.next_check,
            Some(Duration::from_secs(240)),
            "next check at validAfter"
        );
        // Third at 1300 s: returns.
        let d3 = run.go(Some(&d2.status), Some(&[aligned(A)]), at(1300));
        let s = &d3.status.senders[0];
        assert_eq!(s.sending_as, SendingAs::Tenant);
        assert_eq!(s.effective_from, A);
        assert_eq!(kinds(&d3), vec![EventKind::TenantSenderRestored]);
        assert_eq!(d3.config_map.expect("cm")[keys::SENDER_MODE], "tenant");
        assert_eq!(cond(&d3.status, condition::FALLBACK_ACTIVE).status, "False");
        assert_eq!(
            cond(&d3.status, condition::FALLBACK_ACTIVE).last_transition_time,
            Time(at(1300))
        );
        // And then the steady state writes nothing.
        let d4 = run.go(Some(&d3.status), Some(&[aligned(A)]), at(2200));
        assert!(!d4.status_changed && d4.events.is_empty());
    }

    #[test]
    fn valid_after_is_capped_at_one_hour() {
        let spec = spec(&[A]);
        let start = fallback_status(&spec);
        let d = Run::new(&spec).go(
            Some(&start),
            Some(&[check(A, Verdict::Aligned, 86_400)]),
            at(1000),
        );
        assert_eq!(d.status.senders[0].valid_after, Some(Time(at(1000 + 3600))));
    }

    #[test]
    fn success_streak_is_broken_by_a_failure_but_not_by_a_temporary_failure() {
        let spec = spec(&[A]);
        let start = fallback_status(&spec);
        let out = sequence(
            &spec,
            Some(start.clone()),
            &[vec![aligned(A)], vec![temporary(A)]],
            60,
        );
        let s = &out[1].status.senders[0];
        assert_eq!(
            (s.consecutive_successes, s.valid_after.clone()),
            (1, Some(Time(at(300))))
        );
        let out = sequence(
            &spec,
            Some(start),
            &[vec![aligned(A)], vec![unaligned(A)], vec![aligned(A)]],
            60,
        );
        let s = &out[1].status.senders[0];
        assert_eq!((s.consecutive_successes, s.valid_after.clone()), (0, None));
        let s = &out[2].status.senders[0];
        assert_eq!(
            s.valid_after,
            Some(Time(at(120 + 300))),
            "a new streak starts a new validAfter"
        );
    }

    #[test]
    fn observe_reports_but_never_writes_mail_settings() {
        let mut spec = spec(&[A]);
        spec.mode = Mode::Observe;
        let start = tenant_status(&spec);
        let out = sequence(
            &spec,
            Some(start),
            &[vec![unaligned(A)], vec![unaligned(A)]],
            60,
        );
        for d in &out {
            assert_eq!(d.config_map, None, "Observe never writes mail settings");
        }
        assert_eq!(kinds(&out[1]), vec![EventKind::WouldFallBack]);
        assert_eq!(out[1].status.senders[0].sending_as, SendingAs::Fallback);
        let fb = cond(&out[1].status, condition::FALLBACK_ACTIVE);
        assert_eq!(
            (fb.status.as_str(), fb.reason.as_str()),
            ("False", reason::OBSERVE_MODE)
        );
        assert!(fb.message.contains("would send as"));
        assert_eq!(cond(&out[1].status, condition::SPF_ALIGNED).status, "False");
    }

    #[test]
    fn steady_state_changes_only_timestamps() {
        let spec = spec(&[A, B]);
        let run = Run::new(&spec);
        let first = run.go(None, Some(&[aligned(A), aligned(B)]), t0());
        let second = run.go(
            Some(&first.status),
            Some(&[aligned(A), aligned(B)]),
            at(900),
        );
        assert!(!second.status_changed);
        assert!(second.events.is_empty());
        assert_eq!(second.config_map, first.config_map);
        for (a, b) in first
            .status
            .conditions
            .iter()
            .zip(&second.status.conditions)
        {
            assert_eq!(
                a.last_transition_time, b.last_transition_time,
                "{} moved",
                a.type_
            );
        }
        assert_eq!(second.status.last_check_time, Some(Time(at(900))));
        // A reconcile without a check (not due) changes nothing, not even timestamps.
        let third = run.go(Some(&second.status), None, at(950));
        assert!(!third.status_changed);
        assert_eq!(third.status, second.status);
    }

    fn with_record(mut check: SenderCheck, record: &str, lookups: u32) -> SenderCheck {
        check.spf.record = Some(record.to_owned());
        check.spf.lookups = lookups;
        check
    }

    #[test]
    fn record_history_keeps_five_records_and_reports_a_change_once() {
        let spec = spec(&[A]);
        let run = Run::new(&spec);
        let first = run.go(None, Some(&[aligned(A)]), t0());
        let history = first.status.senders[0].history.clone().expect("a history");
        assert_eq!(history.spf.len(), 1);
        assert_eq!(history.spf[0].first_seen, Time(t0()));
        assert_eq!(history.spf[0].lookups, Some(1));
        assert_eq!(history.dmarc.len(), 1);
        assert!(
            !kinds(&first).contains(&EventKind::SpfRecordChanged),
            "a first sighting is no change"
        );

        let edited = "v=spf1 include:spf.provider.example include:_spf.other.example -all";
        let second = run.go(
            Some(&first.status),
            Some(&[with_record(aligned(A), edited, 3)]),
            at(900),
        );
        assert!(second.status_changed);
        assert_eq!(kinds(&second), [EventKind::SpfRecordChanged]);
        let note = &second.events[0].note;
        assert!(
            note.contains("\"v=spf1 include:spf.provider.example -all\"")
                && note.contains(edited)
                && note.contains("lookups 1 -> 3 (+2)"),
            "{note}"
        );
        let history = second.status.senders[0].history.clone().expect("a history");
        assert_eq!(history.spf.len(), 2);
        assert_eq!(history.spf[1].hash, record_hash(Some(edited)));
        assert_eq!(history.spf[1].first_seen, Time(at(900)));
        assert_eq!(history.dmarc.len(), 1, "DMARC unchanged");

        // The same record again writes nothing; a temporary failure records nothing.
        let third = run.go(
            Some(&second.status),
            Some(&[with_record(aligned(A), edited, 3)]),
            at(1800),
        );
        assert!(!third.status_changed && third.events.is_empty());
        let fourth = run.go(Some(&third.status), Some(&[temporary(A)]), at(2700));
        assert_eq!(
            fourth.status.senders[0].history,
            third.status.senders[0].history
        );

        let mut previous = third.status;
        for i in 0..6 {
            let record = format!("v=spf1 ip4:192.0.2.{i} include:spf.provider.example -all");
            let next = run.go(
                Some(&previous),
                Some(&[with_record(aligned(A), &record, 1)]),
                at(3600 + i * 900),
            );
            assert_eq!(kinds(&next), [EventKind::SpfRecordChanged]);
            previous = next.status;
        }
        let history = previous.senders[0].history.clone().expect("a history");
        assert_eq!(
            history.spf.len(),
            HISTORY_LENGTH,
            "the oldest records are dropped"
        );
        assert_eq!(
            history.spf[4].hash,
            record_hash(Some(
                "v=spf1 ip4:192.0.2.5 include:spf.provider.example -all"
            ))
        );
        assert_eq!(record_hash(None), "none");
        assert_eq!(record_hash(Some("v=spf1 -all")).len(), 16);
    }

    #[test]
    fn generation_and_recheck_changes_are_written() {
        let spec = spec(&[A]);
        let start = tenant_status(&spec);
        let mut run = Run::new(&spec);
        run.generation = 2;
        let d = run.go(Some(&start), Some(&[aligned(A)]), at(900));
        assert!(d.status_changed);
        assert_eq!(d.status.observed_generation, Some(2));
        assert!(
            d.status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
        let mut run = Run::new(&spec);
        run.recheck = Some("now-1");
        let d = run.go(Some(&start), Some(&[aligned(A)]), at(900));
        assert!(d.status_changed);
        assert_eq!(d.status.last_recheck.as_deref(), Some("now-1"));
        let d2 = Run::new(&spec).go(Some(&d.status), None, at(901));
        assert_eq!(
            d2.status.last_recheck.as_deref(),
            Some("now-1"),
            "the handled value is remembered"
        );
    }

    #[test]
    fn suspend_stops_checks_and_keeps_mail_settings() {
        let mut spec = spec(&[A]);
        let start = fallback_status(&spec);
        spec.suspend = true;
        let d = Run::new(&spec).go(Some(&start), None, at(5000));
        assert_eq!(d.next_check, None);
        assert_eq!(d.status.next_check_time, None);
        assert_eq!(d.status.senders, start.senders);
        assert_eq!(d.config_map.expect("cm")[keys::SENDER_MODE], "fallback");
        let ready = cond(&d.status, condition::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", reason::SUSPENDED)
        );
    }

    #[test]
    fn added_senders_start_pending_and_removed_senders_disappear() {
        let spec1 = spec(&[A]);
        let start = tenant_status(&spec1);
        let spec2 = spec(&[B, A]);
        let d = Run::new(&spec2).go(Some(&start), None, at(10));
        assert_eq!(d.status.senders.len(), 2);
        assert_eq!(d.status.senders[0].state, SenderState::Pending);
        assert_eq!(d.status.senders[1].sending_as, SendingAs::Tenant);
        let cm = d.config_map.expect("cm");
        assert_eq!(
            cm[keys::SENDER_MODE],
            "fallback",
            "any sender on the fallback"
        );
        assert_eq!(cm[keys::FROM], FALLBACK, "the first sender decides from");
        assert_eq!(cm[keys::REPLY_TO], B);
        let spec3 = spec(&[B]);
        let d = Run::new(&spec3).go(Some(&d.status), None, at(20));
        assert_eq!(d.status.senders.len(), 1);
        assert_eq!(d.status.senders[0].address, B);
    }

    #[test]
    fn a_changed_envelope_domain_starts_over() {
        let spec1 = spec(&[A]);
        let start = tenant_status(&spec1);
        let mut spec2 = spec(&[A]);
        spec2.senders[0].envelope_domain = Some("bounce.acme.example".to_owned());
        let d = Run::new(&spec2).go(Some(&start), None, at(10));
        let s = &d.status.senders[0];
        assert_eq!(
            (s.state, s.sending_as),
            (SenderState::Pending, SendingAs::Fallback)
        );
        assert_eq!(s.envelope_domain, "bounce.acme.example");
    }

    #[test]
    fn fallback_sender_templates_and_overrides() {
        let mut spec = spec(&[A]);
        assert_eq!(
            fallback_sender(&spec, "n+{tenant}.{namespace}@p.example", "acme", "ns1"),
            "n+acme.ns1@p.example"
        );
        spec.fallback_sender = Some("help-{tenant}@p.example".to_owned());
        assert_eq!(
            fallback_sender(&spec, DEFAULT_SENDER, "acme", "ns1"),
            "help-acme@p.example"
        );
    }

    #[test]
    fn mixed_senders_summarize_conditions() {
        let spec = spec(&[A, B]);
        let d = Run::new(&spec).go(None, Some(&[aligned(A), temporary(B)]), t0());
        assert_eq!(cond(&d.status, condition::SPF_ALIGNED).status, "Unknown");
        assert_eq!(d.status.aligned_senders.as_deref(), Some("1/2"));
        let d = Run::new(&spec).go(None, Some(&[unaligned(A), temporary(B)]), t0());
        assert_eq!(
            cond(&d.status, condition::SPF_ALIGNED).status,
            "False",
            "a definitive failure wins"
        );
    }

    #[test]
    fn check_interval_falls_back_to_the_default() {
        let mut spec = spec(&[A]);
        assert_eq!(
            check_interval(&spec, Duration::from_secs(900)),
            Duration::from_secs(900)
        );
        spec.check_interval = Some("2s".to_owned());
        assert_eq!(
            check_interval(&spec, Duration::from_secs(900)),
            Duration::from_secs(2)
        );
        spec.check_interval = Some("garbage".to_owned());
        assert_eq!(
            check_interval(&spec, Duration::from_secs(900)),
            Duration::from_secs(900)
        );
    }

    /// Runs `steps` from `start` with `guards` on every step.
    fn guarded(
        spec: &HelpdeskTenantSpec,
        start: HelpdeskTenantStatus,
        guards: &Guards,
        steps: usize,
    ) -> Vec<Decision> {
        let mut run = Run::new(spec);
        run.guards = guards.clone();
        let mut previous = start;
        let mut out = Vec::new();
        for i in 0..steps {
            let mut check = unaligned(A);
            // The provider include is reachable: the tenant did its part.
            check.spf.provider_include_reachable = true;
            let d = run.go(Some(&previous), Some(&[check]), at(60 * (i as i64 + 1)));
            previous = d.status.clone();
            out.push(d);
        }
        out
    }

    #[test]
    fn a_broken_provider_record_moves_no_sender_and_tells_no_tenant() {
        let spec = spec(&[A]);
        let guards = Guards {
            provider_broken: Some("the provider's SPF record fails".to_owned()),
            ..Guards::default()
        };
        let out = guarded(&spec, tenant_status(&spec), &guards, 3);
        for d in &out {
            let s = &d.status.senders[0];
            assert_eq!(s.sending_as, SendingAs::Tenant);
            assert_eq!(s.state, SenderState::TemporaryFailure);
            assert_eq!(s.consecutive_failures, 0, "no counter moves");
            assert!(
                d.events.is_empty(),
                "reported for the fleet, not per tenant"
            );
            let c = cond(&d.status, condition::SPF_ALIGNED);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("Unknown", reason::PROVIDER_SPF_BROKEN)
            );
        }
        assert!(!out[2].status_changed, "a steady state writes nothing");
    }

    #[test]
    fn a_tenant_without_the_provider_include_is_not_the_providers_fault() {
        let spec = spec(&[A]);
        let mut run = Run::new(&spec);
        run.guards.provider_broken = Some("broken".to_owned());
        let mut previous = tenant_status(&spec);
        for i in 1..=2 {
            // `unaligned` does not reach the provider include.
            previous = run
                .go(Some(&previous), Some(&[unaligned(A)]), at(60 * i))
                .status;
        }
        assert_eq!(previous.senders[0].sending_as, SendingAs::Fallback);
    }

    #[test]
    fn an_unaligned_fallback_sender_keeps_the_tenant_address_with_one_event() {
        let spec = spec(&[A]);
        let guards = Guards {
            fallback_unaligned: Some("the fallback sender is not aligned either".to_owned()),
            ..Guards::default()
        };
        let out = guarded(&spec, tenant_status(&spec), &guards, 4);
        let held: Vec<&Decision> = out.iter().skip(1).collect();
        for d in &held {
            assert_eq!(d.status.senders[0].sending_as, SendingAs::Tenant);
            assert_eq!(d.status.senders[0].state, SenderState::Unaligned);
            let c = cond(&d.status, condition::FALLBACK_ACTIVE);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", reason::FALLBACK_SENDER_UNALIGNED)
            );
            assert!(
                d.config_map
                    .as_ref()
                    .is_none_or(|cm| cm[keys::SENDER_MODE] != "fallback")
            );
        }
        assert_eq!(kinds(held[0]), vec![EventKind::FallbackSenderUnaligned]);
        assert!(
            held[1].events.is_empty() && held[2].events.is_empty(),
            "one Event per state change"
        );
        assert!(!held[2].status_changed);
        // A reconcile without a check keeps the reason.
        let d = Run::new(&spec).go(Some(&held[2].status), None, at(600));
        assert!(!d.status_changed);
    }

    #[test]
    fn the_fleet_guard_holds_switches_to_fallback_only() {
        let spec = spec(&[A]);
        let guards = Guards {
            fleet_hold: true,
            ..Guards::default()
        };
        let out = guarded(&spec, tenant_status(&spec), &guards, 3);
        assert_eq!(
            out[0].held_switches, 0,
            "the first failure is not a switch yet"
        );
        for d in out.iter().skip(1) {
            assert_eq!(d.held_switches, 1);
            assert_eq!(d.status.senders[0].sending_as, SendingAs::Tenant);
            let c = cond(&d.status, condition::FALLBACK_ACTIVE);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", reason::FLEET_GUARD_HOLD)
            );
            assert!(d.events.is_empty());
        }
        // Released: the next Unaligned check switches.
        let d = Run::new(&spec).go(Some(&out[2].status), Some(&[unaligned(A)]), at(600));
        assert_eq!(d.status.senders[0].sending_as, SendingAs::Fallback);
        assert_eq!(kinds(&d), vec![EventKind::FallbackActivated]);
        // Returns to the tenant's address are never held.
        let mut run = Run::new(&spec);
        run.guards.fleet_hold = true;
        let mut previous = fallback_status(&spec);
        for i in 0..3 {
            previous = run
                .go(Some(&previous), Some(&[aligned(A)]), at(3600 * (i + 1)))
                .status;
        }
        assert_eq!(previous.senders[0].sending_as, SendingAs::Tenant);
    }
}
