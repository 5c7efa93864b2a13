//! Observability end to end, as root against the real kernel: the daemon's probes answer once it
//! runs; a known workload in a monitored cgroup shows in /metrics (events by kind and class),
//! a containment rule shows as a finding, an action, an agent state and latencies; and an OTLP
//! receiver started here (the real gRPC services) gets the finding and action log records, with
//! the agent tokenised and the daemon's resource, and the metrics.

mod common;

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_monitor::respond::audit::Tokenizer;
use common::*;
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            ExportLogsServiceRequest, ExportLogsServiceResponse,
            logs_service_server::{LogsService, LogsServiceServer},
        },
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    logs::v1::LogRecord,
    metrics::v1::{metric::Data, number_data_point},
    resource::v1::Resource,
};

/// What the OTLP receiver got.
#[derive(Clone, Default)]
struct Receiver {
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.logs.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts the receiver on a loopback port the system picks.
fn otlp_receiver(rt: &tokio::runtime::Runtime) -> (SocketAddr, Receiver) {
    let receiver = Receiver::default();
    let r = receiver.clone();
    let addr = rt.block_on(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LogsServiceServer::new(r.clone()))
                .add_service(MetricsServiceServer::new(r))
                .serve_with_incoming(incoming),
        );
        addr
    });
    (addr, receiver)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (status, body) of a GET; any status is an answer.
fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut resp = agent.get(url).call().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.body_mut().read_to_string().ok()?))
}

/// The value of one series in a Prometheus text body.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls until `f` gives a value (10 s at most).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn check_resource(resource: Option<&Resource>) {
    let attrs = &resource.expect("a resource").attributes;
    assert_eq!(text(attrs, "service.name"), Some("agent-monitor"));
    assert_eq!(
        text(attrs, "service.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(text(attrs, "k8s.node.name"), Some("test-node-1"));
    assert!(
        text(attrs, "service.instance.id").is_some_and(|s| s.len() == 36),
        "{attrs:?}"
    );
    assert!(
        text(attrs, "host.name").is_some_and(|s| !s.is_empty()),
        "{attrs:?}"
    );
}

/// Every log record received, with its resource checked.
fn records(receiver: &Receiver) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for req in receiver.logs.lock().unwrap().iter() {
        for rl in &req.resource_logs {
            check_resource(rl.resource.as_ref());
            for sl in &rl.scope_logs {
                out.extend(sl.log_records.iter().cloned());
            }
        }
    }
    out
}

/// The latest value of a metric data point with these attributes, across every export.
fn exported(receiver: &Receiver, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut value = None;
    for req in receiver.metrics.lock().unwrap().iter() {
        for rm in &req.resource_metrics {
            check_resource(rm.resource.as_ref());
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                if m.name != name {
                    continue;
                }
                let points = match &m.data {
                    Some(Data::Sum(s)) => &s.data_points,
                    Some(Data::Gauge(g)) => &g.data_points,
                    Some(Data::Histogram(h)) => {
                        value = h.data_points.last().map(|p| p.count as f64).or(value);
                        continue;
                    }
                    _ => continue,
                };
                for p in points {
                    if want.iter().all(|(k, v)| text(&p.attributes, k) == Some(*v)) {
                        value = match p.value {
                            Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
                            Some(number_data_point::Value::AsDouble(d)) => Some(d),
                            None => value,
                        };
                    }
                }
            }
        }
    }
    value
}

