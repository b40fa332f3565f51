//! The DKIM key record of RFC 6376 §3.6.1, read with the tag-list grammar of §3.2.
//!
//! [`parse`] is strict where a receiver would reject the key and lenient where receivers are:
//!
//! - Tags are `name=value` separated by `;`, with whitespace (folding whitespace included)
//!   allowed around names, `=` and values, and an optional trailing `;`. An empty tag between
//!   two `;` is tolerated with a warning. Any other grammar violation is an error.
//! - Tag names are case-sensitive (§3.2): `V=DKIM1` is an unknown tag, not the version.
//!   The keyword values of `k`, `h`, `s` and `t` are compared without ASCII case.
//! - A tag name that occurs twice makes the whole record invalid (§3.2).
//! - `v`, when present, must be the first tag and exactly `DKIM1`.
//! - `p` is required; its base64 may hold whitespace anywhere. An empty `p` is a revoked key
//!   (§3.6.1), which parses: whether a key is revoked is for the caller to judge.
//! - `k` defaults to `rsa`; `rsa` and `ed25519` (RFC 8463) are the key types receivers verify,
//!   any other is an error because receivers ignore such a key.
//! - `h`, `s` and `t` are colon-separated lists; values this parser does not know are kept
//!   and reported as warnings (receivers ignore them). Unknown tags are kept verbatim and
//!   ignored.
//!
//! It never panics, whatever the bytes. [`KeyRecord`]'s `Display` writes the record back in a
//! canonical form that parses to the same record.

use std::fmt;

use super::base64::{self, Base64Error};

/// The public-key algorithm of a key record (`k=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA (RFC 6376), the default.
    #[default]
    Rsa,
    /// Ed25519 (RFC 8463).
    Ed25519,
}

