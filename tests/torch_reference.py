"""Independent PyTorch implementations of the networks, used only as test references.

Written from the source documents and the U-Net paper in PyTorch's own idiom (NCHW,
``nn.ConvTranspose2d``, ``nn.MaxPool2d``), plus the functions that copy a Flax parameter tree
into them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def conv_block(in_channels, out_channels, padding):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=padding),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=padding),
        nn.ReLU(),
    )


class TorchSimpleFCN(nn.Module):
    def __init__(self, in_channels, n_classes):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(64, 128, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(128, 64, kernel_size=2, stride=2),
            nn.ReLU(),
            nn.ConvTranspose2d(64, n_classes, kernel_size=2, stride=2),
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))


class TorchSimpleUNet(nn.Module):
    def __init__(self, in_channels, n_classes):
        super().__init__()
        self.enc1 = conv_block(in_channels, 64, 1)
        self.enc2 = conv_block(64, 128, 1)
        self.enc3 = conv_block(128, 256, 1)
        self.enc4 = conv_block(256, 512, 1)
        self.upconv1 = nn.ConvTranspose2d(512, 256, kernel_size=2, stride=2)
        self.dec1 = conv_block(512, 256, 1)
        self.upconv2 = nn.ConvTranspose2d(256, 128, kernel_size=2, stride=2)
        self.dec2 = conv_block(256, 128, 1)
        self.upconv3 = nn.ConvTranspose2d(128, 64, kernel_size=2, stride=2)
        self.dec3 = conv_block(128, 64, 1)
        self.final_conv = nn.Conv2d(64, n_classes, kernel_size=1)

    def forward(self, x):
        enc1 = self.enc1(x)
        enc2 = self.enc2(F.max_pool2d(enc1, 2))
        enc3 = self.enc3(F.max_pool2d(enc2, 2))
        enc4 = self.enc4(F.max_pool2d(enc3, 2))
        d = self.dec1(torch.cat((self.upconv1(enc4), enc3), dim=1))
        d = self.dec2(torch.cat((self.upconv2(d), enc2), dim=1))
        d = self.dec3(torch.cat((self.upconv3(d), enc1), dim=1))
        return self.final_conv(d)


class TorchUNet(nn.Module):
    """The U-Net paper's network (valid or same padding); skips concatenated before up-features."""

    def __init__(self, in_channels, n_classes, depth=4, base=64, padding=0):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(conv_block(c, w, padding))
            c = w
        self.bottleneck = conv_block(widths[-2], widths[-1], padding)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(depth))
        )
        self.up_blocks = nn.ModuleList(
            conv_block(2 * widths[i], widths[i], padding) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(base, n_classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = self.bottleneck(F.max_pool2d(x, 2))
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            x = up(x)
            dh = (skip.shape[2] - x.shape[2]) // 2
            dw = (skip.shape[3] - x.shape[3]) // 2
            skip = skip[:, :, dh : dh + x.shape[2], dw : dw + x.shape[3]]
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


def _set(module, params, transpose):
    with torch.no_grad():
        module.weight.copy_(
            torch.from_numpy(np.array(params["kernel"]).transpose(transpose).copy())
        )
        module.bias.copy_(torch.from_numpy(np.array(params["bias"])))


def set_conv(module: nn.Conv2d, params) -> None:
    """Flax ``[kh, kw, in, out]`` kernel -> PyTorch ``[out, in, kh, kw]``."""
    _set(module, params, (3, 2, 0, 1))


def set_conv_transpose(module: nn.ConvTranspose2d, params) -> None:
    """Flax ``[kh, kw, in, out]`` kernel -> PyTorch transposed-conv ``[in, out, kh, kw]``."""
    _set(module, params, (2, 3, 0, 1))


def set_block(block: nn.Sequential, params, prefix: str = "conv") -> None:
    set_conv(block[0], params[f"{prefix}1"])
    set_conv(block[2], params[f"{prefix}2"])


def load_simple_fcn(module: TorchSimpleFCN, p) -> None:
    set_conv(module.encoder[0], p["enc_conv1"])
    set_conv(module.encoder[3], p["enc_conv2"])
    set_conv_transpose(module.decoder[0], p["dec_upconv1"])
    set_conv_transpose(module.decoder[2], p["dec_upconv2"])


def load_simple_unet(module: TorchSimpleUNet, p) -> None:
    for i in range(1, 5):
        block = getattr(module, f"enc{i}")
        set_conv(block[0], p[f"enc{i}_conv1"])
        set_conv(block[2], p[f"enc{i}_conv2"])
    for i in range(1, 4):
        set_conv_transpose(getattr(module, f"upconv{i}"), p[f"upconv{i}"])
        block = getattr(module, f"dec{i}")
        set_conv(block[0], p[f"dec{i}_conv1"])
        set_conv(block[2], p[f"dec{i}_conv2"])
    set_conv(module.final_conv, p["final_conv"])


def load_unet(module: TorchUNet, p) -> None:
    for i, block in enumerate(module.down):
        set_block(block, p[f"0_down_{i}"])
    set_block(module.bottleneck, p["1_bottleneck"])
    for i, (up, block) in enumerate(zip(module.ups, module.up_blocks)):
        set_conv_transpose(up, p[f"2_up_{i}"]["upconv"])
        set_block(block, p[f"2_up_{i}"]["block"])
    set_conv(module.head, p["3_head"])


def run_nhwc(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """Runs a PyTorch NCHW module on an NHWC numpy batch and returns NHWC numpy."""
    module.eval()
    with torch.no_grad():
        y = module(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    return y.numpy().transpose(0, 2, 3, 1)
