"""ISBI 2012 metrics against contingency tables worked out by hand, and brute-force pair counts.

Notation in the comments: ground-truth segments A, B, C (connected cell pixels), predicted
segments P1, P2, ...; `n` = ground-truth foreground pixels; Rand sums are in pixel-pair
counts (n^2 times the probability sums), so `V_split = joint / sum_t2`, `V_merge = joint /
sum_s2`, `V_rand = joint / (sum_s2 / 2 + sum_t2 / 2)`.
"""

import math

import numpy as np
import pytest
from scipy import ndimage

from jaxseg import isbi_metrics as isbi


def ln_entropy(*sizes):
    n = sum(sizes)
    return -sum(s / n * math.log(s / n) for s in sizes)


def ground_truth(*membrane_columns, shape=(6, 6)):
    label = np.ones(shape, np.int32)
    label[:, list(membrane_columns)] = 0
    return label


def test_perfect_prediction_scores_one():
    label = ground_truth(2, 4) * 255  # the 0/255 convention works as 0/1
    for prediction in (label > 0, np.where(label > 0, 0.9, 0.2)):
        scores = isbi.isbi_scores(prediction.astype(float), label)
        assert scores["pixel_misclassification"] == 0.0 and scores["pixel_fscore"] == 1.0
        for key in ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split"):
            assert scores[key] == pytest.approx(1.0), key
        assert scores["v_info_merge"] == pytest.approx(1.0)


def test_split_with_thin_predicted_membrane_hand_computed():
    # Ground truth 6x6, membrane column 2: A = columns 0-1 (12 px), B = columns 3-5 (18 px),
    # n = 30. The prediction adds a 1-px membrane across B on row 3. After thinning, column 2
    # and row 3 of B are equidistant from two segments and stay membrane, so
    #   P1 = A (12), P2 = B rows 0-2 (9), P3 = B rows 4-5 (6), 3 singletons (B row 3).
    # Contingency over the foreground: A-P1 12; B-P2 9, B-P3 6, B-singletons 1 each.
    #   joint = 144 + 81 + 36 + 3 = 264, sum_t2 = 144 + 324 = 468, sum_s2 = 144 + 81 + 36 + 3.
    label = ground_truth(2)
    prediction = label.astype(float)
    prediction[3, 3:] = 0
    segments = isbi.predicted_segments(prediction)
    np.testing.assert_array_equal(segments[3, 3:], 0)
    scores = isbi.isbi_scores(prediction, label)
    assert scores["v_rand_split"] == pytest.approx(264 / 468)  # 22/39
    assert scores["v_rand_merge"] == pytest.approx(1.0)
    assert scores["v_rand"] == pytest.approx(264 / (264 / 2 + 468 / 2))  # 44/61
    # Information: each predicted segment lies in one true segment, so H(S, T) = H(S) and
    # I = H(T). Each singleton adds (1/30) ln 30 to H(S).
    h_true = ln_entropy(12, 18)
    h_pred = -sum(s / 30 * math.log(s / 30) for s in (12, 9, 6)) + 3 / 30 * math.log(30)
    assert scores["v_info_split"] == pytest.approx(h_true / h_pred)
    assert scores["v_info_merge"] == pytest.approx(1.0)
    assert scores["v_info"] == pytest.approx(h_true / (h_pred / 2 + h_true / 2))
    assert scores["pixel_misclassification"] == pytest.approx(3 / 36)
    # TP 27, FN 3, FP 0: precision 1, recall 9/10, F = 2 * 27 / (2 * 27 + 3).
    assert scores["pixel_fscore"] == pytest.approx(18 / 19)


