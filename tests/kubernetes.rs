//! Kubernetes identity and the NetworkPolicy actuator against a loopback server speaking the
//! real API paths and JSON (tests/common/kube_api.rs): pods added, relabelled and deleted
//! through the watch change the registry; the NetworkPolicy is created and deleted, idempotently,
//! and failures are reported. As root on the real kernel, with a kubepods tree created under the
//! cgroup v2 mount: a pod container is an agent whose process's events are attributed; the
//! events of a pod the API server announces late are held and then attributed; an unknown pod's
//! cgroup becomes a finding; containment creates the pod's NetworkPolicy and release deletes it.

mod common;

use std::{
    collections::HashMap,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_monitor::{
    config::Config,
    event::{Body, decode},
    identity::{AgentRegistry, PendingOutcome, PodLookup as _, PodResolution, SlotTable},
    k8s::{KubernetesConfig, Node, netpol::NetworkPolicyActuator},
    respond::actuator::{Actuator as _, Target},
    source::Batch,
};
use agent_monitor_common::AgentSlot;
use common::{
    kube_api::{KubeApi, pod},
    *,
};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const CLASS: &str = "agent-monitor.io/class";
const ID_LABEL: &str = "agent-monitor.io/agent-id";

fn uid(n: u8) -> String {
    format!("2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a{n:02x}")
}

fn container_id(n: u8) -> String {
    format!("{:064x}", 0xc0de_0000_u64 + u64::from(n))
}

/// The systemd-driver container cgroup of pod `n`, relative to a kubepods.slice parent.
fn container_dir(n: u8) -> String {
    format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
        uid(n).replace('-', "_"),
        container_id(n)
    )
}

fn kube_config(api: &KubeApi) -> KubernetesConfig {
    KubernetesConfig {
        node_name: Some(NODE.into()),
        api: Some(api.url()),
        sync_timeout_secs: 10,
        ..KubernetesConfig::default()
    }
}

/// Polls `cond` until it holds, at most `secs`.
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct Table(HashMap<u64, AgentSlot>);

impl SlotTable for Table {
    fn insert(&mut self, cg: u64, slot: AgentSlot) -> anyhow::Result<()> {
        self.0.insert(cg, slot);
        Ok(())
    }
    fn remove(&mut self, cg: u64, _: u32, _: &mut Batch) -> anyhow::Result<()> {
        self.0.remove(&cg);
        Ok(())
    }
}

fn bodies(out: &Batch) -> Vec<Body> {
    out.iter().map(|r| decode(r).unwrap().body).collect()
}

