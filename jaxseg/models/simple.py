"""The two small networks of the tutorial source, layer for layer, in NHWC.

``SimpleFCN``: two (3x3 conv + ReLU + 2x2 max pool) stages, then two 2x2 stride-2
up-convolutions (ReLU between them); no skips. ``SimpleUNet``: four double-conv blocks
(64, 128, 256, 512 channels, 3x3 'same' convolutions + ReLU), three 2x2 up-convolutions
halving the channels, encoder features concatenated, and a final 1x1 convolution.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.geometry import Geometry
from jaxseg.models.layers import UpConv, max_pool_2x2

Dtype = Any


class SimpleFCN(nn.Module):
    """Encoder of two conv + pool stages and a decoder of two up-convolutions.

    Attributes:
      num_classes: channels of the output logits.
      dtype: compute dtype (``None``: float32); logits are always float32.
      param_dtype: parameter dtype.
    """

    num_classes: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def geometry(self) -> Geometry:
        return Geometry("simple_fcn", size_multiple=4, alignment=4)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Maps ``[batch, H, W, C]`` (H and W divisible by 4) to ``[batch, H, W, num_classes]``."""
        del train  # No layer behaves differently in training.
        self.geometry().check_input(x.shape[1:3])
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = max_pool_2x2(nn.relu(nn.Conv(64, (3, 3), padding=1, name="enc_conv1", **kw)(x)))
        x = max_pool_2x2(nn.relu(nn.Conv(128, (3, 3), padding=1, name="enc_conv2", **kw)(x)))
        x = nn.relu(UpConv(64, name="dec_upconv1", **kw)(x))
        x = UpConv(self.num_classes, name="dec_upconv2", **kw)(x)
        return x.astype(jnp.float32)


class SimpleUNet(nn.Module):
    """Three poolings, 'same' convolutions, skips fused by concatenation.

    Attributes:
      num_classes: channels of the output logits.
      dtype: compute dtype (``None``: float32); logits are always float32.
      param_dtype: parameter dtype.
    """

    num_classes: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def _block(self, x: jnp.ndarray, features: int, name: str) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.relu(nn.Conv(features, (3, 3), padding=1, name=f"{name}_conv1", **kw)(x))
        return nn.relu(nn.Conv(features, (3, 3), padding=1, name=f"{name}_conv2", **kw)(x))

    def geometry(self) -> Geometry:
        return Geometry("simple_unet", size_multiple=8, alignment=8)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Maps ``[batch, H, W, C]`` (H and W divisible by 8) to ``[batch, H, W, num_classes]``."""
        del train
        self.geometry().check_input(x.shape[1:3])
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        enc1 = self._block(x, 64, "enc1")
        enc2 = self._block(max_pool_2x2(enc1), 128, "enc2")
        enc3 = self._block(max_pool_2x2(enc2), 256, "enc3")
        enc4 = self._block(max_pool_2x2(enc3), 512, "enc4")
        x = enc4
        for i, skip in enumerate((enc3, enc2, enc1), start=1):
            up = UpConv(skip.shape[-1], name=f"upconv{i}", **kw)(x)
            x = self._block(jnp.concatenate([up, skip], axis=-1), skip.shape[-1], f"dec{i}")
        x = nn.Conv(self.num_classes, (1, 1), name="final_conv", **kw)(x)
        return x.astype(jnp.float32)
