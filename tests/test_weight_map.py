"""The U-Net border weight map against exact values on crafted labels and a brute force."""

import math

import numpy as np
from scipy import ndimage

from jaxseg.data.weight_map import border_weight_map, nearest_object_distances


def two_cells_with_gap():
    """8 x 40: background cols 0-9, cell A cols 10-14, gap cols 15-16, cell B cols 17-21."""
    label = np.zeros((8, 40), np.int32)
    label[:, 10:15] = 1
    label[:, 17:22] = 1
    return label


def test_border_weight_map_two_cells_exact():
    label = two_cells_with_gap()
    weights = border_weight_map(label, w0=10.0, sigma=5.0)
    # w_c: N = 320 pixels, 80 cell, 240 background, C = 2 classes:
    # cell 320 / (2 * 80) = 2, background 320 / (2 * 240) = 2/3.
    w_cell, w_bg = 2.0, 2.0 / 3.0

    def separation(d1, d2):
        return 10.0 * math.exp(-((d1 + d2) ** 2) / (2 * 5.0**2))

    np.testing.assert_allclose(weights[label == 1], w_cell, rtol=1e-6)
    # Gap col 15: d1 = 1 (A's col 14), d2 = 2 (B's col 17); col 16 symmetric.
    np.testing.assert_allclose(weights[:, 15], w_bg + separation(1, 2), rtol=1e-6)
    np.testing.assert_allclose(weights[:, 16], w_bg + separation(1, 2), rtol=1e-6)
    # Col 9, next to A: d1 = 1, d2 = 8 (col 17). Col 22, next to B: d1 = 1, d2 = 8 (col 14).
    np.testing.assert_allclose(weights[:, 9], w_bg + separation(1, 8), rtol=1e-6)
    np.testing.assert_allclose(weights[:, 22], w_bg + separation(1, 8), rtol=1e-6)
    # Far away: col 0 (d1 = 10, d2 = 17) and col 39 (d1 = 18, d2 = 25): ~ w_c.
    np.testing.assert_allclose(weights[:, 0], w_bg, atol=1e-5)
    np.testing.assert_allclose(weights[:, 39], w_bg, atol=1e-7)
    assert weights.dtype == np.float32

    plain = border_weight_map(label, class_balance=False)
    np.testing.assert_allclose(plain[label == 1], 1.0)
    np.testing.assert_allclose(plain[:, 15], 1.0 + separation(1, 2), rtol=1e-6)


def test_border_weight_map_few_objects_classes_and_ignore():
    label = two_cells_with_gap()
    one_cell = np.where(np.arange(40) < 17, label, 0)
    weights = border_weight_map(one_cell)
    # 40 cell pixels, 280 background: no second object, so w = w_c everywhere.
    np.testing.assert_allclose(weights[one_cell == 1], 320 / (2 * 40), rtol=1e-6)
    np.testing.assert_allclose(weights[one_cell == 0], 320 / (2 * 280), rtol=1e-6)
    np.testing.assert_allclose(border_weight_map(np.zeros((5, 5), int)), 1.0)

    # Objects of two classes that touch stay two objects: pixel (1, 1) under the class-1 object
    # has d1 = 1 and d2 = sqrt(2) (diagonal to the class-2 object's (0, 2)). When both classes
    # are one class they form one object: no term.
    label = np.zeros((3, 5), np.int32)
    label[0, 0:2] = 1
    label[0, 2:4] = 2
    with_two = border_weight_map(label, foreground=(1, 2), class_balance=False)
    np.testing.assert_allclose(
        with_two[1, 1], 1.0 + 10.0 * math.exp(-((1 + math.sqrt(2)) ** 2) / 50), rtol=1e-6
    )
    merged = border_weight_map(np.minimum(label, 1), class_balance=False)
    np.testing.assert_allclose(merged, 1.0)

    # Ignore pixels weigh 0 and are left out of the class frequencies.
    label = np.array([[0, 0, 1, 255]])
    weights = border_weight_map(label, ignore_label=255)
    np.testing.assert_allclose(weights, [[3 / 4, 3 / 4, 3 / 2, 0.0]])


def brute_force_two_nearest(objects):
    ids = [k for k in np.unique(objects) if k > 0]
    ys, xs = np.indices(objects.shape)
    distances = []
    for k in ids:
        py, px = np.nonzero(objects == k)
        d = np.sqrt((ys[..., None] - py) ** 2 + (xs[..., None] - px) ** 2).min(axis=-1)
        distances.append(d)
    distances = np.sort(np.stack(distances), axis=0)
    return distances[0], distances[1]


def test_nearest_object_distances_match_brute_force():
    rng = np.random.default_rng(3)
    objects, count = ndimage.label(rng.random((24, 20)) < 0.25)
    objects[objects == 3] = 0  # a gap in the ids
    assert count > 5
    want1, want2 = brute_force_two_nearest(objects)
    d1, d2 = nearest_object_distances(objects)
    np.testing.assert_allclose(d1, want1)
    np.testing.assert_allclose(d2, want2)
    # With a cut-off: exact up to it, inf beyond.
    d1, d2 = nearest_object_distances(objects, max_distance=2.5)
    for got, want in ((d1, want1), (d2, want2)):
        near = want <= 2.5
        np.testing.assert_allclose(got[near], want[near])
        assert np.all(np.isinf(got[~near]))


def voronoi_cells(size, num_cells, seed=0):
    """An ISBI-like label: Voronoi cells (1) separated by 1-2 pixel membranes (0)."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((size, size), np.int32)
    points = rng.integers(0, size, size=(num_cells, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, num_cells + 1)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    cells = seeds[iy, ix]
    membrane = np.zeros(cells.shape, bool)
    membrane[:-1] |= cells[:-1] != cells[1:]
    membrane[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    return np.where(membrane, 0, 1).astype(np.int32)


def test_border_weight_map_on_512_voronoi_cells():
    label = voronoi_cells(512, 200)
    weights = border_weight_map(label)
    assert weights.shape == label.shape and np.all(np.isfinite(weights))
    w_bg = label.size / (2 * np.sum(label == 0))
    assert weights[label == 0].max() <= w_bg + 10.0 + 1e-4
    assert weights[label == 0].max() > w_bg + 8.0  # 1-pixel membranes: d1 = d2 = 1
