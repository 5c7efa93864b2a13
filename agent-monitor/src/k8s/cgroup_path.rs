//! Kubelet cgroup paths: which pod (and container) a cgroup directory belongs to.
//!
//! Both cgroup drivers are understood, wherever the hierarchy sits under the cgroup v2 mount
//! (kubelet's `--cgroup-root` adds a prefix, e.g. `kubelet.slice/kubelet-kubepods.slice`):
//!
//! | driver | container cgroup |
//! |---|---|
//! | systemd | `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<runtime>-<id>.scope` |
//! | systemd, guaranteed | `kubepods.slice/kubepods-pod<uid_>.slice/<runtime>-<id>.scope` |
//! | cgroupfs | `kubepods/<qos>/pod<uid>/<id>` (CRI-O: `crio-<id>`) |
//! | cgroupfs, guaranteed | `kubepods/pod<uid>/<id>` |
//!
//! `<runtime>` is `cri-containerd`, `crio` or `docker`; systemd spells the pod uid with `_` for
//! `-` because `-` separates slice levels. CRI-O's monitor (`crio-conmon-<id>`) is a runtime
//! helper, not the workload. Docker containers outside Kubernetes (`docker-<id>.scope`,
//! `docker/<id>`) are recognised so that they are not mistaken for malformed pods.

use std::fmt;

/// Quality-of-service class, the level between `kubepods` and the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// The container runtime named by the cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// cgroupfs driver with containerd or Docker: the directory is the bare container id.
    Unnamed,
}

/// What a cgroup path is, Kubernetes-wise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeCgroup {
    /// `kubepods.slice` itself.
    Root,
    /// A QoS level (`kubepods-burstable.slice`, `kubepods/besteffort`).
    Qos(Qos),
    /// The pod level: holds the pod's containers.
    Pod { qos: Qos, uid: String },
    /// A container of a pod; `nested` when the path is a cgroup below the container's own.
    Container {
        qos: Qos,
        uid: String,
        runtime: Runtime,
        id: String,
        nested: bool,
    },
    /// A runtime helper in the pod (CRI-O's conmon), not the workload.
    Helper { qos: Qos, uid: String },
    /// A container outside Kubernetes.
    Standalone { runtime: Runtime, id: String },
}

impl KubeCgroup {
    /// The pod uid (with dashes) of a pod, container or helper cgroup.
    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Self::Pod { uid, .. } | Self::Container { uid, .. } | Self::Helper { uid, .. } => {
                Some(uid)
            }
            _ => None,
        }
    }
}

/// A path under a kubepods hierarchy that fits none of the layouts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cgroup {path}: {reason} (component {component:?})")]
pub struct CgroupPathError {
    pub path: String,
    pub component: String,
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    UnknownQos,
    /// A slice whose name does not extend its parent's (`kubepods-burstable.slice` must hold
    /// `kubepods-burstable-pod<uid>.slice`).
    SliceName,
    BadPodUid,
    UnknownContainer,
    BadContainerId,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::UnknownQos => "not a QoS level or pod",
            Reason::SliceName => "slice name does not extend its parent's",
            Reason::BadPodUid => "pod uid is not a UUID or a 32-digit static pod hash",
            Reason::UnknownContainer => "not a container cgroup of a known runtime",
            Reason::BadContainerId => "container id is not 64 hex digits",
        })
    }
}

/// Classifies a cgroup path (relative to the cgroup v2 mount, or absolute below it).
/// `Ok(None)`: not a container path at all.
pub fn parse(path: &str) -> Result<Option<KubeCgroup>, CgroupPathError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let err = |component: &str, reason| CgroupPathError {
        path: path.to_owned(),
        component: component.to_owned(),
        reason,
    };
    for (i, part) in parts.iter().enumerate() {
        if let Some(prefix) = systemd_root(part) {
            return systemd(prefix, &parts[i + 1..])
                .map(Some)
                .map_err(|(c, r)| err(c, r));
        }
        if *part == "kubepods" {
            return cgroupfs(&parts[i + 1..])
                .map(Some)
                .map_err(|(c, r)| err(c, r));
        }
    }
    Ok(standalone_docker(&parts))
}

