//! The SPF record grammar of RFC 7208 §4.5, §5, §6, §7.1 and §12.
//!
//! Parsing is strict: any syntax error anywhere in the record is a `permerror` (§4.6), so the
//! parser returns the first error it finds with the offending term. `Display` writes a record
//! back in canonical form; parsing that text gives the same record again.

use std::net::{Ipv4Addr, Ipv6Addr};

/// `+`, `-`, `~` or `?` before a mechanism (§4.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

impl Qualifier {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Qualifier::Pass => "",
            Qualifier::Fail => "-",
            Qualifier::SoftFail => "~",
            Qualifier::Neutral => "?",
        }
    }
}

/// A macro letter of §7.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MacroLetter {
    /// `s`: the sender.
    Sender,
    /// `l`: local part of the sender.
    Local,
    /// `o`: domain of the sender.
    SenderDomain,
    /// `d`: the current domain.
    Domain,
    /// `i`: the client IP, dotted.
    Ip,
    /// `p`: the validated reverse name of the client.
    Validated,
    /// `v`: `in-addr` or `ip6`.
    Version,
    /// `h`: the HELO/EHLO domain.
    Helo,
    /// `c`: the client IP, readable (explanations only).
    ClientIp,
    /// `r`: the receiving host (explanations only).
    Receiver,
    /// `t`: the current time (explanations only).
    Timestamp,
}

impl MacroLetter {
    fn from_char(c: char) -> Option<Self> {
        Some(match c.to_ascii_lowercase() {
            's' => Self::Sender,
            'l' => Self::Local,
            'o' => Self::SenderDomain,
            'd' => Self::Domain,
            'i' => Self::Ip,
            'p' => Self::Validated,
            'v' => Self::Version,
            'h' => Self::Helo,
            'c' => Self::ClientIp,
            'r' => Self::Receiver,
            't' => Self::Timestamp,
            _ => return None,
        })
    }

    pub(super) fn as_char(self) -> char {
        match self {
            Self::Sender => 's',
            Self::Local => 'l',
            Self::SenderDomain => 'o',
            Self::Domain => 'd',
            Self::Ip => 'i',
            Self::Validated => 'p',
            Self::Version => 'v',
            Self::Helo => 'h',
            Self::ClientIp => 'c',
            Self::Receiver => 'r',
            Self::Timestamp => 't',
        }
    }

    /// Letters allowed only in explanation text (§7.2).
    pub fn explanation_only(self) -> bool {
        matches!(self, Self::ClientIp | Self::Receiver | Self::Timestamp)
    }
}

/// One `%{...}` expansion.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Macro {
    pub letter: MacroLetter,
    /// Upper-case letter: URL-escape the value.
    pub url_escape: bool,
    /// Keep this many right-hand parts (never 0).
    pub keep: Option<u32>,
    pub reverse: bool,
    /// Delimiters to split on; empty means `.`.
    pub delimiters: String,
}

/// A piece of a macro-string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MacroPart {
    /// Characters copied as they are (never `%` or space).
    Literal(String),
    Macro(Macro),
    /// `%%`
    Percent,
    /// `%_`
    Space,
    /// `%-`
    UrlSpace,
}

/// A macro-string (§7.1): literal text and macros.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacroString {
    pub parts: Vec<MacroPart>,
}

impl MacroString {
    /// Whether any macro of `letter` appears.
    pub fn uses(&self, letter: MacroLetter) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, MacroPart::Macro(m) if m.letter == letter))
    }

    /// Whether the string holds no macro at all.
    pub fn is_literal(&self) -> bool {
        !self.parts.iter().any(|p| matches!(p, MacroPart::Macro(_)))
    }
}

