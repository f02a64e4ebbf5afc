"""Bilinear resizing as Pillow does it, in NumPy and in jax code that ``jax.export`` can trace.

Training resizes examples with Pillow (``config.resize_to``, ``Image.BILINEAR``): a triangle
filter, widened by the reduction factor when shrinking (antialiasing), whose weights are
normalised per output pixel; on uint8 pixels it runs in two passes, horizontal first, each with
22-bit fixed-point weights and rounding to uint8. An exported function cannot call Pillow:
``resize_uint8`` does the same arithmetic in jax, for sizes that may be known only when it runs
(symbolic), and gives Pillow's pixels up to a difference of one level where float32 and
Pillow's float64 weights round apart: none on ordinary photo sizes, but up to about a fifth of
the pixels for extreme aspect changes (300x7 -> 11x300). ``resize_scores`` resizes float maps (class scores) with
the same filter, which is also what ``jax.image.resize(..., 'linear')`` computes.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2.


def weights(in_size: Any, out_size: Any, xp=np):
    """``[out_size, in_size]`` weights (rows sum to 1) of the antialiased triangle filter.

    Output pixel ``o`` is centred at input coordinate ``(o + 0.5) * in / out``; input pixel
    ``j`` gets weight ``max(0, 1 - |j + 0.5 - centre| / max(in / out, 1))``, normalised, as
    Pillow's ``precompute_coeffs`` and jax's ``scale_and_translate`` give it. Computed from
    integers, ``max(0, 2 max(in, out) - |(2j + 1) out - (2o + 1) in|)`` over its row sum, so
    that float32 (``xp=jnp``) rounds once, where the sizes are below 2**24 / 4.

    Args:
      in_size, out_size: sizes; with ``xp=jnp`` either may be a symbolic dimension.
      xp: ``np`` (float64 weights) or ``jnp`` (float32, traceable).
    """
    ints, floats = (np.int64, np.float64) if xp is np else (jnp.int32, jnp.float32)
    o = xp.arange(out_size, dtype=ints)[:, None]
    j = xp.arange(in_size, dtype=ints)[None, :]
    n_in, n_out = xp.asarray(in_size, ints), xp.asarray(out_size, ints)
    height = xp.maximum(
        0, 2 * xp.maximum(n_in, n_out) - xp.abs((2 * j + 1) * n_out - (2 * o + 1) * n_in)
    )
    return height.astype(floats) / height.sum(axis=1, keepdims=True).astype(floats)


def resize_uint8(images: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """``uint8 [B, H, W, C]`` -> ``uint8 [B, height, width, C]``, as Pillow's BILINEAR resize.

    ``H`` and ``W`` may be symbolic. Like Pillow: the horizontal pass first, each pass with
    weights rounded to ``PRECISION_BITS`` bits and its result rounded and clipped to uint8.
    """

    def one_pass(x, axis: int, out_size: int):
        w = weights(x.shape[axis], out_size, jnp)
        k = jnp.floor(w * (1 << PRECISION_BITS) + 0.5).astype(jnp.int32)
        y = jnp.moveaxis(
            jnp.tensordot(x.astype(jnp.int32), k, axes=((axis,), (1,)),
                          preferred_element_type=jnp.int32),
            -1, axis,
        )  # fmt: skip
        y = (y + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS
        return jnp.clip(y, 0, 255).astype(jnp.uint8)

    return one_pass(one_pass(images, 2, size[1]), 1, size[0])


def resize_scores(scores, size: tuple[Any, Any], xp=np):
    """``float [..., h, w, K]`` -> ``[..., height, width, K]`` with the same (separable) filter.

    With ``xp=np`` on the host (float32 result, no device memory: images may be large); with
    ``xp=jnp`` traceable, the target size possibly symbolic.
    """
    dtype = np.float32 if xp is np else jnp.float32
    *_, h, w, _ = scores.shape
    wh = weights(h, size[0], xp).astype(dtype)
    ww = weights(w, size[1], xp).astype(dtype)
    rows = xp.moveaxis(xp.tensordot(wh, scores, axes=((1,), (scores.ndim - 3,))), 0, -3)
    return xp.moveaxis(xp.tensordot(ww, rows, axes=((1,), (rows.ndim - 2,))), 0, -2)
