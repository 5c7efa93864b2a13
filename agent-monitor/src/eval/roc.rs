//! Threshold-free and fixed-false-alarm figures for a detector's scores on normal and attack
//! samples. Higher scores mean "more anomalous".

use serde::Serialize;

/// Area under the ROC curve: the probability that a random attack scores above a random normal,
/// ties counting one half (Mann-Whitney U with mid-ranks). `None` if either side is empty or a
/// score is NaN.
#[must_use]
pub fn roc_auc(normal: &[f64], attack: &[f64]) -> Option<f64> {
    if normal.is_empty() || attack.is_empty() || normal.iter().chain(attack).any(|s| s.is_nan()) {
        return None;
    }
    let mut all: Vec<(f64, bool)> = normal
        .iter()
        .map(|&s| (s, false))
        .chain(attack.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the attack samples' mid-ranks (1-based).
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let mid_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mid_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (n, m) = (normal.len() as f64, attack.len() as f64);
    Some((rank_sum - m * (m + 1.0) / 2.0) / (n * m))
}

/// Operating point at a target false-alarm rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// Alarm when score > threshold.
    pub threshold: f64,
    /// Share of normal samples above the threshold (never above the target).
    pub false_alarm_rate: f64,
    /// Share of attack samples above the threshold.
    pub detection_rate: f64,
}

/// Detection rate at a false-alarm rate of at most `far`: the threshold is the
/// `(floor(far * n) + 1)`-th largest normal score and only scores strictly above it alarm, so
/// ties at the threshold never push the false-alarm rate over the target. `None` if either side
/// is empty, a score is NaN or `far` is outside [0, 1].
#[must_use]
pub fn detection_at_far(normal: &[f64], attack: &[f64], far: f64) -> Option<OperatingPoint> {
    if normal.is_empty()
        || attack.is_empty()
        || !(0.0..=1.0).contains(&far)
        || normal.iter().chain(attack).any(|s| s.is_nan())
    {
        return None;
    }
    let mut sorted = normal.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let allowed = ((far * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
    let threshold = if far >= 1.0 {
        f64::NEG_INFINITY
    } else {
        sorted[allowed]
    };
    let above = |v: &[f64]| v.iter().filter(|&&s| s > threshold).count() as f64 / v.len() as f64;
    Some(OperatingPoint {
        threshold,
        false_alarm_rate: above(normal),
        detection_rate: above(attack),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_perfect_inverse_and_ties() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[0.3, 0.4]), Some(1.0));
        assert_eq!(roc_auc(&[0.3, 0.4], &[0.1, 0.2]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[0.5]), Some(0.5));
        // Pairs (normal, attack): (1,2) win, (1,1) tie, (3,2) loss, (3,1) loss, plus
        // (1,4) and (3,4) wins: 3 wins + 0.5 tie out of 6 = 3.5/6.
        let auc = roc_auc(&[1.0, 3.0], &[2.0, 1.0, 4.0]).expect("auc");
        assert!((auc - 3.5 / 6.0).abs() < 1e-12);
        assert_eq!(roc_auc(&[], &[1.0]), None);
        assert_eq!(roc_auc(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn detection_at_far_hand_computed() {
        let normal: Vec<f64> = (1..=10).map(f64::from).collect();
        let attack = [0.5, 8.5, 9.5, 10.5];
        // 10% of 10 normals: one may alarm, so the threshold is the 2nd largest (9).
        let p = detection_at_far(&normal, &attack, 0.1).expect("point");
        assert_eq!(p.threshold, 9.0);
        assert_eq!(p.false_alarm_rate, 0.1);
        assert_eq!(p.detection_rate, 0.5);
        // 5% of 10: none may alarm: threshold = max normal.
        let p = detection_at_far(&normal, &attack, 0.05).expect("point");
        assert_eq!((p.threshold, p.detection_rate), (10.0, 0.25));
        // Ties at the threshold do not alarm: FAR stays within the target.
        let p = detection_at_far(&[1.0, 1.0, 1.0, 1.0], &[1.0, 2.0], 0.5).expect("point");
        assert_eq!((p.false_alarm_rate, p.detection_rate), (0.0, 0.5));
        assert!(detection_at_far(&normal, &attack, 1.5).is_none());
    }
}
