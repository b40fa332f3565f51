//! The `HelpdeskTenant` custom resource (docs/design.md §4): the only place its schema is defined.
//!
//! Doc comments on the types and fields become the descriptions `kubectl explain` shows.
//! Validation lives in the schema so the API server rejects a bad spec before the operator
//! ever sees it.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::dkim::{DkimState, SelectorOutcome};

/// API group of every kind this operator serves.
pub const GROUP: &str = "mail.helpdesk.io";
/// Field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "helpdesk-mail-operator";
/// Annotation whose every new value forces a check now.
pub const RECHECK_ANNOTATION: &str = "mail.helpdesk.io/recheck";

/// Condition types written to `status.conditions`.
pub mod condition {
    /// kstatus readiness: True once the latest spec has been checked and acted on.
    pub const READY: &str = "Ready";
    /// Whether every sender's SPF authorizes the provider and aligns under DMARC.
    pub const SPF_ALIGNED: &str = "SpfAligned";
    /// Whether at least one sender currently sends as the fallback sender.
    pub const FALLBACK_ACTIVE: &str = "FallbackActive";
}

/// A helpdesk tenant whose outgoing mail the provider sends with the tenant's own From
/// addresses. The operator continuously checks that each sender's SPF record authorizes the
/// provider's SMTP egress and that DMARC would accept the mail; while a sender is not aligned,
/// its mail settings switch to the provider's fallback sender with Reply-To set to the tenant's
/// address, and switch back once alignment has held long enough.
// Printer columns repeat `type_`; the lint mistakes them for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mail.helpdesk.io",
    version = "v1alpha1",
    kind = "HelpdeskTenant",
    plural = "helpdesktenants",
    singular = "helpdesktenant",
    shortname = "hdt",
    category = "helpdesk",
    namespaced,
    status = "HelpdeskTenantStatus",
    derive = "PartialEq",
    doc = "A helpdesk tenant whose mail the provider sends with the tenant's own From addresses, \
           kept deliverable by continuous SPF and DMARC alignment checks.",
    printcolumn(
        name = "Aligned",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="SpfAligned")].status"#,
        description = "Whether every sender's SPF authorizes the provider"
    ),
    printcolumn(
        name = "Fallback",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="FallbackActive")].status"#,
        description = "Whether any sender currently uses the fallback sender"
    ),
    printcolumn(
        name = "Senders",
        type_ = "string",
        json_path = ".status.alignedSenders",
        description = "Aligned senders of all senders"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="SpfAligned")].reason"#,
        description = "Reason of the SpfAligned condition",
        priority = 1
    ),
    printcolumn(
        name = "Last Check",
        type_ = "date",
        json_path = ".status.lastCheckTime",
        description = "When the senders were last checked with a change in outcome"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HelpdeskTenantSpec {
    /// The From addresses the helpdesk sends this tenant's mail with, 1 to 100, each address
    /// at most once (compared case-insensitively). The first sender is the tenant's primary
    /// address: the `from` and `reply-to` keys of the mail settings describe it.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(
        validation = Rule::new("self.all(s, self.exists_one(t, t.address.lowerAscii() == s.address.lowerAscii()))")
            .message("each sender address may appear only once")
    )]
    pub senders: Vec<Sender>,

    /// Overrides the operator's `--default-sender` for this tenant: the From address used
    /// while a sender falls back. May contain `{tenant}` and `{namespace}`, replaced by this
    /// resource's name and namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[A-Za-z0-9.!#$%&*+/=?^_`{|}~\\'-]+@[A-Za-z0-9{}]([A-Za-z0-9{}.-]*[A-Za-z0-9}])?$')"
    ).message("fallbackSender must be an email address such as notifications@provider.example; {tenant} and {namespace} may appear in it"))]
    pub fallback_sender: Option<String>,

    /// `Enforce` (the default) switches the mail settings to the fallback sender while a
    /// sender is not aligned. `Observe` only checks and reports what it would do; it never
    /// writes the mail settings.
    #[serde(default)]
    pub mode: Mode,

    /// Which alignment paths must hold for a sender to keep its own From address: `Spf` (the
    /// default: SPF passes for every provider address and aligns with From), `SpfOrDkim` (either
    /// SPF or the provider's DKIM signature aligns, which is what DMARC itself requires) or
    /// `SpfAndDkim` (both, as large mailbox providers ask of bulk senders). The DKIM path needs
    /// the operator's `--provider-dkim-selector` and `--provider-dkim-domain`; without them only
    /// SPF is checked.
    #[serde(default)]
    pub required_alignment: RequiredAlignment,

    /// How often the senders are re-checked, as a duration such as `15m`, `1h` or `90s`
    /// (units `h`, `m`, `s`). Production tenants should use at least `1m`; seconds are
    /// accepted so tests can run fast. Default: the operator's `--check-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$') && self != '' && duration(self) >= duration('1s')")
        .message("checkInterval must be a duration such as 15m, 1h30m or 30s, at least 1s"))]
    pub check_interval: Option<String>,

    /// Consecutive definitive failures (Unaligned verdicts) of a sender that currently sends as
    /// the tenant before it switches to the fallback sender. Temporary DNS failures never count.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub failure_threshold: u32,

    /// Consecutive Aligned verdicts of a falling-back sender before it switches back to the
    /// tenant's address. It also waits until `validAfter` (first Aligned check of the streak plus
    /// the SPF record's TTL, at most one hour) so receivers no longer cache the old record.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub success_threshold: u32,

    /// Stops checking while true. The mail settings keep their current values.
    #[serde(default)]
    pub suspend: bool,

    /// Where the operator writes the tenant's mail settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_settings: Option<MailSettings>,
}

