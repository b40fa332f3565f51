//! The verdict of docs/design.md §5 and the suggested record of §6, as pure functions of the
//! DNS facts one check gathered.

use crate::dmarc::{AlignmentMode, domains_align};
use crate::spf::edit::insert_include;
use crate::spf::lints::MAX_RECORD_BYTES;
use crate::spf::{MAX_LOOKUPS, SpfResult};

use super::{DomainAlignment, IpResult, SuggestedRecord, UnalignedReason, Verdict};

/// Alignment of `envelope` with `from` when the DMARC `aspf` mode is `mode`, or unknown
/// (`None`) because the policy could not be fetched.
pub fn domain_alignment(
    envelope: &str,
    from: &str,
    mode: Option<AlignmentMode>,
) -> DomainAlignment {
    let check = |m| domains_align(envelope, from, m);
    let result = match mode {
        Some(mode) => check(mode),
        None => {
            let (strict, relaxed) = (check(AlignmentMode::Strict), check(AlignmentMode::Relaxed));
            if strict != relaxed {
                return DomainAlignment::Unknown;
            }
            strict
        }
    };
    if result {
        DomainAlignment::Aligned
    } else {
        DomainAlignment::NotAligned
    }
}

fn list_ips(results: &[&IpResult]) -> String {
    results
        .iter()
        .map(|r| r.ip.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict of docs/design.md §5 from the per-address SPF results and the domain alignment.
///
/// A definitive failure wins over a temporary one: any `none`, `permerror`, `fail`,
/// `softfail` or `neutral`, or domains that do not align, make the sender Unaligned even when
/// other lookups failed temporarily. With no egress address at all there is nothing to verify
/// and the verdict is a temporary failure, which never switches a sender.
pub fn decide_verdict(
    envelope_domain: &str,
    from_domain: &str,
    results: &[IpResult],
    alignment: DomainAlignment,
    mode: Option<AlignmentMode>,
) -> Verdict {
    let with = |wanted: &[SpfResult]| -> Vec<&IpResult> {
        results
            .iter()
            .filter(|r| wanted.contains(&r.result))
            .collect()
    };
    let none = with(&[SpfResult::None]);
    if !none.is_empty() {
        return Verdict::Unaligned {
            reason: UnalignedReason::NoSpfRecord,
            message: format!("{envelope_domain} publishes no SPF record"),
        };
    }
    let perm = with(&[SpfResult::Permerror]);
    if !perm.is_empty() {
        return Verdict::Unaligned {
            reason: UnalignedReason::SpfPermError,
            message: format!(
                "the SPF record of {envelope_domain} is invalid or exceeds a limit (permerror)"
            ),
        };
    }
    let denied = with(&[SpfResult::Fail, SpfResult::Softfail, SpfResult::Neutral]);
    if !denied.is_empty() {
        let mut outcomes: Vec<&str> = denied.iter().map(|r| r.result.as_str()).collect();
        outcomes.sort_unstable();
        outcomes.dedup();
        return Verdict::Unaligned {
            reason: UnalignedReason::ProviderNotAuthorized,
            message: format!(
                "the SPF record of {envelope_domain} does not authorize {} ({})",
                list_ips(&denied),
                outcomes.join(", ")
            ),
        };
    }
    if alignment == DomainAlignment::NotAligned {
        let mode = mode.unwrap_or_default();
        return Verdict::Unaligned {
            reason: UnalignedReason::DomainNotAligned,
            message: format!(
                "envelope domain {envelope_domain} does not align with {from_domain} under {mode} SPF alignment"
            ),
        };
    }
    let temp = with(&[SpfResult::Temperror]);
    if !temp.is_empty() {
        return Verdict::TemporaryFailure {
            message: format!(
                "SPF of {envelope_domain} could not be evaluated for {}: DNS failed temporarily",
                list_ips(&temp)
            ),
        };
    }
    if alignment == DomainAlignment::Unknown {
        return Verdict::TemporaryFailure {
            message: format!(
                "the DMARC policy of {from_domain} could not be fetched, so alignment of {envelope_domain} is unknown"
            ),
        };
    }
    if results.is_empty() {
        return Verdict::TemporaryFailure {
            message: "no provider egress address is configured".to_string(),
        };
    }
    Verdict::Aligned
}

/// The fix of docs/design.md §6: the tenant's record (or none) with the provider include added.
///
/// `current_lookups` is the DNS-querying terms the current record needs at most, and
/// `provider_lookups` those of the provider's own record tree; the suggestion needs both plus
/// one for the include itself.
pub fn suggest_record(
    current: Option<&str>,
    provider_domain: &str,
    current_lookups: u32,
    provider_lookups: u32,
) -> SuggestedRecord {
    let provider_domain = provider_domain.trim_end_matches('.');
    let record = match current {
        Some(text) => insert_include(text, provider_domain),
        None => format!("v=spf1 include:{provider_domain} ~all"),
    };
    let lookups = current_lookups
        .saturating_add(1)
        .saturating_add(provider_lookups);
    let warning = (lookups > MAX_LOOKUPS).then(|| {
        format!(
            "this record needs {lookups} DNS lookups, over the limit of {MAX_LOOKUPS}: receivers \
             would answer permerror; replace includes you no longer need, or mechanisms such \
             as a and mx, with ip4/ip6 ranges first"
        )
    });
    let record_len = record.len();
    let warning = match warning {
        None if record_len > MAX_RECORD_BYTES => Some(format!(
            "this record is {record_len} bytes, over {MAX_RECORD_BYTES}: answers may be truncated"
        )),
        other => other,
    };
    SuggestedRecord {
        record,
        lookups,
        warning,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn results(pairs: &[(&str, SpfResult)]) -> Vec<IpResult> {
        pairs
            .iter()
            .map(|(addr, result)| IpResult {
                ip: ip(addr),
                result: *result,
            })
            .collect()
    }

    const ENV: &str = "customer.example";

    fn verdict(pairs: &[(&str, SpfResult)], alignment: DomainAlignment) -> Verdict {
        decide_verdict(
            ENV,
            ENV,
            &results(pairs),
            alignment,
            Some(AlignmentMode::Relaxed),
        )
    }

    fn reason(v: &Verdict) -> Option<UnalignedReason> {
        match v {
            Verdict::Unaligned { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    #[test]
    fn every_address_passing_and_aligned_is_aligned() {
        let v = verdict(
            &[
                ("192.0.2.1", SpfResult::Pass),
                ("2001:db8::1", SpfResult::Pass),
            ],
            DomainAlignment::Aligned,
        );
        assert_eq!(v, Verdict::Aligned);
    }

    #[test]
    fn any_definitive_failure_is_unaligned() {
        use SpfResult::*;
        for (bad, expected) in [
            (Fail, UnalignedReason::ProviderNotAuthorized),
            (Softfail, UnalignedReason::ProviderNotAuthorized),
            (Neutral, UnalignedReason::ProviderNotAuthorized),
            (None, UnalignedReason::NoSpfRecord),
            (Permerror, UnalignedReason::SpfPermError),
        ] {
            let v = verdict(
                &[("192.0.2.1", Pass), ("192.0.2.2", bad)],
                DomainAlignment::Aligned,
            );
            assert_eq!(reason(&v), Some(expected), "{bad:?}: {v:?}");
        }
    }

    #[test]
    fn failure_message_names_the_addresses_and_results() {
        let v = verdict(
            &[
                ("192.0.2.1", SpfResult::Softfail),
                ("192.0.2.2", SpfResult::Pass),
            ],
            DomainAlignment::Aligned,
        );
        match v {
            Verdict::Unaligned { message, .. } => {
                assert!(message.contains("192.0.2.1"), "{message}");
                assert!(message.contains("softfail"), "{message}");
                assert!(!message.contains("192.0.2.2"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn definitive_failure_wins_over_temperror() {
        let v = verdict(
            &[
                ("192.0.2.1", SpfResult::Temperror),
                ("192.0.2.2", SpfResult::Fail),
            ],
            DomainAlignment::Aligned,
        );
        assert_eq!(reason(&v), Some(UnalignedReason::ProviderNotAuthorized));
        let v = verdict(
            &[("192.0.2.1", SpfResult::Temperror)],
            DomainAlignment::NotAligned,
        );
        assert_eq!(reason(&v), Some(UnalignedReason::DomainNotAligned));
    }

    #[test]
    fn temperror_without_definitive_failure_is_temporary() {
        let v = verdict(
            &[
                ("192.0.2.1", SpfResult::Temperror),
                ("192.0.2.2", SpfResult::Pass),
            ],
            DomainAlignment::Aligned,
        );
        assert!(matches!(v, Verdict::TemporaryFailure { .. }), "{v:?}");
        let v = verdict(&[("192.0.2.1", SpfResult::Pass)], DomainAlignment::Unknown);
        assert!(matches!(v, Verdict::TemporaryFailure { .. }), "{v:?}");
    }

    #[test]
    fn no_egress_address_is_no_verdict() {
        let v = verdict(&[], DomainAlignment::Aligned);
        assert!(matches!(v, Verdict::TemporaryFailure { .. }), "{v:?}");
    }

    #[test]
    fn unaligned_domains_name_the_mode() {
        let v = decide_verdict(
            "bounce.customer.example",
            "customer.example",
            &results(&[("192.0.2.1", SpfResult::Pass)]),
            DomainAlignment::NotAligned,
            Some(AlignmentMode::Strict),
        );
        match v {
            Verdict::Unaligned { reason, message } => {
                assert_eq!(reason, UnalignedReason::DomainNotAligned);
                assert!(message.contains("strict"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn alignment_with_unknown_policy() {
        use DomainAlignment::*;
        assert_eq!(domain_alignment("a.example", "a.example", None), Aligned);
        assert_eq!(domain_alignment("b.a.example", "a.example", None), Unknown);
        assert_eq!(domain_alignment("b.example", "a.example", None), NotAligned);
        assert_eq!(
            domain_alignment("b.a.example", "a.example", Some(AlignmentMode::Strict)),
            NotAligned
        );
        assert_eq!(
            domain_alignment("b.a.example", "a.example", Some(AlignmentMode::Relaxed)),
            Aligned
        );
    }

    #[test]
    fn a_domain_without_record_gets_a_new_one() {
        let s = suggest_record(None, "spf.provider.example.", 0, 2);
        assert_eq!(s.record, "v=spf1 include:spf.provider.example ~all");
        assert_eq!(s.lookups, 3);
        assert_eq!(s.warning, Option::None);
    }

    #[test]
    fn lookups_past_ten_warn() {
        let s = suggest_record(Some("v=spf1 a mx -all"), "spf.provider.example", 8, 1);
        assert_eq!(s.lookups, 10);
        assert_eq!(s.warning, Option::None);
        let s = suggest_record(Some("v=spf1 a mx -all"), "spf.provider.example", 8, 2);
        assert_eq!(s.lookups, 11);
        assert!(s.warning.expect("warns").contains("11 DNS lookups"));
    }
}
