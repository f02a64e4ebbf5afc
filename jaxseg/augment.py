"""On-device augmentation for segmentation: one random draw per example, shared by image and mask.

All geometric ops (flips, rot90, rotation, scaling, translation, U-Net and Simard elastic
deformations) fold into one sampling grid, so each example is resampled once: the image
bilinearly, the mask and an optional weight map by nearest neighbour. Photometric ops then touch
the image only. Everything is pure, jittable and vmappable; ``AugmentParams`` is hashable, so it can
be a static argument of ``jax.jit`` (ops whose probability is 0 are not even traced).

Coordinates are (row, col) in pixels with pixel centres at integers. The affine ops act about the
image centre ((H - 1) / 2, (W - 1) / 2) in this order: vertical flip, horizontal flip, rot90,
rotation, scaling, translation; elastic displacements (in output pixels) are added last.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

Array = jax.Array
Shape = tuple[int, int]  # (height, width)

OUT_OF_BOUNDS_MODES = ("mirror", "ignore")
GEOMETRIC_OPS = ("flip_v", "flip_h", "rot90", "rotate", "scale", "translate", "elastic", "simard")
PHOTOMETRIC_OPS = ("brightness", "contrast", "gamma", "noise")
_INSIDE_TOL = 1e-3  # pixels of float round-off allowed at the border in 'ignore' mode


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Augmentation settings. Every default is the identity (all probabilities 0)."""

    flip_v_prob: float = 0.0  # flip up-down (axis 0)
    flip_h_prob: float = 0.0  # flip left-right (axis 1)
    rot90_prob: float = 0.0  # turn by 90, 180 or 270 degrees (equally likely); square images only
    rotate_prob: float = 0.0
    rotate_max_degrees: float = 0.0  # angle ~ U(-max, max), counter-clockwise like np.rot90
    scale_prob: float = 0.0
    scale_min: float = 1.0  # scale ~ U(min, max); > 1 zooms in
    scale_max: float = 1.0
    translate_prob: float = 0.0
    translate_max_fraction: float = 0.0  # shift ~ U(-f, f) * size per axis, rounded to pixels
    elastic_prob: float = 0.0  # U-Net paper: N(0, std^2) on a coarse grid, bicubic upsampling
    elastic_grid: int = 3  # coarse grid is elastic_grid x elastic_grid
    elastic_std: float = 10.0  # pixels
    simard_prob: float = 0.0  # Simard et al. 2003: alpha * gaussian_filter(U(-1, 1), sigma)
    simard_alpha: float = 34.0
    simard_sigma: float = 4.0
    brightness_prob: float = 0.0
    brightness_max_delta: float = 0.0  # image + U(-d, d)
    contrast_prob: float = 0.0
    contrast_min: float = 1.0  # (image - channel mean) * U(min, max) + channel mean
    contrast_max: float = 1.0
    gamma_prob: float = 0.0
    gamma_min: float = 1.0  # image ** U(min, max)
    gamma_max: float = 1.0
    noise_prob: float = 0.0
    noise_std: float = 0.0  # image + N(0, std^2) per pixel and channel
    out_of_bounds: str = "mirror"  # see `resample`

    def __post_init__(self):
        v = lambda name: getattr(self, name)
        probs = [n for n in self.__dataclass_fields__ if n.endswith("_prob")]
        bad = [f"{n}={v(n)!r} not in [0, 1]" for n in probs if not 0 <= v(n) <= 1]
        bad += [f"{n}={v(n)!r} < 0" for n in _NON_NEGATIVE if not v(n) >= 0]
        bad += [f"{n}={v(n)!r} <= 0" for n in _POSITIVE if not v(n) > 0]
        for n in ("scale", "contrast", "gamma"):
            if not v(f"{n}_min") <= v(f"{n}_max"):
                bad.append(f"{n}_min={v(f'{n}_min')!r} > {n}_max={v(f'{n}_max')!r}")
        if not self.translate_max_fraction <= 1:
            bad.append(f"translate_max_fraction={self.translate_max_fraction!r} > 1")
        if not (isinstance(self.elastic_grid, int) and self.elastic_grid >= 2):
            bad.append(f"elastic_grid={self.elastic_grid!r} is not an int >= 2")
        if self.out_of_bounds not in OUT_OF_BOUNDS_MODES:
            bad.append(f"out_of_bounds={self.out_of_bounds!r} not in {OUT_OF_BOUNDS_MODES}")
        if bad:
            raise ValueError("Invalid AugmentParams: " + "; ".join(bad))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentParams:
        """Builds params from a plain dict, e.g. ``config.augment.to_dict()``.

        Raises:
          ValueError: naming unknown keys, or every out-of-range value.
        """
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"Unknown AugmentParams keys {unknown}; known: {list(cls.__dataclass_fields__)}"
            )
        return cls(**d)

    @property
    def geometric(self) -> bool:
        """Whether any geometric op can fire (if not, `augment` skips the resample)."""
        return any(getattr(self, f"{op}_prob") > 0 for op in GEOMETRIC_OPS)


_NON_NEGATIVE = (
    "rotate_max_degrees translate_max_fraction elastic_std simard_alpha brightness_max_delta "
    "contrast_min noise_std"
).split()
_POSITIVE = ("scale_min", "simard_sigma", "gamma_min")


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


def _draw(key, prob, sample, identity):
    """``sample(key')`` with probability ``prob``, else ``identity``; prob 0 draws nothing."""
    if prob == 0:
        return identity
    k_apply, k_value = jax.random.split(key)
    return jnp.where(jax.random.uniform(k_apply) < prob, sample(k_value), identity)


