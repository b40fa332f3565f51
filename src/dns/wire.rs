//! Turning hickory's answers and errors into the cache's records and [`DnsError`]s.

use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::cache::{CachedAnswer, Outcome, Records};
use super::{DnsError, SPF_RECORD_TYPE};

pub(super) fn records_empty(records: &Records) -> bool {
    match records {
        Records::Txt(v) => v.is_empty(),
        Records::A(v) => v.is_empty(),
        Records::Aaaa(v) => v.is_empty(),
        Records::Names(v) => v.is_empty(),
    }
}

pub(super) fn type_label(record_type: RecordType) -> &'static str {
    match record_type {
        RecordType::TXT => "TXT",
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::MX => "MX",
        RecordType::PTR => "PTR",
        RecordType::NS => "NS",
        SPF_RECORD_TYPE => "SPF",
        _ => "other",
    }
}

/// A name's labels joined with dots, without escapes or the trailing dot.
pub(super) fn name_text(name: &Name) -> String {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).into_owned())
        .collect();
    labels.join(".")
}

/// The records of the asked type in an answer section (CNAMEs already followed).
pub(super) fn collect(
    answers: &[hickory_resolver::proto::rr::Record],
    record_type: RecordType,
) -> CachedAnswer {
    let mut ttl: Option<u32> = None;
    let mut txt = Vec::new();
    let mut a = Vec::new();
    let mut aaaa = Vec::new();
    let mut names = Vec::new();
    for record in answers {
        let matched = match (record_type, &record.data) {
            (RecordType::TXT, RData::TXT(data)) => {
                txt.push(
                    data.txt_data
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect(),
                );
                true
            }
            (RecordType::A, RData::A(addr)) => {
                a.push(addr.0);
                true
            }
            (RecordType::AAAA, RData::AAAA(addr)) => {
                aaaa.push(addr.0);
                true
            }
            (RecordType::MX, RData::MX(mx)) => {
                names.push(name_text(&mx.exchange));
                true
            }
            (RecordType::PTR, RData::PTR(ptr)) => {
                names.push(name_text(&ptr.0));
                true
            }
            (RecordType::NS, RData::NS(ns)) => {
                names.push(name_text(&ns.0));
                true
            }
            (SPF_RECORD_TYPE, RData::Unknown { code, rdata }) if *code == SPF_RECORD_TYPE => {
                // Malformed data (a string running past the end) is no record at all.
                if let Some(text) = character_strings(&rdata.anything) {
                    txt.push(text);
                }
                true
            }
            _ => false,
        };
        if matched {
            ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
        }
    }
    let records = match record_type {
        RecordType::TXT | SPF_RECORD_TYPE => Records::Txt(txt.into()),
        RecordType::A => Records::A(a.into()),
        RecordType::AAAA => Records::Aaaa(aaaa.into()),
        _ => Records::Names(names.into()),
    };
    CachedAnswer {
        records,
        ttl,
        nxdomain: false,
        server: None,
    }
}

/// The character-strings of TXT-shaped wire data (each a length byte and that many bytes),
/// joined; `None` when a length runs past the end.
pub(super) fn character_strings(mut wire: &[u8]) -> Option<Vec<u8>> {
    let mut text = Vec::with_capacity(wire.len());
    while let Some((&len, rest)) = wire.split_first() {
        let len = usize::from(len);
        let chunk = rest.get(..len)?;
        text.extend_from_slice(chunk);
        wire = &rest[len..];
    }
    Some(text)
}

pub(super) fn empty_records(record_type: RecordType) -> Records {
    match record_type {
        RecordType::TXT | SPF_RECORD_TYPE => Records::Txt(Vec::new().into()),
        RecordType::A => Records::A(Vec::new().into()),
        RecordType::AAAA => Records::Aaaa(Vec::new().into()),
        _ => Records::Names(Vec::new().into()),
    }
}

pub(super) fn map_error(err: NetError, record_type: RecordType) -> Outcome {
    match err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(none)) => match none.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(CachedAnswer {
                records: empty_records(record_type),
                ttl: none.negative_ttl,
                nxdomain: none.response_code == ResponseCode::NXDomain,
                server: None,
            }),
            code => Err(DnsError::Rcode(code.to_string())),
        },
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => match code {
            ResponseCode::NXDomain => Ok(CachedAnswer {
                records: empty_records(record_type),
                ttl: None,
                nxdomain: true,
                server: None,
            }),
            code => Err(DnsError::Rcode(code.to_string())),
        },
        NetError::Timeout => Err(DnsError::Timeout),
        other => Err(DnsError::Other(other.to_string())),
    }
}
