//! Which pods are agents, and under what id and class: read from the pod's labels (or, failing
//! a label, an annotation of the same key).
//!
//! - class: the value of `class_label`; a pod without it is not an agent;
//! - agent id: the value of `id_label`, else `<namespace>/<pod name>`;
//! - both are cut to what the wire records hold (63 and 31 bytes): a longer value keeps its
//!   start and ends in `~` and 8 hex digits of its SHA-256, so two long names stay distinct.

use std::collections::BTreeMap;

use agent_monitor_common::{AGENT_CLASS_LEN, AGENT_ID_LEN};
use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest as _, Sha256};

/// The label keys that make a pod an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelKeys {
    pub class: String,
    pub id: String,
}

/// Annotation kubelet puts on the mirror pod of a static pod: the hash its cgroups are named by.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    pub id: String,
    pub class: String,
}

/// What the daemon keeps of one pod of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Static pods: the manifest hash in their cgroup paths (differs from the mirror pod's uid).
    pub config_hash: Option<String>,
    pub service_account: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `None`: not an agent.
    pub agent: Option<AgentIdentity>,
    /// Container id (without the `containerd://` scheme) -> container name.
    pub containers: BTreeMap<String, String>,
    /// What was wrong with the labels (logged when the pod is first seen or changes).
    pub problems: Vec<String>,
}

impl PodInfo {
    /// `None` for a pod without a name or uid (the API server always sets both).
    pub fn from_pod(pod: &Pod, keys: &LabelKeys) -> Option<Self> {
        let meta = &pod.metadata;
        let (name, uid) = (meta.name.clone()?, meta.uid.clone()?);
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let labels = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.clone().unwrap_or_default();
        let value = |key: &str| labels.get(key).or_else(|| annotations.get(key)).cloned();
        let mut problems = Vec::new();
        let agent = value(&keys.class).map(|class| {
            let class = if class.is_empty() {
                problems.push(format!(
                    "label {} is empty: class \"unclassified\"",
                    keys.class
                ));
                "unclassified".to_owned()
            } else {
                fit(&class, AGENT_CLASS_LEN - 1, &keys.class, &mut problems)
            };
            let id = match value(&keys.id).filter(|v| !v.is_empty()) {
                Some(id) => fit(&id, AGENT_ID_LEN - 1, &keys.id, &mut problems),
                None => fit(
                    &format!("{namespace}/{name}"),
                    AGENT_ID_LEN - 1,
                    "default agent id",
                    &mut problems,
                ),
            };
            AgentIdentity { id, class }
        });
        let mut containers = BTreeMap::new();
        if let Some(status) = &pod.status {
            let all = [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ];
            for s in all.into_iter().flatten().flatten() {
                if let Some(id) = &s.container_id {
                    let id = id.split_once("://").map_or(id.as_str(), |(_, id)| id);
                    containers.insert(id.to_owned(), s.name.clone());
                }
            }
        }
        Some(Self {
            namespace,
            name,
            uid,
            config_hash: annotations.get(MIRROR_ANNOTATION).cloned(),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone()),
            labels,
            agent,
            containers,
            problems,
        })
    }
}

/// `value` if it fits in `max` bytes, else its start, `~` and 8 hex digits of its SHA-256.
fn fit(value: &str, max: usize, what: &str, problems: &mut Vec<String>) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let digest = hex::encode(&Sha256::digest(value.as_bytes())[..4]);
    let mut keep = max - 1 - digest.len();
    while !value.is_char_boundary(keep) {
        keep -= 1;
    }
    let short = format!("{}~{digest}", &value[..keep]);
    problems.push(format!(
        "{what} {value:?} is longer than {max} bytes: shortened to {short:?}"
    ));
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> LabelKeys {
        LabelKeys {
            class: "agent-monitor.io/class".into(),
            id: "agent-monitor.io/agent-id".into(),
        }
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn labels_give_class_and_id_and_the_default_id_is_namespace_slash_name() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "fraud-7d9", "namespace": "agents", "uid": "u1",
                         "labels": {"agent-monitor.io/class": "fraud", "app": "fraud"}},
            "spec": {"serviceAccountName": "fraud-sa", "containers": []},
            "status": {"containerStatuses": [{"name": "main", "containerID": "containerd://abc",
                       "image": "i", "imageID": "", "ready": true, "restartCount": 0}]}
        }));
        let info = PodInfo::from_pod(&p, &keys()).unwrap();
        assert_eq!(
            info.agent,
            Some(AgentIdentity {
                id: "agents/fraud-7d9".into(),
                class: "fraud".into()
            })
        );
        assert_eq!(info.service_account.as_deref(), Some("fraud-sa"));
        assert_eq!(info.containers.get("abc").map(String::as_str), Some("main"));
        assert!(info.problems.is_empty());

        let p = pod(serde_json::json!({
            "metadata": {"name": "x", "namespace": "n", "uid": "u2",
                         "labels": {"agent-monitor.io/class": "payments", "agent-monitor.io/agent-id": "pay-1"}}
        }));
        let agent = PodInfo::from_pod(&p, &keys()).unwrap().agent.unwrap();
        assert_eq!(
            (agent.id.as_str(), agent.class.as_str()),
            ("pay-1", "payments")
        );
    }

    #[test]
    fn annotations_stand_in_for_labels_and_pods_without_a_class_are_not_agents() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "a", "namespace": "n", "uid": "u3",
                         "annotations": {"agent-monitor.io/class": "compliance",
                                         "kubernetes.io/config.mirror": "6f1c2d9e8b7a65432f1e0d9c8b7a6f5e"}}
        }));
        let info = PodInfo::from_pod(&p, &keys()).unwrap();
        assert_eq!(info.agent.unwrap().class, "compliance");
        assert_eq!(
            info.config_hash.as_deref(),
            Some("6f1c2d9e8b7a65432f1e0d9c8b7a6f5e")
        );
        let p = pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "n", "uid": "u4", "labels": {"app": "web"}}
        }));
        assert_eq!(PodInfo::from_pod(&p, &keys()).unwrap().agent, None);
        let p = pod(serde_json::json!({"metadata": {"name": "no-uid"}}));
        assert_eq!(PodInfo::from_pod(&p, &keys()), None);
    }

    #[test]
    fn long_values_are_shortened_distinctly_and_reported() {
        let long_ns = "n".repeat(40);
        let (a, b) = ("a".repeat(40), format!("{}b", "a".repeat(39)));
        let ids: Vec<String> = [&a, &b]
            .iter()
            .map(|name| {
                let p = pod(serde_json::json!({
                    "metadata": {"name": name, "namespace": long_ns, "uid": "u",
                                 "labels": {"agent-monitor.io/class": "c".repeat(40)}}
                }));
                let info = PodInfo::from_pod(&p, &keys()).unwrap();
                assert_eq!(info.problems.len(), 2, "{:?}", info.problems);
                let agent = info.agent.unwrap();
                assert!(agent.class.len() < AGENT_CLASS_LEN && agent.class.contains('~'));
                agent.id
            })
            .collect();
        assert!(ids.iter().all(|id| id.len() == AGENT_ID_LEN - 1), "{ids:?}");
        assert_ne!(ids[0], ids[1]);
        assert!(ids[0].starts_with(&long_ns));
    }
}
