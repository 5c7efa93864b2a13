//! Kubernetes: pod identity for the agent cgroups of this node, and the deny-all NetworkPolicy
//! actuator (docs/KUBERNETES.md).
//!
//! - [`cgroup_path`]: which pod and container a kubelet cgroup path belongs to;
//! - [`pod`]: which pods are agents (labels), with what id and class;
//! - [`cache`]: the pods of this node, kept by [`watch`] from the API server and read by the
//!   agent registry through [`crate::identity::PodLookup`];
//! - [`netpol`]: a deny-all NetworkPolicy per contained pod, as an [`crate::respond::actuator::Actuator`];
//! - [`pod_wide`]: the in-kernel actions on every container cgroup of a pod;
//! - [`ticket`]: the pod and node named in SOC tickets.

pub mod cache;
pub mod cgroup_path;
pub mod client;
pub mod netpol;
pub mod pod;
pub mod pod_wide;
pub mod ticket;
pub mod watch;

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

pub use cache::PodCache;
pub use client::ClientError;
pub use pod::{LabelKeys, PodInfo};

/// The Kubernetes side of a running daemon: this node's pods, kept by a watch task (stopped
/// on drop), and the API connection settings for the actuators.
pub struct Node {
    pub name: String,
    pub pods: PodCache,
    pub api: kube::Config,
    watch: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Connects, starts the pod watch and waits (up to `sync_timeout_secs`) for the first list.
    pub async fn start(k: &KubernetesConfig) -> Result<Self, ClientError> {
        let name = k.node_name().map_err(ClientError::NodeName)?;
        let api = client::config(k).await?;
        let client = client::client(api.clone())?;
        log::info!(
            "Kubernetes: node {name}, API server {}, agents labelled {}",
            api.cluster_url,
            k.class_label
        );
        let (pods, watch) = watch::start(
            client,
            name.clone(),
            k.label_keys(),
            Duration::from_secs(k.sync_timeout_secs),
        )
        .await;
        Ok(Self {
            name,
            pods,
            api,
            watch,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// The `kubernetes:` configuration key (absent or `null`: not on Kubernetes).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// This node's name; `None`: the `NODE_NAME` environment variable (downward API).
    #[serde(default)]
    pub node_name: Option<String>,
    /// API server URL without credentials (tests, `kubectl proxy`); `None`: in-cluster service
    /// account, else the kubeconfig (`kube::Config::infer`).
    #[serde(default)]
    pub api: Option<String>,
    /// The pod label (or annotation) naming the agent's class; pods without it are not agents.
    #[serde(default = "defaults::class_label")]
    pub class_label: String,
    /// The pod label (or annotation) naming the agent id; default `<namespace>/<pod name>`.
    #[serde(default = "defaults::id_label")]
    pub id_label: String,
    /// Parents of the kubelet's cgroup hierarchies, relative to the cgroup v2 mount.
    #[serde(default = "defaults::cgroup_roots")]
    pub cgroup_roots: Vec<PathBuf>,
    /// How long events of a pod cgroup not yet resolved are held for its identity.
    #[serde(default = "defaults::hold_ms")]
    pub hold_ms: u64,
    /// Records held at most, all cgroups together; beyond, the oldest cgroup's are released.
    #[serde(default = "defaults::hold_max_events")]
    pub hold_max_events: usize,
    /// Events of a cgroup still unattributed this long after its first one make a finding.
    #[serde(default = "defaults::unidentified_after_secs")]
    pub unidentified_after_secs: u64,
    /// The tier of that finding; `null`: the policy decides from its score (1.0).
    #[serde(default = "defaults::unidentified_tier")]
    pub unidentified_tier: Option<crate::detect::Tier>,
    /// How long the start waits for the first list of this node's pods.
    #[serde(default = "defaults::sync_timeout_secs")]
    pub sync_timeout_secs: u64,
    /// Containment also creates a deny-all NetworkPolicy for the pod.
    #[serde(default = "defaults::yes")]
    pub network_policy: bool,
    /// Timeout of one NetworkPolicy call to the API server.
    #[serde(default = "defaults::api_timeout_ms")]
    pub api_timeout_ms: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            api: None,
            class_label: defaults::class_label(),
            id_label: defaults::id_label(),
            cgroup_roots: defaults::cgroup_roots(),
            hold_ms: defaults::hold_ms(),
            hold_max_events: defaults::hold_max_events(),
            unidentified_after_secs: defaults::unidentified_after_secs(),
            unidentified_tier: defaults::unidentified_tier(),
            sync_timeout_secs: defaults::sync_timeout_secs(),
            network_policy: true,
            api_timeout_ms: defaults::api_timeout_ms(),
        }
    }
}

impl KubernetesConfig {
    pub fn label_keys(&self) -> LabelKeys {
        LabelKeys {
            class: self.class_label.clone(),
            id: self.id_label.clone(),
        }
    }

    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.hold_ms)
    }

    /// The configured node name, else `NODE_NAME`.
    pub fn node_name(&self) -> Result<String, String> {
        match &self.node_name {
            Some(n) if !n.is_empty() => Ok(n.clone()),
            _ => std::env::var("NODE_NAME")
                .ok()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    "kubernetes.node_name: not set, and NODE_NAME is not in the environment \
                     (set it from the downward API: fieldRef spec.nodeName)"
                        .to_owned()
                }),
        }
    }

    /// Checks values serde cannot: (field, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let field = |f: &str| format!("kubernetes.{f}");
        for (name, label) in [
            ("class_label", &self.class_label),
            ("id_label", &self.id_label),
        ] {
            if label.is_empty() {
                return Err((field(name), "must not be empty".into()));
            }
        }
        if self.hold_max_events == 0 {
            return Err((field("hold_max_events"), "must be at least 1".into()));
        }
        if self.cgroup_roots.is_empty() {
            return Err((field("cgroup_roots"), "must name at least one".into()));
        }
        if let Some(api) = &self.api
            && !(api.starts_with("http://") || api.starts_with("https://"))
        {
            return Err((field("api"), format!("{api:?} is not an http(s) URL")));
        }
        Ok(())
    }
}

mod defaults {
    use std::path::PathBuf;

    pub fn class_label() -> String {
        "agent-monitor.io/class".into()
    }
    pub fn id_label() -> String {
        "agent-monitor.io/agent-id".into()
    }
    pub fn cgroup_roots() -> Vec<PathBuf> {
        vec!["kubepods.slice".into(), "kubepods".into()]
    }
    pub fn hold_ms() -> u64 {
        500
    }
    pub fn hold_max_events() -> usize {
        65_536
    }
    pub fn unidentified_after_secs() -> u64 {
        30
    }
    pub fn unidentified_tier() -> Option<crate::detect::Tier> {
        Some(crate::detect::Tier::Log)
    }
    pub fn sync_timeout_secs() -> u64 {
        10
    }
    pub fn yes() -> bool {
        true
    }
    pub fn api_timeout_ms() -> u64 {
        5000
    }
}
