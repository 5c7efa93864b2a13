//! Per-class syscall-sequence model: the set of syscall n-grams seen in normal behaviour.
//!
//! STIDE-style (Forrest et al.): an n-gram never seen for the class is "novel", and a window or
//! trace scores by the fraction of its n-grams that are novel. It is numbering-agnostic: ids are
//! opaque `u16`s (x86_64 live, i386 in ADFA-LD); train and score within one numbering.
//!
//! It is cheap enough for every event: one [`ngram_hash`] over the last `n` ids and one hash-set
//! probe. The same hashes can be loaded into a kernel map ([`SequenceModel::known_hashes`]) so
//! that known n-grams are filtered in the kernel and normal behaviour emits nothing.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Largest supported n-gram length (the per-thread ring buffer is a fixed array).
pub const MAX_N: usize = 16;

/// FNV-1a 64-bit offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hash of one n-gram, the key of the known set and of any kernel map loaded from it.
///
/// Exactly: 64-bit FNV-1a over the ids in order, each id as two bytes little-endian:
/// `h = 0xcbf29ce484222325; for id in ids { for b in id.to_le_bytes() { h ^= b; h *= 0x100000001b3 (wrapping) } }`.
/// The length is not mixed in separately: a model holds n-grams of one length only.
#[must_use]
pub fn ngram_hash(ids: &[u16]) -> u64 {
    let mut h = FNV_OFFSET;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// Training parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceParams {
    /// n-gram length, clamped to `1..=MAX_N`. 6 is the classic STIDE choice and the best single
    /// length on ADFA-LD training data (docs/ANOMALY-MODELS.md).
    pub n: usize,
}

impl Default for SequenceParams {
    fn default() -> Self {
        Self { n: 6 }
    }
}

/// The known n-grams of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceModel {
    n: usize,
    known: HashSet<u64>,
}

/// Novel and total n-gram counts of a window or trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Novelty {
    pub novel: usize,
    pub total: usize,
}

impl Novelty {
    /// Fraction of n-grams never seen in training, in [0, 1]; 0 when there is no full n-gram.
    #[must_use]
    pub fn rate(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.novel as f64 / self.total as f64
        }
    }
}

impl SequenceModel {
    /// Learns every n-gram of the given sequences. Sequences shorter than `n` add nothing.
    pub fn train<'a, I>(sequences: I, params: SequenceParams) -> Self
    where
        I: IntoIterator<Item = &'a [u16]>,
    {
        let n = params.n.clamp(1, MAX_N);
        let mut known = HashSet::new();
        for seq in sequences {
            known.extend(seq.windows(n).map(ngram_hash));
        }
        Self { n, known }
    }