#[tokio::test]
async fn pods_added_relabelled_and_deleted_through_the_watch_change_the_registry() {
    let api = KubeApi::start();
    api.put_pod(pod("pod-a", &uid(1), NODE, json!({CLASS: "fraud"})));
    api.put_pod(pod("pod-b", &uid(2), NODE, json!({"app": "web"})));
    api.put_pod(pod("pod-x", &uid(9), "node-2", json!({CLASS: "fraud"})));
    let k = kube_config(&api);
    let node = Node::start(&k).await.expect("watch starts");
    assert!(node.pods.is_synced(), "the first list arrived");
    assert_eq!(node.pods.len(), 2, "only this node's pods");
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?")
                && r.contains("fieldSelector=spec.nodeName%3Dnode-1")
                && !r.contains("watch=true")),
        "a list with the node's field selector: {:?}",
        api.requests()
    );

    let mount = tempfile::tempdir().unwrap();
    let id = |n: u8| {
        let d = mount.path().join(container_dir(n));
        fs::create_dir_all(&d).unwrap();
        agent_monitor::cgroup::id_of(&d).unwrap()
    };
    // Plain directories stand in for cgroups: discovery needs directories and inode numbers.
    let (cg_a, cg_b, cg_d) = (id(1), id(2), id(4));
    let mut config = Config::embedded();
    config.watch.clear();
    config.kubernetes = Some(k.clone());
    let mut reg =
        AgentRegistry::new(mount.path().to_owned(), config).with_pods(Arc::new(node.pods.clone()));
    let (mut table, mut out) = (Table::default(), Batch::default());
    reg.rescan(&mut table, &mut out, 1).unwrap();
    let b = bodies(&out);
    assert!(
        matches!(&b[..], [Body::AgentAdded(a)] if a.id == "agents/pod-a" && a.class == "fraud"
            && a.cgroup_path.ends_with(&format!("cri-containerd-{}.scope", container_id(1)))),
        "{b:?}"
    );
    assert!(table.0.contains_key(&cg_a), "the agent pod is monitored");
    assert!(
        !table.0.contains_key(&cg_b),
        "a pod without the class label is not"
    );
    assert!(
        reg.is_pending(cg_d),
        "an unknown pod's container waits, monitored"
    );
    assert!(table.0.contains_key(&cg_d));

    // The class label changes: the agent is announced again under its new class.
    api.put_pod(pod("pod-a", &uid(1), NODE, json!({CLASS: "payments"})));
    let pods = node.pods.clone();
    eventually(10, "relabel seen", || {
        matches!(pods.resolve(&uid(1)), PodResolution::Agent { class, .. } if class == "payments")
    })
    .await;
    out.clear();
    reg.rescan(&mut table, &mut out, 2).unwrap();
    let b = bodies(&out);
    assert!(
        matches!(&b[..], [Body::AgentRemoved(old), Body::AgentAdded(new)]
            if old.class == "fraud" && new.class == "payments" && new.id == "agents/pod-a"),
        "{b:?}"
    );

    // The unknown pod appears, with an agent id label: its pending cgroup resolves.
    api.put_pod(pod(
        "pod-d",
        &uid(4),
        NODE,
        json!({CLASS: "onboarding", ID_LABEL: "onb-4"}),
    ));
    eventually(10, "pod-d seen", || {
        pods.resolve(&uid(4)) != PodResolution::Unknown
    })
    .await;
    out.clear();
    let outcomes = reg.rescan(&mut table, &mut out, 3).unwrap();
    assert_eq!(outcomes, [(cg_d, PendingOutcome::Agent)]);
    assert!(
        matches!(&bodies(&out)[..], [Body::AgentAdded(a)] if a.id == "onb-4" && a.class == "onboarding")
    );

    // Deleted while its cgroup lives on: no identity any more, pending again.
    api.delete_pod(&uid(1));
    eventually(10, "deletion seen", || {
        pods.resolve(&uid(1)) == PodResolution::Unknown
    })
    .await;
    out.clear();
    reg.rescan(&mut table, &mut out, 4).unwrap();
    assert!(
        matches!(&bodies(&out)[..], [Body::AgentRemoved(a)] if a.id == "agents/pod-a"),
        "{:?}",
        bodies(&out)
    );
    assert!(reg.is_pending(cg_a));
    assert!(
        api.requests().iter().any(|r| r.contains("watch=true")
            && r.contains("allowWatchBookmarks=true")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "a watch with bookmarks and the node's field selector: {:?}",
        api.requests()
    );
}

fn target(n: u8, agent: &str) -> Target {
    Target {
        agent_id: agent.into(),
        class: "fraud".into(),
        cgroup_id: 1,
        cgroup_path: Some(
            PathBuf::from("/sys/fs/cgroup")
                .join(container_dir(n))
                .into(),
        ),
    }
}

