//! Base64 (RFC 4648 §4, the standard alphabet) for the `p=` tag of DKIM key records.
//!
//! The decoder reads the `base64string` of RFC 6376 §3.6.1: whitespace may appear anywhere
//! between characters, and the trailing `=` padding may be left out (receivers accept both).
//! Anything else — a character outside the alphabet, a `=` before the end, a length that
//! cannot be base64 — is an error. Bits left over after the last full byte are ignored, so two
//! spellings of the same bytes decode to the same key.

/// Why a text is not base64.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// A character outside `A-Z a-z 0-9 + /` and whitespace.
    #[error("character {0:?} is not base64")]
    BadCharacter(char),
    /// `=` padding followed by more data, or more than two `=`.
    #[error("'=' padding may only end the key")]
    MisplacedPadding,
    /// The data ends one character into a 4-character group, which holds no full byte.
    #[error("the key's length is not a valid base64 length")]
    BadLength,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn is_fws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn sextet(c: u8) -> Option<u32> {
    let value = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Decodes base64 text with folding whitespace anywhere and optional padding.
pub fn decode(text: &str) -> Result<Vec<u8>, Base64Error> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut group: u32 = 0;
    let mut in_group = 0usize;
    let mut padding = 0usize;
    for c in text.chars() {
        if c.is_ascii() && is_fws(c as u8) {
            continue;
        }
        if c == '=' {
            padding += 1;
            if padding > 2 {
                return Err(Base64Error::MisplacedPadding);
            }
            continue;
        }
        if padding > 0 {
            return Err(Base64Error::MisplacedPadding);
        }
        let Some(value) = u8::try_from(c).ok().and_then(sextet) else {
            return Err(Base64Error::BadCharacter(c));
        };
        group = (group << 6) | value;
        in_group += 1;
        if in_group == 4 {
            out.extend_from_slice(&[(group >> 16) as u8, (group >> 8) as u8, group as u8]);
            group = 0;
            in_group = 0;
        }
    }
    match in_group {
        0 if padding == 0 => {}
        0 => return Err(Base64Error::MisplacedPadding),
        1 => return Err(Base64Error::BadLength),
        2 if padding == 0 || padding == 2 => out.push((group >> 4) as u8),
        3 if padding <= 1 => {
            out.extend_from_slice(&[(group >> 10) as u8, (group >> 2) as u8]);
        }
        _ => return Err(Base64Error::MisplacedPadding),
    }
    Ok(out)
}

/// Encodes bytes as padded base64 without whitespace.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                let index = (group >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_test_vectors() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (bytes, text) in vectors {
            assert_eq!(encode(bytes), text);
            assert_eq!(decode(text).as_deref(), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn whitespace_anywhere_and_missing_padding() {
        assert_eq!(decode(" Zm9v\r\n YmE = ").as_deref(), Ok(&b"fooba"[..]));
        assert_eq!(decode("Zm9vYg").as_deref(), Ok(&b"foob"[..]));
        assert_eq!(decode("Zm9vYmE").as_deref(), Ok(&b"fooba"[..]));
        assert_eq!(decode("\t").as_deref(), Ok(&b""[..]));
    }

    #[test]
    fn errors() {
        assert_eq!(decode("Zm9v!"), Err(Base64Error::BadCharacter('!')));
        assert_eq!(decode("Zm9vé"), Err(Base64Error::BadCharacter('é')));
        assert_eq!(decode("Zm=9v"), Err(Base64Error::MisplacedPadding));
        assert_eq!(decode("Zg==="), Err(Base64Error::MisplacedPadding));
        assert_eq!(decode("Zm9=="), Err(Base64Error::MisplacedPadding));
        assert_eq!(decode("="), Err(Base64Error::MisplacedPadding));
        assert_eq!(decode("Zm9vY"), Err(Base64Error::BadLength));
        assert_eq!(decode("Z"), Err(Base64Error::BadLength));
    }
}
