"""Geometric warps for augmentation: affine and elastic sampling coordinates, and resampling.

The building blocks `jaxseg.augment` draws at random: an affine matrix, elastic displacement
fields (U-Net paper, Simard et al. 2003), the sampling coordinates they give, and one resample
of an image (bilinear) with its mask and weights (nearest). All pure and jittable.

Coordinates are (row, col) in pixels with pixel centres at integers. The affine ops act about the
image centre ((H - 1) / 2, (W - 1) / 2) in this order: vertical flip, horizontal flip, rot90,
rotation, scaling, translation; elastic displacements (in output pixels) are added last.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

__all__ = [
    "OUT_OF_BOUNDS_MODES",
    "affine_matrix",
    "gaussian_matrix",
    "resample",
    "sampling_coords",
    "simard_displacement",
    "unet_displacement",
]

Array = jax.Array
Shape = tuple[int, int]  # (height, width)

OUT_OF_BOUNDS_MODES = ("mirror", "ignore")
_INSIDE_TOL = 1e-3  # pixels of float round-off allowed at the border in 'ignore' mode


def affine_matrix(
    shape: Shape, *, flip_v=False, flip_h=False, rot90=0, rotate=0.0, scale=1.0,
    translate=(0.0, 0.0),
) -> Array:  # fmt: skip
    """The [3, 3] matrix that maps output (row, col, 1) to the input (row, col, 1) to sample.

    Args:
      shape: (H, W); the ops act about the centre ((H - 1) / 2, (W - 1) / 2).
      flip_v, flip_h, rot90, rotate, scale, translate: bool, bool, quarter turns, degrees
        (counter-clockwise), zoom factor, (rows, cols) by which content moves: the output is
        out[p] = in[p - translate]. May be traced. Flips, rot90 and whole-pixel translations
        give exactly integer coordinates.
    """
    centre = jnp.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2], jnp.float32)
    flip = jnp.diag(jnp.stack([jnp.where(flip_v, -1.0, 1.0), jnp.where(flip_h, -1.0, 1.0)]))
    cos90, sin90 = jnp.array([1.0, 0, -1, 0])[rot90 % 4], jnp.array([0.0, 1, 0, -1])[rot90 % 4]
    theta = jnp.deg2rad(jnp.asarray(rotate, jnp.float32))
    inverse_turn = lambda c, s: jnp.stack([jnp.stack([c, s]), jnp.stack([-s, c])])
    linear = flip @ inverse_turn(cos90, sin90) @ inverse_turn(jnp.cos(theta), jnp.sin(theta))
    linear = linear / scale
    offset = centre - linear @ (centre + jnp.asarray(translate, jnp.float32))
    return jnp.concatenate([jnp.concatenate([linear, offset[:, None]], 1), jnp.eye(3)[2:]])


def sampling_coords(matrix: Array, shape: Shape, displacement: Array | None = None) -> Array:
    """Input coordinates [2, H, W] sampled by each output pixel: matrix @ grid + displacement.

    Args:
      matrix: [3, 3] from `affine_matrix`.
      shape: output (H, W).
      displacement: optional [2, H, W] field in pixels, e.g. from `unet_displacement`.
    """
    grid = jnp.stack(
        jnp.meshgrid(*(jnp.arange(n, dtype=jnp.float32) for n in shape), indexing="ij")
    )
    coords = jnp.einsum("ij,jhw->ihw", matrix[:2, :2], grid) + matrix[:2, 2, None, None]
    return coords if displacement is None else coords + displacement


def unet_displacement(key: Array, shape: Shape, grid: int = 3, std: float = 10.0) -> Array:
    """U-Net paper field [2, H, W]: N(0, std^2) on a [grid, grid] grid, upsampled bicubically.

    Equals ``jax.image.resize(coarse, (2, H, W), 'cubic')``, computed as two small matmuls with
    the resized identity (2x faster on CPU). The coarse nodes sit at pixel-area centres, so for
    odd H and W the middle node is the centre pixel, where the field has std ``std``.
    """
    coarse = std * jax.random.normal(key, (2, grid, grid))
    rows, cols = (jax.image.resize(jnp.eye(grid), (n, grid), method="cubic") for n in shape)
    return jnp.einsum("hi,aij,wj->ahw", rows, coarse, cols)


@functools.lru_cache(maxsize=32)
def gaussian_matrix(n: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """[n, n] float32 matrix G with G @ x == scipy.ndimage.gaussian_filter1d(x, sigma) (reflect)."""
    offsets = np.arange(-int(truncate * sigma + 0.5), int(truncate * sigma + 0.5) + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    cols = np.mod(np.arange(n)[:, None] + offsets, 2 * n)
    cols = np.where(cols >= n, 2 * n - 1 - cols, cols)  # reflect: d c b a | a b c d | d c b a
    matrix = np.zeros((n, n))
    np.add.at(matrix, (np.repeat(np.arange(n), offsets.size), cols.ravel()), np.tile(kernel, n))
    matrix = (matrix / kernel.sum()).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def simard_displacement(key: Array, shape: Shape, alpha: float = 34.0, sigma: float = 4.0) -> Array:
    """Simard field [2, H, W]: ``alpha * gaussian_filter(u, sigma, mode='reflect')`` per axis.

    ``u = jax.random.uniform(key, (2, H, W), minval=-1, maxval=1)``; the separable blur is two
    matmuls with `gaussian_matrix` (much faster than a convolution on XLA:CPU).
    """
    u = jax.random.uniform(key, (2, *shape), minval=-1.0, maxval=1.0)
    rows, cols = (jnp.asarray(gaussian_matrix(n, sigma)) for n in shape)
    return alpha * (rows @ u @ cols.T)


def resample(
    image: Array, mask: Array, coords: Array, *, weights: Array | None = None,
    out_of_bounds: str = "mirror", outside_label: int = -1,
) -> tuple[Array, Array, Array | None]:  # fmt: skip
    """Samples image [H, W, C] bilinearly and mask / weights [H, W] nearest at coords [2, h, w].

    Args:
      image, mask, weights: [H, W, C] float, [H, W] int, optional [H, W] float.
      coords: [2, h, w] input (row, col) for each output pixel, e.g. from `sampling_coords`.
      outside_label: mask value for pixels sampled from outside in 'ignore' mode: the label the
        losses ignore (the loader's ``jaxseg.data.IGNORE_INDEX``, -1).
      out_of_bounds: 'mirror' reflects about the edge pixel centres (SciPy mode 'mirror', numpy
        pad 'reflect': d c b | a b c d | c b a). 'ignore' gives image 0, mask ``outside_label``
        and weights 0 wherever a coordinate lies outside [0, size - 1].
    Returns:
      (image [h, w, C], mask [h, w], weights [h, w] or None).
    """
    if out_of_bounds not in OUT_OF_BOUNDS_MODES:
        raise ValueError(f"out_of_bounds={out_of_bounds!r} not in {OUT_OF_BOUNDS_MODES}")
    size = jnp.array(mask.shape, jnp.float32)[:, None, None]
    mode = "mirror" if out_of_bounds == "mirror" else "nearest"
    sample = lambda x, order: map_coordinates(x, [coords[0], coords[1]], order, mode=mode)
    image = jax.vmap(lambda channel: sample(channel, 1), in_axes=-1, out_axes=-1)(image)
    mask = sample(mask, 0)
    weights = None if weights is None else sample(weights, 0)
    if out_of_bounds == "ignore":
        inside = jnp.all((coords >= -_INSIDE_TOL) & (coords <= size - 1 + _INSIDE_TOL), axis=0)
        image = jnp.where(inside[..., None], image, 0)
        mask = jnp.where(inside, mask, jnp.asarray(outside_label, mask.dtype))
        weights = None if weights is None else jnp.where(inside, weights, 0)
    return image, mask, weights
