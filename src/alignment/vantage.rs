//! The authority's view of a sender's SPF record beside the configured resolver's
//! (docs/design.md §6 "Authoritative vantage"), as pure functions: which TTL `validAfter`
//! rests on, and whether the two disagree (a split verdict).

use crate::dns::{Answer, Authority};
use crate::spf::record::is_spf_record;

/// Records shown at most in a split-verdict warning.
const SHOWN_RECORDS: usize = 3;
/// Bytes shown at most of one record in a split-verdict warning.
const SHOWN_BYTES: usize = 300;

/// What the envelope domain's authoritative servers said about its SPF record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum AuthorityReport {
    /// An authoritative server answered.
    #[serde(rename_all = "camelCase")]
    Answered {
        /// The server asked, `host (ip:port)`.
        server: String,
        /// The SPF records it publishes, verbatim.
        records: Vec<String>,
        /// The TTL it publishes for them (for a negative answer, its SOA minimum).
        ttl: Option<u32>,
        /// Whether the configured resolver gave the same SPF records.
        agrees: bool,
    },
    /// No authoritative server was found or answered: the check goes on with the resolver's
    /// answer and the largest TTL seen for it.
    Unreachable { reason: String },
}

/// The authority's part of one check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VantageOutcome {
    /// `None` while the authoritative check is off.
    pub report: Option<AuthorityReport>,
    /// The TTL to record for the SPF record: the authority's when it answered with one.
    pub ttl: Option<u32>,
    /// The split-verdict warning, when the resolver and the authority disagree.
    pub warning: Option<String>,
}

/// The SPF records of a TXT answer (RFC 7208 §4.5), sorted: the order of an RRset means
/// nothing.
fn spf_records(answer: &Answer<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut records: Vec<Vec<u8>> = answer
        .records
        .iter()
        .filter(|txt| is_spf_record(txt))
        .cloned()
        .collect();
    records.sort();
    records
}

/// Records for a person, bounded so a hostile answer cannot bloat the status.
fn show(records: &[Vec<u8>]) -> String {
    if records.is_empty() {
        return "no SPF record".to_string();
    }
    let mut shown: Vec<String> = records
        .iter()
        .take(SHOWN_RECORDS)
        .map(|record| {
            let text = String::from_utf8_lossy(record);
            match text.char_indices().nth(SHOWN_BYTES) {
                Some((cut, _)) => format!("{:?}...", &text[..cut]),
                None => format!("{text:?}"),
            }
        })
        .collect();
    if records.len() > SHOWN_RECORDS {
        shown.push(format!("and {} more", records.len() - SHOWN_RECORDS));
    }
    shown.join(", ")
}

