"""torchvision's VGG16, timm's VGG16 and a torchvision-style ResNet in plain PyTorch, as test
references for weight import (torchvision and timm are not installed here).

The modules reproduce the public state-dict key layouts (what checkpoints on disk and on the hub
hold), written from torchvision's ``models/vgg.py``/``models/resnet.py`` and timm's
``models/vgg.py``, not from jaxseg's code:

* torchvision ``vgg16()``: ``features`` is a ``Sequential`` of configuration "D" (3x3 ``Conv2d``
  with ``padding=1`` and ``ReLU`` per entry, ``MaxPool2d(2, 2)`` per ``'M'``), so its convolutions
  are ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}``; ``avgpool`` an ``AdaptiveAvgPool2d(7)``;
  ``classifier`` ``Linear(512*7*7, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout,
  Linear(4096, 1000)``: keys ``classifier.{0,3,6}.*``.
* timm ``vgg16``: the same ``features``; ``pre_logits`` a ``ConvMlp`` (``fc1`` a 7x7 ``Conv2d``,
  ``fc2`` 1x1); ``head.fc`` the ``Linear`` classifier. timm's ``_filter_fn`` turns torchvision
  weights into these (``classifier.0.weight.reshape(-1, 512, 7, 7)`` ...): ``timm_from_torchvision``.
* torchvision ResNet: ``conv1`` (7x7, stride 2, no bias), ``bn1``, ``layer1..4`` of
  ``BasicBlock`` (``conv1, bn1, conv2, bn2``) or ``Bottleneck`` (``... conv3, bn3``) with
  ``downsample.0``/``downsample.1`` where the shape changes, ``fc``.

Also: ``hub_cache`` lays files out as huggingface_hub's cache does (``models--ORG--NAME/blobs``,
``snapshots/<commit>/`` of symlinks, ``refs/main``), and the comparison helpers the tests share.

``fcn_trunk`` runs a torchvision VGG16's weights the way the FCN paper's Caffe net does: ``pad:
100`` on ``conv1_1``, ceil-mode pooling, fc6/fc7 as convolutions by ``Tensor.view`` of the
``Linear`` weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)
TORCHVISION_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # features.N of vgg16()


def numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


def vgg_features(widths=VGG16_WIDTHS) -> nn.Sequential:
    layers, in_channels = [], 3
    for convs, width in zip(VGG16_CONVS, widths):
        for _ in range(convs):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class TorchvisionVGG16(nn.Module):
    """``torchvision.models.vgg16()`` (keys and forward), widths adjustable for fast tests."""

    def __init__(self, widths=VGG16_WIDTHS, fc_width=4096, num_classes=1000):
        super().__init__()
        self.features = vgg_features(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(widths[-1] * 7 * 7, fc_width),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(fc_width, fc_width),
            nn.ReLU(True),
            nn.Dropout(0.5),
            nn.Linear(fc_width, num_classes),
        )

    def fc7(self, x: torch.Tensor) -> torch.Tensor:
        """The ReLU after ``classifier.3`` (eval mode): ``[n, 4096]``."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:5](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class ConvMlp(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, out_features, 7, bias=True)
        self.act1 = nn.ReLU(True)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Conv2d(out_features, out_features, 1, bias=True)
        self.act2 = nn.ReLU(True)

    def forward(self, x):
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


class Head(nn.Module):
    def __init__(self, in_features, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)