#[tokio::test]
async fn the_network_policy_is_created_and_deleted_idempotently_and_failures_are_reported() {
    let api = KubeApi::start();
    api.put_pod(pod(
        "pod-a",
        &uid(1),
        NODE,
        json!({CLASS: "fraud", ID_LABEL: "fraud-a", "app": "fraud"}),
    ));
    api.put_pod(pod(
        "pod-r",
        &uid(2),
        NODE,
        json!({CLASS: "fraud", "app": "fraud"}),
    ));
    let k = kube_config(&api);
    let node = Node::start(&k).await.unwrap();
    let mut np = NetworkPolicyActuator::new(
        node.api.clone(),
        node.pods.clone(),
        ID_LABEL,
        Duration::from_secs(5),
    )
    .unwrap();
    let name = "agent-monitor-deny-pod-a";

    let out = np.apply(&target(1, "fraud-a"));
    assert!(out.ok, "{out:?}");
    assert!(
        out.detail.contains("created") && out.detail.contains("this pod only"),
        "{out:?}"
    );
    assert!(
        out.undo
            .as_deref()
            .is_some_and(|u| u.contains("agent-monitor release fraud-a")
                && u.contains(&format!("kubectl -n agents delete networkpolicy {name}"))),
        "{out:?}"
    );
    let p = api
        .policy("agents", name)
        .expect("the policy is on the server");
    assert_eq!(
        p["spec"]["podSelector"],
        json!({"matchLabels": {ID_LABEL: "fraud-a"}})
    );
    assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(p["spec"].get("ingress").is_none() && p["spec"].get("egress").is_none());
    assert_eq!(
        p["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "agent-monitor"
    );
    assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], json!(uid(1)));

    // Applying again finds it in place (409 from the server).
    let again = np.apply(&target(1, "fraud-a"));
    assert!(
        again.ok && again.detail.contains("already in place"),
        "{again:?}"
    );
    assert_eq!(api.policies().len(), 1);

    let undo = np.undo(&target(1, "fraud-a"));
    assert!(undo.ok && undo.detail.contains("deleted"), "{undo:?}");
    assert!(api.policy("agents", name).is_none());
    let undo = np.undo(&target(1, "fraud-a"));
    assert!(undo.ok && undo.detail.contains("already gone"), "{undo:?}");

    // A pod without a unique label: selected by all its labels, and the outcome says so.
    let out = np.apply(&target(2, "agents/pod-r"));
    assert!(
        out.ok && out.detail.contains("replicas included"),
        "{out:?}"
    );
    let p = api.policy("agents", "agent-monitor-deny-pod-r").unwrap();
    assert_eq!(
        p["spec"]["podSelector"]["matchLabels"],
        json!({CLASS: "fraud", "app": "fraud"})
    );

    // Failures are outcomes, not panics.
    api.fail_policies(Some(500));
    let out = np.apply(&target(1, "fraud-a"));
    assert!(!out.ok && out.detail.contains("500"), "{out:?}");
    let out = np.undo(&target(2, "agents/pod-r"));
    assert!(!out.ok && out.detail.contains("not deleted"), "{out:?}");
    api.fail_policies(None);
    let out = np.apply(&target(7, "unknown"));
    assert!(!out.ok && out.detail.contains("not known"), "{out:?}");
    let out = np.apply(&Target {
        cgroup_path: Some(std::path::Path::new("/sys/fs/cgroup/agents/fraud/f1").into()),
        ..target(1, "f1")
    });
    assert!(
        !out.ok && out.detail.contains("not a pod cgroup"),
        "{out:?}"
    );

    let requests = api.requests();
    assert!(
        requests.contains(
            &"POST /apis/networking.k8s.io/v1/namespaces/agents/networkpolicies?".to_owned()
        ) || requests
            .iter()
            .any(|r| r
                .starts_with("POST /apis/networking.k8s.io/v1/namespaces/agents/networkpolicies"))
    );
    assert!(requests.iter().any(|r| r.starts_with(&format!(
        "DELETE /apis/networking.k8s.io/v1/namespaces/agents/networkpolicies/{name}"
    ))));

    // An API server that does not answer: a failed outcome within the timeout.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut dead = NetworkPolicyActuator::new(
        kube::Config::new(url.parse().unwrap()),
        node.pods.clone(),
        ID_LABEL,
        Duration::from_secs(2),
    )
    .unwrap();
    let out = dead.apply(&target(1, "fraud-a"));
    assert!(!out.ok && out.detail.contains("not created"), "{out:?}");
}

/// A kubepods tree under the test's cgroup root, and the daemon's `kubernetes` config for it.
fn kube_yaml(api: &KubeApi, root: &Path, extra: &str) -> String {
    format!(
        "kubernetes: {{node_name: {NODE}, api: '{}', cgroup_roots: ['{}'], {extra}}}\n",
        api.url(),
        root.join("kubepods.slice").display()
    )
}

fn pid_events(lines: &[Value], pid: u32) -> Vec<&Value> {
    lines.iter().filter(|l| l["pid"] == pid).collect()
}

