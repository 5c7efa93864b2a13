//! A pod's agent is all of its containers: each container is its own cgroup (monitored under
//! the pod's agent id), while a response targets the one cgroup last announced. This wrapper
//! makes a per-cgroup actuator (the in-kernel DENY_ALL and rate-limit) act on every container
//! cgroup of the target's pod, found from the pod's cgroup directory at the time of the action.
//! Targets that are not pod containers pass through unchanged.

use std::path::{Path, PathBuf};

use super::cgroup_path::{self, KubeCgroup};
use crate::respond::actuator::{ActionOutcome, Actuator, Target};

pub struct PodWide<A>(pub A);

/// Every container cgroup (with those below them) of the pod whose container `path` is.
pub fn pod_containers(path: &Path) -> Vec<(u64, PathBuf)> {
    let is_container = |p: &Path| {
        matches!(
            cgroup_path::parse(&p.to_string_lossy()),
            Ok(Some(KubeCgroup::Container { .. }))
        )
    };
    if !is_container(path) {
        return Vec::new();
    }
    // The pod level: the first ancestor that is not a container cgroup.
    let Some(pod) = path.ancestors().find(|a| !is_container(a)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut stack = vec![pod.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) && is_container(&p) {
                if let Ok(id) = crate::cgroup::id_of(&p) {
                    found.push((id, p.clone()));
                }
                stack.push(p);
            }
        }
    }
    found.sort();
    found
}

impl<A: Actuator> PodWide<A> {
    fn each(
        &mut self,
        target: &Target,
        act: impl Fn(&mut A, &Target) -> ActionOutcome,
    ) -> ActionOutcome {
        let mut cgroups = target
            .cgroup_path
            .as_deref()
            .map(pod_containers)
            .unwrap_or_default();
        if !cgroups.iter().any(|(id, _)| *id == target.cgroup_id) {
            // The target itself even if its directory just went away (undo of a vanished pod).
            cgroups.insert(
                0,
                (
                    target.cgroup_id,
                    target
                        .cgroup_path
                        .as_deref()
                        .map(std::path::Path::to_path_buf)
                        .unwrap_or_default(),
                ),
            );
        }
        if cgroups.len() == 1 {
            return act(&mut self.0, target);
        }
        let outcomes: Vec<ActionOutcome> = cgroups
            .into_iter()
            .map(|(id, path)| {
                let one = Target {
                    cgroup_id: id,
                    cgroup_path: Some(path.into()),
                    ..target.clone()
                };
                act(&mut self.0, &one)
            })
            .collect();
        let ok = outcomes.iter().all(|o| o.ok);
        ActionOutcome {
            action: outcomes[0].action.clone(),
            ok,
            detail: format!(
                "{} container cgroups of the pod: {}",
                outcomes.len(),
                outcomes
                    .iter()
                    .map(|o| o.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            undo: outcomes.iter().find_map(|o| o.undo.clone()),
        }
    }
}

impl<A: Actuator> Actuator for PodWide<A> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn apply(&mut self, target: &Target) -> ActionOutcome {
        self.each(target, A::apply)
    }

    fn undo(&mut self, target: &Target) -> ActionOutcome {
        self.each(target, A::undo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID_: &str = "2b6c8a1e_5d3f_4e8a_9c71_0f4d2e6b8a13";
    const ID1: &str = "4a7f3c9e1b2d8e6f0a5c7b9d3e1f2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6f";
    const ID2: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

    struct Noted(Vec<u64>);

    impl Actuator for Noted {
        fn name(&self) -> &'static str {
            "deny_all"
        }
        fn apply(&mut self, t: &Target) -> ActionOutcome {
            self.0.push(t.cgroup_id);
            ActionOutcome {
                action: "deny_all".into(),
                ok: true,
                detail: format!("cgroup {}", t.cgroup_id),
                undo: Some("release".into()),
            }
        }
        fn undo(&mut self, t: &Target) -> ActionOutcome {
            self.apply(t)
        }
    }

    // Plain directories stand in for cgroups: only directories and inode numbers are needed.
    #[test]
    fn every_container_of_the_pod_is_acted_on_and_other_targets_pass_through() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
        ));
        let (c1, c2) = (
            pod.join(format!("cri-containerd-{ID1}.scope")),
            pod.join(format!("cri-containerd-{ID2}.scope")),
        );
        for d in [&c1, &c2, &pod.join(format!("crio-conmon-{ID1}.scope"))] {
            std::fs::create_dir_all(d).unwrap();
        }
        let ids: Vec<u64> = [&c1, &c2]
            .iter()
            .map(|d| crate::cgroup::id_of(d).unwrap())
            .collect();
        let mut a = PodWide(Noted(vec![]));
        let target = Target {
            agent_id: "agents/p".into(),
            class: "fraud".into(),
            cgroup_id: ids[1],
            cgroup_path: Some(c2.clone().into()),
        };
        let out = a.apply(&target);
        assert!(
            out.ok && out.detail.starts_with("2 container cgroups"),
            "{out:?}"
        );
        let mut acted = a.0.0.clone();
        acted.sort_unstable();
        let mut want = ids.clone();
        want.sort_unstable();
        assert_eq!(acted, want);

        let plain = Target {
            cgroup_id: 77,
            cgroup_path: Some(root.path().join("agents/fraud/f1").into()),
            ..target
        };
        a.0.0.clear();
        a.undo(&plain);
        assert_eq!(a.0.0, [77]);
    }
}
