"""The ISBI 2012 segmentation scores, foreground-restricted Rand and information (V_rand, V_info).

They compare segmentations, not pixel classes (segments: `jaxseg.isbi_segments`). With `n_ij`
the number of pixels in ground-truth segment `i` and predicted segment `j`, counted only over
ground-truth foreground pixels (pixels on a ground-truth membrane are left out:
"foreground-restricted"), `n` their total, `p_ij = n_ij / n`, `t_i = sum_j p_ij` (ground truth)
and `s_j = sum_i p_ij` (prediction):

* Rand: `V_split = sum p_ij^2 / sum t_i^2`, `V_merge = sum p_ij^2 / sum s_j^2`,
  `V_rand = sum p_ij^2 / (alpha sum s_j^2 + (1 - alpha) sum t_i^2)` (alpha = 0.5: the
  harmonic mean of the two).
* Information: `I = H(S) + H(T) - H(S, T)`, `V_split = I / H(S)`, `V_merge = I / H(T)`,
  `V_info = I / ((1 - alpha) H(S) + alpha H(T))`; a ratio whose denominator is 0 is 1 (a
  single segment can neither be split nor merged).

Splitting a true segment lowers `V_split` and leaves `V_merge` at 1; merging two true segments
lowers `V_merge`. All scores are in [0, 1], 1 for a perfect segmentation. Predicted pixels with
id 0 (boundary left after thinning) inside the ground-truth foreground are singleton segments.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["SegmentationScores", "contingency_counts", "information_scores", "rand_scores"]


class SegmentationScores(NamedTuple):
    """Split and merge scores and their weighted harmonic mean; all 1 when perfect."""

    split: float
    merge: float
    score: float


def contingency_counts(
    true_segments: np.ndarray, predicted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sparse contingency table over the ground-truth foreground (`true_segments > 0`).

    Returns:
      `(true_ids, predicted_ids, counts, unassigned)`: for every pair of a true segment and a
      predicted segment (id > 0) that share pixels, their ids and the number of shared pixels;
      and the number of foreground pixels whose predicted id is 0 (singletons).
    """
    true_segments = np.asarray(true_segments).ravel()
    predicted = np.asarray(predicted).ravel()
    foreground = true_segments > 0
    true_ids = true_segments[foreground].astype(np.int64)
    predicted_ids = predicted[foreground].astype(np.int64)
    unassigned = int(np.count_nonzero(predicted_ids == 0))
    assigned = predicted_ids > 0
    base = int(predicted_ids.max(initial=0)) + 1
    keys, counts = np.unique(
        true_ids[assigned] * base + predicted_ids[assigned], return_counts=True
    )
    return keys // base, keys % base, counts, unassigned


def rand_scores(
    true_segments: np.ndarray, predicted: np.ndarray, *, alpha: float = 0.5
) -> SegmentationScores:
    """Foreground-restricted Rand split, merge and `V_rand` (module doc); NaN if no foreground.

    Args:
      true_segments: `[height, width]` ground-truth segment ids, 0 = membrane (left out).
      predicted: `[height, width]` predicted segment ids, 0 = boundary (singletons).
      alpha: weight of the merge score in the harmonic mean.
    """
    true_ids, predicted_ids, counts, unassigned = contingency_counts(true_segments, predicted)
    true_segments = np.asarray(true_segments)
    n = int(np.count_nonzero(true_segments > 0))
    if n == 0:
        return SegmentationScores(float("nan"), float("nan"), float("nan"))
    # In pixel-pair counts (n^2 times the sums of squared probabilities); each unassigned
    # pixel is a singleton: it adds 1 to sum n_ij^2 and to sum s_j^2.
    true_size = np.bincount(true_segments.ravel())[1:].astype(np.float64)
    predicted_size = np.bincount(predicted_ids, weights=counts)
    joint = float(np.sum(counts.astype(np.float64) ** 2)) + unassigned
    sum_t2 = float(np.sum(true_size**2))
    sum_s2 = float(np.sum(predicted_size**2)) + unassigned
    split = joint / sum_t2
    merge = joint / sum_s2
    score = joint / (alpha * sum_s2 + (1.0 - alpha) * sum_t2)
    return SegmentationScores(split, merge, score)


def _entropy(sizes: np.ndarray, n: int) -> float:
    """`-sum p log p` with `p = sizes / n` (natural log), zero sizes skipped."""
    p = sizes[sizes > 0].astype(np.float64) / n
    return float(-np.sum(p * np.log(p)))


def information_scores(
    true_segments: np.ndarray, predicted: np.ndarray, *, alpha: float = 0.5
) -> SegmentationScores:
    """Foreground-restricted information-theoretic split, merge and `V_info` (module doc).

    NaN if the ground truth has no foreground. Unassigned predicted pixels (id 0) inside the
    foreground are singleton segments: each adds `(1/n) log n` to `H(S)` and to `H(S, T)`.
    """
    true_ids, predicted_ids, counts, unassigned = contingency_counts(true_segments, predicted)
    true_segments = np.asarray(true_segments)
    n = int(np.count_nonzero(true_segments > 0))
    if n == 0:
        return SegmentationScores(float("nan"), float("nan"), float("nan"))
    singletons = unassigned / n * np.log(n)
    h_true = _entropy(np.bincount(true_segments.ravel())[1:], n)
    h_pred = _entropy(np.bincount(predicted_ids, weights=counts), n) + singletons
    h_joint = _entropy(counts, n) + singletons
    mutual = h_true + h_pred - h_joint
    mutual = min(max(mutual, 0.0), h_true, h_pred)  # round-off only

    def ratio(numerator: float, denominator: float) -> float:
        return 1.0 if denominator <= 0 else numerator / denominator

    return SegmentationScores(
        split=ratio(mutual, h_pred),
        merge=ratio(mutual, h_true),
        score=ratio(mutual, (1.0 - alpha) * h_pred + alpha * h_true),
    )
