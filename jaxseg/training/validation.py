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


def sample_panel(samples: dict, class_names: tuple[str, ...]) -> np.ndarray | None:
    """The logged examples as one picture, ``uint8 [height, width, 3]``: a row of input, ground
    truth and prediction per example, with a class legend (``visualize.panel``); ``None`` when
    no example is logged."""
    if not len(samples["label"]):
        return None
    return visualize.panel(samples["image"], samples["label"], samples["prediction"], class_names)