fn default_threshold() -> u32 {
    2
}

impl HelpdeskTenantSpec {
    /// A spec with these sender addresses (envelope domain: the address's domain) and every other
    /// field at the default an omitted field gets from the API server.
    pub fn with_senders<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            senders: addresses
                .into_iter()
                .map(|address| Sender {
                    address: address.to_owned(),
                    envelope_domain: None,
                })
                .collect(),
            fallback_sender: None,
            mode: Mode::default(),
            required_alignment: RequiredAlignment::default(),
            check_interval: None,
            failure_threshold: default_threshold(),
            success_threshold: default_threshold(),
            suspend: false,
            mail_settings: None,
        }
    }
}

/// One From address of the tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.envelopeDomain) || self.envelopeDomain.lowerAscii() == self.address.substring(self.address.lastIndexOf('@') + 1).lowerAscii() || self.envelopeDomain.lowerAscii().endsWith('.' + self.address.substring(self.address.lastIndexOf('@') + 1).lowerAscii())"
).message("envelopeDomain must be the address's domain or a subdomain of it"))]
pub struct Sender {
    /// The From address, e.g. `support@customer.example`.
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[A-Za-z0-9.!#$%&*+/=?^_`{|}~\\'-]+@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')"
    ).message("address must be an email address such as support@customer.example"))]
    pub address: String,

    /// The MAIL FROM (envelope) domain the provider uses for this sender: the address's domain
    /// (the default) or a subdomain of it, such as `bounce.customer.example`. SPF is checked on
    /// this domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\\\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')"
    ).message("envelopeDomain must be a domain name such as bounce.customer.example"))]
    pub envelope_domain: Option<String>,
}

/// Whether the operator acts on its verdicts.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Mode {
    /// Switch the mail settings to the fallback sender while unaligned.
    #[default]
    Enforce,
    /// Report only; never write the mail settings.
    Observe,
}

/// The alignment paths a sender needs (docs/design.md §5).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum RequiredAlignment {
    /// SPF must align.
    #[default]
    Spf,
    /// SPF or DKIM must align (DMARC's own rule).
    SpfOrDkim,
    /// SPF and DKIM must both align.
    SpfAndDkim,
}

/// Where the tenant's mail settings live.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailSettings {
    /// Name of the ConfigMap, in the tenant's namespace, holding the mail settings.
    /// Default: `<tenant name>-mail-settings`. The operator owns the keys `sender-mode`, `from`,
    /// `reply-to` and `senders.json` and leaves every other key alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub config_map_name: Option<String>,
}

/// What the operator last observed and decided.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelpdeskTenantStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the senders were checked by the check that last changed this status. Checks that
    /// find nothing new do not rewrite the status, so this can be older than the latest check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,

    /// When the next check was due as of the last status write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_time: Option<Time>,

    /// `Ready` (kstatus), `SpfAligned` (True, False, or Unknown on a temporary DNS failure) and
    /// `FallbackActive`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Aligned senders of all senders, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aligned_senders: Option<String>,

    /// The last value of the `mail.helpdesk.io/recheck` annotation that forced a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recheck: Option<String>,

    /// Per sender: the verdict, the effective From and the SPF and DMARC detail behind it.
    #[serde(default)]
    pub senders: Vec<SenderStatus>,
}

/// Verdict state of one sender.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SenderState {
    /// Not yet checked with a definitive result; sends as the fallback sender.
    Pending,
    /// The latest check found SPF passing for every egress address and DMARC alignment.
    Aligned,
    /// The latest check found a definitive failure.
    Unaligned,
    /// The latest check hit a temporary DNS failure; the sender keeps its current From.
    TemporaryFailure,
}

