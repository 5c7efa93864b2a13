//! A bounded memo for results computed from strings that repeat (paths, names): the event path
//! asks the same costly question (does this path match these globs?) about the same few strings
//! over and over.
//!
//! Two generations of at most `cap` entries each: when the young one is full, the old one is
//! dropped and the young one takes its place, and a hit in the old one moves back to the young.
//! Strings in steady use stay; memory stays bounded by `2 * cap` entries.

use foldhash::HashMap;

pub struct RecentMemo<V> {
    young: HashMap<Box<str>, V>,
    old: HashMap<Box<str>, V>,
    cap: usize,
}

impl<V> RecentMemo<V> {
    pub fn new(cap: usize) -> Self {
        Self {
            young: HashMap::default(),
            old: HashMap::default(),
            cap: cap.max(1),
        }
    }

    /// Calls `f` with the value remembered for `key`, computing and remembering it first with
    /// `compute` when there is none. `compute` must be a pure function of `key`.
    pub fn with<R>(
        &mut self,
        key: &str,
        compute: impl FnOnce() -> V,
        f: impl FnOnce(&V) -> R,
    ) -> R {
        if let Some(v) = self.young.get(key) {
            return f(v);
        }
        let (key, value) = self
            .old
            .remove_entry(key)
            .unwrap_or_else(|| (key.into(), compute()));
        let r = f(&value);
        if self.young.len() >= self.cap {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
        r
    }

    /// Entries held (at most `2 * cap`).
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_per_string_in_use_and_stays_bounded() {
        let mut memo = RecentMemo::new(4);
        let computed = std::cell::Cell::new(0);
        let ask = |memo: &mut RecentMemo<usize>, s: &str| {
            memo.with(
                s,
                || {
                    computed.set(computed.get() + 1);
                    s.len()
                },
                |v| *v,
            )
        };
        assert_eq!(ask(&mut memo, "/etc/passwd"), 11);
        assert_eq!(ask(&mut memo, "/etc/passwd"), 11);
        assert_eq!(computed.get(), 1);
        // Many other strings pass by; the one in steady use keeps its entry.
        for i in 0..100 {
            ask(&mut memo, &format!("/tmp/{i}"));
            assert_eq!(ask(&mut memo, "/etc/passwd"), 11);
            assert!(memo.len() <= 8);
        }
        assert_eq!(computed.get(), 101);
    }
}
