"""On-device augmentation for segmentation: one random draw per example, shared by image and mask.

All geometric ops (flips, rot90, rotation, scaling, translation, U-Net and Simard elastic
deformations) fold into one sampling grid, so each example is resampled once: the image
bilinearly, the mask and an optional weight map by nearest neighbour. Photometric ops then touch
the image only. Everything is pure, jittable and vmappable; ``AugmentParams`` is hashable, so it can
be a static argument of ``jax.jit`` (ops whose probability is 0 are not even traced).

This module holds the settings and the random draws; the warps themselves (affine matrix, elastic
fields, coordinates, resampling) are in ``jaxseg.warps``, re-exported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxseg.warps import (
    OUT_OF_BOUNDS_MODES,
    Array,
    Shape,
    affine_matrix,
    resample,
    sampling_coords,
    simard_displacement,
    unet_displacement,
)
from jaxseg.warps import gaussian_matrix as gaussian_matrix  # Re-exported.

GEOMETRIC_OPS = ("flip_v", "flip_h", "rot90", "rotate", "scale", "translate", "elastic", "simard")
PHOTOMETRIC_OPS = ("brightness", "contrast", "gamma", "noise")


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