    /// The n-gram length.
    #[must_use]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of distinct known n-grams.
    #[must_use]
    pub fn len(&self) -> usize {
        self.known.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Whether an n-gram hash (see [`ngram_hash`]) was seen in training.
    #[must_use]
    pub fn contains(&self, hash: u64) -> bool {
        self.known.contains(&hash)
    }

    /// Novel and total n-gram counts of a window or trace.
    #[must_use]
    pub fn novelty(&self, seq: &[u16]) -> Novelty {
        let mut out = Novelty::default();
        for gram in seq.windows(self.n) {
            out.total += 1;
            if !self.known.contains(&ngram_hash(gram)) {
                out.novel += 1;
            }
        }
        out
    }

    /// Window or trace score in [0, 1]: the fraction of its n-grams never seen in training.
    #[must_use]
    pub fn score(&self, seq: &[u16]) -> f64 {
        self.novelty(seq).rate()
    }

    /// The known n-gram hashes, sorted, for loading into a kernel map (hash: [`ngram_hash`]).
    #[must_use]
    pub fn known_hashes(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.known.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// A fresh per-thread scorer for this model's n.
    #[must_use]
    pub fn thread_scorer(&self) -> ThreadScorer {
        ThreadScorer::new(self.n)
    }
}

/// Per-thread rolling state: the last `n` syscall ids of one thread.
#[derive(Clone, Debug)]
pub struct ThreadScorer {
    n: usize,
    ring: [u16; MAX_N],
    /// Ids seen so far, saturating at `n`.
    filled: usize,
    /// Next write position in `ring`.
    pos: usize,
}

impl ThreadScorer {
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self {
            n: n.clamp(1, MAX_N),
            ring: [0; MAX_N],
            filled: 0,
            pos: 0,
        }
    }

    /// Feeds one syscall id. Returns `None` until `n` ids were seen, then whether the n-gram
    /// ending at this id is novel for `model` (which must have the same n).
    pub fn push(&mut self, model: &SequenceModel, id: u16) -> Option<bool> {
        self.ring[self.pos] = id;
        self.pos = (self.pos + 1) % self.n;
        self.filled = (self.filled + 1).min(self.n);
        if self.filled < self.n {
            return None;
        }
        Some(!model.contains(self.current_hash()))
    }

    /// [`ngram_hash`] of the last n ids, oldest first (the ring is read from `pos`).
    fn current_hash(&self) -> u64 {
        let mut h = FNV_OFFSET;
        for i in 0..self.n {
            let id = self.ring[(self.pos + i) % self.n];
            for b in id.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(FNV_PRIME);
            }
        }
        h
    }

    /// Forgets the history (for example after execve).
    pub fn reset(&mut self) {
        self.filled = 0;
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_bytes() {
        // FNV-1a of the empty input is the offset basis; of bytes [0x01, 0x00] computed by hand.
        assert_eq!(ngram_hash(&[]), FNV_OFFSET);
        let mut h = FNV_OFFSET;
        for b in [1u8, 0u8] {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        assert_eq!(ngram_hash(&[1]), h);
        assert_ne!(ngram_hash(&[1, 2]), ngram_hash(&[2, 1]));
    }

    #[test]
    fn novelty_rate_counts_unseen_ngrams() {
        let train: Vec<Vec<u16>> = vec![vec![1, 2, 3, 4, 1, 2, 3, 4]];
        let m = SequenceModel::train(train.iter().map(Vec::as_slice), SequenceParams { n: 3 });
        assert_eq!(m.len(), 4);
        assert_eq!(m.score(&[1, 2, 3, 4, 1]), 0.0);
        // 2,3,9 and 3,9,1 are new; 9,1,2 is new; 1,2,3 known.
        let nov = m.novelty(&[2, 3, 9, 1, 2, 3]);
        assert_eq!(nov, Novelty { novel: 3, total: 4 });
        assert_eq!(m.score(&[1, 2]), 0.0);
    }

    #[test]
    fn thread_scorer_agrees_with_batch_scoring() {
        let train: Vec<Vec<u16>> = vec![vec![5, 6, 7, 5, 6, 7, 5]];
        let m = SequenceModel::train(train.iter().map(Vec::as_slice), SequenceParams { n: 3 });
        let live = [5u16, 6, 7, 5, 9, 7, 5, 6];
        let mut s = m.thread_scorer();
        let flags: Vec<Option<bool>> = live.iter().map(|&id| s.push(&m, id)).collect();
        assert_eq!(flags[..2], [None, None]);
        let novel = flags.iter().flatten().filter(|&&b| b).count();
        assert_eq!(novel, m.novelty(&live).novel);
        assert!(m.known_hashes().contains(&ngram_hash(&[5, 6, 7])));
    }

    #[test]
    fn model_round_trips_through_bincode() {
        let train: Vec<Vec<u16>> = vec![vec![1, 2, 3, 4, 5, 6, 7]];
        let m = SequenceModel::train(train.iter().map(Vec::as_slice), SequenceParams::default());
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&m, cfg).expect("encode");
        let (back, _): (SequenceModel, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).expect("decode");
        assert_eq!(back, m);
    }
}
