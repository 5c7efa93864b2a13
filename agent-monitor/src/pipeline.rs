//! The stages after the source: decode, attribute, detect, and hand events and findings to the
//! sinks (JSON lines, trace recording). Live and replay go through exactly this code.

use std::io::Write;

use crate::{
    detect::{Finding, engine::Detection},
    event::{Body, Decoder, Event},
    identity::Identities,
    respond::engine::{Responder, Response},
    source::{Batch, EventSource},
    trace::TraceWriter,
};

/// Records decided on before any of them is written out or windowed (see `Pipeline::process`).
const CHUNK: usize = 256;

/// How long the end of a run waits for forensic snapshots still being written.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Counters reported at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub records: u64,
    pub events: u64,
    pub decode_errors: u64,
    /// Events with an agent (announcements not counted).
    pub attributed: u64,
    pub unattributed: u64,
    pub kernel_lost: u64,
    /// Syscall ids delivered by the per-thread streams.
    pub syscall_ids: u64,
    /// Syscalls counted by the per-agent kernel counters.
    pub syscalls_counted: u64,
}

#[derive(Default)]
pub struct Pipeline {
    decoder: Decoder,
    /// The events a chunk of records is decoded into, kept between batches with their buffers.
    events: Vec<Event>,
    identities: Identities,
    json: Option<Box<dyn Write + Send>>,
    trace: Option<TraceWriter<Box<dyn Write + Send>>>,
    detection: Option<Detection>,
    /// Where findings go as JSON lines (`{"finding": {...}}`); `None`: to the event output.
    findings_out: Option<Box<dyn Write + Send>>,
    findings: Vec<Finding>,
    responder: Option<Responder>,
    flight: Option<std::sync::Arc<crate::respond::flight::FlightRecorder>>,
    /// Replay: time is the events' own; live: the boot clock closes idle windows.
    live_clock: bool,
    /// Latest event time seen.
    last_ts_ns: u64,
    pub stats: Stats,
    /// Attribution counts already published as metrics.
    published: (u64, u64),
    /// Metrics and health hooks (observability on).
    observer: Option<crate::observe::Observer>,
}

impl Pipeline {
    pub fn with_json(mut self, out: Box<dyn Write + Send>) -> Self {
        self.json = Some(out);
        self
    }

    pub fn with_trace(mut self, trace: TraceWriter<Box<dyn Write + Send>>) -> Self {
        self.trace = Some(trace);
        self
    }

    pub fn with_detection(mut self, detection: Detection) -> Self {
        self.detection = Some(detection);
        self
    }

    pub fn with_findings(mut self, out: Box<dyn Write + Send>) -> Self {
        self.findings_out = Some(out);
        self
    }

    pub fn with_responder(mut self, responder: Responder) -> Self {
        self.responder = Some(responder);
        self
    }

    /// Keeps each agent's last events for forensic snapshots.
    pub fn with_flight_recorder(
        mut self,
        flight: std::sync::Arc<crate::respond::flight::FlightRecorder>,
    ) -> Self {
        self.flight = Some(flight);
        self
    }

