//! SPF (RFC 7208): the record parser, the macro expander, `check_host()` with a trace, lints,
//! and the one edit the operator suggests (adding the provider include).
//!
//! ```text
//! let evaluator = Evaluator::new(resolver);
//! let outcome = evaluator.check_host(&SpfQuery::for_domain(ip, "customer.example")).await;
//! ```

pub mod edit;
pub mod eval;
pub mod lints;
pub mod macros;
pub mod record;
pub mod trace;
mod write;

pub use eval::{Evaluator, MAX_LOOKUPS, MAX_VOID_LOOKUPS, SpfQuery, check_domain};
pub use record::{ParseError, Record, parse_record};
pub use trace::{MatchedTerm, Node, NodeKind, SpfOutcome, TermTrace, Trace};

/// The result of `check_host()` (RFC 7208 §2.6). Serialized and displayed as the RFC
/// writes it: `pass`, `permerror`, ...
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

impl SpfResult {
    /// Every result, in the order of RFC 7208 §2.6.
    pub const ALL: [SpfResult; 7] = [
        SpfResult::None,
        SpfResult::Neutral,
        SpfResult::Pass,
        SpfResult::Fail,
        SpfResult::Softfail,
        SpfResult::Temperror,
        SpfResult::Permerror,
    ];

    /// The result's name as RFC 7208 writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::None => "none",
            SpfResult::Neutral => "neutral",
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::Softfail => "softfail",
            SpfResult::Temperror => "temperror",
            SpfResult::Permerror => "permerror",
        }
    }
}

impl std::fmt::Display for SpfResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::SpfResult;

    #[test]
    fn names_serialize_and_display_alike() {
        for result in SpfResult::ALL {
            let json = serde_json::to_string(&result).expect("serializes");
            assert_eq!(json, format!("\"{}\"", result.as_str()));
            assert_eq!(result.to_string(), result.as_str());
        }
    }
}