type Parsed<'a> = Result<KubeCgroup, (&'a str, Reason)>;

/// `kubepods.slice` or `<root>-kubepods.slice` (a kubelet `--cgroup-root`): the slice prefix.
fn systemd_root(part: &str) -> Option<&str> {
    let name = part.strip_suffix(".slice")?;
    (name == "kubepods" || name.ends_with("-kubepods")).then_some(name)
}

fn systemd<'a>(prefix: &str, rest: &[&'a str]) -> Parsed<'a> {
    let Some((&first, rest)) = rest.split_first() else {
        return Ok(KubeCgroup::Root);
    };
    let level = first
        .strip_suffix(".slice")
        .and_then(|s| s.strip_prefix(prefix))
        .and_then(|s| s.strip_prefix('-'))
        .ok_or((first, Reason::SliceName))?;
    let (qos, pod_part, rest) = match qos_named(level) {
        Some(qos) => {
            let Some((&pod, rest)) = rest.split_first() else {
                return Ok(KubeCgroup::Qos(qos));
            };
            let slice = format!("{prefix}-{level}-");
            let inner = pod
                .strip_suffix(".slice")
                .and_then(|s| s.strip_prefix(slice.as_str()))
                .ok_or((pod, Reason::SliceName))?;
            (qos, (pod, inner), rest)
        }
        None => (Qos::Guaranteed, (first, level), rest),
    };
    let (pod, inner) = pod_part;
    let uid = inner.strip_prefix("pod").ok_or((pod, Reason::UnknownQos))?;
    // systemd escapes '-' in a unit name level as '_'; a '-' here would be a further level.
    if uid.contains('-') {
        return Err((pod, Reason::BadPodUid));
    }
    let uid = pod_uid(&uid.replace('_', "-")).ok_or((pod, Reason::BadPodUid))?;
    let Some((&container, below)) = rest.split_first() else {
        return Ok(KubeCgroup::Pod { qos, uid });
    };
    let scope = container
        .strip_suffix(".scope")
        .ok_or((container, Reason::UnknownContainer))?;
    if scope.starts_with("crio-conmon-") {
        return Ok(KubeCgroup::Helper { qos, uid });
    }
    let (runtime, id) = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
    ]
    .into_iter()
    .find_map(|(p, r)| scope.strip_prefix(p).map(|id| (r, id)))
    .ok_or((container, Reason::UnknownContainer))?;
    let id = container_id(id).ok_or((container, Reason::BadContainerId))?;
    Ok(KubeCgroup::Container {
        qos,
        uid,
        runtime,
        id,
        nested: !below.is_empty(),
    })
}

fn cgroupfs<'a>(rest: &[&'a str]) -> Parsed<'a> {
    let Some((&first, rest)) = rest.split_first() else {
        return Ok(KubeCgroup::Root);
    };
    let (qos, pod, rest) = match qos_named(first) {
        Some(qos) => match rest.split_first() {
            Some((&pod, rest)) => (qos, pod, rest),
            None => return Ok(KubeCgroup::Qos(qos)),
        },
        None => (Qos::Guaranteed, first, rest),
    };
    let uid = pod.strip_prefix("pod").ok_or((pod, Reason::UnknownQos))?;
    let uid = pod_uid(uid).ok_or((pod, Reason::BadPodUid))?;
    let Some((&container, below)) = rest.split_first() else {
        return Ok(KubeCgroup::Pod { qos, uid });
    };
    if container.starts_with("crio-conmon-") {
        return Ok(KubeCgroup::Helper { qos, uid });
    }
    let (runtime, id) = match container.strip_prefix("crio-") {
        Some(id) => (Runtime::CriO, id),
        None => (Runtime::Unnamed, container),
    };
    let id = container_id(id).ok_or((
        container,
        if runtime == Runtime::Unnamed && !is_hex(id) {
            Reason::UnknownContainer
        } else {
            Reason::BadContainerId
        },
    ))?;
    Ok(KubeCgroup::Container {
        qos,
        uid,
        runtime,
        id,
        nested: !below.is_empty(),
    })
}

