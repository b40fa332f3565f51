//! Alignment analysis: given the provider and one sender, the verdict of design §5.
//!
//! The types here are the contract between the SPF/DMARC engine and the controller.

use std::net::IpAddr;

/// The provider's side of the check (operator-wide configuration, design §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    /// The include customers add, e.g. `spf.mailing.provider.example`.
    pub spf_domain: String,
    /// Every SMTP source address of the provider (IPv4 and IPv6).
    pub egress_ips: Vec<IpAddr>,
}

/// One sender of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderInput {
    /// The From address, e.g. `support@customer.example`.
    pub address: String,
    /// The MAIL FROM domain; the address's domain when `None`.
    pub envelope_domain: Option<String>,
}

/// SPF result of RFC 7208 §2.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpfResult {
    None,
    Neutral,
    Pass,
    Fail,
    Softfail,
    Temperror,
    Permerror,
}

/// Why a sender is definitively unaligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnalignedReason {
    /// The envelope domain publishes no SPF record.
    NoSpfRecord,
    /// The record is malformed or exceeds a limit (permerror).
    SpfPermError,
    /// The record does not authorize at least one egress address.
    ProviderNotAuthorized,
    /// The envelope domain does not align with the From domain under DMARC `aspf`.
    DomainNotAligned,
}

/// One check's verdict for one sender (design §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aligned,
    Unaligned { reason: UnalignedReason, message: String },
    TemporaryFailure { message: String },
}

/// The SPF result for one provider egress address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpResult {
    pub ip: IpAddr,
    pub result: SpfResult,
}

/// What the SPF evaluation of the envelope domain found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpfReport {
    /// The selected `v=spf1` record, verbatim.
    pub record: Option<String>,
    /// TTL in seconds of the TXT answer holding the record.
    pub record_ttl: Option<u32>,
    pub results: Vec<IpResult>,
    /// DNS-querying terms used, of 10 (the maximum over the egress addresses).
    pub lookups: u32,
    /// Void lookups used, of 2.
    pub void_lookups: u32,
    /// Whether `include:<provider spf domain>` is reachable in the include/redirect tree.
    pub provider_include_reachable: bool,
    /// Lints of design §6, one sentence each.
    pub warnings: Vec<String>,
}

/// What DMARC discovery found for the From domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmarcReport {
    pub record: Option<String>,
    /// The domain the record was found at (`_dmarc.` stripped).
    pub policy_domain: Option<String>,
    pub p: Option<String>,
    pub sp: Option<String>,
    /// `r` (relaxed, the default) or `s` (strict).
    pub aspf: char,
    /// Whether the envelope domain aligns with the From domain under `aspf`.
    pub envelope_aligned: bool,
    /// Unknown or obsolete tags, verbatim.
    pub warnings: Vec<String>,
}

/// The tenant's record with the provider include inserted (design §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuggestedRecord {
    pub record: String,
    /// DNS-querying terms the suggested record would use.
    pub lookups: u32,
    /// Set when the change would exceed 10 lookups.
    pub warning: Option<String>,
}

/// Everything one check found for one sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderCheck {
    pub address: String,
    pub envelope_domain: String,
    pub verdict: Verdict,
    pub spf: SpfReport,
    pub dmarc: DmarcReport,
    /// Present when the provider include is missing from the tree.
    pub suggested_record: Option<SuggestedRecord>,
}
