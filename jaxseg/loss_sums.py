"""The losses of `jaxseg.losses` as sums over a batch, and the divisions that finish them.

Each loss is a ratio of sums over the pixels of a batch (cross-entropy and focal: a numerator
and a denominator; Dice: per-class intersections and sizes). The `*_sums` functions return those
sums; they add across batches, so gradient accumulation sums the sums of its micro-batches and
divides once (`ratio_from_sums`, `dice_from_sums`, `segmentation_loss_from_sums`), which equals
the loss of one big batch. The public losses in `jaxseg.losses` are these sums, divided.

The valid-pixel rule of `jaxseg.losses` (its module doc) is implemented here, by `_prepare`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "LOSS_NAMES",
    "cross_entropy_sums",
    "dice_from_sums",
    "dice_sums",
    "focal_sums",
    "ratio_from_sums",
    "segmentation_loss_from_sums",
    "segmentation_loss_sums",
]

LOSS_NAMES = ("cross_entropy", "dice", "focal")


def _check_shapes(logits: jax.Array, labels: jax.Array) -> None:
    if logits.ndim != labels.ndim + 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            "expected logits [batch, height, width, num_classes] and labels [batch, height, "
            f"width]; got logits {logits.shape} and labels {labels.shape}"
        )


def _valid_pixels(labels: jax.Array, num_classes: int, ignore_label: int | None) -> jax.Array:
    """True where 0 <= label < num_classes and label != ignore_label."""
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_label is not None:
        valid &= labels != ignore_label
    return valid


def _safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, or 0 where denominator is 0, with finite gradients."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def _prepare(logits, labels, ignore_label):
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels).astype(jnp.int32)
    _check_shapes(logits, labels)
    num_classes = logits.shape[-1]
    valid = _valid_pixels(labels, num_classes, ignore_label)
    safe_labels = jnp.where(valid, labels, 0)  # any in-range class; masked out below
    return logits, safe_labels, valid, num_classes


def _per_class(values, num_classes: int, name: str) -> jax.Array:
    values = jnp.asarray(values, jnp.float32)
    if values.shape != (num_classes,):
        raise ValueError(f"{name} must have shape ({num_classes},), got {values.shape}")
    return values


def ratio_from_sums(sums: Mapping[str, jax.Array]) -> jax.Array:
    """`numerator / denominator` of `cross_entropy_sums` or `focal_sums`; 0 if the latter is 0."""
    return _safe_divide(sums["numerator"], sums["denominator"])


def cross_entropy_sums(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_label: int | None = None,
    class_weights: jax.Array | Sequence[float] | None = None,
    pixel_weights: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """`softmax_cross_entropy` before its division: `{'numerator', 'denominator'}`, each a
    scalar sum over the batch. Sums of several batches divide to the loss of their union."""
    logits, safe_labels, valid, num_classes = _prepare(logits, labels, ignore_label)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    weight = valid.astype(jnp.float32)
    if class_weights is not None:
        weight = weight * _per_class(class_weights, num_classes, "class_weights")[safe_labels]
    terms = weight * nll
    if pixel_weights is not None:
        pixel_weights = jnp.asarray(pixel_weights, jnp.float32)
        if pixel_weights.shape != valid.shape:
            raise ValueError(
                f"pixel_weights must have the labels' shape {valid.shape}, got "
                f"{pixel_weights.shape}"
            )
        terms = terms * pixel_weights
    # `where`, not a product with the mask: a NaN weight or logit at an ignored pixel stays out.
    numerator = jnp.sum(jnp.where(valid, terms, 0.0))
    return {"numerator": numerator, "denominator": jnp.sum(weight)}


def dice_sums(
    logits: jax.Array, labels: jax.Array, *, ignore_label: int | None = None
) -> dict[str, jax.Array]:
    """The per-class sums `dice_loss` is made of, each `[num_classes]` over the valid pixels:
    `intersection` (sum q g), `predicted` (sum q) and `target` (sum g). Sums of several batches
    give, through `dice_from_sums`, the Dice loss of their union."""
    logits, safe_labels, valid, num_classes = _prepare(logits, labels, ignore_label)
    mask = valid[..., None]
    probs = jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)
    one_hot = jnp.where(mask, jax.nn.one_hot(safe_labels, num_classes), 0.0)
    axes = tuple(range(probs.ndim - 1))
    return {
        "intersection": jnp.sum(probs * one_hot, axis=axes),
        "predicted": jnp.sum(probs, axis=axes),
        "target": jnp.sum(one_hot, axis=axes),
    }


def dice_from_sums(sums: Mapping[str, jax.Array], *, smooth: float = 1.0) -> jax.Array:
    """`1 - mean_k dice_k` from the sums of `dice_sums`."""
    denominator = sums["predicted"] + sums["target"] + smooth
    positive = denominator > 0
    dice = jnp.where(
        positive,
        (2.0 * sums["intersection"] + smooth) / jnp.where(positive, denominator, 1.0),
        1.0,
    )
    return 1.0 - jnp.mean(dice)


def focal_sums(
    logits: jax.Array,
    labels: jax.Array,
    *,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | jax.Array | None = None,
    ignore_label: int | None = None,
) -> dict[str, jax.Array]:
    """`focal_loss` before its division: `{'numerator', 'denominator'}` summed over the batch."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    logits, safe_labels, valid, num_classes = _prepare(logits, labels, ignore_label)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    log_p = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    terms = -log_p
    if gamma != 0:
        one_minus_p = jnp.maximum(-jnp.expm1(log_p), 0.0)
        # (1 - p)^gamma with a finite gradient at p == 1 also for gamma < 1.
        positive = one_minus_p > 0
        modulating = jnp.where(positive, jnp.where(positive, one_minus_p, 1.0) ** gamma, 0.0)
        terms = modulating * terms
    if alpha is not None:
        alpha = jnp.asarray(alpha, jnp.float32)
        if alpha.ndim == 0:
            terms = alpha * terms
        else:
            terms = _per_class(alpha, num_classes, "alpha")[safe_labels] * terms
    numerator = jnp.sum(jnp.where(valid, terms, 0.0))
    return {"numerator": numerator, "denominator": jnp.sum(valid.astype(jnp.float32))}


