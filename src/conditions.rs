//! The tenant's conditions: their reasons (one list), how the senders' states summarize into
//! Ready, SpfAligned and FallbackActive, and the comparison that keeps an unchanged status
//! from being written (stable `lastTransitionTime`, check timestamps ignored).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::alignment::UnalignedReason;
use crate::api::{
    HelpdeskTenantSpec, HelpdeskTenantStatus, Mode, SenderState, SenderStatus, SendingAs, condition,
};

/// Condition reasons (CamelCase constants). The reasons of a definitive SPF failure are
/// [`UnalignedReason::as_str`].
pub mod reason {
    pub const ALIGNED: &str = "Aligned";
    /// Aligned through the provider's DKIM signature while SPF does not align.
    pub const ALIGNED_BY_DKIM: &str = "AlignedByDkim";
    pub const NOT_CHECKED: &str = "NotChecked";
    pub const DNS_TEMPORARY_FAILURE: &str = "DnsTemporaryFailure";
    pub const SENDERS_UNALIGNED: &str = "SendersUnaligned";
    pub const AWAITING_ALIGNMENT: &str = "AwaitingAlignment";
    pub const TENANT_SENDERS_ACTIVE: &str = "TenantSendersActive";
    pub const OBSERVE_MODE: &str = "ObserveMode";
    pub const SUSPENDED: &str = "Suspended";
    pub const RECONCILED: &str = "Reconciled";
    pub const AWAITING_FIRST_VERDICT: &str = "AwaitingFirstVerdict";
    /// The mail-settings ConfigMap is controlled by another object.
    pub const CONFIG_MAP_CONFLICT: &str = "ConfigMapConflict";
    /// The provider's own SPF record fails (docs/design.md §5 "Provider self-check").
    pub const PROVIDER_SPF_BROKEN: &str = "ProviderSpfBroken";
    /// Falling back would not help: the fallback sender is not aligned either (§5).
    pub const FALLBACK_SENDER_UNALIGNED: &str = "FallbackSenderUnaligned";
    /// The fleet guard holds switches to the fallback sender (§5).
    pub const FLEET_GUARD_HOLD: &str = "FleetGuardHold";
}

