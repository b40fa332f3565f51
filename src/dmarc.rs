//! DMARC: policy discovery, the tag-list parser, and identifier alignment.
//!
//! # Organizational domain: the public suffix list
//!
//! The organizational domain (used for policy discovery and for relaxed alignment) is computed
//! with the public suffix list compiled into the `psl` crate (RFC 7489 §3.2), not with the
//! DNS tree walk of DMARCbis (RFC 9989 §4.10). Reasons:
//!
//! - It costs no DNS query. The tree walk queries `_dmarc.` at every label of both the From
//!   domain and the envelope domain; across thousands of tenants that multiplies upstream
//!   queries, and every extra query is one more chance of a temporary failure that leaves a
//!   sender without a verdict.
//! - It is deterministic and testable offline: the answer for a pair of domains never depends
//!   on what a third party (a registry, a parent zone) publishes today.
//! - For the domains a helpdesk tenant sends from (`customer.example`, `mail.customer.co.uk`)
//!   both methods give the same organizational domain; they differ only below private
//!   registries that publish `psd=y`, which do not send helpdesk mail.
//!
//! The list is as fresh as the `psl` crate release in `Cargo.lock`; updating the crate
//! refreshes it. A name whose suffix is not on the list falls under the list's default rule
//! (`*`), so `customer.example` is its own organizational domain.
//!
//! # Parser
//!
//! [`parse`] follows the tag-list grammar of RFC 7489 §6.4 (which is DKIM's, RFC 6376 §3.2):
//! `v=DMARC1` first and exact, `;` separators with optional whitespace around tags and `=`,
//! an optional trailing `;`, no duplicate tag names. Tag names and the keyword values of
//! `p`, `sp`, `np`, `aspf`, `adkim`, `psd` and `t` are case-insensitive. Unknown tags are
//! ignored (RFC 7489 §6.3) and reported verbatim; so are the tags DMARCbis removed (`pct`,
//! `rf`, `ri`). An invalid value of a known tag is reported and the tag's default applies,
//! as receivers do. It never panics, whatever the bytes.

use std::fmt;

use crate::dns::Dns;
use crate::names::normalize_domain;

/// DMARC identifier alignment mode (`aspf`, `adkim`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AlignmentMode {
    /// Same organizational domain (the default).
    #[default]
    Relaxed,
    /// Equal domains.
    Strict,
}

impl AlignmentMode {
    /// The tag value: `r` or `s`.
    pub fn as_char(self) -> char {
        match self {
            AlignmentMode::Relaxed => 'r',
            AlignmentMode::Strict => 's',
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "r" => Some(AlignmentMode::Relaxed),
            "s" => Some(AlignmentMode::Strict),
            _ => None,
        }
    }
}

impl fmt::Display for AlignmentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlignmentMode::Relaxed => "relaxed",
            AlignmentMode::Strict => "strict",
        })
    }
}

/// A requested handling policy (`p`, `sp`, `np`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    None,
    Quarantine,
    Reject,
}

impl Policy {
    /// The tag value, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "none" => Some(Policy::None),
            "quarantine" => Some(Policy::Quarantine),
            "reject" => Some(Policy::Reject),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `name=value` pair, as written (whitespace around name and value removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

/// A parsed DMARC policy record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcRecord {
    /// Every tag after `v=DMARC1`, in record order, verbatim.
    pub tags: Vec<Tag>,
    /// `p`, when present and valid.
    pub p: Option<Policy>,
    /// `sp`, when present and valid.
    pub sp: Option<Policy>,
    /// `np` (DMARCbis), when present and valid.
    pub np: Option<Policy>,
    pub aspf: AlignmentMode,
    pub adkim: AlignmentMode,
    /// Tags this parser does not know, verbatim.
    pub unknown_tags: Vec<Tag>,
    /// Tags that DMARCbis removed (`pct`, `rf`, `ri`), verbatim.
    pub obsolete_tags: Vec<Tag>,
    /// One sentence per problem a receiver would tolerate: unknown, obsolete or invalid tags.
    pub warnings: Vec<String>,
}

/// Why a text is not a usable DMARC record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text does not start with `v=DMARC1`: it is not a DMARC record at all.
    #[error("not a DMARC record: it does not start with v=DMARC1")]
    NotDmarc,
    /// The text starts with `v=DMARC1` but breaks the tag-list grammar.
    #[error("malformed DMARC record: {0}")]
    Syntax(String),
    /// A tag name occurs twice (the whole tag list is invalid, RFC 6376 §3.2).
    #[error("malformed DMARC record: tag {0} occurs more than once")]
    DuplicateTag(String),
}

