//! One check of one sender: SPF for every provider egress address, the probe walk of the
//! include tree, DMARC discovery; the verdict and the suggestion come from [`super::verdict`].

use std::net::{IpAddr, Ipv4Addr};

use crate::dkim::{check_domain, fetch_provider_keys};
use crate::dmarc::{self, AlignmentMode, Discovery};
use crate::dns::{Authority, Dns};
use crate::names::{address_domain, normalize_domain, split_address};
use crate::spf::lints::{lint, strict_void_lint, tree_reaches, type99_only};
use crate::spf::{
    Evaluator, MAX_LOOKUPS, Node, NodeKind, SpfOutcome, SpfQuery, SpfResult, parse_record,
};

use super::vantage;
use super::verdict::{combine, decide_verdict, domain_alignment, suggest_record};
use super::{
    DmarcReport, DomainAlignment, IpResult, Provider, SenderCheck, SenderInput, SpfReport, Verdict,
};

/// The MAIL FROM identity SPF is evaluated with (see the module documentation).
pub fn mail_from(address: &str, envelope_domain: &str) -> String {
    match split_address(address) {
        Some((local, _)) if !local.is_empty() => format!("{local}@{envelope_domain}"),
        _ => format!("postmaster@{envelope_domain}"),
    }
}

/// An address no SPF record is expected to authorize (the limited broadcast address).
/// Evaluating the envelope domain for it walks every term evaluation can reach, so its trace
/// holds the whole include tree and the worst-case lookup count.
pub const PROBE_IP: IpAddr = IpAddr::V4(Ipv4Addr::BROADCAST);

/// A [`SenderCheck`] with the evaluations behind it, for a person to read.
#[derive(Clone, Debug)]
pub struct CheckDetail {
    pub check: SenderCheck,
    /// The evaluation for [`PROBE_IP`]: the include tree and the worst-case lookups.
    pub tree: Option<SpfOutcome>,
    /// One evaluation per provider egress address, in the provider's order.
    pub evaluations: Vec<SpfOutcome>,
    /// The provider's own record tree, evaluated when a suggestion needed its lookup count.
    pub provider_tree: Option<SpfOutcome>,
    /// What DMARC policy discovery found (`None` when the address has no domain).
    pub dmarc: Option<Discovery>,
}

/// One check of one sender (docs/design.md §5): SPF for every egress address, DMARC, the verdict and,
/// when the provider include is missing, the suggested record.
pub async fn check_sender<D: Dns + Clone>(
    resolver: &D,
    provider: &Provider,
    sender: &SenderInput,
) -> SenderCheck {
    check_sender_detailed(resolver, provider, sender)
        .await
        .check
}

