//! The channel to the daemon: its Unix socket, or TCP with mutual TLS.

use agent_monitor::api::pb::agent_monitor_client::AgentMonitorClient;
use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use super::{CtlArgs, read_pem};

pub async fn client(args: &CtlArgs) -> anyhow::Result<AgentMonitorClient<Channel>> {
    let channel = match &args.endpoint {
        Some(url) => tls(args, url).await?,
        None => {
            let path = args.socket.clone();
            // The URI is required by the API but unused: the connector opens the socket.
            Endpoint::try_from("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .with_context(|| format!("connecting to {}", args.socket.display()))?
        }
    };
    Ok(AgentMonitorClient::new(channel))
}

async fn tls(args: &CtlArgs, url: &str) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &args.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?));
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
    }
    if let Some(name) = &args.server_name {
        tls = tls.domain_name(name.clone());
    }
    Channel::from_shared(url.to_owned())
        .with_context(|| format!("endpoint {url:?}"))?
        .tls_config(tls)
        .with_context(|| format!("TLS for {url}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}