impl KeyType {
    /// The tag value: `rsa` or `ed25519`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("rsa") {
            Some(KeyType::Rsa)
        } else if value.eq_ignore_ascii_case("ed25519") {
            Some(KeyType::Ed25519)
        } else {
            None
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `name=value` pair, as written (surrounding whitespace removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

/// A parsed DKIM key record.
///
/// Optional tags are `None` when absent, so a record is written back with the tags it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Whether the record starts with `v=DKIM1`.
    pub version: bool,
    /// `h=`: the hash algorithms the key may be used with, as written (lower case). `None`
    /// allows all.
    pub hash_algorithms: Option<Vec<String>>,
    /// `k=`; `None` means the default, RSA.
    pub key_type: Option<KeyType>,
    /// `n=`: notes for people, verbatim.
    pub notes: Option<String>,
    /// `p=`, decoded. Empty: the key is revoked.
    pub public_key: Vec<u8>,
    /// `s=`: the service types (lower case). `None` means `*`, every service.
    pub services: Option<Vec<String>>,
    /// `t=`: the flags (lower case), e.g. `y` (testing) and `s` (strict identity).
    pub flags: Option<Vec<String>>,
    /// Tags this parser does not know, verbatim and in record order (receivers ignore them).
    pub unknown_tags: Vec<Tag>,
    /// One sentence per oddity a receiver tolerates.
    pub warnings: Vec<String>,
}

impl KeyRecord {
    /// A record holding only `v=DKIM1`, `k` and `p`: what a provider publishes.
    pub fn new(key_type: KeyType, public_key: Vec<u8>) -> Self {
        Self {
            version: true,
            hash_algorithms: None,
            key_type: Some(key_type),
            notes: None,
            public_key,
            services: None,
            flags: None,
            unknown_tags: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The key type, with the default applied.
    pub fn key_type(&self) -> KeyType {
        self.key_type.unwrap_or_default()
    }

    /// Whether `p=` is empty: the signer has revoked the key (RFC 6376 §3.6.1).
    pub fn is_revoked(&self) -> bool {
        self.public_key.is_empty()
    }

    /// Whether the key may sign email (`s=` absent, or holding `*` or `email`).
    pub fn allows_email(&self) -> bool {
        self.services
            .as_ref()
            .is_none_or(|s| s.iter().any(|v| v == "*" || v == "email"))
    }

    /// Whether the key may be used with SHA-256, the only hash receivers accept today
    /// (RFC 8301 retired SHA-1).
    pub fn allows_sha256(&self) -> bool {
        self.hash_algorithms
            .as_ref()
            .is_none_or(|h| h.iter().any(|v| v == "sha256"))
    }

    /// `t=y`: the domain is testing DKIM.
    pub fn testing(&self) -> bool {
        self.has_flag("y")
    }

    /// `t=s`: the `i=` domain of a signature must equal its `d=` domain.
    pub fn strict_identity(&self) -> bool {
        self.has_flag("s")
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags
            .as_ref()
            .is_some_and(|f| f.iter().any(|v| v == flag))
    }

    /// Whether both records publish the same usable key: same type, same decoded bytes,
    /// neither revoked. The text around the key (tags, whitespace, line folding) does not
    /// matter.
    pub fn same_key(&self, other: &KeyRecord) -> bool {
        !self.is_revoked()
            && self.key_type() == other.key_type()
            && self.public_key == other.public_key
    }
}

impl fmt::Display for KeyRecord {
    /// Canonical text: `v`, `h`, `k`, `n`, `s`, `t`, the unknown tags, then `p`, joined by `; `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tags: Vec<String> = Vec::new();
        if self.version {
            tags.push("v=DKIM1".to_string());
        }
        if let Some(h) = &self.hash_algorithms {
            tags.push(format!("h={}", h.join(":")));
        }
        if let Some(k) = self.key_type {
            tags.push(format!("k={k}"));
        }
        if let Some(n) = &self.notes {
            tags.push(format!("n={n}"));
        }
        if let Some(s) = &self.services {
            tags.push(format!("s={}", s.join(":")));
        }
        if let Some(t) = &self.flags {
            tags.push(format!("t={}", t.join(":")));
        }
        for tag in &self.unknown_tags {
            tags.push(format!("{}={}", tag.name, tag.value));
        }
        tags.push(format!("p={}", base64::encode(&self.public_key)));
        f.write_str(&tags.join("; "))
    }
}

/// Why a text is not a usable DKIM key record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record holds bytes that are not text.
    #[error("the key record is not ASCII text")]
    NotText,
    /// A character that no tag list may hold (control characters, non-ASCII).
    #[error("character {0:?} is not allowed in a key record")]
    BadCharacter(char),
    /// A `;`-separated part that is not `name=value`.
    #[error("{0:?} is not a name=value tag")]
    NotATag(String),
    /// A tag name that is not a letter followed by letters, digits and `_`.
    #[error("{0:?} is not a valid tag name")]
    BadTagName(String),
    /// A tag name that occurs twice: the whole record is invalid (RFC 6376 §3.2).
    #[error("tag {0} occurs more than once")]
    DuplicateTag(String),
    /// `v=` present but not the first tag.
    #[error("the v tag must be the first tag of the record")]
    VersionNotFirst,
    /// `v=` holding something other than `DKIM1`.
    #[error("version {0:?} is not DKIM1")]
    BadVersion(String),
    /// No `p=` tag at all (an empty one is a revoked key, not this error).
    #[error("the record has no p tag, so it publishes no key")]
    MissingKey,
    /// `p=` that is not base64.
    #[error("the p tag is not valid base64: {0}")]
    BadKey(#[source] Base64Error),
    /// `k=` naming a key type receivers do not verify.
    #[error("key type {0:?} is not one receivers verify (rsa or ed25519)")]
    UnknownKeyType(String),
    /// A list tag (`h`, `s`, `t`) with an empty or malformed element.
    #[error("tag {tag} has an invalid value {value:?}")]
    BadValue { tag: String, value: String },
}

fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn trim_fws(s: &str) -> &str {
    s.trim_matches(is_fws)
}

/// Parses a key record given as raw TXT bytes (the strings of one TXT record, joined).
pub fn parse_bytes(bytes: &[u8]) -> Result<KeyRecord, RecordError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(_) => Err(RecordError::NotText),
    }
}

