"""FCN on a dilated ResNet: torchvision's ``fcn_resnet50`` / ``fcn_resnet101`` in Flax.

* ``backbone``: ResNet-50/101 with ``replace_stride_with_dilation=[False, True, True]``
  (``layer3`` dilation 2, ``layer4`` dilation 4; output stride 8), ``jaxseg.models.resnet``.
* ``classifier`` (torchvision ``FCNHead(2048, num_classes)``): ``0`` 3x3 conv 2048 -> 512 without
  bias, ``1`` batch norm, ``2`` ReLU, ``3`` dropout 0.1, ``4`` 1x1 conv -> ``num_classes``.
* ``aux_classifier`` (optional, ``FCNHead(1024, num_classes)`` on ``layer3``): 3x3 conv
  1024 -> 256, batch norm, ReLU, dropout 0.1, 1x1 conv.
* Logits are resized bilinearly to the input's size with the convention of PyTorch's
  ``F.interpolate(mode='bilinear', align_corners=False)`` (``resize_bilinear``).

Variables follow torchvision's state-dict keys by the rule of ``jaxseg.models.resnet``:
``backbone.*`` -> ``backbone/...``, ``classifier.N`` -> ``classifier_N``, ``aux_classifier.N``
-> ``aux_classifier_N``. Any input size is accepted.

On the resize: ``F.interpolate(..., align_corners=False)`` samples output pixel ``o`` at input
coordinate ``max((o + 0.5) * in / out - 0.5, 0)`` and mixes the two neighbouring pixels, the
upper index clamped to ``in - 1``. ``jax.image.resize(method='bilinear')`` uses the same
half-pixel centres and, for upsampling (all FCN does), the same weights (its triangle filter,
renormalised where it leaves the image, equals PyTorch's clamping); it differs when shrinking,
where it antialiases (unless ``antialias=False``). ``resize_bilinear`` builds PyTorch's weights
explicitly so the two agree for any sizes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.geometry import Geometry
from jaxseg.models.resnet import ResNet, batch_norm, conv

Dtype = Any

DEPTHS = (50, 101)
OUTPUT_STRIDE = 8


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float32 weights of PyTorch's bilinear ``align_corners=False``."""
    source = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = source - lower
    weights = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), 1.0 - frac)
    np.add.at(weights, (rows, upper), frac)
    return weights.astype(np.float32)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """``[batch, h, w, C]`` -> ``[batch, height, width, C]`` as PyTorch's
    ``F.interpolate(x, size, mode='bilinear', align_corners=False)`` (static sizes)."""
    wh = jnp.asarray(bilinear_weights(x.shape[1], size[0]), x.dtype)
    ww = jnp.asarray(bilinear_weights(x.shape[2], size[1]), x.dtype)
    hi = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,nhwc->nowc", wh, x, precision=hi)
    return jnp.einsum("pw,nowc->nopc", ww, x, precision=hi)


def fcn_head(
    x, features: int, num_classes: int, dropout_rate: float, train: bool, prefix: str, **kw
) -> jnp.ndarray:
    """torchvision ``FCNHead``: submodules ``{prefix}_0`` (conv), ``_1`` (BN), ``_4`` (conv)."""
    x = conv(features, 3, name=f"{prefix}_0", **kw)(x)
    x = nn.relu(batch_norm(train, name=f"{prefix}_1", **kw)(x))
    x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    return conv(num_classes, 1, name=f"{prefix}_4", use_bias=True, **kw)(x)


class FCNResNet(nn.Module):
    """torchvision's ``fcn_resnet50`` / ``fcn_resnet101``.

    Attributes:
      num_classes: channels of the output logits.
      depth: backbone depth, 50 or 101.
      aux_classifier: add torchvision's auxiliary head on ``layer3``; the model then returns
        ``{'out': logits, 'aux': aux_logits}`` as torchvision does (else the logits alone).
      dropout_rate: dropout in the heads (torchvision: 0.1); needs a ``'dropout'`` rng in
        training.
      dtype: compute dtype (``None``: float32); logits are always float32.
      param_dtype: parameter dtype.
    """

    num_classes: int
    depth: int = 50
    aux_classifier: bool = False
    dropout_rate: float = 0.1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        if self.depth not in DEPTHS:
            raise ValueError(f"FCNResNet depth must be one of {DEPTHS}; got {self.depth}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {self.num_classes}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1); got {self.dropout_rate}")
        super().__post_init__()

    def geometry(self) -> Geometry:
        # Any input size; tiles aligned to the output stride meet the backbone's grid in phase.
        return Geometry(f"fcn_resnet{self.depth}", size_multiple=1, alignment=OUTPUT_STRIDE)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False):
        """Maps ``[batch, H, W, C]`` to ``[batch, H, W, num_classes]`` float32 logits."""
        self.geometry().check_input(x.shape[1:3])
        size = x.shape[1:3]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        backbone = ResNet(depth=self.depth, replace_stride_with_dilation=(False, True, True),
                          name="backbone", **kw)  # fmt: skip
        features = backbone(x, train=train)
        heads = {"out": (features[4], "classifier")}
        if self.aux_classifier:
            heads["aux"] = (features[3], "aux_classifier")
        result = {}
        for key, (feature, prefix) in heads.items():
            logits = fcn_head(feature, feature.shape[-1] // 4, self.num_classes,
                              self.dropout_rate, train, prefix, **kw)  # fmt: skip
            result[key] = resize_bilinear(logits.astype(jnp.float32), size)
        return result if self.aux_classifier else result["out"]
