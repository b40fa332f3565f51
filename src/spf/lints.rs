//! Lints of docs/design.md §6 on an SPF record and its evaluation.

use super::eval::{MAX_LOOKUPS, MAX_VOID_LOOKUPS};
use super::record::{Mechanism, Qualifier, Record, Term, is_spf_record};
use super::trace::{Node, Trace};
use crate::dns::Dns;

/// Records longer than this may not fit a UDP answer.
pub const MAX_RECORD_BYTES: usize = 450;

/// Warnings about `record` (the text as published) and, when known, its evaluated tree.
pub fn lint(text: &str, record: &Record, lookups: Option<u32>) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(lookups) = lookups
        && lookups >= MAX_LOOKUPS - 1
    {
        warnings.push(format!(
            "the record uses {lookups} of {MAX_LOOKUPS} DNS lookups: one more include will break it"
        ));
    }
    let mut seen_all = false;
    let mut text_after_all = false;
    let mut includes: Vec<String> = Vec::new();
    for term in &record.terms {
        if seen_all && !matches!(term, Term::Explanation(_) | Term::Unknown { .. }) {
            text_after_all = true;
        }
        let Term::Directive(d) = term else {
            continue;
        };
        match &d.mechanism {
            Mechanism::All => {
                seen_all = true;
                match d.qualifier {
                    Qualifier::Pass => {
                        warnings.push("+all authorizes every host on the internet".to_string())
                    }
                    Qualifier::Neutral => {
                        warnings.push("?all makes the record assert nothing".to_string())
                    }
                    _ => {}
                }
            }
            Mechanism::Ptr(_) => {
                warnings.push("ptr is slow and discouraged by RFC 7208 §5.5".to_string())
            }
            Mechanism::Include(spec) => {
                let name = spec.to_string().to_ascii_lowercase();
                if includes.contains(&name) {
                    warnings.push(format!("include:{name} appears more than once"));
                } else {
                    includes.push(name);
                }
            }
            _ => {}
        }
    }
    if text_after_all {
        warnings.push("terms after all are never evaluated".to_string());
    }
    if seen_all && record.redirect().is_some() {
        warnings.push("redirect= is ignored because the record has an all term".to_string());
    }
    if text.len() > MAX_RECORD_BYTES {
        warnings.push(format!(
            "the record is {} bytes, over {MAX_RECORD_BYTES}: answers may be truncated",
            text.len()
        ));
    }
    warnings
}

/// The receivers named by the strict-void lint.
pub const STRICT_VOID_RECEIVERS: &str = "pyspf and Mail::SPF";

/// When an evaluation stayed within the void limit as the engine counts, but exceeds it once
/// empty address answers for `mx` hosts and `ptr` names count too: a warning with that count
/// (design §6 "Void lookups of `mx` and `ptr` names"). The result is not changed.
pub fn strict_void_lint(trace: &Trace) -> Option<String> {
    (trace.void_lookups <= MAX_VOID_LOOKUPS && trace.void_lookups_strict > MAX_VOID_LOOKUPS).then(
        || {
            format!(
                "{} void lookups of {MAX_VOID_LOOKUPS} when empty A/AAAA answers for mx hosts \
                 and ptr names count: permerror at receivers that count void address lookups \
                 of mx/ptr names, such as {STRICT_VOID_RECEIVERS}",
                trace.void_lookups_strict
            )
        },
    )
}

/// For a domain whose TXT records hold no SPF record: a warning when it publishes one only as
/// a record of the retired SPF type (99). This asks DNS once; evaluation never uses the answer
/// (RFC 7208 §3.1, §4.4), and a failed lookup gives no warning.
pub async fn type99_only<D: Dns>(dns: &D, domain: &str) -> Option<String> {
    let answer = dns.spf99(domain).await.ok()?;
    answer
        .records
        .iter()
        .any(|record| is_spf_record(record))
        .then(|| {
            "the domain publishes SPF only as a type-99 SPF record, which RFC 7208 §3.1 retired; \
             publish it as TXT"
                .to_string()
        })
}

/// Whether `domain` is included (or redirected to) anywhere in the tree.
pub fn tree_reaches(tree: &Node, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    tree.walk().iter().skip(1).any(|node| {
        node.domain
            .trim_end_matches('.')
            .eq_ignore_ascii_case(domain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spf::parse_record;

    #[test]
    fn flags_common_mistakes() {
        let text = "v=spf1 ptr include:a.example include:a.example +all a redirect=b.example";
        let record = parse_record(text).unwrap();
        let warnings = lint(text, &record, Some(9));
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        let clean = "v=spf1 include:a.example -all";
        assert!(lint(clean, &parse_record(clean).unwrap(), Some(1)).is_empty());
    }
}
