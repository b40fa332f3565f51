//! Finding what DNS holds at a selector name: CNAMEs followed (the chain bounded, loops
//! detected), then the TXT records at the end of the chain.
//!
//! # CNAMEs
//!
//! The shared resolver follows CNAMEs itself when asked for TXT, and [`Dns`] hands back only
//! the records at the end of the chain, so through [`Dns`] alone the chain is out of sight:
//! a loop or an endless chain then shows as the resolver's error (a SERVFAIL from a recursive
//! resolver), which is a temporary failure. [`Dns`] adds the one lookup that makes
//! the chain visible, the CNAME target of a name. Where it is implemented, the lookup walks the
//! chain one name at a time, reports every name it passed, and tells a loop or a chain longer
//! than [`MAX_CNAME_CHAIN`] apart as a broken setup instead of a temporary failure.

use std::collections::HashSet;

use crate::dns::{Dns, DnsError};
use crate::names::normalize_domain;

/// Longest CNAME chain followed from a selector name (the provider's usual setup needs one,
/// rarely two).
pub const MAX_CNAME_CHAIN: usize = 8;

/// What DNS holds at one name, after following CNAMEs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLookup {
    /// TXT records (each one's character-strings joined) at the end of the chain.
    Records {
        texts: Vec<Vec<u8>>,
        chain: Vec<String>,
        /// The smallest TTL of the CNAMEs followed and the TXT answer.
        ttl: Option<u32>,
    },
    /// No TXT record at the end of the chain: NXDOMAIN (`nxdomain`) or NODATA.
    Void {
        nxdomain: bool,
        chain: Vec<String>,
        ttl: Option<u32>,
    },
    /// The CNAMEs loop, or run longer than [`MAX_CNAME_CHAIN`].
    BrokenChain { chain: Vec<String>, looped: bool },
    /// A query got no answer: a timeout or an error RCODE such as SERVFAIL.
    TempError {
        /// The name whose query failed.
        name: String,
        chain: Vec<String>,
        error: DnsError,
    },
}

impl KeyLookup {
    /// The CNAME targets followed from the queried name, in order.
    pub fn chain(&self) -> &[String] {
        match self {
            KeyLookup::Records { chain, .. }
            | KeyLookup::Void { chain, .. }
            | KeyLookup::BrokenChain { chain, .. }
            | KeyLookup::TempError { chain, .. } => chain,
        }
    }

    /// The TTL of the answer, where there is one.
    pub fn ttl(&self) -> Option<u32> {
        match self {
            KeyLookup::Records { ttl, .. } | KeyLookup::Void { ttl, .. } => *ttl,
            KeyLookup::BrokenChain { .. } | KeyLookup::TempError { .. } => None,
        }
    }
}

fn min_ttl(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resolves `name`: its CNAME chain, then the TXT records at the end of it.
pub async fn lookup_key<D: Dns>(dns: &D, name: &str) -> KeyLookup {
    let mut current = normalize_domain(name);
    let mut seen = HashSet::from([current.clone()]);
    let mut chain: Vec<String> = Vec::new();
    let mut ttl = None;
    loop {
        match dns.cname(&current).await {
            Err(error) => {
                return KeyLookup::TempError {
                    name: current,
                    chain,
                    error,
                };
            }
            Ok(None) => break,
            Ok(Some(hop)) => {
                let target = normalize_domain(&hop.target);
                ttl = min_ttl(ttl, hop.ttl);
                chain.push(target.clone());
                if !seen.insert(target.clone()) {
                    return KeyLookup::BrokenChain {
                        chain,
                        looped: true,
                    };
                }
                if chain.len() > MAX_CNAME_CHAIN {
                    return KeyLookup::BrokenChain {
                        chain,
                        looped: false,
                    };
                }
                current = target;
            }
        }
    }
    match dns.txt(&current).await {
        Err(error) => KeyLookup::TempError {
            name: current,
            chain,
            error,
        },
        Ok(answer) if answer.is_void() => KeyLookup::Void {
            nxdomain: answer.nxdomain,
            chain,
            ttl: min_ttl(ttl, answer.ttl),
        },
        Ok(answer) => KeyLookup::Records {
            texts: answer.records.to_vec(),
            chain,
            ttl: min_ttl(ttl, answer.ttl),
        },
    }
}
