//! TCP with mutual TLS. The handshake is done here rather than inside the server so that a
//! client refused by it (no certificate, a certificate from another CA, not TLS at all) is
//! logged and audited like a refused call.

use std::{path::Path, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
};
use tonic::Code;

use super::{
    ApiError,
    auth::{Auth, Caller},
    config::TcpConfig,
};

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_err(path: &Path, reason: impl std::fmt::Display) -> ApiError {
    ApiError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, e))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The server's TLS configuration: its certificate and key, and client certificates required
/// and verified against `client_ca`. HTTP/2 only (gRPC).
pub fn server_config(tcp: &TcpConfig) -> Result<Arc<ServerConfig>, ApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs(&tcp.client_ca)? {
        roots.add(ca).map_err(|e| tls_err(&tcp.client_ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_err(&tcp.client_ca, e))?;
    let key = PrivateKeyDer::from_pem_file(&tcp.key).map_err(|e| tls_err(&tcp.key, e))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&tcp.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&tcp.cert)?, key)
        .map_err(|e| tls_err(&tcp.key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections, completes each handshake on its own task and hands the verified
/// streams to the server.
pub async fn accept(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    auth: Arc<Auth>,
    out: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                log::warn!("api: accept on {:?}: {e}", listener.local_addr());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, auth, out) = (acceptor.clone(), auth.clone(), out.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = out.send(Ok(stream)).await;
                }
                Ok(Err(e)) => {
                    let refused = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .is_some();
                    let caller = Caller::Anonymous { addr: Some(addr) };
                    if refused {
                        // The TLS layer refused the client: as much a refused call as any.
                        auth.refuse(
                            &caller,
                            None,
                            None,
                            "tls-handshake",
                            Code::Unauthenticated,
                            &e.to_string(),
                        );
                    } else {
                        log::debug!("api: connection from {addr} closed in the handshake: {e}");
                    }
                }
                Err(_) => log::debug!("api: handshake from {addr} timed out"),
            }
        });
    }
}
