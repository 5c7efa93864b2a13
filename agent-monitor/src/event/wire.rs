//! Byte-level access to the `#[repr(C)]` wire structs of `agent_monitor_common`.

/// Reads a wire struct from the front of `bytes`, or `None` if `bytes` is too short.
pub fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: `T: Pod` is valid for any bit pattern and the length was checked.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The bytes of a wire struct, as the kernel would have written them.
pub fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding bytes that could be uninitialised in our wire structs.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The text before the first NUL of a fixed-size buffer, lossily decoded.
pub fn c_str(bytes: &[u8]) -> String {
    let mut s = String::new();
    push_c_str(&mut s, bytes);
    s
}

/// Appends the text before the first NUL of a fixed-size buffer, lossily decoded, to `out`.
pub fn push_c_str(out: &mut String, bytes: &[u8]) {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    let text = &bytes[..end];
    // Valid UTF-8 (nearly every path) takes the fast validator; the lossy one walks chunk by chunk.
    match std::str::from_utf8(text) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(text)),
    }
}

/// Copies `s` into a fixed-size buffer, NUL-terminated (cut if needed).
pub fn put_c_str(dst: &mut [u8], s: &str) {
    let n = s.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    dst[n..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::{c_str, push_c_str};

    #[test]
    fn c_str_stops_at_nul_and_replaces_invalid_bytes() {
        assert_eq!(c_str(b"/etc/passwd\0junk"), "/etc/passwd");
        assert_eq!(c_str(b"no-nul"), "no-nul");
        assert_eq!(c_str(b"/tmp/\xff\xfex\0"), "/tmp/\u{fffd}\u{fffd}x");
        let mut reused = String::from("/old/longer/path");
        reused.clear();
        push_c_str(&mut reused, b"/new\0");
        assert_eq!(reused, "/new");
    }
}
