//! The DKIM path of design §12 for one domain: the provider's reference key per selector, the
//! tenant's record per selector, one outcome each, and the path's verdict.
//!
//! # Rules
//!
//! Per selector ([`decide_selector`], pure), the first rule that applies gives the outcome:
//!
//! 1. The signing domain does not align with the From domain under `adkim`:
//!    `DomainNotAligned` (no key can help; the record is still shown).
//! 2. The tenant's lookup got no answer: `TemporaryFailure`.
//! 3. The tenant's side is broken: a CNAME loop or an overlong chain (`Invalid`), no record
//!    (`Missing`), several TXT records or one that does not parse or cannot sign email with
//!    SHA-256 (`Invalid`), an empty `p=` (`Revoked`).
//! 4. The provider's reference key could not be fetched (`TemporaryFailure`) or is itself
//!    missing, invalid or revoked (`ProviderKeyBroken`: the provider's fault, never the
//!    tenant's; callers report it once, like a broken provider SPF record, and treat it as no
//!    verdict).
//! 5. The keys differ (decoded bytes and key type): `KeyMismatch`.
//! 6. `adkim` is unknown (DMARC discovery failed) and would decide: `TemporaryFailure`.
//! 7. Otherwise `Aligned`.
//!
//! The path ([`dkim_path`]): `Off` without selectors; `Aligned` when any selector is aligned
//! (the provider signs with one of its selectors, and a receiver needs one valid aligned
//! signature); else `TemporaryFailure` when any selector is temporary, else `ProviderBroken`
//! when any selector's reference key is broken; else `Unaligned`. Only `Aligned` and
//! `Unaligned` are verdicts; the other two never switch a sender by themselves.
//!
//! Selectors that are not aligned while another one is stay visible per selector: the
//! provider may rotate to such a selector next.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::lookup::{KeyLookup, lookup_key};
use super::record::{self, KeyRecord};
use crate::dmarc::{AlignmentMode, domains_align};
use crate::dns::Dns;
use crate::names::normalize_domain;

/// `<selector>._domainkey.<domain>`, lower case, without a trailing dot.
pub fn selector_name(selector: &str, domain: &str) -> String {
    format!(
        "{}._domainkey.{}",
        normalize_domain(selector),
        normalize_domain(domain)
    )
}

/// One selector the provider signs with, and the name where it publishes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSelector {
    pub selector: String,
    /// Where the reference key is published.
    pub reference_name: String,
}

impl ProviderSelector {
    /// A selector whose reference key is at `<selector>._domainkey.<provider_dkim_domain>`
    /// (the `--provider-dkim-domain` convention).
    pub fn new(selector: &str, provider_dkim_domain: &str) -> Self {
        Self {
            selector: normalize_domain(selector),
            reference_name: selector_name(selector, provider_dkim_domain),
        }
    }

    /// A selector whose reference key is at an arbitrary name (providers whose CNAME targets
    /// do not follow the `_domainkey` convention).
    pub fn with_reference_name(selector: &str, reference_name: &str) -> Self {
        Self {
            selector: normalize_domain(selector),
            reference_name: normalize_domain(reference_name),
        }
    }
}

/// What the provider's reference record for one selector gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// A usable key.
    Key {
        record: KeyRecord,
        text: String,
        ttl: Option<u32>,
    },
    /// Missing, invalid or revoked: the provider's fault. One sentence saying which.
    Broken { message: String },
    /// The lookup got no answer; one sentence.
    Temporary { message: String },
}

/// The provider's reference key for one selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderKey {
    pub selector: ProviderSelector,
    pub reference: Reference,
}

impl ProviderKey {
    /// Interprets the lookup of the reference name (pure).
    pub fn from_lookup(selector: ProviderSelector, lookup: &KeyLookup) -> Self {
        let name = &selector.reference_name;
        let reference = match read_record(name, lookup) {
            Read::Temporary(message) => Reference::Temporary {
                message: format!("the provider's reference key could not be fetched: {message}"),
            },
            Read::Broken(_, message) => Reference::Broken {
                message: format!("the provider's reference key is unusable: {message}"),
            },
            Read::Found { record, .. } if record.is_revoked() => Reference::Broken {
                message: format!("the provider's reference key at {name} is revoked (empty p=)"),
            },
            Read::Found { record, text, ttl } => match unusable(&record) {
                Some(why) => Reference::Broken {
                    message: format!("the provider's reference key at {name} {why}"),
                },
                None => Reference::Key { record, text, ttl },
            },
        };
        Self {
            selector,
            reference,
        }
    }

