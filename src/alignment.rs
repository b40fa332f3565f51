//! Alignment analysis: given the provider and one sender, the verdict of design §5.
//!
//! The types here are the contract between the SPF/DMARC engine and the controller. The
//! decisions are pure functions ([`decide_verdict`], [`suggest_record`]); the DNS facts they
//! decide on are gathered by `check_sender`.
//!
//! # Choices
//!
//! - **MAIL FROM.** SPF is evaluated with the identity `<local part of the From address>@<envelope
//!   domain>`: when the envelope domain is the address's own domain that is exactly the MAIL
//!   FROM the provider's SMTP sends, and for a separate bounce domain it is the closest guess we
//!   have (the provider's real local part is often a per-message VERP token). Only records that
//!   use the `%{s}` or `%{l}` macros can see the difference. The HELO name (the `%{h}` macro)
//!   is the provider's SPF domain, the closest public name of its SMTP servers we know.
//! - **Include tree.** Besides one evaluation per egress address, the envelope domain is
//!   evaluated once for [`PROBE_IP`], an address no record is meant to match, so every
//!   reachable term is walked: that gives the whole include tree, the worst-case lookup count
//!   the lints and the suggestion use, and whether the provider include is reachable at all.
//! - **Suggested record.** `include:<provider>` goes right before the first `all` term (so it is
//!   evaluated before the catch-all answers); with no `all` but a `redirect=`, right before the
//!   `redirect=` (mechanisms are evaluated before the redirect); with neither, after the last
//!   mechanism. Nothing is removed or reordered and the rest of the text is kept byte for byte.
//!   A domain without any SPF record gets `v=spf1 include:<provider> ~all`: `~all` rather than
//!   `-all` because we do not know the tenant's other senders, and a soft fail still fails
//!   DMARC for everyone else, which is what protects the domain.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::dmarc::{self, AlignmentMode, Discovery, normalize_domain};
use crate::dns::{Dns, DnsError};
use crate::spf::lints::{lint, tree_reaches, type99_only};
use crate::spf::{Evaluator, Node, NodeKind, SpfOutcome, SpfQuery, parse_record, result_name};

/// RFC 7208 §4.6.4: DNS-querying terms allowed in one evaluation.
pub const LOOKUP_LIMIT: u32 = crate::spf::MAX_LOOKUPS;
/// Design §6: a record longer than this risks truncated answers.
pub const RECORD_SIZE_LIMIT: usize = crate::spf::lints::MAX_RECORD_BYTES;

/// The provider's side of the check (operator-wide configuration, design §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// The include customers add, e.g. `spf.mailing.provider.example`.
    pub spf_domain: String,
    /// Every SMTP source address of the provider (IPv4 and IPv6).
    pub egress_ips: Vec<IpAddr>,
}

/// One sender of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderInput {
    /// The From address, e.g. `support@customer.example`.
    pub address: String,
    /// The MAIL FROM domain; the address's domain when `None`.
    pub envelope_domain: Option<String>,
}

/// SPF result of RFC 7208 §2.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfResult {
    None,
    Neutral,
    Pass,
    Fail,
    Softfail,
    Temperror,
    Permerror,
}

impl std::fmt::Display for SpfResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::spf::result_name(*self))
    }
}

/// Why a sender is definitively unaligned.
///
/// The variant names are CamelCase status reasons (see [`UnalignedReason::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum UnalignedReason {
    /// The envelope domain publishes no SPF record.
    NoSpfRecord,
    /// The record is malformed or exceeds a limit (permerror).
    SpfPermError,
    /// The record does not authorize at least one egress address.
    ProviderNotAuthorized,
    /// The envelope domain does not align with the From domain under DMARC `aspf`.
    DomainNotAligned,
}

impl UnalignedReason {
    /// The reason as a CamelCase constant, for conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            UnalignedReason::NoSpfRecord => "NoSpfRecord",
            UnalignedReason::SpfPermError => "SpfPermError",
            UnalignedReason::ProviderNotAuthorized => "ProviderNotAuthorized",
            UnalignedReason::DomainNotAligned => "DomainNotAligned",
        }
    }
}

/// One check's verdict for one sender (design §5).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state")]
pub enum Verdict {
    Aligned,
    Unaligned {
        reason: UnalignedReason,
        message: String,
    },
    TemporaryFailure {
        message: String,
    },
}

