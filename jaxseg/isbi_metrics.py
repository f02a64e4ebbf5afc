"""ISBI 2012 EM segmentation challenge metrics, on the host (NumPy/SciPy).

Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation algorithms
for connectomics", Front. Neuroanat. 9:142. Conventions:

* Ground truth `label`: `[height, width]` (or `[slices, height, width]`), nonzero (1 or 255) =
  cell interior, 0 = membrane (boundary).
* `prediction`: same shape, the probability that a pixel is cell interior (the challenge's
  submission convention: white = cell), or a binary map with 1 = cell. For a membrane
  probability map pass `1 - p`. A pixel is cell when `prediction > threshold`.

The two segmentation scores, V_rand and V_info (each with its split and merge parts), compare
segmentations, not pixel classes: ground-truth segments are the connected components of the cell
pixels, predicted segments those of the predicted cell pixels after boundary thinning
(`jaxseg.isbi_segments`, which also describes the thinning); the scores are foreground-restricted
Rand and information-theoretic F-scores of the two (`jaxseg.isbi_rand_info`, with the formulas).
This module combines them with the pixel scores at one threshold (`isbi_scores`) or at the best
one (`best_isbi_scores`); the names of those modules are re-exported here.

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

import numpy as np
from scipy import ndimage

from jaxseg.isbi_rand_info import (
    SegmentationScores,
    contingency_counts,
    information_scores,
    rand_scores,
)
from jaxseg.isbi_segments import connectivity_structure, predicted_segments, thin_boundaries

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
    true_segments, _ = ndimage.label(label > 0, structure=connectivity_structure(connectivity))
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
