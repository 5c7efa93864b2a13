//! Agent cgroups of Kubernetes pods: the kubelet's cgroup hierarchies are walked, each container
//! cgroup is named by its path (pod uid), and the pod uid is resolved through a [`PodLookup`]
//! (the pod cache kept from the API server). A container whose pod is not known yet is
//! *pending*: monitored in the kernel so that none of its events is missed, and its events held
//! until the pod is known (see `source::hold`).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::{
    cgroup,
    k8s::cgroup_path::{self, CgroupPathError, KubeCgroup},
};

/// What the pod behind a uid is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodResolution {
    Agent {
        id: String,
        class: String,
    },
    /// A known pod that is not an agent.
    NotAgent,
    /// No such pod known (yet).
    Unknown,
}

/// Pod uid -> identity; the Kubernetes pod cache, or a plain map in tests.
pub trait PodLookup: Send + Sync {
    fn resolve(&self, pod_uid: &str) -> PodResolution;
}

/// A container cgroup found under a kubepods hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    pub cgroup_id: u64,
    /// Relative to the cgroup v2 mount, with a leading `/`.
    pub path: PathBuf,
    pub pod_uid: String,
    pub resolution: PodResolution,
}

/// Below a container cgroup, how deep its own cgroups are followed.
const MAX_NESTED_DEPTH: usize = 4;

/// What a walk of the kubepods hierarchies found.
#[derive(Debug, Default)]
pub struct Scan {
    pub containers: Vec<PodCgroup>,
    /// Directories met under the roots that fit no layout.
    pub errors: Vec<CgroupPathError>,
    /// The hierarchy's levels above the containers (roots, QoS levels, pods): where new
    /// containers appear.
    pub parents: Vec<PathBuf>,
}

/// Every container cgroup under `roots` (relative to `mount`).
pub fn discover(mount: &Path, roots: &[PathBuf], pods: &dyn PodLookup) -> Scan {
    let mut walk = Walk {
        mount,
        pods,
        scan: Scan::default(),
        resolved: HashMap::new(),
    };
    for root in roots {
        let dir = crate::config::Config::cgroup_path(mount, root);
        if dir.is_dir() {
            walk.visit(&dir, 0);
        }
    }
    walk.scan
}

struct Walk<'a> {
    mount: &'a Path,
    pods: &'a dyn PodLookup,
    scan: Scan,
    /// One lookup per pod per walk.
    resolved: HashMap<String, PodResolution>,
}

impl Walk<'_> {
    fn visit(&mut self, dir: &Path, nested: usize) {
        let rel = Path::new("/").join(dir.strip_prefix(self.mount).unwrap_or(dir));
        // (follow the children, they are below a container)
        let (descend, container) = match cgroup_path::parse(&rel.to_string_lossy()) {
            Ok(Some(KubeCgroup::Container { uid, .. })) => {
                if let Ok(cgroup_id) = cgroup::id_of(dir) {
                    let pods = self.pods;
                    let resolution = self
                        .resolved
                        .entry(uid.clone())
                        .or_insert_with(|| pods.resolve(&uid))
                        .clone();
                    self.scan.containers.push(PodCgroup {
                        cgroup_id,
                        path: rel,
                        pod_uid: uid,
                        resolution,
                    });
                }
                (nested < MAX_NESTED_DEPTH, true)
            }
            Ok(Some(KubeCgroup::Root | KubeCgroup::Qos(_) | KubeCgroup::Pod { .. })) => {
                self.scan.parents.push(dir.to_owned());
                (true, false)
            }
            // A runtime helper, Docker outside Kubernetes, or an unrelated directory.
            Ok(Some(KubeCgroup::Helper { .. } | KubeCgroup::Standalone { .. }) | None) => {
                (false, false)
            }
            Err(e) => {
                self.scan.errors.push(e);
                (false, false)
            }
        };
        if !descend {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.visit(&e.path(), nested + usize::from(container));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const UID_A: &str = "2b6c8a1e-5d3f-4e8a-9c71-0f4d2e6b8a13";
    const UID_B: &str = "7e1d2c3b-4a59-4687-8b9c-0d1e2f3a4b5c";
    const ID1: &str = "4a7f3c9e1b2d8e6f0a5c7b9d3e1f2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6f";
    const ID2: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

    #[derive(Default)]
    pub struct Map(pub Mutex<HashMap<String, PodResolution>>);
    impl PodLookup for Map {
        fn resolve(&self, uid: &str) -> PodResolution {
            self.0
                .lock()
                .unwrap()
                .get(uid)
                .cloned()
                .unwrap_or(PodResolution::Unknown)
        }
    }

    // Plain directories stand in for cgroups: the walk only needs directories and inodes.
    #[test]
    fn containers_of_both_drivers_are_found_and_resolved_helpers_skipped() {
        let root = tempfile::tempdir().unwrap();
        let m = root.path();
        let a_ = UID_A.replace('-', "_");
        let dirs = [
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{a_}.slice/cri-containerd-{ID1}.scope/inner"
            ),
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{a_}.slice/crio-conmon-{ID1}.scope"
            ),
            format!("kubepods/besteffort/pod{UID_B}/{ID2}"),
            "kubepods.slice/kubepods-gold.slice/x".into(),
            "elsewhere/kubepods-pod.slice".into(),
        ];
        for d in &dirs {
            fs::create_dir_all(m.join(d)).unwrap();
        }
        let pods = Map::default();
        pods.0.lock().unwrap().insert(
            UID_A.into(),
            PodResolution::Agent {
                id: "ns/a".into(),
                class: "fraud".into(),
            },
        );
        let roots = [PathBuf::from("kubepods.slice"), PathBuf::from("kubepods")];
        let scan = discover(m, &roots, &pods);
        let (mut found, errors) = (scan.containers, scan.errors);
        found.sort_by(|a, b| a.path.cmp(&b.path));
        // kubepods.slice, its QoS level, the pod; kubepods, besteffort, the pod.
        assert_eq!(scan.parents.len(), 6, "{:?}", scan.parents);
        let summary: Vec<(&str, bool)> = found
            .iter()
            .map(|f| {
                (
                    f.pod_uid.as_str(),
                    matches!(f.resolution, PodResolution::Agent { .. }),
                )
            })
            .collect();
        // The container, the cgroup it made below itself, and the cgroupfs container.
        assert_eq!(
            summary,
            [(UID_B, false), (UID_A, true), (UID_A, true)],
            "{found:?}"
        );
        assert_eq!(found[0].resolution, PodResolution::Unknown);
        assert!(found[2].path.ends_with("inner"));
        assert!(found[1].path.starts_with("/kubepods.slice"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].component, "kubepods-gold.slice");
    }
}
