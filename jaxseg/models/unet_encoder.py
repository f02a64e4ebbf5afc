"""U-Net with a pretrainable encoder: segmentation_models_pytorch's (smp) ``Unet`` in Flax.

smp's ``Unet(encoder_name, classes=num_classes)`` with its defaults (``encoder_depth=5``,
``decoder_channels=(256, 128, 64, 32, 16)``, ``decoder_use_batchnorm=True``,
``decoder_attention_type=None``):

* the encoder (``jaxseg.models.encoders``) gives features at strides 2, 4, 8, 16, 32;
* ``decoder.center``: for VGG encoders two 3x3 conv-BN-ReLU at the head's width on the
  stride-32 feature; identity for ResNets (smp: ``center = encoder_name.startswith("vgg")``);
* ``decoder.blocks.K`` (K = 0..4): nearest-neighbour 2x upsampling, concatenation
  ``[upsampled, skip]`` with the encoder feature of the same stride (none for the last block,
  which reaches stride 1), then two 3x3 convolutions (no bias), each with batch norm and ReLU;
* ``segmentation_head``: a 3x3 convolution (with bias) to ``num_classes``, no activation.

Convolutions pad by 1 ('SAME' at stride 1) and the logits have the input's height and width,
which must be multiples of 32.

Variables follow smp's state-dict keys by the rule of ``jaxseg.models.resnet``: ``encoder.*``
-> ``encoder/...`` (torchvision ResNet/VGG names), ``decoder.center.I.J`` ->
``decoder/center_I_J``, ``decoder.blocks.K.convN.0`` (conv) / ``.1`` (batch norm) ->
``decoder/blocks_K/convN_0`` / ``convN_1``, ``segmentation_head.0`` -> ``segmentation_head_0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.encoders import ENCODERS, create_encoder
from jaxseg.models.geometry import Geometry
from jaxseg.models.resnet import batch_norm, conv

Dtype = Any

DECODER_CHANNELS = (256, 128, 64, 32, 16)

# smp's decoder: kaiming_uniform_(mode="fan_in", nonlinearity="relu"); head: xavier_uniform_.
decoder_init = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")
head_init = nn.initializers.xavier_uniform()


def conv_bn_relu(x, features: int, train: bool, prefix: str, **kw) -> jnp.ndarray:
    """smp ``Conv2dReLU`` (``prefix.0`` conv without bias, ``prefix.1`` batch norm, ReLU)."""
    x = conv(features, 3, name=f"{prefix}_0", kernel_init=decoder_init, **kw)(x)
    return nn.relu(batch_norm(train, name=f"{prefix}_1", **kw)(x))


def upsample_nearest_2x(x: jnp.ndarray) -> jnp.ndarray:
    """``F.interpolate(x, scale_factor=2, mode='nearest')`` on NHWC."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UnetDecoderBlock(nn.Module):
    """smp ``DecoderBlock``: upsample 2x, concatenate the skip, two conv-BN-ReLU."""

    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, skip: jnp.ndarray | None, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = upsample_nearest_2x(x)
        if skip is not None:
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        x = conv_bn_relu(x, self.features, train, "conv1", **kw)
        return conv_bn_relu(x, self.features, train, "conv2", **kw)


class UnetDecoder(nn.Module):
    """smp ``UnetDecoder`` on five features (strides 2 ... 32, shallowest first)."""

    decoder_channels: Sequence[int] = DECODER_CHANNELS
    center: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray], train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, *skips = features[::-1]
        if self.center:
            width = x.shape[-1]
            x = conv_bn_relu(x, width, train, "center_0", **kw)
            x = conv_bn_relu(x, width, train, "center_1", **kw)
        for k, width in enumerate(self.decoder_channels):
            skip = skips[k] if k < len(skips) else None
            x = UnetDecoderBlock(width, name=f"blocks_{k}", **kw)(x, skip, train)
        return x


class EncoderUNet(nn.Module):
    """smp's ``Unet`` on a pretrainable encoder.

    Attributes:
      num_classes: channels of the output logits (smp: ``classes``).
      encoder_name: one of ``jaxseg.models.encoders.ENCODERS``: ``vgg16``, ``vgg16_bn``,
        ``resnet18``, ``resnet34``, ``resnet50``.
      decoder_channels: output channels of the five decoder blocks (smp's default).
      dtype: compute dtype (``None``: float32); logits are always float32.
      param_dtype: parameter dtype.
    """

    num_classes: int
    encoder_name: str = "resnet34"
    decoder_channels: Sequence[int] = DECODER_CHANNELS
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        if self.encoder_name not in ENCODERS:
            raise ValueError(
                f"unknown encoder {self.encoder_name!r}; choose one of {sorted(ENCODERS)}"
            )
        if len(self.decoder_channels) != 5:
            raise ValueError(
                "EncoderUNet needs 5 decoder_channels (one per stride); got "
                f"{self.decoder_channels}"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {self.num_classes}")
        super().__post_init__()

    def geometry(self) -> Geometry:
        name = f"A U-Net on a {self.encoder_name} encoder"
        return Geometry(name, size_multiple=32, alignment=32)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Maps ``[batch, H, W, C]`` (H, W multiples of 32) to ``[batch, H, W, num_classes]``
        float32 logits."""
        self.geometry().check_input(x.shape[1:3])
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features = create_encoder(self.encoder_name, name="encoder", **kw)(x, train=train)
        x = UnetDecoder(
            self.decoder_channels,
            center=self.encoder_name.startswith("vgg"),
            name="decoder",
            **kw,
        )(features, train)
        x = conv(self.num_classes, 3, name="segmentation_head_0", use_bias=True,
                 kernel_init=head_init, **kw)(x)  # fmt: skip
        return x.astype(jnp.float32)