#[test]
fn pod_containers_are_agents_late_pods_are_held_and_unknown_ones_are_findings() {
    let cgroups = TestCgroups::new("k8s");
    let api = KubeApi::start();
    api.put_pod(pod("pod-a", &uid(1), NODE, json!({CLASS: "fraud"})));
    let a = cgroups.dir(&container_dir(1));
    let tmp = tempfile::tempdir().unwrap();
    // No periodic rescan during the test: new pod cgroups must be noticed as they are made
    // (inotify), and a pod the API server reports must be resolved at once (the watch).
    let config = format!(
        "watch: []\nrescan_interval_ms: 60000\nsnapshot_interval_ms: 200\n\
         detection: {{models_dir: {0}/none, rules_dir: {0}/none}}\n{1}",
        tmp.path().display(),
        kube_yaml(
            &api,
            &cgroups.root,
            "hold_ms: 3000, unidentified_after_secs: 1, network_policy: false"
        )
    );
    let daemon = Daemon::start(tmp.path(), &config, None);

    // A known agent pod: its process's events carry the pod's identity.
    let (pid_a, code) = workload_in(&a, &["getppid:20".into()]);
    assert_eq!(code, 0);

    // A pod the API server announces only after its container ran: held, then attributed.
    let c = cgroups.dir(&container_dir(3));
    std::thread::sleep(Duration::from_millis(500));
    let (pid_c, _) = workload_in(&c, &["getppid:20".into()]);
    std::thread::sleep(Duration::from_millis(200));
    api.put_pod(pod("pod-c", &uid(3), NODE, json!({CLASS: "onboarding"})));

    // A pod nobody knows: released unattributed after the hold, then a finding.
    let d = cgroups.dir(&container_dir(4));
    let cg_d = agent_monitor::cgroup::id_of(&d).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    workload_in(&d, &["getppid:5".into()]);
    std::thread::sleep(Duration::from_millis(3500));
    let (pid_d2, _) = workload_in(&d, &["getppid:5".into()]);
    std::thread::sleep(Duration::from_millis(1000));
    let lines = daemon.stop();

    let added = |id: &str| {
        lines
            .iter()
            .position(|l| l["kind"] == "agent_added" && l["agent"]["id"] == id)
    };
    let i_a = added("agents/pod-a").expect("pod-a announced");
    assert_eq!(lines[i_a]["agent"]["class"], "fraud");
    assert!(
        lines[i_a]["cgroup_path"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("cri-containerd-{}.scope", container_id(1)))),
        "{}",
        lines[i_a]
    );
    let ev_a = pid_events(&lines, pid_a);
    assert!(!ev_a.is_empty(), "pod-a's process produced events");
    assert!(
        ev_a.iter().all(|e| e["agent"]["id"] == "agents/pod-a"),
        "all attributed: {ev_a:?}"
    );

    let i_c = added("agents/pod-c").expect("pod-c announced once the API server knew it");
    let ev_c: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["pid"] == pid_c)
        .map(|(i, _)| i)
        .collect();
    assert!(!ev_c.is_empty(), "pod-c's events were kept, not dropped");
    assert!(
        ev_c.iter()
            .all(|&i| i > i_c && lines[i]["agent"]["id"] == "agents/pod-c"),
        "held until announced, then attributed: added at {i_c}, events at {ev_c:?}"
    );

    let unattributed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["cgroup_id"] == cg_d && l.get("kind").is_some())
        .collect();
    assert!(
        !unattributed.is_empty() && unattributed.iter().all(|l| l["agent"].is_null()),
        "the unknown pod's events are released, unattributed: {unattributed:?}"
    );
    assert!(added("agents/pod-d").is_none());
    let findings: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l.get("finding"))
        .filter(|f| f["source"]["type"] == "unidentified")
        .collect();
    assert_eq!(
        findings.len(),
        1,
        "one finding for the unknown cgroup: {findings:?}"
    );
    let f = findings[0];
    assert_eq!(f["agent_id"], format!("cgroup:{cg_d}"));
    assert_eq!(f["class"], "unidentified");
    assert_eq!(f["tier"], "log");
    assert!(
        f["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("pid {pid_d2}"))),
        "found at the event after the delay: {f}"
    );
}