def test_split_with_thick_membrane_thinned_away_hand_computed():
    # Ground truth 6x5, membrane column 2: A = columns 0-1 (12 px), B = columns 3-4 (12 px).
    # The prediction splits B with a 2-px membrane (rows 2-3). Thinning gives row 2 to the
    # segment above and row 3 to the one below: P2 = B rows 0-2 (6), P3 = B rows 3-5 (6).
    #   joint = 144 + 36 + 36 = 216, sum_t2 = 144 + 144 = 288, sum_s2 = 216.
    label = ground_truth(2, shape=(6, 5))
    prediction = label.astype(float)
    prediction[2:4, 3:] = 0
    scores = isbi.isbi_scores(prediction, label)
    assert scores["v_rand_split"] == pytest.approx(3 / 4)
    assert scores["v_rand_merge"] == pytest.approx(1.0)
    assert scores["v_rand"] == pytest.approx(6 / 7)
    # H(T) = ln 2 (12, 12), H(S) = 1.5 ln 2 (12, 6, 6), I = H(T):
    # split = 2/3, V_info = ln 2 / (0.75 ln 2 + 0.5 ln 2) = 4/5.
    assert scores["v_info_split"] == pytest.approx(2 / 3)
    assert scores["v_info_merge"] == pytest.approx(1.0)
    assert scores["v_info"] == pytest.approx(4 / 5)
    # Without thinning the 4 membrane pixels in B are singletons and P2, P3 have 4 pixels:
    #   joint = 144 + 16 + 16 + 4 = 180 -> split = 180 / 288 = 5/8.
    unthinned = isbi.isbi_scores(prediction, label, thin=False)
    assert unthinned["v_rand_split"] == pytest.approx(5 / 8)
    assert unthinned["v_rand"] < scores["v_rand"]


def test_merge_hand_computed():
    # Ground truth 6x6, membranes at columns 2 and 4: A = columns 0-1 (12 px), B = column 3
    # (6), C = column 5 (6); n = 24. The prediction misses the membrane at column 4:
    # P1 = A, P2 = columns 3-5 (B + C + a ground-truth membrane column, which is not counted).
    #   joint = 144 + 36 + 36 = 216, sum_t2 = 216, sum_s2 = 144 + 12^2 = 288.
    label = ground_truth(2, 4)
    prediction = ground_truth(2).astype(float)
    scores = isbi.isbi_scores(prediction, label)
    assert scores["v_rand_split"] == pytest.approx(1.0)
    assert scores["v_rand_merge"] == pytest.approx(3 / 4)
    assert scores["v_rand"] == pytest.approx(6 / 7)
    # H(T) = 1.5 ln 2 (12, 6, 6), H(S) = ln 2 (12, 12), H(S, T) = H(T): I = ln 2.
    assert scores["v_info_split"] == pytest.approx(1.0)
    assert scores["v_info_merge"] == pytest.approx(2 / 3)
    assert scores["v_info"] == pytest.approx(4 / 5)
    assert scores["pixel_misclassification"] == pytest.approx(6 / 36)
    assert scores["pixel_fscore"] == pytest.approx(2 * 24 / (2 * 24 + 6))  # FP 6: 8/9

    # Everything merged (no predicted membrane): sum_s2 = 24^2 = 576 -> merge = 216/576 = 3/8.
    # One predicted segment carries no information: I = 0, so V_info = V_info_merge = 0 and
    # V_info_split = 1 (a single segment splits nothing).
    merged = isbi.isbi_scores(np.ones((6, 6)), label)
    assert merged["v_rand_merge"] == pytest.approx(3 / 8)
    assert merged["v_rand_split"] == pytest.approx(1.0)
    assert merged["v_info"] == 0.0 and merged["v_info_merge"] == 0.0
    assert merged["v_info_split"] == 1.0