const KNOWN_TAGS: &[&str] = &[
    "p", "sp", "np", "aspf", "adkim", "rua", "ruf", "fo", "psd", "t",
];
const OBSOLETE_TAGS: &[&str] = &["pct", "rf", "ri"];

fn is_wsp(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn trim_wsp(s: &str) -> &str {
    s.trim_matches(is_wsp)
}

/// Whether `text` starts with the `v=DMARC1` tag (RFC 7489 §6.6.3 step 3: other TXT records
/// at `_dmarc.` are discarded before counting).
pub fn is_dmarc_candidate(text: &str) -> bool {
    let first = text.split(';').next().unwrap_or_default();
    match first.split_once('=') {
        Some((name, value)) => {
            trim_wsp(name).eq_ignore_ascii_case("v") && trim_wsp(value) == "DMARC1"
        }
        None => false,
    }
}

/// Parses a DMARC record given as raw TXT bytes (the strings of one TXT record, joined).
pub fn parse_bytes(bytes: &[u8]) -> Result<DmarcRecord, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(_) if is_dmarc_candidate(&String::from_utf8_lossy(bytes)) => Err(ParseError::Syntax(
            "the record holds bytes that are not ASCII".to_string(),
        )),
        Err(_) => Err(ParseError::NotDmarc),
    }
}

/// Parses a DMARC record (RFC 7489 §6.4 grammar; see the module documentation).
pub fn parse(text: &str) -> Result<DmarcRecord, ParseError> {
    if !is_dmarc_candidate(text) {
        return Err(ParseError::NotDmarc);
    }
    if let Some(bad) = text.chars().find(|&c| !(c.is_ascii_graphic() || is_wsp(c))) {
        return Err(ParseError::Syntax(format!(
            "character {:?} is not allowed in a tag list",
            bad
        )));
    }
    let mut warnings = Vec::new();
    let mut tags: Vec<Tag> = Vec::new();
    let specs: Vec<&str> = text.split(';').collect();
    let last = specs.len() - 1;
    // The first spec is v=DMARC1, checked above.
    for (index, spec) in specs.iter().enumerate().skip(1) {
        let spec = trim_wsp(spec);
        if spec.is_empty() {
            if index != last {
                warnings.push("empty tag between two ';' separators".to_string());
            }
            continue;
        }
        let tag = parse_tag_spec(spec)?;
        if tag.name.eq_ignore_ascii_case("v")
            || tags.iter().any(|t| t.name.eq_ignore_ascii_case(&tag.name))
        {
            return Err(ParseError::DuplicateTag(tag.name));
        }
        tags.push(tag);
    }
    Ok(interpret(tags, warnings))
}

/// Splits one `name = value` spec and checks both against the grammar.
fn parse_tag_spec(spec: &str) -> Result<Tag, ParseError> {
    let Some((name, value)) = spec.split_once('=') else {
        return Err(ParseError::Syntax(format!(
            "{spec:?} is not a name=value tag"
        )));
    };
    let name = trim_wsp(name);
    let value = trim_wsp(value);
    let mut chars = name.chars();
    let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(ParseError::Syntax(format!(
            "{name:?} is not a valid tag name"
        )));
    }
    Ok(Tag {
        name: name.to_string(),
        value: value.to_string(),
    })
}

