//! Alignment of one sender with the provider: the contract between the SPF/DMARC engine and
//! the controller.
//!
//! [`check`] gathers the DNS facts of one sender (SPF for every egress address, the include
//! tree, DMARC); [`verdict`] turns them into the verdict of docs/design.md §5 and the suggested
//! record of §6, as pure functions; [`vantage`] compares the resolver's SPF answer with the
//! authority's (the TTL behind `validAfter`, split verdicts).
//!
//! # Choices
//!
//! - **MAIL FROM.** SPF is evaluated with the identity `<local part of the From address>@<envelope
//!   domain>`: when the envelope domain is the address's own domain that is exactly the MAIL
//!   FROM the provider's SMTP sends, and for a separate bounce domain it is the closest guess we
//!   have (the provider's real local part is often a per-message VERP token). Only records that
//!   use the `%{s}` or `%{l}` macros can see the difference. The HELO name (the `%{h}` macro)
//!   is the provider's SPF domain, the closest public name of its SMTP servers we know.
//! - **Include tree.** Besides one evaluation per egress address, the envelope domain is
//!   evaluated once for [`PROBE_IP`], an address no record is meant to match, so every
//!   reachable term is walked: that gives the whole include tree, the worst-case lookup count
//!   the lints and the suggestion use, and whether the provider include is reachable at all.
//! - **Suggested record.** The provider include is inserted as [`crate::spf::edit`] describes.
//!   A domain without any SPF record gets `v=spf1 include:<provider> ~all`: `~all` rather than
//!   `-all` because we do not know the tenant's other senders, and a soft fail still fails
//!   DMARC for everyone else, which is what protects the domain.

use std::net::IpAddr;

use crate::api::{HelpdeskTenantSpec, RequiredAlignment};
use crate::dkim::{DkimReport, ProviderSelector};
use crate::spf::SpfResult;

pub mod check;
pub mod vantage;
pub mod verdict;

pub use check::{CheckDetail, PROBE_IP, check_sender, check_sender_detailed, mail_from};
pub use vantage::AuthorityReport;
pub use verdict::{combine, decide_verdict, domain_alignment, suggest_record};

/// The provider's side of the check (operator-wide configuration, docs/design.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// The include customers add, e.g. `spf.mailing.provider.example`.
    pub spf_domain: String,
    /// Every SMTP source address of the provider (IPv4 and IPv6).
    pub egress_ips: Vec<IpAddr>,
    /// The DKIM selectors the provider signs with; empty turns the DKIM path off.
    pub dkim_selectors: Vec<ProviderSelector>,
}

/// One sender of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderInput {
    /// The From address, e.g. `support@customer.example`.
    pub address: String,
    /// The MAIL FROM domain; the address's domain when `None`.
    pub envelope_domain: Option<String>,
    /// The paths that must align (the tenant's `spec.requiredAlignment`).
    pub required: RequiredAlignment,
}

impl SenderInput {
    /// The senders of a tenant's spec, each with the tenant's required alignment.
    pub fn of(spec: &HelpdeskTenantSpec) -> Vec<SenderInput> {
        spec.senders
            .iter()
            .map(|s| SenderInput {
                address: s.address.clone(),
                envelope_domain: s.envelope_domain.clone(),
                required: spec.required_alignment,
            })
            .collect()
    }
}

/// Why a sender is definitively unaligned.
///
/// The variant names are CamelCase status reasons (see [`UnalignedReason::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum UnalignedReason {
    /// The envelope domain publishes no SPF record.
    NoSpfRecord,
    /// The record is malformed or exceeds a limit (permerror).
    SpfPermError,
    /// The record does not authorize at least one egress address.
    ProviderNotAuthorized,
    /// The envelope domain does not align with the From domain under DMARC `aspf`.
    DomainNotAligned,
    /// DKIM is required and the tenant does not publish the provider's key, or its signing
    /// domain does not align under DMARC `adkim`.
    DkimNotAligned,
}

