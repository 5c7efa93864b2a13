//! The `api` configuration key: where the control API listens and who may call what.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// Where the daemon listens by default (the DaemonSet mounts `/run/agent-monitor` from the host).
pub const DEFAULT_SOCKET: &str = "/run/agent-monitor/api.sock";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket (mode 0660); `null`: none.
    #[serde(default = "default_socket")]
    pub socket: Option<PathBuf>,
    /// Group owning the socket (a name or a number), so that its members can connect; `null`:
    /// root's group.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// TCP with mutual TLS; `null`: none.
    #[serde(default)]
    pub tcp: Option<TcpConfig>,
    /// Who may call, identified by Unix peer uid or client certificate name, and their roles.
    #[serde(default = "default_principals")]
    pub principals: Vec<PrincipalConfig>,
    /// How long a Release call waits for the daemon to carry out an approved release.
    #[serde(default = "default_release_wait_secs")]
    pub release_wait_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            socket_group: None,
            tcp: None,
            principals: default_principals(),
            release_wait_secs: default_release_wait_secs(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub client_ca: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The name the daemon records (approvals, audit log; tokenised there).
    pub name: String,
    /// A caller on the Unix socket whose peer uid is this.
    #[serde(default)]
    pub uid: Option<u32>,
    /// A caller over TCP whose client certificate has this subject CN or DNS name.
    #[serde(default)]
    pub cert_name: Option<String>,
    pub roles: Vec<Role>,
}

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// ListAgents, Watch, RecentEvents.
    Viewer,
    /// Release.
    Approver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
        }
    }
}

fn default_socket() -> Option<PathBuf> {
    Some(DEFAULT_SOCKET.into())
}

/// root, who can write the state directory and so approve with `agent-monitor release`
/// anyway, may do everything; nobody else until the configuration names them.
fn default_principals() -> Vec<PrincipalConfig> {
    vec![PrincipalConfig {
        name: "root".into(),
        uid: Some(0),
        cert_name: None,
        roles: vec![Role::Viewer, Role::Approver],
    }]
}

fn default_release_wait_secs() -> u64 {
    10
}

impl ApiConfig {
    /// The `None` default is not used: the API is on unless the configuration says `api: null`.
    pub fn default_on() -> Option<Self> {
        Some(Self::default())
    }

    /// Checks what serde cannot; errors name the field below `api`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: String, reason: &str| Err((field, reason.to_owned()));
        if self.socket.is_none() && self.tcp.is_none() {
            return err(
                "socket".into(),
                "neither a socket nor tcp: say `api: null` to turn the API off",
            );
        }
        if self.socket.as_ref().is_some_and(|s| !s.is_absolute()) {
            return err("socket".into(), "must be an absolute path");
        }
        for (i, p) in self.principals.iter().enumerate() {
            let at = |f: &str| format!("principals[{i}].{f}");
            if p.name.is_empty() {
                return err(at("name"), "must not be empty");
            }
            if p.uid.is_none() && p.cert_name.is_none() {
                return err(at("uid"), "a principal needs a uid, a cert_name or both");
            }
            if p.roles.is_empty() {
                return err(
                    at("roles"),
                    "must name at least one role (viewer, approver)",
                );
            }
            let earlier = &self.principals[..i];
            if earlier.iter().any(|q| q.name == p.name) {
                return err(at("name"), "names another principal's name again");
            }
            if p.uid.is_some() && earlier.iter().any(|q| q.uid == p.uid) {
                return err(at("uid"), "is another principal's uid too");
            }
            if p.cert_name.is_some() && earlier.iter().any(|q| q.cert_name == p.cert_name) {
                return err(at("cert_name"), "is another principal's cert_name too");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse(yaml, Path::new("c.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn on_by_default_off_with_null() {
        let c = parse("max_agents: 4\n").expect("parses");
        let api = c.api.expect("on by default");
        assert_eq!(
            api.socket.as_deref(),
            Some(Path::new(super::DEFAULT_SOCKET))
        );
        assert_eq!(api.principals[0].uid, Some(0));
        assert!(parse("api: null\n").expect("parses").api.is_none());
    }

    #[test]
    fn mistakes_name_the_field() {
        for (yaml, field) in [
            ("api: {socket: null}\n", "api.socket"),
            ("api: {socket: rel/api.sock}\n", "api.socket"),
            (
                "api: {principals: [{name: a, roles: [viewer]}]}\n",
                "api.principals[0].uid",
            ),
            (
                "api: {principals: [{name: a, uid: 1, roles: []}]}\n",
                "api.principals[0].roles",
            ),
            (
                "api: {principals: [{name: a, uid: 1, roles: [viewer]}, \
                 {name: b, uid: 1, roles: [viewer]}]}\n",
                "api.principals[1].uid",
            ),
            (
                "api: {principals: [{name: a, cert_name: x, roles: [viewer]}, \
                 {name: a, uid: 2, roles: [viewer]}]}\n",
                "api.principals[1].name",
            ),
        ] {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.contains(field), "{yaml}: {err}");
        }
        let err = parse("api: {principals: [{name: a, uid: 1, roles: [admin]}]}\n")
            .expect_err("unknown role");
        assert!(err.contains("admin") && err.contains("c.yaml"), "{err}");
        let err = parse("api: {sock: /x}\n").expect_err("unknown key");
        assert!(err.contains("sock"), "{err}");
    }
}
