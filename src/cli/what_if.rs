//! `what-if`: every tenant's senders checked against a provider change that is not published yet
//! (docs/design.md §3).
//!
//! Each sender is checked twice with [`check_sender_detailed`], the operator's own check: once
//! against the live provider (its record as DNS serves it, the live egress set), once against
//! the proposal, where [`ProposedRecord`] serves the proposed text as the TXT record of
//! `--provider-spf-domain` and the proposed egress set replaces the live one. Both runs share
//! one caching resolver, so each tenant domain is queried once.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use super::{Output, WhatIfArgs, print, render};
use crate::alignment::{Provider, SenderInput, Verdict, check_sender_detailed};
use crate::api::HelpdeskTenant;
use crate::dns::{Answer, Dns, DnsError, Resolver};
use crate::egress::Egress;
use crate::names::normalize_domain;
use crate::spf::MAX_LOOKUPS;

/// Senders checked at once (each check runs its own lookups concurrently too).
const IN_FLIGHT: usize = 64;
/// Tenants fetched per list request.
const PAGE: u32 = 500;
/// Worst-case lookup count from which a record counts as near the limit of 10.
const NEAR_LIMIT: u32 = MAX_LOOKUPS - 1;
/// Exit status on a usage error or when the tenants or the egress cannot be read.
const EXIT_ERROR: u8 = 2;

/// A [`Dns`] that answers TXT for the provider's SPF domain with the proposed record and asks
/// the wrapped resolver for everything else.
#[derive(Clone)]
pub struct ProposedRecord<D> {
    inner: D,
    /// The provider's SPF domain, normalized.
    domain: Arc<str>,
    /// The proposed record; `None` serves the live one.
    record: Option<Arc<[u8]>>,
}

impl<D: Dns> ProposedRecord<D> {
    pub fn new(inner: D, domain: &str, record: Option<&str>) -> Self {
        Self {
            inner,
            domain: normalize_domain(domain).into(),
            record: record.map(|r| Arc::from(r.as_bytes())),
        }
    }

    fn proposed(&self, name: &str) -> Option<&Arc<[u8]>> {
        self.record
            .as_ref()
            .filter(|_| normalize_domain(name) == *self.domain)
    }
}

impl<D: Dns> Dns for ProposedRecord<D> {
    async fn txt(&self, name: &str) -> Result<Answer<Vec<u8>>, DnsError> {
        match self.proposed(name) {
            // A TTL of 0: nothing is cached from a record nobody has published.
            Some(record) => Ok(Answer::new(vec![record.to_vec()], Some(0))),
            None => self.inner.txt(name).await,
        }
    }
    async fn a(&self, name: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
        self.inner.a(name).await
    }
    async fn aaaa(&self, name: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
        self.inner.aaaa(name).await
    }
    async fn mx(&self, name: &str) -> Result<Answer<String>, DnsError> {
        self.inner.mx(name).await
    }
    async fn ptr(&self, name: &str) -> Result<Answer<String>, DnsError> {
        self.inner.ptr(name).await
    }
    async fn spf99(&self, name: &str) -> Result<Answer<Vec<u8>>, DnsError> {
        // RFC 7208 §3.1: the proposal is a TXT record; the retired type is never published.
        if self.proposed(name).is_some() {
            return Ok(Answer::empty(false, Some(0)));
        }
        self.inner.spf99(name).await
    }
}

/// One sender's verdict and lookup counts under one provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outlook {
    /// `Aligned`, `Unaligned` or `TemporaryFailure`.
    pub state: &'static str,
    /// The CamelCase reason of an Unaligned verdict.
    pub reason: Option<&'static str>,
    pub message: Option<String>,
    /// Lookups of the evaluations for the egress addresses (the status's `spf.lookups`).
    pub lookups: u32,
    /// Lookups of the worst case, an address the record does not match early.
    pub worst_case_lookups: u32,
}

/// What the proposal does to one sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Aligned now, not under the proposal: the sender would fall back.
    Breaks,
    /// The worst case would go over 10 lookups: receivers answer permerror for the tenant's
    /// other mail.
    OverLimit,
    /// Not aligned now, aligned under the proposal.
    Fixed,
    /// Another change of verdict or reason (e.g. a temporary failure).
    Changes,
    /// The worst case would reach 9 or 10 of 10 lookups.
    NearLimit,
}