class TimmVGG16(nn.Module):
    """timm's ``vgg16`` module tree (``features``, ``pre_logits.fc1/fc2``, ``head.fc``)."""

    def __init__(self, widths=VGG16_WIDTHS, fc_width=4096, num_classes=1000):
        super().__init__()
        self.features = vgg_features(widths)
        self.pre_logits = ConvMlp(widths[-1], fc_width)
        self.head = Head(fc_width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_logits(self.features(x))


def timm_from_torchvision(state: dict) -> dict:
    """timm's ``_filter_fn``: a torchvision VGG state dict renamed and reshaped to timm's."""
    out = {}
    for key, value in state.items():
        if key.startswith("classifier.0.weight"):
            value = value.reshape(value.shape[0], -1, 7, 7)
        elif key.startswith("classifier.3.weight"):
            value = value.reshape(value.shape[0], -1, 1, 1)
        key = key.replace("classifier.0", "pre_logits.fc1").replace(
            "classifier.3", "pre_logits.fc2"
        )
        out[key.replace("classifier.6", "head.fc")] = value
    return out


@torch.no_grad()
def fcn_trunk(model: TorchvisionVGG16, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """FCN's Caffe VGG16 on ``model``'s weights: ``pool3``, ``pool4``, ``pool5``, ``fc7``."""
    outputs, pools, first = {}, 0, True
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            x = F.conv2d(x, layer.weight, layer.bias, padding=100 if first else 1)
            first = False
        elif isinstance(layer, nn.ReLU):
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            pools += 1
            outputs[f"pool{pools}"] = x
    fc6, fc7 = model.classifier[0], model.classifier[3]
    x = F.relu(F.conv2d(x, fc6.weight.view(fc6.out_features, -1, 7, 7), fc6.bias))
    x = F.relu(F.conv2d(x, fc7.weight.view(fc7.out_features, -1, 1, 1), fc7.bias))
    outputs["fc7"] = x
    return {k: outputs[k] for k in ("pool3", "pool4", "pool5", "fc7")}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, width, stride):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, width, stride):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet module tree (keys only; the stem is all the tests run)."""

    def __init__(
        self, blocks=(2, 2, 2, 2), bottleneck=False, widths=(64, 128, 256, 512), num_classes=1000
    ):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_channels = widths[0]
        for k, (count, width) in enumerate(zip(blocks, widths), start=1):
            layers = []
            for i in range(count):
                layers.append(block(in_channels, width, 2 if i == 0 and k > 1 else 1))
                in_channels = width * block.expansion
            setattr(self, f"layer{k}", nn.Sequential(*layers))
        self.fc = nn.Linear(in_channels, num_classes)

    @torch.no_grad()
    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn1(conv1(x)))`` in eval mode."""
        return F.relu(self.bn1(self.conv1(x)))


@torch.no_grad()
def randomize_batch_norms(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial batch-norm parameters and running statistics, so a mix-up shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(n, generator=generator))
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.num_batches_tracked.fill_(7)
    return model.eval()


@torch.no_grad()
def he_init(model: nn.Module, seed: int) -> nn.Module:
    """He-normal weights and small random biases (activations stay O(1) through 16 layers, so
    the comparisons are not of vanishing numbers); eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1, generator=generator)
    return model.eval()


def make(cls, seed: int, **kwargs) -> nn.Module:
    """``cls(**kwargs)`` built without its default initialisation (138M parameters at full
    width), then He-initialised from ``seed``."""
    with torch.device("meta"):
        model = cls(**kwargs)
    return he_init(model.to_empty(device="cpu"), seed)


def assert_same_state(state, expected, what=""):
    assert sorted(state) == sorted(expected), what
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and np.array_equal(state[key], value), (what, key)


def assert_close(got, expected, what, tolerance=1e-4):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    error, scale = np.abs(got - expected).max(), np.abs(expected).max()
    print(f"{what}: max |jax - torch| = {error:.2e} (max |torch| {scale:.2f})")
    assert scale > 0.1, f"{what}: values too small ({scale}) for the check to mean anything"
    assert error < tolerance, f"{what}: max |jax - torch| = {error:.2e}"


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, repo, files: dict) -> None:
    """huggingface_hub's cache layout: blobs, a snapshot of symlinks, refs/main -> commit."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / HUB_COMMIT).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(HUB_COMMIT)
    (folder / "blobs").mkdir()
    for i, (name, write) in enumerate(files.items()):
        write(folder / "blobs" / f"{i:064x}")
        (folder / "snapshots" / HUB_COMMIT / name).symlink_to(folder / "blobs" / f"{i:064x}")
