//! The global `metrics` recorder: Prometheus, an OpenTelemetry bridge, or both through a
//! fan-out, so every macro call reaches every configured exporter.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_opentelemetry::{OpenTelemetryMetrics, OpenTelemetryRecorder};
use metrics_util::layers::FanoutBuilder;

use super::names;

/// Installs the recorder; the Prometheus handle when `prometheus` is asked for.
pub fn install(
    prometheus: bool,
    otel: Option<opentelemetry::metrics::Meter>,
) -> anyhow::Result<Option<PrometheusHandle>> {
    let prom = prometheus.then(|| PrometheusBuilder::new().build_recorder());
    let handle = prom.as_ref().map(|p| p.handle());
    let otel = otel.map(|m| OpenTelemetryRecorder::new(OpenTelemetryMetrics::new(m)));
    let installed = match (prom, otel) {
        (Some(p), Some(o)) => metrics::set_global_recorder(
            FanoutBuilder::default()
                .add_recorder(p)
                .add_recorder(o)
                .build(),
        )
        .map_err(|e| e.to_string()),
        (Some(p), None) => metrics::set_global_recorder(p).map_err(|e| e.to_string()),
        (None, Some(o)) => metrics::set_global_recorder(o).map_err(|e| e.to_string()),
        (None, None) => return Ok(None),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    names::describe();
    Ok(handle)
}
