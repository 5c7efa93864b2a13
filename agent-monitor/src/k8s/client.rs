//! Connecting to the API server: an explicit URL (tests, `kubectl proxy`), else the in-cluster
//! service account, else the kubeconfig (`kube::Config::infer`).

use std::time::Duration;

use super::KubernetesConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubernetes.api {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "no Kubernetes API configuration: not in a pod (no service account) and no kubeconfig: {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("{0}")]
    NodeName(String),
}

/// The connection settings, without connecting.
pub async fn config(k: &KubernetesConfig) -> Result<kube::Config, ClientError> {
    let mut config = match &k.api {
        Some(url) => {
            kube::Config::new(url.parse::<http::Uri>().map_err(|e| ClientError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?)
        }
        None => kube::Config::infer().await?,
    };
    // A watch is long-lived: only connecting is bounded here (the watcher handles idle streams).
    config.connect_timeout = Some(Duration::from_millis(k.api_timeout_ms));
    Ok(config)
}

/// A client on the current tokio runtime.
pub fn client(config: kube::Config) -> Result<kube::Client, ClientError> {
    Ok(kube::Client::try_from(config)?)
}
