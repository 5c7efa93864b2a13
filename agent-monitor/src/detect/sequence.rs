//! Per-class syscall-sequence model: the set of syscall n-grams seen in normal behaviour.
//!
//! STIDE-style (Forrest et al.): an n-gram never seen for the class is "novel", and a window or
//! trace scores by the fraction of its n-grams that are novel. It is numbering-agnostic: ids are
//! opaque `u16`s (x86_64 live, i386 in ADFA-LD); train and score within one numbering.
//!
//! It is cheap enough for every event: one [`ngram_hash`] over the last `n` ids and one hash-set
//! probe. The same hashes can be loaded into a kernel map ([`SequenceModel::known_hashes`]) so
//! that known n-grams are filtered in the kernel and normal behaviour emits nothing.

// foldhash, not SipHash: these sets are probed several times per syscall id when a window is
// scored. The serialised form (a sequence of entries) does not depend on the hasher.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
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

/// Parameters of the [`SurpriseModel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurpriseParams {
    /// Model order: each event is predicted from up to `order - 1` previous ids, clamped to
    /// `1..=MAX_N`. 6 had the lowest held-out surprise on ADFA-LD training traces
    /// (5-fold cross-validation within `training/`, docs/ANOMALY-MODELS.md).
    pub order: usize,
}

impl Default for SurpriseParams {
    fn default() -> Self {
        Self { order: 6 }
    }
}

/// Smoothed n-gram language model of normal syscall streams (Witten-Bell interpolation).
///
/// Where [`SequenceModel`] only says whether an n-gram was seen, this model says how unexpected
/// each event is given its context, backing off to shorter contexts: a novel 7-gram made of
/// familiar transitions (an idle loop interleaving `time` and `_newselect` in a new order) costs
/// little, a transition never seen even after one or two ids costs a lot. The score of a window
/// or trace is the mean surprise `-ln p(id | previous ids)` in nats per event.
///
/// `p_k(x | h) = (c(h x) + u(h) p_{k-1}(x | h')) / (c(h) + u(h))`, where `h'` is `h` without its
/// oldest id, `c` counts training occurrences, `u(h)` is the number of distinct ids seen after
/// `h`, and `p_0` is uniform over the training vocabulary plus one unseen id. Interpolation stops
/// at the longest context seen in training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SurpriseModel {
    order: usize,
    /// Distinct training ids + 1 (the unseen id).
    vocab: usize,
    /// Context hash -> (occurrences, distinct followers).
    contexts: HashMap<u64, (u32, u32)>,
    /// Hash of (context, next id) -> occurrences.
    events: HashMap<u64, u32>,
}