/// Gives the tags their meaning and collects the warnings.
fn interpret(tags: Vec<Tag>, mut warnings: Vec<String>) -> DmarcRecord {
    let mut record = DmarcRecord {
        tags: Vec::new(),
        p: None,
        sp: None,
        np: None,
        aspf: AlignmentMode::Relaxed,
        adkim: AlignmentMode::Relaxed,
        unknown_tags: Vec::new(),
        obsolete_tags: Vec::new(),
        warnings: Vec::new(),
    };
    for tag in &tags {
        let name = tag.name.to_ascii_lowercase();
        let value = tag.value.as_str();
        let mut verbatim = format!("{}={}", tag.name, tag.value);
        if value.contains(char::is_whitespace) && value.contains('=') {
            // `p=none rua=...`: one value holding the next tag.
            verbatim.push_str(" (a ';' is probably missing)");
        }
        match name.as_str() {
            "p" | "sp" | "np" => match Policy::parse(value) {
                Some(policy) => match name.as_str() {
                    "p" => record.p = Some(policy),
                    "sp" => record.sp = Some(policy),
                    _ => record.np = Some(policy),
                },
                None => warnings.push(format!(
                    "invalid tag {verbatim}: expected none, quarantine or reject"
                )),
            },
            "aspf" | "adkim" => match AlignmentMode::parse(value) {
                Some(mode) if name == "aspf" => record.aspf = mode,
                Some(mode) => record.adkim = mode,
                None => warnings.push(format!(
                    "invalid tag {verbatim}: expected r or s; relaxed applies"
                )),
            },
            "psd" if !matches!(value.to_ascii_lowercase().as_str(), "y" | "n" | "u") => {
                warnings.push(format!("invalid tag {verbatim}: expected y, n or u"));
            }
            "t" if !matches!(value.to_ascii_lowercase().as_str(), "y" | "n") => {
                warnings.push(format!("invalid tag {verbatim}: expected y or n"));
            }
            "fo" if !valid_fo(value) => {
                warnings.push(format!(
                    "invalid tag {verbatim}: expected 0, 1, d or s separated by ':'"
                ));
            }
            "rua" | "ruf" if !valid_uri_list(value) => {
                warnings.push(format!(
                    "invalid tag {verbatim}: expected a comma-separated list of URIs"
                ));
            }
            _ if OBSOLETE_TAGS.contains(&name.as_str()) => {
                warnings.push(format!(
                    "obsolete tag {verbatim}: DMARCbis removed it and receivers ignore it"
                ));
                record.obsolete_tags.push(tag.clone());
            }
            _ if KNOWN_TAGS.contains(&name.as_str()) => {}
            _ => {
                warnings.push(format!("unknown tag {verbatim} is ignored"));
                record.unknown_tags.push(tag.clone());
            }
        }
    }
    if record.p.is_none() {
        warnings.push("no valid p tag: receivers apply no policy (p=none)".to_string());
    }
    record.tags = tags;
    record.warnings = warnings;
    record
}

fn valid_fo(value: &str) -> bool {
    value
        .split(':')
        .all(|part| matches!(trim_wsp(part), "0" | "1" | "d" | "s" | "D" | "S"))
}

fn valid_uri_list(value: &str) -> bool {
    value.split(',').all(|uri| {
        let uri = trim_wsp(uri);
        match uri.split_once(':') {
            Some((scheme, rest)) => {
                !rest.is_empty()
                    && scheme
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            }
            None => false,
        }
    })
}

/// Writes a record back as text: `v=DMARC1; ` then the tags joined by `; `.
pub fn serialize(tags: &[Tag]) -> String {
    let mut out = String::from("v=DMARC1");
    for tag in tags {
        out.push_str("; ");
        out.push_str(&tag.name);
        out.push('=');
        out.push_str(&tag.value);
    }
    out
}

