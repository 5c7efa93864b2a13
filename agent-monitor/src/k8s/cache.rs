//! The pods of this node as last reported by the API server, shared between the watch task
//! (writer), the agent registry (reader, through [`PodLookup`]) and the NetworkPolicy actuator.
//! A change that matters to identity (a pod added or removed, its agent id or class changed)
//! wakes the registry at once rather than at its next rescan.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::{Notify, watch};

use super::pod::PodInfo;
use crate::identity::{PodLookup, PodResolution};

#[derive(Clone)]
pub struct PodCache {
    inner: Arc<RwLock<Inner>>,
    changed: Arc<Notify>,
    synced: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    by_uid: HashMap<String, Arc<PodInfo>>,
    /// Static pods: manifest hash (the uid in their cgroup paths) -> mirror pod uid.
    by_hash: HashMap<String, String>,
}

impl Default for PodCache {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::new(Notify::new()),
            synced: watch::Sender::new(false),
        }
    }
}

impl PodCache {
    /// Wakes whoever waits on [`PodCache::changed`] when identities change.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// A pod added or modified.
    pub fn apply(&self, pod: PodInfo) {
        let relevant = {
            let mut inner = self.write();
            let old = inner.by_uid.get(&pod.uid).cloned();
            if let Some(old) = &old
                && let Some(h) = &old.config_hash
            {
                inner.by_hash.remove(h);
            }
            if let Some(h) = &pod.config_hash {
                inner.by_hash.insert(h.clone(), pod.uid.clone());
            }
            let relevant = old.as_ref().is_none_or(|o| o.agent != pod.agent);
            if !pod.problems.is_empty() && old.as_ref().is_none_or(|o| o.problems != pod.problems) {
                log::warn!(
                    "pod {}/{}: {}",
                    pod.namespace,
                    pod.name,
                    pod.problems.join("; ")
                );
            }
            inner.by_uid.insert(pod.uid.clone(), Arc::new(pod));
            relevant
        };
        if relevant {
            self.changed.notify_one();
        }
    }

    pub fn delete(&self, uid: &str) {
        let removed = {
            let mut inner = self.write();
            let removed = inner.by_uid.remove(uid);
            if let Some(h) = removed.as_ref().and_then(|p| p.config_hash.as_ref()) {
                inner.by_hash.remove(h);
            }
            removed.is_some()
        };
        if removed {
            self.changed.notify_one();
        }
    }

    /// The complete list after a (re)list: pods not in it are gone. Marks the cache synced.
    pub fn replace_all(&self, pods: Vec<PodInfo>) {
        {
            let mut inner = self.write();
            let keep: std::collections::HashSet<&str> =
                pods.iter().map(|p| p.uid.as_str()).collect();
            let gone: Vec<String> = inner
                .by_uid
                .keys()
                .filter(|u| !keep.contains(u.as_str()))
                .cloned()
                .collect();
            drop(keep);
            for uid in gone {
                if let Some(h) = inner
                    .by_uid
                    .remove(&uid)
                    .and_then(|p| p.config_hash.clone())
                {
                    inner.by_hash.remove(&h);
                }
            }
        }
        for pod in pods {
            self.apply(pod);
        }
        self.synced.send_replace(true);
        self.changed.notify_one();
    }

    /// A pod by its uid, or by the manifest hash of a static pod.
    pub fn get(&self, uid: &str) -> Option<Arc<PodInfo>> {
        let inner = self.read();
        inner.by_uid.get(uid).cloned().or_else(|| {
            inner
                .by_hash
                .get(uid)
                .and_then(|u| inner.by_uid.get(u))
                .cloned()
        })
    }

    pub fn len(&self) -> usize {
        self.read().by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first complete list of this node's pods has arrived.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first complete list, at most `timeout`; returns whether it came.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A writer that panicked left complete entries (each insert is one statement).
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl PodLookup for PodCache {
    fn resolve(&self, pod_uid: &str) -> PodResolution {
        match self.get(pod_uid) {
            Some(p) => match &p.agent {
                Some(a) => PodResolution::Agent {
                    id: a.id.clone(),
                    class: a.class.clone(),
                },
                None => PodResolution::NotAgent,
            },
            None => PodResolution::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::k8s::pod::AgentIdentity;

    fn info(uid: &str, class: Option<&str>, hash: Option<&str>) -> PodInfo {
        PodInfo {
            namespace: "n".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            config_hash: hash.map(Into::into),
            service_account: None,
            labels: BTreeMap::new(),
            agent: class.map(|c| AgentIdentity {
                id: format!("n/pod-{uid}"),
                class: c.into(),
            }),
            containers: BTreeMap::new(),
            problems: vec![],
        }
    }

    #[tokio::test]
    async fn resolution_follows_apply_delete_and_relist() {
        let cache = PodCache::default();
        assert!(!cache.is_synced());
        assert!(!cache.wait_synced(Duration::from_millis(10)).await);
        cache.replace_all(vec![info("a", Some("fraud"), None), info("b", None, None)]);
        assert!(cache.wait_synced(Duration::from_millis(10)).await);
        assert!(
            matches!(cache.resolve("a"), PodResolution::Agent { class, .. } if class == "fraud")
        );
        assert_eq!(cache.resolve("b"), PodResolution::NotAgent);
        assert_eq!(cache.resolve("c"), PodResolution::Unknown);
        cache.apply(info("b", Some("payments"), None));
        assert!(matches!(cache.resolve("b"), PodResolution::Agent { .. }));
        cache.delete("a");
        assert_eq!(cache.resolve("a"), PodResolution::Unknown);
        // A relist drops what it does not name.
        cache.replace_all(vec![info("c", None, None)]);
        assert_eq!(cache.resolve("b"), PodResolution::Unknown);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn static_pods_resolve_by_manifest_hash_and_changes_notify() {
        let cache = PodCache::default();
        let changed = cache.changed();
        cache.apply(info("mirror-uid", Some("ops"), Some("hash1")));
        // The notification was stored: this returns at once.
        tokio::time::timeout(Duration::from_secs(1), changed.notified())
            .await
            .unwrap();
        assert!(matches!(
            cache.resolve("hash1"),
            PodResolution::Agent { .. }
        ));
        // A status-only update is not an identity change.
        cache.apply(info("mirror-uid", Some("ops"), Some("hash1")));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), changed.notified())
                .await
                .is_err()
        );
        cache.delete("mirror-uid");
        assert_eq!(cache.resolve("hash1"), PodResolution::Unknown);
    }
}
