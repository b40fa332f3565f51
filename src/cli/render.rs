//! Every person-readable report: the `check` explanation, the `spf check --output text`
//! evaluation and the `what-if` table.

use std::fmt::Write as _;

use crate::alignment::{
    AlignmentPath, AuthorityReport, CheckDetail, DomainAlignment, Verdict, domain_alignment,
    mail_from,
};
use crate::dkim::DkimReport;
use crate::dmarc::{self, AlignmentMode, Discovery};
use crate::names::address_domain;
use crate::spf::{MAX_LOOKUPS, MAX_VOID_LOOKUPS, Node, NodeKind, SpfOutcome, SpfResult};

/// The include tree of the worst-case evaluation, one line per domain, indented by depth:
/// `include:_spf.example.net  2 lookups  "v=spf1 ..."`. It shows no SPF result: the walk
/// is for an address no record matches, only its shape and counts matter.
fn include_tree(node: &Node, depth: usize, out: &mut String) {
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
        include_tree(child, depth + 1, out);
    }
}

/// A person's view of one check: the include tree with lookup counts, the result per egress
/// address, DMARC, the verdict and the suggested record.
pub fn check(detail: &CheckDetail, provider_domain: &str) -> String {
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
    if let Some(authority) = &spf.authority {
        authority_line(authority, &mut out);
    }
    if let Some(tree) = &detail.tree {
        let worst = tree.trace.lookups;
        let _ = writeln!(
            out,
            "  include tree (worst case {} of {MAX_LOOKUPS} DNS lookups):",
            if worst > MAX_LOOKUPS {
                format!("more than {MAX_LOOKUPS}")
            } else {
                worst.to_string()
            }
        );
        let mut tree_text = String::new();
        include_tree(&tree.trace.tree, 1, &mut tree_text);
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
        // The strict count (design §6) is shown only where it differs.
        let strict = if trace.void_lookups_strict == trace.void_lookups {
            String::new()
        } else {
            format!(
                ", {} counting mx/ptr address answers",
                trace.void_lookups_strict
            )
        };
        let _ = writeln!(
            out,
            "  {:width$}  {:9}  {why}  ({} of {MAX_LOOKUPS} lookups, {} void{strict})",
            trace.ip.to_string(),
            outcome.result.as_str(),
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
            "  p={}  sp={}  aspf={}  adkim={}",
            policy(&dmarc.p),
            policy(&dmarc.sp),
            dmarc.aspf,
            dmarc.adkim
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

    dkim_section(check.dkim.as_ref(), &mut out);

    out.push('\n');
    match (&check.verdict, check.aligned_by) {
        (Verdict::Aligned, Some(path)) => {
            let held = match path {
                AlignmentPath::Spf => "SPF",
                AlignmentPath::Dkim => "DKIM",
                AlignmentPath::SpfAndDkim => "SPF and DKIM",
            };
            let _ = writeln!(out, "Verdict: Aligned (through {held})");
        }
        (Verdict::Aligned, None) => out.push_str("Verdict: Aligned\n"),
        (Verdict::Unaligned { reason, message }, _) => {
            let _ = writeln!(out, "Verdict: Unaligned ({}): {message}", reason.as_str());
        }
        (Verdict::TemporaryFailure { message }, _) => {
            let _ = writeln!(out, "Verdict: TemporaryFailure: {message}");
        }
    }
    if let Some(suggested) = &check.suggested_record {
        let _ = writeln!(
            out,
            "\nSuggested record for {} ({} of {MAX_LOOKUPS} DNS lookups):\n  {}",
            check.envelope_domain, suggested.lookups, suggested.record
        );
        if let Some(warning) = &suggested.warning {
            let _ = writeln!(out, "  warning: {warning}");
        }
    }
    out
}

/// What the envelope domain's authoritative servers answered (docs/design.md §6).
fn authority_line(authority: &AuthorityReport, out: &mut String) {
    let _ = match authority {
        AuthorityReport::Answered {
            server,
            records,
            ttl,
            agrees,
        } => {
            let answer = match records.as_slice() {
                [] => "no SPF record".to_string(),
                records => records
                    .iter()
                    .map(|r| format!("\"{}\"", r.escape_debug()))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let ttl = ttl.map(|t| format!(" (TTL {t} s)")).unwrap_or_default();
            let verdict = if *agrees {
                "agrees with the resolver"
            } else {
                "split view: the resolver answers otherwise; the verdict follows the resolver"
            };
            writeln!(
                out,
                "  authority: {server} answers {answer}{ttl}: {verdict}"
            )
        }
        AuthorityReport::Unreachable { reason } => writeln!(
            out,
            "  authority: unreachable ({reason}); the resolver's answer and largest TTL are used"
        ),
    };
}

/// The DKIM path: the state, then one line per provider selector with the record found.
fn dkim_section(dkim: Option<&DkimReport>, out: &mut String) {
    out.push_str("\nDKIM\n");
    let Some(dkim) = dkim else {
        out.push_str("  off: the provider configures no DKIM selector\n");
        return;
    };
    let _ = writeln!(
        out,
        "  signing domain {}: {} ({})",
        dkim.signing_domain,
        dkim.verdict.state.as_str(),
        dkim.verdict.message
    );
    for selector in &dkim.selectors {
        let _ = writeln!(
            out,
            "  {}  {}: {}",
            selector.name,
            selector.outcome.as_str(),
            selector.message
        );
        if let Some(record) = &selector.record {
            let _ = writeln!(out, "    record:  \"{}\"", record.escape_debug());
        }
        for target in &selector.cname_chain {
            let _ = writeln!(out, "    CNAME -> {target}");
        }
        for warning in &selector.warnings {
            let _ = writeln!(out, "    warning: {warning}");
        }
    }
}

/// The include tree, one line per domain, indented by depth:
/// `include _spf.example.net: pass (2 lookups) "v=spf1 ..."`.
fn spf_node(node: &Node, depth: usize, out: &mut String) {
    let kind = match node.kind {
        NodeKind::Root => "",
        NodeKind::Include => "include ",
        NodeKind::Redirect => "redirect ",
    };
    let lookups = if node.lookups == 1 {
        "lookup"
    } else {
        "lookups"
    };
    let _ = write!(
        out,
        "{:indent$}{kind}{}: {} ({} {lookups})",
        "",
        node.domain,
        node.result.as_str(),
        node.lookups,
        indent = depth * 2
    );
    if let Some(record) = &node.record {
        let _ = write!(out, " \"{}\"", record.escape_debug());
    }
    if let Some(error) = &node.error {
        let _ = write!(out, " [{error}]");
    }
    out.push('\n');
    for child in &node.children {
        spf_node(child, depth + 1, out);
    }
}

/// The whole outcome as text: result, explanation, counters, tree, and terms.
pub fn spf_outcome(outcome: &SpfOutcome) -> String {
    let trace = &outcome.trace;
    let mut out = String::new();
    let _ = writeln!(out, "result:       {}", outcome.result.as_str());
    let _ = writeln!(
        out,
        "explanation:  {}",
        outcome.explanation.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(out, "sender:       {}", trace.sender);
    let _ = writeln!(out, "client:       {}", trace.ip);
    let _ = writeln!(out, "lookups:      {} of {MAX_LOOKUPS}", trace.lookups);
    let _ = writeln!(
        out,
        "void lookups: {} of {MAX_VOID_LOOKUPS} ({} counting mx/ptr address answers)",
        trace.void_lookups, trace.void_lookups_strict
    );
    match &trace.matched {
        Some(m) => {
            let _ = writeln!(out, "matched:      {} (in {})", m.term, m.domain);
        }
        None => {
            let _ = writeln!(out, "matched:      no term");
        }
    }
    out.push_str("tree:\n");
    let mut tree = String::new();
    spf_node(&trace.tree, 0, &mut tree);
    for line in tree.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.push_str("terms:\n");
    for term in &trace.terms {
        let _ = writeln!(
            out,
            "  {:indent$}{} {}: {}",
            "",
            term.domain,
            term.term,
            term.outcome,
            indent = term.depth as usize * 2
        );
    }
    out
}

/// The `what-if` table: one line per listed sender, the breaking ones first, and a summary.
pub fn what_if(report: &super::what_if::Report) -> String {
    let mut out = String::new();
    let state = |o: &super::what_if::Outlook| match o.reason {
        Some(reason) => format!("{} ({reason})", o.state),
        None => o.state.to_owned(),
    };
    let header = [
        "NAMESPACE",
        "TENANT",
        "SENDER",
        "CHANGE",
        "NOW",
        "PROPOSED",
        "LOOKUPS",
    ];
    let lines: Vec<[String; 7]> = report
        .rows
        .iter()
        .map(|row| {
            [
                row.namespace.clone(),
                row.tenant.clone(),
                row.address.clone(),
                row.change.as_str().to_owned(),
                state(&row.now),
                state(&row.proposed),
                format!(
                    "{} -> {} (worst case {} -> {})",
                    row.now.lookups,
                    row.proposed.lookups,
                    row.now.worst_case_lookups,
                    row.proposed.worst_case_lookups
                ),
            ]
        })
        .collect();
    if !lines.is_empty() {
        let mut widths = header.map(str::len);
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.len());
            }
        }
        let mut write_line = |cells: &[&str]| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    text.push_str(cell);
                } else {
                    let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        write_line(&header);
        for line in &lines {
            let cells: Vec<&str> = line.iter().map(String::as_str).collect();
            write_line(&cells);
        }
        out.push('\n');
    }
    let count =
        |change: super::what_if::Change| report.rows.iter().filter(|r| r.change == change).count();
    use super::what_if::Change;
    let _ = writeln!(
        out,
        "what-if: {} tenants ({} senders, {} suspended tenants skipped) checked in {:.1} s: \
         {} tenants would break ({} senders no longer aligned, {} over {MAX_LOOKUPS} lookups), \
         {} senders fixed, {} changed otherwise, {} reach {} of {MAX_LOOKUPS} lookups",
        report.tenants,
        report.senders,
        report.suspended,
        report.elapsed_seconds,
        report.tenants_breaking,
        count(Change::Breaks),
        count(Change::OverLimit),
        count(Change::Fixed),
        count(Change::Changes),
        count(Change::NearLimit),
        MAX_LOOKUPS - 1,
    );
    out
}