/// A mechanism of §5 with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    All,
    Include(MacroString),
    A {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Mx {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Ptr(Option<MacroString>),
    Ip4 {
        network: Ipv4Addr,
        prefix: u8,
    },
    Ip6 {
        network: Ipv6Addr,
        prefix: u8,
    },
    Exists(MacroString),
}

impl Mechanism {
    /// Whether evaluating it queries DNS and so counts toward the limit of 10 (§4.6.4).
    pub fn counts_lookup(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }

    /// The mechanism's name as written in records.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::All => "all",
            Mechanism::Include(_) => "include",
            Mechanism::A { .. } => "a",
            Mechanism::Mx { .. } => "mx",
            Mechanism::Ptr(_) => "ptr",
            Mechanism::Ip4 { .. } => "ip4",
            Mechanism::Ip6 { .. } => "ip6",
            Mechanism::Exists(_) => "exists",
        }
    }
}

/// A qualifier and a mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
}

/// A term of the record, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Term {
    Directive(Directive),
    Redirect(MacroString),
    Explanation(MacroString),
    /// An unknown modifier: ignored by evaluation, kept for display.
    Unknown {
        name: String,
        value: MacroString,
    },
}

/// A parsed `v=spf1` record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record {
    pub terms: Vec<Term>,
}

impl Record {
    /// The mechanisms in order.
    pub fn directives(&self) -> impl Iterator<Item = &Directive> {
        self.terms.iter().filter_map(|t| match t {
            Term::Directive(d) => Some(d),
            _ => None,
        })
    }

    /// The `redirect=` target, if any.
    pub fn redirect(&self) -> Option<&MacroString> {
        self.terms.iter().find_map(|t| match t {
            Term::Redirect(d) => Some(d),
            _ => None,
        })
    }

    /// The `exp=` target, if any.
    pub fn explanation(&self) -> Option<&MacroString> {
        self.terms.iter().find_map(|t| match t {
            Term::Explanation(d) => Some(d),
            _ => None,
        })
    }

    /// Terms that query DNS when evaluated (mechanisms and `redirect`), ignoring whether
    /// evaluation would reach them.
    pub fn lookup_terms(&self) -> usize {
        self.terms
            .iter()
            .filter(|t| match t {
                Term::Directive(d) => d.mechanism.counts_lookup(),
                Term::Redirect(_) => true,
                _ => false,
            })
            .count()
    }
}

/// Why a record does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} in term {term:?}")]
pub struct ParseError {
    pub term: String,
    pub message: String,
}

fn err(term: &str, message: impl Into<String>) -> ParseError {
    ParseError {
        term: term.to_string(),
        message: message.into(),
    }
}

/// Whether a TXT string is an SPF version 1 record (§4.5): `v=spf1` alone or followed by a space,
/// compared without regard to case.
pub fn is_spf_record(txt: &[u8]) -> bool {
    txt.len() >= 6 && txt[..6].eq_ignore_ascii_case(b"v=spf1") && (txt.len() == 6 || txt[6] == b' ')
}

/// Parses a whole record, `v=spf1` included.
pub fn parse_record(text: &str) -> Result<Record, ParseError> {
    if !is_spf_record(text.as_bytes()) {
        return Err(err(text, "not an SPF version 1 record"));
    }
    let mut terms = Vec::new();
    let mut seen_redirect = false;
    let mut seen_exp = false;
    for (_, word) in split_terms(text).skip(1) {
        let term = parse_term(word)?;
        match &term {
            Term::Redirect(_) if seen_redirect => {
                return Err(err(word, "redirect= appears more than once"));
            }
            Term::Redirect(_) => seen_redirect = true,
            Term::Explanation(_) if seen_exp => {
                return Err(err(word, "exp= appears more than once"));
            }
            Term::Explanation(_) => seen_exp = true,
            _ => {}
        }
        terms.push(term);
    }
    Ok(Record { terms })
}

/// The space-separated words of a record with their byte offsets, the version included
/// (§4.6.1: terms are separated by one or more spaces).
pub fn split_terms(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(' ')
        .scan(0, |offset, word| {
            let start = *offset;
            *offset += word.len() + 1;
            Some((start, word))
        })
        .filter(|(_, word)| !word.is_empty())
}

/// The name of a modifier term (`name=value`, §4.6.1: the name is ALPHA *( ALPHA / DIGIT /
/// "-" / "_" / "." ) followed by "="), or `None` for a mechanism.
pub fn modifier_name(word: &str) -> Option<&str> {
    let name_len = word
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        .count();
    (name_len > 0
        && word.as_bytes().get(name_len) == Some(&b'=')
        && word.as_bytes()[0].is_ascii_alphabetic())
    .then(|| &word[..name_len])
}