def test_rand_and_information_on_given_segments_hand_computed():
    # Segment maps given directly (no thresholding or thinning). Row 3 is ground-truth
    # membrane, so n = 12 (rows 0-2).
    true_segments = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]])
    predicted = np.array([[1, 1, 1, 2], [1, 1, 1, 2], [3, 3, 0, 2], [3, 3, 3, 3]])
    # Contingency: A (6 px): P1 4, P3 2.  B (6 px): P1 2, P2 3, one singleton at (2, 2).
    #   joint = 16 + 4 + 4 + 9 + 1 = 34; sum_t2 = 36 + 36 = 72;
    #   predicted sizes in the foreground P1 6, P2 3, P3 2, singleton 1: sum_s2 = 50.
    rand = isbi.rand_scores(true_segments, predicted)
    assert rand.split == pytest.approx(34 / 72)
    assert rand.merge == pytest.approx(34 / 50)
    assert rand.score == pytest.approx(34 / 61)
    assert isbi.rand_scores(true_segments, predicted, alpha=1.0).score == pytest.approx(34 / 50)
    # Information, natural logs, p = count / 12:
    h_true = math.log(2)
    h_pred = -sum(s / 12 * math.log(s / 12) for s in (6, 3, 2)) + math.log(12) / 12
    h_joint = -sum(s / 12 * math.log(s / 12) for s in (4, 2, 2, 3)) + math.log(12) / 12
    mutual = h_true + h_pred - h_joint
    info = isbi.information_scores(true_segments, predicted)
    assert info.split == pytest.approx(mutual / h_pred)
    assert info.merge == pytest.approx(mutual / h_true)
    assert info.score == pytest.approx(mutual / (h_pred / 2 + h_true / 2))
    ids_true, ids_pred, counts, unassigned = isbi.contingency_counts(true_segments, predicted)
    table = {(int(i), int(j)): int(c) for i, j, c in zip(ids_true, ids_pred, counts)}
    assert table == {(1, 1): 4, (1, 3): 2, (2, 1): 2, (2, 2): 3} and unassigned == 1


def brute_force_rand(true_segments, predicted):
    """Counts ordered pixel pairs (self-pairs included) over the ground-truth foreground."""
    t = true_segments.ravel()
    s = predicted.ravel()
    keep = t > 0
    t, s = t[keep], s[keep]
    same_true = t[:, None] == t[None, :]
    index = np.arange(t.size)
    # Unassigned predicted pixels are singletons: same segment only as themselves.
    same_pred = (s[:, None] == s[None, :]) & ((s[:, None] > 0) | (index[:, None] == index))
    joint = np.sum(same_true & same_pred)
    return joint / same_true.sum(), joint / same_pred.sum()


def brute_force_information(true_segments, predicted):
    t = true_segments.ravel()
    s = predicted.ravel().copy()
    s[s == 0] = s.max() + 1 + np.arange(np.sum(s == 0))  # singletons get ids of their own
    keep = t > 0
    t, s = t[keep], s[keep]

    def entropy(values):
        _, counts = np.unique(values, return_counts=True, axis=0)
        p = counts / counts.sum()
        return -np.sum(p * np.log(p))

    h_t, h_s, h_st = entropy(t), entropy(s), entropy(np.stack([t, s], axis=1))
    mutual = h_t + h_s - h_st
    return mutual / h_s, mutual / h_t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_brute_force_on_random_segmentations(seed):
    rng = np.random.default_rng(seed)
    true_segments, num_true = ndimage.label(rng.random((9, 11)) < 0.55)
    predicted, num_predicted = ndimage.label(rng.random((9, 11)) < 0.6)
    assert num_true > 1 and num_predicted > 1 and np.any((true_segments > 0) & (predicted == 0))
    rand = isbi.rand_scores(true_segments, predicted)
    np.testing.assert_allclose((rand.split, rand.merge), brute_force_rand(true_segments, predicted))
    info = isbi.information_scores(true_segments, predicted)
    np.testing.assert_allclose(
        (info.split, info.merge), brute_force_information(true_segments, predicted)
    )


