//! RFC 7208 `check_host()` with a trace.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::SpfResult;
use super::macros::{MacroContext, expand};
use super::record::{
    Directive, MacroLetter, MacroString, Mechanism, ParseError, Qualifier, Record, Term,
    is_spf_record, parse_macro_string, parse_record,
};
use super::trace::{MatchedTerm, Node, NodeKind, SpfOutcome, TermTrace, Trace};
use crate::dns::{Dns, DnsError, reverse_name};

/// DNS-querying terms allowed in one evaluation (§4.6.4).
pub const MAX_LOOKUPS: u32 = 10;
/// Void lookups allowed in one evaluation (§4.6.4).
pub const MAX_VOID_LOOKUPS: u32 = 2;
/// Address lookups allowed per `mx` or `ptr` (§4.6.4).
pub const MAX_ADDRESS_LOOKUPS: usize = 10;
/// Parsed records kept by an evaluator.
const PARSED_CACHE_SIZE: usize = 4_096;

/// The identity to check and the client (the arguments of `check_host()`, §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfQuery {
    /// The client address; IPv4-mapped IPv6 addresses are evaluated as IPv4.
    pub ip: IpAddr,
    /// `local@domain`, the `s` macro.
    pub sender: String,
    pub local: String,
    /// The sender's domain, where evaluation starts.
    pub domain: String,
    /// The HELO/EHLO name, the `h` macro.
    pub helo: String,
}

impl SpfQuery {
    /// The MAIL FROM identity (§2.4): an empty sender means `postmaster@<helo>`, a sender
    /// without a local part means `postmaster@<sender>`.
    pub fn mail_from(ip: IpAddr, sender: &str, helo: &str) -> Self {
        let sender = sender.trim();
        let (local, domain) = if sender.is_empty() {
            ("postmaster", helo)
        } else {
            match crate::names::split_address(sender) {
                Some(("", domain)) => ("postmaster", domain),
                Some((local, domain)) => (local, domain),
                None => ("postmaster", sender),
            }
        };
        let domain = domain.trim_end_matches('.');
        Self {
            ip,
            sender: format!("{local}@{domain}"),
            local: local.to_string(),
            domain: domain.to_string(),
            helo: helo.to_string(),
        }
    }

    /// Checks `domain` for `ip` as the envelope domain `postmaster@<domain>`.
    pub fn for_domain(ip: IpAddr, domain: &str) -> Self {
        Self::mail_from(ip, &format!("postmaster@{domain}"), domain)
    }
}

/// Why evaluation stopped early.
enum Stop {
    Temp(String),
    Perm(String),
}

impl From<DnsError> for Stop {
    fn from(e: DnsError) -> Self {
        Stop::Temp(e.to_string())
    }
}

/// Counters and trace of one evaluation.
struct Run {
    ip: IpAddr,
    sender: String,
    local: String,
    sender_domain: String,
    helo: String,
    now: u64,
    lookups: u32,
    voids: u32,
    /// Voids counted the strict way: also empty address answers for `mx` hosts and `ptr`
    /// names (design §6 "Void lookups of `mx` and `ptr` names"). Never stops the evaluation.
    strict_voids: u32,
    terms: Vec<TermTrace>,
    matched: Option<MatchedTerm>,
}

impl Run {
    fn count_lookup(&mut self) -> Result<(), Stop> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            Err(Stop::Perm(format!(
                "more than {MAX_LOOKUPS} DNS-querying terms"
            )))
        } else {
            Ok(())
        }
    }

    fn count_void(&mut self) -> Result<(), Stop> {
        self.strict_voids += 1;
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            Err(Stop::Perm(format!(
                "more than {MAX_VOID_LOOKUPS} void lookups"
            )))
        } else {
            Ok(())
        }
    }

    fn context<'a>(&'a self, domain: &'a str, validated: Option<&'a str>) -> MacroContext<'a> {
        MacroContext {
            sender: &self.sender,
            local: &self.local,
            sender_domain: &self.sender_domain,
            domain,
            ip: self.ip,
            helo: &self.helo,
            receiver: "unknown",
            now: self.now,
            validated,
        }
    }
}

type ParsedCache = Mutex<HashMap<Box<str>, Arc<Result<Record, ParseError>>>>;

/// Evaluates `check_host()` over a [`Dns`]. Clones share the cache of parsed records.
pub struct Evaluator<D> {
    dns: D,
    parsed: Arc<ParsedCache>,
    receiver: Arc<str>,
}