/// The organizational domain of `domain` by the public suffix list: the public suffix plus
/// one label. A name that is itself a public suffix (or not a valid name) is its own
/// organizational domain.
pub fn organizational_domain(domain: &str) -> String {
    let normalized = normalize_domain(domain);
    match psl::domain_str(&normalized) {
        Some(org) => org.to_string(),
        None => normalized,
    }
}

/// Whether the envelope (SPF-authenticated) domain aligns with the From domain under `mode`
/// (RFC 7489 §3.1.2): strict needs equal names, relaxed the same organizational domain.
/// Comparison ignores ASCII case and one trailing dot.
pub fn domains_align(envelope: &str, from: &str, mode: AlignmentMode) -> bool {
    let envelope = normalize_domain(envelope);
    let from = normalize_domain(from);
    if envelope.is_empty() || from.is_empty() {
        return false;
    }
    match mode {
        AlignmentMode::Strict => envelope == from,
        AlignmentMode::Relaxed => {
            envelope == from || organizational_domain(&envelope) == organizational_domain(&from)
        }
    }
}

/// Where discovery looks, in order: `_dmarc.<from>`, then `_dmarc.<organizational domain>`
/// when that is a different name (RFC 7489 §6.6.3).
pub fn discovery_domains(from_domain: &str) -> Vec<String> {
    let from = normalize_domain(from_domain);
    let org = organizational_domain(&from);
    if org == from {
        vec![from]
    } else {
        vec![from, org]
    }
}

/// What the TXT query at one `_dmarc.` name returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxtAnswer {
    /// The TXT records (each one's strings joined) and the answer's TTL.
    Records { texts: Vec<Vec<u8>>, ttl: u32 },
    /// NXDOMAIN or no TXT data.
    Void,
    /// Timeout or an RCODE other than NOERROR/NXDOMAIN.
    TempError(String),
}

/// The outcome of policy discovery for one From domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// One record found at `policy_domain`.
    Found {
        policy_domain: String,
        text: String,
        record: DmarcRecord,
        ttl: u32,
    },
    /// No DMARC record at the From domain nor at its organizational domain.
    NotFound,
    /// More than one DMARC record at `policy_domain`: receivers apply no DMARC.
    Multiple { policy_domain: String },
    /// A record that starts with `v=DMARC1` but is malformed: receivers apply no DMARC.
    Invalid {
        policy_domain: String,
        text: String,
        error: ParseError,
    },
    /// A DNS failure left the policy unknown.
    TempError { name: String, message: String },
}

/// What one step of discovery concluded from one answer.
enum Step {
    Done(Discovery),
    Continue,
}

/// Interprets the answer for `_dmarc.<domain>` (pure; RFC 7489 §6.6.3 steps 2 to 5).
fn discovery_step(domain: &str, answer: TxtAnswer) -> Step {
    let (texts, ttl) = match answer {
        TxtAnswer::Void => return Step::Continue,
        TxtAnswer::TempError(message) => {
            return Step::Done(Discovery::TempError {
                name: format!("_dmarc.{domain}"),
                message,
            });
        }
        TxtAnswer::Records { texts, ttl } => (texts, ttl),
    };
    let candidates: Vec<&Vec<u8>> = texts
        .iter()
        .filter(|t| is_dmarc_candidate(&String::from_utf8_lossy(t)))
        .collect();
    match candidates.as_slice() {
        [] => Step::Continue,
        [only] => {
            let text = String::from_utf8_lossy(only).into_owned();
            let policy_domain = domain.to_string();
            Step::Done(match parse_bytes(only) {
                Ok(record) => Discovery::Found {
                    policy_domain,
                    text,
                    record,
                    ttl,
                },
                Err(error) => Discovery::Invalid {
                    policy_domain,
                    text,
                    error,
                },
            })
        }
        _ => Step::Done(Discovery::Multiple {
            policy_domain: domain.to_string(),
        }),
    }
}

