"""The evaluation panel: layout, legend, scaling, ignored pixels; the PNG files and the
TensorBoard image a training run writes."""

import os

import numpy as np
from event_files import tensorboard_images
from PIL import Image
from trained_run import same_run  # noqa: F401 (a fixture)

from jaxseg import summary, visualize

NAMES = ("background", "cat", "dog", "bird", "fish")


def blocks(panel, colour, size):
    """Top-left corners of the ``size`` x ``size`` blocks of ``panel`` all of ``colour``."""
    hit = np.all(panel == np.asarray(colour, np.uint8), -1).astype(np.int64)
    sums = np.pad(hit.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    full = sums[size:, size:] - sums[:-size, size:] - sums[size:, :-size] + sums[:-size, :-size]
    return np.argwhere(full == size * size)


def tile_box(panel, colour, min_width):
    """``(top, left, height, width)`` of the pixels of ``colour`` in rows holding at least
    ``min_width`` of them (a tile, not a legend swatch)."""
    hit = np.all(panel == np.asarray(colour, np.uint8), -1)
    rows = np.flatnonzero(hit.sum(1) >= min_width)
    cols = np.flatnonzero(hit[rows].any(0))
    return rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_panel_puts_several_predictions_side_by_side():
    images = np.zeros((1, 32, 32, 3), np.float32)
    labels = np.full((1, 32, 32), 1)
    predictions = {"arm a": np.full((1, 32, 32), 2), "arm b": np.full((1, 32, 32), 3)}
    panel = visualize.panel(images, labels, predictions, NAMES)
    colours = visualize.palette(len(NAMES))
    truth, a, b = (tile_box(panel, colours[c], 256) for c in (1, 2, 3))
    assert truth[0] == a[0] == b[0] and truth[1] + 256 < a[1] and a[1] + 256 < b[1]
    assert panel.shape[1] >= 4 * 256  # Input, truth and one column per prediction.
    for x in (a[1], b[1]):  # Each prediction column has its title (dark text) above it.
        assert (panel[: truth[0], x : x + 256] < 100).all(-1).sum() > 20


def test_panel_has_a_row_per_example_labelled_columns_and_a_legend():
    ramp = np.linspace(0, 1, 32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    images = np.stack([ramp, 1 - ramp])
    labels = np.stack([np.full((32, 32), 1), np.full((32, 32), 3)])
    predictions = np.stack([np.full((32, 32), 2), np.full((32, 32), 4)])
    panel = visualize.panel(images, labels, predictions, NAMES)
    colours = visualize.palette(len(NAMES))
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3

    # 32 px tiles are shown 8x (256 px); examples in rows, truth left of prediction.
    boxes = [[tile_box(panel, colours[c], 256) for c in pair] for pair in ((1, 2), (3, 4))]
    for truth, predicted in boxes:
        assert truth[2:] == predicted[2:] == (256, 256)
        assert truth[0] == predicted[0] and truth[1] + 256 < predicted[1]
    (truth0, pred0), (truth1, _) = boxes
    assert truth1[0] >= truth0[0] + 256 and truth1[1] == truth0[1]
    assert panel.shape[0] >= 2 * 256 and panel.shape[1] >= 3 * 256
    assert panel.shape[0] < 2 * 256 + 200 and panel.shape[1] < 3 * 256 + 100

    # The input column, left of the truth, holds each input at 8x (nearest neighbour).
    top, left = truth0[0], truth0[1]
    for i, row_top in enumerate((truth0[0], truth1[0])):
        expected = np.repeat(np.repeat(visualize.display_image(images[i]), 8, 0), 8, 1)
        assert any(
            np.array_equal(panel[row_top : row_top + 256, x : x + 256], expected)
            for x in range(left - 256)
        )

    # Column titles: dark text above each column.
    for x in (left - 256 - 8, left, pred0[1]):
        assert (panel[:top, max(x, 0) : x + 256] < 100).all(-1).sum() > 20

    # The legend below the rows: a swatch in every class colour (no ignored pixel: no entry).
    below = panel[truth1[0] + 256 :]
    for colour in colours:
        assert len(blocks(below, colour, 10)), colour
    assert not len(blocks(below, visualize.IGNORE_COLOURS[0], 2))


def test_ignored_pixels_are_hatched_grey_unlike_any_class_and_get_a_legend_entry():
    labels = np.full((40, 40), -1)
    labels[:, :20] = 2
    coloured = visualize.class_colours(labels, 3)
    hatch = {tuple(c) for c in coloured[:, 20:].reshape(-1, 3)}
    assert hatch == {tuple(c) for c in visualize.IGNORE_COLOURS}
    assert not hatch & {tuple(c) for c in visualize.palette(256)}
    np.testing.assert_array_equal(
        coloured[:, :20], np.broadcast_to(visualize.palette(3)[2], (40, 20, 3))
    )

    panel = visualize.panel(
        np.zeros((1, 40, 40, 1)), labels[None], np.zeros((1, 40, 40), int), NAMES[:3]
    )
    legend = panel[-30:]  # Below the single row: the legend line.
    assert {tuple(c) for c in legend.reshape(-1, 3)} >= {tuple(c) for c in visualize.IGNORE_COLOURS}


def test_tiles_are_scaled_by_whole_factors_into_a_readable_height():
    assert visualize.display_size(32, 48) == (256, 384)
    assert visualize.display_size(96, 96) == (288, 288)
    assert visualize.display_size(300, 200) == (300, 200)
    assert visualize.display_size(1024, 2048) == (512, 1024)
    labels = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(
        visualize.resize_nearest(labels, 4, 6), np.repeat(np.repeat(labels, 2, 0), 2, 1)
    )
    big = visualize.panel(np.zeros((1, 1024, 1024, 3)), np.zeros((1, 1024, 1024), int), np.zeros((1, 1024, 1024), int), NAMES)  # fmt: skip
    assert 512 * 3 <= big.shape[1] < 512 * 3 + 100


def test_inputs_of_any_channel_count_and_range_are_shown_as_rgb():
    gray = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4, 1)
    shown = visualize.display_image(gray)
    assert shown.shape == (4, 4, 3) and (shown[..., 0] == shown[..., 2]).all()
    assert shown[0, 0, 0] == 0 and shown[-1, -1, 0] == 255
    many = np.random.default_rng(0).normal(100, 50, (4, 4, 5)).astype(np.float32)  # Not [0, 1].
    shown = visualize.display_image(many)
    assert shown.shape == (4, 4, 3) and shown.min() == 0 and shown.max() == 255
    sixteen = np.full((2, 2, 1), 65535, np.uint16)
    assert (visualize.display_image(sixteen) == 255).all()


def test_a_legend_of_many_classes_lists_only_those_shown():
    names = tuple(f"class {i}" for i in range(150))
    labels, predictions = np.full((1, 8, 8), 7), np.full((1, 8, 8), 120)
    panel = visualize.panel(np.zeros((1, 8, 8, 3)), labels, predictions, names)
    colours = visualize.palette(150)
    below = panel[256 + 40 :]
    assert len(blocks(below, colours[7], 10)) and len(blocks(below, colours[120], 10))
    assert not len(blocks(below, colours[3], 10))
    assert panel.shape[0] < 256 + 100  # One legend line, not 150.


def test_training_saves_each_evaluation_panel_as_png_and_in_tensorboard(same_run):  # noqa: F811
    # same_run: 8 steps, evaluations at 4 and 8, one logged example of 96x96, 5 classes.
    pngs = sorted(os.listdir(os.path.join(same_run, summary.PANEL_DIR)))
    assert pngs == ["eval_step_4.png", "eval_step_8.png"]
    events = tensorboard_images(os.path.join(same_run, "tensorboard"))
    assert sorted(events) == [
        ("eval/input_truth_prediction", 4),
        ("eval/input_truth_prediction", 8),
    ]
    for step in (4, 8):
        png = np.asarray(Image.open(summary.panel_path(same_run, "eval", step)).convert("RGB"))
        assert 288 <= png.shape[0] < 288 + 120 and png.shape[1] >= 3 * 288  # One row, 3x.
        np.testing.assert_array_equal(events["eval/input_truth_prediction", step][..., :3], png)
