//! The reader of the kernel ring buffer (`EVENTS`), with its data pages mapped once.
//!
//! The kernel lets a reader map the data area twice in a row, so that a record that wraps past
//! the end reads as one slice; aya's `RingBuf` maps it so, and each page is then counted twice in
//! the daemon's RSS (8 MiB for the default 4 MiB buffer, PERF-ANCHORS row 7). Mapped once, a
//! record that wraps is copied into the batch in two pieces, and the batch copies every record
//! anyway. The protocol is the kernel's (`kernel/bpf/ringbuf.c`): the first page holds the
//! consumer position (the only part a reader may write), the second the producer position, then
//! the data; each record starts on 8 bytes with a header whose length word carries a busy bit
//! (still being written: stop there) and a discard bit (skip it).

use std::{
    os::fd::{AsFd as _, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use anyhow::Context as _;
use aya::maps::MapData;

use super::Batch;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

pub struct RingReader {
    /// Owns the map's fd, which the mappings and the reader's readiness use.
    map: MapData,
    /// The consumer position's page (read-write).
    consumer: Mapping,
    /// The producer position's page followed by the data area, once (read-only).
    producer: Mapping,
    page: usize,
    /// Data bytes: a power of two, a multiple of the page size.
    size: usize,
    /// Highest fill seen since the last [`RingReader::take_max_fill`].
    max_fill: f64,
}

impl RingReader {
    pub fn new(map: MapData) -> anyhow::Result<Self> {
        let size = map
            .info()
            .context("reading the ring buffer's size")?
            .max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page =
            usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).context("page size")?;
        anyhow::ensure!(
            size.is_power_of_two() && size.is_multiple_of(page),
            "ring buffer of {size} bytes: the kernel makes them a power of two of pages"
        );
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)
            .context("mapping the ring buffer's consumer position")?;
        let producer = Mapping::new(fd, page + size, libc::PROT_READ, page)
            .context("mapping the ring buffer's data")?;
        Ok(Self {
            map,
            consumer,
            producer,
            page,
            size,
            max_fill: 0.0,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped for the life of `self`; the position is a 64-bit word at
        // its start, written only by this reader.
        unsafe { self.consumer.ptr.cast::<AtomicU64>().as_ref() }
    }

    fn producer_pos(&self) -> u64 {
        // SAFETY: as above; the kernel publishes the position with a release store.
        unsafe { self.producer.ptr.cast::<AtomicU64>().as_ref() }.load(Ordering::Acquire)
    }

    /// The length word of the record header at `at` of the data area.
    fn header(&self, at: usize) -> u32 {
        // SAFETY: `at` is a multiple of 8 below `size` (records start on 8 bytes), so the word
        // lies in the mapped area; the kernel commits a record with a release store to it.
        let word = unsafe {
            &*self
                .producer
                .ptr
                .as_ptr()
                .add(self.page + at)
                .cast::<AtomicU32>()
        };
        word.load(Ordering::Acquire)
    }

    /// The data area, once.
    fn data(&self) -> &[u8] {
        // SAFETY: `size` bytes are mapped after the producer page for the life of `self`. The
        // kernel writes only past the consumer position, and a record is read only once its
        // header says it is complete.
        unsafe { std::slice::from_raw_parts(self.producer.ptr.as_ptr().add(self.page), self.size) }
    }

    /// Bytes written and not yet consumed, as a share of the buffer (0 to 1).
    fn fill(&self) -> f64 {
        let used = self
            .producer_pos()
            .saturating_sub(self.consumer_pos().load(Ordering::Acquire));
        (used as f64 / self.size as f64).min(1.0)
    }

    /// The highest fill seen at a drain since the last call.
    pub fn take_max_fill(&mut self) -> f64 {
        std::mem::take(&mut self.max_fill)
    }

    /// Moves complete records into `out` until the ring is empty (false) or `out` has grown by
    /// `limit` bytes (true: records may be waiting).
    pub fn drain(&mut self, out: &mut Batch, limit: usize) -> bool {
        self.max_fill = self.max_fill.max(self.fill());
        let stop = out.bytes() + limit;
        let mut pos = self.consumer_pos().load(Ordering::Relaxed);
        let mut producer = self.producer_pos();
        while out.bytes() < stop {
            if pos >= producer {
                // Records committed since the first look are taken in this drain too.
                producer = self.producer_pos();
                if pos >= producer {
                    return false;
                }
            }
            let at = pos as usize & (self.size - 1);
            let header = self.header(at);
            if header & BUSY != 0 {
                return false;
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            if header & DISCARD == 0 {
                let (first, second) = pieces(self.data(), at + HEADER, len);
                out.push_parts(first, second);
            }
            pos += (HEADER + len).next_multiple_of(8) as u64;
            // Each record's room goes back to the kernel at once, as libbpf and aya do.
            self.consumer_pos().store(pos, Ordering::Release);
        }
        true
    }
}

/// The `len` bytes at `start` of a ring's data area, which wrap past its end into a second piece.
fn pieces(data: &[u8], start: usize, len: usize) -> (&[u8], &[u8]) {
    let start = start & (data.len() - 1);
    let first = len.min(data.len() - start);
    (&data[start..start + first], &data[..len - first])
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

/// One shared mapping of the map's memory, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the reader and used only through it.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> std::io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
        // SAFETY: a fresh shared mapping of a map fd we hold; the kernel checks the length,
        // offset and protection against the ring buffer's layout (MAP_FAILED otherwise).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn a_record_that_wraps_comes_in_two_pieces() {
        let data: Vec<u8> = (0..32).collect();
        assert_eq!(pieces(&data, 8, 4), (&data[8..12], &[][..]));
        assert_eq!(pieces(&data, 28, 4), (&data[28..32], &[][..]));
        assert_eq!(pieces(&data, 28, 10), (&data[28..32], &data[..6]));
        // A position past the end is taken modulo the size (the header was at the last 8 bytes).
        assert_eq!(pieces(&data, 32, 3), (&data[..3], &[][..]));
    }
}
