//! Where raw records come from: the kernel (live) or a trace file (replay). Both hand the
//! pipeline the same bytes, so replay exercises decoding exactly as live capture does.

mod cgroup_watch;
pub mod hold;
mod live;
mod replay;
mod ring;
mod snapshots;

pub use hold::{HoldOptions, HoldStats};
pub use live::{LiveOptions, LiveSource};
pub use replay::ReplaySource;

/// A batch of raw records, stored back to back to avoid an allocation per record.
#[derive(Default, Debug)]
pub struct Batch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

/// Room a batch keeps for the next one. A ring buffer drain takes at most 256 KiB, but one
/// counter snapshot of thousands of agents that were all busy fills megabytes, which need not
/// stay allocated after it (PERF-ANCHORS row 7).
const KEEP_BYTES: usize = 512 << 10;

impl Batch {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.buf.shrink_to(KEEP_BYTES);
        // Every record has a 32-byte header.
        self.ends.shrink_to(KEEP_BYTES / 32);
    }

    pub fn push(&mut self, record: &[u8]) {
        self.buf.extend_from_slice(record);
        self.ends.push(self.buf.len());
    }

    /// One record given in two pieces (one that wrapped around the ring buffer's end).
    pub fn push_parts(&mut self, first: &[u8], second: &[u8]) {
        self.buf.extend_from_slice(first);
        self.buf.extend_from_slice(second);
        self.ends.push(self.buf.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes of all records together.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(s, e)| &self.buf[s..e])
    }

    /// The records, writable in place (the pipeline benchmark re-stamps a trace it replays many
    /// times).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let mut rest: &mut [u8] = &mut self.buf;
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let (record, tail) = std::mem::take(&mut rest).split_at_mut(end - start);
            rest = tail;
            start = end;
            record
        })
    }
}

/// A producer of raw records.
pub trait EventSource {
    /// Fills `batch` (after clearing it) with the next records. Returns `false` when the source is
    /// exhausted; a live source never is, and returns empty batches on its poll ticks.
    fn next_batch(
        &mut self,
        batch: &mut Batch,
    ) -> impl std::future::Future<Output = anyhow::Result<bool>>;
}

#[cfg(test)]
mod tests {
    use super::Batch;

    #[test]
    fn batch_keeps_record_boundaries() {
        let mut b = Batch::default();
        b.push(b"ab");
        b.push(b"");
        b.push(b"cde");
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![&b"ab"[..], b"", b"cde"]);
        for r in b.iter_mut() {
            r.reverse();
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![&b"ba"[..], b"", b"edc"]);
        b.clear();
        assert!(b.is_empty());
    }
}
