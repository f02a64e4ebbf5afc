"""Layers shared by the model families: strided up-convolution, bilinear kernels, crop, pooling.

The up-convolution is written as a per-pixel matrix product followed by a depth-to-space
reshape (and, when the kernel is larger than the stride, an overlap-add of shifted blocks).
On XLA:CPU the gradient of this formulation is one to two orders of magnitude faster than
``nn.ConvTranspose``'s, and it keeps the parameter layout a user expects: ``kernel`` of shape
``[kernel, kernel, in_features, features]`` and ``bias`` of shape ``[features]``.

Kernel orientation. The up-convolution's kernel means what PyTorch's ``ConvTranspose2d`` and
Caffe's ``Deconvolution`` weights mean (``weight = kernel.transpose(2, 3, 0, 1)``, no flip), but
it is spatially flipped relative to flax's ``nn.ConvTranspose`` (default
``transpose_kernel=False``): the same array there gives a different result. To use a jaxseg
kernel in ``nn.ConvTranspose(features, (k, k), strides=(s, s), padding="VALID")``, pass
``kernel[::-1, ::-1]``; with ``transpose_kernel=True`` pass ``kernel.swapaxes(2, 3)`` instead.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

Dtype = Any


def bilinear_kernel(size: int) -> np.ndarray:
    """The 2-D bilinear interpolation kernel of a ``size x size`` transposed convolution.

    This is the kernel FCN initialises its upsampling layers with (a stride ``s`` upsampling
    uses ``size = 2 * s``).

    Returns:
      ``float32`` array of shape ``[size, size]``.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1.0 - np.abs(np.arange(size) - center) / factor
    return np.outer(ramp, ramp).astype(np.float32)


def bilinear_upconv_init(key, shape, dtype=jnp.float32):
    """Initialiser for a ``[k, k, c, c]`` kernel: bilinear per channel, zero across channels."""
    del key
    k, k2, c_in, c_out = shape
    if k != k2 or c_in != c_out:
        raise ValueError(f"bilinear init needs a square kernel and in == out channels, got {shape}")
    return jnp.asarray(bilinear_kernel(k)[:, :, None, None] * np.eye(c_in)[None, None], dtype)


def transposed_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """Transposed convolution with no padding, whose kernel size is a multiple of its stride.

    ``out[s*h + i, s*w + j, d] += x[h, w, c] * kernel[i, j, c, d]``, the convention of
    PyTorch's ``ConvTranspose2d`` and Caffe's ``Deconvolution`` (weights there are stored as
    ``[c, d, i, j]``). The output has spatial size ``(size - 1) * stride + kernel_size``.
    flax's ``nn.ConvTranspose`` flips the kernel spatially relative to this: it computes the
    same output from ``kernel[::-1, ::-1]`` (module docstring).

    Args:
      x: ``[batch, height, width, in_features]``.
      kernel: ``[k, k, in_features, features]`` with ``k`` a multiple of ``stride``.
      stride: the upsampling factor.

    Returns:
      ``[batch, (height - 1) * stride + k, (width - 1) * stride + k, features]``.
    """
    k = kernel.shape[0]
    if kernel.shape[1] != k or k % stride:
        raise ValueError(
            f"kernel {kernel.shape[:2]} must be square and a multiple of stride {stride}"
        )
    m = k // stride
    n, h, w, _ = x.shape
    features = kernel.shape[-1]
    # Every input pixel paints a k x k patch: an m x m grid of stride x stride blocks.
    patches = jnp.einsum("nhwc,ijcd->nhwijd", x, kernel)
    patches = patches.reshape(n, h, w, m, stride, m, stride, features)
    out = 0
    for a in range(m):
        for b in range(m):
            block = patches[:, :, :, a, :, b, :, :].transpose(0, 1, 3, 2, 4, 5)
            pad = ((0, 0), (a, m - 1 - a), (0, 0), (b, m - 1 - b), (0, 0), (0, 0))
            out = out + jnp.pad(block, pad)
    return out.reshape(n, (h + m - 1) * stride, (w + m - 1) * stride, features)


class UpConv(nn.Module):
    """Learnable transposed convolution (no padding) with ``kernel_size`` a multiple of ``stride``.

    ``UpConv(features, kernel_size=2, stride=2)`` is the U-Net up-convolution;
    ``UpConv(c, kernel_size=4, stride=2, use_bias=False, kernel_init=bilinear_upconv_init)``
    is FCN's learnable 2x upsampling.

    Its ``kernel`` loads into PyTorch ``ConvTranspose2d`` / Caffe ``Deconvolution`` as
    ``kernel.transpose(2, 3, 0, 1)`` unflipped, and into flax ``nn.ConvTranspose(features,
    (k, k), strides=(s, s), padding="VALID")`` only flipped: ``kernel[::-1, ::-1]``.
    """

    features: int
    kernel_size: int = 2
    stride: int = 2
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = transposed_conv(x, kernel, self.stride)
        return y + bias if bias is not None else y


def center_crop(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """Crops the centre ``height x width`` window of ``[batch, H, W, C]``."""
    top = (x.shape[1] - height) // 2
    left = (x.shape[2] - width) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {x.shape[1:3]} to {(height, width)}")
    return x[:, top : top + height, left : left + width, :]


def crop(x: jnp.ndarray, offset: int, height: int, width: int) -> jnp.ndarray:
    """Crops ``[batch, H, W, C]`` to ``height x width`` starting ``offset`` pixels in."""
    if x.shape[1] < offset + height or x.shape[2] < offset + width:
        raise ValueError(f"cannot crop {x.shape[1:3]} at offset {offset} to {(height, width)}")
    return x[:, offset : offset + height, offset : offset + width, :]


def max_pool_2x2(x: jnp.ndarray, ceil_mode: bool = False) -> jnp.ndarray:
    """2x2 max pooling with stride 2, written as a reshape and a max.

    Its gradient is about twice as fast as ``nn.max_pool``'s on XLA:CPU. With ``ceil_mode``
    an odd edge is padded with ``-inf`` (Caffe's pooling, used by FCN); otherwise it is
    dropped (PyTorch's default).
    """
    n, h, w, c = x.shape
    if ceil_mode:
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    else:
        x = x[:, : h - h % 2, : w - w % 2, :]
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
