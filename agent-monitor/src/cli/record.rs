//! `agent-monitor record --agent ID`: the trace of one agent only. The configuration is narrowed
//! to that agent's cgroup (found among the configured agents or under the watched parents), so
//! the kernel monitors and the trace holds nothing else.

use agent_monitor::{
    cgroup,
    config::{Config, StaticAgent},
    identity::AgentRegistry,
};
use anyhow::bail;

pub fn narrow_to_agent(config: &mut Config, agent: &str) -> anyhow::Result<()> {
    let mount = cgroup::v2_mount()?;
    let registry = AgentRegistry::new(mount.clone(), config.clone());
    let Some(found) = registry.discover().into_values().find(|a| &*a.id == agent) else {
        bail!(
            "no agent {agent:?} among the configured agents or under the watched parents ({}): \
             start it first",
            config
                .watch
                .iter()
                .map(|w| Config::cgroup_path(&mount, w).display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    log::info!(
        "recording agent {} ({}) in cgroup {} only",
        found.id,
        found.class,
        found.path.display()
    );
    config.agents = vec![StaticAgent {
        cgroup: found.path.into(),
        id: found.id.into(),
        class: found.class.to_string(),
    }];
    config.watch.clear();
    Ok(())
}
