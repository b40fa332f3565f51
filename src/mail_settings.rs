//! The tenant's mail settings: the ConfigMap keys the operator owns and their values,
//! derived from the recorded sender states only (docs/design.md §7).

use std::collections::BTreeMap;

use crate::api::{SenderStatus, SendingAs};

/// ConfigMap keys the operator owns (docs/design.md §7).
pub mod keys {
    pub const SENDER_MODE: &str = "sender-mode";
    pub const FROM: &str = "from";
    pub const REPLY_TO: &str = "reply-to";
    pub const SENDERS_JSON: &str = "senders.json";
    /// Every owned key.
    pub const ALL: [&str; 4] = [SENDER_MODE, FROM, REPLY_TO, SENDERS_JSON];
}

/// The owned ConfigMap keys for the senders' current From addresses (docs/design.md §7).
pub fn config_map_data(senders: &[SenderStatus]) -> BTreeMap<String, String> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry<'a> {
        from: &'a str,
        reply_to: &'a str,
        mode: SendingAs,
    }
    let mut map = BTreeMap::new();
    for s in senders {
        let reply = if s.sending_as == SendingAs::Fallback {
            s.address.as_str()
        } else {
            ""
        };
        map.insert(
            s.address.as_str(),
            Entry {
                from: &s.effective_from,
                reply_to: reply,
                mode: s.sending_as,
            },
        );
    }
    let any_fallback = senders.iter().any(|s| s.sending_as == SendingAs::Fallback);
    let first = senders.first();
    let mut data = BTreeMap::new();
    data.insert(
        keys::SENDER_MODE.to_owned(),
        if any_fallback { "fallback" } else { "tenant" }.to_owned(),
    );
    data.insert(
        keys::FROM.to_owned(),
        first.map(|s| s.effective_from.clone()).unwrap_or_default(),
    );
    data.insert(
        keys::REPLY_TO.to_owned(),
        first
            .filter(|s| s.sending_as == SendingAs::Fallback)
            .map(|s| s.address.clone())
            .unwrap_or_default(),
    );
    data.insert(
        keys::SENDERS_JSON.to_owned(),
        serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned()),
    );
    data
}
