//! A Kubernetes API server on loopback for the tests: the real paths and JSON of the calls the
//! daemon makes, nothing else.
//!
//! - `GET /api/v1/pods?fieldSelector=spec.nodeName%3D<node>`: a PodList with
//!   `metadata.resourceVersion`; with `watch=true`, WatchEvent JSON lines (ADDED, MODIFIED,
//!   DELETED) after the given resourceVersion, then live ones, and a BOOKMARK after the backlog
//!   when `allowWatchBookmarks=true`;
//! - `POST /apis/networking.k8s.io/v1/namespaces/<ns>/networkpolicies` (201, or 409
//!   AlreadyExists) and `DELETE .../networkpolicies/<name>` (200, or 404 NotFound), with
//!   `GET .../networkpolicies/<name>` for checks.
//!
//! Every request is logged (method and path with query) so tests can assert what was called.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};

#[derive(Default)]
struct Store {
    rv: u64,
    /// uid -> pod
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, node, WatchEvent line)
    history: Vec<(u64, String, String)>,
    /// (namespace, name) -> NetworkPolicy
    policies: BTreeMap<(String, String), Value>,
    requests: Vec<String>,
    /// When set, NetworkPolicy calls answer this status (a failing API server).
    fail_policies: Option<u16>,
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<(String, String)>,
}

/// The server; stops when dropped.
pub struct KubeApi {
    pub addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeApi {
    pub fn start() -> Self {
        let shared = Shared {
            store: Arc::default(),
            events: broadcast::channel(1024).0,
        };
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
                post(create_policy),
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
                get(get_policy).delete(delete_policy),
            )
            .fallback(|| async { status(404, "NotFound", "no such path on this test server") })
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                log_request,
            ))
            .with_state(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds or replaces a pod (ADDED or MODIFIED), giving it the next resourceVersion.
    pub fn put_pod(&self, mut pod: Value) {
        let uid = pod["metadata"]["uid"].as_str().expect("pod uid").to_owned();
        let mut s = self.shared.store.lock().unwrap();
        s.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let kind = if s.pods.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.pods.insert(uid, pod.clone());
        self.record(&mut s, kind, pod);
    }

    /// Deletes a pod (DELETED).
    pub fn delete_pod(&self, uid: &str) {
        let mut s = self.shared.store.lock().unwrap();
        let Some(mut pod) = s.pods.remove(uid) else {
            return;
        };
        s.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        self.record(&mut s, "DELETED", pod);
    }

    fn record(&self, s: &mut Store, kind: &str, pod: Value) {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
        let line = format!("{}\n", json!({"type": kind, "object": pod}));
        s.history.push((s.rv, node.clone(), line.clone()));
        // Sent under the lock, so a watch that read the history misses nothing.
        let _ = self.shared.events.send((node, line));
    }

    pub fn policy(&self, namespace: &str, name: &str) -> Option<Value> {
        let s = self.shared.store.lock().unwrap();
        s.policies
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn policies(&self) -> Vec<Value> {
        self.shared
            .store
            .lock()
            .unwrap()
            .policies
            .values()
            .cloned()
            .collect()
    }

    /// Puts a NetworkPolicy in place as if someone else created it.
    pub fn put_policy(&self, namespace: &str, name: &str, policy: Value) {
        let mut s = self.shared.store.lock().unwrap();
        s.policies.insert((namespace.into(), name.into()), policy);
    }

    pub fn fail_policies(&self, code: Option<u16>) {
        self.shared.store.lock().unwrap().fail_policies = code;
    }

    /// `METHOD /path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().requests.clone()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open watch streams keep graceful shutdown waiting: do not join.
        drop(self.thread.take());
    }
}

async fn log_request(
    State(shared): State<Shared>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!(
        "{} {}",
        request.method(),
        request.uri().path_and_query().map_or("", |p| p.as_str())
    );
    shared.store.lock().unwrap().requests.push(line);
    next.run(request).await
}

/// A `Status` object as the API server sends with an error.
fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

fn node_of(query: &HashMap<String, String>) -> Option<String> {
    let selector = query.get("fieldSelector")?;
    selector.strip_prefix("spec.nodeName=").map(str::to_owned)
}

async fn pods(State(shared): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let node = node_of(&q);
    let on_node = move |n: &str| node.as_deref().is_none_or(|want| want == n);
    if q.get("watch").map(String::as_str) != Some("true") {
        let s = shared.store.lock().unwrap();
        let items: Vec<&Value> = s
            .pods
            .values()
            .filter(|p| on_node(p["spec"]["nodeName"].as_str().unwrap_or("")))
            .collect();
        let list = json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": s.rv.to_string()},
            "items": items,
        });
        return Json(list).into_response();
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (backlog, rx) = {
        let s = shared.store.lock().unwrap();
        let rx = shared.events.subscribe();
        let mut lines: Vec<String> = s
            .history
            .iter()
            .filter(|(rv, n, _)| *rv > from && on_node(n))
            .map(|(_, _, l)| l.clone())
            .collect();
        if q.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
            let bookmark = json!({"type": "BOOKMARK", "object": {
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {"resourceVersion": s.rv.to_string()}}});
            lines.push(format!("{bookmark}\n"));
        }
        (lines, rx)
    };
    let live = futures::stream::unfold((rx, on_node), |(mut rx, on_node)| async move {
        loop {
            match rx.recv().await {
                Ok((n, line)) if on_node(&n) => return Some((line, (rx, on_node))),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::stream::iter(backlog)
        .chain(live)
        .map(Ok::<_, Infallible>);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn create_policy(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    Json(mut policy): Json<Value>,
) -> Response {
    let mut s = shared.store.lock().unwrap();
    if let Some(code) = s.fail_policies {
        return status(code, "InternalError", "the test server was told to fail");
    }
    let name = policy["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if name.is_empty()
        || policy["metadata"]["namespace"]
            .as_str()
            .is_some_and(|n| n != ns)
    {
        return status(
            422,
            "Invalid",
            "metadata.name missing or namespace mismatch",
        );
    }
    let key = (ns, name.clone());
    if s.policies.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("networkpolicies.networking.k8s.io \"{name}\" already exists"),
        );
    }
    s.rv += 1;
    policy["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    policy["metadata"]["uid"] = json!(format!("np-{}", s.rv));
    policy["apiVersion"] = json!("networking.k8s.io/v1");
    policy["kind"] = json!("NetworkPolicy");
    s.policies.insert(key, policy.clone());
    (StatusCode::CREATED, Json(policy)).into_response()
}

async fn get_policy(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let s = shared.store.lock().unwrap();
    match s.policies.get(&(ns, name.clone())) {
        Some(p) => Json(p.clone()).into_response(),
        None => status(
            404,
            "NotFound",
            &format!("networkpolicies.networking.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn delete_policy(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let mut s = shared.store.lock().unwrap();
    if let Some(code) = s.fail_policies {
        return status(code, "InternalError", "the test server was told to fail");
    }
    match s.policies.remove(&(ns, name.clone())) {
        Some(_) => Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": "networking.k8s.io", "kind": "networkpolicies"},
        }))
        .into_response(),
        None => status(
            404,
            "NotFound",
            &format!("networkpolicies.networking.k8s.io \"{name}\" not found"),
        ),
    }
}

/// A pod as the API server returns it: on `node`, with `labels`.
pub fn pod(name: &str, uid: &str, node: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "agents", "uid": uid, "labels": labels},
        "spec": {"nodeName": node, "serviceAccountName": format!("{name}-sa"),
                 "containers": [{"name": "main", "image": "agent:1"}]},
        "status": {"phase": "Running"},
    })
}
