//! Property tests of the DKIM key-record parser and the path rule: no input panics, every
//! record written out parses back to the same record, the key survives any folding of its
//! base64, and the path's state follows its rule for any mix of selector outcomes.
//!
//! `PROPTEST_CASES=200000 cargo test --release --test dkim_proptest` runs a long session.

use helpdesk_mail_operator::dkim::{
    DkimState, KeyRecord, KeyType, SelectorOutcome, SelectorReport, Tag, dkim_path, encode_key,
    parse, parse_bytes,
};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// A tag value: runs of VALCHAR (`!`..`~` without `;`) separated by single spaces.
fn value() -> impl Strategy<Value = String> {
    "([!-:<-~]{1,10}( [!-:<-~]{1,10}){0,2})?"
}

fn list(items: &'static str) -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec(items, 1..4))
}

fn unknown_tags() -> impl Strategy<Value = Vec<Tag>> {
    prop::collection::vec(("[a-zA-Z][a-zA-Z0-9_]{0,6}", value()), 0..4).prop_map(|pairs| {
        let mut tags: Vec<Tag> = Vec::new();
        for (name, value) in pairs {
            let known = matches!(name.as_str(), "v" | "h" | "k" | "n" | "p" | "s" | "t");
            if !known && !tags.iter().any(|t| t.name == name) {
                tags.push(Tag { name, value });
            }
        }
        tags
    })
}

/// Any record the parser could return (warnings left empty; the parser recomputes them).
fn record() -> impl Strategy<Value = KeyRecord> {
    (
        any::<bool>(),
        list("sha1|sha256|[a-z0-9-]{1,8}"),
        prop::option::of(prop_oneof![Just(KeyType::Rsa), Just(KeyType::Ed25519)]),
        prop::option::of(value()),
        prop::collection::vec(any::<u8>(), 0..300),
        list("\\*|email|x-[a-z]{1,5}"),
        list("y|s|[a-z]{1,3}"),
        unknown_tags(),
    )
        .prop_map(
            |(
                version,
                hash_algorithms,
                key_type,
                notes,
                public_key,
                services,
                flags,
                unknown_tags,
            )| {
                KeyRecord {
                    version,
                    hash_algorithms,
                    key_type,
                    notes,
                    public_key,
                    services,
                    flags,
                    unknown_tags,
                    warnings: Vec::new(),
                }
            },
        )
}

/// `text` with folding whitespace inserted at the positions `cuts` picks.
fn fold(text: &str, cuts: &[(usize, u8)]) -> String {
    let mut out = String::with_capacity(text.len() + cuts.len() * 3);
    let mut cuts: Vec<(usize, u8)> = cuts
        .iter()
        .map(|(at, kind)| (at % (text.len() + 1), *kind))
        .collect();
    cuts.sort_unstable();
    let mut from = 0;
    for (at, kind) in cuts {
        out.push_str(&text[from..at]);
        out.push_str(match kind % 4 {
            0 => " ",
            1 => "\t",
            2 => "\r\n ",
            _ => "  \r\n\t",
        });
        from = at;
    }
    out.push_str(&text[from..]);
    out
}

fn outcome() -> impl Strategy<Value = SelectorOutcome> {
    use SelectorOutcome::*;
    prop_oneof![
        Just(Aligned),
        Just(Missing),
        Just(KeyMismatch),
        Just(Revoked),
        Just(Invalid),
        Just(DomainNotAligned),
        Just(ProviderKeyBroken),
        Just(TemporaryFailure),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_bytes(&bytes);
    }

    #[test]
    fn never_panics_on_tag_lists(text in "[ -~\t\r\n;=]{0,200}") {
        if let Ok(record) = parse(&text) {
            // Whatever parses, written out, parses to the same record.
            let again = parse(&record.to_string()).expect("a written record parses");
            prop_assert_eq!(&again.public_key, &record.public_key);
            prop_assert_eq!(&again.unknown_tags, &record.unknown_tags);
            prop_assert_eq!(again.key_type(), record.key_type());
        }
    }

    #[test]
    fn write_parse_round_trip(record in record()) {
        let text = record.to_string();
        let parsed = parse(&text).expect("a written record parses");
        let mut without_warnings = parsed.clone();
        without_warnings.warnings.clear();
        prop_assert_eq!(&without_warnings, &record, "{}", text);
        prop_assert_eq!(parse(&parsed.to_string()).expect("parses again"), parsed);
    }

    #[test]
    fn the_key_survives_any_folding(
        key in prop::collection::vec(any::<u8>(), 1..400),
        cuts in prop::collection::vec((any::<usize>(), any::<u8>()), 0..12),
        unpadded in any::<bool>(),
    ) {
        let mut base64 = encode_key(&key);
        if unpadded {
            base64 = base64.trim_end_matches('=').to_string();
        }
        let text = format!("v=DKIM1; k=rsa; p={}", fold(&base64, &cuts));
        let record = parse(&text).expect("folded base64 parses");
        prop_assert_eq!(&record.public_key, &key);
        let plain = KeyRecord::new(KeyType::Rsa, key);
        prop_assert!(record.same_key(&plain) && plain.same_key(&record));
    }

    #[test]
    fn path_rule(outcomes in prop::collection::vec(outcome(), 0..6)) {
        let selectors: Vec<SelectorReport> = outcomes
            .iter()
            .enumerate()
            .map(|(i, outcome)| SelectorReport {
                selector: format!("s{i}"),
                name: format!("s{i}._domainkey.customer.example"),
                outcome: *outcome,
                message: outcome.to_string(),
                record: None,
                cname_chain: Vec::new(),
                ttl: None,
                warnings: Vec::new(),
            })
            .collect();
        let state = dkim_path(&selectors).state;
        let any = |o: SelectorOutcome| outcomes.contains(&o);
        let expected = if outcomes.is_empty() {
            DkimState::Off
        } else if any(SelectorOutcome::Aligned) {
            DkimState::Aligned
        } else if any(SelectorOutcome::TemporaryFailure) {
            DkimState::TemporaryFailure
        } else if any(SelectorOutcome::ProviderKeyBroken) {
            DkimState::ProviderBroken
        } else {
            DkimState::Unaligned
        };
        prop_assert_eq!(state, expected);
        // A verdict on the tenant only when every selector's outcome is definitive or one aligned.
        if state == DkimState::Unaligned {
            prop_assert!(outcomes.iter().all(|o| o.is_definitive()));
        }
    }
}