/// Compares the resolver's TXT answer at `domain` with the authority's. `resolver_ttl` is the
/// TTL the check has for the record so far (the largest the resolver reported).
pub fn compare(
    domain: &str,
    resolver: &Answer<Vec<u8>>,
    resolver_ttl: Option<u32>,
    authority: Authority,
) -> VantageOutcome {
    match authority {
        Authority::NotAsked => VantageOutcome {
            report: None,
            ttl: resolver_ttl,
            warning: None,
        },
        Authority::Unreachable { reason } => VantageOutcome {
            report: Some(AuthorityReport::Unreachable { reason }),
            ttl: resolver_ttl,
            warning: None,
        },
        Authority::Answered { server, answer } => {
            let published = spf_records(&answer);
            let seen = spf_records(resolver);
            let agrees = published == seen;
            let warning = (!agrees).then(|| {
                format!(
                    "split view of {domain}: the configured resolver answers {} but its \
                     authoritative server {server} answers {} (a stale cache or a split-horizon \
                     view); the verdict follows the resolver",
                    show(&seen),
                    show(&published),
                )
            });
            VantageOutcome {
                ttl: answer.ttl.or(resolver_ttl),
                report: Some(AuthorityReport::Answered {
                    server,
                    records: published
                        .iter()
                        .map(|r| String::from_utf8_lossy(r).into_owned())
                        .collect(),
                    ttl: answer.ttl,
                    agrees,
                }),
                warning,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(records: &[&str], ttl: u32) -> Answer<Vec<u8>> {
        Answer::new(
            records.iter().map(|r| r.as_bytes().to_vec()).collect(),
            Some(ttl),
        )
    }

    fn answered(records: &[&str], ttl: u32) -> Authority {
        Authority::Answered {
            server: "ns1.customer.example (192.0.2.53:53)".to_string(),
            answer: txt(records, ttl),
        }
    }

    const SPF: &str = "v=spf1 include:spf.provider.example -all";

    #[test]
    fn an_agreeing_authority_gives_its_full_ttl_and_no_warning() {
        // The resolver's cache has 17 s left of the record's 3600.
        let resolver = txt(&["google-site-verification=x", SPF], 17);
        let outcome = compare(
            "customer.example",
            &resolver,
            Some(17),
            answered(&[SPF, "google-site-verification=x"], 3600),
        );
        assert_eq!(outcome.ttl, Some(3600));
        assert_eq!(outcome.warning, None);
        assert!(matches!(
            outcome.report,
            Some(AuthorityReport::Answered { agrees: true, ref records, .. }) if records == &[SPF]
        ));
    }

    #[test]
    fn other_txt_records_do_not_make_a_split() {
        let resolver = txt(&[SPF, "old-verification=1"], 300);
        let outcome = compare(
            "customer.example",
            &resolver,
            Some(300),
            answered(&[SPF, "new-verification=2"], 300),
        );
        assert_eq!(outcome.warning, None);
    }

    #[test]
    fn a_different_record_is_a_split_verdict_naming_both_and_the_server() {
        let resolver = txt(&["v=spf1 -all"], 120);
        let outcome = compare(
            "customer.example",
            &resolver,
            Some(120),
            answered(&[SPF], 600),
        );
        let warning = outcome.warning.expect("split");
        assert!(warning.contains("\"v=spf1 -all\""), "{warning}");
        assert!(warning.contains(&format!("{SPF:?}")), "{warning}");
        assert!(
            warning.contains("ns1.customer.example (192.0.2.53:53)"),
            "{warning}"
        );
        assert!(
            !warning.contains("120") && !warning.contains("600"),
            "no TTLs: {warning}"
        );
        assert_eq!(outcome.ttl, Some(600), "the authority's TTL");
        assert!(matches!(
            outcome.report,
            Some(AuthorityReport::Answered { agrees: false, .. })
        ));
    }

    #[test]
    fn a_record_only_one_side_has_is_a_split() {
        let none = Answer::empty(true, Some(60));
        let outcome = compare("customer.example", &none, Some(60), answered(&[SPF], 300));
        assert!(
            outcome
                .warning
                .expect("split")
                .contains("answers no SPF record but")
        );

        let outcome = compare(
            "customer.example",
            &txt(&[SPF], 300),
            Some(300),
            Authority::Answered {
                server: "ns1".to_string(),
                answer: Answer::empty(false, Some(30)),
            },
        );
        assert!(outcome.warning.expect("split").ends_with(
            "answers no SPF record (a stale cache or a split-horizon view); the verdict follows \
             the resolver"
        ));
    }

    #[test]
    fn without_the_authority_the_resolver_ttl_stays_and_nothing_warns() {
        let resolver = txt(&[SPF], 250);
        let outcome = compare(
            "customer.example",
            &resolver,
            Some(300),
            Authority::Unreachable {
                reason: "timed out".to_string(),
            },
        );
        assert_eq!(outcome.ttl, Some(300));
        assert_eq!(outcome.warning, None);
        assert!(matches!(
            outcome.report,
            Some(AuthorityReport::Unreachable { .. })
        ));
        let off = compare(
            "customer.example",
            &resolver,
            Some(300),
            Authority::NotAsked,
        );
        assert_eq!(
            off,
            VantageOutcome {
                report: None,
                ttl: Some(300),
                warning: None
            }
        );
    }

    #[test]
    fn warnings_stay_bounded() {
        let long = format!("v=spf1 {}-all", "a ".repeat(5_000));
        let many: Vec<&str> = std::iter::repeat_n(long.as_str(), 10).collect();
        let outcome = compare(
            "customer.example",
            &txt(&many, 1),
            Some(1),
            answered(&[SPF], 1),
        );
        let warning = outcome.warning.expect("split");
        assert!(warning.len() < 2_000, "{} bytes", warning.len());
        assert!(warning.contains("and 7 more"), "{warning}");
    }
}