/// A SOC webhook receiver on loopback: the bodies of the tickets it got.
fn soc_receiver() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tickets", server.server_addr());
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
            if let Ok(v) = serde_json::from_str(&body) {
                sink.lock().unwrap().push(v);
            }
            let _ = req.respond(tiny_http::Response::empty(200));
        }
    });
    (url, got)
}

fn release(config: &Path, agent: &str, approver: &str) -> String {
    let out = Command::new(BIN)
        .args(["release", agent, "--approver", approver, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn containment_creates_the_pods_network_policy_and_release_deletes_it() {
    let cgroups = TestCgroups::new("k8s-np");
    let api = KubeApi::start();
    api.put_pod(pod(
        "pod-e",
        &uid(5),
        NODE,
        json!({CLASS: "fraud", "app": "fraud"}),
    ));
    let e = cgroups.dir(&container_dir(5));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let tmp = tempfile::tempdir().unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let (soc, tickets) = soc_receiver();
    let key = tmp.path().join("webhook.key");
    fs::write(&key, b"test webhook key, at least 32 bytes long").unwrap();
    let config = format!(
        "watch: []\nrescan_interval_ms: 50\n\
         detection: {{models_dir: {0}/none, rules_dir: {1}}}\n\
         webhook: {{url: '{soc}', key_file: {2}, outbox_dir: {0}/outbox, retry_initial_ms: 100}}\n{3}",
        tmp.path().display(),
        rules.display(),
        key.display(),
        kube_yaml(&api, &cgroups.root, "network_policy: true")
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let cfg = tmp.path().join("config.yaml");
    let name = "agent-monitor-deny-pod-e";
    let connect = format!("connect:127.0.0.1:{port}");

    let (_, code) = workload_in(
        &e,
        &[
            "read:/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            "sleep:500".into(),
            connect.clone(),
        ],
    );
    assert_ne!(code, 0, "contained in the kernel: the connect fails");
    let start = Instant::now();
    while api.policy("agents", name).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no NetworkPolicy: {:?}",
            api.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let p = api.policy("agents", name).unwrap();
    assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        p["metadata"]["annotations"]["agent-monitor.io/agent-id"],
        "agents/pod-e"
    );

    // The SOC ticket names the pod and the node, and the policy among the actions.
    let start = Instant::now();
    while tickets.lock().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no ticket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = tickets.lock().unwrap()[0].clone();
    assert_eq!(
        t["pod"],
        json!({"namespace": "agents", "name": "pod-e", "uid": uid(5)}),
        "{t:#}"
    );
    assert_eq!(t["node"], NODE);
    assert!(
        t["actions"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["action"] == "network_policy" && x["ok"] == true)),
        "{t:#}"
    );

    // The default agent id has a '/': release works with it all the same.
    assert!(release(&cfg, "agents/pod-e", "alice").contains("1 of 2"));
    release(&cfg, "agents/pod-e", "bob");
    let start = Instant::now();
    while api.policy("agents", name).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the NetworkPolicy outlived the release"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, code) = workload_in(&e, std::slice::from_ref(&connect));
    assert_eq!(code, 0, "released, the pod's process connects again");

    let lines = daemon.stop();
    let actions: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l.get("response"))
        .filter(|r| r["decision"]["to"] == "contain")
        .flat_map(|r| r["actions"].as_array().into_iter().flatten())
        .collect();
    let np = actions
        .iter()
        .find(|a| a["action"] == "network_policy")
        .unwrap_or_else(|| panic!("a network_policy action: {actions:#?}"));
    assert_eq!(np["ok"], true, "{np}");
    assert!(
        np["undo"]
            .as_str()
            .is_some_and(|u| u.contains(&format!("kubectl -n agents delete networkpolicy {name}"))),
        "{np}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "deny_all" && a["ok"] == true),
        "the in-kernel deny came too: {actions:#?}"
    );
    let released = lines
        .iter()
        .find_map(|l| l.get("release"))
        .expect("the release is reported");
    assert!(
        released["actions"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["action"] == "network_policy:undo" && x["ok"] == true)),
        "{released}"
    );
}
