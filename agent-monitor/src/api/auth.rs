//! Who is calling and what they may do. A caller on the Unix socket is its peer uid (from the
//! kernel, `SO_PEERCRED`); a caller over TCP is the subject CN and DNS names of the client
//! certificate that the TLS handshake verified. Either maps to a configured principal whose roles
//! decide each call. A refusal is logged and, with an audit log configured, written to it.

use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tonic::{
    Code, Request, Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo},
};

use super::config::{PrincipalConfig, Role};
use crate::respond::audit::{AuditLog, Kind};

/// The caller as the transport identified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A Unix socket peer.
    Uid { uid: u32, pid: Option<i32> },
    /// A TLS client: its certificate's subject CN, then its DNS names.
    Cert {
        names: Vec<String>,
        addr: Option<SocketAddr>,
    },
    /// A connection without credentials the daemon can read.
    Anonymous { addr: Option<SocketAddr> },
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Uid {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} (pid {pid})"),
            Caller::Uid { uid, pid: None } => write!(f, "uid {uid}"),
            Caller::Cert { names, addr } => {
                write!(f, "certificate {}", names.join(", "))?;
                addr.map_or(Ok(()), |a| write!(f, " from {a}"))
            }
            Caller::Anonymous { addr: Some(a) } => write!(f, "anonymous caller from {a}"),
            Caller::Anonymous { addr: None } => write!(f, "anonymous caller"),
        }
    }
}

impl Caller {
    /// Reads the transport's connection info from a request.
    pub fn of<T>(req: &Request<T>) -> Self {
        let ext = req.extensions();
        if let Some(uds) = ext.get::<UdsConnectInfo>() {
            return match uds.peer_cred {
                Some(cred) => Caller::Uid {
                    uid: cred.uid(),
                    pid: cred.pid(),
                },
                None => Caller::Anonymous { addr: None },
            };
        }
        if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
            let addr = tls.get_ref().remote_addr();
            let names = tls
                .peer_certs()
                .and_then(|chain| chain.first().map(|leaf| cert_names(leaf.as_ref())))
                .unwrap_or_default();
            return if names.is_empty() {
                Caller::Anonymous { addr }
            } else {
                Caller::Cert { names, addr }
            };
        }
        let addr = ext
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        Caller::Anonymous { addr }
    }

    /// What the audit log records: uids and addresses as they are, certificate names (which
    /// may name a person) tokenised.
    fn audited(&self, log: &AuditLog) -> serde_json::Value {
        match self {
            Caller::Uid { uid, pid } => serde_json::json!({ "uid": uid, "pid": pid }),
            Caller::Cert { names, addr } => serde_json::json!({
                "cert_names": names.iter().map(|n| log.token(n)).collect::<Vec<_>>(),
                "addr": addr.map(|a| a.to_string()),
            }),
            Caller::Anonymous { addr } => {
                serde_json::json!({ "addr": addr.map(|a| a.to_string()) })
            }
        }
    }
}

/// The subject CN and the DNS subject-alternative names of a DER certificate.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
    pub caller: Caller,
}

/// The principals and the audit log that refusals and approvals go to.
pub struct Auth {
    principals: Vec<PrincipalConfig>,
    pub audit: Option<Arc<Mutex<AuditLog>>>,
}

impl Auth {
    pub fn new(principals: Vec<PrincipalConfig>, audit: Option<AuditLog>) -> Self {
        Self {
            principals,
            audit: audit.map(|a| Arc::new(Mutex::new(a))),
        }
    }

    fn principal(&self, caller: &Caller) -> Option<&PrincipalConfig> {
        self.principals.iter().find(|p| match caller {
            Caller::Uid { uid, .. } => p.uid == Some(*uid),
            Caller::Cert { names, .. } => p
                .cert_name
                .as_ref()
                .is_some_and(|n| names.iter().any(|c| c == n)),
            Caller::Anonymous { .. } => false,
        })
    }