    /// Whether the provider's own record is at fault (missing, invalid, revoked).
    pub fn is_broken(&self) -> bool {
        matches!(self.reference, Reference::Broken { .. })
    }
}

/// Fetches the provider's reference key of every selector (once per check round, shared by
/// every tenant).
pub async fn fetch_provider_keys<D: Dns>(
    dns: &D,
    selectors: &[ProviderSelector],
) -> Vec<ProviderKey> {
    let lookups =
        futures::future::join_all(selectors.iter().map(|s| lookup_key(dns, &s.reference_name)))
            .await;
    selectors
        .iter()
        .cloned()
        .zip(lookups.iter())
        .map(|(selector, lookup)| ProviderKey::from_lookup(selector, lookup))
        .collect()
}

/// The outcome for one selector (design §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SelectorOutcome {
    /// The tenant publishes the provider's key and the signing domain aligns with From.
    Aligned,
    /// No key record at the selector name (NXDOMAIN or NODATA, after any CNAME).
    Missing,
    /// A key record that is not the provider's key.
    KeyMismatch,
    /// A key record with an empty `p=`: the key is revoked.
    Revoked,
    /// Not a usable key record: unparsable, several TXT records, not for email or SHA-256,
    /// or a broken CNAME chain.
    Invalid,
    /// The signing domain does not align with the From domain under `adkim`.
    DomainNotAligned,
    /// The provider's own reference record is missing, invalid or revoked (no verdict).
    ProviderKeyBroken,
    /// A DNS lookup got no answer, or `adkim` is unknown and would decide (no verdict).
    TemporaryFailure,
}

impl SelectorOutcome {
    /// The outcome as a CamelCase constant.
    pub fn as_str(self) -> &'static str {
        match self {
            SelectorOutcome::Aligned => "Aligned",
            SelectorOutcome::Missing => "Missing",
            SelectorOutcome::KeyMismatch => "KeyMismatch",
            SelectorOutcome::Revoked => "Revoked",
            SelectorOutcome::Invalid => "Invalid",
            SelectorOutcome::DomainNotAligned => "DomainNotAligned",
            SelectorOutcome::ProviderKeyBroken => "ProviderKeyBroken",
            SelectorOutcome::TemporaryFailure => "TemporaryFailure",
        }
    }

    /// Whether the outcome is a verdict on the tenant (not a temporary or provider failure).
    pub fn is_definitive(self) -> bool {
        !matches!(
            self,
            SelectorOutcome::TemporaryFailure | SelectorOutcome::ProviderKeyBroken
        )
    }
}

impl std::fmt::Display for SelectorOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one check found for one selector of one domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorReport {
    pub selector: String,
    /// The name queried: `<selector>._domainkey.<signing domain>`.
    pub name: String,
    pub outcome: SelectorOutcome,
    /// One sentence explaining the outcome.
    pub message: String,
    /// The tenant's key record, verbatim (character-strings joined), when exactly one was
    /// found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The CNAME targets followed from `name`, in order (empty when the name holds the
    /// record itself, or when the DNS layer follows CNAMEs out of sight).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cname_chain: Vec<String>,
    /// The smallest TTL, in seconds, of the CNAMEs followed and the TXT answer, as the
    /// resolver gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Oddities of the record receivers tolerate (testing mode, unknown values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Whether the signing domain aligns with the From domain, as far as DNS told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlignment {
    Aligned,
    NotAligned {
        mode: AlignmentMode,
    },
    /// `adkim` is unknown and the answer depends on it.
    Unknown,
}

/// Alignment of the signing domain (`d=`) with the From domain (RFC 7489 §3.1.1) when the
/// DMARC `adkim` mode is `adkim`, or unknown (`None`) because the policy could not be
/// fetched. Without any DMARC record pass the default, relaxed.
pub fn signing_alignment(
    signing_domain: &str,
    from_domain: &str,
    adkim: Option<AlignmentMode>,
) -> SigningAlignment {
    let check = |mode| domains_align(signing_domain, from_domain, mode);
    match adkim {
        Some(mode) if check(mode) => SigningAlignment::Aligned,
        Some(mode) => SigningAlignment::NotAligned { mode },
        None if check(AlignmentMode::Strict) => SigningAlignment::Aligned,
        None if !check(AlignmentMode::Relaxed) => SigningAlignment::NotAligned {
            mode: AlignmentMode::Relaxed,
        },
        None => SigningAlignment::Unknown,
    }
}

