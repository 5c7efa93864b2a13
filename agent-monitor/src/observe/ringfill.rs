//! How full the kernel ring buffer is: the consumer and producer positions live in the first
//! two pages of the map's memory, which the kernel lets any holder of the map map read-only.
//! Reading them is two loads, cheap enough to do before every drain.

use std::{
    os::fd::{AsFd, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// A read-only view of a BPF ring buffer's positions.
pub struct RingFill {
    base: NonNull<libc::c_void>,
    page: usize,
    size: u64,
    /// Highest fill seen since the last [`RingFill::take_max`].
    max: f64,
}

// SAFETY: the mapping is read-only, owned by this value, and read with atomic loads.
unsafe impl Send for RingFill {}

impl RingFill {
    /// Maps the position pages of the ring buffer behind `fd`, of `size` data bytes.
    pub fn new(fd: impl AsFd, size: u32) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::last_os_error())?;
        // SAFETY: a fresh shared read-only mapping of two pages of a map we hold open; the
        // kernel refuses it (MAP_FAILED) for anything that is not a ring buffer.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self {
            base,
            page,
            size: u64::from(size),
            max: 0.0,
        })
    }

    fn position(&self, page: usize) -> u64 {
        // SAFETY: both pages are mapped for the life of `self`; the kernel updates the
        // positions atomically, as 64-bit values at the start of each page.
        unsafe {
            let p = self.base.as_ptr().cast::<u8>().add(page * self.page);
            (*p.cast::<AtomicU64>()).load(Ordering::Acquire)
        }
    }

    /// Bytes written and not yet consumed, as a share of the buffer (0 to 1).
    pub fn fill(&self) -> f64 {
        let consumer = self.position(0);
        let producer = self.position(1);
        (producer.saturating_sub(consumer) as f64 / self.size as f64).min(1.0)
    }

    /// Samples the fill (call just before a drain, when it is highest).
    pub fn sample(&mut self) {
        self.max = self.max.max(self.fill());
    }

    /// The highest fill sampled since the last call.
    pub fn take_max(&mut self) -> f64 {
        std::mem::take(&mut self.max)
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.base.as_ptr(), 2 * self.page);
        }
    }
}
