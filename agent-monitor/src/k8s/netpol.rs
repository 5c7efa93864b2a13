//! DENY_ALL for a pod in the cluster network: a NetworkPolicy selecting the contained agent's
//! pod with `policyTypes: [Ingress, Egress]` and no rules, created through the API server at
//! containment and deleted at release. It complements the in-kernel deny of the pod's cgroups:
//! the CNI enforces it for the pod's ingress too, and it holds on any node the pod moves to.
//!
//! - name: `agent-monitor-deny-<pod name>` (cut with a hash suffix beyond 253 characters);
//! - labelled `app.kubernetes.io/managed-by: agent-monitor`, annotated with the agent id and
//!   pod, and owned by the pod (ownerReference with its uid): it never outlives that pod;
//! - selector: a label unique to the pod if it has one (the agent-id label, else the
//!   StatefulSet pod-name label), otherwise all of the pod's labels, which also select
//!   replicas labelled alike (the outcome says so);
//! - idempotent: `409 AlreadyExists` on create and `404 NotFound` on delete are success.
//!
//! The actuator seam is synchronous and the pipeline runs on the daemon's runtime, so calls go
//! to a thread with its own runtime and client, each bounded by a timeout.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::mpsc,
    time::Duration,
};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicySpec},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use kube::api::{Api, DeleteParams, PostParams};
use sha2::{Digest as _, Sha256};

use super::{PodCache, PodInfo, cgroup_path};
use crate::respond::actuator::{ActionOutcome, Actuator, Target};

pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "agent-monitor");
pub const AGENT_ANNOTATION: &str = "agent-monitor.io/agent-id";
pub const POD_ANNOTATION: &str = "agent-monitor.io/pod";
const STATEFULSET_POD_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const NAME_PREFIX: &str = "agent-monitor-deny-";
const MAX_NAME: usize = 253;

/// The policy's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

/// The deterministic name of the policy for a pod.
pub fn policy_name(pod_name: &str) -> String {
    let name = format!("{NAME_PREFIX}{pod_name}");
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = hex::encode(&Sha256::digest(pod_name.as_bytes())[..4]);
    // Pod names are ASCII (DNS subdomains), so any cut is on a character boundary; a name must
    // end alphanumeric, which the hex digest does.
    let keep = MAX_NAME - 1 - digest.len();
    format!("{}-{digest}", name[..keep].trim_end_matches(['-', '.']))
}

/// The pod selector, and whether it selects this pod alone.
pub fn selector(pod: &PodInfo, id_label: &str) -> (BTreeMap<String, String>, bool) {
    for key in [id_label, STATEFULSET_POD_LABEL] {
        if let Some(v) = pod.labels.get(key) {
            return (BTreeMap::from([(key.to_owned(), v.clone())]), true);
        }
    }
    (pod.labels.clone(), false)
}

/// The deny-all policy for `pod`, on behalf of `agent_id`.
pub fn deny_all_policy(pod: &PodInfo, agent_id: &str, id_label: &str) -> NetworkPolicy {
    let (match_labels, _) = selector(pod, id_label);
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name(&pod.name)),
            namespace: Some(pod.namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (AGENT_ANNOTATION.to_owned(), agent_id.to_owned()),
                (
                    POD_ANNOTATION.to_owned(),
                    format!("{}/{}", pod.namespace, pod.name),
                ),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(match_labels),
                match_expressions: None,
            }),
            // Both directions listed, no rule for either: nothing in, nothing out.
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// What the API server said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiResult {
    Created,
    AlreadyExists,
    Deleted,
    AlreadyGone,
}

enum Call {
    Create(Box<NetworkPolicy>),
    Delete(PolicyRef),
}

type Reply = mpsc::Sender<Result<ApiResult, String>>;

/// A thread with its own runtime and client, serving one API call at a time.
struct ApiThread {
    calls: mpsc::Sender<(Call, Reply)>,
    timeout: Duration,
}

impl ApiThread {
    fn start(config: kube::Config, timeout: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(Call, Reply)>();
        std::thread::Builder::new()
            .name("k8s-netpol".into())
            .spawn(move || serve(config, &rx, timeout))?;
        Ok(Self { calls: tx, timeout })
    }

    fn call(&self, call: Call) -> Result<ApiResult, String> {
        let (tx, rx) = mpsc::channel();
        self.calls
            .send((call, tx))
            .map_err(|_| "the Kubernetes API thread has stopped".to_owned())?;
        // The thread bounds each call by the same timeout; the margin covers the hand-over.
        rx.recv_timeout(self.timeout + Duration::from_secs(1))
            .map_err(|_| format!("no answer from the API server within {:?}", self.timeout))?
    }
}