impl Change {
    /// Whether the change breaks the tenant (the exit status is 1).
    pub fn breaks(self) -> bool {
        matches!(self, Change::Breaks | Change::OverLimit)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Change::Breaks => "breaks",
            Change::OverLimit => "over limit",
            Change::Fixed => "fixed",
            Change::Changes => "changes",
            Change::NearLimit => "near limit",
        }
    }
}

/// One listed sender.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub tenant: String,
    pub address: String,
    pub change: Change,
    pub now: Outlook,
    pub proposed: Outlook,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub tenants: usize,
    pub senders: usize,
    /// Suspended tenants, not checked (the operator does not check them either).
    pub suspended: usize,
    /// Tenants with a sender that breaks or goes over the limit.
    pub tenants_breaking: usize,
    pub elapsed_seconds: f64,
    pub rows: Vec<Row>,
}

/// How the proposal compares with now, or `None` when it changes nothing worth listing.
pub fn compare(now: &Outlook, proposed: &Outlook) -> Option<Change> {
    let aligned = |o: &Outlook| o.state == "Aligned";
    if aligned(now) && !aligned(proposed) {
        return Some(Change::Breaks);
    }
    if proposed.worst_case_lookups > MAX_LOOKUPS && now.worst_case_lookups <= MAX_LOOKUPS {
        return Some(Change::OverLimit);
    }
    if !aligned(now) && aligned(proposed) {
        return Some(Change::Fixed);
    }
    if (now.state, now.reason) != (proposed.state, proposed.reason) {
        return Some(Change::Changes);
    }
    if proposed.worst_case_lookups >= NEAR_LIMIT
        && proposed.worst_case_lookups > now.worst_case_lookups
    {
        return Some(Change::NearLimit);
    }
    None
}

async fn outlook<D: Dns + Clone>(dns: &D, provider: &Provider, sender: &SenderInput) -> Outlook {
    let detail = check_sender_detailed(dns, provider, sender).await;
    let (state, reason, message) = match &detail.check.verdict {
        Verdict::Aligned => ("Aligned", None, None),
        Verdict::Unaligned { reason, message } => {
            ("Unaligned", Some(reason.as_str()), Some(message.clone()))
        }
        Verdict::TemporaryFailure { message } => ("TemporaryFailure", None, Some(message.clone())),
    };
    Outlook {
        state,
        reason,
        message,
        lookups: detail.check.spf.lookups,
        worst_case_lookups: detail.tree.as_ref().map_or(0, |t| t.trace.lookups),
    }
}

/// Every HelpdeskTenant visible to the client (in `namespace` when given), page by page.
async fn list_tenants(
    client: Client,
    namespace: Option<&str>,
) -> Result<Vec<HelpdeskTenant>, kube::Error> {
    let api: Api<HelpdeskTenant> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut tenants = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        tenants.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(tenants),
        }
    }
}

