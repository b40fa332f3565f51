//! A person-readable rendering of an evaluation.

use std::fmt::Write as _;

use super::eval::{MAX_LOOKUPS, MAX_VOID_LOOKUPS, Node, NodeKind, SpfOutcome};
use super::result_name;

/// The include tree, one line per domain, indented by depth:
/// `include _spf.example.net: pass (2 lookups) "v=spf1 ..."`.
pub fn render_tree(node: &Node, out: &mut String) {
    render_node(node, 0, out);
}

fn render_node(node: &Node, depth: usize, out: &mut String) {
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
        result_name(node.result),
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
        render_node(child, depth + 1, out);
    }
}

/// The whole outcome as text: result, explanation, counters, tree, and terms.
pub fn render_text(outcome: &SpfOutcome) -> String {
    let trace = &outcome.trace;
    let mut out = String::new();
    let _ = writeln!(out, "result:       {}", result_name(outcome.result));
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
        "void lookups: {} of {MAX_VOID_LOOKUPS}",
        trace.void_lookups
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
    render_tree(&trace.tree, &mut tree);
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
