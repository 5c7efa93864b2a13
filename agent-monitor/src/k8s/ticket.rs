//! What a SOC ticket says about where an agent runs: its pod (from the cgroup path of the
//! response's target and the pod cache) and this node.

use super::{PodCache, netpol};
use crate::respond::{actuator::Target, webhook::PodRef};

#[derive(Clone)]
pub struct PodContext {
    pods: PodCache,
    node: String,
}

impl PodContext {
    pub fn new(pods: PodCache, node: String) -> Self {
        Self { pods, node }
    }

    /// The target's pod, when it is a pod's agent the cache knows, and the node.
    pub fn of(&self, target: &Target) -> (Option<PodRef>, Option<String>) {
        let pod = target
            .cgroup_path
            .as_deref()
            .and_then(netpol::pod_uid_of)
            .and_then(|uid| self.pods.get(&uid))
            .map(|p| PodRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: Some(p.uid.clone()),
            });
        (pod, Some(self.node.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::k8s::PodInfo;

    #[test]
    fn a_pod_agent_is_named_with_its_node_and_others_get_the_node_only() {
        let uid = "2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a13";
        let pods = PodCache::default();
        pods.apply(PodInfo {
            namespace: "agents".into(),
            name: "fraud-7d9".into(),
            uid: uid.into(),
            config_hash: None,
            service_account: None,
            labels: BTreeMap::new(),
            agent: None,
            containers: BTreeMap::new(),
            problems: vec![],
        });
        let ctx = PodContext::new(pods, "node-1".into());
        let mut t = Target {
            agent_id: "agents/fraud-7d9".into(),
            class: "fraud".into(),
            cgroup_id: 1,
            cgroup_path: Some(
                std::path::PathBuf::from(format!(
                    "/sys/fs/cgroup/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope",
                    uid.replace('-', "_"),
                    "ab".repeat(32)
                ))
                .into(),
            ),
        };
        let (pod, node) = ctx.of(&t);
        assert_eq!(
            pod,
            Some(PodRef {
                namespace: "agents".into(),
                name: "fraud-7d9".into(),
                uid: Some(uid.into())
            })
        );
        assert_eq!(node.as_deref(), Some("node-1"));
        t.cgroup_path = Some(std::path::Path::new("/sys/fs/cgroup/agents/fraud/f1").into());
        assert_eq!(ctx.of(&t), (None, Some("node-1".into())));
    }
}
