//! What an evaluation returns: the result, the explanation, and the trace of how it was
//! reached (terms evaluated, the matching term, the include tree, lookups and voids used).

use std::net::IpAddr;

use serde::Serialize;

use super::SpfResult;

/// What `check_host()` returned.
#[derive(Clone, Debug, Serialize)]
pub struct SpfOutcome {
    pub result: SpfResult,
    /// The `exp=` text for a `fail`, when the domain publishes one.
    pub explanation: Option<String>,
    pub trace: Trace,
}

/// How the evaluation went.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    /// The sender checked (`s` macro).
    pub sender: String,
    /// The client address as evaluated.
    pub ip: IpAddr,
    /// DNS-querying terms used, of 10.
    pub lookups: u32,
    /// Void lookups used, of 2.
    pub void_lookups: u32,
    /// Void lookups counted the strict way: `void_lookups` plus empty A/AAAA answers for `mx`
    /// hosts and `ptr` names, which some receivers count too (design §6). Informational: the
    /// result follows `void_lookups`.
    pub void_lookups_strict: u32,
    /// The directive that decided the result, if one matched.
    pub matched: Option<MatchedTerm>,
    /// Every term evaluated, in order, across includes and redirects.
    pub terms: Vec<TermTrace>,
    /// The evaluated domain, its record, and each include or redirect below it.
    pub tree: Node,
}

/// The directive that matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchedTerm {
    pub domain: String,
    pub term: String,
}

/// One term evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TermTrace {
    /// The domain whose record holds the term.
    pub domain: String,
    pub term: String,
    /// `match`, `no-match`, `temperror` or `permerror`.
    pub outcome: &'static str,
    /// 0 for the top record, 1 inside its includes, and so on.
    pub depth: u32,
}

/// Why a domain was evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Root,
    Include,
    Redirect,
}

/// One domain of the include tree.
#[derive(Clone, Debug, Serialize)]
pub struct Node {
    pub kind: NodeKind,
    pub domain: String,
    /// The selected SPF record, when one was found.
    pub record: Option<String>,
    /// TTL of the TXT answer that held the record.
    pub record_ttl: Option<u32>,
    pub result: SpfResult,
    /// DNS-querying terms used while evaluating this domain, its includes and redirects, and
    /// the include or redirect that led here.
    pub lookups: u32,
    /// Why the result is an error or `none`, in a sentence.
    pub error: Option<String>,
    pub children: Vec<Node>,
}

impl Node {
    /// Every node of the tree, depth first, this one first.
    pub fn walk(&self) -> Vec<&Node> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.walk());
        }
        out
    }
}
