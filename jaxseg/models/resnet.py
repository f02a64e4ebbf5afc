"""ResNet-18/34/50/101 (torchvision's layout, "v1.5": stride in the 3x3 convolution) in Flax.

The trunk (``conv1`` ... ``layer4``; no ``avgpool``/``fc``) returns its feature pyramid, and
its variables are named after torchvision's module tree so that a torchvision state dict maps
onto them name by name.

Mapping rule, torchvision key -> Flax variable path (the same rule maps the smp ``Unet`` and
torchvision ``fcn_resnet*`` keys in ``unet_encoder.py``/``fcn_resnet.py``):

1. Split the key on ``.``; the last component is the tensor, the rest the module path.
2. Join every all-digit path component to the component before it with ``_``
   (``layer1.0.downsample.1`` -> ``layer1_0/downsample_1``; ``features.7`` -> ``features_7``).
3. Map the tensor: a convolution's ``weight [O, I, kh, kw]`` -> ``params/.../kernel``
   ``[kh, kw, I, O]`` (``weight.transpose(2, 3, 1, 0)``); its ``bias`` -> ``params/.../bias``;
   a batch norm's ``weight`` -> ``params/.../scale``, ``bias`` -> ``params/.../bias``,
   ``running_mean`` -> ``batch_stats/.../mean``, ``running_var`` -> ``batch_stats/.../var``;
   ``num_batches_tracked`` has no counterpart (Flax keeps no counter) and is dropped.

For example ``conv1.weight`` -> ``params/conv1/kernel``, ``layer3.5.bn2.running_var`` ->
``batch_stats/layer3_5/bn2/var``, ``layer2.0.downsample.0.weight`` ->
``params/layer2_0/downsample_0/kernel``. A block holds ``conv1``/``bn1``, ``conv2``/``bn2``
(and for ``Bottleneck`` ``conv3``/``bn3``), plus ``downsample_0`` (1x1 conv) and
``downsample_1`` (batch norm) where torchvision has a ``downsample``. ImageNet checkpoints'
``fc.weight``/``fc.bias`` have no counterpart.

Batch norm is ``nn.BatchNorm(momentum=0.9, epsilon=1e-5)``, PyTorch's defaults. One known
difference in training: PyTorch updates ``running_var`` with the unbiased batch variance, Flax
with the biased one (the normalisation itself uses the biased variance in both).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# depth -> (block, blocks per stage), as torchvision's resnet18 ... resnet101.
ARCHITECTURES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
STAGE_WIDTHS = (64, 128, 256, 512)

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for every convolution.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(
    features: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    *,
    name: str,
    use_bias: bool = False,
    kernel_init=conv_init,
    dtype=None,
    param_dtype=jnp.float32,
):
    """A PyTorch-style convolution: symmetric zero padding ``dilation * (kernel // 2)``."""
    pad = dilation * (kernel // 2)
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def batch_norm(train: bool, *, name: str, dtype=None, param_dtype=jnp.float32):
    """``nn.BatchNorm`` with PyTorch's defaults (momentum 0.1 in PyTorch's terms, eps 1e-5),
    applied with ``use_running_average=not train`` as a call argument (so that training can
    switch a frozen layer to its running statistics: ``jaxseg.training.frozen``)."""
    module = nn.BatchNorm(
        momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name
    )
    return functools.partial(module, use_running_average=not train)


class BasicBlock(nn.Module):
    """torchvision ``BasicBlock``: two 3x3 convolutions (stride on the first) and a shortcut."""

    features: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = conv(self.features, 3, self.stride, self.dilation, name="conv1", **kw)(x)
        y = nn.relu(batch_norm(train, name="bn1", **kw)(y))
        y = conv(self.features, 3, 1, self.dilation, name="conv2", **kw)(y)
        y = batch_norm(train, name="bn2", **kw)(y)
        if self.downsample:
            x = conv(self.features, 1, self.stride, name="downsample_0", **kw)(x)
            x = batch_norm(train, name="downsample_1", **kw)(x)
        return nn.relu(y + x)


class Bottleneck(nn.Module):
    """torchvision ``Bottleneck``: 1x1, 3x3 (stride, dilation), 1x1 to ``4 * features``."""

    features: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = self.features * EXPANSION["bottleneck"]
        y = conv(self.features, 1, name="conv1", **kw)(x)
        y = nn.relu(batch_norm(train, name="bn1", **kw)(y))
        y = conv(self.features, 3, self.stride, self.dilation, name="conv2", **kw)(y)
        y = nn.relu(batch_norm(train, name="bn2", **kw)(y))
        y = conv(out, 1, name="conv3", **kw)(y)
        y = batch_norm(train, name="bn3", **kw)(y)
        if self.downsample:
            x = conv(out, 1, self.stride, name="downsample_0", **kw)(x)
            x = batch_norm(train, name="downsample_1", **kw)(x)
        return nn.relu(y + x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def resnet_channels(depth: int) -> tuple[int, ...]:
    """Channels of the five returned features: the stem's, then ``layer1`` ... ``layer4``'s."""
    expansion = EXPANSION[ARCHITECTURES[depth][0]]
    return (64, *(w * expansion for w in STAGE_WIDTHS))


class ResNet(nn.Module):
    """torchvision's ResNet trunk returning ``[stem, layer1, layer2, layer3, layer4]``.

    ``stem`` is ``relu(bn1(conv1(x)))`` at stride 2 (before the max pooling); the layers are at
    strides 4, 8, 16, 32, or 4, 8, 8, 8 with ``replace_stride_with_dilation=(False, True,
    True)`` (FCN's output stride 8). These are smp's ``ResNetEncoder`` features without the
    identity (the input) it lists first.

    Attributes:
      depth: 18, 34, 50 or 101.
      replace_stride_with_dilation: for ``layer2``, ``layer3``, ``layer4``: keep the resolution
        and dilate instead of striding, exactly as torchvision (the first block of a dilated
        stage uses the previous dilation in its 3x3 convolution). Bottleneck ResNets only.
      dtype: compute dtype (``None``: float32).
      param_dtype: parameter dtype.
    """

    depth: int = 50
    replace_stride_with_dilation: Sequence[bool] = (False, False, False)
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        if self.depth not in ARCHITECTURES:
            raise ValueError(
                f"ResNet depth must be one of {sorted(ARCHITECTURES)}; got {self.depth}"
            )
        if len(self.replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation needs 3 entries (layer2, layer3, layer4); got "
                f"{self.replace_stride_with_dilation!r}"
            )
        if ARCHITECTURES[self.depth][0] == "basic" and any(self.replace_stride_with_dilation):
            raise ValueError(
                "dilation is not supported by BasicBlock ResNets (18, 34), as in torchvision"
            )
        super().__post_init__()

    @property
    def out_channels(self) -> tuple[int, ...]:
        return resnet_channels(self.depth)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> list[jnp.ndarray]:
        """``[batch, H, W, C]`` -> the five feature maps (``out_channels``), NHWC."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        kind, stage_sizes = ARCHITECTURES[self.depth]
        block, expansion = BLOCKS[kind], EXPANSION[kind]
        x = conv(64, 7, 2, name="conv1", **kw)(x)
        x = nn.relu(batch_norm(train, name="bn1", **kw)(x))
        features = [x]
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        in_features, dilation = 64, 1
        dilate = (False, *self.replace_stride_with_dilation)
        for stage, (width, blocks) in enumerate(zip(STAGE_WIDTHS, stage_sizes)):
            stride, previous_dilation = (1 if stage == 0 else 2), dilation
            if dilate[stage]:
                dilation, stride = dilation * stride, 1
            for i in range(blocks):
                x = block(
                    width,
                    stride=stride if i == 0 else 1,
                    dilation=previous_dilation if i == 0 else dilation,
                    downsample=i == 0 and (stride != 1 or in_features != width * expansion),
                    name=f"layer{stage + 1}_{i}",
                    **kw,
                )(x, train)
            in_features = width * expansion
            features.append(x)
        return features
