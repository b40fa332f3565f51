//! SPF macro parser and expander: no input panics, for IPv4 and IPv6 clients.
#![no_main]

use std::net::IpAddr;

use helpdesk_mail_operator::spf::macros::{MacroContext, expand};
use helpdesk_mail_operator::spf::record::{parse_domain_spec, parse_macro_string};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_domain_spec("fuzz", &text);
    for explanation in [false, true] {
        let Ok(spec) = parse_macro_string(&text, explanation) else {
            continue;
        };
        for ip in [
            IpAddr::from([192, 0, 2, 1]),
            IpAddr::from([
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xcb, 0x01,
            ]),
        ] {
            let ctx = MacroContext {
                sender: "strong-bad@email.example.com",
                local: "strong-bad",
                sender_domain: "email.example.com",
                domain: &text,
                ip,
                helo: "mx.example.org",
                receiver: "receiver.example",
                now: 1_700_000_000,
                validated: Some("mail.example.com"),
            };
            let _ = expand(&spec, &ctx, explanation);
        }
    }
});
