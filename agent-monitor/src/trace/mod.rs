//! Trace files: raw ring-buffer records with a versioned header.
//!
//! Layout (little endian):
//! ```text
//! "AMTRACE\0"                      8-byte magic
//! u32 header length, header        bincode of `TraceHeader`
//! repeated: u32 length, u32 crc32, record bytes
//! ```
//! A record's CRC covers its bytes, so a flipped bit is reported at the record's offset instead of
//! being decoded into a wrong event.

mod reader;
mod writer;

use serde::{Deserialize, Serialize};

pub use reader::{TraceError, TraceReader};
pub use writer::TraceWriter;

pub const MAGIC: &[u8; 8] = b"AMTRACE\0";
/// Version of the file layout and of the wire structs it carries. Bump when either changes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest record accepted; anything longer is corruption.
pub const MAX_RECORD_LEN: u32 = 64 * 1024;
/// Largest header accepted.
pub const MAX_HEADER_LEN: u32 = 64 * 1024;

/// Where and how a trace was recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    pub format_version: u32,
    pub agent_monitor_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub machine: String,
    /// `/proc/sys/kernel/random/boot_id`: boot-time stamps are comparable within one boot only.
    pub boot_id: String,
    pub created_unix_ms: u64,
}

impl TraceHeader {
    /// A header describing this host now.
    pub fn for_this_host() -> Self {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Self {
            format_version: FORMAT_VERSION,
            agent_monitor_version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: field(|u| u.nodename()),
            kernel_release: field(|u| u.release()),
            machine: field(|u| u.machine()),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ MAX_HEADER_LEN as usize }>()
}
