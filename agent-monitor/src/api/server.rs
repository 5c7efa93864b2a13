//! Starting and stopping the API. Sockets, certificates and the audit log are opened before
//! `start` returns, so a mistake stops the daemon's start with an error naming the file; the
//! server then runs on its own thread and runtime, so a slow caller never delays the pipeline.

use std::{path::PathBuf, sync::Arc, thread::JoinHandle, time::Duration};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::Server;

use super::{
    ApiError,
    auth::Auth,
    config::ApiConfig,
    hub::{ApiSink, Hub},
    pb::agent_monitor_server::AgentMonitorServer,
    service::Service,
    tls,
    unix::{self, BoundSocket},
};
use crate::respond::{
    audit::{AuditConfig, AuditLog},
    flight::FlightRecorder,
};

/// How long open calls (watch streams) get to finish when the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the API serves from, besides its own configuration.
pub struct ApiContext {
    pub state_dir: PathBuf,
    pub audit: Option<AuditConfig>,
    pub flight: Arc<FlightRecorder>,
}

/// The running server; dropping it stops it and removes its socket.
pub struct ApiServer {
    hub: Arc<Hub>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    socket: Option<BoundSocket>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.hub.close();
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("api: the server thread panicked");
        }
        if let Some(s) = &self.socket {
            s.remove();
        }
    }
}

/// Binds the configured listeners and starts serving; returns the response-stage sink that
/// feeds the API and keeps it running.
pub fn start(config: &ApiConfig, ctx: ApiContext) -> Result<ApiSink, ApiError> {
    let socket = config
        .socket
        .as_deref()
        .map(|path| unix::bind(path, config.socket_group.as_deref()))
        .transpose()?;
    let tcp = match &config.tcp {
        Some(tcp) => {
            let tls = tls::server_config(tcp)?;
            let listener =
                std::net::TcpListener::bind(tcp.listen).map_err(|e| ApiError::Listen {
                    addr: tcp.listen,
                    reason: e.to_string(),
                })?;
            listener
                .set_nonblocking(true)
                .map_err(|e| ApiError::Listen {
                    addr: tcp.listen,
                    reason: e.to_string(),
                })?;
            Some((listener, tls))
        }
        None => None,
    };
    let audit = ctx.audit.as_ref().map(AuditLog::from_config).transpose()?;
    let hub = Arc::new(Hub::default());
    let auth = Arc::new(Auth::new(config.principals.clone(), audit));
    let service = Service {
        hub: hub.clone(),
        auth: auth.clone(),
        flight: ctx.flight,
        state_dir: ctx.state_dir,
        release_wait: Duration::from_secs(config.release_wait_secs),
    };
    let unix_listener = socket
        .as_ref()
        .map(|s| s.listener.try_clone())
        .transpose()
        .map_err(|e| ApiError::Runtime(e.to_string()))?;
    let where_ = [
        socket.as_ref().map(|s| s.path.display().to_string()),
        config.tcp.as_ref().map(|t| format!("{} (mTLS)", t.listen)),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" and ");
    let (stop, stopped) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApiError::Runtime(e.to_string()))?;
    let thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || rt.block_on(serve(service, unix_listener, tcp, auth, stopped)))
        .map_err(|e| ApiError::Runtime(e.to_string()))?;
    log::info!("api: serving on {where_}");
    Ok(ApiSink {
        hub: hub.clone(),
        _server: Some(ApiServer {
            hub,
            stop,
            thread: Some(thread),
            socket,
        }),
    })
}

async fn serve(
    service: Service,
    unix: Option<std::os::unix::net::UnixListener>,
    tcp: Option<(
        std::net::TcpListener,
        Arc<tokio_rustls::rustls::ServerConfig>,
    )>,
    auth: Arc<Auth>,
    stopped: watch::Receiver<bool>,
) {
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let unix_server = async {
        let Some(listener) = unix else { return };
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return log::error!("api: unix socket: {e}"),
        };
        let result = Server::builder()
            .add_service(AgentMonitorServer::new(service.clone()))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                signal(stopped.clone()),
            )
            .await;
        if let Err(e) = result {
            log::error!("api: unix socket server: {e}");
        }
    };
    let tcp_server = async {
        let Some((listener, tls)) = tcp else { return };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => return log::error!("api: tcp: {e}"),
        };
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio::spawn(tls::accept(listener, tls, auth.clone(), tx));
        let result = Server::builder()
            .add_service(AgentMonitorServer::new(service.clone()))
            .serve_with_incoming_shutdown(ReceiverStream::new(rx), signal(stopped.clone()))
            .await;
        acceptor.abort();
        if let Err(e) = result {
            log::error!("api: tcp server: {e}");
        }
    };
    let grace = async {
        signal(stopped.clone()).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = async { tokio::join!(unix_server, tcp_server) } => {}
        () = grace => log::warn!("api: calls still open at shutdown were cut"),
    }
}