/// Runs policy discovery with `lookup` answering TXT queries for `_dmarc.` names.
pub async fn discover_with<F, Fut>(from_domain: &str, mut lookup: F) -> Discovery
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = TxtAnswer>,
{
    for domain in discovery_domains(from_domain) {
        let answer = lookup(format!("_dmarc.{domain}")).await;
        if let Step::Done(found) = discovery_step(&domain, answer) {
            return found;
        }
    }
    Discovery::NotFound
}

/// Runs policy discovery for `from_domain` over DNS.
pub async fn discover<D: Dns>(dns: &D, from_domain: &str) -> Discovery {
    discover_with(from_domain, |name| async move {
        match dns.txt(&name).await {
            Ok(answer) if answer.is_void() => TxtAnswer::Void,
            Ok(answer) => TxtAnswer::Records {
                texts: answer.records.to_vec(),
                ttl: answer.ttl.unwrap_or(0),
            },
            Err(error) => TxtAnswer::TempError(error.to_string()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, value: &str) -> Tag {
        Tag {
            name: name.to_string(),
            value: value.to_string(),
        }
    }

    #[test]
    fn parses_a_typical_record() {
        let r = parse("v=DMARC1; p=reject; sp=quarantine; aspf=s; rua=mailto:d@x.example;")
            .expect("valid");
        assert_eq!(r.p, Some(Policy::Reject));
        assert_eq!(r.sp, Some(Policy::Quarantine));
        assert_eq!(r.aspf, AlignmentMode::Strict);
        assert_eq!(r.adkim, AlignmentMode::Relaxed);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.tags.len(), 4);
    }

    #[test]
    fn whitespace_around_names_values_and_separators() {
        let r = parse(" v = DMARC1 ;\tp = none ; adkim=S ").expect("valid");
        assert_eq!(r.p, Some(Policy::None));
        assert_eq!(r.adkim, AlignmentMode::Strict);
        assert_eq!(r.tags, vec![tag("p", "none"), tag("adkim", "S")]);
    }

    #[test]
    fn version_must_come_first_and_match_exactly() {
        assert_eq!(parse("p=none; v=DMARC1"), Err(ParseError::NotDmarc));
        assert_eq!(parse("v=dmarc1; p=none"), Err(ParseError::NotDmarc));
        assert_eq!(parse("v=DMARC2; p=none"), Err(ParseError::NotDmarc));
        assert_eq!(parse("v=spf1 -all"), Err(ParseError::NotDmarc));
        assert_eq!(parse(""), Err(ParseError::NotDmarc));
        assert!(parse("v=DMARC1").is_ok());
        assert!(parse("v=DMARC1;").is_ok());
    }

    #[test]
    fn duplicate_tags_invalidate_the_record() {
        assert_eq!(
            parse("v=DMARC1; p=none; P=reject"),
            Err(ParseError::DuplicateTag("P".to_string()))
        );
        assert!(matches!(
            parse("v=DMARC1; v=DMARC1"),
            Err(ParseError::DuplicateTag(_))
        ));
    }

    #[test]
    fn grammar_violations_are_errors() {
        for text in [
            "v=DMARC1; p",
            "v=DMARC1; 1p=none",
            "v=DMARC1; p=n\u{e9}ne",
            "v=DMARC1; p=none\u{0}",
        ] {
            assert!(
                matches!(parse(text), Err(ParseError::Syntax(_))),
                "{text:?} should be a syntax error"
            );
        }
    }

    #[test]
    fn unknown_and_obsolete_tags_are_reported_verbatim() {
        let r = parse("v=DMARC1; p=none; pct=50; RF=afrf; ri=3600; foo=Bar").expect("valid");
        assert_eq!(
            r.obsolete_tags,
            vec![tag("pct", "50"), tag("RF", "afrf"), tag("ri", "3600")]
        );
        assert_eq!(r.unknown_tags, vec![tag("foo", "Bar")]);
        assert!(r.warnings.iter().any(|w| w.contains("pct=50")));
        assert!(r.warnings.iter().any(|w| w.contains("RF=afrf")));
        assert!(r.warnings.iter().any(|w| w.contains("foo=Bar")));
    }

    #[test]
    fn dmarcbis_tags_are_known() {
        let r = parse("v=DMARC1; p=reject; np=reject; psd=n; t=y").expect("valid");
        assert_eq!(r.np, Some(Policy::Reject));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn invalid_values_warn_and_defaults_apply() {
        let r = parse("v=DMARC1; p=block; aspf=x; fo=2; rua=nowhere").expect("tolerated");
        assert_eq!(r.p, None);
        assert_eq!(r.aspf, AlignmentMode::Relaxed);
        assert_eq!(r.warnings.len(), 5, "{:?}", r.warnings);
        assert!(r.warnings.iter().any(|w| w.contains("no valid p tag")));
    }

    #[test]
    fn missing_separator_is_named() {
        let r = parse("v=DMARC1; p=none rua=mailto:x@y.example").expect("tolerated");
        assert_eq!(r.p, None);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("';' is probably missing"))
        );
    }

    #[test]
    fn empty_tags_between_separators_warn() {
        let r = parse("v=DMARC1;; p=none").expect("tolerated");
        assert_eq!(r.p, Some(Policy::None));
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn non_utf8_bytes_are_rejected_without_panic() {
        assert!(matches!(
            parse_bytes(b"v=DMARC1; p=\xff"),
            Err(ParseError::Syntax(_))
        ));
        assert_eq!(parse_bytes(b"\xfe\xff"), Err(ParseError::NotDmarc));
    }

    #[test]
    fn organizational_domains() {
        assert_eq!(
            organizational_domain("mail.Customer.Example."),
            "customer.example"
        );
        assert_eq!(
            organizational_domain("a.b.customer.co.uk"),
            "customer.co.uk"
        );
        assert_eq!(organizational_domain("customer.com"), "customer.com");
        assert_eq!(organizational_domain("co.uk"), "co.uk");
    }

    #[test]
    fn strict_alignment_needs_equal_names() {
        use AlignmentMode::*;
        assert!(domains_align(
            "Customer.Example.",
            "customer.example",
            Strict
        ));
        assert!(!domains_align(
            "bounce.customer.example",
            "customer.example",
            Strict
        ));
        assert!(domains_align(
            "bounce.customer.example",
            "customer.example",
            Relaxed
        ));
        assert!(domains_align(
            "a.customer.example",
            "b.customer.example",
            Relaxed
        ));
        assert!(!domains_align("customer.example", "other.example", Relaxed));
        assert!(!domains_align("a.co.uk", "b.co.uk", Relaxed));
        assert!(!domains_align("", "", Relaxed));
    }

    #[test]
    fn discovery_order() {
        assert_eq!(
            discovery_domains("support.mail.customer.example"),
            vec!["support.mail.customer.example", "customer.example"]
        );
        assert_eq!(
            discovery_domains("Customer.Example"),
            vec!["customer.example"]
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn discovery_falls_back_to_the_organizational_domain() {
        let found = block_on(discover_with("mail.customer.example", |name| async move {
            match name.as_str() {
                "_dmarc.mail.customer.example" => TxtAnswer::Records {
                    texts: vec![b"google-site-verification=x".to_vec()],
                    ttl: 60,
                },
                "_dmarc.customer.example" => TxtAnswer::Records {
                    texts: vec![b"v=DMARC1; p=reject; aspf=s".to_vec()],
                    ttl: 300,
                },
                _ => TxtAnswer::TempError("unexpected query".to_string()),
            }
        }));
        match found {
            Discovery::Found {
                policy_domain,
                record,
                ttl,
                ..
            } => {
                assert_eq!(policy_domain, "customer.example");
                assert_eq!(record.aspf, AlignmentMode::Strict);
                assert_eq!(ttl, 300);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn discovery_stops_on_multiple_invalid_and_temperror() {
        let multiple = block_on(discover_with("customer.example", |_| async {
            TxtAnswer::Records {
                texts: vec![b"v=DMARC1; p=none".to_vec(), b"v=DMARC1; p=reject".to_vec()],
                ttl: 60,
            }
        }));
        assert!(matches!(multiple, Discovery::Multiple { .. }));
        let invalid = block_on(discover_with("a.customer.example", |_| async {
            TxtAnswer::Records {
                texts: vec![b"v=DMARC1; p".to_vec()],
                ttl: 60,
            }
        }));
        assert!(
            matches!(invalid, Discovery::Invalid { ref policy_domain, .. } if policy_domain == "a.customer.example")
        );
        let temp = block_on(discover_with("a.customer.example", |name| async move {
            if name == "_dmarc.a.customer.example" {
                TxtAnswer::Void
            } else {
                TxtAnswer::TempError("SERVFAIL".to_string())
            }
        }));
        assert!(
            matches!(temp, Discovery::TempError { ref name, .. } if name == "_dmarc.customer.example")
        );
        let none = block_on(discover_with("a.customer.example", |_| async {
            TxtAnswer::Void
        }));
        assert_eq!(none, Discovery::NotFound);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn tag_name() -> impl Strategy<Value = String> {
            "[A-Za-z][A-Za-z0-9_]{0,8}"
        }

        fn tag_value() -> impl Strategy<Value = String> {
            // VALCHAR runs separated by single spaces, or a URI.
            prop_oneof![
                "([!-:<>-~]{1,12}( [!-:<>-~]{1,12}){0,2})?",
                "mailto:[a-z]{1,8}@[a-z]{1,8}\\.example(\\?a=b)?",
            ]
        }

        fn tags() -> impl Strategy<Value = Vec<Tag>> {
            proptest::collection::vec((tag_name(), tag_value()), 0..8).prop_map(|pairs| {
                let mut out: Vec<Tag> = Vec::new();
                for (name, value) in pairs {
                    if name.eq_ignore_ascii_case("v")
                        || out.iter().any(|t| t.name.eq_ignore_ascii_case(&name))
                    {
                        continue;
                    }
                    out.push(Tag { name, value });
                }
                out
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
            ))]

            #[test]
            fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = parse_bytes(&bytes);
            }

            #[test]
            fn never_panics_on_dmarc_prefixed_text(rest in "[ -~\t;=]{0,120}") {
                let _ = parse(&format!("v=DMARC1;{rest}"));
            }

            #[test]
            fn parse_serialize_round_trip(tags in tags()) {
                let text = serialize(&tags);
                let parsed = parse(&text).expect("serialized records parse");
                prop_assert_eq!(&parsed.tags, &tags);
                let again = parse(&serialize(&parsed.tags)).expect("parses again");
                prop_assert_eq!(again, parsed);
            }

            #[test]
            fn domain_functions_never_panic(a in "\\PC{0,40}", b in "[a-zA-Z0-9.\\-]{0,40}") {
                let _ = organizational_domain(&a);
                let _ = discovery_domains(&a);
                let _ = domains_align(&a, &b, AlignmentMode::Relaxed);
                prop_assert!(domains_align(&b, &b, AlignmentMode::Strict) || normalize_domain(&b).is_empty());
            }

            #[test]
            fn strict_alignment_implies_relaxed(a in "[a-z]{1,5}(\\.[a-z]{1,5}){0,3}", b in "[a-z]{1,5}(\\.[a-z]{1,5}){0,3}") {
                if domains_align(&a, &b, AlignmentMode::Strict) {
                    prop_assert!(domains_align(&a, &b, AlignmentMode::Relaxed));
                }
                prop_assert_eq!(
                    domains_align(&a, &b, AlignmentMode::Relaxed),
                    domains_align(&b, &a, AlignmentMode::Relaxed)
                );
            }
        }
    }
}
