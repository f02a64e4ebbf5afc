"""Colouring class maps for people: a fixed palette, coloured masks and overlays (NumPy)."""

from __future__ import annotations

import numpy as np


def palette(num_classes: int) -> np.ndarray:
    """``uint8 [num_classes, 3]``: distinct colours, the same for a class in every run.

    Uses the bit-interleaving scheme of the PASCAL VOC palette, so class ``c`` of any dataset
    gets the colour VOC gives index ``c`` (0 is black).
    """
    colours = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        value, r, g, b = c, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[c] = (r, g, b)
    return colours


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[H, W]`` class ids -> ``uint8 [H, W, 3]``; ignored pixels (negative or >= K) are white."""
    colours = np.concatenate([palette(num_classes), [[255, 255, 255]]]).astype(np.uint8)
    index = np.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return colours[index]


def overlay(
    image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5
) -> np.ndarray:
    """Blends the coloured class map over an image: ``[H, W, C]`` uint8, or float in [0, 1]."""
    image = np.asarray(image)
    image = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    image = np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]
    blended = (1 - alpha) * image + alpha * colorize(labels, num_classes) / 255.0
    return np.clip(np.rint(blended * 255), 0, 255).astype(np.uint8)
