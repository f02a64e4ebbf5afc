"""Input normalisation, in one place: part of the model, so that training, evaluation,
prediction and export apply exactly the same one.

Images reach every model as float32 in [0, 1] (the loader's ``uint8 / 255``, ``Predictor``'s
input, the export's ``uint8`` input divided inside). ``Normalized`` wraps a model and maps them to
what its weights expect before the first layer; it shares the wrapped model's scope, so the
parameter tree (and every checkpoint) is the same with or without it.

Choices (``config.normalization``):

* ``'unit'``: [0, 1] as is (jaxseg's default; nothing is wrapped);
* ``'imagenet'``: ``(x - mean) / std`` per RGB channel with ImageNet's statistics, as torchvision
  and timm weights expect;
* ``'caffe'``: RGB -> BGR, ``255 x - mean`` with the BGR means of Caffe's VGG16 (the FCN paper's
  weights), no division;
* ``'statistics'``: ``(x - mean) / std`` with per-channel ``stats = (mean, std)`` on the [0, 1]
  scale (training computes them from the training split when none are given, and records them
  in the run's ``config.json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # On the 0-255 scale, in B, G, R order.
CHOICES = ("unit", "imagenet", "caffe", "statistics")


class Normalized(nn.Module):
    """``inner`` applied to ``(scale * x[..., order] - mean) / std``; everything else passes."""

    inner: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    reverse_channels: bool = False

    def setup(self):
        nn.share_scope(self, self.inner)  # The inner model's parameters keep their names.

    def __call__(self, x, *args, **kwargs):
        if self.reverse_channels:
            x = x[..., ::-1]
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        return self.inner((self.scale * x - mean) / std, *args, **kwargs)

    def geometry(self):
        return self.inner.geometry()


def describe(name: str, num_channels: int, stats: Sequence = ()) -> dict[str, Any]:
    """What normalisation ``name`` does, as recorded in an export's sidecar: ``{'name', 'mean',
    'std', 'scale', 'bgr'}`` (mean and std per channel, on the ``scale``).

    Raises:
      ValueError: an unknown name, RGB statistics for other data, or bad ``stats``.
    """
    if name not in CHOICES:
        raise ValueError(f"unknown normalization {name!r}; choose one of {CHOICES}")
    ones, zeros = [1.0] * num_channels, [0.0] * num_channels
    if name == "unit":
        return {"name": name, "mean": zeros, "std": ones, "scale": 1.0, "bgr": False}
    if name == "statistics":
        mean, std = _statistics(stats, num_channels)
        return {"name": name, "mean": mean, "std": std, "scale": 1.0, "bgr": False}
    if num_channels != 3:
        raise ValueError(
            f"normalization {name!r} is for RGB images; this data has {num_channels} channel(s)"
        )
    if name == "imagenet":
        return {"name": name, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "scale": 1.0, "bgr": False}  # fmt: skip
    return {"name": name, "mean": list(CAFFE_BGR_MEAN), "std": ones, "scale": 255.0, "bgr": True}


def _statistics(stats: Sequence, num_channels: int) -> tuple[list[float], list[float]]:
    try:
        mean, std = ([float(v) for v in values] for values in stats)
    except (TypeError, ValueError):
        raise ValueError(
            f"normalization_stats must be (means, stds), one per channel; got {stats!r}"
        ) from None
    if len(mean) != num_channels or len(std) != num_channels or min(std) <= 0:
        raise ValueError(
            f"normalization_stats needs {num_channels} means and {num_channels} positive stds; "
            f"got {stats!r}"
        )
    return mean, std


def normalized(model: nn.Module, name: str, num_channels: int, stats: Sequence = ()) -> nn.Module:
    """``model`` wrapped in ``Normalized`` for ``name`` ('unit': ``model`` itself)."""
    d = describe(name, num_channels, stats)
    if name == "unit":
        return model
    return Normalized(model, tuple(d["mean"]), tuple(d["std"]), d["scale"], d["bgr"])


def channel_statistics(images: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``[H, W, C]`` images as the model receives them
    before normalisation (float: uint8 / 255, uint16 / 65535, float as stored; a uint8 image is
    divided by 255 here), every pixel counted once, for ``config.normalization_stats``."""
    total = total_sq = 0.0
    count = 0
    for image in images:
        x = np.asarray(image, np.float64).reshape(-1, image.shape[-1])
        if image.dtype == np.uint8:
            x /= 255.0
        total = total + x.sum(0)
        total_sq = total_sq + (x * x).sum(0)
        count += x.shape[0]
    if not count:
        raise ValueError("no images to compute normalization statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return [float(m) for m in mean], [float(s) for s in std]
