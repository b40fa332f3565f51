//! The authoritative vantage (design §6): a name's own nameservers, found through the
//! configured resolvers and asked directly.
//!
//! The zone is the nearest enclosing name with an NS RRset: the name itself, then each parent
//! up to the top-level label (never the root). Its nameserver hosts are taken in name order,
//! their IPv4 then IPv6 addresses come from the configured resolvers, and the first server
//! to give an authoritative answer (the AA bit) is the one reported; a server that times out,
//! fails or only refers elsewhere makes way for the next. Every lookup on the way goes
//! through the resolver's cache, so a steady fleet asks the configured resolvers nothing new
//! and each authority once per TTL of its answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::cache::{CachedAnswer, Outcome};
use super::direct;
use super::wire::{collect, empty_records};
use super::{Dns, DnsError, Resolver};

/// Parent names walked at most while looking for the zone's NS RRset.
const MAX_ZONE_WALK: usize = 16;
/// Nameserver hosts of one zone considered at most.
const MAX_NS_HOSTS: usize = 4;
/// Servers asked at most for one answer, so an unreachable authority costs a bounded time.
const MAX_ATTEMPTS: usize = 3;

/// How the authoritative servers are asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AuthorityConfig {
    /// The port authoritative servers listen on (53 outside labs and tests).
    pub(super) port: u16,
    /// Time allowed for one server over one transport.
    pub(super) timeout: Duration,
}

/// `name`, then each parent down to a single label: where the zone's NS RRset may be.
fn zone_candidates(name: &str) -> impl Iterator<Item = &str> {
    let name = name.trim_end_matches('.');
    std::iter::successors(Some(name), |n| n.split_once('.').map(|(_, parent)| parent))
        .filter(|n| !n.is_empty())
        .take(MAX_ZONE_WALK)
}

/// Why one server's reply is not the answer.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// This server cannot tell (no authority, an error RCODE): ask the next one.
    NextServer(DnsError),
    /// No server of the zone would tell more (the name is an alias).
    Final(DnsError),
}

/// The negative-caching TTL of a reply: its SOA's, the smaller of the record TTL and the
/// SOA minimum (RFC 2308 §5).
fn negative_ttl(reply: &Message) -> Option<u32> {
    reply
        .authorities
        .iter()
        .find_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        })
}

/// What an authoritative reply says about `name`/`record_type`.
fn interpret(
    reply: &Message,
    name: &Name,
    record_type: RecordType,
    server: &str,
) -> Result<CachedAnswer, Refusal> {
    if !reply.metadata.authoritative {
        return Err(Refusal::NextServer(DnsError::Other(format!(
            "{server} is not authoritative for it"
        ))));
    }
    let own: Vec<Record> = reply
        .answers
        .iter()
        .filter(|record| record.name == *name)
        .cloned()
        .collect();
    let mut answer = match reply.metadata.response_code {
        ResponseCode::NoError => collect(&own, record_type),
        ResponseCode::NXDomain => CachedAnswer {
            records: empty_records(record_type),
            ttl: None,
            nxdomain: true,
            server: None,
        },
        code => {
            return Err(Refusal::NextServer(DnsError::Rcode(format!(
                "{code} from {server}"
            ))));
        }
    };
    if answer.ttl.is_none() {
        if own
            .iter()
            .any(|record| record.record_type() == RecordType::CNAME)
        {
            return Err(Refusal::Final(DnsError::Other(
                "the name is an alias (CNAME); its target's servers are not asked".to_string(),
            )));
        }
        answer.ttl = negative_ttl(reply);
    }
    answer.server = Some(Arc::from(server));
    Ok(answer)
}

/// The zone's nameserver hosts, sorted, or `None` when no enclosing name has any.
async fn nameservers(resolver: &Resolver, name: &str) -> Result<Option<Vec<String>>, DnsError> {
    for candidate in zone_candidates(name) {
        let answer = resolver.ns(candidate).await?;
        if !answer.records.is_empty() {
            let mut hosts: Vec<String> = answer
                .records
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            hosts.sort();
            hosts.dedup();
            hosts.truncate(MAX_NS_HOSTS);
            return Ok(Some(hosts));
        }
    }
    Ok(None)
}

/// A host's addresses, IPv4 first; lookup failures leave the host out.
async fn addresses(resolver: &Resolver, host: &str) -> Vec<IpAddr> {
    let (v4, v6) = futures::join!(resolver.a(host), resolver.aaaa(host));
    let v4 = v4
        .iter()
        .flat_map(|a| a.records.iter().copied().map(IpAddr::V4));
    let v6 = v6
        .iter()
        .flat_map(|a| a.records.iter().copied().map(IpAddr::V6));
    v4.chain(v6).collect()
}

