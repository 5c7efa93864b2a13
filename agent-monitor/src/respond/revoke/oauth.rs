//! OAuth 2.0 token revocation, RFC 7009: `POST` to the revocation endpoint,
//! `application/x-www-form-urlencoded` body `token=...&token_type_hint=...`, HTTP Basic client
//! authentication (RFC 6749 section 2.3.1). 200 means revoked, including a token that was
//! already invalid.

use base64::Engine as _;

use super::{Done, OAuthToken, RevokeError, Secret, http, read_secret_file};

pub(super) struct Job<'a> {
    token: &'a OAuthToken,
}

impl<'a> Job<'a> {
    pub(super) fn new(token: &'a OAuthToken) -> Self {
        Self { token }
    }

    fn read_token(&self) -> Result<Secret, RevokeError> {
        match (&self.token.token, &self.token.token_file) {
            (Some(_), Some(_)) => Err(RevokeError::Config(
                "oauth entry has both token and token_file; give one".into(),
            )),
            (None, None) => Err(RevokeError::Config(
                "oauth entry has neither token nor token_file".into(),
            )),
            (Some(t), None) if t.is_empty() => {
                Err(RevokeError::Config("oauth token is empty".into()))
            }
            (Some(t), None) => Ok(t.clone()),
            (None, Some(path)) => {
                read_secret_file(path).map_err(|source| RevokeError::ReadSecret {
                    what: "oauth token",
                    path: path.clone(),
                    source,
                })
            }
        }
    }
}

impl super::Job for Job<'_> {
    fn action(&self) -> &'static str {
        "revoke_oauth_token"
    }

    fn target(&self) -> String {
        let which = match self.read_token() {
            Ok(t) => format!("token sha256:{}", t.fingerprint()),
            Err(_) => "token (unreadable)".to_owned(),
        };
        format!(
            "{which} of client {} ({}) at {}",
            self.token.client_id,
            self.token.token_type_hint.as_deref().unwrap_or("any type"),
            self.token.endpoint
        )
    }

    fn undo(&self) -> String {
        format!(
            "irreversible (RFC 7009): issue client {} a new {} from the authorization server of {}",
            self.token.client_id,
            self.token.token_type_hint.as_deref().unwrap_or("token"),
            self.token.endpoint
        )
    }

    fn send(&self, agent: &ureq::Agent) -> Result<Done, RevokeError> {
        let url = self.token.endpoint.as_str();
        http::check_url(url)?;
        if self.token.client_id.is_empty() {
            return Err(RevokeError::Config("oauth client_id is empty".into()));
        }
        let token = self.read_token()?;
        let secret_path = &self.token.client_secret_file;
        let client_secret =
            read_secret_file(secret_path).map_err(|source| RevokeError::ReadSecret {
                what: "oauth client secret",
                path: secret_path.clone(),
                source,
            })?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            http::form_encode(&self.token.client_id),
            http::form_encode(client_secret.expose())
        ));
        let mut form = vec![("token", token.expose())];
        if let Some(hint) = &self.token.token_type_hint {
            form.push(("token_type_hint", hint.as_str()));
        }
        let reply = agent
            .post(url)
            .header("Authorization", format!("Basic {basic}"))
            .header("Accept", "application/json")
            .send_form(form);
        let (status, _) = http::finish(url, reply, &[200], &[&token, &client_secret])?;
        Ok(Done {
            status,
            note: format!(
                "{} revoked (HTTP {status}; an already invalid token also answers 200)",
                self.target()
            ),
        })
    }
}
