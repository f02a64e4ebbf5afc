"""Where the tiles of ``jaxseg.inference`` go: window positions, output spans, blending weights.

Per image axis, a tiling gives each tile its first input index, the output span it writes and
(sliding windows) its blending weights; indices outside the image are mirrored (``mirror``).

* ``'overlap_tile'``, valid-padding models (U-Net paper, Fig. 2): the image is mirrored
  (``np.pad`` 'reflect') by the margin ``(tile - output tile) / 2``, and more at the bottom/right
  until output tiles cover it; output tiles partition the image. Tiles start at multiples of
  ``alignment`` (``2**depth`` for a U-Net), so each meets the pooling grid in the phase the
  whole padded image does: the stitch equals predicting the whole mirror-padded image at once.
  (Depth-4 output tiles are 4 mod 16 pixels, 388 for 572: they step by 384, dropping 4 rows.)
* ``'sliding_window'``, 'SAME' models: windows overlap by the fraction ``overlap`` (of
  ``Predictor``) and are blended with a Gaussian weight (sigma = window / 8 per axis, as nnU-Net)
  normalised by the summed weights at every pixel. Windows start at multiples of the step (itself
  a multiple of ``alignment``), and the last one ends at the image border, as in nnU-Net and
  MMSegmentation: it starts at ``size - window`` rounded up to ``alignment``, so it sees the
  pooling grid in the phase the whole image does and reaches past the border by less than
  ``alignment`` pixels, no more than predicting the whole image padded to the model's size
  multiple. An axis shorter than a window gets one window of the axis rounded up to
  ``size_multiple`` (``jaxseg.inference.for_model``: the model's size factor), which is the
  whole-image prediction, as training's evaluation makes it; without ``size_multiple`` it gets a
  full window, mirror-filled. A window side that lies on the image border is no cut (the whole
  image has that border too): its weight stays at the peak from the window's centre to that
  side, so near the border the window that ends there outweighs one that merely stops close to
  it (an image just larger than a window).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxseg.models.sizes import unet_input_size_for_output

__all__ = ["Axis", "mirror", "overlap_tile_axis", "sliding_axis", "unet_tile_size"]


def unet_tile_size(output_size: int, depth: int = 4) -> int:
    """Input tile size of a valid-padding U-Net whose output tile covers ``output_size`` pixels.

    >>> unet_tile_size(388)
    572
    """
    return unet_input_size_for_output(output_size, depth)


@dataclasses.dataclass(frozen=True)
class Axis:
    """Tiling of one axis: per tile, its first input index and the output span it writes."""

    starts: list[int]  # Image coordinates; outside [0, size) means mirrored.
    spans: list[tuple[int, int]]  # Output rows [a, b) of the image, from the tile's output row 0.
    weights: list[np.ndarray] | None  # Normalised blending weights over each span.
    tile: int  # Input tile (window) size along this axis.


def overlap_tile_axis(size: int, tile: int, out: int, alignment: int) -> Axis:
    """Output tiles stepping by ``out`` rounded down to ``alignment`` (module doc)."""
    step = out - out % alignment
    n = -(-max(size - out, 0) // step) + 1
    spans = [(i * step, size if i == n - 1 else (i + 1) * step) for i in range(n)]
    return Axis([a - (tile - out) // 2 for a, _ in spans], spans, None, tile)


def sliding_axis(
    size: int, window: int, step: int, alignment: int = 1, size_multiple: int | None = None
) -> Axis:
    """Windows at ``0, step, 2 * step, ...`` and a last one ending at the border (module doc).

    ``step`` should be a multiple of ``alignment``. The last window starts at ``size - window``
    rounded up to ``alignment``; an axis no longer than ``window`` gets one window, of the axis
    rounded up to ``size_multiple`` when given (never more than ``window``).
    """
    if size <= window:
        if size_multiple:
            window = min(window, -(-size // size_multiple) * size_multiple)
        starts = [0]
    else:
        last = -(-(size - window) // alignment) * alignment
        starts = list(range(0, last, step)) + [last]
    spans = [(a, min(a + window, size)) for a in starts]
    offset = np.arange(window) - (window - 1) / 2
    gauss = np.exp(-0.5 * (offset / (window / 8)) ** 2)
    profiles = []
    for a, b in spans:  # A side at the image border is no cut: full weight up to the centre.
        profile = gauss.copy()
        if a == 0:
            profile[offset < 0] = 1.0
        if a + window >= size:
            profile[offset > 0] = 1.0
        profiles.append(profile[: b - a])
    total = np.zeros(size)
    for (a, b), profile in zip(spans, profiles):
        total[a:b] += profile
    weights = [(p / total[a:b]).astype(np.float32) for (a, b), p in zip(spans, profiles)]
    return Axis(starts, spans, weights, window)


def mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Maps any integer index into ``[0, size)`` by reflection, as ``np.pad(mode='reflect')``."""
    if size == 1:
        return np.zeros_like(index)
    index = index % (2 * size - 2)
    return np.where(index < size, index, 2 * size - 2 - index)