/// Docker without Kubernetes: `.../docker-<id>.scope` (systemd) or `docker/<id>` (cgroupfs).
fn standalone_docker(parts: &[&str]) -> Option<KubeCgroup> {
    let standalone = |id: &str| {
        container_id(id).map(|id| KubeCgroup::Standalone {
            runtime: Runtime::Docker,
            id,
        })
    };
    parts.iter().enumerate().find_map(|(i, part)| {
        if let Some(id) = part
            .strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope"))
        {
            return standalone(id);
        }
        (*part == "docker")
            .then(|| parts.get(i + 1).and_then(|id| standalone(id)))
            .flatten()
    })
}

fn qos_named(level: &str) -> Option<Qos> {
    match level {
        "burstable" => Some(Qos::Burstable),
        "besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Container ids of containerd, CRI-O and Docker are 64 lowercase hex digits.
fn container_id(id: &str) -> Option<String> {
    (id.len() == 64 && is_hex(id)).then(|| id.to_owned())
}

/// A pod uid: a UUID, or for a static pod the 32-hex-digit hash of its manifest (the mirror
/// pod in the API carries it in the `kubernetes.io/config.mirror` annotation).
fn pod_uid(uid: &str) -> Option<String> {
    let b = uid.as_bytes();
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        });
    (uuid || (b.len() == 32 && is_hex(uid))).then(|| uid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{KubeCgroup as K, Qos::*, Reason, Runtime::*, parse};

    const UID: &str = "2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a13";
    const UID_: &str = "2b6c8a1e_5d3f_4e8a_9c71_0f4d2e6b8a13";
    const STATIC: &str = "6f1c2d9e8b7a65432f1e0d9c8b7a6f5e";
    const ID: &str = "4a7f3c9e1b2d8e6f0a5c7b9d3e1f2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6f";

    fn container(qos: super::Qos, runtime: super::Runtime, nested: bool) -> K {
        K::Container {
            qos,
            uid: UID.into(),
            runtime,
            id: ID.into(),
            nested,
        }
    }

    #[test]
    fn every_layout_resolves_to_its_pod_and_container() {
        let cases: Vec<(String, K)> = vec![
            // systemd driver, containerd, per QoS level.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                container(Burstable, Containerd, false),
            ),
            (
                format!(
                    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                container(BestEffort, Containerd, false),
            ),
            // Guaranteed pods sit directly under kubepods.slice.
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                container(Guaranteed, Containerd, false),
            ),
            // CRI-O and Docker (cri-dockerd) under systemd.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope"
                ),
                container(Burstable, CriO, false),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope"),
                container(Guaranteed, Docker, false),
            ),
            // kubelet --cgroup-root=/kubelet with systemd.
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
                ),
                container(BestEffort, Containerd, false),
            ),
            // A cgroup the container made below its own.
            (
                format!(
                    "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope/init.scope"
                ),
                container(Guaranteed, Containerd, true),
            ),
            // cgroupfs driver.
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                container(Burstable, Unnamed, false),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                container(BestEffort, Unnamed, false),
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                container(Guaranteed, Unnamed, false),
            ),
            (
                format!("/kubepods/pod{UID}/crio-{ID}"),
                container(Guaranteed, CriO, false),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/{ID}/sub"),
                container(Burstable, Unnamed, true),
            ),
            // cgroupfs with a --cgroup-root prefix.
            (
                format!("/kubelet/kubepods/burstable/pod{UID}/{ID}"),
                container(Burstable, Unnamed, false),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), Ok(Some(want)), "{path}");
        }
    }

    #[test]
    fn levels_above_containers_helpers_and_standalone_docker() {
        let pod = |qos| K::Pod {
            qos,
            uid: UID.into(),
        };
        let cases: Vec<(String, Option<K>)> = vec![
            ("/kubepods.slice".into(), Some(K::Root)),
            ("/kubepods".into(), Some(K::Root)),
            (
                "/kubepods.slice/kubepods-burstable.slice".into(),
                Some(K::Qos(Burstable)),
            ),
            ("/kubepods/besteffort".into(), Some(K::Qos(BestEffort))),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
                ),
                Some(pod(Burstable)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice"),
                Some(pod(Guaranteed)),
            ),
            (format!("/kubepods/pod{UID}"), Some(pod(Guaranteed))),
            // Static pods: the uid is the manifest hash.
            (
                format!("/kubepods.slice/kubepods-pod{STATIC}.slice"),
                Some(K::Pod {
                    qos: Guaranteed,
                    uid: STATIC.into(),
                }),
            ),
            // CRI-O's conmon is a helper, in both drivers.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"
                ),
                Some(K::Helper {
                    qos: Burstable,
                    uid: UID.into(),
                }),
            ),
            (
                format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
                Some(K::Helper {
                    qos: Burstable,
                    uid: UID.into(),
                }),
            ),
            // Docker without Kubernetes.
            (
                format!("/system.slice/docker-{ID}.scope"),
                Some(K::Standalone {
                    runtime: Docker,
                    id: ID.into(),
                }),
            ),
            (
                format!("/docker/{ID}"),
                Some(K::Standalone {
                    runtime: Docker,
                    id: ID.into(),
                }),
            ),
            // Nothing to do with containers.
            ("/".into(), None),
            ("/system.slice/sshd.service".into(), None),
            ("/agent-monitor/agents/fraud/fraud-1".into(), None),
            ("/docker".into(), None),
            ("/system.slice/docker-123.scope".into(), None),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), Ok(want), "{path}");
        }
    }

    #[test]
    fn malformed_paths_name_the_component_and_reason() {
        let short_id = &ID[..12];
        let cases: Vec<(String, &str, Reason)> = vec![
            (
                "/kubepods.slice/kubepods-gold.slice".into(),
                "kubepods-gold.slice",
                Reason::UnknownQos,
            ),
            (
                "/kubepods.slice/other-burstable.slice".into(),
                "other-burstable.slice",
                Reason::SliceName,
            ),
            (
                "/kubepods.slice/kubepods-burstable".into(),
                "kubepods-burstable",
                Reason::SliceName,
            ),
            (
                // The pod slice must extend its QoS slice's name.
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod{UID_}.slice"
                ),
                "",
                Reason::SliceName,
            ),
            (
                // A '-' in the uid would be another slice level for systemd.
                format!("/kubepods.slice/kubepods-pod{UID}.slice"),
                "",
                Reason::BadPodUid,
            ),
            (
                "/kubepods.slice/kubepods-podnot_a_uid.slice".into(),
                "kubepods-podnot_a_uid.slice",
                Reason::BadPodUid,
            ),
            (
                format!("/kubepods/burstable/pod{}", &UID[..30]),
                "",
                Reason::BadPodUid,
            ),
            (
                format!("/kubepods/pod{}", UID.to_uppercase()),
                "",
                Reason::BadPodUid,
            ),
            (format!("/kubepods/burstable/{UID}"), "", Reason::UnknownQos),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{short_id}.scope"),
                "",
                Reason::BadContainerId,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/runc-{ID}.scope"),
                "",
                Reason::UnknownContainer,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}"),
                "",
                Reason::UnknownContainer,
            ),
            (
                format!("/kubepods/pod{UID}/{short_id}"),
                "",
                Reason::BadContainerId,
            ),
            (
                format!("/kubepods/pod{UID}/crio-xyz"),
                "",
                Reason::BadContainerId,
            ),
            (
                format!("/kubepods/pod{UID}/sandbox"),
                "",
                Reason::UnknownContainer,
            ),
        ];
        for (path, component, reason) in cases {
            let err = parse(&path).expect_err(&path);
            assert_eq!(err.reason, reason, "{path}");
            assert_eq!(err.path, path);
            if !component.is_empty() {
                assert_eq!(err.component, component, "{path}");
            }
            assert!(path.contains(&err.component), "{path}: {}", err.component);
            assert!(err.to_string().contains(&err.component));
        }
    }
}
