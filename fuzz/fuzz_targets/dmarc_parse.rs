//! The DMARC tag-list parser on arbitrary bytes: it must never panic, and a record it accepts
//! must read back the same after being written out again.

#![no_main]

use helpdesk_mail_operator::dmarc::{parse, parse_bytes, serialize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = parse_bytes(data) else {
        return;
    };
    let text = serialize(&record.tags);
    let again = parse(&text).expect("a serialized record parses");
    assert_eq!(again.tags, record.tags);
    assert_eq!(again.p, record.p);
    assert_eq!(again.aspf, record.aspf);
});
