//! PLACEHOLDER until the sequence model lands: a set of known 3-grams.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SequenceModel {
    known: HashSet<[u16; 3]>,
}

impl SequenceModel {
    pub fn train<'a>(seqs: impl Iterator<Item = &'a [u16]>) -> Self {
        let mut known = HashSet::new();
        for s in seqs {
            for w in s.windows(3) {
                known.insert([w[0], w[1], w[2]]);
            }
        }
        Self { known }
    }

    pub fn novel_ngrams(&self, seq: &[u16]) -> (u64, u64) {
        let mut n = 0;
        let mut t = 0;
        for w in seq.windows(3) {
            t += 1;
            if !self.known.contains(&[w[0], w[1], w[2]]) {
                n += 1;
            }
        }
        (n, t)
    }
}
