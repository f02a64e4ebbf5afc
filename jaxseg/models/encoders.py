"""Pretrainable encoders for ``EncoderUNet``, as segmentation_models_pytorch (smp) defines them.

Each encoder maps ``[batch, H, W, C]`` to five NHWC feature maps at strides 2, 4, 8, 16 and
32, with the channels ``ENCODER_CHANNELS[name]`` lists: smp's encoder outputs without the first
(stride 1) one, which smp's ``UnetDecoder`` drops.

* ``resnet18``, ``resnet34``, ``resnet50``: ``jaxseg.models.resnet.ResNet``; the features are
  ``relu(bn1(conv1(x)))`` (stride 2), then ``layer1`` (after the 3x3 max pooling) ...
  ``layer4``.
* ``vgg16``, ``vgg16_bn``: torchvision's ``vgg16(_bn).features`` (configuration "D": 13 3x3
  convolutions with bias, each followed by [batch norm and] ReLU, five 2x2 max poolings). smp
  splits ``features`` at its max poolings: the stride-2 ... stride-16 features are the
  activations just before ``pool2`` ... ``pool5``, and the stride-32 feature is ``pool5``'s
  output (smp's own first feature, block 1 before ``pool1``, is the dropped stride-1 one).

Variables are named after the PyTorch module tree (see ``jaxseg.models.resnet`` for the
key -> path rule): a VGG layer ``features.N`` is the Flax submodule ``features_N`` (a
convolution, or with ``_bn`` a batch norm at the index after it), so a torchvision VGG state
dict (less ``classifier.*``) maps onto it by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.layers import max_pool_2x2
from jaxseg.models.resnet import ResNet, batch_norm, conv, resnet_channels

Dtype = Any

# torchvision's cfgs["D"]: convolution widths, "M" a 2x2 max pooling.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")  # fmt: skip

# torchvision VGG: kaiming_normal_(mode="fan_out", nonlinearity="relu"), zero bias.
vgg_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class VGGEncoder(nn.Module):
    """torchvision VGG16 ``features`` returning smp's features at strides 2 ... 32.

    Attributes:
      batch_norm: ``vgg16_bn`` (batch norm after every convolution) instead of ``vgg16``.
      config: the layer configuration (torchvision's "D" for VGG16).
      dtype: compute dtype (``None``: float32).
      param_dtype: parameter dtype.
    """

    batch_norm: bool = False
    config: tuple = VGG16_CONFIG
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @property
    def out_channels(self) -> tuple[int, ...]:
        before_pool = [v for v, n in zip(self.config, self.config[1:]) if n == "M"]
        return (*before_pool[1:], before_pool[-1])

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> list[jnp.ndarray]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features, index = [], 0  # ``index`` walks torchvision's ``features`` Sequential.
        for v in self.config:
            if v == "M":
                features.append(x)
                x = max_pool_2x2(x)  # MaxPool2d(2, 2): an odd edge is dropped.
                index += 1
                continue
            x = conv(v, 3, name=f"features_{index}", use_bias=True, kernel_init=vgg_conv_init,
                     **kw)(x)  # fmt: skip
            index += 1
            if self.batch_norm:
                x = batch_norm(train, name=f"features_{index}", **kw)(x)
                index += 1
            x = nn.relu(x)
            index += 1  # ReLU
        features.append(x)
        return features[1:]


def _resnet(depth: int, **kwargs) -> nn.Module:
    return ResNet(depth=depth, **kwargs)


ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": functools.partial(VGGEncoder, batch_norm=False),
    "vgg16_bn": functools.partial(VGGEncoder, batch_norm=True),
    "resnet18": functools.partial(_resnet, 18),
    "resnet34": functools.partial(_resnet, 34),
    "resnet50": functools.partial(_resnet, 50),
}

# Channels of the five features (strides 2, 4, 8, 16, 32).
ENCODER_CHANNELS: dict[str, tuple[int, ...]] = {
    "vgg16": VGGEncoder().out_channels,
    "vgg16_bn": VGGEncoder(batch_norm=True).out_channels,
    "resnet18": resnet_channels(18),
    "resnet34": resnet_channels(34),
    "resnet50": resnet_channels(50),
}


def create_encoder(encoder: str, **kwargs) -> nn.Module:
    """The encoder called ``encoder`` (a key of ``ENCODERS``); ``kwargs`` go to the module
    (``dtype``, ``param_dtype``, ``name``)."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[encoder](**kwargs)


def encoder_channels(encoder: str) -> tuple[int, ...]:
    """Channels of the encoder's five features, at strides 2, 4, 8, 16, 32.

    >>> encoder_channels("resnet50")
    (64, 256, 512, 1024, 2048)
    >>> encoder_channels("vgg16_bn")
    (128, 256, 512, 512, 512)
    """
    if encoder not in ENCODER_CHANNELS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODER_CHANNELS)}")
    return ENCODER_CHANNELS[encoder]