impl UnalignedReason {
    /// The reason as a CamelCase constant, for conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            UnalignedReason::NoSpfRecord => "NoSpfRecord",
            UnalignedReason::SpfPermError => "SpfPermError",
            UnalignedReason::ProviderNotAuthorized => "ProviderNotAuthorized",
            UnalignedReason::DomainNotAligned => "DomainNotAligned",
            UnalignedReason::DkimNotAligned => "DkimNotAligned",
        }
    }
}

/// One check's verdict for one sender (docs/design.md §5).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state")]
pub enum Verdict {
    Aligned,
    Unaligned {
        reason: UnalignedReason,
        message: String,
    },
    TemporaryFailure {
        message: String,
    },
}

/// The SPF result for one provider egress address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IpResult {
    pub ip: IpAddr,
    pub result: SpfResult,
}

/// What the SPF evaluation of the envelope domain found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpfReport {
    /// The selected `v=spf1` record, verbatim.
    pub record: Option<String>,
    /// TTL in seconds of the TXT answer holding the record: the authoritative servers' when
    /// they answered, else the largest the resolver reported.
    pub record_ttl: Option<u32>,
    pub results: Vec<IpResult>,
    /// DNS-querying terms used, of 10 (the maximum over the egress addresses).
    pub lookups: u32,
    /// Void lookups used, of 2.
    pub void_lookups: u32,
    /// Whether `include:<provider spf domain>` is reachable in the include/redirect tree.
    pub provider_include_reachable: bool,
    /// Lints of docs/design.md §6, one sentence each, and the split verdict.
    pub warnings: Vec<String>,
    /// What the envelope domain's authoritative servers answered; `None` while the
    /// authoritative check is off or the resolver itself gave no answer.
    pub authority: Option<AuthorityReport>,
}

/// What DMARC discovery found for the From domain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DmarcReport {
    pub record: Option<String>,
    /// The domain the record was found at (`_dmarc.` stripped).
    pub policy_domain: Option<String>,
    pub p: Option<String>,
    pub sp: Option<String>,
    /// `r` (relaxed, the default) or `s` (strict).
    pub aspf: char,
    /// DKIM alignment mode: `r` (relaxed, the default) or `s` (strict).
    pub adkim: char,
    /// Whether the envelope domain aligns with the From domain under `aspf`.
    pub envelope_aligned: bool,
    /// Unknown or obsolete tags, verbatim.
    pub warnings: Vec<String>,
}

impl Default for DmarcReport {
    /// No policy found: the relaxed modes apply.
    fn default() -> Self {
        Self {
            record: None,
            policy_domain: None,
            p: None,
            sp: None,
            aspf: 'r',
            adkim: 'r',
            envelope_aligned: false,
            warnings: Vec::new(),
        }
    }
}

/// The tenant's record with the provider include inserted (docs/design.md §6).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SuggestedRecord {
    pub record: String,
    /// DNS-querying terms the suggested record would use.
    pub lookups: u32,
    /// Set when the change would exceed 10 lookups.
    pub warning: Option<String>,
}

/// Everything one check found for one sender.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SenderCheck {
    pub address: String,
    pub envelope_domain: String,
    /// The verdict under the required alignment ([`combine`]).
    pub verdict: Verdict,
    /// The paths that held, when the verdict is Aligned.
    pub aligned_by: Option<AlignmentPath>,
    /// The SPF path's own verdict.
    pub spf_verdict: Verdict,
    pub spf: SpfReport,
    pub dmarc: DmarcReport,
    /// Present when the provider include is missing from the tree.
    pub suggested_record: Option<SuggestedRecord>,
    /// The DKIM path; `None` while the provider configures no selector.
    pub dkim: Option<DkimReport>,
}

/// Which alignment paths held for an Aligned sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum AlignmentPath {
    Spf,
    Dkim,
    SpfAndDkim,
}

/// Whether the envelope domain aligns with the From domain, as far as DNS told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainAlignment {
    Aligned,
    NotAligned,
    /// The DMARC policy could not be fetched and the answer depends on its `aspf`.
    Unknown,
}
