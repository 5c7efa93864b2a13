//! Daemon configuration: an embedded default (`config/default.yaml`), optionally replaced by a
//! file; unknown keys are refused so that a typo never silently changes behaviour.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The shipped defaults, also the documentation of every key.
pub const DEFAULT_YAML: &str = include_str!("../../config/default.yaml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agents: Vec<StaticAgent>,
    #[serde(default)]
    pub watch: Vec<PathBuf>,
    #[serde(default = "defaults::max_agents")]
    pub max_agents: u32,
    /// Size of the event ring buffer in MiB (a power of two).
    #[serde(default = "defaults::ring_buffer_mib")]
    pub ring_buffer_mib: u32,
    #[serde(default = "defaults::yes")]
    pub syscall_stream: bool,
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "defaults::snapshot_interval_ms")]
    pub snapshot_interval_ms: u64,
    #[serde(default = "defaults::rescan_interval_ms")]
    pub rescan_interval_ms: u64,
    #[serde(default)]
    pub detection: Detection,
    #[serde(default)]
    pub policy: crate::respond::policy::PolicyConfig,
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    /// Signed, chained audit log of decisions, actions and releases (`None`: not written).
    #[serde(default)]
    pub audit: Option<crate::respond::audit::AuditConfig>,
    /// SOC tickets (`None`: no tickets).
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
    /// Which credentials each agent holds, for revocation at containment.
    #[serde(default)]
    pub revoke: Option<crate::respond::revoke::RevokeConfig>,
    /// Forensic snapshot at containment (`None`: no snapshot).
    #[serde(default)]
    pub snapshot: Option<crate::respond::snapshot::SnapshotConfig>,
    /// The flight recorder of each agent's last events (for snapshots).
    #[serde(default)]
    pub flight: crate::respond::flight::FlightConfig,
    /// bpffs directory where containment (its maps and enforcing hooks) is pinned so that it
    /// outlives the daemon; `null` pins nothing.
    #[serde(default = "defaults::pin_dir")]
    pub pin_dir: Option<PathBuf>,
    /// Pod identity and the NetworkPolicy actuator on a Kubernetes node (`None`: not on one).
    #[serde(default)]
    pub kubernetes: Option<crate::k8s::KubernetesConfig>,
    /// The gRPC control API (docs/API.md); `null` turns it off.
    #[serde(default = "crate::api::ApiConfig::default_on")]
    pub api: Option<crate::api::ApiConfig>,
    /// Metrics and probe endpoint, OTLP export (docs/OBSERVABILITY.md).
    #[serde(default)]
    pub observability: crate::observe::ObservabilityConfig,
}

/// The SOC webhook.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// File holding the HMAC-SHA256 key.
    pub key_file: PathBuf,
    /// Durable outbox directory.
    pub outbox_dir: PathBuf,
    /// Findings of an agent within this many seconds update its open ticket.
    #[serde(default = "defaults::group_window_secs")]
    pub group_window_secs: u64,
    /// First retry wait in milliseconds (doubling to 5 minutes).
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
}

/// Feature windows, baselines, models and rules.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Detection {
    pub window_secs: u64,
    pub min_learning_windows: u32,
    pub models_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub sensitive_paths: Vec<String>,
    pub shells: Vec<String>,
}

