"""The heads metrics: ROC AUC against a brute-force count, and the baselines they are read against."""

from __future__ import annotations

import numpy as np

from genie_env.eval.heads import roc_auc


def test_roc_auc_matches_pairwise_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert abs(roc_auc(scores, labels) - brute) < 1e-12


def test_roc_auc_extremes_and_single_class() -> None:
    labels = np.array([0, 0, 1, 1], bool)
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.ones(4), labels) == 0.5
    assert roc_auc(np.array([0.1, 0.2]), np.array([1, 1], bool)) is None