fn serve(config: kube::Config, calls: &mpsc::Receiver<(Call, Reply)>, timeout: Duration) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("NetworkPolicy actuator: no runtime: {e}");
            for (_, reply) in calls {
                let _ = reply.send(Err(format!("no runtime for API calls: {e}")));
            }
            return;
        }
    };
    let client = rt.block_on(async { kube::Client::try_from(config) });
    for (call, reply) in calls {
        let result = match &client {
            Ok(client) => rt.block_on(async {
                tokio::time::timeout(timeout, one_call(client.clone(), call))
                    .await
                    .unwrap_or_else(|_| Err(format!("API server call timed out after {timeout:?}")))
            }),
            Err(e) => Err(format!("no Kubernetes client: {e}")),
        };
        let _ = reply.send(result);
    }
}

async fn one_call(client: kube::Client, call: Call) -> Result<ApiResult, String> {
    match call {
        Call::Create(policy) => {
            let ns = policy.metadata.namespace.clone().unwrap_or_default();
            let api: Api<NetworkPolicy> = Api::namespaced(client, &ns);
            match api.create(&PostParams::default(), &policy).await {
                Ok(_) => Ok(ApiResult::Created),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(ApiResult::AlreadyExists),
                Err(e) => Err(api_error(&e)),
            }
        }
        Call::Delete(p) => {
            let api: Api<NetworkPolicy> = Api::namespaced(client, &p.namespace);
            match api.delete(&p.name, &DeleteParams::default()).await {
                Ok(_) => Ok(ApiResult::Deleted),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(ApiResult::AlreadyGone),
                Err(e) => Err(api_error(&e)),
            }
        }
    }
}

fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            format!("API server answered {} {}: {}", s.code, s.reason, s.message)
        }
        other => format!("API server call failed: {other}"),
    }
}

pub struct NetworkPolicyActuator {
    api: ApiThread,
    pods: PodCache,
    id_label: String,
    /// What apply created (or found), per agent, so that undo deletes exactly it.
    applied: HashMap<std::sync::Arc<str>, PolicyRef>,
}

impl NetworkPolicyActuator {
    /// `config` is the API connection (see [`super::client::config`]).
    pub fn new(
        config: kube::Config,
        pods: PodCache,
        id_label: &str,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        Ok(Self {
            api: ApiThread::start(config, timeout)?,
            pods,
            id_label: id_label.to_owned(),
            applied: HashMap::new(),
        })
    }

    /// The pod of the target's cgroup (its path names the pod uid).
    fn pod_of(&self, target: &Target) -> Result<std::sync::Arc<PodInfo>, String> {
        let path = target
            .cgroup_path
            .as_deref()
            .ok_or_else(|| format!("no cgroup path known for agent {}", target.agent_id))?;
        let uid = pod_uid_of(path).ok_or_else(|| {
            format!(
                "{} is not a pod cgroup: no NetworkPolicy for agent {}",
                path.display(),
                target.agent_id
            )
        })?;
        self.pods
            .get(&uid)
            .ok_or_else(|| format!("pod {uid} of agent {} is not known", target.agent_id))
    }

    fn outcome(action: &str, ok: bool, detail: String, undo: Option<String>) -> ActionOutcome {
        ActionOutcome {
            action: action.to_owned(),
            ok,
            detail,
            undo,
        }
    }
}

/// The pod uid named by a container cgroup path.
pub fn pod_uid_of(path: &Path) -> Option<String> {
    cgroup_path::parse(&path.to_string_lossy())
        .ok()
        .flatten()
        .and_then(|k| k.pod_uid().map(str::to_owned))
}

