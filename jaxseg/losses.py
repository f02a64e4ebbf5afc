"""Segmentation losses: cross-entropy, soft Dice and focal.

The losses are pure, jittable functions of float32 `logits` `[batch, height, width,
num_classes]` and integer `labels` `[batch, height, width]`. Each returns a scalar.

Which pixels count ("valid" pixels), the same rule in every loss here and in
`jaxseg.metrics.confusion_matrix`: a pixel is valid when `0 <= label < num_classes` and
`label != ignore_label`. Invalid pixels contribute exactly nothing, neither to the loss nor to
its normaliser, and never produce NaN (an `ignore_label` such as 255 may lie outside
`[0, num_classes)`). A label outside `[0, num_classes)` that is not the ignore label is also
excluded rather than raising (jitted code cannot raise on data); the data pipeline validates
labels before they get here.

Every loss is a mean over the valid pixels of the whole batch (all images pooled, not a mean of
per-image means), so a sharded batch gives the same value as one device. A batch with no valid
pixel has loss 0 (PyTorch returns NaN there).

The U-Net paper's weight map, passed as `softmax_cross_entropy(pixel_weights=...)`, is made on
the host by the input pipeline: `jaxseg.data.weight_map.border_weight_map`.

Each loss here divides its sums over the batch (`cross_entropy_sums`, `dice_sums`, `focal_sums`,
`segmentation_loss_sums`), which gradient accumulation adds across micro-batches; the sums and
their divisions live in `jaxseg.loss_sums` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax

from jaxseg.loss_sums import (
    LOSS_NAMES,
    cross_entropy_sums,
    dice_from_sums,
    dice_sums,
    focal_sums,
    ratio_from_sums,
    segmentation_loss_from_sums,
    segmentation_loss_sums,
)

__all__ = [
    "LOSS_NAMES",
    "cross_entropy_sums",
    "dice_from_sums",
    "dice_loss",
    "dice_sums",
    "focal_loss",
    "focal_sums",
    "segmentation_loss",
    "segmentation_loss_from_sums",
    "segmentation_loss_sums",
    "softmax_cross_entropy",
]


def softmax_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_label: int | None = None,
    class_weights: jax.Array | Sequence[float] | None = None,
    pixel_weights: jax.Array | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy, averaged over the valid pixels of the batch.

    With `m_p` = 1 for valid pixels and 0 otherwise, `c_k` the class weights (1 when None),
    `w_p` the pixel weights (1 when None) and `l_p = -log softmax(logits_p)[y_p]`::

        loss = sum_p m_p * c_{y_p} * w_p * l_p / sum_p m_p * c_{y_p}

    Without pixel weights this is exactly PyTorch's
    `F.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_label)`
    (reduction 'mean': class weights enter numerator and denominator). Pixel weights enter the
    numerator only: they are the U-Net paper's weight map `w(x)` in its energy
    `E = sum_x w(x) log p_{l(x)}(x)`, here divided by the class-weighted count of valid
    pixels, so a weight map that is 2 everywhere doubles the loss. Returns 0 when no pixel is
    valid.

    Args:
      logits: `[batch, height, width, num_classes]`, cast to float32.
      labels: `[batch, height, width]` integer class ids.
      ignore_label: label value excluded from the loss (may be outside `[0, num_classes)`).
      class_weights: `[num_classes]` per-class weights.
      pixel_weights: `[batch, height, width]` per-pixel weights, e.g. `border_weight_map`.

    Returns:
      Scalar float32 loss.

    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[[[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]]]])  # [1, 1, 3, 2]
    >>> labels = jnp.array([[[0, 1, 255]]])
    >>> print(f"{softmax_cross_entropy(logits, labels, ignore_label=255):.4f}")  # log(1 + e^-2)
    0.1269
    """
    sums = cross_entropy_sums(
        logits,
        labels,
        ignore_label=ignore_label,
        class_weights=class_weights,
        pixel_weights=pixel_weights,
    )
    return ratio_from_sums(sums)


