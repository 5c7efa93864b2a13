//! The stages after the source: decode, attribute, and hand events to the sinks (JSON lines,
//! trace recording). Live and replay go through exactly this code.

use std::io::Write;

use crate::{
    event::{Event, decode},
    identity::Identities,
    source::{Batch, EventSource},
    trace::TraceWriter,
};

/// Counters reported at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub records: u64,
    pub events: u64,
    pub decode_errors: u64,
    pub unattributed: u64,
    pub kernel_lost: u64,
}

#[derive(Default)]
pub struct Pipeline {
    identities: Identities,
    json: Option<Box<dyn Write + Send>>,
    trace: Option<TraceWriter<Box<dyn Write + Send>>>,
    pub stats: Stats,
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

    pub fn process(&mut self, batch: &Batch) -> anyhow::Result<()> {
        for record in batch.iter() {
            self.stats.records += 1;
            if let Some(trace) = &mut self.trace {
                trace.write(record)?;
            }
            match decode(record) {
                Ok(mut event) => {
                    self.identities.attribute(&mut event);
                    self.observe(&event);
                    if let Some(out) = &mut self.json {
                        serde_json::to_writer(&mut *out, &event)?;
                        out.write_all(b"\n")?;
                    }
                }
                Err(e) => {
                    self.stats.decode_errors += 1;
                    log::warn!("record {} not decoded: {e}", self.stats.records);
                }
            }
        }
        Ok(())
    }

    fn observe(&mut self, event: &Event) {
        self.stats.events += 1;
        if event.agent.is_none() {
            self.stats.unattributed += 1;
        }
        if let crate::event::Body::Lost { count, .. } = event.body {
            self.stats.kernel_lost += count;
        }
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(out) = &mut self.json {
            out.flush()?;
        }
        if let Some(trace) = &mut self.trace {
            trace.flush()?;
        }
        Ok(())
    }

    /// Runs `source` to its end (replay) or until `stop` resolves (live).
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