/// Which From address a sender uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SendingAs {
    /// The tenant's own address.
    Tenant,
    /// The fallback sender, with Reply-To set to the tenant's address.
    Fallback,
}

/// Status of one sender.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SenderStatus {
    /// The configured From address.
    pub address: String,
    /// The MAIL FROM domain that SPF is checked on.
    pub envelope_domain: String,
    /// `Pending`, `Aligned`, `Unaligned` or `TemporaryFailure`.
    pub state: SenderState,
    /// Whether mail goes out as the tenant (`tenant`) or as the fallback sender (`fallback`).
    /// In Observe mode this is what the operator would use.
    pub sending_as: SendingAs,
    /// The From address mail for this sender uses (or would use, in Observe mode).
    pub effective_from: String,
    /// CamelCase reason of the latest verdict, e.g. `ProviderNotAuthorized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// One sentence explaining the latest verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Consecutive definitive failures, counted up to the failure threshold; a sender on the
    /// fallback sits at the threshold.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Consecutive Aligned verdicts, counted up to the success threshold.
    #[serde(default)]
    pub consecutive_successes: u32,
    /// Earliest time a falling-back sender may return to the tenant's address: the first
    /// Aligned check of the current streak plus the SPF record's TTL, at most one hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_after: Option<Time>,
    /// SPF evaluation of the envelope domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<SpfStatus>,
    /// DMARC policy of the From domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<DmarcStatus>,
    /// The tenant's SPF record with the provider include added, when it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_record: Option<SuggestedRecordStatus>,
    /// The SPF and DMARC records this sender's domains published, newest last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<RecordHistory>,
    /// The DKIM path: whether the tenant publishes the provider's key under each selector.
    /// Absent while the operator configures no DKIM selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimStatus>,
}

/// DKIM detail of one sender.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimStatus {
    /// `Aligned`, `Unaligned`, `TemporaryFailure` or `ProviderBroken`.
    pub state: DkimState,
    /// One sentence explaining the state.
    pub message: String,
    /// One entry per provider selector.
    #[serde(default)]
    pub selectors: Vec<DkimSelectorStatus>,
}

/// One provider selector under the tenant's domain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimSelectorStatus {
    /// The selector, e.g. `hd1`.
    pub selector: String,
    /// `Aligned`, `Missing`, `KeyMismatch`, `Revoked`, `Invalid`, `DomainNotAligned`,
    /// `ProviderKeyBroken` or `TemporaryFailure`.
    pub outcome: SelectorOutcome,
    /// One sentence explaining the outcome.
    pub message: String,
    /// The key record found at `<selector>._domainkey.<domain>`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

/// The last records of a sender's domains, each kept from the check that first saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordHistory {
    /// SPF records of the envelope domain, at most 5, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub spf: Vec<RecordHistoryEntry>,
    /// DMARC records of the From domain, at most 5, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub dmarc: Vec<RecordHistoryEntry>,
}

/// One record of a [`RecordHistory`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordHistoryEntry {
    /// A short hash of the record text (16 hex digits), or `none` while no record is
    /// published.
    #[schemars(length(max = 16))]
    pub hash: String,
    /// The check that first saw this record.
    pub first_seen: Time,
    /// DNS lookups of the SPF record when first seen, of 10 (SPF only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookups: Option<u32>,
}

/// SPF detail of one sender.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpfStatus {
    /// The `v=spf1` record of the envelope domain, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// TTL in seconds of the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_ttl: Option<u32>,
    /// RFC 7208 result per provider egress address, keyed by address.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub results: ResultsByAddress,
    /// DNS-querying terms used, of 10.
    #[serde(default)]
    pub lookups: u32,
    /// Void lookups used, of 2.
    #[serde(default)]
    pub void_lookups: u32,
    /// Whether the provider's include is reachable from the record.
    #[serde(default)]
    pub provider_include_reachable: bool,
    /// Problems found in the record, one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The SPF result per egress address: a JSON object on the wire, a short sorted list in memory
/// (every stored status of a fleet holds one per sender, usually with one or two entries, and
/// a `BTreeMap` node takes over 500 bytes however few they are).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultsByAddress(Box<[(String, String)]>);

impl ResultsByAddress {
    pub fn get(&self, address: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(a, _)| a.as_str().cmp(address))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn contains_key(&self, address: &str) -> bool {
        self.get(address).is_some()
    }

