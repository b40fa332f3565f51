//! SPF record parser: no input panics, and a parsed record written back parses to itself.
#![no_main]

use helpdesk_mail_operator::spf::parse_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for candidate in [text.to_string(), format!("v=spf1 {text}")] {
        if let Ok(record) = parse_record(&candidate) {
            let written = record.to_string();
            assert_eq!(parse_record(&written).as_ref(), Ok(&record), "{written}");
        }
    }
});