def test_thin_boundaries():
    # Odd width: the middle pixel is reached by both segments at once and stays boundary.
    np.testing.assert_array_equal(
        isbi.thin_boundaries(np.array([[1, 0, 0, 0, 2]])), [[1, 1, 0, 2, 2]]
    )
    # Even width: nothing is left.
    np.testing.assert_array_equal(isbi.thin_boundaries(np.array([[1, 0, 0, 2]])), [[1, 1, 2, 2]])
    # Boundary pixels with no segment stay 0; one segment takes all it reaches.
    np.testing.assert_array_equal(isbi.thin_boundaries(np.zeros((2, 3), int)), np.zeros((2, 3)))
    np.testing.assert_array_equal(isbi.thin_boundaries(np.array([[0, 3, 0, 0]])), [[3, 3, 3, 3]])
    # 4- vs 8-connectivity: the corner pixel is a diagonal neighbour of segment 1 only.
    segments = np.array([[1, 0], [0, 0]])
    np.testing.assert_array_equal(isbi.thin_boundaries(segments, connectivity=8), [[1, 1], [1, 1]])


def level_by_level_flood(segments, offsets):
    """Reference thinning: whole-image steps; an open pixel whose labelled neighbours all carry
    one id takes it, one with two different ids becomes a frozen boundary pixel."""
    segments = np.pad(segments.astype(np.int64), 1)  # a frame of 0s that is never open
    open_ = np.zeros(segments.shape, bool)
    open_[1:-1, 1:-1] = segments[1:-1, 1:-1] == 0
    height, width = segments.shape
    while True:
        ids = [
            np.roll(segments, (-dy, -dx), axis=(0, 1))[1 : height - 1, 1 : width - 1]
            for dy, dx in offsets
        ]
        ids = np.stack(ids)
        highest = ids.max(axis=0)
        lowest = np.where(ids > 0, ids, highest.max() + 1).min(axis=0)
        inner_open = open_[1:-1, 1:-1]
        reached = inner_open & (highest > 0)
        if not reached.any():
            return segments[1:-1, 1:-1]
        inner = segments[1:-1, 1:-1]
        single = reached & (lowest == highest)
        inner[single] = highest[single]
        inner_open &= ~reached


@pytest.mark.parametrize("connectivity", [4, 8])
def test_thinning_matches_level_by_level_reference(connectivity):
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    rng = np.random.default_rng(connectivity)
    for fraction in (0.05, 0.3, 0.6):
        segments, _ = ndimage.label(rng.random((23, 31)) < fraction)
        np.testing.assert_array_equal(
            isbi.thin_boundaries(segments, connectivity=connectivity),
            level_by_level_flood(segments, offsets),
        )


def test_thinning_makes_scores_insensitive_to_membrane_width():
    # Ground-truth membrane 1 px wide (column 3); predicted membrane 3 px (columns 2-4).
    # Thinning gives column 2 to the left cell and column 4 to the right one: perfect scores.
    label = ground_truth(3, shape=(5, 7))
    prediction = ground_truth(2, 3, 4, shape=(5, 7)).astype(float)
    thinned = isbi.isbi_scores(prediction, label)
    assert thinned["v_rand"] == pytest.approx(1.0) and thinned["v_info"] == pytest.approx(1.0)
    # Without thinning columns 2 and 4 (10 px of the 30 foreground) are singletons: A and B
    # keep 10 px each in P1, P2. joint = 100 + 100 + 10 = 210, sum_t2 = 2 * 15^2 = 450.
    unthinned = isbi.isbi_scores(prediction, label, thin=False)
    assert unthinned["v_rand_split"] == pytest.approx(210 / 450)
    assert unthinned["v_rand_merge"] == pytest.approx(1.0)
    assert thinned["pixel_misclassification"] == pytest.approx(10 / 35)
    assert unthinned["pixel_misclassification"] == pytest.approx(10 / 35)
    assert thinned["pixel_fscore"] == pytest.approx(0.8)  # TP 20, FN 10: 40 / 50


