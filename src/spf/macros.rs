//! Macro expansion (RFC 7208 §7.3, §7.4).

use std::fmt::Write as _;
use std::net::IpAddr;

use super::record::{Macro, MacroLetter, MacroPart, MacroString};

/// The values macros expand to.
#[derive(Clone, Debug)]
pub struct MacroContext<'a> {
    /// `s`: the full sender, `local@domain`.
    pub sender: &'a str,
    /// `l`
    pub local: &'a str,
    /// `o`
    pub sender_domain: &'a str,
    /// `d`: the domain being evaluated.
    pub domain: &'a str,
    /// `i`, `c`, `v` (IPv4-mapped addresses already unmapped).
    pub ip: IpAddr,
    /// `h`
    pub helo: &'a str,
    /// `r`
    pub receiver: &'a str,
    /// `t`: seconds since the epoch.
    pub now: u64,
    /// `p`: the validated reverse name, computed by the evaluator when a macro needs it.
    pub validated: Option<&'a str>,
}

/// Expands `spec`. `explanation` allows the explanation-only letters `c r t`.
pub fn expand(
    spec: &MacroString,
    ctx: &MacroContext<'_>,
    explanation: bool,
) -> Result<String, String> {
    let mut out = String::new();
    for part in &spec.parts {
        match part {
            MacroPart::Literal(text) => out.push_str(text),
            MacroPart::Percent => out.push('%'),
            MacroPart::Space => out.push(' '),
            MacroPart::UrlSpace => out.push_str("%20"),
            MacroPart::Macro(m) => {
                if m.letter.explanation_only() && !explanation {
                    return Err("macro letter allowed only in explanations".to_string());
                }
                expand_macro(m, ctx, &mut out);
            }
        }
    }
    Ok(out)
}

fn expand_macro(m: &Macro, ctx: &MacroContext<'_>, out: &mut String) {
    let value: String = match m.letter {
        MacroLetter::Sender => ctx.sender.to_string(),
        MacroLetter::Local => ctx.local.to_string(),
        MacroLetter::SenderDomain => ctx.sender_domain.to_string(),
        MacroLetter::Domain => ctx.domain.to_string(),
        MacroLetter::Helo => ctx.helo.to_string(),
        MacroLetter::Receiver => ctx.receiver.to_string(),
        MacroLetter::Timestamp => ctx.now.to_string(),
        MacroLetter::Validated => ctx.validated.unwrap_or("unknown").to_string(),
        MacroLetter::Ip => dotted_ip(ctx.ip),
        MacroLetter::ClientIp => ctx.ip.to_string(),
        MacroLetter::Version => match ctx.ip {
            IpAddr::V4(_) => "in-addr".to_string(),
            IpAddr::V6(_) => "ip6".to_string(),
        },
    };
    let transformed = transform(&value, m);
    if m.url_escape {
        url_escape(&transformed, out);
    } else {
        out.push_str(&transformed);
    }
}

/// Splits on the delimiters, optionally reverses, keeps the right-most parts, joins with dots.
fn transform(value: &str, m: &Macro) -> String {
    if m.keep.is_none() && !m.reverse && (m.delimiters.is_empty() || m.delimiters == ".") {
        return value.to_string();
    }
    let delimiters: &[u8] = if m.delimiters.is_empty() {
        b"."
    } else {
        m.delimiters.as_bytes()
    };
    let mut parts: Vec<&str> = value
        .split(|c: char| c.is_ascii() && delimiters.contains(&(c as u8)))
        .collect();
    if m.reverse {
        parts.reverse();
    }
    if let Some(keep) = m.keep {
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        if keep < parts.len() {
            parts.drain(..parts.len() - keep);
        }
    }
    parts.join(".")
}

/// The `i` form: dotted quad, or dot-separated nibbles for IPv6. Nibbles are upper case, as the
/// RFC 7208 test suite expects in explanations (DNS compares names without case).
fn dotted_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(63);
            for (n, byte) in v6.octets().iter().enumerate() {
                if n > 0 {
                    s.push('.');
                }
                let _ = write!(s, "{:X}.{:X}", byte >> 4, byte & 0x0f);
            }
            s
        }
    }
}

/// Percent-encodes everything outside the URI unreserved set (§7.3).
fn url_escape(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spf::record::parse_macro_string;

    fn ctx(ip: &str) -> MacroContext<'static> {
        MacroContext {
            sender: "strong-bad@email.example.com",
            local: "strong-bad",
            sender_domain: "email.example.com",
            domain: "email.example.com",
            ip: ip.parse().unwrap(),
            helo: "mx.example.org",
            receiver: "receiver.example",
            now: 1_000_000,
            validated: None,
        }
    }

    fn run(spec: &str, ip: &str) -> String {
        let m = parse_macro_string(spec, true).unwrap();
        expand(&m, &ctx(ip), true).unwrap()
    }

    /// The examples of RFC 7208 §7.4.
    #[test]
    fn rfc_examples() {
        let v4 = "192.0.2.3";
        assert_eq!(run("%{s}", v4), "strong-bad@email.example.com");
        assert_eq!(run("%{o}", v4), "email.example.com");
        assert_eq!(run("%{d}", v4), "email.example.com");
        assert_eq!(run("%{d4}", v4), "email.example.com");
        assert_eq!(run("%{d3}", v4), "email.example.com");
        assert_eq!(run("%{d2}", v4), "example.com");
        assert_eq!(run("%{d1}", v4), "com");
        assert_eq!(run("%{dr}", v4), "com.example.email");
        assert_eq!(run("%{d2r}", v4), "example.email");
        assert_eq!(run("%{l}", v4), "strong-bad");
        assert_eq!(run("%{l-}", v4), "strong.bad");
        assert_eq!(run("%{lr}", v4), "strong-bad");
        assert_eq!(run("%{lr-}", v4), "bad.strong");
        assert_eq!(run("%{l1r-}", v4), "strong");
        assert_eq!(
            run("%{ir}.%{v}._spf.%{d2}", v4),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            run("%{lr-}.lp._spf.%{d2}", v4),
            "bad.strong.lp._spf.example.com"
        );
        assert_eq!(
            run("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", v4),
            "3.2.0.192.in-addr.strong.lp._spf.example.com"
        );
        assert_eq!(
            run("%{d2}.trusted-domains.example.net", v4),
            "example.com.trusted-domains.example.net"
        );
        assert!(
            run("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01").eq_ignore_ascii_case(
                "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
            )
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(run("%%%_%-", "192.0.2.3"), "% %20");
        assert_eq!(run("%{S}", "192.0.2.3"), "strong-bad%40email.example.com");
        assert_eq!(
            run("%{c} %{t} %{r}", "2001:db8::1"),
            "2001:db8::1 1000000 receiver.example"
        );
    }

    #[test]
    fn explanation_letters_rejected_elsewhere() {
        let m = parse_macro_string("%{c}.example.com", false).unwrap();
        assert!(expand(&m, &ctx("192.0.2.3"), false).is_err());
    }
}