/// Asks the authoritative servers of `name` for its `record_type` records.
pub(super) async fn query(
    resolver: &Resolver,
    config: AuthorityConfig,
    name: &str,
    record_type: RecordType,
) -> Outcome {
    let fqdn = Name::from_labels(name.split('.').map(str::as_bytes))
        .map_err(|e| DnsError::Other(format!("not a domain name: {e}")))?;
    let Some(hosts) = nameservers(resolver, name).await? else {
        return Err(DnsError::Other(format!(
            "no nameservers found for {name} or a parent"
        )));
    };
    let mut attempts = 0;
    let mut last = None;
    for host in &hosts {
        for ip in addresses(resolver, host).await {
            if attempts == MAX_ATTEMPTS {
                break;
            }
            attempts += 1;
            let server = SocketAddr::new(ip, config.port);
            let label = format!("{host} ({server})");
            resolver
                .inner
                .authority_queries
                .fetch_add(1, Ordering::Relaxed);
            let refusal = match direct::ask(server, &fqdn, record_type, config.timeout).await {
                Ok(reply) => match interpret(&reply, &fqdn, record_type, &label) {
                    Ok(answer) => return Ok(answer),
                    Err(refusal) => refusal,
                },
                Err(error) => Refusal::NextServer(error),
            };
            match refusal {
                Refusal::Final(error) => return Err(error),
                Refusal::NextServer(error) => last = Some(format!("{label}: {error}")),
            }
        }
    }
    Err(DnsError::Other(match last {
        Some(error) => format!("no authoritative server answered (last: {error})"),
        None => format!("no address found for the nameservers {}", hosts.join(", ")),
    }))
}

#[cfg(test)]
mod tests {
    use hickory_resolver::proto::op::OpCode;
    use hickory_resolver::proto::rr::rdata::{CNAME, SOA, TXT};

    use super::super::cache::Records;
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    fn reply(authoritative: bool, code: ResponseCode) -> Message {
        let mut reply = Message::response(1, OpCode::Query);
        reply.metadata.authoritative = authoritative;
        reply.metadata.response_code = code;
        reply
    }

    /// An authoritative NOERROR reply with one answer record.
    fn answering(owner: &Name, ttl: u32, data: RData) -> Message {
        let mut message = reply(true, ResponseCode::NoError);
        message.add_answer(Record::from_rdata(owner.clone(), ttl, data));
        message
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let soa = SOA::new(
            name("ns1.customer.example."),
            name("hostmaster.customer.example."),
            1,
            3600,
            600,
            86400,
            minimum,
        );
        Record::from_rdata(name("customer.example."), ttl, RData::SOA(soa))
    }

    const SERVER: &str = "ns1.customer.example (192.0.2.53:53)";

    #[test]
    fn zones_are_looked_for_up_to_the_top_label() {
        let walked: Vec<&str> = zone_candidates("bounce.customer.example.").collect();
        assert_eq!(
            walked,
            ["bounce.customer.example", "customer.example", "example"]
        );
        assert_eq!(zone_candidates("").count(), 0);
        let deep = "a.".repeat(100) + "example";
        assert_eq!(zone_candidates(&deep).count(), MAX_ZONE_WALK);
    }

    #[test]
    fn an_authoritative_answer_keeps_its_records_and_full_ttl() {
        let owner = name("customer.example.");
        let mut message = answering(
            &owner,
            3600,
            RData::TXT(TXT::new(vec!["v=spf1 -all".to_string()])),
        );
        // A record of another owner in the answer section is not this name's.
        message.add_answer(Record::from_rdata(
            name("other.example."),
            5,
            RData::TXT(TXT::new(vec!["v=spf1 +all".to_string()])),
        ));
        let answer = interpret(&message, &owner, RecordType::TXT, SERVER).expect("answer");
        assert_eq!(answer.ttl, Some(3600));
        assert_eq!(
            answer.records,
            Records::Txt(vec![b"v=spf1 -all".to_vec()].into())
        );
        assert_eq!(answer.server.as_deref(), Some(SERVER));
    }

    #[test]
    fn negative_answers_take_the_soa_ttl() {
        let owner = name("customer.example.");
        let mut nodata = reply(true, ResponseCode::NoError);
        nodata.add_authority(soa(300, 60));
        let answer = interpret(&nodata, &owner, RecordType::TXT, SERVER).expect("nodata");
        assert!(!answer.nxdomain);
        assert_eq!(answer.ttl, Some(60));

        let mut nxdomain = reply(true, ResponseCode::NXDomain);
        nxdomain.add_authority(soa(30, 60));
        let answer = interpret(&nxdomain, &owner, RecordType::TXT, SERVER).expect("nxdomain");
        assert!(answer.nxdomain);
        assert_eq!(answer.ttl, Some(30));
    }

    #[test]
    fn referrals_and_failures_make_way_for_the_next_server() {
        let owner = name("customer.example.");
        let referral = reply(false, ResponseCode::NoError);
        assert!(matches!(
            interpret(&referral, &owner, RecordType::TXT, SERVER),
            Err(Refusal::NextServer(_))
        ));
        let failure = reply(true, ResponseCode::ServFail);
        assert!(matches!(
            interpret(&failure, &owner, RecordType::TXT, SERVER),
            Err(Refusal::NextServer(DnsError::Rcode(_)))
        ));
    }

    #[test]
    fn an_alias_ends_the_search() {
        let owner = name("bounce.customer.example.");
        let message = answering(
            &owner,
            300,
            RData::CNAME(CNAME(name("bounce.esp.example."))),
        );
        assert!(matches!(
            interpret(&message, &owner, RecordType::TXT, SERVER),
            Err(Refusal::Final(_))
        ));
    }
}
