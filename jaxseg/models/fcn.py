"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, CVPR 2015) on VGG16.

Class scores from fc7 (and, for 16s/8s, from pool4 and pool3 through 1x1 score layers) are
fused by element-wise addition after learnable 2x upsamplings initialised to bilinear
interpolation; a fixed bilinear upsampling by the remaining stride and a crop give logits with
exactly the input's height and width, for any input size. Crop offsets are derived from the
layers' geometry (with the paper's 100-pixel input padding: 5 and 9 for the skips, 19, 27 and 31
for the final crops of 32s, 16s and 8s).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.geometry import Geometry
from jaxseg.models.layers import (
    UpConv,
    bilinear_kernel,
    bilinear_upconv_init,
    crop,
    transposed_conv,
)
from jaxseg.models.vgg import VGG16, feature_geometry

Dtype = Any

OUTPUT_STRIDES = (32, 16, 8)


def upsampled_geometry(stride: int, centre: float, factor: int) -> tuple[int, float]:
    """Geometry after an unpadded transposed convolution of stride ``factor``, kernel ``2 * factor``."""
    new_stride = stride // factor
    return new_stride, centre - (2 * factor - 1) / 2 * new_stride


def crop_offset(target: tuple[int, float], source: tuple[int, float]) -> int:
    """Index in ``source`` that sits where index 0 of ``target`` sits (same stride)."""
    (stride, target_centre), (source_stride, source_centre) = target, source
    offset = (target_centre - source_centre) / stride
    if stride != source_stride or offset != int(offset) or offset < 0:
        raise ValueError(f"cannot align feature maps {target} and {source}")
    return int(offset)


def fcn_crop_offsets(output_stride: int, input_padding: int = 100) -> dict[str, int]:
    """The crop offsets of an FCN: the skips' (``pool4``, ``pool3``) and the final one (``input``).

    >>> fcn_crop_offsets(8)
    {'pool4': 5, 'pool3': 9, 'input': 31}
    """
    geometry = feature_geometry(input_padding)
    stride, centre = geometry["fc7"]
    offsets = {}
    for skip in ("pool4", "pool3")[: {32: 0, 16: 1, 8: 2}[output_stride]]:
        stride, centre = upsampled_geometry(stride, centre, 2)
        offsets[skip] = crop_offset((stride, centre), geometry[skip])
    stride, centre = upsampled_geometry(stride, centre, stride)
    offsets["input"] = crop_offset((1, 0.0), (1, centre))
    return offsets


class FCN(nn.Module):
    """FCN on a VGG16 trunk.

    Attributes:
      num_classes: channels of the output logits.
      output_stride: 32 (FCN-32s), 16 (FCN-16s) or 8 (FCN-8s).
      base_features: VGG16 first-block width (64); a smaller value gives a tiny variant.
      fc_features: fc6/fc7 width (4096).
      dropout_rate: dropout after fc6 and fc7.
      input_padding: zero padding of the first convolution (the paper: 100).
      skip_scales: fixed factors on pool4 and pool3 before their score layers: ``(1, 1)`` for
        the staged nets, ``(0.01, 0.0001)`` for the authors' FCN-8s "at-once" variant, trained
        in one stage from ImageNet weights (Caffe's ``scale_pool4``/``scale_pool3``, not learned).
      dtype: compute dtype (``None``: float32); logits are always float32.
      param_dtype: parameter dtype.
    """

    num_classes: int
    output_stride: int = 8
    base_features: int = 64
    fc_features: int = 4096
    dropout_rate: float = 0.5
    input_padding: int = 100
    skip_scales: tuple[float, float] = (1.0, 1.0)
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"FCN output_stride must be one of {OUTPUT_STRIDES}; got {self.output_stride}"
            )
        if len(self.skip_scales) != 2:
            raise ValueError(
                f"FCN skip_scales needs (pool4, pool3) factors; got {self.skip_scales}"
            )
        if min(self.num_classes, self.base_features, self.fc_features) < 1:
            raise ValueError("FCN needs num_classes, base_features and fc_features >= 1")
        super().__post_init__()

    def geometry(self) -> Geometry:
        # Any size works (pad 100, ceil-mode pooling, final crop); VGG16 pools five times.
        return Geometry(f"fcn{self.output_stride}s", alignment=32)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """Maps ``[batch, H, W, C]`` (any H, W) to ``[batch, H, W, num_classes]`` float32 logits."""
        height, width = x.shape[1:3]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features = VGG16(
            self.base_features,
            self.fc_features,
            self.dropout_rate,
            self.input_padding,
            name="vgg16",
            **kw,
        )(x, train=train)
        offsets = fcn_crop_offsets(self.output_stride, self.input_padding)
        score = lambda name: nn.Conv(  # noqa: E731  The paper zero-initialises score layers.
            self.num_classes, (1, 1), kernel_init=nn.initializers.zeros_init(), name=name, **kw
        )
        upsample2 = lambda name: UpConv(  # noqa: E731  Learnable, initialised to bilinear.
            self.num_classes,
            4,
            2,
            use_bias=False,
            kernel_init=bilinear_upconv_init,
            name=name,
            **kw,
        )

        logits = score("score_fr")(features["fc7"])
        skips = zip(("pool4", "pool3"), ("upscore2", "upscore_pool4"), self.skip_scales)
        for skip, up_name, scale in skips:
            if skip not in offsets:
                break
            logits = upsample2(up_name)(logits)
            skip_scores = score(f"score_{skip}")(features[skip] * scale)
            logits = logits + crop(skip_scores, offsets[skip], logits.shape[1], logits.shape[2])

        factor = self.output_stride
        fixed = bilinear_kernel(2 * factor)[:, :, None, None] * jnp.eye(self.num_classes)
        logits = transposed_conv(logits, fixed.astype(logits.dtype), factor)
        return crop(logits, offsets["input"], height, width).astype(jnp.float32)