def dice_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_label: int | None = None,
    smooth: float = 1.0,
) -> jax.Array:
    r"""Soft Dice loss over classes: `1 - mean_k dice_k`.

    With softmax probabilities `q_pk`, one-hot labels `g_pk` and the valid-pixel mask `m_p`,
    sums run over every valid pixel of the batch (one "batch Dice" per class)::

        dice_k = (2 * sum_p m_p q_pk g_pk + smooth) / (sum_p m_p (q_pk + g_pk) + smooth)

    The mean is over all `num_classes` classes. A class absent from the labels and given
    almost no probability has `dice_k` close to 1 (no penalty) when `smooth > 0`; a class whose
    denominator is exactly 0 (only possible with `smooth=0` and no valid pixel) counts as 1.

    Args:
      logits: `[batch, height, width, num_classes]`.
      labels: `[batch, height, width]` integer class ids.
      ignore_label: label value excluded from the loss.
      smooth: additive smoothing in numerator and denominator.

    Returns:
      Scalar float32 loss in `[0, 1]`.

    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[[[9.0, -9.0], [-9.0, 9.0]]]])  # [1, 1, 2, 2], near one-hot
    >>> print(f"{dice_loss(logits, jnp.array([[[0, 1]]]), smooth=0.0):.4f}")
    0.0000
    >>> print(f"{dice_loss(logits, jnp.array([[[1, 0]]]), smooth=0.0):.4f}")
    1.0000
    """
    return dice_from_sums(dice_sums(logits, labels, ignore_label=ignore_label), smooth=smooth)


def focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | jax.Array | None = None,
    ignore_label: int | None = None,
) -> jax.Array:
    r"""Softmax focal loss (Lin et al. 2017), averaged over the valid pixels of the batch.

    With `p_p` the softmax probability of the true class and `a_k` the class factors::

        loss = sum_p m_p * a_{y_p} * (1 - p_p)^gamma * (-log p_p) / sum_p m_p

    `gamma=0` and no `alpha` give the plain cross-entropy. Unlike `softmax_cross_entropy`'s
    `class_weights`, `alpha` scales the numerator only (as in the paper, which normalises by
    the number of samples). Returns 0 when no pixel is valid.

    Args:
      logits: `[batch, height, width, num_classes]`.
      labels: `[batch, height, width]` integer class ids.
      gamma: focusing exponent, >= 0 (a Python number: static under jit).
      alpha: None (1 for every class), one float for every class, or `[num_classes]`.
      ignore_label: label value excluded from the loss.

    Returns:
      Scalar float32 loss.

    >>> import jax.numpy as jnp
    >>> logits = jnp.log(jnp.array([[[[0.75, 0.25]]]]))  # p(true class 0) = 0.75
    >>> print(f"{focal_loss(logits, jnp.array([[[0]]]), gamma=2.0):.5f}")  # 0.25^2 * -log 0.75
    0.01798
    """
    sums = focal_sums(logits, labels, gamma=gamma, alpha=alpha, ignore_label=ignore_label)
    return ratio_from_sums(sums)


def segmentation_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    weights: Mapping[str, float],
    ignore_label: int | None,
    class_weights: jax.Array | Sequence[float] | None = None,
    pixel_weights: jax.Array | None = None,
    dice_smooth: float = 1.0,
    focal_gamma: float = 2.0,
    focal_alpha: float | Sequence[float] | jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of named losses: `total = sum_name weights[name] * loss_name`.

    Names: 'cross_entropy' (`softmax_cross_entropy`, the only one that takes `class_weights`
    and `pixel_weights`), 'dice' (`dice_loss`), 'focal' (`focal_loss`). Every named loss is
    computed even when its weight is 0, so it can be logged.

    It is `segmentation_loss_from_sums(segmentation_loss_sums(...))`: gradient accumulation
    sums the sums of its micro-batches and divides once, so it equals one big batch.

    Args:
      logits: `[batch, height, width, num_classes]`.
      labels: `[batch, height, width]` integer class ids.
      weights: loss name -> weight, e.g. `{'cross_entropy': 1.0, 'dice': 0.5}`.
      ignore_label: label value excluded from every loss (None for none).
      class_weights: `[num_classes]`, for 'cross_entropy'.
      pixel_weights: `[batch, height, width]`, for 'cross_entropy'.
      dice_smooth: `smooth` of `dice_loss`.
      focal_gamma: `gamma` of `focal_loss`.
      focal_alpha: `alpha` of `focal_loss`.

    Returns:
      `(total, components)`: the scalar total and a dict from each name in `weights` to its
      unweighted loss.

    Raises:
      ValueError: for an empty `weights` or a name not in `LOSS_NAMES`.
    """
    sums = segmentation_loss_sums(
        logits,
        labels,
        names=weights,
        ignore_label=ignore_label,
        class_weights=class_weights,
        pixel_weights=pixel_weights,
        focal_gamma=focal_gamma,
        focal_alpha=focal_alpha,
    )
    return segmentation_loss_from_sums(sums, weights=weights, dice_smooth=dice_smooth)
