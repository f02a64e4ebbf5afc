"""The per-example host transforms of the input pipeline: padding (mirror for images, ignore for
labels), random crops for training, padding to a fixed size for evaluation, and batching with
invalid padding examples."""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from jaxseg.data import pixels
from jaxseg.data.specs import IGNORE_INDEX


def pad_example(example: dict, size: tuple[int, int], margin: int) -> dict:
    """Pads by ``margin`` on every side, then at the bottom/right up to at least ``size``.

    The image is mirror-extended (as in the U-Net paper), labels are padded with
    ``IGNORE_INDEX`` and weights with 0, so padded pixels never count.
    """
    h, w = example["label"].shape
    extra_h, extra_w = max(size[0] - h - 2 * margin, 0), max(size[1] - w - 2 * margin, 0)
    pad = ((margin, margin + extra_h), (margin, margin + extra_w))
    out = {"image": np.pad(example["image"], (*pad, (0, 0)), mode="reflect")}  # As inference.
    out["label"] = np.pad(example["label"], pad, constant_values=IGNORE_INDEX)
    if "weight" in example:
        out["weight"] = np.pad(example["weight"], pad)
    return out


@dataclasses.dataclass
class RandomCrop(grain.transforms.RandomMap):
    """Training: pad (see ``pad_example``) and take a random ``size`` window."""

    size: tuple[int, int]
    margin: int = 0

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        example = pad_example(example, self.size, self.margin)
        h, w = example["label"].shape
        top = rng.integers(0, h - self.size[0] + 1)
        left = rng.integers(0, w - self.size[1] + 1)
        return {
            k: v[top : top + self.size[0], left : left + self.size[1]] for k, v in example.items()
        }


@dataclasses.dataclass
class PadToSize(grain.transforms.Map):
    """Evaluation: pad (see ``pad_example``) to exactly ``size``; a larger image is an error."""

    size: tuple[int, int]
    margin: int = 0

    def map(self, example: dict) -> dict:
        h, w = example["label"].shape
        if h + 2 * self.margin > self.size[0] or w + 2 * self.margin > self.size[1]:
            raise ValueError(
                f"evaluation image of size {(h, w)} (+ margin {self.margin}) does not fit the "
                f"evaluation input size {self.size}; raise config.eval_size"
            )
        return {**pad_example(example, self.size, self.margin), "valid": np.bool_(True)}


class ToFloat(grain.transforms.Map):
    """Image -> float32 by its type's scale (``pixels.to_unit``): uint8 / 255, uint16 / 65535,
    float as it is."""

    def map(self, example: dict) -> dict:
        return {**example, "image": pixels.to_unit(example["image"])}


def pad_batch(batch_size: int, examples) -> dict:
    """Stacks examples and pads with all-ignore, invalid examples up to ``batch_size``."""
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    missing = batch_size - len(examples)
    if missing:
        batch = {k: np.concatenate([v, padding_like(k, v, missing)]) for k, v in batch.items()}
    return batch


def padding_like(key: str, value: np.ndarray, count: int) -> np.ndarray:
    """``count`` padding examples shaped like ``value``: ignored labels, invalid, zero images."""
    fill = {"label": IGNORE_INDEX, "valid": False}.get(key, 0)
    return np.full((count, *value.shape[1:]), fill, value.dtype)
