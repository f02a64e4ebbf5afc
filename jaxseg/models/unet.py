"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015).

By default the paper's network: four 2x2 max poolings, 64 features at the top level doubling
per level, two unpadded 3x3 convolutions + ReLU per block, 2x2 up-convolutions that halve the
channels, encoder features centre-cropped and concatenated, and a final 1x1 convolution. With
one input channel and two classes it has 31,030,658 parameters and maps 572x572 to 388x388.

Parameters read in data-flow order: ``0_down_{i}``, ``1_bottleneck``, ``2_up_{i}``, ``3_head``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.geometry import Geometry
from jaxseg.models.layers import UpConv, center_crop, max_pool_2x2

Dtype = Any

PADDINGS = ("VALID", "SAME")
UPSAMPLINGS = ("upconv", "bilinear")
SKIPS = ("concat", "add", "none")


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by (optional) batch norm and a ReLU."""

    features: int
    padding: str = "VALID"
    batch_norm: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        for i in (1, 2):
            x = nn.Conv(
                self.features,
                (3, 3),
                padding=self.padding,
                use_bias=not self.batch_norm,
                kernel_init=nn.initializers.he_normal(),  # The paper's sqrt(2 / N) init.
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{i}",
            )(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    momentum=0.9,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"bn{i}",
                )(x, use_running_average=not train)  # A call argument: see training.frozen.
            x = nn.relu(x)
        return x


class UpStage(nn.Module):
    """Upsample 2x, halving the channels, fuse the (centre-cropped) skip, then a ``ConvBlock``."""

    features: int
    padding: str = "VALID"
    batch_norm: bool = False
    upsampling: str = "upconv"
    skip: str = "concat"
    remat: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, skip: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.upsampling == "upconv":
            x = UpConv(self.features, kernel_size=2, stride=2, name="upconv", **kw)(x)
        else:
            n, h, w, c = x.shape
            x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method="bilinear")
            x = nn.Conv(self.features, (1, 1), name="reduce", **kw)(x)
        skip = center_crop(skip, x.shape[1], x.shape[2])
        if self.skip == "concat":
            x = jnp.concatenate([skip, x], axis=-1)
        elif self.skip == "add":
            x = x + skip.astype(x.dtype)
        block = nn.remat(ConvBlock, static_argnums=(2,)) if self.remat else ConvBlock
        return block(self.features, self.padding, self.batch_norm, name="block", **kw)(x, train)


class UNet(nn.Module):
    """U-Net with the paper's defaults and options for ablations.

    Attributes:
      num_classes: channels of the output logits.
      depth: number of poolings (the paper: 4).
      base_features: features at the top level, doubled per level (the paper: 64).
      padding: ``'VALID'`` (the paper: output smaller than input; see
        ``jaxseg.models.unet_output_size``) or ``'SAME'`` (output size = input size).
      batch_norm: batch norm after every convolution (convolutions then have no bias).
      dropout_rate: dropout at the end of the contracting path (on the deepest encoder features
        and the bottleneck output); 0 disables it.
      upsampling: ``'upconv'`` (2x2 up-convolution) or ``'bilinear'`` (bilinear resize + 1x1 conv).
      skip: how encoder features are fused: ``'concat'`` (the paper), ``'add'`` or ``'none'``.
      remat: recompute each block's activations in the backward pass to save memory.
      dtype: compute dtype (``None``: float32); logits are always float32.
      param_dtype: parameter dtype.
    """

    num_classes: int
    depth: int = 4
    base_features: int = 64
    padding: str = "VALID"
    batch_norm: bool = False
    dropout_rate: float = 0.0
    upsampling: str = "upconv"
    skip: str = "concat"
    remat: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        _check_choice("padding", self.padding, PADDINGS)
        _check_choice("upsampling", self.upsampling, UPSAMPLINGS)
        _check_choice("skip", self.skip, SKIPS)
        if self.depth < 1 or self.base_features < 1 or self.num_classes < 1:
            raise ValueError(
                "UNet needs depth, base_features and num_classes >= 1; got "
                f"{self.depth}, {self.base_features}, {self.num_classes}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"UNet dropout_rate must be in [0, 1); got {self.dropout_rate}")
        super().__post_init__()

    def geometry(self) -> Geometry:
        factor = 2**self.depth
        if self.padding == "VALID":
            return Geometry("unet", alignment=factor, valid_depth=self.depth)
        name = f"A 'SAME'-padded U-Net of depth {self.depth}"
        return Geometry(name, size_multiple=factor, alignment=factor)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Maps ``[batch, H, W, C]`` to ``[batch, H', W', num_classes]`` float32 logits.

        ``H' = H`` for ``'SAME'`` padding, ``unet_output_size(H, depth)`` for ``'VALID'``.
        """
        self.geometry().check_input(x.shape[1:3])
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block_kw = dict(padding=self.padding, batch_norm=self.batch_norm, **kw)
        block = nn.remat(ConvBlock, static_argnums=(2,)) if self.remat else ConvBlock
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)

        skips = []
        for level in range(self.depth):
            if level:
                x = max_pool_2x2(x)
            x = block(self.base_features * 2**level, name=f"0_down_{level}", **block_kw)(x, train)
            if level == self.depth - 1 and self.dropout_rate:
                x = dropout(x)
            skips.append(x)
        x = max_pool_2x2(x)
        x = block(self.base_features * 2**self.depth, name="1_bottleneck", **block_kw)(x, train)
        if self.dropout_rate:
            x = dropout(x)
        for i, skip in enumerate(reversed(skips)):
            x = UpStage(
                skip.shape[-1],
                upsampling=self.upsampling,
                skip=self.skip,
                remat=self.remat,
                name=f"2_up_{i}",
                **block_kw,
            )(x, skip, train)
        x = nn.Conv(self.num_classes, (1, 1), name="3_head", **kw)(x)
        return x.astype(jnp.float32)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"UNet {field} must be one of {choices}; got {value!r}")