/// Parses one term (a directive or a modifier).
pub fn parse_term(word: &str) -> Result<Term, ParseError> {
    if !word.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(err(word, "character outside printable ASCII"));
    }
    if let Some(name) = modifier_name(word) {
        let value = &word[name.len() + 1..];
        return Ok(match name.to_ascii_lowercase().as_str() {
            "redirect" => Term::Redirect(parse_domain_spec(word, value)?),
            "exp" => Term::Explanation(parse_domain_spec(word, value)?),
            _ => Term::Unknown {
                name: name.to_string(),
                value: parse_macro_string(value, false).map_err(|m| err(word, m))?,
            },
        });
    }
    let (qualifier, rest) = match word.as_bytes()[0] {
        b'+' => (Qualifier::Pass, &word[1..]),
        b'-' => (Qualifier::Fail, &word[1..]),
        b'~' => (Qualifier::SoftFail, &word[1..]),
        b'?' => (Qualifier::Neutral, &word[1..]),
        _ => (Qualifier::Pass, word),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let name = rest[..name_end].to_ascii_lowercase();
    let arg = &rest[name_end..];
    let mechanism = match name.as_str() {
        "all" => {
            no_argument(word, arg)?;
            Mechanism::All
        }
        "include" => Mechanism::Include(required_domain(word, arg)?),
        "exists" => Mechanism::Exists(required_domain(word, arg)?),
        "a" | "mx" => {
            let (domain, cidr4, cidr6) = domain_and_dual_cidr(word, arg)?;
            if name == "a" {
                Mechanism::A {
                    domain,
                    cidr4,
                    cidr6,
                }
            } else {
                Mechanism::Mx {
                    domain,
                    cidr4,
                    cidr6,
                }
            }
        }
        "ptr" => {
            if arg.is_empty() {
                Mechanism::Ptr(None)
            } else {
                let spec = arg
                    .strip_prefix(':')
                    .ok_or_else(|| err(word, "ptr takes no CIDR length"))?;
                Mechanism::Ptr(Some(parse_domain_spec(word, spec)?))
            }
        }
        "ip4" => {
            let value = arg
                .strip_prefix(':')
                .ok_or_else(|| err(word, "ip4 needs an address"))?;
            let (addr, prefix) = split_prefix(word, value, 32)?;
            let network = parse_ipv4_strict(addr).ok_or_else(|| err(word, "bad IPv4 address"))?;
            Mechanism::Ip4 {
                network,
                prefix: prefix.unwrap_or(32),
            }
        }
        "ip6" => {
            let value = arg
                .strip_prefix(':')
                .ok_or_else(|| err(word, "ip6 needs an address"))?;
            let (addr, prefix) = split_prefix(word, value, 128)?;
            let network: Ipv6Addr = addr.parse().map_err(|_| err(word, "bad IPv6 address"))?;
            Mechanism::Ip6 {
                network,
                prefix: prefix.unwrap_or(128),
            }
        }
        _ => return Err(err(word, "unknown mechanism")),
    };
    Ok(Term::Directive(Directive {
        qualifier,
        mechanism,
    }))
}

fn no_argument(word: &str, arg: &str) -> Result<(), ParseError> {
    if arg.is_empty() {
        Ok(())
    } else {
        Err(err(word, "all takes no argument"))
    }
}

fn required_domain(word: &str, arg: &str) -> Result<MacroString, ParseError> {
    let spec = arg
        .strip_prefix(':')
        .ok_or_else(|| err(word, "a domain is required"))?;
    parse_domain_spec(word, spec)
}