/// What a lookup says about the single key record it should find.
enum Read {
    Found {
        record: KeyRecord,
        text: String,
        ttl: Option<u32>,
    },
    /// Definitively no usable record: the outcome and one sentence.
    Broken(SelectorOutcome, String),
    Temporary(String),
}

fn read_record(name: &str, lookup: &KeyLookup) -> Read {
    let via = |chain: &[String]| match chain.last() {
        Some(end) => format!("{name} (through CNAME to {end})"),
        None => name.to_string(),
    };
    match lookup {
        KeyLookup::TempError {
            name: failed,
            error,
            ..
        } => Read::Temporary(format!("the lookup of {failed} failed: {error}")),
        KeyLookup::BrokenChain { chain, looped } => {
            let what = if *looped {
                "a CNAME loop".to_string()
            } else {
                format!("a CNAME chain longer than {}", super::MAX_CNAME_CHAIN)
            };
            Read::Broken(
                SelectorOutcome::Invalid,
                format!("{name} leads into {what} ({})", chain.join(" -> ")),
            )
        }
        KeyLookup::Void {
            nxdomain, chain, ..
        } => {
            let what = if *nxdomain {
                "does not exist"
            } else {
                "has no TXT record"
            };
            Read::Broken(SelectorOutcome::Missing, format!("{} {what}", via(chain)))
        }
        KeyLookup::Records { texts, chain, ttl } => match texts.as_slice() {
            [only] => {
                let text = String::from_utf8_lossy(only).into_owned();
                match record::parse_bytes(only) {
                    Ok(record) => Read::Found {
                        record,
                        text,
                        ttl: *ttl,
                    },
                    Err(error) => Read::Broken(
                        SelectorOutcome::Invalid,
                        format!(
                            "the record at {} is not a DKIM key record: {error}",
                            via(chain)
                        ),
                    ),
                }
            }
            several => Read::Broken(
                SelectorOutcome::Invalid,
                format!(
                    "{} holds {} TXT records; a selector must hold exactly one key record",
                    via(chain),
                    several.len()
                ),
            ),
        },
    }
}

/// Why a parsed key cannot verify the provider's signatures, if it cannot.
fn unusable(record: &KeyRecord) -> Option<&'static str> {
    if !record.allows_email() {
        Some("is restricted to services other than email (s=)")
    } else if !record.allows_sha256() {
        Some("does not allow SHA-256 signatures (h=)")
    } else {
        None
    }
}

/// The outcome for one selector from its facts (pure; the rules in the module documentation).
pub fn decide_selector(
    provider: &ProviderKey,
    name: &str,
    lookup: &KeyLookup,
    alignment: SigningAlignment,
    signing_domain: &str,
    from_domain: &str,
) -> SelectorReport {
    let selector = &provider.selector.selector;
    let read = read_record(name, lookup);
    let (record, warnings) = match &read {
        Read::Found { record, text, .. } => (Some(text.clone()), record.warnings.clone()),
        _ => (None, Vec::new()),
    };
    let outcome = |outcome: SelectorOutcome, message: String| SelectorReport {
        selector: selector.clone(),
        name: name.to_string(),
        outcome,
        message,
        record: record.clone(),
        cname_chain: lookup.chain().to_vec(),
        ttl: lookup.ttl(),
        warnings: warnings.clone(),
    };
    if let SigningAlignment::NotAligned { mode } = alignment {
        return outcome(
            SelectorOutcome::DomainNotAligned,
            format!(
                "the signing domain {signing_domain} does not align with the From domain {from_domain} under {mode} adkim"
            ),
        );
    }
    let tenant = match read {
        Read::Temporary(message) => return outcome(SelectorOutcome::TemporaryFailure, message),
        Read::Broken(kind, message) => return outcome(kind, message),
        Read::Found { record, .. } => record,
    };
    if tenant.is_revoked() {
        return outcome(
            SelectorOutcome::Revoked,
            format!("the key at {name} is revoked (empty p=)"),
        );
    }
    if let Some(why) = unusable(&tenant) {
        return outcome(SelectorOutcome::Invalid, format!("the key at {name} {why}"));
    }
    let reference = match &provider.reference {
        Reference::Temporary { message } => {
            return outcome(SelectorOutcome::TemporaryFailure, message.clone());
        }
        Reference::Broken { message } => {
            return outcome(SelectorOutcome::ProviderKeyBroken, message.clone());
        }
        Reference::Key { record, .. } => record,
    };
    if !tenant.same_key(reference) {
        let mut message = format!(
            "the key at {name} is not the provider's key for selector {selector} (published at {})",
            provider.selector.reference_name
        );
        if tenant.key_type() != reference.key_type() {
            let _ = write!(
                message,
                "; key type {} where the provider uses {}",
                tenant.key_type(),
                reference.key_type()
            );
        }
        return outcome(SelectorOutcome::KeyMismatch, message);
    }
    if alignment == SigningAlignment::Unknown {
        return outcome(
            SelectorOutcome::TemporaryFailure,
            format!(
                "the key matches, but the DMARC policy of {from_domain} could not be fetched and its adkim decides whether {signing_domain} aligns"
            ),
        );
    }
    outcome(
        SelectorOutcome::Aligned,
        format!("{name} publishes the provider's key for selector {selector}"),
    )
}