    /// The caller's principal if it holds `role` (any principal for `None`); otherwise the
    /// refusal, logged and audited.
    pub fn authorize<T>(
        &self,
        req: &Request<T>,
        role: Option<Role>,
        method: &str,
    ) -> Result<Principal, Status> {
        let caller = Caller::of(req);
        let Some(p) = self.principal(&caller) else {
            let reason = match &caller {
                Caller::Anonymous { .. } => "no credentials",
                _ => "{caller} is not a configured principal",
            };
            return Err(self.refuse(&caller, None, None, method, Code::Unauthenticated, reason));
        };
        if let Some(role) = role
            && !p.roles.contains(&role)
        {
            let reason = format!("{{principal}} does not hold the {} role", role.as_str());
            return Err(self.refuse(
                &caller,
                Some(&p.name),
                None,
                method,
                Code::PermissionDenied,
                &reason,
            ));
        }
        Ok(Principal {
            name: p.name.clone(),
            roles: p.roles.clone(),
            caller,
        })
    }

    /// Logs and audits a refusal; returns the status for the caller. `{caller}`, `{principal}`
    /// and `{agent}` in `reason` name them in the log and the status; the audit entry keeps the
    /// placeholders (it carries all three, tokenised where they may name a person).
    pub fn refuse(
        &self,
        caller: &Caller,
        principal: Option<&str>,
        agent: Option<&str>,
        method: &str,
        code: Code,
        reason: &str,
    ) -> Status {
        let text = reason
            .replace("{caller}", &caller.to_string())
            .replace("{principal}", principal.unwrap_or("-"))
            .replace("{agent}", agent.unwrap_or("-"));
        log::warn!("api: {method} refused ({code:?}): {text} [{caller}]");
        if let Some(audit) = &self.audit {
            let mut log = audit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let data = serde_json::json!({
                "method": method,
                "code": code_name(code),
                "caller": caller.audited(&log),
                "principal": principal.map(|p| log.token(p)),
                "reason": reason,
            });
            if let Err(e) = log.append(Kind::Refusal, agent, None, data) {
                log::error!("api: refusal of {method} not audited: {e}");
            }
        }
        Status::new(code, text)
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::FailedPrecondition => "failed_precondition",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_are_the_subject_cn_then_dns_names() {
        let mut params =
            rcgen::CertificateParams::new(vec!["soc.bank.example".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "soc-dashboard");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            cert_names(cert.der()),
            ["soc-dashboard", "soc.bank.example"]
        );
        assert!(cert_names(b"not a certificate").is_empty());
    }

    #[test]
    fn principals_match_by_uid_or_certificate_name_and_roles_decide() {
        let auth = Auth::new(
            vec![
                PrincipalConfig {
                    name: "alice".into(),
                    uid: Some(1001),
                    cert_name: Some("alice.soc".into()),
                    roles: vec![Role::Viewer],
                },
                PrincipalConfig {
                    name: "bot".into(),
                    uid: None,
                    cert_name: Some("bot".into()),
                    roles: vec![Role::Approver],
                },
            ],
            None,
        );
        let by_uid = Caller::Uid {
            uid: 1001,
            pid: None,
        };
        assert_eq!(auth.principal(&by_uid).map(|p| &*p.name), Some("alice"));
        let by_cert = Caller::Cert {
            names: vec!["x".into(), "alice.soc".into()],
            addr: None,
        };
        assert_eq!(auth.principal(&by_cert).map(|p| &*p.name), Some("alice"));
        assert!(auth.principal(&Caller::Uid { uid: 0, pid: None }).is_none());
        assert!(auth.principal(&Caller::Anonymous { addr: None }).is_none());
        // A request without connection info (no transport) is anonymous: refused.
        let req = Request::new(());
        let err = auth
            .authorize(&req, Some(Role::Viewer), "ListAgents")
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated);
        let status = auth.refuse(
            &by_cert,
            Some("alice"),
            Some("fraud-1"),
            "Release",
            Code::PermissionDenied,
            "{principal} ({caller}) may not release {agent}",
        );
        assert_eq!(
            status.message(),
            "alice (certificate x, alice.soc) may not release fraud-1"
        );
    }
}
