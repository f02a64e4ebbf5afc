"""VGG16 as FCN uses it: 13 convolutions in 5 blocks, fc6/fc7 as convolutions.

As in the FCN paper's Caffe nets, the first convolution pads its input by 100 pixels and the
poolings round up (Caffe's ceil mode), so that any input size reaches fc6, a 7x7 unpadded
convolution. Layer names follow Caffe's (``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``), so
converted VGG16 weights map onto the parameter tree name by name.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.layers import max_pool_2x2

Dtype = Any

# Convolutions per block, and each block's width as a multiple of ``base_features``.
VGG16_BLOCKS = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))


class VGG16(nn.Module):
    """VGG16 trunk returning the features FCN reads: ``pool3``, ``pool4`` and ``fc7``.

    Attributes:
      base_features: width of the first block (VGG16: 64); later blocks are 2x, 4x, 8x, 8x.
      fc_features: width of fc6 and fc7 (VGG16: 4096).
      dropout_rate: dropout after fc6 and fc7 (VGG16: 0.5).
      input_padding: zero padding of the first convolution (FCN: 100).
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    base_features: int = 64
    fc_features: int = 4096
    dropout_rate: float = 0.5
    input_padding: int = 100
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> dict[str, jnp.ndarray]:
        """Returns ``{'pool3': [b, h3, w3, 4f], 'pool4': [b, h4, w4, 8f], 'fc7': [b, h, w, fc]}``."""
        conv = lambda features, kernel, padding, name: nn.Conv(  # noqa: E731
            features,
            (kernel, kernel),
            padding=padding,
            kernel_init=nn.initializers.he_normal(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        features = {}
        for block, (num_convs, width) in enumerate(VGG16_BLOCKS, start=1):
            for i in range(1, num_convs + 1):
                padding = self.input_padding if (block, i) == (1, 1) else 1
                x = nn.relu(conv(self.base_features * width, 3, padding, f"conv{block}_{i}")(x))
            x = max_pool_2x2(x, ceil_mode=True)
            features[f"pool{block}"] = x
        for name, kernel in (("fc6", 7), ("fc7", 1)):
            x = nn.relu(conv(self.fc_features, kernel, "VALID", name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return {"pool3": features["pool3"], "pool4": features["pool4"], "fc7": x}


def feature_geometry(input_padding: int) -> dict[str, tuple[int, float]]:
    """Where each FCN feature map sits in input pixels: ``name -> (stride, centre of index 0)``.

    A 3x3 convolution with padding ``p`` moves index 0 to input position ``1 - p``; 2x2 stride-2
    pooling doubles the stride and moves the centre half a (previous) stride; fc6, a 7x7 unpadded
    convolution, moves it three strides.
    """
    stride, centre = 1, 1.0 - input_padding
    geometry = {}
    for block in range(1, 6):
        centre += stride / 2
        stride *= 2
        geometry[f"pool{block}"] = (stride, centre)
    geometry["fc7"] = (stride, centre + 3 * stride)
    return geometry
