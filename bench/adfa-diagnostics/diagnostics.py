"""ADFA-LD diagnostics behind docs/ANOMALY-MODELS.md, "Where the bar lies on this subset".

Not part of the product: a prototype that asks whether any model of normal behaviour can reach
the issue's target on this subset. The language model is the one `SurpriseModel` implements
(Witten-Bell interpolated n-grams, order 6, mean surprise per trace), written out again here so
the diagnostics can retrain it on other data.

    python3 -m venv /tmp/adfa-venv && /tmp/adfa-venv/bin/pip install numpy scikit-learn
    /tmp/adfa-venv/bin/python bench/adfa-diagnostics/diagnostics.py [ADFA_LD_DIR]

About 3 minutes on one core.
"""

import glob
import math
import os
import random
import sys
from collections import defaultdict

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict

ROOT = sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/adfa-ld"
POLL, CLOCK_GETTIME, TIMES, EXECVE = 168, 265, 43, 11  # i386 numbers


def read(path):
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def load():
    normal = lambda d: [read(p) for p in sorted(glob.glob(f"{ROOT}/{d}/*.txt"))]
    attacks, folders = [], []
    for d in sorted(glob.glob(f"{ROOT}/attack/*")):
        for p in sorted(glob.glob(f"{d}/*.txt")):
            attacks.append(read(p))
            folders.append(os.path.basename(d))
    return normal("training"), normal("validation"), attacks, folders


class WittenBell:
    """Interpolated n-gram model; p(x | h) backs off to a uniform over the vocabulary + 1."""

    def __init__(self, seqs, order):
        self.order = order
        self.count, self.ctx, seen = defaultdict(int), defaultdict(int), defaultdict(set)
        vocab = set()
        for s in seqs:
            vocab.update(s)
            for i, x in enumerate(s):
                for k in range(min(order, i + 1)):
                    h = tuple(s[i - k : i])
                    self.count[(h, x)] += 1
                    self.ctx[h] += 1
                    seen[h].add(x)
        self.distinct = {h: len(v) for h, v in seen.items()}
        self.vocab = len(vocab) + 1

    def mean_surprise(self, s):
        total = 0.0
        for i, x in enumerate(s):
            p = 1.0 / self.vocab
            for k in range(min(self.order, i + 1)):
                h = tuple(s[i - k : i])
                c = self.ctx.get(h)
                if not c:
                    break
                u = self.distinct[h]
                p = (self.count.get((h, x), 0) + u * p) / (c + u)
            total -= math.log(p)
        return total / len(s)


def report(name, normal_scores, attack_scores):
    n, a = np.asarray(normal_scores), np.asarray(attack_scores)
    auc = roc_auc_score(np.r_[np.zeros(len(n)), np.ones(len(a))], np.r_[n, a])
    detected = np.mean(a > np.percentile(n, 95)) * 100
    print(f"{name}: AUC {auc:.3f}, detected at 5% false alarms {detected:.1f}% ({len(a)} attacks)")


def main():
    train, val, attacks, folders = load()
    share = lambda s, ids: sum(x in ids for x in s) / len(s)
    has = lambda traces, i: np.mean([i in set(s) for s in traces]) * 100

    print("Drift and recording difference (% of traces):")
    print(f"  uses times: training {has(train, TIMES):.1f}, validation {has(val, TIMES):.1f}")
    seen = set(x for s in train for x in s)
    unseen = np.mean([any(x not in seen for x in s) for s in val]) * 100
    print(f"  validation normals with a syscall unseen in training: {unseen:.1f}")
    for name, traces in [("training", train), ("validation", val), ("attack", attacks)]:
        dominated = np.mean([share(s, {POLL, CLOCK_GETTIME}) > 0.5 for s in traces]) * 100
        print(f"  {name}: > half poll + clock_gettime {dominated:.1f}, execve {has(traces, EXECVE):.1f}")

    model = WittenBell(train, 6)
    sv = np.array([model.mean_surprise(s) for s in val])
    sa = np.array([model.mean_surprise(s) for s in attacks])
    report("order 6, trained on training/", sv, sa)
    like_artifact = np.array([share(s, {POLL, CLOCK_GETTIME}) > 0.3 for s in attacks])
    report("  attacks > 30% poll + clock_gettime", sv, sa[like_artifact])
    report("  the other attacks", sv, sa[~like_artifact])

    # More normal data: training/ plus 4/5 of validation/, each fifth scored by the model that
    # did not see it; attacks by the mean of the five models' scores.
    order = list(range(len(val)))
    random.Random(1).shuffle(order)
    folds = [order[i::5] for i in range(5)]
    cv, ca = np.zeros(len(val)), np.zeros(len(attacks))
    for fold in folds:
        held = set(fold)
        m = WittenBell(train + [val[i] for i in order if i not in held], 6)
        for i in fold:
            cv[i] = m.mean_surprise(val[i])
        ca += np.array([m.mean_surprise(s) for s in attacks]) / 5
    report("order 6, trained on training/ + 80% of validation/ (cross-fitted)", cv, ca)

    # Supervised, attack labels used (not an admissible detector): how separable the sets are.
    docs = [" ".join(f"s{x}" for x in s) for s in val + attacks]
    x = CountVectorizer(ngram_range=(1, 2), token_pattern=r"\S+", min_df=3).fit_transform(docs)
    x = x.multiply(1 / np.asarray(x.sum(1))).tocsr().toarray()
    y = np.r_[np.zeros(len(val)), np.ones(len(attacks))]
    groups = list(range(len(val))) + [len(val) + sorted(set(folders)).index(f) for f in folders]
    p = cross_val_predict(
        HistGradientBoostingClassifier(max_iter=200, random_state=1),
        x, y, cv=GroupKFold(5), groups=groups, method="predict_proba",
    )[:, 1]
    pv, pa = p[: len(val)], p[len(val) :]
    report("supervised, each attack folder held out whole", pv, pa)
    report("  the attacks < 30% poll + clock_gettime", pv, pa[~like_artifact])


if __name__ == "__main__":
    main()
