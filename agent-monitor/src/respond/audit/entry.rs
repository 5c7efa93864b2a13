//! One audit entry: its fields, its canonical bytes and the line it is stored as.
//!
//! The canonical bytes are the compact JSON object of the entry without `sig`, members in the
//! order `seq, ts, kind, agent, class, data, prev, key_id`, every member always present, no
//! whitespace outside strings, the keys of every object inside `data` sorted by their UTF-8 bytes,
//! strings escaped as serde_json escapes them. The stored line is the canonical bytes with their
//! final `}` replaced by `,"sig":"<128 lowercase hex>"}`, then `\n`. A verifier never
//! re-serialises: it cuts the `sig` member off the line and checks the bytes as written
//! (see docs/AUDIT.md).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// `prev` of the first entry of a log.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The member that ends every stored line, before `"<hex>"}`.
pub(crate) const SIG_MEMBER: &[u8] = b",\"sig\":\"";

/// Length of an Ed25519 signature in hex.
pub(crate) const SIG_HEX_LEN: usize = 128;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The daemon started writing to this log (configuration digest, version).
    Startup,
    /// The daemon stopped.
    Shutdown,
    /// A decision: findings mapped to a tier.
    Decision,
    /// An action applied (or undone) by an actuator.
    Action,
    /// A contained agent was released.
    Release,
    /// A human approved an action or a release.
    Approval,
    /// An external anchor was recorded (e.g. the head of a previous log file).
    Anchor,
    /// A caller of the control API was refused (not authenticated, or not authorised).
    Refusal,
}

impl Kind {
    /// The `kind` string written in the entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Shutdown => "shutdown",
            Kind::Decision => "decision",
            Kind::Action => "action",
            Kind::Release => "release",
            Kind::Approval => "approval",
            Kind::Anchor => "anchor",
            Kind::Refusal => "refusal",
        }
    }

    /// Every kind, for command-line parsing.
    pub const ALL: [Kind; 8] = [
        Kind::Startup,
        Kind::Shutdown,
        Kind::Decision,
        Kind::Action,
        Kind::Release,
        Kind::Approval,
        Kind::Anchor,
        Kind::Refusal,
    ];
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown entry kind {s:?}"))
    }
}

/// An entry without its signature: exactly what is signed. Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryBody {
    /// 1 for the first entry of a file, then consecutive.
    pub seq: u64,
    /// RFC 3339 UTC time of writing, microseconds.
    pub ts: String,
    /// [`Kind::as_str`]; verifiers accept any string.
    pub kind: String,
    /// The agent, tokenised (`tok:` + 32 hex), or null.
    pub agent: Option<String>,
    /// The agent class, or null.
    pub class: Option<String>,
    /// Free JSON object.
    pub data: Value,
    /// SHA-256 hex of the previous entry's canonical bytes; [`GENESIS_PREV`] for seq 1.
    pub prev: String,
    /// The signing key's id ([`super::keys::key_id`]).
    pub key_id: String,
}

impl EntryBody {
    /// The canonical bytes (see the module documentation).
    pub fn canonical(&self) -> Vec<u8> {
        let body = EntryBody {
            data: sorted(&self.data),
            ..self.clone()
        };
        // Serialising a struct of strings, integers and a Value cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// `value` with the keys of every object sorted by their UTF-8 bytes, whatever serde_json's map
/// type (a `preserve_order` feature turned on elsewhere in the build would otherwise keep
/// insertion order).
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(v) = m.get(k) {
                    out.insert(k.clone(), sorted(v));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// SHA-256 of canonical bytes, lowercase hex: the next entry's `prev`.
pub fn digest(canonical: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical))
}

/// The stored line (with `\n`) of canonical bytes and their signature.
pub(crate) fn line(canonical: &[u8], sig: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical.len() + SIG_MEMBER.len() + SIG_HEX_LEN + 3);
    out.extend_from_slice(canonical.strip_suffix(b"}").unwrap_or(canonical));
    out.extend_from_slice(SIG_MEMBER);
    out.extend_from_slice(hex::encode(sig).as_bytes());
    out.extend_from_slice(b"\"}\n");
    out
}

/// Splits a stored line (without its `\n`) into canonical bytes and signature, or says why not.
pub(crate) fn split(line: &[u8]) -> Result<(Vec<u8>, [u8; 64]), &'static str> {
    let tail_len = SIG_MEMBER.len() + SIG_HEX_LEN + 2;
    if line.len() < tail_len + 2 || !line.ends_with(b"\"}") {
        return Err("the line does not end with a \"sig\" member");
    }
    let (head, tail) = line.split_at(line.len() - tail_len);
    let Some(sig_hex) = tail
        .strip_prefix(SIG_MEMBER)
        .and_then(|t| t.strip_suffix(b"\"}"))
    else {
        return Err("the line does not end with a \"sig\" member");
    };
    // Only lowercase hex: an upper-case digit would decode to the same signature, so the line
    // would change without the signature noticing.
    if !sig_hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err("sig is not 128 lowercase hex digits");
    }
    let mut sig = [0u8; 64];
    hex::decode_to_slice(sig_hex, &mut sig).map_err(|_| "sig is not 128 lowercase hex digits")?;
    let mut canonical = head.to_vec();
    canonical.push(b'}');
    Ok((canonical, sig))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body() -> EntryBody {
        EntryBody {
            seq: 1,
            ts: "2026-01-02T03:04:05.000006Z".into(),
            kind: "decision".into(),
            agent: Some("tok:00112233445566778899aabbccddeeff".into()),
            class: None,
            data: json!({"z": 1, "a": {"y": [ {"b": 1, "a": 2} ], "x": "é\n"}}),
            prev: GENESIS_PREV.into(),
            key_id: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn canonical_bytes_are_fixed() {
        let c = body().canonical();
        assert_eq!(
            String::from_utf8(c).unwrap_or_default(),
            format!(
                "{{\"seq\":1,\"ts\":\"2026-01-02T03:04:05.000006Z\",\"kind\":\"decision\",\
                 \"agent\":\"tok:00112233445566778899aabbccddeeff\",\"class\":null,\
                 \"data\":{{\"a\":{{\"x\":\"é\\n\",\"y\":[{{\"a\":2,\"b\":1}}]}},\"z\":1}},\
                 \"prev\":\"{GENESIS_PREV}\",\"key_id\":\"0123456789abcdef\"}}"
            )
        );
    }

    #[test]
    fn line_splits_back() {
        let c = body().canonical();
        let sig = [0xabu8; 64];
        let l = line(&c, &sig);
        assert_eq!(l.last(), Some(&b'\n'));
        let (c2, sig2) = split(&l[..l.len() - 1]).expect("splits");
        assert_eq!(c2, c);
        assert_eq!(sig2, sig);
        let upper = String::from_utf8_lossy(&l[..l.len() - 1]).replace("abab\"}", "ABab\"}");
        assert!(split(upper.as_bytes()).is_err());
    }
}
