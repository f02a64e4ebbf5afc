"""Caffe's voc-fcn32s, voc-fcn16s and voc-fcn8s rebuilt in plain PyTorch, as a test reference.

Written from the FCN authors' Caffe net definitions (``voc-fcn*/net.py`` and the generated
``train.prototxt``/``deploy.prototxt`` in shelhamer/fcn.berkeleyvision.org) and their
``surgery.upsample_filt``, not from jaxseg's code. What the prototxt says, layer by layer:

* ``conv1_1``: 3x3 convolution, ``pad: 100``; every other VGG16 convolution 3x3, ``pad: 1``,
  each followed by ReLU.
* ``pool1`` ... ``pool5``: ``MAX`` pooling, ``kernel_size: 2``, ``stride: 2``. Caffe sizes a
  pooling output with ``ceil``, so an odd edge gets its own output (PyTorch ``ceil_mode=True``).
* ``fc6``: 7x7 convolution, ``pad: 0``; ``fc7``: 1x1, ``pad: 0``; each with ReLU and
  ``Dropout`` (0.5, off at test time).
* ``score_fr``, ``score_pool4``, ``score_pool3``: 1x1 convolutions to the class count, with bias.
* ``upscore2``, ``upscore_pool4``: ``Deconvolution``, ``kernel_size: 4``, ``stride: 2``,
  ``bias_term: false`` (learned in the staged nets).
* The final ``upscore`` (fcn32s: kernel 64, stride 32), ``upscore16`` (32, 16) and ``upscore8``
  (16, 8): ``Deconvolution`` without bias, ``lr_mult: 0``, set once by ``surgery.interp`` to
  bilinear interpolation per class (zero across classes): a fixed filter, kept here as a buffer.
* ``Crop`` layers (``axis: 2``): ``score_pool4c`` at ``offset: 5`` to ``upscore2``'s size,
  ``score_pool3c`` at ``offset: 9`` to ``upscore_pool4``'s, and ``score`` at ``offset: 19``
  (fcn32s), ``27`` (fcn16s) or ``31`` (fcn8s) to the input's size.
* ``fuse_pool4``, ``fuse_pool3``: ``Eltwise`` ``SUM``.

Caffe's ``Deconvolution`` stores its weight as ``[in, out, kh, kw]`` and computes what PyTorch's
``ConvTranspose2d`` computes with the same array: ``out[s*h + i, s*w + j] += x[h, w] * W[i, j]``.

``widths`` and ``fc_width`` shrink the network for fast tests (VGG16: 64, 128, 256, 512, 512 and
4096); ``crops`` replaces the prototxt offsets (tests use it to show a wrong offset is caught).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)
CAFFE_CROPS = {
    32: {"score": 19},
    16: {"score_pool4c": 5, "score": 27},
    8: {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
}
FINAL_UPSAMPLING = {32: ("upscore", 64, 32), 16: ("upscore16", 32, 16), 8: ("upscore8", 16, 8)}


def upsample_filt(size: int) -> np.ndarray:
    """``surgery.upsample_filt``: the 2-D bilinear kernel of a ``size x size`` deconvolution."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


def interp_weight(channels: int, size: int) -> torch.Tensor:
    """``surgery.interp``: bilinear on the diagonal of ``[in, out, k, k]``, zero elsewhere."""
    weight = np.zeros((channels, channels, size, size), np.float32)
    weight[range(channels), range(channels)] = upsample_filt(size)
    return torch.from_numpy(weight)


def caffe_crop(x: torch.Tensor, reference: torch.Tensor, offset: int) -> torch.Tensor:
    """Caffe ``Crop`` with ``axis: 2``: ``x`` cut to ``reference``'s H, W from ``offset``."""
    height, width = reference.shape[2:]
    if x.shape[2] < offset + height or x.shape[3] < offset + width:
        raise ValueError(f"cannot crop {tuple(x.shape[2:])} at {offset} to {(height, width)}")
    return x[:, :, offset : offset + height, offset : offset + width]


