//! DKIM (design §12): whether a tenant publishes the provider's DKIM key under each of the
//! provider's selectors, so that the provider's signatures verify and align with From.
//!
//! | module | job |
//! |---|---|
//! | [`record`] | the key-record parser of RFC 6376 §3.6.1 and its canonical writer |

mod base64;
pub mod record;

pub use base64::Base64Error;
pub use record::{KeyRecord, KeyType, RecordError, Tag, parse, parse_bytes};

/// Base64 as the `p=` tag writes it (padded, no whitespace); for suggested records and tests.
pub fn encode_key(bytes: &[u8]) -> String {
    base64::encode(bytes)
}
