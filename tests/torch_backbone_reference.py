"""torchvision ResNet/VGG16, smp ``Unet`` and torchvision ``fcn_resnet*`` in plain PyTorch.

Test references only, written from the libraries' public architectures with their module trees,
so ``state_dict`` keys are the libraries' own: torchvision ResNet (``conv1``, ``bn1``,
``layer1`` ... ``layer4`` of ``BasicBlock``/``Bottleneck``, ``downsample.0``/``.1``;
``replace_stride_with_dilation`` as ``_make_layer`` does it; no ``avgpool``/``fc``, which smp's
encoder deletes and the FCN backbone never reaches), VGG16(_bn) ``features.N``, smp ``Unet``
(``encoder.*``; ``decoder.center`` two conv-BN-ReLU for VGG, else ``Identity``;
``decoder.blocks.K.conv{1,2}.{0,1}``: nearest 2x, ``cat([x, skip])``, conv-BN-ReLU twice;
``segmentation_head.0`` 3x3 conv) and torchvision ``FCN`` (``backbone``, ``classifier`` and
``aux_classifier`` ``FCNHead`` heads, bilinear ``align_corners=False`` upsampling to the input).
smp's encoders list six features: ResNet ``[x, relu(bn1(conv1)), layer1 (after the max
pooling), layer2, layer3, layer4]``; VGG the activations before each max pooling, then
``pool5``'s output. ``randomize`` seeds non-trivial weights; ``to_flax`` applies the library's
key -> Flax path rule (``jaxseg.models.convert.torch_to_flax``), so the parity tests test it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from flax.traverse_util import flatten_dict, unflatten_dict
from torch import nn

from jaxseg.models.convert import torch_to_flax

RESNETS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
           50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}  # fmt: skip
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
             512, 512, 512, "M", 512, 512, 512, "M"]  # fmt: skip


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        assert dilation == 1, "torchvision: Dilation > 1 not supported in BasicBlock"
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)  # fmt: skip
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """torchvision's ResNet without ``avgpool``/``fc``; ``forward`` gives smp's feature list."""

    def __init__(self, depth, replace_stride_with_dilation=(False, False, False)):
        super().__init__()
        kind, layers = RESNETS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        for i, (planes, dilate) in enumerate(zip((128, 256, 512), replace_stride_with_dilation)):
            setattr(
                self, f"layer{i + 2}", self._make_layer(block, planes, layers[i + 1], 2, dilate)
            )

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample, previous_dilation = None, self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        stem = self.relu(self.bn1(self.conv1(x)))
        l1 = self.layer1(self.maxpool(stem))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        return [x, stem, l1, l2, l3, self.layer4(l3)]


class VGGEncoder(nn.Module):
    """torchvision VGG16 ``features`` (the ``classifier`` deleted, as smp does)."""

    def __init__(self, batch_norm):
        super().__init__()
        layers, in_channels = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            layers += [nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(True)]
            in_channels = v
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        features = []
        for module in self.features:
            if isinstance(module, nn.MaxPool2d):
                features.append(x)
            x = module(x)
        return features + [x]  # smp: 6 features, the first at stride 1.


def conv2d_relu(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))  # fmt: skip


class DecoderBlock(nn.Module):
    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.conv1 = conv2d_relu(in_channels + skip_channels, out_channels)
        self.attention1 = nn.Identity()
        self.conv2 = conv2d_relu(out_channels, out_channels)
        self.attention2 = nn.Identity()

    def forward(self, x, skip=None):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            x = self.attention1(torch.cat([x, skip], dim=1))
        return self.attention2(self.conv2(self.conv1(x)))


class UnetDecoder(nn.Module):
    def __init__(self, encoder_channels, decoder_channels, center):
        super().__init__()
        encoder_channels = encoder_channels[1:][::-1]
        head = encoder_channels[0]
        in_channels = [head] + list(decoder_channels[:-1])
        skip_channels = list(encoder_channels[1:]) + [0]
        self.center = (nn.Sequential(conv2d_relu(head, head), conv2d_relu(head, head))
                       if center else nn.Identity())  # fmt: skip
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(in_channels, skip_channels, decoder_channels)
        )

    def forward(self, *features):
        head, *skips = features[1:][::-1]
        x = self.center(head)
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x


SMP_ENCODERS = {
    "resnet18": (lambda: ResNet(18), (3, 64, 64, 128, 256, 512)),
    "resnet34": (lambda: ResNet(34), (3, 64, 64, 128, 256, 512)),
    "resnet50": (lambda: ResNet(50), (3, 64, 256, 512, 1024, 2048)),
    "vgg16": (lambda: VGGEncoder(False), (64, 128, 256, 512, 512, 512)),
    "vgg16_bn": (lambda: VGGEncoder(True), (64, 128, 256, 512, 512, 512)),
}


class SmpUnet(nn.Module):
    def __init__(self, encoder_name, classes, decoder_channels=(256, 128, 64, 32, 16)):
        super().__init__()
        build, channels = SMP_ENCODERS[encoder_name]
        self.encoder = build()
        self.decoder = UnetDecoder(channels, decoder_channels, encoder_name.startswith("vgg"))
        head = nn.Conv2d(decoder_channels[-1], classes, kernel_size=3, padding=1)
        self.segmentation_head = nn.Sequential(head, nn.Identity(), nn.Identity())

    def forward(self, x):
        return self.segmentation_head(self.decoder(*self.encoder(x)))


def fcn_head(in_channels, channels):
    inter = in_channels // 4
    return nn.Sequential(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
                         nn.BatchNorm2d(inter), nn.ReLU(), nn.Dropout(0.1),
                         nn.Conv2d(inter, channels, 1))  # fmt: skip


class FCN(nn.Module):
    """torchvision ``fcn_resnet{depth}(num_classes=..., aux_loss=...)``."""

    def __init__(self, depth, num_classes, aux_loss=False):
        super().__init__()
        self.backbone = ResNet(depth, replace_stride_with_dilation=(False, True, True))
        self.classifier = fcn_head(2048, num_classes)
        self.aux_classifier = fcn_head(1024, num_classes) if aux_loss else None

    def forward(self, x):
        *_, layer3, layer4 = self.backbone(x)
        heads = {"out": (self.classifier, layer4), "aux": (self.aux_classifier, layer3)}
        return {
            key: F.interpolate(head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)
            for key, (head, y) in heads.items()
            if head is not None
        }


def randomize(model: nn.Module, seed: int, shapes=((1, 3, 64, 64), (1, 3, 96, 128))) -> nn.Module:
    """Seeded random batch norms (weight U(0.5, 1.5), bias N(0, 0.2)); running statistics are
    the batch statistics of random inputs, perturbed (mean + 0.1 std N(0, 1), var x U(0.8,
    1.25)): eval mode is neither the identity nor batch statistics, yet activations stay of
    order one (untuned statistics give logits of order 10-100, where float32 rounding alone
    exceeds 1e-4). Returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            m.momentum = None  # Cumulative average of the calibration batches' statistics.
            m.reset_running_stats()
        model.train()
        for shape in shapes:
            model(torch.randn(shape, generator=gen))
        for m in norms:
            std = m.running_var.sqrt()
            m.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=gen))
            m.running_var.mul_(0.8 + 0.45 * torch.rand(std.shape, generator=gen))
            m.momentum = 0.1
            m.num_batches_tracked.zero_()
    return model.eval()