/// [`check_sender`] keeping the evaluation traces.
pub async fn check_sender_detailed<D: Dns + Clone>(
    resolver: &D,
    provider: &Provider,
    sender: &SenderInput,
) -> CheckDetail {
    let Some(from) = address_domain(&sender.address).map(normalize_domain) else {
        let check = SenderCheck {
            address: sender.address.clone(),
            envelope_domain: sender.envelope_domain.clone().unwrap_or_default(),
            verdict: Verdict::TemporaryFailure {
                message: format!("{:?} is not an email address", sender.address),
            },
            aligned_by: None,
            spf_verdict: Verdict::TemporaryFailure {
                message: format!("{:?} is not an email address", sender.address),
            },
            spf: SpfReport::default(),
            dmarc: DmarcReport::default(),
            suggested_record: None,
            dkim: None,
        };
        return CheckDetail {
            check,
            tree: None,
            evaluations: Vec::new(),
            provider_tree: None,
            dmarc: None,
        };
    };
    let envelope = sender
        .envelope_domain
        .as_deref()
        .map(normalize_domain)
        .unwrap_or_else(|| from.clone());
    let provider_domain = normalize_domain(&provider.spf_domain);
    let identity = mail_from(&sender.address, &envelope);
    let query = |ip: IpAddr| SpfQuery::mail_from(ip, &identity, &provider_domain);

    let evaluator = Evaluator::new(resolver.clone());
    let queries: Vec<SpfQuery> = provider.egress_ips.iter().map(|ip| query(*ip)).collect();
    let probe_query = query(PROBE_IP);
    let (evaluations, tree, discovery, provider_keys) = futures::join!(
        futures::future::join_all(queries.iter().map(|q| evaluator.check_host(q))),
        evaluator.check_host(&probe_query),
        dmarc::discover(resolver, &from),
        fetch_provider_keys(resolver, &provider.dkim_selectors),
    );

    let (dmarc, mode, adkim) = dmarc_report(&discovery, &envelope, &from);
    // The provider signs as the From domain (docs/design.md §12).
    let dkim = if provider.dkim_selectors.is_empty() {
        None
    } else {
        Some(check_domain(resolver, &provider_keys, &from, &from, adkim).await)
    };
    let mut spf = spf_report(&tree, &evaluations, &provider_domain);
    authoritative_vantage(resolver, &envelope, &tree.trace.tree, &mut spf).await;
    // A pure lint: the type-99 answer never reaches the evaluation or the verdict.
    if tree.trace.tree.result == SpfResult::None
        && let Some(warning) = type99_only(resolver, &envelope).await
    {
        spf.warnings.push(warning);
    }
    let alignment = domain_alignment(&envelope, &from, mode);
    let spf_verdict = decide_verdict(&envelope, &from, &spf.results, alignment, mode);
    let (verdict, aligned_by) = combine(
        sender.required,
        &spf_verdict,
        dkim.as_ref().map(|d| &d.verdict),
    );

    let mut provider_tree = None;
    let mut suggested_record = None;
    let root = &tree.trace.tree;
    if !spf.provider_include_reachable && root.result != SpfResult::Temperror {
        if root.record.is_none() && root.result == SpfResult::Permerror {
            spf.warnings.push(format!(
                "{envelope} publishes more than one SPF record: merge them into one, then add \
                 include:{provider_domain}"
            ));
        } else {
            let provider_query = SpfQuery {
                domain: provider_domain.clone(),
                ..query(PROBE_IP)
            };
            let provider_outcome = evaluator.check_host(&provider_query).await;
            // The root's own count; the include that will lead to it is counted by the
            // suggestion.
            let provider_lookups = provider_outcome.trace.lookups;
            suggested_record = Some(suggest_record(
                root.record.as_deref(),
                &provider_domain,
                tree.trace.lookups,
                provider_lookups,
            ));
            provider_tree = Some(provider_outcome);
        }
    }

    CheckDetail {
        check: SenderCheck {
            address: sender.address.clone(),
            envelope_domain: envelope,
            verdict,
            aligned_by,
            spf_verdict,
            spf,
            dmarc,
            suggested_record,
            dkim,
        },
        tree: Some(tree),
        evaluations,
        provider_tree,
        dmarc: Some(discovery),
    }
}

/// Asks the envelope domain's authoritative servers for its SPF record (docs/design.md §6):
/// their TTL replaces the resolver's, a disagreement becomes a warning, the verdict stays the
/// resolver's. Skipped when the resolver itself gave no answer (`root` is the evaluation of
/// the envelope domain): a temporary failure is no verdict, whatever the authority says.
async fn authoritative_vantage<D: Dns>(
    resolver: &D,
    envelope: &str,
    root: &Node,
    spf: &mut SpfReport,
) {
    if root.result == SpfResult::Temperror && root.record.is_none() {
        return;
    }
    let authority = resolver.authoritative_txt(envelope).await;
    if authority == Authority::NotAsked {
        return;
    }
    // Answered from the cache: the evaluation has just asked.
    let Ok(answer) = resolver.txt(envelope).await else {
        return;
    };
    let outcome = vantage::compare(envelope, &answer, spf.record_ttl, authority);
    spf.record_ttl = outcome.ttl;
    spf.authority = outcome.report;
    spf.warnings.extend(outcome.warning);
}