impl<D: Clone> Clone for Evaluator<D> {
    fn clone(&self) -> Self {
        Self {
            dns: self.dns.clone(),
            parsed: Arc::clone(&self.parsed),
            receiver: Arc::clone(&self.receiver),
        }
    }
}

type NodeFuture<'a> = Pin<Box<dyn Future<Output = (Node, Option<String>)> + Send + 'a>>;

impl<D: Dns> Evaluator<D> {
    pub fn new(dns: D) -> Self {
        Self {
            dns,
            parsed: Arc::new(Mutex::new(HashMap::new())),
            receiver: Arc::from("unknown"),
        }
    }

    /// Sets the name the `r` macro expands to in explanations.
    pub fn with_receiver(mut self, receiver: &str) -> Self {
        self.receiver = Arc::from(receiver);
        self
    }

    pub fn dns(&self) -> &D {
        &self.dns
    }

    /// Parses `text` once per distinct record text.
    pub fn parse(&self, text: &str) -> Arc<Result<Record, ParseError>> {
        let mut cache = self
            .parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hit) = cache.get(text) {
            return Arc::clone(hit);
        }
        if cache.len() >= PARSED_CACHE_SIZE {
            cache.clear();
        }
        let parsed = Arc::new(parse_record(text));
        cache.insert(Box::from(text), Arc::clone(&parsed));
        parsed
    }

    /// RFC 7208 `check_host()` for `query`.
    pub async fn check_host(&self, query: &SpfQuery) -> SpfOutcome {
        let ip = unmap(query.ip);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut run = Run {
            ip,
            sender: query.sender.clone(),
            local: query.local.clone(),
            sender_domain: query.domain.clone(),
            helo: query.helo.clone(),
            now,
            lookups: 0,
            voids: 0,
            strict_voids: 0,
            terms: Vec::new(),
            matched: None,
        };
        let domain = query.domain.trim_end_matches('.').to_string();
        let (tree, explanation) = self
            .evaluate_domain(&mut run, domain, NodeKind::Root, 0)
            .await;
        SpfOutcome {
            result: tree.result,
            explanation,
            trace: Trace {
                sender: run.sender,
                ip,
                lookups: run.lookups,
                void_lookups: run.voids,
                void_lookups_strict: run.strict_voids,
                matched: run.matched,
                terms: run.terms,
                tree,
            },
        }
    }

    /// Evaluates one domain's record; returns its node and, for `fail`, the explanation.
    fn evaluate_domain<'a>(
        &'a self,
        run: &'a mut Run,
        domain: String,
        kind: NodeKind,
        depth: u32,
    ) -> NodeFuture<'a> {
        Box::pin(async move {
            let lookups_before = run.lookups;
            let mut node = Node {
                kind,
                domain,
                record: None,
                record_ttl: None,
                result: SpfResult::None,
                lookups: 0,
                error: None,
                children: Vec::new(),
            };
            let explanation = match self.evaluate_record(run, &mut node, depth).await {
                Ok(explanation) => explanation,
                Err(Stop::Temp(why)) => {
                    node.result = SpfResult::Temperror;
                    node.error = Some(why);
                    None
                }
                Err(Stop::Perm(why)) => {
                    node.result = SpfResult::Permerror;
                    node.error = Some(why);
                    None
                }
            };
            // The include or redirect that led here was counted just before.
            node.lookups = run.lookups - lookups_before + u32::from(kind != NodeKind::Root);
            (node, explanation)
        })
    }

    async fn evaluate_record(
        &self,
        run: &mut Run,
        node: &mut Node,
        depth: u32,
    ) -> Result<Option<String>, Stop> {
        if let Err(why) = check_domain(&node.domain) {
            node.error = Some(why);
            node.result = SpfResult::None;
            return Ok(None);
        }
        let answer = self.dns.txt(&node.domain).await?;
        let mut found = answer.records.iter().filter(|txt| is_spf_record(txt));
        let Some(bytes) = found.next() else {
            node.error = Some(if answer.nxdomain {
                "the domain does not exist".to_string()
            } else {
                "no SPF record".to_string()
            });
            node.result = SpfResult::None;
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(Stop::Perm("more than one v=spf1 record".to_string()));
        }
        node.record_ttl = answer.ttl;
        let text = String::from_utf8_lossy(bytes).into_owned();
        node.record = Some(text.clone());
        let parsed = self.parse(&text);
        let record = match parsed.as_ref() {
            Ok(record) => record,
            Err(e) => return Err(Stop::Perm(format!("syntax error: {e}"))),
        };
        for term in &record.terms {
            let Term::Directive(directive) = term else {
                continue;
            };
            let term_text = directive.to_string();
            // Reserve the term's place so it precedes the terms of an include it leads to.
            let slot = run.terms.len();
            run.terms.push(TermTrace {
                domain: node.domain.clone(),
                term: term_text.clone(),
                outcome: "no-match",
                depth,
            });
            let outcome = self.matches(run, node, directive, depth).await;
            run.terms[slot].outcome = match &outcome {
                Ok(true) => "match",
                Ok(false) => "no-match",
                Err(Stop::Temp(_)) => "temperror",
                Err(Stop::Perm(_)) => "permerror",
            };
            if outcome? {
                node.result = match directive.qualifier {
                    Qualifier::Pass => SpfResult::Pass,
                    Qualifier::Fail => SpfResult::Fail,
                    Qualifier::SoftFail => SpfResult::Softfail,
                    Qualifier::Neutral => SpfResult::Neutral,
                };
                if run.matched.is_none() || depth == 0 {
                    run.matched = Some(MatchedTerm {
                        domain: node.domain.clone(),
                        term: term_text,
                    });
                }
                if node.result == SpfResult::Fail {
                    return Ok(self.explanation(run, record, &node.domain).await);
                }
                return Ok(None);
            }
        }
        if let Some(target) = record.redirect() {
            run.count_lookup()?;
            let target = self.target(run, target, &node.domain).await?;
            let (child, explanation) = self
                .evaluate_domain(run, target, NodeKind::Redirect, depth)
                .await;
            node.result = match child.result {
                SpfResult::None => SpfResult::Permerror,
                other => other,
            };
            if child.result == SpfResult::None {
                node.error = Some(format!("redirect to {} finds no SPF record", child.domain));
            }
            node.children.push(child);
            return Ok(explanation);
        }
        node.result = SpfResult::Neutral;
        Ok(None)
    }

    /// Whether one directive matches the client.
    async fn matches(
        &self,
        run: &mut Run,
        node: &mut Node,
        directive: &Directive,
        depth: u32,
    ) -> Result<bool, Stop> {
        if directive.mechanism.counts_lookup() {
            run.count_lookup()?;
        }
        let ip = run.ip;
        match &directive.mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4 { network, prefix } => Ok(match ip {
                IpAddr::V4(v4) => in_prefix(&v4.octets(), &network.octets(), *prefix),
                IpAddr::V6(_) => false,
            }),
            Mechanism::Ip6 { network, prefix } => Ok(match ip {
                IpAddr::V6(v6) => in_prefix(&v6.octets(), &network.octets(), *prefix),
                IpAddr::V4(_) => false,
            }),
            Mechanism::Include(spec) => {
                let target = self.target(run, spec, &node.domain).await?;
                let (child, _) = self
                    .evaluate_domain(run, target, NodeKind::Include, depth + 1)
                    .await;
                let result = child.result;
                let child_domain = child.domain.clone();
                node.children.push(child);
                match result {
                    SpfResult::Pass => Ok(true),
                    SpfResult::Fail | SpfResult::Softfail | SpfResult::Neutral => Ok(false),
                    SpfResult::Temperror => {
                        Err(Stop::Temp(format!("include:{child_domain} gave temperror")))
                    }
                    SpfResult::Permerror => {
                        Err(Stop::Perm(format!("include:{child_domain} gave permerror")))
                    }
                    SpfResult::None => Err(Stop::Perm(format!(
                        "include:{child_domain} has no SPF record"
                    ))),
                }
            }
            Mechanism::A {
                domain,
                cidr4,
                cidr6,
            } => {
                let target = self
                    .optional_target(run, domain.as_ref(), &node.domain)
                    .await?;
                let Some(target) = target.filter(|t| check_domain(t).is_ok()) else {
                    return Ok(false);
                };
                let (hit, void) = self.address_match(&target, ip, *cidr4, *cidr6).await?;
                if void {
                    run.count_void()?;
                }
                Ok(hit)
            }
            Mechanism::Mx {
                domain,
                cidr4,
                cidr6,
            } => {
                let target = self
                    .optional_target(run, domain.as_ref(), &node.domain)
                    .await?;
                let Some(target) = target.filter(|t| check_domain(t).is_ok()) else {
                    return Ok(false);
                };
                let answer = self.dns.mx(&target).await?;
                if answer.is_void() {
                    run.count_void()?;
                    return Ok(false);
                }
                if answer.records.len() > MAX_ADDRESS_LOOKUPS {
                    return Err(Stop::Perm(format!(
                        "mx:{target} has {} hosts, more than {MAX_ADDRESS_LOOKUPS}",
                        answer.records.len()
                    )));
                }
                for host in answer.records.iter() {
                    if host.is_empty() || check_domain(host).is_err() {
                        continue;
                    }
                    let (hit, void) = self.address_match(host, ip, *cidr4, *cidr6).await?;
                    if void {
                        run.strict_voids += 1;
                    }
                    if hit {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr(domain) => {
                let target = self
                    .optional_target(run, domain.as_ref(), &node.domain)
                    .await?;
                let Some(target) = target else {
                    return Ok(false);
                };
                let names = match self.dns.ptr(&reverse_name(ip)).await {
                    Ok(answer) => {
                        if answer.is_void() {
                            run.count_void()?;
                        }
                        answer.records
                    }
                    // A DNS error on the PTR lookup makes the mechanism fail to match (§5.5).
                    Err(_) => return Ok(false),
                };
                let (validated, voids) = self.validated_names(&names, ip).await;
                run.strict_voids += voids;
                Ok(validated
                    .iter()
                    .any(|name| is_same_or_subdomain(name, &target)))
            }
            Mechanism::Exists(spec) => {
                let target = self.target(run, spec, &node.domain).await?;
                if check_domain(&target).is_err() {
                    // A name no query can be made for does not exist (§4.3, §5).
                    return Ok(false);
                }
                let answer = self.dns.a(&target).await?;
                if answer.is_void() {
                    run.count_void()?;
                    return Ok(false);
                }
                Ok(true)
            }
        }
    }

    /// Whether `ip` is within the A or AAAA records of `name`; also whether the lookup was void.
    async fn address_match(
        &self,
        name: &str,
        ip: IpAddr,
        cidr4: u8,
        cidr6: u8,
    ) -> Result<(bool, bool), Stop> {
        match ip {
            IpAddr::V4(v4) => {
                let answer = self.dns.a(name).await?;
                let hit = answer
                    .records
                    .iter()
                    .any(|a| in_prefix(&v4.octets(), &a.octets(), cidr4));
                Ok((hit, answer.is_void()))
            }
            IpAddr::V6(v6) => {
                let answer = self.dns.aaaa(name).await?;
                let hit = answer
                    .records
                    .iter()
                    .any(|a| in_prefix(&v6.octets(), &a.octets(), cidr6));
                Ok((hit, answer.is_void()))
            }
        }
    }

    /// The names among `names` (first 10) whose addresses include `ip` (§5.5), and how many of
    /// their address lookups were void.
    async fn validated_names(&self, names: &[String], ip: IpAddr) -> (Vec<String>, u32) {
        let mut validated = Vec::new();
        let mut voids = 0;
        for name in names.iter().take(MAX_ADDRESS_LOOKUPS) {
            if check_domain(name).is_err() {
                continue;
            }
            let (hit, void) = match ip {
                IpAddr::V4(v4) => match self.dns.a(name).await {
                    Ok(answer) => (answer.records.contains(&v4), answer.is_void()),
                    Err(_) => (false, false),
                },
                IpAddr::V6(v6) => match self.dns.aaaa(name).await {
                    Ok(answer) => (answer.records.contains(&v6), answer.is_void()),
                    Err(_) => (false, false),
                },
            };
            voids += u32::from(void);
            if hit {
                validated.push(name.clone());
            }
        }
        (validated, voids)
    }

    /// The `p` macro value (§7.3): a validated name, preferably the domain or below it.
    async fn validated_domain(&self, run: &Run, domain: &str) -> String {
        let names = match self.dns.ptr(&reverse_name(run.ip)).await {
            Ok(answer) => answer.records,
            Err(_) => return "unknown".to_string(),
        };
        let (validated, _) = self.validated_names(&names, run.ip).await;
        validated
            .iter()
            .find(|name| is_same_or_subdomain(name, domain))
            .or_else(|| validated.first())
            .cloned()
            .unwrap_or_else(|| "unknown".to_string())
    }

    async fn optional_target(
        &self,
        run: &Run,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Result<Option<String>, Stop> {
        match spec {
            None => Ok(Some(domain.to_string())),
            Some(spec) => self.target(run, spec, domain).await.map(Some),
        }
    }

    /// Expands a domain-spec into the name to query (§4.8, §7.3).
    async fn target(&self, run: &Run, spec: &MacroString, domain: &str) -> Result<String, Stop> {
        let validated = if spec.uses(MacroLetter::Validated) {
            Some(self.validated_domain(run, domain).await)
        } else {
            None
        };
        let expanded =
            expand(spec, &run.context(domain, validated.as_deref()), false).map_err(Stop::Perm)?;
        let name = truncate_domain(expanded.trim_end_matches('.'));
        Ok(name.to_string())
    }

    /// The explanation of a `fail` (§6.2): any problem means no explanation.
    async fn explanation(&self, run: &Run, record: &Record, domain: &str) -> Option<String> {
        let spec = record.explanation()?;
        let target = self.target(run, spec, domain).await.ok()?;
        check_domain(&target).ok()?;
        let answer = self.dns.txt(&target).await.ok()?;
        if answer.records.len() != 1 {
            return None;
        }
        let text = std::str::from_utf8(&answer.records[0]).ok()?;
        if !text.is_ascii() {
            return None;
        }
        let spec = parse_macro_string(text, true).ok()?;
        let mut ctx = run.context(domain, None);
        ctx.receiver = &self.receiver;
        let validated = if spec.uses(MacroLetter::Validated) {
            Some(self.validated_domain(run, domain).await)
        } else {
            None
        };
        ctx.validated = validated.as_deref();
        expand(&spec, &ctx, true).ok()
    }
}

/// An IPv4-mapped IPv6 address as IPv4, anything else unchanged.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn in_prefix(ip: &[u8], network: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if ip[..full] != network[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (ip[full] & mask) == (network[full] & mask)
}

fn is_same_or_subdomain(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.');
    let domain = domain.trim_end_matches('.');
    name.eq_ignore_ascii_case(domain)
        || (name.len() > domain.len()
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
            && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain))
}

