//! Editing a record's text: the one change the operator suggests, adding the provider include.
//!
//! `include:<provider>` goes right before the first `all` term (so it is evaluated before the
//! catch-all answers); with no `all` but a `redirect=`, right before the `redirect=`
//! (mechanisms are evaluated before the redirect); with neither, after the last mechanism.
//! Nothing is removed or reordered and the rest of the text is kept byte for byte.

use super::record::{Mechanism, Term, modifier_name, parse_term, split_terms};

/// Whether a term is the `all` mechanism (any qualifier, any case).
fn is_all(word: &str) -> bool {
    matches!(
        parse_term(word),
        Ok(Term::Directive(d)) if d.mechanism == Mechanism::All
    )
}

fn is_redirect(word: &str) -> bool {
    modifier_name(word).is_some_and(|name| name.eq_ignore_ascii_case("redirect"))
}

/// `record` with `include:<provider_domain>` inserted (see the module documentation for
/// where). Text that holds no term at all becomes `v=spf1 include:<provider_domain> ~all`.
pub fn insert_include(record: &str, provider_domain: &str) -> String {
    let include = format!("include:{provider_domain}");
    let terms: Vec<(usize, &str)> = split_terms(record).collect();
    let body = terms.iter().skip(1);
    let before = body
        .clone()
        .find(|(_, t)| is_all(t))
        .or_else(|| body.clone().find(|(_, t)| is_redirect(t)))
        .map(|(offset, _)| *offset);
    if let Some(offset) = before {
        return format!("{}{include} {}", &record[..offset], &record[offset..]);
    }
    // After the last mechanism, or after the version when there is none.
    let after = body
        .rev()
        .find(|(_, t)| modifier_name(t).is_none())
        .or(terms.first())
        .map(|(offset, t)| offset + t.len());
    match after {
        Some(end) => format!("{} {include}{}", &record[..end], &record[end..]),
        None => format!("v=spf1 {include} ~all"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "spf.provider.example";

    #[test]
    fn include_goes_before_all() {
        assert_eq!(
            insert_include("v=spf1 mx -all", P),
            "v=spf1 mx include:spf.provider.example -all"
        );
        assert_eq!(
            insert_include("v=spf1 ip4:192.0.2.0/24 ~ALL exp=why.customer.example", P),
            "v=spf1 ip4:192.0.2.0/24 include:spf.provider.example ~ALL exp=why.customer.example"
        );
        // Text after `all` stays where it is.
        assert_eq!(
            insert_include("v=spf1 ?all a", P),
            "v=spf1 include:spf.provider.example ?all a"
        );
    }

    #[test]
    fn include_goes_before_redirect_without_all() {
        assert_eq!(
            insert_include("v=spf1 a redirect=_spf.customer.example", P),
            "v=spf1 a include:spf.provider.example redirect=_spf.customer.example"
        );
        assert_eq!(
            insert_include("v=spf1 redirect=_spf.customer.example", P),
            "v=spf1 include:spf.provider.example redirect=_spf.customer.example"
        );
    }

    #[test]
    fn include_goes_after_the_last_mechanism_otherwise() {
        assert_eq!(
            insert_include("v=spf1 a mx exp=x.customer.example", P),
            "v=spf1 a mx include:spf.provider.example exp=x.customer.example"
        );
        assert_eq!(
            insert_include("v=spf1", P),
            "v=spf1 include:spf.provider.example"
        );
        assert_eq!(
            insert_include("v=spf1  a   mx ", P),
            "v=spf1  a   mx include:spf.provider.example "
        );
        assert_eq!(
            insert_include("", P),
            "v=spf1 include:spf.provider.example ~all"
        );
    }

    #[test]
    fn nothing_is_removed() {
        for record in [
            "v=spf1 mx -all",
            "v=spf1  a:x.example  ~all  ",
            "v=spf1 redirect=a.example",
            "v=spf1 a exp=e.example",
        ] {
            let suggested = insert_include(record, P);
            let mut rest: Vec<&str> = suggested.split(' ').collect();
            let index = rest
                .iter()
                .position(|t| *t == "include:spf.provider.example")
                .expect("inserted");
            rest.remove(index);
            assert_eq!(rest.join(" "), record, "{suggested}");
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const INCLUDE: &str = "include:spf.provider.example";

        fn record() -> impl Strategy<Value = String> {
            let term = prop_oneof![
                Just("a"),
                Just("mx:mail.customer.example"),
                Just("-all"),
                Just("~ALL"),
                Just("?all"),
                Just("+all"),
                Just("all"),
                Just("redirect=_spf.customer.example"),
                Just("exp=why.customer.example"),
                Just("ip4:192.0.2.0/24"),
                Just("x-custom=1"),
            ];
            (
                proptest::collection::vec((term, 1..3usize), 0..6),
                0..2usize,
            )
                .prop_map(|(terms, trailing)| {
                    let mut text = String::from("v=spf1");
                    for (term, spaces) in terms {
                        text.push_str(&" ".repeat(spaces));
                        text.push_str(term);
                    }
                    text.push_str(&" ".repeat(trailing));
                    text
                })
        }

        proptest! {
            #[test]
            fn insertion_removes_nothing(record in record()) {
                let suggested = insert_include(&record, "spf.provider.example");
                let at = suggested.find(INCLUDE).expect("inserted");
                let before = &suggested[..at];
                let after = &suggested[at + INCLUDE.len()..];
                // The include comes with exactly one separating space of its own.
                let restored = if let Some(rest) = after.strip_prefix(' ') {
                    format!("{before}{rest}")
                } else {
                    format!("{}{after}", before.strip_suffix(' ').unwrap_or(before))
                };
                prop_assert_eq!(restored, record.clone());
                // It is evaluated before any all term.
                let all_at = suggested
                    .split(' ')
                    .position(|t| t.trim_start_matches(['+', '-', '~', '?']).eq_ignore_ascii_case("all"));
                let include_at = suggested.split(' ').position(|t| t == INCLUDE);
                if let (Some(all_at), Some(include_at)) = (all_at, include_at) {
                    prop_assert!(include_at < all_at, "{}", suggested);
                }
            }

            #[test]
            fn insertion_never_panics(text in "\\PC{0,80}") {
                let _ = insert_include(&text, "spf.provider.example");
            }
        }
    }
}
