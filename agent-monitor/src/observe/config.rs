//! The `observability` configuration key: where the metrics and probe endpoint listens, and
//! where findings, actions and metrics are exported over OTLP.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `observability` in the daemon configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// HTTP listener for `/metrics`, `/healthz` and `/readyz`; `None`: no listener.
    #[serde(default = "default_listen")]
    pub listen: Option<SocketAddr>,
    /// OTLP export over gRPC; `None`: no export.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            otlp: None,
        }
    }
}

fn default_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9750)))
}

/// `observability.otlp`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// gRPC endpoint of the collector, `http://HOST:PORT` (plaintext: a collector on the node
    /// or in the cluster network).
    pub endpoint: String,
    /// Seconds between two metric exports.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
    /// `k8s.node.name` resource attribute; `None`: the `NODE_NAME` environment variable, if set.
    #[serde(default)]
    pub node: Option<String>,
    /// Token key (64 hex digits) that turns agent ids into audit-log tokens in the exported
    /// records; `None`: the audit log's token key when the audit log is configured, else ids
    /// are exported in clear.
    #[serde(default)]
    pub token_key: Option<PathBuf>,
}

fn default_interval_secs() -> u64 {
    10
}

impl ObservabilityConfig {
    /// The first invalid field and why, named by its path in the configuration.
    pub fn invalid(&self) -> Option<(String, String)> {
        let otlp = self.otlp.as_ref()?;
        let field = |f: &str| format!("observability.otlp.{f}");
        let rest = otlp.endpoint.strip_prefix("http://");
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Some((
                field("endpoint"),
                format!(
                    "{:?} is not http://HOST:PORT (the export is gRPC in plaintext; TLS is not built in)",
                    otlp.endpoint
                ),
            ));
        }
        if otlp.interval_secs == 0 {
            return Some((field("interval_secs"), "must be at least 1".into()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ObservabilityConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn listen_defaults_to_loopback_9750_and_null_turns_it_off() {
        assert_eq!(parse("{}"), ObservabilityConfig::default());
        assert_eq!(parse("{}").listen, Some("127.0.0.1:9750".parse().unwrap()));
        assert_eq!(parse("listen: null").listen, None);
        assert_eq!(
            parse("listen: '0.0.0.0:9750'").listen,
            Some("0.0.0.0:9750".parse().unwrap())
        );
    }

    #[test]
    fn otlp_fields_have_defaults_and_are_checked() {
        let c = parse("otlp: {endpoint: 'http://127.0.0.1:4317'}");
        let o = c.otlp.as_ref().unwrap();
        assert_eq!((o.interval_secs, o.node.is_none()), (10, true));
        assert_eq!(c.invalid(), None);
        let bad = parse("otlp: {endpoint: '127.0.0.1:4317'}")
            .invalid()
            .unwrap();
        assert_eq!(bad.0, "observability.otlp.endpoint");
        let bad = parse("otlp: {endpoint: 'http://c:4317', interval_secs: 0}")
            .invalid()
            .unwrap();
        assert_eq!(bad.0, "observability.otlp.interval_secs");
        assert!(
            serde_yaml::from_str::<ObservabilityConfig>("otlp: {endpoint: x, nod: a}").is_err()
        );
    }
}