    /// Counts events, drops, findings and agents for the metrics (see `observe`).
    pub fn with_observer(mut self, observer: crate::observe::Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The health the live source reports to, when observability is on.
    pub fn health(&self) -> Option<&crate::observe::Health> {
        self.observer.as_ref().and_then(|o| o.health())
    }

    pub fn responder_mut(&mut self) -> Option<&mut Responder> {
        self.responder.as_mut()
    }

    pub fn with_live_clock(mut self) -> Self {
        self.live_clock = true;
        self
    }

    pub fn detection(&self) -> Option<&Detection> {
        self.detection.as_ref()
    }

    pub fn detection_mut(&mut self) -> Option<&mut Detection> {
        self.detection.as_mut()
    }

    /// Carries out the release requests the CLI left in the state directory.
    pub fn carry_out_releases(
        &mut self,
        state: &crate::respond::state::StateDir,
    ) -> anyhow::Result<()> {
        use crate::respond::state::{ReleaseResult, now_rfc3339};
        let Some(responder) = &mut self.responder else {
            return Ok(());
        };
        for request in state.pending_releases() {
            let actions =
                responder.release_with(&request.agent_id, &request.approvers, &request.reasons);
            if let Some(d) = &mut self.detection {
                d.set_contained(&request.agent_id, false);
            }
            log::warn!(
                "release: {} approved by {}; {} action(s) undone",
                request.agent_id,
                request.approvers.join(" and "),
                actions.len()
            );
            let result = ReleaseResult {
                request,
                actions,
                done: now_rfc3339(),
            };
            if let Some(out) = self.findings_out.as_mut().or(self.json.as_mut()) {
                serde_json::to_writer(&mut *out, &serde_json::json!({ "release": &result }))?;
                out.write_all(b"\n")?;
            }
            state.complete_release(&result)?;
        }
        Ok(())
    }

    /// Hands the actions that finished off the pipeline thread (forensic snapshots) to the
    /// sinks and the output; `wait`: at exit, how long to wait for those still running.
    pub fn collect_completed(&mut self, wait: Option<std::time::Duration>) -> anyhow::Result<()> {
        let Some(responder) = &mut self.responder else {
            return Ok(());
        };
        for done in responder.completed(wait) {
            log::warn!(
                "completed: {} [{}] {}={}",
                done.target.agent_id,
                done.target.class,
                done.outcome.action,
                if done.outcome.ok { "ok" } else { "FAILED" }
            );
            if let Some(out) = self.findings_out.as_mut().or(self.json.as_mut()) {
                serde_json::to_writer(&mut *out, &serde_json::json!({ "completed": done }))?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Reloads the rules from `dir` between two batches, so no event is skipped; a directory
    /// with any error leaves the rules in force unchanged.
    pub fn reload_rules(&mut self, dir: &std::path::Path) {
        let Some(detection) = &mut self.detection else {
            return;
        };
        match crate::detect::rules::RuleSet::load_dir(dir) {
            Ok(set) => {
                log::info!("rules reloaded from {}: {} rules", dir.display(), set.len());
                detection.reload_rules(set);
            }
            Err(e) => log::error!(
                "rules not reloaded, the {} rules in force stay: {e}",
                detection.rules().map_or(0, |r| r.len())
            ),
        }
    }

    /// Records are taken in chunks: every record of a chunk is decoded, attributed and run
    /// through the rules (a decision is acted on at once), then the chunk's events are written
    /// out and added to their windows. A containment thus waits neither for the rest of the
    /// batch nor for the output and windows of the records before it (PERF-ANCHORS row 6),
    /// and each stage still sees the events in order; a finding's line may come before its
    /// event's.
    pub fn process(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        let mut records = batch.iter().peekable();
        while records.peek().is_some() {
            let mut n = 0;
            for record in records.by_ref().take(CHUNK) {
                if events.len() == n {
                    events.push(Event::blank());
                }
                if self.decide(record, &mut events[n])? {
                    n += 1;
                }
            }
            for event in &events[..n] {
                self.record(event)?;
            }
        }
        self.events = events;
        let now = self.live_clock.then(crate::clock::boot_ns);
        if let Some(d) = &mut self.detection {
            d.tick(now, &mut self.findings);
        }
        let now = now.unwrap_or(self.last_ts_ns);
        self.emit_findings(now)?;
        if let Some(r) = &mut self.responder {
            let responses = r.tick(now);
            self.emit_responses(&responses)?;
        }
        self.publish_attribution();
        if let Some(o) = &mut self.observer {
            o.flush(self.responder.as_ref());
        }
        Ok(())
    }

    /// Decodes, attributes and runs the rules on one record, acting at once on what they
    /// find. False: the record did not decode.
    fn decide(&mut self, record: &[u8], event: &mut Event) -> anyhow::Result<bool> {
        self.stats.records += 1;
        if let Some(trace) = &mut self.trace {
            trace.write(record)?;
        }
        if let Err(e) = self.decoder.decode_into(record, event) {
            self.stats.decode_errors += 1;
            if let Some(o) = &mut self.observer {
                o.on_decode_error();
            }
            log::warn!("record {} not decoded: {e}", self.stats.records);
            return Ok(false);
        }
        self.identities.attribute(event);
        self.observe(event);
        if let Some(r) = &mut self.responder {
            r.on_event(event);
        }
        // Before any decision: a forensic snapshot must hold the offending event.
        if let Some(f) = &self.flight {
            f.push(event);
        }
        if let Some(d) = &mut self.detection {
            d.on_event_rules(event, &mut self.findings);
        }
        if !self.findings.is_empty() {
            self.emit_findings(event.ts_ns)?;
        }
        Ok(true)
    }

    /// Writes a decided event out and adds it to its window.
    fn record(&mut self, event: &Event) -> anyhow::Result<()> {
        if let Some(out) = &mut self.json {
            serde_json::to_writer(&mut *out, event)?;
            out.write_all(b"\n")?;
        }
        if let Some(d) = &mut self.detection {
            d.on_event_windows(event, &mut self.findings);
        }
        if !self.findings.is_empty() {
            self.emit_findings(event.ts_ns)?;
        }
        Ok(())
    }

    /// Publishes the metrics that are due without waiting for a batch (the agents gauge after a
    /// finding); the daemon calls it every 100 ms.
    pub fn flush_metrics(&mut self) {
        if let Some(o) = &mut self.observer {
            o.flush(self.responder.as_ref());
        }
    }

    /// Attribution counters and coverage (attributed / seen), once per batch.
    fn publish_attribution(&mut self) {
        let (a, u) = (self.stats.attributed, self.stats.unattributed);
        if (a, u) == self.published {
            return;
        }
        let (pa, pu) = std::mem::replace(&mut self.published, (a, u));
        let counter = |result: &'static str, n: u64| {
            if n > 0 {
                metrics::counter!("agent_monitor_attribution_events_total", "result" => result)
                    .increment(n);
            }
        };
        counter("attributed", a - pa);
        counter("unattributed", u - pu);
        if a + u > 0 {
            metrics::gauge!("agent_monitor_attribution_coverage").set(a as f64 / (a + u) as f64);
        }
    }

    /// Writes the pending findings and hands them to the response stage.
    fn emit_findings(&mut self, now_ns: u64) -> anyhow::Result<()> {
        if let Some(r) = &mut self.responder
            && !self.findings.is_empty()
        {
            let responses = r.on_findings(&self.findings, now_ns);
            if let Some(d) = &mut self.detection {
                for resp in &responses {
                    let contained = resp.decision.to == Some(crate::detect::Tier::Contain);
                    d.set_contained(&resp.target.agent_id, contained);
                }
            }
            self.emit_responses(&responses)?;
        }
        for finding in self.findings.drain(..) {
            if let Some(o) = &mut self.observer {
                o.on_finding(&finding);
            }
            log::warn!(
                "finding: {} [{}] {}",
                finding.agent_id,
                finding.class,
                finding.summary
            );
            let Some(out) = self.findings_out.as_mut().or(self.json.as_mut()) else {
                continue;
            };
            serde_json::to_writer(&mut *out, &serde_json::json!({ "finding": finding }))?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn emit_responses(&mut self, responses: &[Response]) -> anyhow::Result<()> {
        for r in responses {
            log::warn!(
                "decision: {} [{}] {:?} -> {:?} ({:?}); actions: {}",
                r.target.agent_id,
                r.target.class,
                r.decision.from,
                r.decision.to,
                r.decision.reason,
                r.actions
                    .iter()
                    .map(|a| format!("{}={}", a.action, if a.ok { "ok" } else { "FAILED" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let Some(out) = self.findings_out.as_mut().or(self.json.as_mut()) else {
                continue;
            };
            serde_json::to_writer(&mut *out, &serde_json::json!({ "response": r }))?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Closes the open windows (end of input) and reports what they show.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(d) = &mut self.detection {
            d.finish(&mut self.findings);
        }
        self.emit_findings(self.last_ts_ns)?;
        // A snapshot still being written is evidence the output and the SOC must get.
        self.collect_completed(Some(FINISH_WAIT))?;
        self.flush()
    }

    fn observe(&mut self, event: &Event) {
        self.stats.events += 1;
        if let Some(o) = &mut self.observer {
            o.on_event(event);
        }
        self.last_ts_ns = self.last_ts_ns.max(event.ts_ns);
        if event.agent.is_none() {
            self.stats.unattributed += 1;
        } else if !matches!(event.body, Body::AgentAdded(_) | Body::AgentRemoved(_)) {
            self.stats.attributed += 1;
        }
        match &event.body {
            Body::Lost { count, .. } => self.stats.kernel_lost += count,
            Body::Syscalls { ids } => self.stats.syscall_ids += ids.len() as u64,
            Body::SyscallCount { count, .. } => self.stats.syscalls_counted += count,
            _ => {}
        }
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(out) = &mut self.json {
            out.flush()?;
        }
        if let Some(out) = &mut self.findings_out {
            out.flush()?;
        }
        if let Some(trace) = &mut self.trace {
            trace.flush()?;
        }
        Ok(())
    }

    /// Runs `source` to its end (replay) or until `stop` resolves (live); the caller then calls
    /// [`Pipeline::finish`] once nothing more can arrive.
    pub async fn run<S: EventSource>(
        &mut self,
        source: &mut S,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut batch = Batch::default();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                more = source.next_batch(&mut batch) => {
                    if !more? {
                        break;
                    }
                    self.process(&batch)?;
                }
                () = &mut stop => break,
            }
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use agent_monitor_common::{
        AGENT_CLASS_LEN, AGENT_ID_LEN, AgentRecord, EventHeader, ExitEvent, PATH_LEN, kind,
    };
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::event::wire::{bytes_of, put_c_str};

    fn header(kind: u16, cgroup_id: u64) -> EventHeader {
        EventHeader {
            kind,
            flags: 0,
            slot: 0,
            ts_ns: 1,
            cgroup_id,
            tgid: 1,
            tid: 1,
        }
    }

    #[test]
    fn attribution_counters_and_coverage_are_published_per_batch() {
        let mut added = AgentRecord {
            header: header(kind::AGENT_ADDED, 5),
            id: [0; AGENT_ID_LEN],
            class: [0; AGENT_CLASS_LEN],
            cgroup_path: [0; PATH_LEN],
        };
        put_c_str(&mut added.id, "a");
        put_c_str(&mut added.class, "fraud");
        let exit = |cg| ExitEvent {
            header: header(kind::EXIT, cg),
            ..ExitEvent::default()
        };
        let mut batch = Batch::default();
        batch.push(bytes_of(&added));
        for cg in [5, 5, 5, 6] {
            batch.push(bytes_of(&exit(cg)));
        }
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut pipeline = Pipeline::default();
        metrics::with_local_recorder(&recorder, || pipeline.process(&batch)).unwrap();
        assert_eq!(
            (pipeline.stats.attributed, pipeline.stats.unattributed),
            (3, 1)
        );
        let values: Vec<(String, Vec<String>, DebugValue)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| {
                let key = k.key();
                let labels = key.labels().map(|l| format!("{}={}", l.key(), l.value()));
                (key.name().to_owned(), labels.collect(), v)
            })
            .collect();
        let get = |name: &str, label: Option<&str>| {
            values
                .iter()
                .find(|(n, l, _)| n == name && label.is_none_or(|x| l.iter().any(|y| y == x)))
                .map(|(_, _, v)| v)
        };
        let counter = "agent_monitor_attribution_events_total";
        assert_eq!(
            get(counter, Some("result=attributed")),
            Some(&DebugValue::Counter(3))
        );
        assert_eq!(
            get(counter, Some("result=unattributed")),
            Some(&DebugValue::Counter(1))
        );
        assert_eq!(
            get("agent_monitor_attribution_coverage", None),
            Some(&DebugValue::Gauge(0.75.into()))
        );
    }
}