impl Actuator for NetworkPolicyActuator {
    fn name(&self) -> &'static str {
        "network_policy"
    }

    fn apply(&mut self, target: &Target) -> ActionOutcome {
        let pod = match self.pod_of(target) {
            Ok(p) => p,
            Err(e) => return Self::outcome(self.name(), false, e, None),
        };
        let policy = deny_all_policy(&pod, &target.agent_id, &self.id_label);
        let (labels, unique) = selector(&pod, &self.id_label);
        let at = PolicyRef {
            namespace: pod.namespace.clone(),
            name: policy_name(&pod.name),
        };
        let selected = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        match self.api.call(Call::Create(Box::new(policy))) {
            Ok(result) => {
                self.applied.insert(target.agent_id.clone(), at.clone());
                let what = if result == ApiResult::AlreadyExists {
                    "already in place"
                } else {
                    "created"
                };
                let scope = if unique {
                    "this pod only"
                } else {
                    "every pod with these labels, replicas included (the pod has no unique label)"
                };
                Self::outcome(
                    self.name(),
                    true,
                    format!(
                        "NetworkPolicy {}/{} {what}: deny all ingress and egress of pod {}/{} \
                         (selector {selected}: {scope})",
                        at.namespace, at.name, pod.namespace, pod.name
                    ),
                    Some(format!(
                        "agent-monitor release {} --approver <name> (or kubectl -n {} delete networkpolicy {})",
                        target.agent_id, at.namespace, at.name
                    )),
                )
            }
            Err(e) => Self::outcome(
                self.name(),
                false,
                format!(
                    "NetworkPolicy {}/{} not created: {e}",
                    at.namespace, at.name
                ),
                None,
            ),
        }
    }

    fn undo(&mut self, target: &Target) -> ActionOutcome {
        let action = "network_policy:undo";
        // Created by this daemon, else (an earlier daemon's containment) found from the pod.
        let at = match self.applied.get(&target.agent_id) {
            Some(at) => at.clone(),
            None => match self.pod_of(target) {
                Ok(pod) => PolicyRef {
                    namespace: pod.namespace.clone(),
                    name: policy_name(&pod.name),
                },
                Err(e) => {
                    return Self::outcome(
                        action,
                        false,
                        format!(
                            "{e}; find the policy with kubectl get networkpolicy -A -l {}={}",
                            MANAGED_BY.0, MANAGED_BY.1
                        ),
                        None,
                    );
                }
            },
        };
        match self.api.call(Call::Delete(at.clone())) {
            Ok(result) => {
                self.applied.remove(&target.agent_id);
                let what = if result == ApiResult::AlreadyGone {
                    "was already gone"
                } else {
                    "deleted"
                };
                Self::outcome(
                    action,
                    true,
                    format!("NetworkPolicy {}/{} {what}", at.namespace, at.name),
                    None,
                )
            }
            Err(e) => Self::outcome(
                action,
                false,
                format!(
                    "NetworkPolicy {}/{} not deleted: {e}",
                    at.namespace, at.name
                ),
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: "agents".into(),
            name: "fraud-7d9".into(),
            uid: "2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a13".into(),
            config_hash: None,
            service_account: None,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            agent: None,
            containers: BTreeMap::new(),
            problems: vec![],
        }
    }

    const ID: &str = "agent-monitor.io/agent-id";

    #[test]
    fn the_policy_denies_both_ways_is_owned_by_the_pod_and_labelled() {
        let p = deny_all_policy(&pod(&[(ID, "fraud-1"), ("app", "fraud")]), "fraud-1", ID);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["metadata"]["name"], "agent-monitor-deny-fraud-7d9");
        assert_eq!(v["metadata"]["namespace"], "agents");
        assert_eq!(v["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
        assert_eq!(v["metadata"]["annotations"][AGENT_ANNOTATION], "fraud-1");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Pod");
        assert_eq!(
            v["metadata"]["ownerReferences"][0]["uid"],
            "2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a13"
        );
        assert_eq!(
            v["spec"]["podSelector"],
            serde_json::json!({"matchLabels": {ID: "fraud-1"}})
        );
        assert_eq!(
            v["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert!(v["spec"].get("ingress").is_none() && v["spec"].get("egress").is_none());
    }

    #[test]
    fn the_selector_prefers_a_label_unique_to_the_pod() {
        let sts = pod(&[
            ("app", "onb"),
            (STATEFULSET_POD_LABEL, "onb-0"),
            ("agent-monitor.io/class", "onboarding"),
        ]);
        assert_eq!(
            selector(&sts, ID),
            (
                BTreeMap::from([(STATEFULSET_POD_LABEL.to_owned(), "onb-0".to_owned())]),
                true
            )
        );
        let plain = pod(&[("app", "onb"), ("agent-monitor.io/class", "onboarding")]);
        let (labels, unique) = selector(&plain, ID);
        assert_eq!((labels.len(), unique), (2, false));
    }

    #[test]
    fn names_are_deterministic_and_fit() {
        assert_eq!(policy_name("p"), "agent-monitor-deny-p");
        let long = "a".repeat(253);
        let (n1, n2) = (policy_name(&long), policy_name(&format!("{}b", &long[1..])));
        assert!(n1.len() <= 253 && n2.len() <= 253);
        assert_ne!(n1, n2);
        assert_eq!(n1, policy_name(&long));
    }

    #[test]
    fn pod_uids_come_from_the_cgroup_path() {
        let p = Path::new(
            "/sys/fs/cgroup/kubepods.slice/kubepods-pod2b6c8a1e_5d3f_4e8a_9c71_0f4d2e6b8a13.slice/cri-containerd-4a7f3c9e1b2d8e6f0a5c7b9d3e1f2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6f.scope",
        );
        assert_eq!(
            pod_uid_of(p).as_deref(),
            Some("2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a13")
        );
        assert_eq!(
            pod_uid_of(Path::new("/sys/fs/cgroup/agents/fraud/f1")),
            None
        );
    }
}
