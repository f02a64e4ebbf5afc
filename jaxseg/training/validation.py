"""Validation during training: one pass over the evaluation split, and the image panels logged."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from jaxseg import data, parallel, visualize


def validate(state, eval_loader: data.EvalLoader, eval_fn: Callable, batch_sharding) -> tuple:
    """Runs the (jitted) ``eval_step`` over the split once.

    Returns:
      ``(metrics, samples)``: the FCN paper's four metrics, per-class IoU / Dice and the
      number of counted pixels; the first batch's logging samples (host arrays).
    """
    confusion, samples = None, None
    for batch in eval_loader:
        c, s = eval_fn(state, parallel.global_batch(batch, batch_sharding))
        confusion = c if confusion is None else confusion.merge(c)
        samples = s if samples is None else samples
    result = {**confusion.compute(), "num_pixels": int(np.asarray(confusion.matrix).sum())}
    return result, jax.device_get(samples)


def sample_panels(samples: dict, num_classes: int) -> np.ndarray:
    """Rows of (input, ground truth overlay, prediction overlay) as ``uint8 [n, H, 3W, 3]``."""
    rows = []
    for image, label, prediction in zip(samples["image"], samples["label"], samples["prediction"]):
        shown = visualize.overlay(image, np.full(label.shape, -1), num_classes, alpha=0.0)
        truth = visualize.overlay(image, label, num_classes)
        predicted = visualize.overlay(image, prediction, num_classes)
        rows.append(np.concatenate([shown, truth, predicted], axis=1))
    return np.stack(rows) if rows else np.zeros((0, 1, 1, 3), np.uint8)