/// Checks one selector of one domain: looks up the tenant's record and decides.
pub async fn check_selector<D: Dns>(
    dns: &D,
    provider: &ProviderKey,
    signing_domain: &str,
    from_domain: &str,
    adkim: Option<AlignmentMode>,
) -> SelectorReport {
    let name = selector_name(&provider.selector.selector, signing_domain);
    let lookup = lookup_key(dns, &name).await;
    let alignment = signing_alignment(signing_domain, from_domain, adkim);
    decide_selector(
        provider,
        &name,
        &lookup,
        alignment,
        &normalize_domain(signing_domain),
        &normalize_domain(from_domain),
    )
}

/// State of the DKIM path for one sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DkimState {
    /// The provider configures no DKIM selector: the path is off.
    Off,
    /// At least one selector is aligned.
    Aligned,
    /// Every selector has a definitive failure.
    Unaligned,
    /// No selector aligned and at least one lookup got no answer (no verdict).
    TemporaryFailure,
    /// No selector aligned and the provider's own reference key is broken (no verdict).
    ProviderBroken,
}

impl DkimState {
    /// The state as a CamelCase constant.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimState::Off => "Off",
            DkimState::Aligned => "Aligned",
            DkimState::Unaligned => "Unaligned",
            DkimState::TemporaryFailure => "TemporaryFailure",
            DkimState::ProviderBroken => "ProviderBroken",
        }
    }
}

/// The DKIM path's verdict for one sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimVerdict {
    pub state: DkimState,
    /// One sentence explaining the state.
    pub message: String,
}

/// Everything the DKIM check found for one sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimReport {
    /// The domain the provider signs as (`d=`), where the selectors are looked up.
    pub signing_domain: String,
    pub verdict: DkimVerdict,
    /// One entry per provider selector, in configuration order.
    pub selectors: Vec<SelectorReport>,
}

