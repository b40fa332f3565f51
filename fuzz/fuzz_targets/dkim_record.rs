//! The DKIM key-record parser on arbitrary bytes: it must never panic, and a record it accepts
//! must read back the same after being written out again.

#![no_main]

use helpdesk_mail_operator::dkim::{parse, parse_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = parse_bytes(data) else {
        return;
    };
    let again = parse(&record.to_string()).expect("a written record parses");
    assert_eq!(again.public_key, record.public_key);
    assert_eq!(again.key_type, record.key_type);
    assert_eq!(again.hash_algorithms, record.hash_algorithms);
    assert_eq!(again.services, record.services);
    assert_eq!(again.flags, record.flags);
    assert_eq!(again.notes, record.notes);
    assert_eq!(again.unknown_tags, record.unknown_tags);
    assert_eq!(again.is_revoked(), record.is_revoked());
    assert!(record.is_revoked() || again.same_key(&record));
});