/// The SPF part of the report from the probe evaluation (whole tree) and the per-address ones.
fn spf_report(tree: &SpfOutcome, evaluations: &[SpfOutcome], provider_domain: &str) -> SpfReport {
    let root = &tree.trace.tree;
    let results = evaluations
        .iter()
        .map(|outcome| IpResult {
            ip: outcome.trace.ip,
            result: outcome.result,
        })
        .collect();
    let provider_include_reachable = std::iter::once(tree)
        .chain(evaluations)
        .any(|outcome| tree_reaches(&outcome.trace.tree, provider_domain));
    let worst_case = tree.trace.lookups;
    let mut warnings = Vec::new();
    if let Some(text) = &root.record
        && let Ok(record) = parse_record(text)
    {
        let known = (worst_case <= MAX_LOOKUPS).then_some(worst_case);
        warnings.extend(lint(text, &record, known));
    }
    warnings.extend(nested_duplicates(root, &warnings));
    // Receivers see the egress addresses, not the probe: the worst of those evaluations.
    if let Some(warning) = evaluations
        .iter()
        .filter(|outcome| strict_void_lint(&outcome.trace).is_some())
        .max_by_key(|outcome| outcome.trace.void_lookups_strict)
        .and_then(|outcome| strict_void_lint(&outcome.trace))
    {
        warnings.push(warning);
    }
    if worst_case > MAX_LOOKUPS {
        warnings.push(format!(
            "the record needs more than {MAX_LOOKUPS} DNS lookups: receivers answer permerror \
             for any address it does not match early"
        ));
    } else if root.result == SpfResult::Permerror
        && let Some(error) = &root.error
    {
        warnings.push(format!("permerror: {error}"));
    }
    SpfReport {
        record: root.record.clone(),
        record_ttl: root.record_ttl,
        results,
        lookups: evaluations
            .iter()
            .map(|o| o.trace.lookups)
            .max()
            .unwrap_or(0),
        void_lookups: evaluations
            .iter()
            .map(|o| o.trace.void_lookups)
            .max()
            .unwrap_or(0),
        provider_include_reachable,
        warnings,
        authority: None,
    }
}

/// Includes evaluated more than once across the whole tree (each costs a lookup), except
/// those the record's own lint already named.
fn nested_duplicates(root: &Node, already: &[String]) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for node in root.walk().into_iter().skip(1) {
        if node.kind != NodeKind::Include {
            continue;
        }
        let domain = normalize_domain(&node.domain);
        match counts.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, n)) => *n += 1,
            None => counts.push((domain, 1)),
        }
    }
    counts
        .into_iter()
        .filter(|(domain, n)| {
            *n > 1
                && !already
                    .iter()
                    .any(|w| w.contains(&format!("include:{domain} ")))
        })
        .map(|(domain, n)| {
            format!(
                "include:{domain} is evaluated {n} times across the include tree; each costs a \
                 DNS lookup"
            )
        })
        .collect()
}

/// The DMARC part of the report and the `aspf` and `adkim` modes alignment is judged under
/// (`None` when a DNS failure left them unknown). Without a usable policy, the default
/// (relaxed) applies.
fn dmarc_report(
    discovery: &Discovery,
    envelope: &str,
    from: &str,
) -> (DmarcReport, Option<AlignmentMode>, Option<AlignmentMode>) {
    let mut report = DmarcReport::default();
    let mode = match discovery {
        Discovery::Found {
            policy_domain,
            text,
            record,
            ..
        } => {
            report.record = Some(text.clone());
            report.policy_domain = Some(policy_domain.clone());
            report.p = record.p.map(|p| p.as_str().to_string());
            report.sp = record.sp.map(|p| p.as_str().to_string());
            report.aspf = record.aspf.as_char();
            report.adkim = record.adkim.as_char();
            report.warnings = record.warnings.clone();
            Some(record.aspf)
        }
        Discovery::NotFound => Some(AlignmentMode::Relaxed),
        Discovery::Multiple { policy_domain } => {
            report.policy_domain = Some(policy_domain.clone());
            report.warnings.push(format!(
                "_dmarc.{policy_domain} holds more than one DMARC record: receivers apply no policy"
            ));
            Some(AlignmentMode::Relaxed)
        }
        Discovery::Invalid {
            policy_domain,
            text,
            error,
        } => {
            report.record = Some(text.clone());
            report.policy_domain = Some(policy_domain.clone());
            report
                .warnings
                .push(format!("{error}: receivers apply no policy"));
            Some(AlignmentMode::Relaxed)
        }
        Discovery::TempError { name, message } => {
            report
                .warnings
                .push(format!("looking up {name} failed: {message}"));
            None
        }
    };
    report.envelope_aligned = domain_alignment(envelope, from, mode) == DomainAlignment::Aligned;
    let adkim = match discovery {
        Discovery::Found { record, .. } => Some(record.adkim),
        _ => mode,
    };
    (report, mode, adkim)
}

#[cfg(test)]
mod tests {
    use super::mail_from;

    #[test]
    fn mail_from_keeps_the_local_part() {
        assert_eq!(
            mail_from("support@customer.example", "bounce.customer.example"),
            "support@bounce.customer.example"
        );
        assert_eq!(
            mail_from("@x", "customer.example"),
            "postmaster@customer.example"
        );
    }
}