/// Checks every sender of `tenants` against the live provider and the proposal.
pub async fn evaluate<D: Dns + Clone>(
    dns: &D,
    tenants: &[HelpdeskTenant],
    live: &Provider,
    proposed: &Provider,
    proposed_record: Option<&str>,
) -> Report {
    let started = Instant::now();
    let overlay = ProposedRecord::new(dns.clone(), &live.spf_domain, proposed_record);
    let active: Vec<&HelpdeskTenant> = tenants.iter().filter(|t| !t.spec.suspend).collect();
    let senders: Vec<(&HelpdeskTenant, SenderInput)> = active
        .iter()
        .flat_map(|t| SenderInput::of(&t.spec).into_iter().map(move |s| (*t, s)))
        .collect();
    let count = senders.len();
    let mut rows: Vec<Row> = futures::stream::iter(senders)
        .map(|(tenant, sender)| {
            let overlay = &overlay;
            async move {
                // Live first: the proposal then finds the tenant's records in the cache.
                let now = outlook(dns, live, &sender).await;
                let then = outlook(overlay, proposed, &sender).await;
                compare(&now, &then).map(|change| Row {
                    namespace: tenant.namespace().unwrap_or_default(),
                    tenant: tenant.name_any(),
                    address: sender.address,
                    change,
                    now,
                    proposed: then,
                })
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|row| async move { row })
        .collect()
        .await;
    rows.sort_by(|a, b| {
        (b.change.breaks(), &a.namespace, &a.tenant, &a.address).cmp(&(
            a.change.breaks(),
            &b.namespace,
            &b.tenant,
            &b.address,
        ))
    });
    let breaking: BTreeSet<(&str, &str)> = rows
        .iter()
        .filter(|r| r.change.breaks())
        .map(|r| (r.namespace.as_str(), r.tenant.as_str()))
        .collect();
    let tenants_breaking = breaking.len();
    Report {
        tenants: tenants.len(),
        senders: count,
        suspended: tenants.len() - active.len(),
        tenants_breaking,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        rows,
    }
}

/// Runs `what-if`. Exit status: 0 when no tenant would break, 1 when some would, 2 on an error.
pub fn run(args: WhatIfArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("what-if: {message}");
        ExitCode::from(EXIT_ERROR)
    };
    if let Err(message) = args.provider.validate() {
        return fail(message);
    }
    if args.proposed_spf_record.is_none() && args.proposed_egress_ips.is_empty() {
        return fail("give --provider-spf-record or --proposed-egress-ip (the proposal)".into());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let report = runtime.block_on(async {
        let client = Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes client: {e}"))?;
        let tenants = list_tenants(client, args.namespace.as_deref())
            .await
            .map_err(|e| format!("cannot list HelpdeskTenants: {e}"))?;
        let senders: usize = tenants.iter().map(|t| t.spec.senders.len()).sum();
        // Room for every tenant domain's SPF, DMARC and include answers.
        let config = args.dns.config((senders * 4).max(1_024));
        let resolver = Resolver::new(&config).map_err(|e| e.to_string())?;
        let live_egress = Egress::new(
            args.provider.provider_egress_ips.clone(),
            args.provider.provider_smtp_hosts.clone(),
        )
        .resolve(&resolver)
        .await
        .map_err(|e| e.to_string())?;
        let live = Provider {
            spf_domain: args.provider.provider_spf_domain.clone(),
            egress_ips: live_egress.into_iter().collect(),
            dkim_selectors: args.provider.dkim_selectors(),
        };
        let proposed = Provider {
            spf_domain: live.spf_domain.clone(),
            egress_ips: if args.proposed_egress_ips.is_empty() {
                live.egress_ips.clone()
            } else {
                args.proposed_egress_ips.clone()
            },
            dkim_selectors: live.dkim_selectors.clone(),
        };
        Ok::<_, String>(
            evaluate(
                &resolver,
                &tenants,
                &live,
                &proposed,
                args.proposed_spf_record.as_deref(),
            )
            .await,
        )
    });
    let report = match report {
        Ok(report) => report,
        Err(message) => return fail(message),
    };
    let text = match args.output {
        Output::Text => render::what_if(&report),
        Output::Json => match serde_json::to_string(&report) {
            Ok(json) => json + "\n",
            Err(e) => return fail(format!("cannot encode the report: {e}")),
        },
    };
    if print(&text).is_err() {
        return ExitCode::from(EXIT_ERROR);
    }
    if report.tenants_breaking > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlook(state: &'static str, reason: Option<&'static str>, worst: u32) -> Outlook {
        Outlook {
            state,
            reason,
            message: None,
            lookups: 1,
            worst_case_lookups: worst,
        }
    }

    #[test]
    fn compare_names_breaks_fixes_and_the_lookup_limit() {
        let aligned = outlook("Aligned", None, 3);
        let unaligned = outlook("Unaligned", Some("ProviderNotAuthorized"), 3);
        assert_eq!(compare(&aligned, &aligned), None);
        assert_eq!(compare(&aligned, &unaligned), Some(Change::Breaks));
        assert_eq!(compare(&unaligned, &aligned), Some(Change::Fixed));
        let permerror = outlook("Unaligned", Some("SpfPermError"), 11);
        assert_eq!(compare(&unaligned, &permerror), Some(Change::OverLimit));
        assert_eq!(
            compare(&aligned, &outlook("Aligned", None, 11)),
            Some(Change::OverLimit)
        );
        assert_eq!(
            compare(&aligned, &outlook("Aligned", None, 9)),
            Some(Change::NearLimit)
        );
        assert_eq!(
            compare(&outlook("Aligned", None, 9), &outlook("Aligned", None, 9)),
            None,
            "already at 9: the proposal changes nothing"
        );
        assert_eq!(
            compare(&unaligned, &outlook("TemporaryFailure", None, 0)),
            Some(Change::Changes)
        );
        assert!(Change::OverLimit.breaks() && !Change::NearLimit.breaks());
    }
}