impl Default for Detection {
    fn default() -> Self {
        Self {
            window_secs: 10,
            min_learning_windows: 30,
            models_dir: "models".into(),
            rules_dir: "rules".into(),
            sensitive_paths: [
                "/pii/**",
                "/sensitive/**",
                "/var/run/secrets/**",
                "/run/secrets/**",
                "**/.ssh/**",
                "/etc/shadow",
                "/etc/gshadow",
                "**/.aws/credentials",
                "**/.kube/config",
            ]
            .map(String::from)
            .into(),
            shells: [
                "sh", "bash", "dash", "zsh", "ksh", "ash", "busybox", "python", "python3", "perl",
                "ruby", "node", "php", "lua", "nc", "ncat", "socat",
            ]
            .map(String::from)
            .into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticAgent {
    pub cgroup: PathBuf,
    pub id: String,
    pub class: String,
}

mod defaults {
    pub fn max_agents() -> u32 {
        agent_monitor_common::DEFAULT_MAX_AGENTS
    }
    pub fn ring_buffer_mib() -> u32 {
        agent_monitor_common::RING_BUF_BYTES >> 20
    }
    pub fn yes() -> bool {
        true
    }
    pub fn poll_interval_ms() -> u64 {
        5
    }
    pub fn snapshot_interval_ms() -> u64 {
        1000
    }
    pub fn rescan_interval_ms() -> u64 {
        10_000
    }
    pub fn state_dir() -> std::path::PathBuf {
        "/var/lib/agent-monitor".into()
    }
    pub fn group_window_secs() -> u64 {
        900
    }
    pub fn retry_initial_ms() -> u64 {
        1000
    }
    pub fn pin_dir() -> Option<std::path::PathBuf> {
        Some("/sys/fs/bpf/agent-monitor".into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("config {path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_YAML, Path::new("<embedded default>"))
            .unwrap_or_else(|e| unreachable!("the embedded default config is tested: {e}"))
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            reason: reason.to_owned(),
        };
        if self.max_agents == 0 {
            return Err(invalid("max_agents".into(), "must be at least 1"));
        }
        if !self.ring_buffer_mib.is_power_of_two() || self.ring_buffer_mib > 1024 {
            return Err(invalid(
                "ring_buffer_mib".into(),
                "must be a power of two from 1 to 1024",
            ));
        }
        for (name, v) in [
            ("poll_interval_ms", self.poll_interval_ms),
            ("snapshot_interval_ms", self.snapshot_interval_ms),
            ("rescan_interval_ms", self.rescan_interval_ms),
        ] {
            if v == 0 {
                return Err(invalid(name.into(), "must be at least 1"));
            }
        }
        if self.detection.window_secs == 0 {
            return Err(invalid(
                "detection.window_secs".into(),
                "must be at least 1",
            ));
        }
        for (i, pattern) in self.detection.sensitive_paths.iter().enumerate() {
            if let Err(e) = globset::Glob::new(pattern) {
                return Err(invalid(
                    format!("detection.sensitive_paths[{i}]"),
                    &e.to_string(),
                ));
            }
        }
        if let Some(k) = &self.kubernetes {
            k.validate()
                .map_err(|(field, reason)| invalid(field, &reason))?;
        }
        if let Some(api) = &self.api {
            api.validate()
                .map_err(|(field, reason)| invalid(format!("api.{field}"), &reason))?;
        }
        if let Some((field, reason)) = self.observability.invalid() {
            return Err(invalid(field, &reason));
        }
        for (i, a) in self.agents.iter().enumerate() {
            if a.id.is_empty() || a.id.len() >= agent_monitor_common::AGENT_ID_LEN {
                return Err(invalid(format!("agents[{i}].id"), "must be 1 to 63 bytes"));
            }
            if a.class.is_empty() || a.class.len() >= agent_monitor_common::AGENT_CLASS_LEN {
                return Err(invalid(
                    format!("agents[{i}].class"),
                    "must be 1 to 31 bytes",
                ));
            }
        }
        Ok(())
    }

    /// Resolves a configured cgroup path against the cgroup v2 mount.
    pub fn cgroup_path(mount: &Path, configured: &Path) -> PathBuf {
        match configured.strip_prefix("/") {
            Ok(rel) if !configured.starts_with(mount) => mount.join(rel),
            _ if configured.is_absolute() => configured.to_owned(),
            _ => mount.join(configured),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded();
        assert_eq!(c.max_agents, 1024);
        assert_eq!(
            c.ring_buffer_mib << 20,
            agent_monitor_common::RING_BUF_BYTES
        );
        assert_eq!(c.watch, vec![PathBuf::from("agent-monitor/agents")]);
        // The shipped file documents the defaults: it must say what the code assumes.
        assert_eq!(c.detection, Detection::default());
        assert_eq!(c.policy, crate::respond::policy::PolicyConfig::default());
        assert_eq!(c.flight, crate::respond::flight::FlightConfig::default());
        assert!(c.audit.is_none() && c.webhook.is_none() && c.snapshot.is_none());
        assert_eq!(
            c.observability,
            crate::observe::ObservabilityConfig::default()
        );
        assert_eq!(c.api, Some(crate::api::ApiConfig::default()));
        assert!(c.kubernetes.is_none());
    }

    #[test]
    fn kubernetes_defaults_are_the_documented_ones_and_bad_values_name_the_field() {
        let c = Config::parse("kubernetes: {}\n", Path::new("k.yaml")).unwrap();
        assert_eq!(c.kubernetes, Some(crate::k8s::KubernetesConfig::default()));
        // The example in the shipped file, uncommented, is the default.
        let example: String = DEFAULT_YAML
            .lines()
            .skip_while(|l| !l.starts_with("# kubernetes:"))
            .take_while(|l| l.starts_with('#'))
            .map(|l| {
                format!(
                    "{}\n",
                    l.trim_start_matches('#').strip_prefix(' ').unwrap_or("")
                )
            })
            .collect();
        let c = Config::parse(&example, Path::new("example")).unwrap();
        assert_eq!(c.kubernetes, Some(crate::k8s::KubernetesConfig::default()));
        let err =
            Config::parse("kubernetes: {hold_max_events: 0}\n", Path::new("k.yaml")).unwrap_err();
        assert!(
            err.to_string().contains("kubernetes.hold_max_events"),
            "{err}"
        );
        let err =
            Config::parse("kubernetes: {api: localhost:8080}\n", Path::new("k.yaml")).unwrap_err();
        assert!(err.to_string().contains("kubernetes.api"), "{err}");
        let err = Config::parse("kubernetes: {hold: 5}\n", Path::new("k.yaml")).unwrap_err();
        assert!(err.to_string().contains("hold"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let err = Config::parse("max_agents: 4\nmax_agent: 5\n", Path::new("x.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("x.yaml") && msg.contains("max_agent") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err = Config::parse(
            "agents: [{cgroup: a, id: '', class: fraud}]\n",
            Path::new("y.yaml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("agents[0].id"), "{err}");
    }

    #[test]
    fn ring_buffer_size_must_be_a_power_of_two() {
        for bad in [
            "ring_buffer_mib: 0\n",
            "ring_buffer_mib: 48\n",
            "ring_buffer_mib: 2048\n",
        ] {
            let err = Config::parse(bad, Path::new("r.yaml")).unwrap_err();
            assert!(err.to_string().contains("ring_buffer_mib"), "{bad}: {err}");
        }
        assert_eq!(
            Config::parse("ring_buffer_mib: 4\n", Path::new("r.yaml"))
                .unwrap()
                .ring_buffer_mib,
            4
        );
    }

    #[test]
    fn cgroup_paths_resolve_against_the_mount() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(Config::cgroup_path(m, Path::new("a/b")), m.join("a/b"));
        assert_eq!(Config::cgroup_path(m, Path::new("/a/b")), m.join("a/b"));
        assert_eq!(Config::cgroup_path(m, &m.join("a")), m.join("a"));
    }
}
