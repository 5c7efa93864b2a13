use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use super::{MAGIC, TraceHeader, bincode_config};

/// Appends raw records to a trace file.
pub struct TraceWriter<W: Write> {
    out: W,
    records: u64,
}

impl TraceWriter<BufWriter<File>> {
    pub fn create(path: &Path, header: &TraceHeader) -> io::Result<Self> {
        Self::new(BufWriter::new(File::create(path)?), header)
    }
}

impl<W: Write> TraceWriter<W> {
    pub fn new(mut out: W, header: &TraceHeader) -> io::Result<Self> {
        let encoded = bincode::serde::encode_to_vec(header, bincode_config())
            .map_err(|e| io::Error::other(format!("encoding trace header: {e}")))?;
        out.write_all(MAGIC)?;
        out.write_all(&(encoded.len() as u32).to_le_bytes())?;
        out.write_all(&encoded)?;
        Ok(Self { out, records: 0 })
    }

    pub fn write(&mut self, record: &[u8]) -> io::Result<()> {
        self.out.write_all(&(record.len() as u32).to_le_bytes())?;
        self.out.write_all(&crc32fast::hash(record).to_le_bytes())?;
        self.out.write_all(record)?;
        self.records += 1;
        Ok(())
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}
