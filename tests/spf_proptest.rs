//! Property tests of the SPF record parser and the macro expander: no input panics, and every
//! record that parses is written back in a form that parses to the same record.
//!
//! `PROPTEST_CASES=200000 cargo test --release --test spf_proptest` runs a long session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use helpdesk_mail_operator::spf::macros::{MacroContext, expand};
use helpdesk_mail_operator::spf::parse_record;
use helpdesk_mail_operator::spf::record::{parse_domain_spec, parse_macro_string};
use proptest::prelude::*;

/// One macro expansion, valid or nearly so.
fn macro_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "%\\{[slodiphcrtvSLODIPHCRTVxz]?[0-9]{0,3}[rR]?[.+,/_=-]{0,3}\\}",
        Just("%%".to_string()),
        Just("%_".to_string()),
        Just("%-".to_string()),
        Just("%".to_string()),
    ]
}

/// A domain-spec, valid or nearly so.
fn domain_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof!["[a-z0-9-]{0,8}", macro_text()], 0..4),
        prop_oneof![
            Just(".com".to_string()),
            Just(".example.org.".to_string()),
            Just(".123".to_string()),
            macro_text(),
            Just(String::new()),
        ],
    )
        .prop_map(|(parts, end)| parts.join(".") + &end)
}

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "/[0-9]{1,3}",
        "//[0-9]{1,3}",
        "/[0-9]{1,2}//[0-9]{1,3}",
    ]
}

/// One term, valid or nearly so.
fn term() -> impl Strategy<Value = String> {
    let qualifier = prop_oneof![
        Just(""),
        Just("+"),
        Just("-"),
        Just("~"),
        Just("?"),
        Just("!")
    ];
    let mechanism = prop_oneof![
        Just("all".to_string()),
        domain_text().prop_map(|d| format!("include:{d}")),
        (prop::option::of(domain_text()), cidr()).prop_map(|(d, c)| match d {
            Some(d) => format!("a:{d}{c}"),
            None => format!("a{c}"),
        }),
        (prop::option::of(domain_text()), cidr()).prop_map(|(d, c)| match d {
            Some(d) => format!("mx:{d}{c}"),
            None => format!("MX{c}"),
        }),
        prop::option::of(domain_text()).prop_map(|d| match d {
            Some(d) => format!("ptr:{d}"),
            None => "ptr".to_string(),
        }),
        (any::<[u8; 4]>(), prop::option::of(0u8..40)).prop_map(|(ip, p)| format!(
            "ip4:{}{}",
            Ipv4Addr::from(ip),
            p.map(|p| format!("/{p}")).unwrap_or_default()
        )),
        (any::<[u8; 16]>(), prop::option::of(0u8..140)).prop_map(|(ip, p)| format!(
            "ip6:{}{}",
            Ipv6Addr::from(ip),
            p.map(|p| format!("/{p}")).unwrap_or_default()
        )),
        domain_text().prop_map(|d| format!("exists:{d}")),
        domain_text().prop_map(|d| format!("redirect={d}")),
        domain_text().prop_map(|d| format!("exp={d}")),
        (
            "[a-zA-Z][a-zA-Z0-9._-]{0,6}",
            prop::collection::vec(prop_oneof!["[!-$&-~]{0,5}", macro_text()], 0..3)
        )
            .prop_map(|(n, v)| format!("{n}={}", v.concat())),
        "[ -~]{0,12}",
    ];
    (qualifier, mechanism).prop_map(|(q, m)| format!("{q}{m}"))
}

fn record_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("v=spf1"),
            Just("V=SPF1"),
            Just("v=spf1 "),
            Just("v=spf2")
        ],
        prop::collection::vec((term(), prop_oneof![Just(" "), Just("  ")]), 0..8),
    )
        .prop_map(|(v, terms)| {
            let mut text = v.to_string();
            for (t, sep) in terms {
                text.push_str(sep);
                text.push_str(&t);
            }
            text
        })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

proptest! {
    #[test]
    fn parser_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = parse_record(&text);
        let _ = parse_record(&format!("v=spf1 {text}"));
    }

    #[test]
    fn parser_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_record(&format!("v=spf1 {text}"));
    }

    #[test]
    fn parsed_records_round_trip(text in record_text()) {
        if let Ok(record) = parse_record(&text) {
            let written = record.to_string();
            let again = parse_record(&written);
            prop_assert_eq!(again.as_ref(), Ok(&record), "{} -> {}", text, written);
            // Canonical form is a fixed point.
            prop_assert_eq!(again.map(|r| r.to_string()), Ok(written));
        }
    }

    #[test]
    fn macro_strings_round_trip_and_expand(
        text in prop::collection::vec(prop_oneof!["[ -~]{0,6}", macro_text()], 0..6),
        ip in ip(),
        local in "[ -~]{0,20}",
        domain in "[a-zA-Z0-9.-]{0,40}",
        explanation in any::<bool>(),
    ) {
        let text = text.concat();
        if let Ok(spec) = parse_macro_string(&text, explanation) {
            prop_assert_eq!(parse_macro_string(&spec.to_string(), explanation), Ok(spec.clone()));
            let sender = format!("{local}@{domain}");
            let ctx = MacroContext {
                sender: &sender,
                local: &local,
                sender_domain: &domain,
                domain: &domain,
                ip,
                helo: &domain,
                receiver: "receiver.example",
                now: 1,
                validated: None,
            };
            let expanded = expand(&spec, &ctx, explanation);
            if spec.is_literal() {
                prop_assert!(expanded.is_ok());
            }
        }
        let _ = parse_domain_spec("term", &text);
    }

    #[test]
    fn digit_transformer_keeps_at_most_that_many_labels(
        labels in prop::collection::vec("[a-z0-9]{1,5}", 1..10),
        keep in 1u32..12,
        reverse in any::<bool>(),
    ) {
        let domain = labels.join(".");
        let spec = parse_macro_string(&format!("%{{d{keep}{}}}", if reverse { "r" } else { "" }), false)
            .expect("valid macro");
        let ctx = MacroContext {
            sender: "a@b.example",
            local: "a",
            sender_domain: "b.example",
            domain: &domain,
            ip: IpAddr::from([192, 0, 2, 1]),
            helo: "h.example",
            receiver: "r.example",
            now: 0,
            validated: None,
        };
        let out = expand(&spec, &ctx, false).expect("expands");
        let parts: Vec<&str> = out.split('.').collect();
        prop_assert_eq!(parts.len(), labels.len().min(keep as usize));
        if !reverse {
            prop_assert!(domain.ends_with(&out));
        }
    }
}