    /// The entries in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(a, r)| (a.as_str(), r.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sorted by address; of two entries for one address the later wins, as in a map.
impl FromIterator<(String, String)> for ResultsByAddress {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(entries: I) -> Self {
        let mut entries: Vec<(String, String)> = entries.into_iter().collect();
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        Self(entries.into_boxed_slice())
    }
}

impl Serialize for ResultsByAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ResultsByAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = ResultsByAddress;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of SPF results keyed by address")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(1));
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(entries.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// DMARC detail of one sender.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DmarcStatus {
    /// The DMARC record, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The domain the policy was found at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_domain: Option<String>,
    /// Requested policy `p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    /// Subdomain policy `sp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp: Option<String>,
    /// SPF alignment mode: `relaxed` or `strict`.
    pub alignment_mode: String,
    /// Whether the envelope domain aligns with the From domain under that mode.
    pub envelope_aligned: bool,
    /// Unknown or obsolete tags, verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A suggested SPF record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuggestedRecordStatus {
    /// The tenant's record with `include:<provider SPF domain>` inserted before `all`.
    pub record: String,
    /// DNS-querying terms the suggested record would use, of 10.
    pub lookups: u32,
    /// Set when the change would exceed the 10-lookup limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl HelpdeskTenant {
    /// Name of the mail-settings ConfigMap.
    pub fn config_map_name(&self) -> String {
        self.spec
            .mail_settings
            .as_ref()
            .and_then(|m| m.config_map_name.clone())
            .unwrap_or_else(|| {
                format!(
                    "{}-mail-settings",
                    self.metadata.name.as_deref().unwrap_or_default()
                )
            })
    }
}

/// Parses a duration of `h`, `m` and `s` parts, such as `1h30m` or `45s`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut seen_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let factor = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(factor)?)?;
        seen_unit = true;
    }
    if !digits.is_empty() || !seen_unit {
        return None;
    }
    Some(std::time::Duration::from_secs(total))
}

/// The HelpdeskTenant CustomResourceDefinition.
pub fn crd() -> CustomResourceDefinition {
    HelpdeskTenant::crd()
}

/// The CRD as YAML, stripped of empty noise (`[]`, nulls) that GitOps tools see as drift.
/// Empty objects stay: `subresources.status: {}` is meaningful.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut value = serde_json::to_value(crd()).unwrap_or(serde_json::Value::Null);
    strip_empty(&mut value);
    serde_saphyr::to_string(&value)
}

fn strip_empty(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                strip_empty(v);
            }
            map.retain(|_, v| match v {
                Value::Null => false,
                Value::Array(a) => !a.is_empty(),
                _ => true,
            });
        }
        Value::Array(items) => items.iter_mut().for_each(strip_empty),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_by_address_read_and_write_as_an_object() {
        let results: ResultsByAddress = serde_json::from_str(
            r#"{"192.0.2.2": "fail", "192.0.2.1": "pass", "192.0.2.2": "softfail"}"#,
        )
        .expect("an object");
        assert_eq!(results.len(), 2);
        assert_eq!(results.get("192.0.2.1"), Some("pass"));
        assert_eq!(
            results.get("192.0.2.2"),
            Some("softfail"),
            "the later entry wins"
        );
        assert!(!results.contains_key("192.0.2.3"));
        assert_eq!(
            serde_json::to_string(&results).expect("serializes"),
            r#"{"192.0.2.1":"pass","192.0.2.2":"softfail"}"#
        );
        let same: ResultsByAddress = [
            ("192.0.2.2".to_owned(), "softfail".to_owned()),
            ("192.0.2.1".to_owned(), "pass".to_owned()),
        ]
        .into_iter()
        .collect();
        assert_eq!(same, results, "equal whatever the order they came in");
        assert!(serde_json::from_str::<ResultsByAddress>(r#"["pass"]"#).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("15m"),
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("1h30m5s"),
            Some(std::time::Duration::from_secs(5405))
        );
        assert_eq!(
            parse_duration("2s"),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn crd_has_names_columns_and_rules() {
        let yaml = crd_yaml().expect("crd serializes");
        for needle in [
            "helpdesktenants.mail.helpdesk.io",
            "- hdt",
            "- helpdesk",
            "x-kubernetes-list-map-keys",
            "each sender address may appear only once",
            "envelopeDomain must be the address's domain or a subdomain of it",
            "maxItems: 100",
            "priority: 1",
            "status: {}",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle}:\n{yaml}");
        }
        assert!(!yaml.contains(": []"), "empty list left in CRD");
        assert!(!yaml.contains(": null"), "null left in CRD");
    }
}