/// The SPF result for one provider egress address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IpResult {
    pub ip: IpAddr,
    pub result: SpfResult,
}

/// What the SPF evaluation of the envelope domain found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpfReport {
    /// The selected `v=spf1` record, verbatim.
    pub record: Option<String>,
    /// TTL in seconds of the TXT answer holding the record.
    pub record_ttl: Option<u32>,
    pub results: Vec<IpResult>,
    /// DNS-querying terms used, of 10 (the maximum over the egress addresses).
    pub lookups: u32,
    /// Void lookups used, of 2.
    pub void_lookups: u32,
    /// Whether `include:<provider spf domain>` is reachable in the include/redirect tree.
    pub provider_include_reachable: bool,
    /// Lints of design §6, one sentence each.
    pub warnings: Vec<String>,
}

/// What DMARC discovery found for the From domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DmarcReport {
    pub record: Option<String>,
    /// The domain the record was found at (`_dmarc.` stripped).
    pub policy_domain: Option<String>,
    pub p: Option<String>,
    pub sp: Option<String>,
    /// `r` (relaxed, the default) or `s` (strict).
    pub aspf: char,
    /// Whether the envelope domain aligns with the From domain under `aspf`.
    pub envelope_aligned: bool,
    /// Unknown or obsolete tags, verbatim.
    pub warnings: Vec<String>,
}

/// The tenant's record with the provider include inserted (design §6).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SuggestedRecord {
    pub record: String,
    /// DNS-querying terms the suggested record would use.
    pub lookups: u32,
    /// Set when the change would exceed 10 lookups.
    pub warning: Option<String>,
}

/// Everything one check found for one sender.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SenderCheck {
    pub address: String,
    pub envelope_domain: String,
    pub verdict: Verdict,
    pub spf: SpfReport,
    pub dmarc: DmarcReport,
    /// Present when the provider include is missing from the tree.
    pub suggested_record: Option<SuggestedRecord>,
}

/// Whether the envelope domain aligns with the From domain, as far as DNS told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainAlignment {
    Aligned,
    NotAligned,
    /// The DMARC policy could not be fetched and the answer depends on its `aspf`.
    Unknown,
}

/// The domain of an email address: the text after the last `@` (RFC 5321 local parts may
/// hold a quoted `@`). `None` when there is no `@` or nothing after it.
pub fn address_domain(address: &str) -> Option<&str> {
    match address.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => Some(domain),
        _ => None,
    }
}

/// The MAIL FROM identity SPF is evaluated with (see the module documentation).
pub fn mail_from(address: &str, envelope_domain: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, _)) if !local.is_empty() => format!("{local}@{envelope_domain}"),
        _ => format!("postmaster@{envelope_domain}"),
    }
}