/// Combines the selectors' outcomes into the path's verdict (pure; the rule in the module
/// documentation).
pub fn dkim_path(selectors: &[SelectorReport]) -> DkimVerdict {
    let with = |outcome: fn(SelectorOutcome) -> bool| -> Vec<&SelectorReport> {
        selectors.iter().filter(|s| outcome(s.outcome)).collect()
    };
    let names = |list: &[&SelectorReport]| {
        list.iter()
            .map(|s| s.selector.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let messages = |list: &[&SelectorReport]| {
        list.iter()
            .map(|s| format!("{}: {}", s.selector, s.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let verdict = |state, message| DkimVerdict { state, message };
    if selectors.is_empty() {
        return verdict(
            DkimState::Off,
            "the provider configures no DKIM selector".to_string(),
        );
    }
    let aligned = with(|o| o == SelectorOutcome::Aligned);
    if !aligned.is_empty() {
        return verdict(
            DkimState::Aligned,
            format!(
                "the provider's key is published for selector {}",
                names(&aligned)
            ),
        );
    }
    let temporary = with(|o| o == SelectorOutcome::TemporaryFailure);
    if !temporary.is_empty() {
        return verdict(DkimState::TemporaryFailure, messages(&temporary));
    }
    let broken = with(|o| o == SelectorOutcome::ProviderKeyBroken);
    if !broken.is_empty() {
        return verdict(DkimState::ProviderBroken, messages(&broken));
    }
    let all: Vec<&SelectorReport> = selectors.iter().collect();
    verdict(DkimState::Unaligned, messages(&all))
}

/// Checks every provider selector for one sender: the selector records under
/// `signing_domain` against `provider_keys` (from [`fetch_provider_keys`]), alignment with
/// `from_domain` under `adkim` (`None`: the DMARC policy could not be fetched).
pub async fn check_domain<D: Dns>(
    dns: &D,
    provider_keys: &[ProviderKey],
    signing_domain: &str,
    from_domain: &str,
    adkim: Option<AlignmentMode>,
) -> DkimReport {
    let selectors = futures::future::join_all(
        provider_keys
            .iter()
            .map(|key| check_selector(dns, key, signing_domain, from_domain, adkim)),
    )
    .await;
    DkimReport {
        signing_domain: normalize_domain(signing_domain),
        verdict: dkim_path(&selectors),
        selectors,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::dkim::lookup::MAX_CNAME_CHAIN;
    use crate::dns::{Answer, CnameTarget, DnsError};

    /// A DNS of fixed answers: CNAMEs seen (unlike the shared resolver), TXT at chain ends.
    #[derive(Default)]
    struct FakeDns {
        cnames: HashMap<String, String>,
        txt: HashMap<String, Result<Vec<Vec<u8>>, DnsError>>,
    }

    impl FakeDns {
        fn cname(mut self, name: &str, target: &str) -> Self {
            self.cnames.insert(name.to_string(), target.to_string());
            self
        }
        fn txt(mut self, name: &str, text: &str) -> Self {
            self.txt
                .entry(name.to_string())
                .or_insert_with(|| Ok(Vec::new()))
                .as_mut()
                .expect("no error set")
                .push(text.as_bytes().to_vec());
            self
        }
        fn fail(mut self, name: &str, error: DnsError) -> Self {
            self.txt.insert(name.to_string(), Err(error));
            self
        }
    }

    impl Dns for FakeDns {
        async fn txt(&self, name: &str) -> Result<Answer<Vec<u8>>, DnsError> {
            match self.txt.get(name) {
                Some(Ok(texts)) => Ok(Answer::new(texts.clone(), Some(300))),
                Some(Err(e)) => Err(e.clone()),
                None => Ok(Answer::empty(true, Some(60))),
            }
        }
        async fn a(&self, _: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
            Ok(Answer::empty(true, None))
        }
        async fn aaaa(&self, _: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
            Ok(Answer::empty(true, None))
        }
        async fn mx(&self, _: &str) -> Result<Answer<String>, DnsError> {
            Ok(Answer::empty(true, None))
        }
        async fn ptr(&self, _: &str) -> Result<Answer<String>, DnsError> {
            Ok(Answer::empty(true, None))
        }
        async fn spf99(&self, _: &str) -> Result<Answer<Vec<u8>>, DnsError> {
            Ok(Answer::empty(true, None))
        }
        async fn cname(&self, name: &str) -> Result<Option<CnameTarget>, DnsError> {
            Ok(self.cnames.get(name).map(|target| CnameTarget {
                target: target.clone(),
                ttl: Some(3600),
            }))
        }
    }

    const KEY_A: &str = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQ==";
    const KEY_B: &str = "v=DKIM1; k=rsa; p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const REF: &str = "hd1._domainkey.dkim.provider.example";
    const NAME: &str = "hd1._domainkey.customer.example";

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn check(dns: &FakeDns, from: &str, adkim: Option<AlignmentMode>) -> DkimReport {
        block_on(async {
            let keys = fetch_provider_keys(
                dns,
                &[ProviderSelector::new("hd1", "dkim.provider.example")],
            )
            .await;
            check_domain(dns, &keys, "customer.example", from, adkim).await
        })
    }

    fn outcome(dns: &FakeDns) -> SelectorReport {
        check(dns, "customer.example", Some(AlignmentMode::Relaxed))
            .selectors
            .remove(0)
    }

    #[test]
    fn cname_to_the_provider_record_is_aligned() {
        let dns = FakeDns::default().txt(REF, KEY_A).cname(NAME, REF);
        let report = check(&dns, "customer.example", Some(AlignmentMode::Strict));
        assert_eq!(report.verdict.state, DkimState::Aligned);
        let selector = &report.selectors[0];
        assert_eq!(selector.outcome, SelectorOutcome::Aligned);
        assert_eq!(selector.cname_chain, vec![REF.to_string()]);
        assert_eq!(selector.record.as_deref(), Some(KEY_A));
        assert_eq!(
            selector.ttl,
            Some(300),
            "the smaller of the CNAME and TXT TTLs"
        );
    }

    #[test]
    fn copied_key_with_other_text_is_aligned() {
        let copy = "k=rsa;  p=MIGfMA0GCSqG SIb3DQEBAQUAA4GNADCBiQ";
        let dns = FakeDns::default().txt(REF, KEY_A).txt(NAME, copy);
        assert_eq!(outcome(&dns).outcome, SelectorOutcome::Aligned);
    }

    #[test]
    fn tenant_side_outcomes() {
        let base = || FakeDns::default().txt(REF, KEY_A);
        let cases = [
            (base(), SelectorOutcome::Missing),
            (base().txt(NAME, KEY_B), SelectorOutcome::KeyMismatch),
            (base().txt(NAME, "v=DKIM1; p="), SelectorOutcome::Revoked),
            (base().txt(NAME, "hello world"), SelectorOutcome::Invalid),
            (
                base().txt(NAME, KEY_A).txt(NAME, KEY_A),
                SelectorOutcome::Invalid,
            ),
            (
                base().txt(NAME, "s=x-other; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQ=="),
                SelectorOutcome::Invalid,
            ),
            (
                base().fail(NAME, DnsError::Rcode("SERVFAIL".to_string())),
                SelectorOutcome::TemporaryFailure,
            ),
            (
                base().cname(NAME, "a.example").cname("a.example", NAME),
                SelectorOutcome::Invalid,
            ),
            (
                base().cname(NAME, "gone.provider.example"),
                SelectorOutcome::Missing,
            ),
        ];
        for (dns, expected) in cases {
            let report = outcome(&dns);
            assert_eq!(report.outcome, expected, "{report:?}");
            assert!(!report.message.is_empty());
        }
    }

    #[test]
    fn cname_loops_and_long_chains_are_named() {
        let dns = FakeDns::default()
            .txt(REF, KEY_A)
            .cname(NAME, "a.example")
            .cname("a.example", NAME);
        let report = outcome(&dns);
        assert!(report.message.contains("CNAME loop"), "{}", report.message);
        assert_eq!(report.cname_chain, vec!["a.example", NAME]);

        let mut dns = FakeDns::default().txt(REF, KEY_A).cname(NAME, "c0.example");
        for i in 0..MAX_CNAME_CHAIN {
            dns = dns.cname(&format!("c{i}.example"), &format!("c{}.example", i + 1));
        }
        let report = outcome(&dns);
        assert_eq!(report.outcome, SelectorOutcome::Invalid);
        assert!(report.message.contains("longer than"), "{}", report.message);

        let mut dns = FakeDns::default().txt(REF, KEY_A).cname(NAME, "c0.example");
        for i in 0..MAX_CNAME_CHAIN - 2 {
            dns = dns.cname(&format!("c{i}.example"), &format!("c{}.example", i + 1));
        }
        // Exactly MAX_CNAME_CHAIN hops from the selector name to the provider's record.
        dns = dns.cname(&format!("c{}.example", MAX_CNAME_CHAIN - 2), REF);
        let report = outcome(&dns);
        assert_eq!(report.outcome, SelectorOutcome::Aligned, "{report:?}");
        assert_eq!(report.cname_chain.len(), MAX_CNAME_CHAIN);
    }

    #[test]
    fn the_provider_reference_decides_only_for_a_usable_tenant_key() {
        // Reference missing: the provider's fault, no verdict.
        let dns = FakeDns::default().txt(NAME, KEY_A);
        let report = check(&dns, "customer.example", Some(AlignmentMode::Relaxed));
        assert_eq!(
            report.selectors[0].outcome,
            SelectorOutcome::ProviderKeyBroken
        );
        assert_eq!(report.verdict.state, DkimState::ProviderBroken);
        // Reference revoked or garbage: the same.
        for text in ["v=DKIM1; p=", "nonsense"] {
            let dns = FakeDns::default().txt(REF, text).txt(NAME, KEY_A);
            assert_eq!(outcome(&dns).outcome, SelectorOutcome::ProviderKeyBroken);
        }
        // Reference temporary: no verdict either.
        let dns = FakeDns::default()
            .fail(REF, DnsError::Timeout)
            .txt(NAME, KEY_A);
        assert_eq!(outcome(&dns).outcome, SelectorOutcome::TemporaryFailure);
        // A tenant with no record is the tenant's fault whatever the provider's state.
        let dns = FakeDns::default().fail(REF, DnsError::Timeout);
        assert_eq!(outcome(&dns).outcome, SelectorOutcome::Missing);
    }

    #[test]
    fn signing_domain_alignment_under_adkim() {
        use AlignmentMode::*;
        let dns = FakeDns::default().txt(REF, KEY_A).cname(NAME, REF);
        let sub = "mail.customer.example";
        let relaxed = check(&dns, sub, Some(Relaxed));
        assert_eq!(relaxed.selectors[0].outcome, SelectorOutcome::Aligned);
        let strict = check(&dns, sub, Some(Strict));
        assert_eq!(
            strict.selectors[0].outcome,
            SelectorOutcome::DomainNotAligned
        );
        assert_eq!(strict.verdict.state, DkimState::Unaligned);
        // The record is still shown.
        assert_eq!(strict.selectors[0].record.as_deref(), Some(KEY_A));
        let unknown = check(&dns, sub, None);
        assert_eq!(
            unknown.selectors[0].outcome,
            SelectorOutcome::TemporaryFailure
        );
        assert_eq!(
            check(&dns, "customer.example", None).verdict.state,
            DkimState::Aligned
        );
        let other = check(&dns, "other.example", None);
        assert_eq!(
            other.selectors[0].outcome,
            SelectorOutcome::DomainNotAligned
        );
    }

    fn report(selector: &str, outcome: SelectorOutcome) -> SelectorReport {
        SelectorReport {
            selector: selector.to_string(),
            name: selector_name(selector, "customer.example"),
            outcome,
            message: format!("{outcome}"),
            record: None,
            cname_chain: Vec::new(),
            ttl: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn path_rule() {
        use SelectorOutcome::*;
        let state = |outcomes: &[SelectorOutcome]| {
            let selectors: Vec<SelectorReport> = outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| report(&format!("s{i}"), *o))
                .collect();
            dkim_path(&selectors).state
        };
        assert_eq!(state(&[]), DkimState::Off);
        assert_eq!(state(&[Missing, Aligned]), DkimState::Aligned);
        assert_eq!(state(&[TemporaryFailure, Aligned]), DkimState::Aligned);
        assert_eq!(
            state(&[Missing, TemporaryFailure]),
            DkimState::TemporaryFailure
        );
        assert_eq!(
            state(&[ProviderKeyBroken, TemporaryFailure]),
            DkimState::TemporaryFailure
        );
        assert_eq!(
            state(&[KeyMismatch, ProviderKeyBroken]),
            DkimState::ProviderBroken
        );
        assert_eq!(
            state(&[Missing, KeyMismatch, Revoked, Invalid, DomainNotAligned]),
            DkimState::Unaligned
        );
    }

    #[test]
    fn reports_serialize_in_camel_case() {
        let json = serde_json::to_value(report("hd1", SelectorOutcome::KeyMismatch)).unwrap();
        assert_eq!(json["outcome"], "KeyMismatch");
        assert_eq!(json["name"], "hd1._domainkey.customer.example");
        assert!(json.get("cnameChain").is_none(), "empty lists are left out");
        let schema = schemars::schema_for!(SelectorReport);
        let text = serde_json::to_string(&schema).unwrap();
        assert!(text.contains("cnameChain") && text.contains("ProviderKeyBroken"));
    }

    #[test]
    fn provider_selector_names() {
        let s = ProviderSelector::new("Zendesk1", "Zendesk.com.");
        assert_eq!(s.selector, "zendesk1");
        assert_eq!(s.reference_name, "zendesk1._domainkey.zendesk.com");
        let m = ProviderSelector::with_reference_name("mte1", "dkim1.mandrillapp.com");
        assert_eq!(m.reference_name, "dkim1.mandrillapp.com");
    }
}