/// Sets the Ready, SpfAligned and FallbackActive conditions from the senders' states.
pub fn set_conditions(
    status: &mut HelpdeskTenantStatus,
    spec: &HelpdeskTenantSpec,
    fallback: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let senders = &status.senders;
    let list = |pred: &dyn Fn(&SenderStatus) -> bool| -> Vec<&SenderStatus> {
        senders.iter().filter(|s| pred(s)).collect()
    };
    let unaligned = list(&|s| s.state == SenderState::Unaligned);
    let temporary = list(&|s| {
        s.state == SenderState::TemporaryFailure
            || (s.state == SenderState::Pending
                && matches!(
                    s.reason.as_deref(),
                    Some(reason::DNS_TEMPORARY_FAILURE | reason::PROVIDER_SPF_BROKEN)
                ))
    });
    let provider_broken = list(&|s| s.reason.as_deref() == Some(reason::PROVIDER_SPF_BROKEN));
    let pending = list(&|s| s.state == SenderState::Pending);
    let falling_back = list(&|s| s.sending_as == SendingAs::Fallback);

    let aligned = if let Some(first) = unaligned.first() {
        (
            "False",
            first
                .reason
                .clone()
                .unwrap_or_else(|| UnalignedReason::ProviderNotAuthorized.as_str().to_owned()),
            format!(
                "{} of {} senders unaligned: {}",
                unaligned.len(),
                senders.len(),
                describe(&unaligned)
            ),
        )
    } else if !provider_broken.is_empty() {
        (
            "Unknown",
            reason::PROVIDER_SPF_BROKEN.to_owned(),
            format!(
                "the provider's own SPF record fails, so {} cannot be judged; current senders are kept",
                addresses(&provider_broken)
            ),
        )
    } else if !temporary.is_empty() {
        (
            "Unknown",
            reason::DNS_TEMPORARY_FAILURE.to_owned(),
            format!(
                "DNS lookups failed temporarily for {}; current senders are kept",
                addresses(&temporary)
            ),
        )
    } else if !pending.is_empty() {
        (
            "Unknown",
            reason::NOT_CHECKED.to_owned(),
            format!("not checked yet: {}", addresses(&pending)),
        )
    } else {
        let by_dkim = list(&|s| s.reason.as_deref() == Some(reason::ALIGNED_BY_DKIM));
        if by_dkim.is_empty() {
            (
                "True",
                reason::ALIGNED.to_owned(),
                format!(
                    "all {} senders authorize the provider and align with DMARC",
                    senders.len()
                ),
            )
        } else {
            (
                "True",
                reason::ALIGNED_BY_DKIM.to_owned(),
                format!(
                    "all {} senders align with DMARC; through the provider's DKIM signature only: {}",
                    senders.len(),
                    addresses(&by_dkim)
                ),
            )
        }
    };

    let fallback_condition = if spec.mode == Mode::Observe {
        let message = if falling_back.is_empty() {
            "Observe mode never changes mail settings; no sender would fall back".to_owned()
        } else {
            format!(
                "Observe mode never changes mail settings; {} would send as {fallback}",
                addresses(&falling_back)
            )
        };
        ("False", reason::OBSERVE_MODE.to_owned(), message)
    } else if falling_back.is_empty() {
        (
            "False",
            reason::TENANT_SENDERS_ACTIVE.to_owned(),
            "every sender sends as its own address".to_owned(),
        )
    } else {
        let why = if falling_back
            .iter()
            .any(|s| s.state == SenderState::Unaligned)
        {
            reason::SENDERS_UNALIGNED
        } else {
            reason::AWAITING_ALIGNMENT
        };
        (
            "True",
            why.to_owned(),
            format!("{} send as {fallback}", addresses(&falling_back)),
        )
    };

    let ready = if spec.suspend {
        (
            "True",
            reason::SUSPENDED.to_owned(),
            "checks are suspended; mail settings keep their current values".to_owned(),
        )
    } else if !pending.is_empty() {
        (
            "False",
            reason::AWAITING_FIRST_VERDICT.to_owned(),
            format!("waiting for a first verdict on {}", addresses(&pending)),
        )
    } else {
        (
            "True",
            reason::RECONCILED.to_owned(),
            if spec.mode == Mode::Observe {
                "the latest checks are reported".to_owned()
            } else {
                "the mail settings follow the latest checks".to_owned()
            },
        )
    };

    for (kind, (state, why, message)) in [
        (condition::READY, ready),
        (condition::SPF_ALIGNED, aligned),
        (condition::FALLBACK_ACTIVE, fallback_condition),
    ] {
        set_condition(
            &mut status.conditions,
            kind,
            state,
            &why,
            &message,
            generation,
            now,
        );
    }
}

fn addresses(senders: &[&SenderStatus]) -> String {
    let mut text = senders
        .iter()
        .take(5)
        .map(|s| s.address.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if senders.len() > 5 {
        text.push_str(&format!(" and {} more", senders.len() - 5));
    }
    text
}

fn describe(senders: &[&SenderStatus]) -> String {
    let mut text = senders
        .iter()
        .take(3)
        .map(|s| {
            format!(
                "{} ({})",
                s.address,
                s.message.as_deref().unwrap_or("unaligned")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if senders.len() > 3 {
        text.push_str(&format!("; and {} more", senders.len() - 3));
    }
    text
}

/// Sets a condition, keeping `lastTransitionTime` unless the status changes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let wanted = |last_transition_time: Time| Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) if existing.status == status => {
            let time = existing.last_transition_time.clone();
            *existing = wanted(time);
        }
        Some(existing) => *existing = wanted(Time(now)),
        None => conditions.push(wanted(Time(now))),
    }
}

/// Whether two statuses are equal apart from check timestamps.
pub fn same_ignoring_timestamps(a: &HelpdeskTenantStatus, b: &HelpdeskTenantStatus) -> bool {
    let strip = |s: &HelpdeskTenantStatus| HelpdeskTenantStatus {
        last_check_time: None,
        next_check_time: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid time")
    }

    #[test]
    fn conditions_keep_transition_time_when_only_reason_changes() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, "X", "False", "A", "a", Some(1), at(0));
        set_condition(&mut conditions, "X", "False", "B", "b", Some(2), at(10));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Time(at(0)));
        assert_eq!(conditions[0].reason, "B");
        set_condition(&mut conditions, "X", "True", "C", "c", Some(2), at(20));
        assert_eq!(conditions[0].last_transition_time, Time(at(20)));
    }
}
