use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use super::{FORMAT_VERSION, MAGIC, MAX_HEADER_LEN, MAX_RECORD_LEN, TraceHeader, bincode_config};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("not an agent-monitor trace (bad magic at offset 0)")]
    BadMagic,
    #[error(
        "trace format version {found} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    UnknownVersion { found: u32 },
    #[error("corrupt trace header at offset {offset}: {reason}")]
    BadHeader { offset: u64, reason: String },
    #[error("trace truncated at offset {offset}: {what} is incomplete")]
    Truncated { offset: u64, what: &'static str },
    #[error("corrupt record at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("reading trace at offset {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

/// Reads a trace file record by record, checking every record's length and CRC.
pub struct TraceReader<R: Read> {
    input: R,
    header: TraceHeader,
    offset: u64,
}

impl TraceReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|source| TraceError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufReader::with_capacity(1 << 20, file))
    }
}

impl<R: Read> TraceReader<R> {
    pub fn new(mut input: R) -> Result<Self, TraceError> {
        let mut magic = [0u8; 8];
        match read_full(&mut input, &mut magic, 0)? {
            Full::Yes if &magic == MAGIC => {}
            _ => return Err(TraceError::BadMagic),
        }
        let mut len = [0u8; 4];
        if read_full(&mut input, &mut len, 8)? != Full::Yes {
            return Err(TraceError::Truncated {
                offset: 8,
                what: "header length",
            });
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_HEADER_LEN {
            return Err(TraceError::BadHeader {
                offset: 8,
                reason: format!("header length {len} exceeds {MAX_HEADER_LEN}"),
            });
        }
        let mut raw = vec![0u8; len as usize];
        if read_full(&mut input, &mut raw, 12)? != Full::Yes {
            return Err(TraceError::Truncated {
                offset: 12,
                what: "header",
            });
        }
        // The version is the first field: check it before trusting the rest of the layout.
        let (found, _): (u32, _) =
            bincode::decode_from_slice(&raw, bincode_config()).map_err(|e| {
                TraceError::BadHeader {
                    offset: 12,
                    reason: e.to_string(),
                }
            })?;
        if found != FORMAT_VERSION {
            return Err(TraceError::UnknownVersion { found });
        }
        let (header, _): (TraceHeader, _) =
            bincode::serde::decode_from_slice(&raw, bincode_config()).map_err(|e| {
                TraceError::BadHeader {
                    offset: 12,
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            input,
            header,
            offset: 12 + u64::from(len),
        })
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record into `buf`. `Ok(false)` at a clean end of file.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, TraceError> {
        let start = self.offset;
        let mut frame = [0u8; 8];
        match read_full(&mut self.input, &mut frame, start)? {
            Full::Empty => return Ok(false),
            Full::Partial => {
                return Err(TraceError::Truncated {
                    offset: start,
                    what: "record frame",
                });
            }
            Full::Yes => {}
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if len > MAX_RECORD_LEN {
            return Err(TraceError::Corrupt {
                offset: start,
                reason: format!("record length {len} exceeds {MAX_RECORD_LEN}"),
            });
        }
        buf.clear();
        buf.resize(len as usize, 0);
        if read_full(&mut self.input, buf, start + 8)? != Full::Yes {
            return Err(TraceError::Truncated {
                offset: start,
                what: "record",
            });
        }
        if crc32fast::hash(buf) != crc {
            return Err(TraceError::Corrupt {
                offset: start,
                reason: "checksum mismatch".into(),
            });
        }
        self.offset = start + 8 + u64::from(len);
        Ok(true)
    }
}

#[derive(PartialEq, Eq)]
enum Full {
    Yes,
    Partial,
    Empty,
}

/// Fills `buf`, telling a clean end of input before the first byte from one in the middle.
fn read_full(input: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<Full, TraceError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => return Ok(if got == 0 { Full::Empty } else { Full::Partial }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(TraceError::Io { offset, source }),
        }
    }
    Ok(Full::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceWriter;

    fn sample() -> Vec<u8> {
        let header = TraceHeader::for_this_host();
        let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
        w.write(b"first record").unwrap();
        w.write(b"second").unwrap();
        w.into_inner()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, TraceError> {
        let mut r = TraceReader::new(bytes)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while r.next_into(&mut buf)? {
            out.push(buf.clone());
        }
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let r = TraceReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().format_version, FORMAT_VERSION);
        assert!(!r.header().kernel_release.is_empty());
        assert_eq!(
            read_all(&bytes).unwrap(),
            vec![b"first record".to_vec(), b"second".to_vec()]
        );
    }

    #[test]
    fn every_truncation_is_an_error_naming_an_offset() {
        let bytes = sample();
        // Cutting exactly between records leaves a shorter but valid trace.
        let after_first = bytes.len() - (8 + 6);
        let after_header = after_first - (8 + 12);
        for cut in 0..bytes.len() {
            let result = read_all(&bytes[..cut]);
            if cut == after_header || cut == after_first {
                assert_eq!(
                    result.unwrap().len(),
                    usize::from(cut == after_first),
                    "cut at {cut}"
                );
                continue;
            }
            let err = result.expect_err(&format!("cut at {cut} must fail"));
            let msg = err.to_string();
            assert!(msg.contains("offset"), "cut at {cut}: {msg}");
        }
    }

    #[test]
    fn flipped_byte_in_a_record_is_reported_at_its_offset() {
        let mut bytes = sample();
        let n = bytes.len();
        bytes[n - 2] ^= 0x40;
        let err = read_all(&bytes).unwrap_err();
        let second_record_at = (n - (8 + 6)) as u64;
        assert!(
            matches!(err, TraceError::Corrupt { offset, .. } if offset == second_record_at),
            "{err}"
        );
    }

    #[test]
    fn unknown_version_and_bad_magic_are_refused() {
        let mut header = TraceHeader::for_this_host();
        header.format_version = 99;
        let w = TraceWriter::new(Vec::new(), &header).unwrap();
        let err = TraceReader::new(&w.into_inner()[..]).err().unwrap();
        assert!(
            matches!(err, TraceError::UnknownVersion { found: 99 }),
            "{err}"
        );
        let err = TraceReader::new(&b"GARBAGE!rest"[..]).err().unwrap();
        assert!(matches!(err, TraceError::BadMagic));
    }

    #[test]
    fn absurd_lengths_are_corruption_not_allocation() {
        let mut bytes = sample();
        let first_record = bytes.len() - (8 + 6) - (8 + 12);
        bytes[first_record..first_record + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_all(&bytes).unwrap_err();
        assert!(matches!(err, TraceError::Corrupt { offset, .. } if offset == first_record as u64));
    }
}
