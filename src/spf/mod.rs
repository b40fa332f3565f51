//! SPF (RFC 7208): the record parser, the macro expander, `check_host()` with a trace, and lints.
//!
//! ```text
//! let evaluator = Evaluator::new(resolver);
//! let outcome = evaluator.check_host(&SpfQuery::for_domain(ip, "customer.example")).await;
//! ```

pub mod eval;
pub mod lints;
pub mod macros;
pub mod record;
pub mod report;

pub use crate::alignment::SpfResult;
pub use eval::{
    Evaluator, MAX_LOOKUPS, MAX_VOID_LOOKUPS, MatchedTerm, Node, NodeKind, SpfOutcome, SpfQuery,
    TermTrace, Trace, check_domain,
};
pub use record::{ParseError, Record, parse_record};

/// The result's name as RFC 7208 writes it (`pass`, `permerror`, ...).
pub fn result_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::None => "none",
        SpfResult::Neutral => "neutral",
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::Softfail => "softfail",
        SpfResult::Temperror => "temperror",
        SpfResult::Permerror => "permerror",
    }
}

/// Parses a result name, ignoring case.
pub fn parse_result(name: &str) -> Option<SpfResult> {
    Some(match name.to_ascii_lowercase().as_str() {
        "none" => SpfResult::None,
        "neutral" => SpfResult::Neutral,
        "pass" => SpfResult::Pass,
        "fail" => SpfResult::Fail,
        "softfail" => SpfResult::Softfail,
        "temperror" => SpfResult::Temperror,
        "permerror" => SpfResult::Permerror,
        _ => return None,
    })
}

/// Serializes a result as its lower-case name.
pub fn serialize_result<S: serde::Serializer>(
    result: &SpfResult,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(result_name(*result))
}