/// Drops labels from the left until the name fits in 253 characters (§7.3).
fn truncate_domain(name: &str) -> &str {
    let mut name = name;
    while name.len() > 253 {
        match name.find('.') {
            Some(dot) => name = &name[dot + 1..],
            None => break,
        }
    }
    name
}

/// The validity checks of §4.3 on a domain to evaluate.
pub fn check_domain(domain: &str) -> Result<(), String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err("the domain is empty".to_string());
    }
    if domain.len() > 253 {
        return Err("the domain is longer than 253 characters".to_string());
    }
    let mut labels = 0;
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("the domain has an empty label".to_string());
        }
        if label.len() > 63 {
            return Err("the domain has a label longer than 63 characters".to_string());
        }
        labels += 1;
    }
    if labels < 2 {
        return Err("the domain is not a multi-label name".to_string());
    }
    let top = domain.rsplit('.').next().unwrap_or("");
    let top_ok = top.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && top.bytes().any(|b| b.is_ascii_alphabetic())
        && !top.starts_with('-')
        && !top.ends_with('-');
    if !top_ok {
        return Err("the domain does not end in a top-level label".to_string());
    }
    Ok(())
}

/// The evaluation future can move between threads (the controller spawns checks).
#[allow(dead_code)]
fn check_host_is_send(evaluator: &Evaluator<crate::dns::Resolver>, query: &SpfQuery) {
    fn is_send<T: Send>(_: T) {}
    is_send(evaluator.check_host(query));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(in_prefix(&[192, 0, 2, 130], &[192, 0, 2, 0], 24));
        assert!(in_prefix(&[192, 0, 2, 130], &[192, 0, 2, 128], 25));
        assert!(!in_prefix(&[192, 0, 2, 127], &[192, 0, 2, 128], 25));
        assert!(in_prefix(&[1, 2, 3, 4], &[9, 9, 9, 9], 0));
    }

    #[test]
    fn identities() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let q = SpfQuery::mail_from(ip, "", "helo.example.com");
        assert_eq!(q.sender, "postmaster@helo.example.com");
        assert_eq!(q.domain, "helo.example.com");
        let q = SpfQuery::mail_from(ip, "a@b@example.com", "h.example");
        assert_eq!(q.local, "a@b");
        assert_eq!(q.domain, "example.com");
        let q = SpfQuery::mail_from(ip, "example.com", "h.example");
        assert_eq!(q.sender, "postmaster@example.com");
    }

    #[test]
    fn domains() {
        assert!(check_domain("example.com.").is_ok());
        assert!(check_domain("com").is_err());
        assert!(check_domain("a..example.com").is_err());
        assert!(check_domain(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(is_same_or_subdomain("mail.Example.com", "example.com"));
        assert!(!is_same_or_subdomain("badexample.com", "example.com"));
        let long = format!("{}.example.com", "abcdefghi.".repeat(30));
        assert!(truncate_domain(&long).len() <= 253);
        assert_eq!(
            unmap("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
