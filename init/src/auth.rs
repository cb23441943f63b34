//! The run's key and what it authenticates: the state journals and the records.
//!
//! The controller gives every init of a run one key ([`KEY_ENV`], 32 random bytes); steps never
//! see it. The init never uses it directly: it derives one key per purpose, bound to the exact
//! bytes of the spec it read,
//!
//! ```text
//! K_purpose = HMAC-SHA256(K, "stepinit " purpose " " SHA-256(spec bytes))   purpose: journal | records
//! ```
//!
//! so a spec changed after the controller wrote it (a step that can write its file) makes an
//! init whose journals no other init verifies and whose records the controller rejects: the
//! change fails the run instead of steering it.
//!
//! A record's tag is the first 128 bits of HMAC-SHA256(K_records, group (u32 LE) || seq (u64 LE)
//! || the record's JSON up to its closing brace), `seq` counting the records this init printed
//! from 0. It travels as the record's last field, `"mac"` (see `protocol/README.md`).

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

/// The environment variable that carries the key: 64 hex digits (32 bytes). The init removes it
/// from every step's environment.
pub const KEY_ENV: &str = "STEPINIT_STATE_KEY";

/// Bytes of a tag (journal lines and records).
pub const TAG: usize = 16;

/// A 32-byte key.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
    /// Given by the controller; without it the journal still detects damage, not forgery, and
    /// records go unsigned.
    pub given: bool,
}

impl Key {
    /// A key given as bytes (tests and fuzzers).
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key { bytes, given: true }
    }

    /// The key from [`KEY_ENV`], or the all-zero key (and `given: false`) when it is unset.
    pub fn from_env() -> Result<Key, String> {
        match std::env::var_os(KEY_ENV) {
            None => Ok(Key {
                bytes: [0; 32],
                given: false,
            }),
            Some(v) => Key::from_hex(v.as_encoded_bytes()).map_err(|e| format!("{KEY_ENV}: {e}")),
        }
    }

    /// A key written as 64 hex digits.
    pub fn from_hex(v: &[u8]) -> Result<Key, String> {
        if v.len() != 64 {
            return Err(format!(
                "must be 64 hex digits (32 bytes), got {} characters",
                v.len()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in v.chunks(2).enumerate() {
            match (hex_val(pair[0]), hex_val(pair[1])) {
                (Some(h), Some(l)) => bytes[i] = h << 4 | l,
                _ => return Err("not hex digits".into()),
            }
        }
        Ok(Key { bytes, given: true })
    }

    /// The key for `purpose` ("journal" or "records") of the spec whose bytes hash to
    /// `spec_digest` (see the module doc).
    pub fn derive(&self, purpose: &str, spec_digest: &[u8; 32]) -> Key {
        let mut m = Tagger::new(self).keyed;
        m.update(b"stepinit ");
        m.update(purpose.as_bytes());
        m.update(b" ");
        m.update(spec_digest);
        Key {
            bytes: m.finalize().into_bytes().into(),
            given: self.given,
        }
    }
}

/// SHA-256 of a spec's bytes, as [`Key::derive`] takes it.
pub fn spec_digest(spec_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(spec_bytes).into()
}

pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// HMAC-SHA256 keyed once; each tag continues a copy of the keyed state.
#[derive(Clone)]
pub struct Tagger {
    keyed: Hmac<Sha256>,
}

impl Tagger {
    pub fn new(key: &Key) -> Tagger {
        Tagger {
            // HMAC takes keys of any length: this cannot fail.
            keyed: <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&key.bytes)
                .unwrap_or_else(|_| unreachable!()),
        }
    }

    /// The first [`TAG`] bytes of HMAC(key, parts concatenated).
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; TAG] {
        let mut m = self.keyed.clone();
        for p in parts {
            m.update(p);
        }
        let full = m.finalize().into_bytes();
        let mut t = [0u8; TAG];
        t.copy_from_slice(&full[..TAG]);
        t
    }
}

/// The tags of one init's records, in the order it prints them (the signer in the init, the
/// verifier in the controller: the same sequence).
#[derive(Clone)]
pub struct RecordTags {
    tagger: Tagger,
    group: u32,
    seq: u64,
}

impl RecordTags {
    /// For the records of container `group`, under the key derived for "records".
    pub fn new(records_key: &Key, group: u32) -> RecordTags {
        RecordTags {
            tagger: Tagger::new(records_key),
            group,
            seq: 0,
        }
    }

    fn tag_at(&self, seq: u64, body: &[u8]) -> [u8; TAG] {
        self.tagger
            .tag(&[&self.group.to_le_bytes(), &seq.to_le_bytes(), body])
    }

    /// The tag of the next record printed, `body` being its JSON up to the closing brace.
    pub fn sign(&mut self, body: &[u8]) -> [u8; TAG] {
        let t = self.tag_at(self.seq, body);
        self.seq += 1;
        t
    }

    /// Whether `tag` is the next record's. A record that verifies as the first one instead
    /// starts the sequence again: the output of a restarted container's new init.
    pub fn verify(&mut self, body: &[u8], tag: &[u8; TAG]) -> bool {
        for seq in [self.seq, 0] {
            if self.tag_at(seq, body) == *tag {
                self.seq = seq + 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_depend_on_key_purpose_and_spec() {
        let k = Key::from_bytes([1; 32]);
        let d1 = spec_digest(b"{\"version\":1}");
        let d2 = spec_digest(b"{\"version\":1 }");
        let t = |k: &Key| Tagger::new(k).tag(&[b"x"]);
        let base = t(&k.derive("journal", &d1));
        assert_ne!(base, t(&k.derive("journal", &d2)), "another spec");
        assert_ne!(base, t(&k.derive("records", &d1)), "another purpose");
        assert_ne!(
            base,
            t(&Key::from_bytes([2; 32]).derive("journal", &d1)),
            "another key"
        );
        assert_eq!(base, t(&k.derive("journal", &d1)));
    }

    #[test]
    fn record_tags_follow_the_sequence_and_the_group() {
        let k = Key::from_bytes([3; 32]);
        let mut signer = RecordTags::new(&k, 1);
        let a = signer.sign(b"{\"a\"");
        let b = signer.sign(b"{\"b\"");
        let mut v = RecordTags::new(&k, 1);
        assert!(!v.verify(b"{\"b\"", &b), "out of order");
        assert!(v.verify(b"{\"a\"", &a));
        assert!(v.verify(b"{\"b\"", &b));
        assert!(!v.verify(b"{\"b\"", &b), "a repeat");
        assert!(
            !RecordTags::new(&k, 0).verify(b"{\"a\"", &a),
            "another group"
        );
        // A restarted init signs from 0 again.
        let mut again = RecordTags::new(&k, 1);
        assert!(v.verify(b"{\"a\"", &again.sign(b"{\"a\"")));
        assert!(Key::from_hex(b"zz").is_err());
        assert!(Key::from_hex(&[b'a'; 64]).is_ok());
    }
}