def test_pixel_misclassification_hand_computed():
    label = np.array([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]])
    prediction = label.astype(float) * 0.8 + 0.1  # 0.9 for cells, 0.1 for membrane
    prediction[0, 0] = 0.3  # cell predicted as membrane
    prediction[2, 1] = 0.7  # membrane predicted as cell
    prediction[3, 3] = 0.45  # cell predicted as membrane at 0.5, as cell at 0.4
    assert isbi.pixel_misclassification(prediction, label) == pytest.approx(3 / 16)
    assert isbi.pixel_misclassification(prediction, label, threshold=0.4) == pytest.approx(2 / 16)


def test_pixel_fscore_hand_computed():
    # The 4x4 case above: 9 cell pixels, 7 membrane. At 0.5: TP 7, FN 2 ((0,0), (3,3)),
    # FP 1 ((2,1)): precision 7/8, recall 7/9, F = 2 * 7 / (2 * 7 + 3) = 14/17. At 0.4 (3,3)
    # turns cell: TP 8, FN 1, FP 1, F = 16/18.
    label = np.array([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]])
    prediction = label.astype(float) * 0.8 + 0.1
    prediction[0, 0], prediction[2, 1], prediction[3, 3] = 0.3, 0.7, 0.45
    assert isbi.pixel_fscore(prediction, label) == pytest.approx(14 / 17)
    assert isbi.pixel_fscore(prediction, label * 255, threshold=0.4) == pytest.approx(8 / 9)
    scores = isbi.isbi_scores(prediction, label)
    assert scores["pixel_fscore"] == pytest.approx(14 / 17)
    # 1 - F = 3/17 is not the misclassification rate 3/16.
    assert scores["pixel_misclassification"] == pytest.approx(3 / 16)
    with pytest.raises(ValueError, match="shapes differ"):
        isbi.pixel_fscore(prediction, label[:3])


def test_pixel_fscore_conventions_where_a_count_is_zero():
    cells, membrane = np.ones((2, 3)), np.zeros((2, 3))
    # No false positive: precision 1; no false negative: recall 1.
    assert isbi.pixel_fscore(membrane, membrane) == 1.0  # nothing to find, nothing found
    assert isbi.pixel_fscore(membrane, cells) == 0.0  # precision 1, recall 0
    assert isbi.pixel_fscore(cells, membrane) == 0.0  # precision 0, recall 1
    half = np.array([[1, 1, 1], [0, 0, 0]])
    assert isbi.pixel_fscore(1 - half, half) == 0.0  # TP 0, FP 3, FN 3: P + R = 0
    assert isbi.pixel_fscore(cells, half) == pytest.approx(2 / 3)  # P 1/2, R 1


def test_pixel_fscore_of_a_stack_pools_the_slices():
    # Slice 0: TP 3, FN 1 (F 6/7). Slice 1: TP 0, FP 1, FN 1 (F 0). Pooled: TP 3, FP 1, FN 2,
    # F = 6/9, not the slice average 3/7.
    label = np.array([[[1, 1], [1, 1]], [[1, 0], [0, 0]]])
    prediction = np.array([[[1, 1], [1, 0]], [[0, 1], [0, 0]]], float)
    assert isbi.pixel_fscore(prediction[0], label[0]) == pytest.approx(6 / 7)
    assert isbi.pixel_fscore(prediction[1], label[1]) == 0.0
    assert isbi.pixel_fscore(prediction, label) == pytest.approx(2 / 3)
    assert isbi.isbi_scores(prediction, label)["pixel_fscore"] == pytest.approx(2 / 3)
    assert isbi.isbi_scores(prediction, label)["pixel_misclassification"] == pytest.approx(3 / 8)


