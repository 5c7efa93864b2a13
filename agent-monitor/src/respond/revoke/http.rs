//! The HTTP side of revocation: one blocking client, URL checks, reading replies.

use std::{io::Read as _, net::IpAddr, time::Duration};

use super::{RevokeError, Secret};

/// Longest part of a server reply quoted in a record.
const BODY_EXCERPT: usize = 300;

/// A client that reports HTTP errors as statuses (so they can be classified) and never follows
/// redirects (credentials go only where configured).
pub(super) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("agent-monitor")
        .build()
        .new_agent()
}

/// Accepts `https://` URLs, and `http://` only to a loopback host: credentials are never sent
/// in clear over a network.
pub(super) fn check_url(url: &str) -> Result<(), RevokeError> {
    let bad = |reason: &str| RevokeError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("not an absolute URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not accepted"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if is_loopback(authority) => Ok(()),
        "http" => Err(bad(
            "plain http is only accepted to a loopback address; use https",
        )),
        _ => Err(bad("scheme must be https")),
    }
}

fn is_loopback(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads a reply: `Ok(status)` when the status is one of `ok`, otherwise a `Status` error with
/// the start of the body (scrubbed of `secrets`) and any Retry-After.
pub(super) fn finish(
    url: &str,
    reply: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ok: &[u16],
    secrets: &[&Secret],
) -> Result<(u16, String), RevokeError> {
    let mut reply = reply.map_err(|source| RevokeError::Transport {
        url: url.to_owned(),
        source,
    })?;
    let status = reply.status().as_u16();
    let retry_after = reply
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut raw = Vec::new();
    // The body only explains; failing to read it does not change the outcome.
    let _ = reply
        .body_mut()
        .as_reader()
        .take(BODY_EXCERPT as u64 * 4)
        .read_to_end(&mut raw);
    let mut body: String = String::from_utf8_lossy(&raw)
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(BODY_EXCERPT)
        .collect();
    for secret in secrets {
        body = secret.scrub(&body);
    }
    if ok.contains(&status) {
        Ok((status, body))
    } else {
        Err(RevokeError::Status {
            url: url.to_owned(),
            status,
            body,
            retry_after,
        })
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value (WHATWG URL standard).
pub(super) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters pass).
pub(super) fn path_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Joins a base address and a path with exactly one slash.
pub(super) fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        assert!(check_url("https://as.example/revoke").is_ok());
        assert!(check_url("http://127.0.0.1:8080/revoke").is_ok());
        assert!(check_url("http://localhost/revoke").is_ok());
        assert!(check_url("http://[::1]:80/x").is_ok());
        assert!(check_url("http://10.0.0.1/revoke").is_err());
        assert!(check_url("http://as.example/revoke").is_err());
        assert!(check_url("ftp://as.example/").is_err());
        assert!(check_url("https://user:pw@as.example/").is_err());
        assert!(check_url("as.example/revoke").is_err());
        assert!(check_url("https:///x").is_err());
    }

    #[test]
    fn encodes_forms_and_paths() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(path_encode("ab c~"), "ab%20c~");
        assert_eq!(join("http://x/", "/v1/a"), "http://x/v1/a");
    }
}
