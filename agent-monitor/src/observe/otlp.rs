//! OTLP export over gRPC: a logger provider for the findings and actions ([`super::OtlpSink`])
//! and a meter provider that receives every `metrics` macro call through a bridge recorder
//! (see [`super::recorder`]). Both carry the same resource: the daemon (`service.*`) and the
//! node (`host.name`, `k8s.node.name`).
//!
//! The SDK exports from its own threads; the tonic channels they use run on the observability
//! runtime, so [`Otlp::start`] must be called inside it.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_otlp::{LogExporter, MetricExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, SdkLogger, SdkLoggerProvider},
    metrics::{
        PeriodicReader, SdkMeterProvider, Temporality, data::ResourceMetrics,
        exporter::PushMetricExporter,
    },
};

use super::{OtlpConfig, names};

/// Scope name of the logger and meter.
pub const SCOPE: &str = "agent-monitor";
/// Time allowed for one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Otlp {
    logs: SdkLoggerProvider,
    metrics: SdkMeterProvider,
}

/// The daemon's resource attributes.
pub fn resource(config: &OtlpConfig, instance_id: &str) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", instance_id.to_owned()),
    ];
    if let Some(host) = hostname() {
        attrs.push(KeyValue::new("host.name", host));
    }
    let node = config
        .node
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()));
    if let Some(node) = node {
        attrs.push(KeyValue::new("k8s.node.name", node));
    }
    Resource::builder()
        .with_service_name("agent-monitor")
        .with_attributes(attrs)
        .build()
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A random (version 4) UUID: this daemon process's `service.instance.id`.
pub fn instance_id() -> String {
    let mut b = [0u8; 16];
    // Without randomness the id is still unique enough per node and start: fall back to the
    // time and process id.
    if getrandom::fill(&mut b).is_err() {
        let t = crate::clock::boot_ns().to_le_bytes();
        b[..8].copy_from_slice(&t);
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Otlp {
    pub fn start(config: &OtlpConfig, resource: &Resource) -> anyhow::Result<Self> {
        let logs = LogExporter::builder()
            .with_tonic()
            .with_endpoint(&config.endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("observability.otlp: log exporter to {}", config.endpoint))?;
        let logs = Reported::new(logs, "logs");
        let metrics = MetricExporter::builder()
            .with_tonic()
            .with_endpoint(&config.endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| {
                format!("observability.otlp: metric exporter to {}", config.endpoint)
            })?;
        let reader = PeriodicReader::builder(Reported::new(metrics, "metrics"))
            .with_interval(Duration::from_secs(config.interval_secs))
            .build();
        Ok(Self {
            logs: SdkLoggerProvider::builder()
                .with_resource(resource.clone())
                .with_batch_exporter(logs)
                .build(),
            metrics: SdkMeterProvider::builder()
                .with_resource(resource.clone())
                .with_reader(reader)
                .build(),
        })
    }

    pub fn logger(&self) -> SdkLogger {
        use opentelemetry::logs::LoggerProvider as _;
        self.logs.logger(SCOPE)
    }

    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.metrics.meter(SCOPE)
    }

    /// Exports what is pending and stops the exporters (blocks up to the export timeout).
    pub fn shutdown(&self) {
        if let Err(e) = self.logs.shutdown() {
            log::warn!("OTLP logs: {e}");
        }
        if let Err(e) = self.metrics.shutdown() {
            log::warn!("OTLP metrics: {e}");
        }
    }
}

/// An exporter whose failures are seen: counted in `agent_monitor_otlp_export_failures_total`
/// and logged when exporting starts failing and when it works again (not at every batch).
#[derive(Debug)]
pub struct Reported<E> {
    inner: E,
    signal: &'static str,
    failing: AtomicBool,
}

impl<E> Reported<E> {
    pub fn new(inner: E, signal: &'static str) -> Self {
        Self {
            inner,
            signal,
            failing: AtomicBool::new(false),
        }
    }

    fn note(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!("OTLP {}: exporting again", self.signal);
                }
            }
            Err(e) => {
                metrics::counter!(names::OTLP_FAILURES, "signal" => self.signal).increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "OTLP {}: export failed, data dropped: {e} (counted in {}; logged again \
                         once it works)",
                        self.signal,
                        names::OTLP_FAILURES
                    );
                }
            }
        }
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter for Reported<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Reported<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.note(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_export_is_counted() {
        use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // A loopback port where nothing listens.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exporter = {
            let _enter = rt.enter();
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(format!("http://127.0.0.1:{port}"))
                .with_timeout(Duration::from_secs(2))
                .build()
                .unwrap()
        };
        let provider = SdkLoggerProvider::builder()
            .with_simple_exporter(Reported::new(exporter, "logs"))
            .build();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let logger = provider.logger("test");
            let mut rec = logger.create_log_record();
            rec.set_body("x".into());
            logger.emit(rec);
        });
        let text = handle.render();
        assert!(
            text.contains(r#"agent_monitor_otlp_export_failures_total{signal="logs"} 1"#),
            "{text}"
        );
        drop(provider);
        rt.shutdown_background();
    }

    #[test]
    fn instance_ids_are_v4_uuids_and_differ() {
        let (a, b) = (instance_id(), instance_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn the_resource_names_the_daemon_and_the_node() {
        let config = OtlpConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            interval_secs: 10,
            node: Some("node-7".into()),
            token_key: None,
        };
        let r = resource(&config, "id-1");
        let get = |k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("agent-monitor"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(get("service.instance.id").as_deref(), Some("id-1"));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-7"));
        assert!(get("host.name").is_some());
    }
}