#[test]
fn metrics_probes_and_otlp_show_a_known_workload_and_a_containment() {
    let cgroups = TestCgroups::new("observability");
    let agent = cgroups.dir("agents/fraud/fraud-obs");
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (otlp, receiver) = otlp_receiver(&rt);
    let keys = tmp.path().join("keys");
    let status = Command::new(BIN)
        .args(["audit", "keygen", "--dir"])
        .arg(&keys)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        keys.join("webhook.key"),
        b"a webhook key of at least 32 bytes!",
    )
    .unwrap();
    let token_key = keys.join("audit-token.key");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let port = free_port();
    // A SOC endpoint where nothing listens: the ticket stays in the outbox.
    let soc = free_port();
    let config = format!(
        "watch: [{}]\nrescan_interval_ms: 50\n\
         detection:\n  models_dir: {}\n  rules_dir: {}\n\
         webhook: {{url: 'http://127.0.0.1:{soc}/t', key_file: {}, outbox_dir: {}, retry_initial_ms: 60000}}\n\
         observability:\n  listen: '127.0.0.1:{port}'\n  \
         otlp: {{endpoint: 'http://{otlp}', interval_secs: 1, node: test-node-1, token_key: {}}}\n",
        cgroups.root.join("agents").display(),
        tmp.path().join("no-models").display(),
        rules.display(),
        keys.join("webhook.key").display(),
        tmp.path().join("outbox").display(),
        token_key.display(),
    );
    let daemon = Daemon::start(tmp.path(), &config, None);
    let base = format!("http://127.0.0.1:{port}");

    // Probes: ready once the programs are attached, the maps read and the ring buffer drained.
    let (_, ready) = wait_for("/readyz 200", || {
        get(&format!("{base}/readyz")).filter(|(s, _)| *s == 200)
    });
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["status"], "ok", "{ready:#}");
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for check in [
        "programs_attached",
        "maps_readable",
        "ring_buffer_drained",
        "identity_in_sync:cgroups",
    ] {
        assert!(names.contains(&check), "{check} in {ready:#}");
    }
    let (status, live) = get(&format!("{base}/healthz")).expect("/healthz answers");
    assert_eq!(status, 200, "{live}");

    // A known workload: N opens of one file by the agent.
    let file = tmp.path().join("data.txt");
    std::fs::write(&file, b"x").unwrap();
    const N: usize = 25;
    let steps = vec![format!("read:{}", file.display()); N];
    let (_, code) = workload_in(&agent, &steps);
    assert_eq!(code, 0);
    let metrics = || {
        get(&format!("{base}/metrics"))
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let opens = wait_for("open events counted", || {
        series(
            &metrics(),
            r#"agent_monitor_events_total{kind="open",class="fraud"}"#,
        )
        .filter(|&v| v >= N as f64)
    });
    assert!(opens >= N as f64);

    // A containment rule fires.
    let (_, _) = workload_in(
        &agent,
        &["read:/var/run/secrets/kubernetes.io/serviceaccount/token".into()],
    );
    let body = wait_for("containment counted", || {
        let body = metrics();
        (series(
            &body,
            r#"agent_monitor_agents{class="fraud",state="contain"}"#,
        ) == Some(1.0))
        .then_some(body)
    });
    let v = |name: &str| series(&body, name).unwrap_or_else(|| panic!("{name} in\n{body}"));
    assert!(v(r#"agent_monitor_findings_total{tier="contain",source="rule"}"#) >= 1.0);
    assert_eq!(
        v(r#"agent_monitor_actions_total{action="deny_all",tier="contain",result="ok"}"#),
        1.0
    );
    assert!(v(r#"agent_monitor_events_total{kind="agent_added",class="fraud"}"#) >= 1.0);
    assert_eq!(
        v(r#"agent_monitor_userspace_drops_total{reason="decode_error"}"#),
        0.0
    );
    assert_eq!(v("agent_monitor_webhook_outbox_depth"), 1.0);
    let fill = v("agent_monitor_ringbuf_fill_ratio");
    assert!((0.0..=1.0).contains(&fill), "{fill}");
    assert!(v("agent_monitor_event_to_decision_seconds_count") >= 1.0);
    assert_eq!(
        v("agent_monitor_decision_to_containment_seconds_count"),
        1.0
    );
    for q in ["0.5", "0.99"] {
        let name = format!("agent_monitor_decision_to_containment_seconds{{quantile=\"{q}\"}}");
        let seconds = v(&name);
        assert!(seconds.is_finite() && seconds >= 0.0, "{name} = {seconds}");
    }
    assert!(body.contains("# TYPE agent_monitor_event_to_decision_seconds summary"));

    // OTLP: the finding and the action as log records, the agent as its audit token.
    let token = Tokenizer::load(&token_key).unwrap().token("fraud-obs");
    let logs = wait_for("finding and action records", || {
        let logs = records(&receiver);
        let finding = logs.iter().any(|r| {
            r.event_name == "agent_monitor.finding"
                && text(&r.attributes, "agent_monitor.rule") == Some("credential-read")
        });
        let action = logs
            .iter()
            .any(|r| text(&r.attributes, "agent_monitor.action") == Some("deny_all"));
        (finding && action).then_some(logs)
    });
    let finding = logs
        .iter()
        .find(|r| text(&r.attributes, "agent_monitor.rule") == Some("credential-read"))
        .unwrap();
    let a = &finding.attributes;
    assert_eq!(text(a, "agent_monitor.agent.id"), Some(token.as_str()));
    assert_eq!(text(a, "agent_monitor.agent.class"), Some("fraud"));
    assert_eq!(text(a, "agent_monitor.tier"), Some("contain"));
    assert_eq!(text(a, "agent_monitor.source"), Some("rule"));
    assert_eq!(
        attr(a, "agent_monitor.score"),
        Some(&Value::DoubleValue(1.0))
    );
    assert_eq!(
        (finding.severity_number, finding.severity_text.as_str()),
        (21, "FATAL")
    );
    assert!(finding.time_unix_nano > 0);
    let action = logs
        .iter()
        .find(|r| text(&r.attributes, "agent_monitor.action") == Some("deny_all"))
        .unwrap();
    assert_eq!(
        text(&action.attributes, "agent_monitor.action.result"),
        Some("ok")
    );
    assert_eq!(
        text(&action.attributes, "agent_monitor.tier"),
        Some("contain")
    );
    assert_eq!(
        text(&action.attributes, "agent_monitor.agent.id"),
        Some(token.as_str())
    );
    assert!(
        !format!("{logs:?}").contains("fraud-obs"),
        "the agent id is never exported in clear"
    );

    // OTLP: the metrics, through the same recorder.
    wait_for("metrics exported", || {
        let opens = exported(
            &receiver,
            "agent_monitor_events_total",
            &[("kind", "open"), ("class", "fraud")],
        )?;
        let contained = exported(
            &receiver,
            "agent_monitor_agents",
            &[("class", "fraud"), ("state", "contain")],
        )?;
        let latency = exported(
            &receiver,
            "agent_monitor_decision_to_containment_seconds",
            &[],
        )?;
        (opens >= N as f64 && contained == 1.0 && latency >= 1.0).then_some(())
    });

    let lines = daemon.stop();
    assert!(
        lines.iter().any(|l| l.get("finding").is_some()),
        "the finding is also in the JSON output"
    );
    drop(rt);
}