/// Parses a key record (see the module documentation for the rules).
pub fn parse(text: &str) -> Result<KeyRecord, RecordError> {
    if let Some(bad) = text.chars().find(|&c| !(c.is_ascii_graphic() || is_fws(c))) {
        return Err(RecordError::BadCharacter(bad));
    }
    let mut warnings = Vec::new();
    let mut tags: Vec<Tag> = Vec::new();
    let specs: Vec<&str> = text.split(';').collect();
    let last = specs.len() - 1;
    for (index, spec) in specs.iter().enumerate() {
        let spec = trim_fws(spec);
        if spec.is_empty() {
            if index != last {
                warnings.push("empty tag between two ';' separators".to_string());
            }
            continue;
        }
        let Some((name, value)) = spec.split_once('=') else {
            return Err(RecordError::NotATag(spec.to_string()));
        };
        let name = trim_fws(name);
        let mut chars = name.chars();
        let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(RecordError::BadTagName(name.to_string()));
        }
        if tags.iter().any(|t| t.name == name) {
            return Err(RecordError::DuplicateTag(name.to_string()));
        }
        tags.push(Tag {
            name: name.to_string(),
            value: trim_fws(value).to_string(),
        });
    }
    interpret(tags, warnings)
}

/// Gives the tags their meaning.
fn interpret(tags: Vec<Tag>, mut warnings: Vec<String>) -> Result<KeyRecord, RecordError> {
    let mut record = KeyRecord {
        version: false,
        hash_algorithms: None,
        key_type: None,
        notes: None,
        public_key: Vec::new(),
        services: None,
        flags: None,
        unknown_tags: Vec::new(),
        warnings: Vec::new(),
    };
    let mut has_key = false;
    for (index, tag) in tags.into_iter().enumerate() {
        let value = tag.value.as_str();
        match tag.name.as_str() {
            "v" => {
                if index != 0 {
                    return Err(RecordError::VersionNotFirst);
                }
                if value != "DKIM1" {
                    return Err(RecordError::BadVersion(value.to_string()));
                }
                record.version = true;
            }
            "h" => {
                let list = colon_list("h", value)?;
                for alg in list
                    .iter()
                    .filter(|a| !matches!(a.as_str(), "sha1" | "sha256"))
                {
                    warnings.push(format!("unknown hash algorithm h={alg} is ignored"));
                }
                record.hash_algorithms = Some(list);
            }
            "k" => match KeyType::parse(value) {
                Some(key_type) => record.key_type = Some(key_type),
                None => return Err(RecordError::UnknownKeyType(value.to_string())),
            },
            "n" => record.notes = Some(value.to_string()),
            "p" => {
                record.public_key = base64::decode(value).map_err(RecordError::BadKey)?;
                has_key = true;
            }
            "s" => record.services = Some(colon_list("s", value)?),
            "t" => {
                let list = colon_list("t", value)?;
                for flag in list.iter().filter(|f| !matches!(f.as_str(), "y" | "s")) {
                    warnings.push(format!("unknown flag t={flag} is ignored"));
                }
                if list.iter().any(|f| f == "y") {
                    warnings.push(
                        "t=y: the domain is testing DKIM; receivers may treat its signatures as absent"
                            .to_string(),
                    );
                }
                record.flags = Some(list);
            }
            _ => record.unknown_tags.push(tag),
        }
    }
    if !has_key {
        return Err(RecordError::MissingKey);
    }
    record.warnings = warnings;
    Ok(record)
}

