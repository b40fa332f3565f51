//! DKIM (design §12): whether a tenant publishes the provider's DKIM key under each of the
//! provider's selectors, so that the provider's signatures verify and align with From.
//!
//! | module | job |
//! |---|---|
//! | [`record`] | the key-record parser of RFC 6376 §3.6.1 and its canonical writer |
//! | [`lookup`] | what DNS holds at a selector name, CNAMEs followed |
//! | [`check`] | the provider's reference keys, the outcome per selector, the path's verdict |
//!
//! Typical use, once per check round and then per sender:
//!
//! ```no_run
//! # async fn example(dns: &helpdesk_mail_operator::dns::Resolver) {
//! use helpdesk_mail_operator::dkim::{ProviderSelector, check_domain, fetch_provider_keys};
//! use helpdesk_mail_operator::dmarc::AlignmentMode;
//!
//! let selectors = [
//!     ProviderSelector::new("hd1", "dkim.provider.example"),
//!     ProviderSelector::new("hd2", "dkim.provider.example"),
//! ];
//! let keys = fetch_provider_keys(dns, &selectors).await;
//! let report = check_domain(
//!     dns,
//!     &keys,
//!     "customer.example",
//!     "customer.example",
//!     Some(AlignmentMode::Relaxed),
//! )
//! .await;
//! println!("{}: {}", report.verdict.state.as_str(), report.verdict.message);
//! # }
//! ```

mod base64;
pub mod check;
pub mod lookup;
pub mod record;

pub use base64::Base64Error;
pub use check::{
    DkimReport, DkimState, DkimVerdict, ProviderKey, ProviderSelector, Reference, SelectorOutcome,
    SelectorReport, SigningAlignment, check_domain, check_selector, decide_selector, dkim_path,
    fetch_provider_keys, selector_name, signing_alignment,
};
pub use lookup::{KeyLookup, MAX_CNAME_CHAIN, lookup_key};
pub use record::{KeyRecord, KeyType, RecordError, Tag, parse, parse_bytes};

/// Base64 as the `p=` tag writes it (padded, no whitespace); for suggested records and tests.
pub fn encode_key(bytes: &[u8]) -> String {
    base64::encode(bytes)
}
