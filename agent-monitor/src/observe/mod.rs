//! Observability of the daemon itself: Prometheus metrics, liveness and readiness probes, and
//! OTLP export of findings, actions and metrics (docs/OBSERVABILITY.md).
//!
//! Everything recorded goes through the `metrics` facade (names in [`names`]); one global
//! recorder renders it for Prometheus and, with OTLP on, also hands it to an OpenTelemetry
//! meter (a fan-out of the two). The latencies are HDR histograms of their own ([`latency`]).
//! The HTTP endpoint and the OTLP exporters run on a small runtime of their own, so a slow
//! scrape or collector never holds up the event loop, and a stuck event loop shows in the
//! probes instead of hanging them.

mod actions;
pub mod config;
pub mod counters;
pub mod health;
mod http;
pub mod latency;
pub mod names;
pub mod otlp;
pub mod otlp_sink;
mod recorder;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;

pub use self::{
    actions::ActionMetrics,
    config::{ObservabilityConfig, OtlpConfig},
    counters::Observer,
    health::{Health, IdentitySource, Limits},
    otlp_sink::OtlpSink,
};
use crate::{config::Config, pipeline::Pipeline, respond::audit::Tokenizer};

/// The running observability of one daemon: dropping it stops the endpoint and flushes the
/// OTLP export.
pub struct Observability {
    runtime: Option<tokio::runtime::Runtime>,
    health: Health,
    otlp: Option<otlp::Otlp>,
    tokens: Option<Tokenizer>,
    policy: crate::respond::policy::PolicyConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    local_addr: Option<SocketAddr>,
}

impl Observability {
    /// Installs the metrics recorder and starts the endpoint and the export the configuration
    /// asks for; `None` when it asks for neither. Call once per process.
    pub fn start(config: &Config) -> anyhow::Result<Option<Self>> {
        let obs = &config.observability;
        if obs.listen.is_none() && obs.otlp.is_none() {
            return Ok(None);
        }
        let health = Health::new(Limits::for_intervals(
            Duration::from_millis(config.poll_interval_ms),
            Duration::from_millis(config.snapshot_interval_ms),
        ));
        // Bound here, before anything runs, so that a taken port stops the start with its key.
        let listener = match obs.listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("observability.listen: binding {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agent-monitor-obs")
            .enable_all()
            .build()
            .context("starting the observability runtime")?;
        let mut tokens = None;
        let otlp = match &obs.otlp {
            Some(o) => {
                let resource = otlp::resource(o, &otlp::instance_id());
                let _enter = runtime.enter();
                let key = o
                    .token_key
                    .as_ref()
                    .or(config.audit.as_ref().map(|a| &a.token_key));
                if let Some(key) = key {
                    tokens = Some(Tokenizer::load(key).with_context(|| {
                        format!("observability.otlp: token key {}", key.display())
                    })?);
                } else {
                    log::warn!(
                        "observability.otlp: no token key (observability.otlp.token_key or \
                         audit.token_key): agent ids are exported in clear"
                    );
                }
                let otlp = otlp::Otlp::start(o, &resource)?;
                log::info!("OTLP export to {} every {} s", o.endpoint, o.interval_secs);
                Some(otlp)
            }
            None => None,
        };
        let prometheus =
            recorder::install(listener.is_some(), otlp.as_ref().map(otlp::Otlp::meter))?;
        latency::install();
        if let Some(o) = &otlp {
            latency::export_to(&o.meter());
        }
        let mut local_addr = None;
        let mut stop = None;
        if let (Some(listener), Some(prometheus)) = (listener, prometheus) {
            local_addr = listener.local_addr().ok();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stop = Some(tx);
            let app = http::router(prometheus, health.clone());
            runtime.spawn(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("observability endpoint: {e}");
                        return;
                    }
                };
                let shutdown = async {
                    let _ = rx.await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    log::error!("observability endpoint stopped: {e}");
                }
            });
            if let Some(addr) = local_addr {
                log::info!("metrics and probes on http://{addr} (/metrics, /healthz, /readyz)");
            }
        }
        Ok(Some(Self {
            runtime: Some(runtime),
            health,
            otlp,
            tokens,
            policy: config.policy.clone(),
            stop,
            local_addr,
        }))
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Where the endpoint listens (with the port the system chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Hooks a pipeline up: its counters, the health of its live source, and (when it
    /// responds) the action metrics and the OTLP log export as response sinks.
    pub fn attach(&self, pipeline: Pipeline) -> Pipeline {
        let mut pipeline = pipeline.with_observer(Observer::new(
            self.policy.clone(),
            Some(self.health.clone()),
        ));
        if let Some(r) = pipeline.responder_mut() {
            r.add_sink(Box::new(ActionMetrics));
            if let Some(o) = &self.otlp {
                r.add_sink(Box::new(OtlpSink::new(o.logger(), self.tokens.clone())));
            }
        }
        pipeline
    }
}

impl Drop for Observability {
    fn drop(&mut self) {
        self.health.set_stopping();
        if let Some(o) = &self.otlp {
            o.shutdown();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Callable from inside the daemon's own runtime, unlike a plain drop.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
