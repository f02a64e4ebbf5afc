"""Model zoo: ``create(name, num_classes, **overrides)`` builds any model by name.

Every model is a Flax module with a keyword-only ``train`` flag and a ``geometry()`` method
(``jaxseg.models.geometry.Geometry``: valid input sizes, output size, margin, tiling) that the
rest of jaxseg asks. Adding a model is its module plus one line in ``MODELS``.

>>> model = create("unet", num_classes=2, padding="SAME", base_features=8, depth=2)
>>> model.depth
2
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn

from jaxseg.models.fcn import FCN, fcn_crop_offsets
from jaxseg.models.fcn_resnet import FCNResNet
from jaxseg.models.geometry import Geometry
from jaxseg.models.layers import UpConv, bilinear_kernel, transposed_conv
from jaxseg.models.normalization import Normalized, normalized
from jaxseg.models.simple import SimpleFCN, SimpleUNet
from jaxseg.models.sizes import (
    check_unet_input,
    unet_input_size_for_output,
    unet_output_size,
    valid_unet_input_sizes,
)
from jaxseg.models.unet import UNet
from jaxseg.models.unet_encoder import EncoderUNet
from jaxseg.models.vgg import VGG16

MODELS: dict[str, Callable[..., nn.Module]] = {
    "simple_fcn": SimpleFCN,
    "simple_unet": SimpleUNet,
    "fcn32s": functools.partial(FCN, output_stride=32),
    "fcn16s": functools.partial(FCN, output_stride=16),
    "fcn8s": functools.partial(FCN, output_stride=8),
    "unet": UNet,
    # Pretrainable encoders (torchvision / timm / segmentation_models_pytorch layouts).
    "encoder_unet": EncoderUNet,  # model_kwargs.encoder_name: vgg16, vgg16_bn, resnet18/34/50.
    "fcn_resnet50": functools.partial(FCNResNet, depth=50),
    "fcn_resnet101": functools.partial(FCNResNet, depth=101),
}


def _fields(constructor: Callable[..., nn.Module]) -> set[str]:
    cls = constructor.func if isinstance(constructor, functools.partial) else constructor
    return {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}


def create(name: str, num_classes: int, **overrides) -> nn.Module:
    """Builds the model called ``name`` with ``num_classes`` output channels.

    Args:
      name: one of ``MODELS``: simple_fcn, simple_unet, fcn32s, fcn16s, fcn8s, unet,
        encoder_unet, fcn_resnet50, fcn_resnet101.
      num_classes: number of output classes (logit channels).
      **overrides: model fields, e.g. ``padding='SAME'``, ``dtype=jnp.bfloat16``.

    Raises:
      ValueError: for an unknown name or a field the model does not have.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    constructor = MODELS[name]
    unknown = set(overrides) - _fields(constructor)
    if unknown:
        raise ValueError(
            f"model {name!r} has no field(s) {sorted(unknown)}; its fields are "
            f"{sorted(_fields(constructor) - {'num_classes'})}"
        )
    return constructor(num_classes=num_classes, **overrides)


def model_variables(params, batch_stats=None) -> dict:
    """``{'params': params}``, with ``'batch_stats'`` added when the model has them."""
    return (
        {"params": params}
        if batch_stats is None
        else {"params": params, "batch_stats": batch_stats}
    )


__all__ = [
    "FCN",
    "EncoderUNet",
    "FCNResNet",
    "MODELS",
    "Normalized",
    "Geometry",
    "VGG16",
    "SimpleFCN",
    "SimpleUNet",
    "UNet",
    "UpConv",
    "bilinear_kernel",
    "check_unet_input",
    "create",
    "fcn_crop_offsets",
    "model_variables",
    "normalized",
    "transposed_conv",
    "unet_input_size_for_output",
    "unet_output_size",
    "valid_unet_input_sizes",
]
