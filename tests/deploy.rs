//! The daemon configuration shipped for Kubernetes (the ConfigMap in deploy/kubernetes/ and the
//! Helm chart's default `config` value) is one the daemon accepts: unknown keys are refused, so a
//! typo there would stop every pod at start.

use std::path::Path;

use agent_monitor::config::Config;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn shipped_kubernetes_configs_parse() {
    let configmap = root().join("deploy/kubernetes/04-configmap.yaml");
    let values = root().join("deploy/helm/agent-monitor/values.yaml");
    let texts = [
        (&configmap, yaml(&configmap)["data"]["config.yaml"].clone()),
        (&values, yaml(&values)["config"].clone()),
    ];
    for (path, text) in texts {
        let text = text
            .as_str()
            .unwrap_or_else(|| panic!("{}: no config text", path.display()));
        let config = Config::parse(text, path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            config.watch.is_empty(),
            "{}: agents are pods",
            path.display()
        );
        assert!(
            config.audit.is_some(),
            "{}: the audit log is on",
            path.display()
        );
    }
}
