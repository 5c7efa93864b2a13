//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (liveness) and `/readyz`
//! (readiness). Probes answer 200 or 503 with a JSON body that names the failing checks.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;

use super::{Health, health::Report, latency};

#[derive(Clone)]
struct App {
    prometheus: PrometheusHandle,
    health: Health,
}

pub fn router(prometheus: PrometheusHandle, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(App { prometheus, health })
}

/// The recorder's series followed by the latency summaries.
pub fn render(prometheus: &PrometheusHandle) -> String {
    prometheus.run_upkeep();
    let mut text = prometheus.render();
    latency::render(&mut text);
    text
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&app.prometheus),
    )
}

fn answer(report: Report) -> impl IntoResponse {
    let status = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

async fn healthz(State(app): State<App>) -> impl IntoResponse {
    answer(app.health.liveness())
}

async fn readyz(State(app): State<App>) -> impl IntoResponse {
    answer(app.health.readiness())
}