/// Alignment of `envelope` with `from` when the DMARC `aspf` mode is `mode`, or unknown
/// (`None`) because the policy could not be fetched.
pub fn domain_alignment(
    envelope: &str,
    from: &str,
    mode: Option<AlignmentMode>,
) -> DomainAlignment {
    let check = |m| crate::dmarc::domains_align(envelope, from, m);
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

/// The verdict of design §5 from the per-address SPF results and the domain alignment.
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
        let mut outcomes: Vec<&str> = denied.iter().map(|r| result_name(r.result)).collect();
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

/// Whether a term of an SPF record is the `all` mechanism (any qualifier, any case).
fn is_all_term(word: &str) -> bool {
    let bare = word.trim_start_matches(['+', '-', '~', '?']);
    bare.eq_ignore_ascii_case("all") && word.len() - bare.len() <= 1
}

/// Whether a term is a modifier (`name=value`), per RFC 7208 §4.6.1.
fn is_modifier(word: &str) -> bool {
    let name_len = word
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        .count();
    name_len > 0
        && word.as_bytes().get(name_len) == Some(&b'=')
        && word.as_bytes()[0].is_ascii_alphabetic()
}

/// The byte offsets and text of each space-separated term, the version included.
fn terms_with_offsets(record: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in record.char_indices() {
        match (c == ' ', start) {
            (true, Some(s)) => {
                out.push((s, &record[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &record[s..]));
    }
    out
}

/// Inserts `include:<provider>` into `record` (see the module documentation for where).
pub fn insert_include(record: &str, provider_domain: &str) -> String {
    let include = format!("include:{provider_domain}");
    let terms = terms_with_offsets(record);
    let body = terms.iter().skip(1);
    let before = body
        .clone()
        .find(|(_, t)| is_all_term(t))
        .or_else(|| {
            body.clone().find(|(_, t)| {
                t.get(..9)
                    .is_some_and(|p| p.eq_ignore_ascii_case("redirect="))
            })
        })
        .map(|(offset, _)| *offset);
    match before {
        Some(offset) => format!("{}{include} {}", &record[..offset], &record[offset..]),
        None => {
            // After the last mechanism, or after the version when there is none.
            let after = body
                .rev()
                .find(|(_, t)| !is_modifier(t))
                .or(terms.first())
                .map(|(offset, t)| offset + t.len());
            match after {
                Some(end) => format!("{} {include}{}", &record[..end], &record[end..]),
                None => format!("v=spf1 {include} ~all"),
            }
        }
    }
}

/// The fix of design §6: the tenant's record (or none) with the provider include added.
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
    let warning = (lookups > LOOKUP_LIMIT).then(|| {
        format!(
            "this record needs {lookups} DNS lookups, over the limit of {LOOKUP_LIMIT}: receivers \
             would answer permerror; replace includes you no longer need, or mechanisms such \
             as a and mx, with ip4/ip6 ranges first"
        )
    });
    let record_len = record.len();
    let warning = match warning {
        None if record_len > RECORD_SIZE_LIMIT => Some(format!(
            "this record is {record_len} bytes, over {RECORD_SIZE_LIMIT}: answers may be truncated"
        )),
        other => other,
    };
    SuggestedRecord {
        record,
        lookups,
        warning,
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

/// One check of one sender (design §5): SPF for every egress address, DMARC, the verdict and,
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
            spf: SpfReport::default(),
            dmarc: DmarcReport {
                aspf: 'r',
                ..DmarcReport::default()
            },
            suggested_record: None,
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
    let (evaluations, tree, discovery) = futures::join!(
        futures::future::join_all(queries.iter().map(|q| evaluator.check_host(q))),
        evaluator.check_host(&probe_query),
        dmarc::discover(resolver, &from),
    );

    let (dmarc, mode) = dmarc_report(&discovery, &envelope, &from);
    let mut spf = spf_report(&tree, &evaluations, &provider_domain);
    // A pure lint: the type-99 answer never reaches the evaluation or the verdict.
    if tree.trace.tree.result == SpfResult::None
        && let Some(warning) = type99_only(resolver, &envelope).await
    {
        spf.warnings.push(warning);
    }
    let alignment = domain_alignment(&envelope, &from, mode);
    let verdict = decide_verdict(&envelope, &from, &spf.results, alignment, mode);

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
            spf,
            dmarc,
            suggested_record,
        },
        tree: Some(tree),
        evaluations,
        provider_tree,
        dmarc: Some(discovery),
    }
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
        let known = (worst_case <= LOOKUP_LIMIT).then_some(worst_case);
        warnings.extend(lint(text, &record, known));
    }
    warnings.extend(nested_duplicates(root, &warnings));
    if worst_case > LOOKUP_LIMIT {
        warnings.push(format!(
            "the record needs more than {LOOKUP_LIMIT} DNS lookups: receivers answer permerror \
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

/// The DMARC part of the report and the `aspf` mode alignment is judged under (`None` when a
/// DNS failure left it unknown). Without a usable policy, the default (relaxed) applies.
fn dmarc_report(
    discovery: &Discovery,
    envelope: &str,
    from: &str,
) -> (DmarcReport, Option<AlignmentMode>) {
    let mut report = DmarcReport {
        aspf: 'r',
        ..DmarcReport::default()
    };
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
    (report, mode)
}

/// Why the provider's SMTP host names did not give a list of egress addresses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The name exists in no A or AAAA record.
    #[error("SMTP host {host} has no A or AAAA record")]
    NoAddress { host: String },
    /// A lookup failed temporarily; the previous list should be kept.
    #[error("resolving SMTP host {host}: {error}")]
    Dns { host: String, error: DnsError },
}

/// The A and AAAA addresses of every host (`--provider-smtp-host`), sorted, without
/// duplicates. Any failure fails the whole list, so a partial list never narrows the check.
pub async fn resolve_egress<D: Dns>(dns: &D, hosts: &[String]) -> Result<Vec<IpAddr>, EgressError> {
    let lookups = hosts.iter().map(|host| async move {
        let (v4, v6) = futures::join!(dns.a(host), dns.aaaa(host));
        let dns_error = |error| EgressError::Dns {
            host: host.clone(),
            error,
        };
        let v4 = v4.map_err(dns_error)?;
        let v6 = v6.map_err(dns_error)?;
        let addresses: Vec<IpAddr> = v4
            .records
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(v6.records.iter().map(|a| IpAddr::V6(*a)))
            .collect();
        if addresses.is_empty() {
            return Err(EgressError::NoAddress { host: host.clone() });
        }
        Ok(addresses)
    });
    let mut all = Vec::new();
    for result in futures::future::join_all(lookups).await {
        all.extend(result?);
    }
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// The include tree of the worst-case evaluation, one line per domain, indented by depth:
/// `include:_spf.example.net  2 lookups  "v=spf1 ..."`. It shows no SPF result: the walk
/// is for an address no record matches, only its shape and counts matter.
fn render_include_tree(node: &Node, depth: usize, out: &mut String) {
    let name = match node.kind {
        NodeKind::Root => node.domain.clone(),
        NodeKind::Include => format!("include:{}", node.domain),
        NodeKind::Redirect => format!("redirect={}", node.domain),
    };
    let unit = if node.lookups == 1 {
        "lookup"
    } else {
        "lookups"
    };
    let _ = write!(
        out,
        "  {:indent$}{name}  {} {unit}",
        "",
        node.lookups,
        indent = depth * 2
    );
    if let Some(record) = &node.record {
        let _ = write!(out, "  \"{}\"", record.escape_debug());
    }
    if node.result != SpfResult::Neutral
        && node.result != SpfResult::Fail
        && node.result != SpfResult::Softfail
        && let Some(error) = &node.error
    {
        let _ = write!(out, "  [{error}]");
    }
    out.push('\n');
    for child in &node.children {
        render_include_tree(child, depth + 1, out);
    }
}

/// A person's view of one check: the include tree with lookup counts, the result per egress
/// address, DMARC, the verdict and the suggested record.
pub fn render_text(detail: &CheckDetail, provider_domain: &str) -> String {
    let check = &detail.check;
    let spf = &check.spf;
    let dmarc = &check.dmarc;
    let mut out = String::new();
    let from = address_domain(&check.address).unwrap_or("");
    let _ = writeln!(out, "From domain:       {from}");
    let identity = mail_from(&check.address, &check.envelope_domain);
    let _ = writeln!(
        out,
        "Envelope domain:   {} (MAIL FROM {identity})",
        check.envelope_domain
    );
    let reach = if spf.provider_include_reachable {
        "reachable"
    } else {
        "missing"
    };
    let _ = writeln!(
        out,
        "Provider include:  include:{provider_domain} ({reach})"
    );

    out.push_str("\nSPF\n");
    match (&spf.record, spf.record_ttl) {
        (Some(record), Some(ttl)) => {
            let _ = writeln!(
                out,
                "  record:  \"{}\" (TTL {ttl} s)",
                record.escape_debug()
            );
        }
        (Some(record), None) => {
            let _ = writeln!(out, "  record:  \"{}\"", record.escape_debug());
        }
        (None, _) => out.push_str("  record:  (none)\n"),
    }
    if let Some(tree) = &detail.tree {
        let worst = tree.trace.lookups;
        let _ = writeln!(
            out,
            "  include tree (worst case {} of {LOOKUP_LIMIT} DNS lookups):",
            if worst > LOOKUP_LIMIT {
                format!("more than {LOOKUP_LIMIT}")
            } else {
                worst.to_string()
            }
        );
        let mut tree_text = String::new();
        render_include_tree(&tree.trace.tree, 1, &mut tree_text);
        out.push_str(&tree_text);
    }
    for warning in &spf.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }

    out.push_str("\nProvider egress addresses\n");
    if detail.evaluations.is_empty() {
        out.push_str("  (none configured)\n");
    }
    let width = detail
        .evaluations
        .iter()
        .map(|o| o.trace.ip.to_string().len())
        .max()
        .unwrap_or(0);
    for outcome in &detail.evaluations {
        let trace = &outcome.trace;
        let why = match (&trace.matched, &trace.tree.error) {
            (Some(m), _) => format!("matched {} in {}", m.term, m.domain),
            (None, Some(error)) => error.clone(),
            (None, None) => "no term matched".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {:9}  {why}  ({} of {LOOKUP_LIMIT} lookups, {} void)",
            trace.ip.to_string(),
            result_name(outcome.result),
            trace.lookups,
            trace.void_lookups,
        );
    }

    out.push_str("\nDMARC\n");
    match (&dmarc.policy_domain, &dmarc.record) {
        (Some(domain), Some(record)) => {
            let _ = writeln!(
                out,
                "  record:  _dmarc.{domain} \"{}\"",
                record.escape_debug()
            );
        }
        _ => {
            let looked = dmarc::discovery_domains(from)
                .iter()
                .map(|d| format!("_dmarc.{d}"))
                .collect::<Vec<_>>()
                .join(" or ");
            let _ = writeln!(out, "  record:  (none at {looked})");
        }
    }
    if dmarc.record.is_some() {
        let policy = |p: &Option<String>| p.clone().unwrap_or_else(|| "-".to_string());
        let _ = writeln!(
            out,
            "  p={}  sp={}  aspf={}",
            policy(&dmarc.p),
            policy(&dmarc.sp),
            dmarc.aspf
        );
    }
    let policy_unknown = matches!(detail.dmarc, Some(Discovery::TempError { .. }));
    let mode = (!policy_unknown).then_some(if dmarc.aspf == 's' {
        AlignmentMode::Strict
    } else {
        AlignmentMode::Relaxed
    });
    let _ = match (domain_alignment(&check.envelope_domain, from, mode), mode) {
        (DomainAlignment::Aligned, Some(mode)) => {
            writeln!(out, "  envelope domain aligns with {from} ({mode})")
        }
        (DomainAlignment::Aligned, None) => {
            writeln!(out, "  envelope domain aligns with {from} (in either mode)")
        }
        (DomainAlignment::NotAligned, Some(mode)) => {
            writeln!(out, "  envelope domain does not align with {from} ({mode})")
        }
        (DomainAlignment::NotAligned, None) => writeln!(
            out,
            "  envelope domain does not align with {from} (in either mode)"
        ),
        (DomainAlignment::Unknown, _) => writeln!(
            out,
            "  alignment with {from} unknown: it holds only if the policy's aspf is relaxed"
        ),
    };
    for warning in &dmarc.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }

    out.push('\n');
    match &check.verdict {
        Verdict::Aligned => out.push_str("Verdict: Aligned\n"),
        Verdict::Unaligned { reason, message } => {
            let _ = writeln!(out, "Verdict: Unaligned ({}): {message}", reason.as_str());
        }
        Verdict::TemporaryFailure { message } => {
            let _ = writeln!(out, "Verdict: TemporaryFailure: {message}");
        }
    }
    if let Some(suggested) = &check.suggested_record {
        let _ = writeln!(
            out,
            "\nSuggested record for {} ({} of {LOOKUP_LIMIT} DNS lookups):\n  {}",
            check.envelope_domain, suggested.lookups, suggested.record
        );
        if let Some(warning) = &suggested.warning {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
    fn addresses_and_mail_from() {
        assert_eq!(
            address_domain("support@customer.example"),
            Some("customer.example")
        );
        assert_eq!(
            address_domain("\"a@b\"@customer.example"),
            Some("customer.example")
        );
        assert_eq!(address_domain("nobody"), None);
        assert_eq!(address_domain("x@"), None);
        assert_eq!(
            mail_from("support@customer.example", "bounce.customer.example"),
            "support@bounce.customer.example"
        );
        assert_eq!(
            mail_from("@x", "customer.example"),
            "postmaster@customer.example"
        );
    }

    const P: &str = "spf.provider.example";

    #[test]
    fn include_goes_before_all() {
        assert_eq!(
            insert_include("v=spf1 mx -all", P),
            "v=spf1 mx include:spf.provider.example -all"
        );
        assert_eq!(
            insert_include("v=spf1 ip4:192.0.2.0/24 ~ALL exp=why.customer.example", P),
            "v=spf1 ip4:192.0.2.0/24 include:spf.provider.example ~ALL exp=why.customer.example"
        );
        // Text after `all` stays where it is.
        assert_eq!(
            insert_include("v=spf1 ?all a", P),
            "v=spf1 include:spf.provider.example ?all a"
        );
    }

    #[test]
    fn include_goes_before_redirect_without_all() {
        assert_eq!(
            insert_include("v=spf1 a redirect=_spf.customer.example", P),
            "v=spf1 a include:spf.provider.example redirect=_spf.customer.example"
        );
        assert_eq!(
            insert_include("v=spf1 redirect=_spf.customer.example", P),
            "v=spf1 include:spf.provider.example redirect=_spf.customer.example"
        );
    }

    #[test]
    fn include_goes_after_the_last_mechanism_otherwise() {
        assert_eq!(
            insert_include("v=spf1 a mx exp=x.customer.example", P),
            "v=spf1 a mx include:spf.provider.example exp=x.customer.example"
        );
        assert_eq!(
            insert_include("v=spf1", P),
            "v=spf1 include:spf.provider.example"
        );
        assert_eq!(
            insert_include("v=spf1  a   mx ", P),
            "v=spf1  a   mx include:spf.provider.example "
        );
    }

    #[test]
    fn nothing_is_removed() {
        for record in [
            "v=spf1 mx -all",
            "v=spf1  a:x.example  ~all  ",
            "v=spf1 redirect=a.example",
            "v=spf1 a exp=e.example",
        ] {
            let suggested = insert_include(record, P);
            let mut rest: Vec<&str> = suggested.split(' ').collect();
            let index = rest
                .iter()
                .position(|t| *t == "include:spf.provider.example")
                .expect("inserted");
            rest.remove(index);
            assert_eq!(rest.join(" "), record, "{suggested}");
        }
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
        let s = suggest_record(Some("v=spf1 a mx -all"), P, 8, 1);
        assert_eq!(s.lookups, 10);
        assert_eq!(s.warning, Option::None);
        let s = suggest_record(Some("v=spf1 a mx -all"), P, 8, 2);
        assert_eq!(s.lookups, 11);
        assert!(s.warning.expect("warns").contains("11 DNS lookups"));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const INCLUDE: &str = "include:spf.provider.example";

        fn record() -> impl Strategy<Value = String> {
            let term = prop_oneof![
                Just("a"),
                Just("mx:mail.customer.example"),
                Just("-all"),
                Just("~ALL"),
                Just("?all"),
                Just("+all"),
                Just("all"),
                Just("redirect=_spf.customer.example"),
                Just("exp=why.customer.example"),
                Just("ip4:192.0.2.0/24"),
                Just("x-custom=1"),
            ];
            (
                proptest::collection::vec((term, 1..3usize), 0..6),
                0..2usize,
            )
                .prop_map(|(terms, trailing)| {
                    let mut text = String::from("v=spf1");
                    for (term, spaces) in terms {
                        text.push_str(&" ".repeat(spaces));
                        text.push_str(term);
                    }
                    text.push_str(&" ".repeat(trailing));
                    text
                })
        }

        proptest! {
            #[test]
            fn insertion_removes_nothing(record in record()) {
                let suggested = insert_include(&record, "spf.provider.example");
                let at = suggested.find(INCLUDE).expect("inserted");
                let before = &suggested[..at];
                let after = &suggested[at + INCLUDE.len()..];
                // The include comes with exactly one separating space of its own.
                let restored = if let Some(rest) = after.strip_prefix(' ') {
                    format!("{before}{rest}")
                } else {
                    format!("{}{after}", before.strip_suffix(' ').unwrap_or(before))
                };
                prop_assert_eq!(restored, record.clone());
                // It is evaluated before any all term.
                let all_at = suggested
                    .split(' ')
                    .position(|t| t.trim_start_matches(['+', '-', '~', '?']).eq_ignore_ascii_case("all"));
                let include_at = suggested.split(' ').position(|t| t == INCLUDE);
                if let (Some(all_at), Some(include_at)) = (all_at, include_at) {
                    prop_assert!(include_at < all_at, "{}", suggested);
                }
            }

            #[test]
            fn insertion_never_panics(text in "\\PC{0,80}") {
                let _ = insert_include(&text, "spf.provider.example");
            }
        }
    }
}