def _uniform(key, low, high, shape=()):
    return jax.random.uniform(key, shape, minval=low, maxval=high)


def random_coords(key: Array, shape: Shape, params: AugmentParams) -> Array:
    """Draws all geometric ops for one example; returns sampling coordinates [2, H, W]."""
    if params.rot90_prob > 0 and shape[0] != shape[1]:
        raise ValueError(f"rot90 needs a square image, got (height, width) {tuple(shape)}")
    p, size, zero = params, jnp.array(shape, jnp.float32), jnp.zeros((2, *shape), jnp.float32)
    ops = {  # op: (value drawn from a key, identity value)
        "flip_v": (lambda _: True, False),
        "flip_h": (lambda _: True, False),
        "rot90": (lambda k: jax.random.randint(k, (), 1, 4), 0),
        "rotate": (lambda k: p.rotate_max_degrees * _uniform(k, -1, 1), 0.0),
        "scale": (lambda k: _uniform(k, p.scale_min, p.scale_max), 1.0),
        "translate": (
            lambda k: jnp.round(_uniform(k, -1, 1, 2) * p.translate_max_fraction * size),
            zero[:, 0, 0],
        ),
        "elastic": (lambda k: unet_displacement(k, shape, p.elastic_grid, p.elastic_std), zero),
        "simard": (lambda k: simard_displacement(k, shape, p.simard_alpha, p.simard_sigma), zero),
    }
    keys = jax.random.split(key, len(ops))
    v = {op: _draw(k, getattr(p, f"{op}_prob"), *ops[op]) for k, op in zip(keys, GEOMETRIC_OPS)}
    matrix = affine_matrix(shape, **{op: v[op] for op in GEOMETRIC_OPS[:6]})
    return sampling_coords(matrix, shape, v["elastic"] + v["simard"])


def photometric(key: Array, image: Array, params: AugmentParams) -> Array:
    """Brightness, contrast, gamma, noise (in this order) on image [H, W, C] in [0, 1].

    The image is clipped to [0, 1] after each op that fires.
    """
    p, mean = params, lambda x: x.mean((0, 1))  # per channel
    ops = {
        "brightness": lambda k, x: x + p.brightness_max_delta * _uniform(k, -1, 1),
        "contrast": lambda k, x: (
            (x - mean(x)) * _uniform(k, p.contrast_min, p.contrast_max) + mean(x)
        ),
        "gamma": lambda k, x: x ** _uniform(k, p.gamma_min, p.gamma_max),
        "noise": lambda k, x: x + p.noise_std * jax.random.normal(k, x.shape),
    }
    for k, op in zip(jax.random.split(key, len(ops)), PHOTOMETRIC_OPS):
        changed = lambda k_value, x=image, op=op: jnp.clip(ops[op](k_value, x), 0.0, 1.0)
        image = _draw(k, getattr(p, f"{op}_prob"), changed, image)
    return image


def augment(
    key: Array,
    image: Array,
    mask: Array,
    params: AugmentParams,
    weights: Array | None = None,
    *,
    outside_label: int = -1,
) -> tuple[Array, Array, Array | None]:
    """Augments one example: one geometric resample, then photometric ops on the image only.

    In 'ignore' mode the photometric ops also touch the zero-filled outside pixels (their mask is
    ``outside_label``, so a loss that honours it never sees them).

    Args:
      key: PRNG key for this example.
      image: [H, W, C] float in [0, 1].
      mask: [H, W] integer labels.
      params: `AugmentParams` (static under jit).
      weights: optional [H, W] float map (e.g. loss weights), resampled like the mask (nearest).
      outside_label: mask value of pixels from outside the image in 'ignore' mode (`resample`).
    Returns:
      (image [H, W, C] float32, mask [H, W] of mask's dtype, weights [H, W] or None).
    """
    if image.ndim != 3 or mask.shape != image.shape[:2]:
        raise ValueError(f"need image [H, W, C] and mask [H, W], got {image.shape}, {mask.shape}")
    if weights is not None and weights.shape != mask.shape:
        raise ValueError(f"weights shape {weights.shape} != mask shape {mask.shape}")
    image = jnp.asarray(image, jnp.float32)
    k_geometric, k_photometric = jax.random.split(key)
    if params.geometric:
        coords = random_coords(k_geometric, mask.shape, params)
        image, mask, weights = resample(
            image,
            mask,
            coords,
            weights=weights,
            out_of_bounds=params.out_of_bounds,
            outside_label=outside_label,
        )
    return photometric(k_photometric, image, params), mask, weights


def augment_batch(
    key: Array,
    images: Array,
    masks: Array,
    params: AugmentParams,
    weights: Array | None = None,
    *,
    outside_label: int = -1,
) -> tuple[Array, Array, Array | None]:
    """`augment` vmapped over [B, ...] inputs, example i using ``jax.random.split(key, B)[i]``.

    Args:
      key: one PRNG key for the batch.
      images: [B, H, W, C] float in [0, 1]; masks: [B, H, W] int; weights: [B, H, W] or None.
      params: `AugmentParams`; under ``jax.jit`` pass it as a static argument or close over it.
    Returns:
      (images [B, H, W, C] float32, masks [B, H, W], weights [B, H, W] or None).
    """
    keys = jax.random.split(key, images.shape[0])
    one = lambda k, image, mask, w: augment(
        k, image, mask, params, weights=w, outside_label=outside_label
    )
    return jax.vmap(one)(keys, images, masks, weights)