class CaffeFCN(nn.Module):
    """voc-fcn{32,16,8}s in eval mode: ``[n, 3, H, W]`` -> ``[n, num_classes, H, W]``."""

    def __init__(
        self,
        num_classes: int,
        output_stride: int = 8,
        widths=VGG16_WIDTHS,
        fc_width: int = 4096,
        crops: dict[str, int] | None = None,
    ):
        super().__init__()
        self.output_stride = output_stride
        self.crops = dict(CAFFE_CROPS[output_stride] if crops is None else crops)
        blocks = []
        in_channels = 3
        for block, (convs, width) in enumerate(zip((2, 2, 3, 3, 3), widths), start=1):
            layers = []
            for i in range(1, convs + 1):
                pad = 100 if (block, i) == (1, 1) else 1
                layers += [nn.Conv2d(in_channels, width, 3, padding=pad), nn.ReLU()]
                in_channels = width
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.fc6 = nn.Conv2d(widths[4], fc_width, 7)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
        self.drop = nn.Dropout(0.5)
        self.score_fr = nn.Conv2d(fc_width, num_classes, 1)
        if output_stride <= 16:
            self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, bias=False)
            self.score_pool4 = nn.Conv2d(widths[3], num_classes, 1)
        if output_stride == 8:
            self.upscore_pool4 = nn.ConvTranspose2d(
                num_classes, num_classes, 4, stride=2, bias=False
            )
            self.score_pool3 = nn.Conv2d(widths[2], num_classes, 1)
        _, size, stride = FINAL_UPSAMPLING[output_stride]
        self.final_stride = stride
        self.register_buffer("final_weight", interp_weight(num_classes, size))

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        x = data
        pools = {}
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            pools[i] = x
        x = self.drop(torch.relu(self.fc6(x)))
        x = self.drop(torch.relu(self.fc7(x)))
        score = self.score_fr(x)
        if self.output_stride <= 16:
            upscore2 = self.upscore2(score)
            score_pool4c = caffe_crop(
                self.score_pool4(pools[4]), upscore2, self.crops["score_pool4c"]
            )
            score = upscore2 + score_pool4c  # fuse_pool4
        if self.output_stride == 8:
            upscore_pool4 = self.upscore_pool4(score)
            score_pool3c = caffe_crop(
                self.score_pool3(pools[3]), upscore_pool4, self.crops["score_pool3c"]
            )
            score = upscore_pool4 + score_pool3c  # fuse_pool3
        upscore = nn.functional.conv_transpose2d(score, self.final_weight, stride=self.final_stride)
        return caffe_crop(upscore, data, self.crops["score"])


def _copy(module: nn.Module, params, layout: tuple[int, ...]) -> None:
    with torch.no_grad():
        kernel = np.asarray(params["kernel"]).transpose(layout)
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
        if module.bias is not None:
            module.bias.copy_(torch.from_numpy(np.array(params["bias"])))
        elif "bias" in params:
            raise ValueError("the Flax layer has a bias the Caffe layer does not")


def load_fcn(module: CaffeFCN, params) -> None:
    """Copies a jaxseg FCN parameter tree into the reference.

    Convolutions: Flax ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``. Up-convolutions: jaxseg's
    ``[k, k, in, out]`` -> Caffe/PyTorch ``[in, out, k, k]``, a transpose and no spatial flip.
    """
    vgg = params["vgg16"]
    for block, seq in enumerate(module.blocks, start=1):
        convs = [layer for layer in seq if isinstance(layer, nn.Conv2d)]
        for i, conv in enumerate(convs, start=1):
            _copy(conv, vgg[f"conv{block}_{i}"], (3, 2, 0, 1))
    _copy(module.fc6, vgg["fc6"], (3, 2, 0, 1))
    _copy(module.fc7, vgg["fc7"], (3, 2, 0, 1))
    scores, upsamplings = ["score_fr"], []
    if module.output_stride <= 16:
        scores, upsamplings = scores + ["score_pool4"], upsamplings + ["upscore2"]
    if module.output_stride == 8:
        scores, upsamplings = scores + ["score_pool3"], upsamplings + ["upscore_pool4"]
    for name in scores:
        _copy(getattr(module, name), params[name], (3, 2, 0, 1))
    for name in upsamplings:
        _copy(getattr(module, name), params[name], (2, 3, 0, 1))
    unused = set(params) - {"vgg16", *scores, *upsamplings}
    if unused or len(vgg) != 15:
        raise ValueError(f"parameters the reference has no place for: {sorted(unused)}")