def test_isbi_pixel_error_is_one_minus_the_best_fscore_not_the_misclassification():
    # 10 cell pixels: 7 at 0.9, 3 at 0.35. 10 membrane pixels: 4 at 0.45, 6 at 0.05.
    #   threshold 0.0:      TP 10, FP 10, FN 0  F = 20/30  misclassified 10/20
    #   0.1, 0.2, 0.3:      TP 10, FP 4,  FN 0  F = 20/24  misclassified  4/20
    #   0.4:                TP 7,  FP 4,  FN 3  F = 14/21  misclassified  7/20
    #   0.5 ... 0.8:        TP 7,  FP 0,  FN 3  F = 14/17  misclassified  3/20
    #   0.9, 1.0:           TP 0,  FP 0,  FN 10 F = 0      misclassified 10/20
    label = np.array([1] * 10 + [0] * 10).reshape(4, 5)
    prediction = np.array([0.9] * 7 + [0.35] * 3 + [0.45] * 4 + [0.05] * 6).reshape(4, 5)
    best = isbi.best_isbi_scores(prediction, label)
    assert best["pixel_fscore"] == pytest.approx(5 / 6) and best["pixel_fscore_threshold"] == 0.1
    assert best["isbi_pixel_error"] == pytest.approx(1 / 6)
    assert best["pixel_misclassification"] == pytest.approx(3 / 20)
    assert best["pixel_misclassification_threshold"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_fscore_equals_the_count_formula_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    label = rng.random((3, 9, 11)) < 0.7
    prediction = np.clip(label + rng.normal(0, 0.4, label.shape), 0, 1)
    for threshold in (0.2, 0.5, 0.8):
        cell = prediction > threshold
        tp, fp, fn = np.sum(cell & label), np.sum(cell & ~label), np.sum(~cell & label)
        assert tp > 0 and fp > 0 and fn > 0
        want = 2 * tp / (2 * tp + fp + fn)
        assert isbi.pixel_fscore(prediction, label, threshold=threshold) == pytest.approx(want)


def test_best_over_thresholds_and_stacks():
    label = ground_truth(2, 4)
    # Membrane probability 0.55 looks like cell for thresholds below 0.55: the first threshold
    # that gets everything right is 0.6 (cells are 0.8, still cell at 0.7).
    prediction = np.where(label > 0, 0.8, 0.55)
    best = isbi.best_isbi_scores(prediction, label)
    assert best["v_rand"] == pytest.approx(1.0) and best["v_rand_threshold"] == 0.6
    assert best["v_info"] == pytest.approx(1.0) and best["v_info_threshold"] == 0.6
    assert best["pixel_misclassification"] == 0.0
    assert best["pixel_misclassification_threshold"] == 0.6
    assert best["pixel_fscore"] == 1.0 and best["pixel_fscore_threshold"] == 0.6
    assert best["isbi_pixel_error"] == 0.0
    at_half = isbi.isbi_scores(prediction, label, threshold=0.5)
    assert at_half["v_rand"] < 1.0
    # A stack scores slice by slice and averages.
    other = ground_truth(2).astype(float)
    stack = isbi.isbi_scores(np.stack([prediction, other]), np.stack([label, label]), threshold=0.6)
    single = isbi.isbi_scores(other, label, threshold=0.6)
    assert stack["v_rand"] == pytest.approx((1.0 + single["v_rand"]) / 2)
    with pytest.raises(ValueError, match="shape"):
        isbi.isbi_scores(prediction, label[:3])


def test_connectivity_of_ground_truth_segments():
    # Two cells touching only diagonally: two segments with 4-connectivity, one with 8.
    label = np.array([[1, 0], [0, 1]])
    merged = np.ones((2, 2))
    four = isbi.isbi_scores(merged, label, connectivity=4)
    # 4-connectivity: A = {(0,0)}, B = {(1,1)}, one predicted segment: joint = 2,
    # sum_t2 = 2, sum_s2 = 4 -> merge 1/2.
    assert four["v_rand_merge"] == pytest.approx(0.5)
    eight = isbi.isbi_scores(merged, label, connectivity=8)
    assert eight["v_rand"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="connectivity"):
        isbi.isbi_scores(merged, label, connectivity=6)


def test_empty_ground_truth_foreground_is_nan():
    scores = isbi.rand_scores(np.zeros((3, 3), int), np.ones((3, 3), int))
    assert all(math.isnan(v) for v in scores)
