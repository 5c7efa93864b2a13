//! Compact containers for an open window's distinct keys and syscall counts. Every agent that
//! did something keeps a window open, thousands at once (PERF-ANCHORS row 7): a sorted vector of
//! 8-byte entries holds a window's few dozen keys in a fraction of a hash table's room (buckets,
//! control bytes, growth headroom), and a lookup is a binary search over them.

use super::stats::MAX_DISTINCT;

/// Grows a full vector by a quarter (at least 8 entries) rather than doubling it: insertions
/// stay amortised O(1), and at most a fifth of the room is spare.
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(8));
    }
}

/// Distinct 63-bit keys (a 64-bit hash without its lowest bit), each with one flag, sorted; at
/// most [`MAX_DISTINCT`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeySet(Vec<u64>);

impl KeySet {
    fn find(&self, key: u64) -> Result<usize, usize> {
        self.0.binary_search_by(|e| (e >> 1).cmp(&(key >> 1)))
    }

    /// The flag kept with `key`, if the set holds it.
    pub fn get(&self, key: u64) -> Option<bool> {
        self.find(key).ok().map(|i| self.0[i] & 1 == 1)
    }

    /// Adds `key` with `flag`, unless the set holds it or is full.
    pub fn insert(&mut self, key: u64, flag: bool) {
        if self.0.len() >= MAX_DISTINCT {
            return;
        }
        if let Err(i) = self.find(key) {
            grow(&mut self.0);
            self.0.insert(i, (key & !1) | u64::from(flag));
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Counts by syscall number, sorted by number. Numbers are below 2^16 (the kernel counts 512)
/// and a window's count of one syscall below 2^32; a larger one saturates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyscallCounts(Vec<(u16, u32)>);

impl SyscallCounts {
    pub fn add(&mut self, nr: u32, count: u64) {
        let nr = u16::try_from(nr).unwrap_or(u16::MAX);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        match self.0.binary_search_by_key(&nr, |&(n, _)| n) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(count),
            Err(i) => {
                grow(&mut self.0);
                self.0.insert(i, (nr, count));
            }
        }
    }

    pub fn get(&self, nr: u32) -> u64 {
        u16::try_from(nr)
            .ok()
            .and_then(|nr| self.0.binary_search_by_key(&nr, |&(n, _)| n).ok())
            .map_or(0, |i| u64::from(self.0[i].1))
    }

    /// (number, count), by number.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.0.iter().map(|&(n, c)| (u32::from(n), u64::from(c)))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|&(_, c)| u64::from(c)).sum()
    }
}

/// Syscall id sequences by thread id, in the order the threads were first seen. A window holds
/// one to a few threads, so a short list searched in order takes less room than a hash table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sequences(Vec<(u32, Vec<u16>)>);

impl Sequences {
    /// The sequence of thread `tid`, empty when new.
    pub fn entry(&mut self, tid: u32) -> &mut Vec<u16> {
        let i = match self.0.iter().position(|(t, _)| *t == tid) {
            Some(i) => i,
            None => {
                self.0.push((tid, Vec::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    pub fn get(&self, tid: u32) -> Option<&[u16]> {
        self.0
            .iter()
            .find(|(t, _)| *t == tid)
            .map(|(_, s)| s.as_slice())
    }

    pub fn values(&self) -> impl Iterator<Item = &Vec<u16>> {
        self.0.iter().map(|(_, s)| s)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Vec<u16>> {
        self.0.iter_mut().map(|(_, s)| s)
    }

    /// Threads.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_flag_and_order() {
        let mut s = KeySet::default();
        for (k, f) in [
            (40u64, true),
            (8, false),
            (41, false),
            (1 << 63, true),
            (8, true),
        ] {
            s.insert(k, f);
        }
        // 40 and 41 are one 63-bit key; a key already held keeps its first flag.
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s.get(40), s.get(41), s.get(8), s.get(9), s.get(1 << 63)),
            (Some(true), Some(true), Some(false), Some(false), Some(true))
        );
        assert_eq!(s.get(16), None);
        assert!(s.0.is_sorted());
    }

    #[test]
    fn a_full_set_takes_no_more() {
        let mut s = KeySet::default();
        for k in 0..(MAX_DISTINCT as u64 + 10) {
            s.insert(k << 1, false);
        }
        assert_eq!(s.len(), MAX_DISTINCT);
        assert!(
            s.0.capacity() <= MAX_DISTINCT * 5 / 4 + 8,
            "{}",
            s.0.capacity()
        );
    }

    #[test]
    fn sequences_are_kept_per_thread() {
        let mut s = Sequences::default();
        s.entry(7).extend([1, 2]);
        s.entry(9).push(3);
        s.entry(7).push(4);
        assert_eq!(
            (s.get(7), s.get(9), s.get(8)),
            (Some(&[1, 2, 4][..]), Some(&[3][..]), None)
        );
        assert_eq!((s.len(), s.values().map(Vec::len).sum::<usize>()), (2, 4));
    }

    #[test]
    fn counts_add_up_by_number() {
        let mut c = SyscallCounts::default();
        for (nr, n) in [
            (257, 3),
            (0, 1),
            (257, 2),
            (1, 10),
            (70_000, 4),
            (70_001, 1),
        ] {
            c.add(nr, n);
        }
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            [(0, 1), (1, 10), (257, 5), (65_535, 5)]
        );
        assert_eq!((c.get(257), c.get(2), c.total()), (5, 0, 21));
        c.add(0, u64::MAX);
        assert_eq!(c.get(0), u64::from(u32::MAX));
    }
}