/// FNV-1a over the context length then the ids (contexts of different lengths never share a key).
fn context_hash(ctx: &[u16]) -> u64 {
    let mut h = FNV_OFFSET;
    let len = u16::try_from(ctx.len()).unwrap_or(u16::MAX);
    for id in std::iter::once(len).chain(ctx.iter().copied()) {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

fn event_hash(ctx_hash: u64, id: u16) -> u64 {
    let mut h = ctx_hash;
    for b in id.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl SurpriseModel {
    /// Counts every event of the sequences under each context length `0..order`.
    pub fn train<'a, I>(sequences: I, params: SurpriseParams) -> Self
    where
        I: IntoIterator<Item = &'a [u16]>,
    {
        let order = params.order.clamp(1, MAX_N);
        let mut ids = HashSet::new();
        let mut contexts: HashMap<u64, (u32, u32)> = HashMap::new();
        let mut events: HashMap<u64, u32> = HashMap::new();
        for seq in sequences {
            for (i, &x) in seq.iter().enumerate() {
                ids.insert(x);
                for k in 0..order.min(i + 1) {
                    let ch = context_hash(&seq[i - k..i]);
                    let e = events.entry(event_hash(ch, x)).or_insert(0);
                    *e = e.saturating_add(1);
                    let c = contexts.entry(ch).or_insert((0, 0));
                    c.0 = c.0.saturating_add(1);
                    if *e == 1 {
                        c.1 = c.1.saturating_add(1);
                    }
                }
            }
        }
        Self {
            order,
            vocab: ids.len() + 1,
            contexts,
            events,
        }
    }

    /// The model order.
    #[must_use]
    pub fn order(&self) -> usize {
        self.order
    }

    /// Surprise `-ln p` of `seq[i]` given up to `order - 1` preceding ids.
    #[must_use]
    pub fn event_surprise(&self, seq: &[u16], i: usize) -> f64 {
        let x = seq[i];
        let mut p = 1.0 / self.vocab as f64;
        for k in 0..self.order.min(i + 1) {
            let ch = context_hash(&seq[i - k..i]);
            let Some(&(total, types)) = self.contexts.get(&ch) else {
                break;
            };
            let c = self.events.get(&event_hash(ch, x)).copied().unwrap_or(0);
            p = (f64::from(c) + f64::from(types) * p) / (f64::from(total) + f64::from(types));
        }
        -p.ln()
    }

    /// Mean surprise in nats per event of a window or trace; 0 when empty.
    #[must_use]
    pub fn surprise(&self, seq: &[u16]) -> f64 {
        if seq.is_empty() {
            return 0.0;
        }
        (0..seq.len())
            .map(|i| self.event_surprise(seq, i))
            .sum::<f64>()
            / seq.len() as f64
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

/// A [`SurpriseModel`] with a memo of per-n-gram surprises, for scoring many sequences (a
/// window's threads) under one model. With a full context, the surprise of an event depends only
/// on the last `order` ids, and syscall streams repeat a few of those n-grams over and over: each
/// distinct one is computed once. Results are bit-identical to [`SurpriseModel::surprise`].
pub struct MemoSurprise<'a> {
    model: &'a SurpriseModel,
    memo: HashMap<[u16; MAX_N], f64>,
}

impl<'a> MemoSurprise<'a> {
    #[must_use]
    pub fn new(model: &'a SurpriseModel) -> Self {
        Self {
            model,
            memo: HashMap::new(),
        }
    }

    /// [`SurpriseModel::surprise`] of `seq`.
    pub fn surprise(&mut self, seq: &[u16]) -> f64 {
        if seq.is_empty() {
            return 0.0;
        }
        let order = self.model.order;
        let (model, memo) = (self.model, &mut self.memo);
        (0..seq.len())
            .map(|i| {
                if i + 1 < order {
                    return model.event_surprise(seq, i);
                }
                let mut key = [0; MAX_N];
                key[..order].copy_from_slice(&seq[i + 1 - order..=i]);
                *memo
                    .entry(key)
                    .or_insert_with(|| model.event_surprise(seq, i))
            })
            .sum::<f64>()
            / seq.len() as f64
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
    fn memo_surprise_is_bit_identical() {
        // A repetitive stream with a few deviations, as syscall streams are.
        let seq: Vec<u16> = (0..2000u32)
            .map(|i| {
                if i % 97 == 0 {
                    40 + (i % 7) as u16
                } else {
                    (i % 5) as u16
                }
            })
            .collect();
        for order in [1, 3, 6] {
            let m = SurpriseModel::train([&seq[..1000]], SurpriseParams { order });
            let mut memo = MemoSurprise::new(&m);
            for part in [
                &seq[..],
                &seq[1000..],
                &seq[..4],
                &[][..],
                &[99, 98, 0, 1, 2][..],
            ] {
                assert_eq!(
                    memo.surprise(part).to_bits(),
                    m.surprise(part).to_bits(),
                    "order {order}"
                );
            }
        }
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
    #[test]
    fn surprise_prefers_familiar_transitions() {
        let train: Vec<Vec<u16>> = vec![vec![1, 2, 1, 2, 1, 2, 1, 2, 3, 1, 2, 1, 2]];
        let m = SurpriseModel::train(train.iter().map(Vec::as_slice), SurpriseParams { order: 3 });
        assert_eq!(m.order(), 3);
        let familiar = m.surprise(&[1, 2, 1, 2, 1, 2]);
        let odd = m.surprise(&[2, 2, 1, 1, 2, 2]);
        let unseen = m.surprise(&[7, 8, 9, 7, 8, 9]);
        assert!(familiar < odd && odd < unseen, "{familiar} {odd} {unseen}");
        assert!(familiar > 0.0 && unseen.is_finite());
        assert_eq!(m.surprise(&[]), 0.0);
        // Probabilities over the vocabulary (plus the unseen id) sum to 1 in any context.
        let total: f64 = [1u16, 2, 3, 99]
            .iter()
            .map(|&x| (-m.event_surprise(&[1, 2, x], 2)).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&m, cfg).expect("encode");
        let (back, _): (SurpriseModel, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).expect("decode");
        assert_eq!(back, m);
    }
}