/// `[":" domain-spec] [dual-cidr-length]` for `a` and `mx`. The domain-spec may itself hold
/// `/` and `:` (§7.1), so the CIDR lengths are taken from the end.
fn domain_and_dual_cidr(
    word: &str,
    arg: &str,
) -> Result<(Option<MacroString>, u8, u8), ParseError> {
    let (rest, cidr6) = strip_cidr(arg, true);
    let (spec, cidr4) = strip_cidr(rest, false);
    let domain = if spec.is_empty() {
        None
    } else {
        let spec = spec
            .strip_prefix(':')
            .ok_or_else(|| err(word, "unexpected text after the mechanism"))?;
        Some(parse_domain_spec(word, spec)?)
    };
    let cidr4 = match cidr4 {
        Some(digits) => parse_cidr_digits(word, digits, 32)?,
        None => 32,
    };
    let cidr6 = match cidr6 {
        Some(digits) => parse_cidr_digits(word, digits, 128)?,
        None => 128,
    };
    Ok((domain, cidr4, cidr6))
}

/// Splits a trailing `/digits` (or `//digits` when `double`) off `text`.
fn strip_cidr(text: &str, double: bool) -> (&str, Option<&str>) {
    let digits = text.bytes().rev().take_while(u8::is_ascii_digit).count();
    let head = &text[..text.len() - digits];
    let slash = if double { "//" } else { "/" };
    match head.strip_suffix(slash) {
        Some(rest) if digits > 0 && (double || !rest.ends_with('/')) => {
            (rest, Some(&text[text.len() - digits..]))
        }
        _ => (text, None),
    }
}

fn parse_cidr_digits(word: &str, digits: &str, max: u8) -> Result<u8, ParseError> {
    let valid = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !valid {
        return Err(err(word, "bad CIDR length"));
    }
    match digits.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(err(word, "CIDR length out of range")),
    }
}

fn split_prefix<'a>(
    word: &str,
    value: &'a str,
    max: u8,
) -> Result<(&'a str, Option<u8>), ParseError> {
    match value.find('/') {
        Some(i) => Ok((
            &value[..i],
            Some(parse_cidr_digits(word, &value[i + 1..], max)?),
        )),
        None => Ok((value, None)),
    }
}

/// Dotted quad with no leading zeros, no missing octets.
fn parse_ipv4_strict(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// A domain-spec (§7.1): a macro-string ending in a top label or a macro.
pub fn parse_domain_spec(word: &str, text: &str) -> Result<MacroString, ParseError> {
    let spec = parse_macro_string(text, false).map_err(|m| err(word, m))?;
    if spec.parts.is_empty() {
        return Err(err(word, "empty domain"));
    }
    if let Some(letter) = spec.parts.iter().find_map(|p| match p {
        MacroPart::Macro(m) if m.letter.explanation_only() => Some(m.letter),
        _ => None,
    }) {
        return Err(err(
            word,
            format!(
                "macro %{{{}}} is allowed only in explanations",
                letter.as_char()
            ),
        ));
    }
    if !domain_end_ok(&spec) {
        return Err(err(word, "domain does not end in a valid top-level label"));
    }
    Ok(spec)
}

/// `domain-end = ( "." toplabel [ "." ] ) / macro-expand`.
fn domain_end_ok(spec: &MacroString) -> bool {
    match spec.parts.last() {
        Some(MacroPart::Macro(_)) => true,
        Some(MacroPart::Literal(text)) => {
            let trimmed = text.strip_suffix('.').unwrap_or(text);
            match trimmed.rfind('.') {
                Some(dot) => is_toplabel(&trimmed[dot + 1..]),
                // The dot before the top label may close an earlier macro-expand?
                // No: `domain-end` needs "." toplabel inside the final literal.
                None => false,
            }
        }
        _ => false,
    }
}

/// `toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )`.
fn is_toplabel(label: &str) -> bool {
    let b = label.as_bytes();
    if b.is_empty() || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return false;
    }
    if b.contains(&b'-') {
        b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()
    } else {
        b.iter().any(|c| c.is_ascii_alphabetic())
    }
}

