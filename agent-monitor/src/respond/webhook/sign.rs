//! HMAC-SHA256 request signing: `X-AgentMonitor-Signature: sha256=<hex>` over
//! `timestamp + "." + body`, with the key read from a file.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::error::{VerifyError, WebhookError};

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the Unix time in seconds at which the request was signed.
pub const HEADER_TIMESTAMP: &str = "X-AgentMonitor-Timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256 of timestamp "." body>`.
pub const HEADER_SIGNATURE: &str = "X-AgentMonitor-Signature";
/// Header carrying the ticket version's idempotency key (`<ticket id>:v<version>`).
pub const HEADER_IDEMPOTENCY: &str = "Idempotency-Key";
/// How far a receiver should let a timestamp be from its own clock, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Keys shorter than this are refused: HMAC-SHA256 wants at least 32 bytes of secret.
const MIN_KEY_LEN: usize = 32;

/// The shared secret, keyed into an HMAC state once. Not printed by `Debug`.
#[derive(Clone)]
pub struct SigningKey {
    keyed: HmacSha256,
    len: usize,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} bytes)", self.len)
    }
}

impl SigningKey {
    /// A key from bytes (tests, receivers); at least 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(format!(
                "{} bytes, at least {MIN_KEY_LEN} are needed",
                bytes.len()
            ));
        }
        let keyed = HmacSha256::new_from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            keyed,
            len: bytes.len(),
        })
    }

    /// Read the key file: its bytes, less trailing whitespace (a final newline is common).
    /// A key file readable by group or others is accepted with a warning.
    pub fn load(path: &Path) -> Result<Self, WebhookError> {
        let raw = std::fs::read(path).map_err(|source| WebhookError::KeyRead {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_shared(path);
        let end = raw
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        Self::from_bytes(&raw[..end]).map_err(|reason| WebhookError::KeyInvalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The `X-AgentMonitor-Signature` value for `body` sent at Unix time `ts` (seconds, decimal).
    pub fn sign(&self, body: &[u8], ts: &str) -> String {
        let mut mac = self.keyed.clone();
        feed(&mut mac, ts, body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        log::warn!(
            "webhook signing key {} is readable by group or others (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
}

fn feed(mac: &mut HmacSha256, ts: &str, body: &[u8]) {
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
}

/// Check a signature in constant time. `ts` and `sig` are the header values as received.
/// This does not look at the clock: use [`verify_fresh`] to also refuse replays.
pub fn verify(body: &[u8], ts: &str, sig: &str, key: &[u8]) -> Result<(), VerifyError> {
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::BadTimestamp);
    }
    let hex_sig = sig
        .trim()
        .strip_prefix("sha256=")
        .ok_or(VerifyError::Malformed)?;
    let raw = hex::decode(hex_sig).map_err(|_| VerifyError::Malformed)?;
    if raw.len() != 32 {
        return Err(VerifyError::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| VerifyError::Key)?;
    feed(&mut mac, ts, body);
    mac.verify_slice(&raw).map_err(|_| VerifyError::Mismatch)
}

/// [`verify`], and refuse a timestamp more than `tolerance` away from `now` (replay protection).
pub fn verify_fresh(
    body: &[u8],
    ts: &str,
    sig: &str,
    key: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    verify(body, ts, sig, key)?;
    let sent: u64 = ts.parse().map_err(|_| VerifyError::BadTimestamp)?;
    let now = unix_secs(now);
    let age = now.abs_diff(sent);
    if age > tolerance.as_secs() {
        return Err(VerifyError::Stale {
            ts: sent,
            age_secs: age,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(())
}

/// Seconds since the Unix epoch (0 for a clock before 1970).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sign(body: &[u8], ts: &str, key: &[u8]) -> String {
        SigningKey::from_bytes(key).expect("key").sign(body, ts)
    }

    #[test]
    fn webhook_sign_round_trip_and_tamper() {
        let sig = sign(b"{\"a\":1}", "1700000000", KEY);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(verify(b"{\"a\":1}", "1700000000", &sig, KEY), Ok(()));
        assert_eq!(
            verify(b"{\"a\":2}", "1700000000", &sig, KEY),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"{\"a\":1}", "1700000001", &sig, KEY),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"{\"a\":1}", "1700000000", "md5=00", KEY),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(b"{\"a\":1}", "17e9", &sig, KEY),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn webhook_sign_known_vector() {
        // echo -n '1700000000.hello' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
        let sig = sign(b"hello", "1700000000", KEY);
        let expected = {
            let mut m = HmacSha256::new_from_slice(KEY).expect("any key length");
            m.update(b"1700000000.hello");
            format!("sha256={}", hex::encode(m.finalize().into_bytes()))
        };
        assert_eq!(sig, expected);
    }

    #[test]
    fn webhook_verify_fresh_rejects_old_timestamps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let old = "1699999000";
        let sig = sign(b"x", old, KEY);
        assert_eq!(
            verify_fresh(b"x", old, &sig, KEY, now, DEFAULT_TOLERANCE),
            Err(VerifyError::Stale {
                ts: 1_699_999_000,
                age_secs: 1000,
                tolerance_secs: 300
            })
        );
        let fresh = "1699999900";
        let sig = sign(b"x", fresh, KEY);
        assert_eq!(
            verify_fresh(b"x", fresh, &sig, KEY, now, DEFAULT_TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn webhook_key_file_trims_newline_and_refuses_short_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, b"0123456789abcdef0123456789abcdef\n").expect("write");
        let key = SigningKey::load(&path).expect("load");
        assert_eq!(key.sign(b"b", "1"), sign(b"b", "1", KEY));
        std::fs::write(&path, b"short\n").expect("write");
        let err = SigningKey::load(&path).expect_err("short key");
        assert!(err.to_string().contains("at least 32"), "{err}");
        let err = SigningKey::load(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