def to_flax(state_dict: dict, shapes: dict) -> tuple[dict, list[str], list[str]]:
    """``state_dict`` through the library's ``torch_to_flax`` (names alone), keeping the tensors
    whose path and shape ``shapes`` (``jax.eval_shape`` of init) has, as float32 copies.

    Returns ``(variables, converted paths without a place, unset Flax paths)``; both lists
    should be empty. ``num_batches_tracked`` is consumed without a counterpart.
    """
    converted = torch_to_flax({k: v.detach().numpy() for k, v in state_dict.items()})
    flat, values = flatten_dict(shapes), {}
    for path, array in flatten_dict(converted).items():
        if path in flat and flat[path].shape == array.shape:
            values[path] = np.array(array, dtype=np.float32, copy=True)  # Not a view of torch's.
    leftover = ["/".join(p) for p in flatten_dict(converted) if p not in values]
    unset = ["/".join(p) for p in flat if p not in values]
    return unflatten_dict(values), leftover, unset


def run_nhwc(model: nn.Module, x: np.ndarray):
    """Runs ``model`` on an NHWC array, returning NHWC numpy (a dict of them for FCN)."""
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    convert = lambda y: y.numpy().transpose(0, 2, 3, 1)  # noqa: E731
    return {k: convert(v) for k, v in out.items()} if isinstance(out, dict) else convert(out)


def classification_state(encoder: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision classification state dict: ``encoder``'s (``ResNet`` or ``VGGEncoder``) plus
    a classifier (``fc`` for a ResNet, ``classifier.{0,3,6}`` for a VGG; its keys are what
    matters, so the ``Linear`` layers are narrow)."""
    gen = torch.Generator().manual_seed(seed)
    state = dict(encoder.state_dict())
    layers = (
        ["fc"] if isinstance(encoder, ResNet) else ["classifier.0", "classifier.3", "classifier.6"]
    )
    for layer in layers:
        state[f"{layer}.weight"] = torch.randn(10, 8, generator=gen)
        state[f"{layer}.bias"] = torch.randn(10, generator=gen)
    return state
