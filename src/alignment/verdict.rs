//! The verdict of docs/design.md §5 and the suggested record of §6, as pure functions of the
//! DNS facts one check gathered.

use crate::dmarc::{AlignmentMode, domains_align};
use crate::spf::edit::insert_include;
use crate::spf::lints::MAX_RECORD_BYTES;
use crate::spf::{MAX_LOOKUPS, SpfResult};

use super::{AlignmentPath, DomainAlignment, IpResult, SuggestedRecord, UnalignedReason, Verdict};
use crate::api::RequiredAlignment;
use crate::dkim::{DkimState, DkimVerdict};

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

/// Combines the SPF verdict and the DKIM path's verdict under the tenant's required
/// alignment (docs/design.md §5), and says which paths held when the result is Aligned.
///
/// Without DKIM selectors (`dkim` is `None` or `Off`) only SPF is checked, whatever the
/// requirement. A DKIM temporary failure, or a broken provider key, is no verdict, like an SPF
/// temperror: it can make the result temporary but never a definitive failure.
pub fn combine(
    required: RequiredAlignment,
    spf: &Verdict,
    dkim: Option<&DkimVerdict>,
) -> (Verdict, Option<AlignmentPath>) {
    let dkim = dkim.filter(|d| d.state != DkimState::Off);
    let spf_holds = *spf == Verdict::Aligned;
    let dkim_holds = dkim.is_some_and(|d| d.state == DkimState::Aligned);
    let held = match (spf_holds, dkim_holds) {
        (true, true) => Some(AlignmentPath::SpfAndDkim),
        (true, false) => Some(AlignmentPath::Spf),
        (false, true) => Some(AlignmentPath::Dkim),
        (false, false) => None,
    };
    let Some(dkim) = dkim else {
        return (spf.clone(), held.filter(|_| spf_holds));
    };
    let dkim_temporary = matches!(
        dkim.state,
        DkimState::TemporaryFailure | DkimState::ProviderBroken
    );
    let temporary = |message: String| (Verdict::TemporaryFailure { message }, None);
    match required {
        RequiredAlignment::Spf => (spf.clone(), held.filter(|_| spf_holds)),
        RequiredAlignment::SpfOrDkim => {
            if spf_holds || dkim_holds {
                return (Verdict::Aligned, held);
            }
            match spf {
                Verdict::Unaligned { reason, message } if !dkim_temporary => (
                    Verdict::Unaligned {
                        reason: *reason,
                        message: format!("{message}; DKIM: {}", dkim.message),
                    },
                    None,
                ),
                Verdict::TemporaryFailure { message } => temporary(message.clone()),
                _ => temporary(format!("DKIM: {}", dkim.message)),
            }
        }
        RequiredAlignment::SpfAndDkim => {
            if let Verdict::Unaligned { .. } = spf {
                return (spf.clone(), None);
            }
            if dkim.state == DkimState::Unaligned {
                return (
                    Verdict::Unaligned {
                        reason: UnalignedReason::DkimNotAligned,
                        message: format!("DKIM: {}", dkim.message),
                    },
                    None,
                );
            }
            if let Verdict::TemporaryFailure { message } = spf {
                return temporary(message.clone());
            }
            if dkim_temporary {
                return temporary(format!("DKIM: {}", dkim.message));
            }
            (Verdict::Aligned, held)
        }
    }
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

    fn dkim(state: DkimState) -> DkimVerdict {
        DkimVerdict {
            state,
            message: format!("dkim {}", state.as_str()),
        }
    }

    fn spf_unaligned() -> Verdict {
        Verdict::Unaligned {
            reason: UnalignedReason::ProviderNotAuthorized,
            message: "spf fails".to_owned(),
        }
    }

    fn spf_temporary() -> Verdict {
        Verdict::TemporaryFailure {
            message: "spf timed out".to_owned(),
        }
    }

    /// The outcome's short name: `Aligned(Spf)`, `Unaligned(DkimNotAligned)`, `Temporary`.
    fn outcome(result: (Verdict, Option<AlignmentPath>)) -> String {
        match result {
            (Verdict::Aligned, Some(path)) => format!("Aligned({path:?})"),
            (Verdict::Aligned, None) => "Aligned(?)".to_owned(),
            (Verdict::Unaligned { reason, .. }, _) => format!("Unaligned({})", reason.as_str()),
            (Verdict::TemporaryFailure { .. }, _) => "Temporary".to_owned(),
        }
    }

    #[test]
    fn required_alignment_table() {
        use DkimState::{Aligned as DA, TemporaryFailure as DT, Unaligned as DU};
        use RequiredAlignment::*;
        let good = Verdict::Aligned;
        let bad = spf_unaligned();
        let cases = [
            (Spf, &good, DA, "Aligned(SpfAndDkim)"),
            (Spf, &good, DU, "Aligned(Spf)"),
            (Spf, &bad, DA, "Unaligned(ProviderNotAuthorized)"),
            (Spf, &bad, DU, "Unaligned(ProviderNotAuthorized)"),
            (SpfOrDkim, &good, DA, "Aligned(SpfAndDkim)"),
            (SpfOrDkim, &good, DU, "Aligned(Spf)"),
            (SpfOrDkim, &bad, DA, "Aligned(Dkim)"),
            (SpfOrDkim, &bad, DU, "Unaligned(ProviderNotAuthorized)"),
            (SpfOrDkim, &bad, DT, "Temporary"),
            (SpfAndDkim, &good, DA, "Aligned(SpfAndDkim)"),
            (SpfAndDkim, &good, DU, "Unaligned(DkimNotAligned)"),
            (SpfAndDkim, &bad, DA, "Unaligned(ProviderNotAuthorized)"),
            (SpfAndDkim, &bad, DU, "Unaligned(ProviderNotAuthorized)"),
            (SpfAndDkim, &good, DT, "Temporary"),
        ];
        for (required, spf, state, expected) in cases {
            let got = outcome(combine(required, spf, Some(&dkim(state))));
            assert_eq!(got, expected, "{required:?} spf={spf:?} dkim={state:?}");
        }
    }

    #[test]
    fn without_dkim_only_spf_counts() {
        for required in [
            RequiredAlignment::Spf,
            RequiredAlignment::SpfOrDkim,
            RequiredAlignment::SpfAndDkim,
        ] {
            for dkim_verdict in [None, Some(dkim(DkimState::Off))] {
                let result = combine(required, &Verdict::Aligned, dkim_verdict.as_ref());
                assert_eq!(outcome(result), "Aligned(Spf)");
                let result = combine(required, &spf_unaligned(), dkim_verdict.as_ref());
                assert_eq!(outcome(result), "Unaligned(ProviderNotAuthorized)");
            }
        }
    }

    #[test]
    fn temporary_spf_is_no_verdict_unless_dkim_decides() {
        let either = RequiredAlignment::SpfOrDkim;
        let both = RequiredAlignment::SpfAndDkim;
        let t = spf_temporary();
        assert_eq!(
            outcome(combine(either, &t, Some(&dkim(DkimState::Aligned)))),
            "Aligned(Dkim)"
        );
        assert_eq!(
            outcome(combine(either, &t, Some(&dkim(DkimState::Unaligned)))),
            "Temporary"
        );
        assert_eq!(
            outcome(combine(both, &t, Some(&dkim(DkimState::Unaligned)))),
            "Unaligned(DkimNotAligned)"
        );
        assert_eq!(
            outcome(combine(both, &t, Some(&dkim(DkimState::ProviderBroken)))),
            "Temporary"
        );
    }
}
