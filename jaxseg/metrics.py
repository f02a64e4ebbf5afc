"""Semantic segmentation metrics from a confusion matrix summed over the whole evaluation set.

* `confusion_matrix`: jittable, on device; `[num_classes, num_classes]` int32 counts with
  rows = ground truth and columns = prediction.
* `segmentation_metrics`: on the host; the FCN paper's four metrics (pixel accuracy, mean
  accuracy, mean IoU, frequency-weighted IoU) plus per-class accuracy, IoU and Dice.
* `ConfusionMatrix`: the same as a mergeable `clu.metrics.Metric`, for jitted eval steps:
  sum per batch on device, merge across steps, `compute()` once at the end. mIoU is computed
  from the summed matrix, never averaged over batches.

Which pixels are counted, the same rule as in `jaxseg.losses`: `0 <= label < num_classes`,
`label != ignore_label`, and the example is valid (not padding). Labels outside
`[0, num_classes)` that are not the ignore label are dropped silently (jitted code cannot
raise on data; the data pipeline validates labels earlier), as are predictions outside that
range (`argmax` never produces one).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

__all__ = ["ConfusionMatrix", "confusion_matrix", "segmentation_metrics"]


def confusion_matrix(
    predictions: jax.Array,
    labels: jax.Array,
    num_classes: int,
    *,
    ignore_label: int | None = None,
    valid: jax.Array | None = None,
) -> jax.Array:
    """Counts of (ground truth, prediction) class pairs over the counted pixels.

    Args:
      predictions: `[batch, height, width]` integer predicted classes (e.g. `argmax` of the
        logits); any shape works as long as `labels` has the same.
      labels: integer ground-truth classes, same shape as `predictions`.
      num_classes: `K`, a Python int (static under jit).
      ignore_label: label value that is not counted.
      valid: bool mask over the leading axes of `labels`, typically `[batch]` with False for
        padded examples of the last eval batch; broadcast over the remaining axes.

    Returns:
      int32 `[K, K]`: entry `[i, j]` counts pixels of true class `i` predicted as `j`. An
      entry holds up to 2^31 - 1 pixels (about 8,000 images of 512x512 all in one entry),
      enough for the datasets here; int32 because JAX disables 64-bit integers by default.

    >>> import jax.numpy as jnp
    >>> confusion_matrix(jnp.array([0, 1, 1, 2]), jnp.array([0, 1, 2, 255]), 3,
    ...                  ignore_label=255).tolist()
    [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    """
    predictions = jnp.asarray(predictions).astype(jnp.int32)
    labels = jnp.asarray(labels).astype(jnp.int32)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must have one shape, got {predictions.shape} and "
            f"{labels.shape}"
        )
    counted = (labels >= 0) & (labels < num_classes)
    counted &= (predictions >= 0) & (predictions < num_classes)
    if ignore_label is not None:
        counted &= labels != ignore_label
    if valid is not None:
        valid = jnp.asarray(valid).astype(bool)
        if valid.shape != labels.shape[: valid.ndim]:
            raise ValueError(
                f"valid {valid.shape} must match the leading axes of labels {labels.shape}"
            )
        counted &= valid.reshape(valid.shape + (1,) * (labels.ndim - valid.ndim))
    # Uncounted pixels go to an extra bin that is dropped.
    flat = jnp.where(counted, labels * num_classes + predictions, num_classes * num_classes)
    counts = jnp.bincount(flat.ravel(), length=num_classes * num_classes + 1)
    return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def _mean_of_defined(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def segmentation_metrics(confusion: Any) -> dict[str, Any]:
    """The FCN paper's four metrics and per-class scores from a confusion matrix.

    With `n_ij` the pixels of true class `i` predicted `j`, `t_i = sum_j n_ij` (true pixels of
    class `i`) and `p_j = sum_i n_ij` (predicted pixels of class `j`), as in Long et al. 2015:

    * pixel_accuracy = `sum_i n_ii / sum_i t_i`
    * mean_accuracy = mean over classes with `t_i > 0` of `n_ii / t_i`
    * mean_iou = mean over classes with `t_i + p_i > 0` of `n_ii / (t_i + p_i - n_ii)`
    * frequency_weighted_iou = `sum_i t_i * IoU_i / sum_i t_i` (classes with `t_i = 0` carry
      no weight)
    * mean_dice = mean over classes with `t_i + p_i > 0` of `2 n_ii / (t_i + p_i)`

    Per-class values are NaN where undefined: accuracy for a class absent from the ground
    truth, IoU and Dice for a class absent from both ground truth and prediction. NaN entries
    are left out of the means, so a class that never occurs does not pull mIoU down, while a
    class that is predicted but absent from the ground truth counts with IoU 0. An empty
    matrix gives NaN everywhere.

    Args:
      confusion: `[K, K]` counts (rows = ground truth, columns = prediction), NumPy or JAX.

    Returns:
      Dict of Python floats ('pixel_accuracy', 'mean_accuracy', 'mean_iou',
      'frequency_weighted_iou', 'mean_dice') and length-K lists of floats
      ('per_class_accuracy', 'per_class_iou', 'per_class_dice'). `json.dumps` writes NaN
      as `NaN`, which Python's `json` reads back.

    >>> import numpy as np
    >>> m = segmentation_metrics(np.array([[3, 1], [0, 4]]))
    >>> m["pixel_accuracy"], m["mean_iou"], m["per_class_iou"]
    (0.875, 0.775, [0.75, 0.8])
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square [K, K] matrix, got shape {matrix.shape}")
    correct = np.diag(matrix)
    true_count = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    total = matrix.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = np.where(true_count > 0, correct / true_count, np.nan)
        both = true_count + predicted_count
        iou = np.where(both > 0, correct / (both - correct), np.nan)
        dice = np.where(both > 0, 2.0 * correct / both, np.nan)
    if total > 0:
        pixel_accuracy = float(correct.sum() / total)
        frequency_weighted_iou = float(np.sum(true_count * np.nan_to_num(iou)) / total)
    else:
        pixel_accuracy = frequency_weighted_iou = float("nan")
    return {
        "pixel_accuracy": pixel_accuracy,
        "mean_accuracy": _mean_of_defined(accuracy),
        "mean_iou": _mean_of_defined(iou),
        "frequency_weighted_iou": frequency_weighted_iou,
        "mean_dice": _mean_of_defined(dice),
        "per_class_accuracy": [float(v) for v in accuracy],
        "per_class_iou": [float(v) for v in iou],
        "per_class_dice": [float(v) for v in dice],
    }


@flax.struct.dataclass
class ConfusionMatrix(clu_metrics.Metric):
    """Mergeable confusion matrix: a `clu.metrics.Metric` whose `compute()` gives mIoU etc.

    The number of classes is part of the type, so that `empty()` can build a `[K, K]` array
    and shapes stay static under jit: make the type with `with_classes`::

        Metrics = clu_metrics.Collection.create(
            confusion=ConfusionMatrix.with_classes(21, ignore_label=255),
            loss=clu_metrics.Average.from_output("loss"),
        )

        @jax.jit
        def eval_step(state, batch):
            logits = state.apply_fn(...)
            return Metrics.single_from_model_output(
                logits=logits, labels=batch["label"], mask=batch["valid"], loss=...)

        metrics = Metrics.empty()
        for batch in eval_batches:
            metrics = metrics.merge(eval_step(state, batch))
        results = metrics.compute()["confusion"]   # host side: segmentation_metrics(...)

    Under `jax.jit` with a batch sharded over devices, the matrix of the global batch comes
    out summed across devices (XLA inserts the reduction); inside `shard_map`/`pmap` use
    `jax.lax.psum` on it, or clu's `all_gather(...).reduce()`, which sums through `merge`.

    Attributes:
      matrix: int32 `[K, K]` counts, rows = ground truth, columns = prediction.
    """

    matrix: jax.Array

    num_classes: ClassVar[int | None] = None
    ignore_label: ClassVar[int | None] = None

    @classmethod
    def with_classes(
        cls, num_classes: int, ignore_label: int | None = None
    ) -> type[ConfusionMatrix]:
        """A `ConfusionMatrix` subclass for `num_classes` classes and this ignore label.

        The same arguments give the same class, so jitted functions are not retraced.
        """
        return _confusion_matrix_type(cls, int(num_classes), ignore_label)

    @classmethod
    def _require_classes(cls) -> int:
        if cls.num_classes is None:
            raise TypeError(
                "ConfusionMatrix needs a static number of classes: use "
                "ConfusionMatrix.with_classes(num_classes, ignore_label)"
            )
        return cls.num_classes

    @classmethod
    def empty(cls) -> ConfusionMatrix:
        num_classes = cls._require_classes()
        return cls(matrix=jnp.zeros((num_classes, num_classes), jnp.int32))

    @classmethod
    def from_model_output(
        cls,
        *,
        labels: jax.Array,
        predictions: jax.Array | None = None,
        logits: jax.Array | None = None,
        valid: jax.Array | None = None,
        mask: jax.Array | None = None,
        **_: Any,
    ) -> ConfusionMatrix:
        """Counts one batch.

        Args:
          labels: `[batch, height, width]` integer classes.
          predictions: `[batch, height, width]` predicted classes; or give `logits`.
          logits: `[batch, height, width, K]`, reduced with `argmax` when `predictions` is None.
          valid: `[batch]` bool, False for padded examples.
          mask: the same as `valid` under clu's name (a `Collection` forwards the model output
            called 'mask'); when both are given a pixel must pass both.
          **_: other model outputs (loss, ...), ignored.
        """
        num_classes = cls._require_classes()
        if predictions is None:
            if logits is None:
                raise ValueError("give predictions or logits")
            if logits.shape[-1] != num_classes:
                raise ValueError(f"logits have {logits.shape[-1]} classes, expected {num_classes}")
            predictions = jnp.argmax(logits, axis=-1)
        keep = None
        for flags in (valid, mask):
            if flags is not None:
                flags = jnp.asarray(flags).astype(bool)
                keep = flags if keep is None else keep & flags
        return cls(
            matrix=confusion_matrix(
                predictions, labels, num_classes, ignore_label=cls.ignore_label, valid=keep
            )
        )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if self.matrix.shape != other.matrix.shape:
            raise ValueError(
                f"cannot merge confusion matrices of shapes {self.matrix.shape} and "
                f"{other.matrix.shape}"
            )
        return type(self)(matrix=self.matrix + other.matrix)

    def compute(self) -> dict[str, Any]:
        """`segmentation_metrics` of the summed matrix (host side: call outside jit)."""
        return segmentation_metrics(np.asarray(jax.device_get(self.matrix)))


@functools.cache
def _confusion_matrix_type(
    base: type[ConfusionMatrix], num_classes: int, ignore_label: int | None
) -> type[ConfusionMatrix]:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    name = f"{base.__name__}{num_classes}"
    namespace = {
        "num_classes": num_classes,
        "ignore_label": ignore_label,
        "__module__": base.__module__,
        "__qualname__": name,
    }
    return flax.struct.dataclass(type(name, (base,), namespace))