/// A `:`-separated list of tokens (letters, digits, `-`, `_`, `*`, `.`), lower-cased.
fn colon_list(tag: &str, value: &str) -> Result<Vec<String>, RecordError> {
    let bad = || RecordError::BadValue {
        tag: tag.to_string(),
        value: value.to_string(),
    };
    value
        .split(':')
        .map(|item| {
            let item = trim_fws(item);
            let ok = !item.is_empty()
                && item
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.'));
            if ok {
                Ok(item.to_ascii_lowercase())
            } else {
                Err(bad())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1024-bit RSA public key (SubjectPublicKeyInfo), as providers publish it.
    const KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDTZNt+KcsBLFajBDLWFVTv8qWWbTZnKi0pVJMqWu7K\
MSszpiDP8mWTeSlxeLBsXaCb8ibp2aCO/avtFqklmylmpI8Q2Gq1wn+9ESGJoxtpuSfOxE/Y7/F4YoGJnQASqSTe3R/Gzn\
3iafu/0GXTH6XucpnqfafsTIgmGni3q//p5QIDAQAB";

    #[test]
    fn parses_a_provider_record() {
        let r = parse(&format!("v=DKIM1; k=rsa; p={KEY}")).expect("valid");
        assert!(r.version);
        assert_eq!(r.key_type(), KeyType::Rsa);
        assert_eq!(r.public_key, base64::decode(KEY).unwrap());
        assert_eq!(r.public_key.len(), 162);
        assert!(!r.is_revoked() && r.allows_email() && r.allows_sha256());
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn defaults_apply_when_tags_are_absent() {
        let r = parse(&format!("p={KEY}")).expect("valid");
        assert!(!r.version);
        assert_eq!(r.key_type, None);
        assert_eq!(r.key_type(), KeyType::Rsa);
        assert_eq!(r.services, None);
        assert!(r.allows_email() && r.allows_sha256() && !r.testing());
    }

    #[test]
    fn every_tag() {
        let r = parse(&format!(
            "v=DKIM1; h=sha1:SHA256; k=ed25519; n=rotated 2024; s=email:x-other; t=y:s; p={KEY}"
        ))
        .expect("valid");
        assert_eq!(
            r.hash_algorithms,
            Some(vec!["sha1".to_string(), "sha256".to_string()])
        );
        assert_eq!(r.key_type, Some(KeyType::Ed25519));
        assert_eq!(r.notes.as_deref(), Some("rotated 2024"));
        assert_eq!(
            r.services,
            Some(vec!["email".to_string(), "x-other".to_string()])
        );
        assert!(r.testing() && r.strict_identity());
        assert!(r.warnings.iter().any(|w| w.contains("testing")));
    }

    #[test]
    fn folding_whitespace_inside_the_key_and_around_tags() {
        let folded: String = KEY
            .as_bytes()
            .chunks(20)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n\t ");
        let r = parse(&format!(" v = DKIM1 ;\r\n k = rsa ;\tp = {folded} ;")).expect("valid");
        assert_eq!(r.public_key, base64::decode(KEY).unwrap());
        let plain = parse(&format!("v=DKIM1;k=rsa;p={KEY}")).unwrap();
        assert!(r.same_key(&plain));
    }

    #[test]
    fn empty_p_is_a_revoked_key() {
        for text in ["v=DKIM1; p=", "v=DKIM1; k=rsa; p= ;", "p=\r\n "] {
            let r = parse(text).expect("a revoked key parses");
            assert!(r.is_revoked(), "{text:?}");
            assert!(!r.same_key(&r), "a revoked key matches nothing");
        }
    }

    #[test]
    fn version_must_be_first_and_exact() {
        assert_eq!(
            parse(&format!("k=rsa; v=DKIM1; p={KEY}")),
            Err(RecordError::VersionNotFirst)
        );
        assert_eq!(
            parse("v=DKIM2; p="),
            Err(RecordError::BadVersion("DKIM2".to_string()))
        );
        assert_eq!(
            parse("v=dkim1; p="),
            Err(RecordError::BadVersion("dkim1".to_string()))
        );
        // Tag names are case-sensitive: `V` is an unknown tag, ignored.
        let r = parse("V=whatever; p=").expect("valid");
        assert!(!r.version);
        assert_eq!(r.unknown_tags.len(), 1);
    }

    #[test]
    fn duplicate_tags_invalidate_the_record() {
        assert_eq!(
            parse(&format!("v=DKIM1; p={KEY}; p={KEY}")),
            Err(RecordError::DuplicateTag("p".to_string()))
        );
        assert_eq!(
            parse("p=; k=rsa; k=rsa"),
            Err(RecordError::DuplicateTag("k".to_string()))
        );
        assert_eq!(
            parse("v=DKIM1; v=DKIM1; p="),
            Err(RecordError::DuplicateTag("v".to_string()))
        );
    }

    #[test]
    fn missing_and_malformed_keys() {
        assert_eq!(parse("v=DKIM1; k=rsa"), Err(RecordError::MissingKey));
        assert_eq!(parse(""), Err(RecordError::MissingKey));
        assert_eq!(
            parse("v=DKIM1; p=MIGf!MA0"),
            Err(RecordError::BadKey(Base64Error::BadCharacter('!')))
        );
        assert_eq!(
            parse("v=DKIM1; p=MIGfM"),
            Err(RecordError::BadKey(Base64Error::BadLength))
        );
    }

    #[test]
    fn unknown_key_types_and_bad_lists() {
        assert_eq!(
            parse("k=dsa; p="),
            Err(RecordError::UnknownKeyType("dsa".to_string()))
        );
        assert!(matches!(
            parse("h=sha256::sha1; p="),
            Err(RecordError::BadValue { ref tag, .. }) if tag == "h"
        ));
        assert!(matches!(parse("s=; p="), Err(RecordError::BadValue { .. })));
        let r = parse("h=md5:sha256; t=x; p=").expect("unknown values are ignored");
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    }

    #[test]
    fn grammar_violations() {
        assert_eq!(
            parse("v=DKIM1; k"),
            Err(RecordError::NotATag("k".to_string()))
        );
        assert_eq!(
            parse("v=DKIM1; 1k=rsa; p="),
            Err(RecordError::BadTagName("1k".to_string()))
        );
        assert_eq!(
            parse("v=DKIM1; =rsa; p="),
            Err(RecordError::BadTagName(String::new()))
        );
        assert_eq!(
            parse("v=DKIM1; p=\u{0}"),
            Err(RecordError::BadCharacter('\u{0}'))
        );
        assert_eq!(
            parse("v=DKIM1; n=caf\u{e9}; p="),
            Err(RecordError::BadCharacter('\u{e9}'))
        );
        assert_eq!(parse_bytes(b"p=\xff"), Err(RecordError::NotText));
    }

    #[test]
    fn tolerated_oddities_warn() {
        let r = parse("v=DKIM1;; p=").expect("tolerated");
        assert_eq!(r.warnings.len(), 1);
        let r = parse("v=DKIM1; foo=bar baz; p=").expect("unknown tags are ignored");
        assert_eq!(
            r.unknown_tags,
            vec![Tag {
                name: "foo".to_string(),
                value: "bar baz".to_string()
            }]
        );
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn usability_for_email_and_sha256() {
        assert!(!parse("s=x-other; p=").unwrap().allows_email());
        assert!(parse("s=*; p=").unwrap().allows_email());
        assert!(!parse("h=sha1; p=").unwrap().allows_sha256());
    }

    #[test]
    fn key_comparison_is_by_bytes_and_type() {
        let a = parse(&format!("v=DKIM1; k=rsa; p={KEY}")).unwrap();
        let b = parse(&format!("p={KEY}; n=same key, other text")).unwrap();
        let c = parse(&format!("k=ed25519; p={KEY}")).unwrap();
        let d = parse("p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQ==").unwrap();
        assert!(a.same_key(&b) && b.same_key(&a));
        assert!(!a.same_key(&c));
        assert!(!a.same_key(&d));
    }

    #[test]
    fn display_round_trips() {
        let r = parse(&format!(
            "v=DKIM1; h=sha256; k=rsa; n=note; s=email; t=s; x=1; p={KEY}"
        ))
        .unwrap();
        let text = r.to_string();
        assert_eq!(
            text,
            format!("v=DKIM1; h=sha256; k=rsa; n=note; s=email; t=s; x=1; p={KEY}")
        );
        assert_eq!(parse(&text), Ok(r));
        let revoked = KeyRecord::new(KeyType::Rsa, Vec::new());
        assert_eq!(revoked.to_string(), "v=DKIM1; k=rsa; p=");
    }
}
