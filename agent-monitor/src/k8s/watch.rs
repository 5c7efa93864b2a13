//! The pods of this node, from the API server into the [`PodCache`]: a list with the field
//! selector `spec.nodeName=<node>`, then a watch from the list's resourceVersion (kube-runtime's
//! watcher: re-lists on `410 Gone`, backs off on errors, resumes from bookmarks).

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    runtime::{WatchStreamExt as _, watcher},
};

use super::{LabelKeys, PodCache, PodInfo};

/// The field selector for the pods of `node`.
pub fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Keeps `cache` in step with the pods of `node` until the task is dropped.
pub async fn run(client: kube::Client, node: String, keys: LabelKeys, cache: PodCache) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&node_selector(&node));
    let mut events = watcher(api, config).default_backoff().boxed();
    // A (re)list is buffered and applied whole, so a pod missing from it is known to be gone.
    let mut listing: Vec<PodInfo> = Vec::new();
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if failing {
                    log::info!("pod watch of node {node} works again");
                    failing = false;
                }
                match event {
                    watcher::Event::Init => listing.clear(),
                    watcher::Event::InitApply(pod) => {
                        listing.extend(PodInfo::from_pod(&pod, &keys));
                    }
                    watcher::Event::InitDone => {
                        let pods = std::mem::take(&mut listing);
                        log::info!(
                            "pods of node {node} listed: {} ({} agents)",
                            pods.len(),
                            pods.iter().filter(|p| p.agent.is_some()).count()
                        );
                        cache.replace_all(pods);
                    }
                    watcher::Event::Apply(pod) => {
                        if let Some(info) = PodInfo::from_pod(&pod, &keys) {
                            cache.apply(info);
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(uid) = &pod.metadata.uid {
                            cache.delete(uid);
                        }
                    }
                }
            }
            Err(e) => {
                // The watcher retries with backoff; say so once per outage, not per attempt.
                if !failing {
                    log::error!("pod watch of node {node} failing (retrying): {e}");
                    failing = true;
                }
                metrics::counter!("agent_monitor_kubernetes_watch_errors_total").increment(1);
            }
        }
    }
}

/// Starts the watch on the current runtime and waits up to `timeout` for the first list.
pub async fn start(
    client: kube::Client,
    node: String,
    keys: LabelKeys,
    timeout: Duration,
) -> (PodCache, tokio::task::JoinHandle<()>) {
    let cache = PodCache::default();
    let task = tokio::spawn(run(client, node.clone(), keys, cache.clone()));
    if !cache.wait_synced(timeout).await {
        log::warn!(
            "pods of node {node} not listed within {} s: pod cgroups stay pending until they are",
            timeout.as_secs()
        );
    }
    (cache, task)
}