def segmentation_loss_sums(
    logits: jax.Array,
    labels: jax.Array,
    *,
    names: Sequence[str],
    ignore_label: int | None,
    class_weights: jax.Array | Sequence[float] | None = None,
    pixel_weights: jax.Array | None = None,
    focal_gamma: float = 2.0,
    focal_alpha: float | Sequence[float] | jax.Array | None = None,
) -> dict[str, dict[str, jax.Array]]:
    """Each named loss's sums over the batch (`cross_entropy_sums`, `dice_sums`, `focal_sums`).

    Sums add across batches: the sums of micro-batches, added, give through
    `segmentation_loss_from_sums` the loss of the whole batch.
    """
    _check_names(names)
    sums = {}
    for name in names:
        if name == "cross_entropy":
            sums[name] = cross_entropy_sums(
                logits,
                labels,
                ignore_label=ignore_label,
                class_weights=class_weights,
                pixel_weights=pixel_weights,
            )
        elif name == "dice":
            sums[name] = dice_sums(logits, labels, ignore_label=ignore_label)
        else:
            sums[name] = focal_sums(
                logits, labels, gamma=focal_gamma, alpha=focal_alpha, ignore_label=ignore_label
            )
    return sums


def segmentation_loss_from_sums(
    sums: Mapping[str, Mapping[str, jax.Array]],
    *,
    weights: Mapping[str, float],
    dice_smooth: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(total, components)` of `segmentation_loss` from `segmentation_loss_sums`."""
    _check_names(weights)
    components = {
        name: dice_from_sums(sums[name], smooth=dice_smooth)
        if name == "dice"
        else ratio_from_sums(sums[name])
        for name in weights
    }
    total = sum(weights[name] * value for name, value in components.items())
    return total, components


def _check_names(names) -> None:
    unknown = sorted(set(names) - set(LOSS_NAMES))
    if unknown:
        raise ValueError(f"unknown loss name(s) {unknown}; known names are {list(LOSS_NAMES)}")
    if not names:
        raise ValueError(f"weights is empty; name at least one of {list(LOSS_NAMES)}")
