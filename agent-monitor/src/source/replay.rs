//! Replays a trace file: the same raw records, in recorded order.

use std::{fs::File, io::BufReader, path::Path};

use super::{Batch, EventSource};
use crate::trace::{TraceError, TraceHeader, TraceReader};

/// Records handed to the pipeline per batch.
const BATCH_RECORDS: usize = 4096;

pub struct ReplaySource {
    reader: TraceReader<BufReader<File>>,
    record: Vec<u8>,
}

impl ReplaySource {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        Ok(Self {
            reader: TraceReader::open(path)?,
            record: Vec::new(),
        })
    }

    pub fn header(&self) -> &TraceHeader {
        self.reader.header()
    }
}

impl EventSource for ReplaySource {
    async fn next_batch(&mut self, batch: &mut Batch) -> anyhow::Result<bool> {
        batch.clear();
        while batch.len() < BATCH_RECORDS {
            if !self.reader.next_into(&mut self.record)? {
                return Ok(!batch.is_empty());
            }
            batch.push(&self.record);
        }
        Ok(true)
    }
}
