//! HashiCorp Vault lease revocation: `PUT /v1/sys/leases/revoke` with `{"lease_id": ...}`, or
//! `PUT /v1/sys/leases/revoke-prefix/<prefix>`, authenticated by `X-Vault-Token`. Vault answers
//! 204; a lease that is already gone also answers 204.

use super::{Done, RevokeError, VaultLeases, http, read_secret_file};

pub(super) enum What<'a> {
    Lease(&'a str),
    Prefix(&'a str),
}

pub(super) struct Job<'a> {
    leases: &'a VaultLeases,
    what: What<'a>,
}

impl<'a> Job<'a> {
    pub(super) fn lease(leases: &'a VaultLeases, lease_id: &'a str) -> Self {
        Self {
            leases,
            what: What::Lease(lease_id),
        }
    }

    pub(super) fn prefix(leases: &'a VaultLeases, prefix: &'a str) -> Self {
        Self {
            leases,
            what: What::Prefix(prefix),
        }
    }

    /// The path of the lease or prefix, checked: an empty prefix would revoke every lease in
    /// Vault, so it is refused, as are `..` segments and control characters.
    fn checked_path(&self) -> Result<&'a str, RevokeError> {
        let (kind, path) = match self.what {
            What::Lease(p) => ("lease id", p),
            What::Prefix(p) => ("lease prefix", p),
        };
        let bad = |why: &str| RevokeError::Config(format!("{kind} {path:?}: {why}"));
        if path.trim_matches('/').is_empty() {
            return Err(bad(
                "empty (a blank prefix would revoke every lease in Vault)",
            ));
        }
        if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("holds whitespace or control characters"));
        }
        if path.split('/').any(|seg| seg == "..") {
            return Err(bad("holds a '..' segment"));
        }
        Ok(path)
    }
}

impl super::Job for Job<'_> {
    fn action(&self) -> &'static str {
        match self.what {
            What::Lease(_) => "revoke_vault_lease",
            What::Prefix(_) => "revoke_vault_lease_prefix",
        }
    }

    fn target(&self) -> String {
        let ns = self
            .leases
            .namespace
            .as_deref()
            .map(|n| format!(" (namespace {n})"))
            .unwrap_or_default();
        match self.what {
            What::Lease(id) => format!("lease {id} at {}{ns}", self.leases.address),
            What::Prefix(p) => format!("leases under {p} at {}{ns}", self.leases.address),
        }
    }

    fn undo(&self) -> String {
        match self.what {
            What::Lease(id) => {
                // A lease id is `<secret path>/<lease uuid>`: reading the path again issues anew.
                let path = id.rsplit_once('/').map_or(id, |(p, _)| p);
                format!(
                    "irreversible: Vault cannot restore a revoked lease; read {path} again at {} \
                     to issue new credentials",
                    self.leases.address
                )
            }
            What::Prefix(p) => format!(
                "irreversible: Vault cannot restore revoked leases; read the secret paths under {p} \
                 again at {} to issue new credentials",
                self.leases.address
            ),
        }
    }

    fn send(&self, agent: &ureq::Agent) -> Result<Done, RevokeError> {
        let path = self.checked_path()?;
        let base = self.leases.address.as_str();
        http::check_url(base)?;
        let token_path = &self.leases.token_file;
        let token = read_secret_file(token_path).map_err(|source| RevokeError::ReadSecret {
            what: "vault token",
            path: token_path.clone(),
            source,
        })?;
        let (url, body) = match self.what {
            What::Lease(id) => (
                http::join(base, "v1/sys/leases/revoke"),
                serde_json::json!({ "lease_id": id }).to_string(),
            ),
            What::Prefix(_) => {
                let encoded: Vec<String> = path.split('/').map(http::path_encode).collect();
                (
                    http::join(
                        base,
                        &format!("v1/sys/leases/revoke-prefix/{}", encoded.join("/")),
                    ),
                    String::new(),
                )
            }
        };
        let mut request = agent
            .put(&url)
            .header("X-Vault-Token", token.expose())
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.leases.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        let reply = if body.is_empty() {
            request.send_empty()
        } else {
            request
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
        };
        let (status, _) = http::finish(&url, reply, &[200, 204], &[&token])?;
        Ok(Done {
            status,
            note: format!(
                "{} revoked (HTTP {status}; repeating is safe)",
                self.target()
            ),
        })
    }
}
