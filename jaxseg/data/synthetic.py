"""The embedded default dataset: procedurally generated scenes, made locally in seconds.

Each 96x96 RGB scene has a textured, noisy background and 4 to 10 objects of four classes
(disc, box, triangle, thin line) drawn in random order, so later objects occlude earlier ones.
Colours overlap between classes; what separates them is shape and texture (smooth discs,
striped boxes, checkered triangles), and thin lines one or two pixels wide need full-resolution
detail, so skip connections matter (FCN-8s beats FCN-32s here). Example ``i`` of a split is
drawn from ``numpy.random.default_rng([split_seed, i])``: the dataset is deterministic.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data import files
from jaxseg.data.builders import LocalBuilder, features

IMAGE_SIZE = 96
SPLITS = {"train": (600, 1), "validation": (100, 2)}  # name -> (examples, seed)
DISC, BOX, TRIANGLE, LINE = 1, 2, 3, 4


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    coarse = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _shape_mask(rng, cls: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    size = yy.shape[0]
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c  # Rotated frame.
    if cls == DISC:
        a, b = rng.uniform(5, 14, 2)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if cls == BOX:
        a, b = rng.uniform(5, 13, 2)
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if cls == TRIANGLE:
        r = rng.uniform(8, 16)
        inside = np.ones_like(u, bool)
        for k in range(3):  # Three half-planes of an equilateral triangle.
            t = 2 * np.pi * k / 3
            inside &= u * np.cos(t) + v * np.sin(t) <= r / 2
        return inside
    # Thin line: a gentle sine curve along u, one or two pixels wide.
    amplitude, period = rng.uniform(2, 8), rng.uniform(20, 60)
    half_width = rng.choice([0.5, 1.0])
    length = rng.uniform(25, 60)
    return (np.abs(v - amplitude * np.sin(2 * np.pi * u / period)) <= half_width) & (
        np.abs(u) <= length
    )


def _texture(rng, cls: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Per-class texture in [0, 1]: smooth, stripes, checker, or flat."""
    period = rng.uniform(3, 6)
    phase = rng.uniform(0, 2 * np.pi)
    if cls == BOX:
        angle = rng.uniform(0, np.pi)
        return 0.5 + 0.5 * np.sin(
            (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase
        )
    if cls == TRIANGLE:
        return ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float64)
    if cls == DISC:
        return _smooth_noise(rng, yy.shape[0], 3)
    return np.ones_like(yy)


def make_example(seed: int, index: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Generates scene ``index`` of the split seeded ``seed``.

    Returns:
      ``(image uint8 [size, size, 3], mask uint8 [size, size])`` with classes 0 (background),
      1 disc, 2 box, 3 triangle, 4 thin line.
    """
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    base = rng.uniform(0.2, 0.8, 3)
    shade = _smooth_noise(rng, size, 4)[..., None]
    grain = _smooth_noise(rng, size, 24)[..., None]
    image = base * (0.6 + 0.4 * shade) + 0.15 * (grain - 0.5)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(4, 11)):
        cls = int(rng.choice([DISC, BOX, TRIANGLE, LINE], p=[0.3, 0.25, 0.25, 0.2]))
        region = _shape_mask(rng, cls, yy, xx)
        colour = rng.uniform(0.05, 0.95, 3)
        texture = _texture(rng, cls, yy, xx)[..., None]
        contrast = rng.uniform(0.3, 0.6)
        pixels = np.clip(colour * (1 - contrast) + contrast * texture * colour, 0, 1)
        image[region] = pixels[region]
        mask[region] = cls
    image = image + rng.normal(0, 0.04, image.shape)
    return files.to_uint8(np.clip(image, 0, 1)), mask


class SyntheticShapes(LocalBuilder):
    """Procedurally generated scenes: background, disc, box, triangle, thin line (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(3),
            supervised_keys=("image", "segmentation_mask"),
            disable_shuffling=True,  # Examples stay in file / index order.
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(n, seed) for split, (n, seed) in SPLITS.items()}

    def _generate_examples(self, num_examples: int, seed: int):
        for index in range(num_examples):
            image, mask = make_example(seed, index)
            yield (
                index,
                {
                    "image": files.encode_png(image),
                    "segmentation_mask": files.encode_png(mask),
                    "file_name": f"scene_{seed}_{index:04d}.png",
                },
            )
