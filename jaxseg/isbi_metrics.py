"""ISBI 2012 EM segmentation challenge metrics, on the host (NumPy/SciPy).

Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation algorithms
for connectomics", Front. Neuroanat. 9:142. Conventions:

* Ground truth `label`: `[height, width]` (or `[slices, height, width]`), nonzero (1 or 255) =
  cell interior, 0 = membrane (boundary).
* `prediction`: same shape, the probability that a pixel is cell interior (the challenge's
  submission convention: white = cell), or a binary map with 1 = cell. For a membrane
  probability map pass `1 - p`. A pixel is cell when `prediction > threshold`.

The two segmentation scores compare segmentations, not pixel classes: ground-truth segments
are the connected components of the cell pixels (4-connectivity by default, as the
challenge's Fiji scripts; 8 optional); predicted segments are the connected components of the
predicted cell pixels after boundary thinning (below). With `n_ij` the number of pixels in
ground-truth segment `i` and predicted segment `j`, counted only over ground-truth
foreground pixels (pixels on a ground-truth membrane are left out: "foreground-restricted"),
`n` their total, `p_ij = n_ij / n`, `t_i = sum_j p_ij` (ground truth) and `s_j = sum_i p_ij`
(prediction):

* Rand: `V_split = sum p_ij^2 / sum t_i^2`, `V_merge = sum p_ij^2 / sum s_j^2`,
  `V_rand = sum p_ij^2 / (alpha sum s_j^2 + (1 - alpha) sum t_i^2)` (alpha = 0.5: the
  harmonic mean of the two).
* Information: `I = H(S) + H(T) - H(S, T)`, `V_split = I / H(S)`, `V_merge = I / H(T)`,
  `V_info = I / ((1 - alpha) H(S) + alpha H(T))`; a ratio whose denominator is 0 is 1 (a
  single segment can neither be split nor merged).

Splitting a true segment lowers `V_split` and leaves `V_merge` at 1; merging two true segments
lowers `V_merge`. All scores are in [0, 1], 1 for a perfect segmentation.

Boundary thinning. A predicted membrane pixel that lies inside a ground-truth cell would
otherwise count as its own one-pixel segment and be scored as a split, so a prediction with
membranes two pixels wider than the annotator's would lose much of its score without a
topological error. The challenge's final metrics (V_rand and V_info "after border thinning")
fix this by thinning the predicted boundaries to one pixel before scoring: its Fiji script
floods the predicted membrane from the predicted cells with a classic watershed. We do the
same with a breadth-first flood: membrane pixels are assigned, step by step, to the segment
that reaches them first (4- or 8-neighbours, as `connectivity`); a pixel reached in the same
step by two different segments stays membrane and stops the flood there. The result is a
boundary at most one pixel wide between segments (none where a membrane has even width),
and membrane with no cell anywhere stays membrane. Fiji's watershed may break ties
differently, so on the tie pixels our numbers can differ slightly from the official
script's (not checked against Fiji: it is not available here). Predicted membrane pixels
left after thinning that lie in ground-truth foreground count as singleton segments, as in
the challenge's code. Pass `thin=False` to score without thinning.

Two pixel scores, under names that say which is which:

* `pixel_misclassification`: the fraction of pixels whose class (cell or membrane) is wrong,
  `(FP + FN) / (TP + TN + FP + FN)`. This is what jaxseg called "pixel error" before.
* `pixel_fscore`: the F-score of the cell pixels, `2 P R / (P + R)` with precision
  `P = TP / (TP + FP)` and recall `R = TP / (TP + FN)`, cell (label > 0, `prediction >
  threshold`) the positive class, over all pixels (not foreground-restricted); a stack pools
  its counts over the slices, as the challenge's Fiji code does
  (`trainableSegmentation.metrics.PixelError`). Where Fiji divides by zero (NaN, a threshold
  its maximum then skips), jaxseg's own convention is `P = 1` when `FP = 0`, `R = 1` when
  `FN = 0`, `F = 0` when `P + R = 0`; this changes the best F-score only when no pixel is a
  cell in the labels nor in the prediction (jaxseg: F = 1).
* `isbi_pixel_error` (`best_isbi_scores` only): the challenge's "pixel error", defined on its
  evaluation page (brainiac2.mit.edu/isbi_challenge/evaluation) and in Arganda-Carreras et al.
  2015 as 1 - the maximal F-score of pixel similarity: `1 - max over thresholds of
  pixel_fscore`, thresholds 0.0, 0.1, ..., 1.0 as in its Fiji script. It is not the
  misclassification rate: at one threshold `1 - F = (FP + FN) / (2 TP + FP + FN)` against
  `(FP + FN) / (TP + TN + FP + FN)`, smaller whenever cell pixels correctly found outnumber
  membrane pixels correctly found (`TP > TN`, as on ISBI data).

Stacks `[slices, height, width]` are scored slice by slice and the scores averaged, as the
challenge did (`pixel_fscore` pools the slices' counts instead, as Fiji does);
`best_isbi_scores` then takes the best over thresholds, each score maximised (misclassification
minimised) separately, like the official script.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "SegmentationScores",
    "best_isbi_scores",
    "contingency_counts",
    "information_scores",
    "isbi_scores",
    "pixel_fscore",
    "pixel_misclassification",
    "predicted_segments",
    "rand_scores",
    "thin_boundaries",
]

DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0, 0.1, ..., 1.0


class SegmentationScores(NamedTuple):
    """Split and merge scores and their weighted harmonic mean; all 1 when perfect."""

    split: float
    merge: float
    score: float


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def thin_boundaries(segments: np.ndarray, *, connectivity: int = 4) -> np.ndarray:
    """Floods the boundary pixels (0) of a segmentation from its segments; see module doc.

    A breadth-first flood that only touches the current front, so its cost grows with the
    number of boundary pixels, not with the image size times the flood depth.

    Args:
      segments: `[height, width]` integer segment ids, 0 = boundary.
      connectivity: 4 or 8, the neighbourhood of the flood.

    Returns:
      Segment ids of the same shape: boundary pixels take the id of the segment that reaches
      them first; pixels reached at the same step by two segments, and pixels no segment
      reaches, stay 0.
    """
    _structure(connectivity)
    segments = np.asarray(segments)
    if segments.ndim != 2:
        raise ValueError(f"segments must be 2-D, got shape {segments.shape}")
    height, width = segments.shape
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    flat = segments.astype(np.int64).ravel()  # a copy
    open_ = flat == 0  # boundary pixels neither assigned nor frozen as a tie yet
    front = np.flatnonzero(~open_)
    while front.size:
        rows, cols = np.divmod(front, width)
        targets, sources = [], []
        for dy, dx in offsets:
            inside = (rows + dy >= 0) & (rows + dy < height) & (cols + dx >= 0)
            inside &= cols + dx < width
            neighbour = front[inside] + dy * width + dx
            reached = open_[neighbour]
            targets.append(neighbour[reached])
            sources.append(flat[front[inside][reached]])
        targets, sources = np.concatenate(targets), np.concatenate(sources)
        if not targets.size:
            break
        order = np.argsort(targets, kind="stable")
        targets, sources = targets[order], sources[order]
        starts = np.flatnonzero(np.r_[True, targets[1:] != targets[:-1]])
        pixels = targets[starts]
        lowest = np.minimum.reduceat(sources, starts)
        highest = np.maximum.reduceat(sources, starts)
        single = lowest == highest
        flat[pixels[single]] = lowest[single]
        open_[pixels] = False  # ties stay 0 and stop the flood
        front = pixels[single]
    return flat.reshape(height, width)


def predicted_segments(
    prediction: np.ndarray,
    *,
    threshold: float = 0.5,
    connectivity: int = 4,
    thin: bool = True,
) -> np.ndarray:
    """Segments of a 2-D prediction: components of `prediction > threshold`, then thinning."""
    prediction = np.asarray(prediction)
    segments, _ = ndimage.label(prediction > threshold, structure=_structure(connectivity))
    if thin:
        segments = thin_boundaries(segments, connectivity=connectivity)
    return segments


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


def _cells(prediction, label, threshold) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction)
    label = np.asarray(label)
    if prediction.shape != label.shape:
        raise ValueError(f"shapes differ: prediction {prediction.shape}, label {label.shape}")
    return prediction > threshold, label > 0


def pixel_misclassification(
    prediction: np.ndarray, label: np.ndarray, *, threshold: float = 0.5
) -> float:
    """Fraction of pixels whose class (cell = `prediction > threshold`) differs from `label`'s.

    >>> pixel_misclassification(np.array([0.9, 0.9, 0.2, 0.7]), np.array([1, 1, 0, 0]))
    0.25
    """
    predicted, true = _cells(prediction, label, threshold)
    return float(np.mean(predicted != true))


def pixel_fscore(prediction: np.ndarray, label: np.ndarray, *, threshold: float = 0.5) -> float:
    """F-score of the cell pixels (positive class: cell), any shape; see the module doc.

    `1 - pixel_fscore` maximised over thresholds is the ISBI challenge's "pixel error"
    (`best_isbi_scores(...)['isbi_pixel_error']`).

    >>> pixel_fscore(np.array([0.9, 0.9, 0.2, 0.7]), np.array([1, 1, 0, 0]))  # P 2/3, R 1
    0.8
    """
    predicted, true = _cells(prediction, label, threshold)
    tp = int(np.count_nonzero(predicted & true))
    fp = int(np.count_nonzero(predicted & ~true))
    fn = int(np.count_nonzero(~predicted & true))
    precision = 1.0 if fp == 0 else tp / (tp + fp)
    recall = 1.0 if fn == 0 else tp / (tp + fn)
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _isbi_scores_2d(prediction, label, *, threshold, connectivity, thin, alpha):
    true_segments, _ = ndimage.label(label > 0, structure=_structure(connectivity))
    segments = predicted_segments(
        prediction, threshold=threshold, connectivity=connectivity, thin=thin
    )
    rand = rand_scores(true_segments, segments, alpha=alpha)
    info = information_scores(true_segments, segments, alpha=alpha)
    return {
        "pixel_misclassification": pixel_misclassification(prediction, label, threshold=threshold),
        "v_rand": rand.score,
        "v_rand_split": rand.split,
        "v_rand_merge": rand.merge,
        "v_info": info.score,
        "v_info_split": info.split,
        "v_info_merge": info.merge,
    }


def isbi_scores(
    prediction: np.ndarray,
    label: np.ndarray,
    *,
    threshold: float = 0.5,
    connectivity: int = 4,
    thin: bool = True,
    alpha: float = 0.5,
) -> dict[str, float]:
    """Pixel misclassification and F-score, V_rand and V_info (split/merge parts) at one threshold.

    Args:
      prediction: `[height, width]` or `[slices, height, width]` cell probability or binary
        map (1 = cell); a pixel is cell when `prediction > threshold`.
      label: ground truth of the same shape, nonzero = cell, 0 = membrane.
      threshold: binarisation threshold of the prediction.
      connectivity: 4 or 8, for the segments of both ground truth and prediction.
      thin: thin the predicted boundaries before scoring (the challenge's final metrics).
      alpha: weight of the merge score in both F-scores.

    Returns:
      Dict of floats: 'pixel_misclassification', 'pixel_fscore', 'v_rand', 'v_rand_split',
      'v_rand_merge', 'v_info', 'v_info_split', 'v_info_merge'; for a stack, each averaged
      over the slices, except 'pixel_fscore', from the counts of the whole stack.
    """
    prediction = np.asarray(prediction)
    label = np.asarray(label)
    if prediction.shape != label.shape or prediction.ndim not in (2, 3):
        raise ValueError(
            "prediction and label must share one shape [height, width] or [slices, height, "
            f"width]; got {prediction.shape} and {label.shape}"
        )
    if prediction.ndim == 2:
        prediction, label = prediction[None], label[None]
    per_slice = [
        _isbi_scores_2d(
            p, t, threshold=threshold, connectivity=connectivity, thin=thin, alpha=alpha
        )
        for p, t in zip(prediction, label)
    ]
    scores = {key: float(np.mean([s[key] for s in per_slice])) for key in per_slice[0]}
    return {
        "pixel_misclassification": scores.pop("pixel_misclassification"),
        "pixel_fscore": pixel_fscore(prediction, label, threshold=threshold),
        **scores,
    }


def best_isbi_scores(
    prediction: np.ndarray,
    label: np.ndarray,
    *,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    connectivity: int = 4,
    thin: bool = True,
    alpha: float = 0.5,
) -> dict[str, float]:
    """The challenge's reported numbers: each score at its best threshold.

    Returns:
      Dict: 'v_rand' (max over thresholds), 'v_info' (max), 'pixel_misclassification' (min),
      'pixel_fscore' (max), and for each the threshold that achieved it ('v_rand_threshold',
      ...; the first on ties); and 'isbi_pixel_error' = 1 - the maximal 'pixel_fscore', the
      challenge's "pixel error".
    """
    results = [
        isbi_scores(
            prediction,
            label,
            threshold=threshold,
            connectivity=connectivity,
            thin=thin,
            alpha=alpha,
        )
        for threshold in thresholds
    ]
    best = {}
    signs = {"v_rand": 1.0, "v_info": 1.0, "pixel_misclassification": -1.0, "pixel_fscore": 1.0}
    for key, sign in signs.items():
        values = np.array([r[key] for r in results])
        if np.all(np.isnan(values)):  # no ground-truth foreground
            best[key] = best[f"{key}_threshold"] = float("nan")
            continue
        index = int(np.nanargmax(sign * values))  # the first best on ties
        best[key] = float(values[index])
        best[f"{key}_threshold"] = float(thresholds[index])
    best["isbi_pixel_error"] = 1.0 - best["pixel_fscore"]
    return best