/// Parses a macro-string. `explanation` allows spaces and the explanation-only letters are
/// accepted in both modes (domain-specs reject them separately).
pub fn parse_macro_string(text: &str, explanation: bool) -> Result<MacroString, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            let next = bytes.get(i + 1).copied();
            let part = match next {
                Some(b'%') => MacroPart::Percent,
                Some(b'_') => MacroPart::Space,
                Some(b'-') => MacroPart::UrlSpace,
                Some(b'{') => {
                    let close = text[i + 2..]
                        .find('}')
                        .ok_or_else(|| "unterminated macro".to_string())?;
                    let body = &text[i + 2..i + 2 + close];
                    let m = parse_macro_body(body)?;
                    i += 2 + close + 1;
                    if !literal.is_empty() {
                        parts.push(MacroPart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(MacroPart::Macro(m));
                    continue;
                }
                _ => return Err("'%' not followed by '%', '_', '-' or '{'".to_string()),
            };
            if !literal.is_empty() {
                parts.push(MacroPart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            i += 2;
            continue;
        }
        let allowed = (0x21..=0x7e).contains(&c) || (explanation && c == b' ');
        if !allowed {
            return Err(format!("character {:?} not allowed", char::from(c)));
        }
        literal.push(char::from(c));
        i += 1;
    }
    if !literal.is_empty() {
        parts.push(MacroPart::Literal(literal));
    }
    Ok(MacroString { parts })
}

fn parse_macro_body(body: &str) -> Result<Macro, String> {
    let mut chars = body.chars();
    let first = chars.next().ok_or_else(|| "empty macro".to_string())?;
    let letter =
        MacroLetter::from_char(first).ok_or_else(|| format!("unknown macro letter {first:?}"))?;
    let rest = chars.as_str();
    let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let keep = if digits_len > 0 {
        let n: u32 = rest[..digits_len]
            .parse()
            .map_err(|_| "macro digit transformer too large".to_string())?;
        if n == 0 {
            return Err("macro digit transformer is 0".to_string());
        }
        Some(n)
    } else {
        None
    };
    let mut rest = &rest[digits_len..];
    let reverse = match rest.as_bytes().first() {
        Some(b'r' | b'R') => {
            rest = &rest[1..];
            true
        }
        _ => false,
    };
    if !rest
        .bytes()
        .all(|b| matches!(b, b'.' | b'-' | b'+' | b',' | b'/' | b'_' | b'='))
    {
        return Err(format!("bad macro delimiters {rest:?}"));
    }
    Ok(Macro {
        letter,
        url_escape: first.is_ascii_uppercase(),
        keep,
        reverse,
        delimiters: rest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_mechanism() {
        let r = parse_record(
            "v=spf1 +a -mx:mail.example.com/24//64 ~ptr ?include:_spf.example.net \
             ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{ir}.bl.example.org all \
             redirect=_spf.example.com exp=exp.example.com foo=bar",
        )
        .unwrap();
        assert_eq!(r.terms.len(), 11);
        assert_eq!(r.lookup_terms(), 6);
        assert!(r.redirect().is_some());
        assert!(r.explanation().is_some());
    }

    #[test]
    fn version_is_case_insensitive_and_needs_a_space() {
        assert!(is_spf_record(b"V=SPF1 -all"));
        assert!(is_spf_record(b"v=spf1"));
        assert!(!is_spf_record(b"v=spf10 -all"));
        assert!(!is_spf_record(b"v=spf2 -all"));
    }

    #[test]
    fn rejects_syntax_errors() {
        for bad in [
            "v=spf1 a:museum",
            "v=spf1 ip4:1.2.3.4/33",
            "v=spf1 ip4:01.2.3.4",
            "v=spf1 a/0129",
            "v=spf1 foo",
            "v=spf1 redirect=a.example redirect=b.example",
            "v=spf1 exp=a.example exp=b.example",
            "v=spf1 a:%{x}.example.com",
            "v=spf1 a:%{d0}.example.com",
            "v=spf1 exists:%{c}.example.com",
            "v=spf1 include",
            "v=spf1 all:foo",
            "v=spf1 ptr/24",
            "v=spf1 a:foo%.example.com",
        ] {
            assert!(parse_record(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        let text = "v=spf1 a:%{l1r+-}.%{D}.example.com/24//64 -ip6:2001:db8::/48 \
                    exists:%%%_%-x.example.com ?all";
        let r = parse_record(text).unwrap();
        assert_eq!(parse_record(&r.to_string()).unwrap(), r);
    }
}
