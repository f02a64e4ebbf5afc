"""Evaluating a trained run on a whole dataset split, image by image, through tiled inference.

The library behind ``python -m jaxseg.evaluate``. Unlike the evaluation inside training (images
padded to ``config.eval_size`` and batched), every image here goes whole through the same
``jaxseg.inference`` tiling that prediction uses (overlap-tile for valid-padding U-Nets, Gaussian
sliding windows otherwise, optional test-time augmentation), resized only if the config says
``resize_to``. Metrics come from one confusion matrix summed over the split (ignored pixels left
out): the FCN paper's four metrics and per-class accuracy, IoU and Dice
(``jaxseg.metrics.segmentation_metrics``). For ISBI 2012 membrane data it adds the challenge's
V_rand and V_info (with split and merge parts) after boundary thinning, the pixel
misclassification rate and the F-score of cell pixels, from the probability of class 1 (cell),
at threshold 0.5 (``isbi``) and at the best thresholds (``isbi_best``, which adds the
challenge's "pixel error", 1 - the maximal F-score, as ``isbi_pixel_error``), as
``jaxseg.isbi_metrics`` computes them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from jaxseg import data, isbi_metrics, metrics
from jaxseg.runs.image_files import predict_image
from jaxseg.runs.loading import Trained
from jaxseg.summary import jsonable

MEMBRANE_DATASETS = ("isbi2012",)  # Binary membrane (0) / cell (1) data scored the ISBI way.


def default_split(trained: Trained) -> str:
    """The split training evaluated on: ``config.eval_split`` or the dataset's default."""
    return trained.config.eval_split or trained.spec.eval_split


def default_output(workdir: str, split: str) -> str:
    """``<workdir>/eval_<split>.json``, the split name reduced to ``[A-Za-z0-9_.-]``."""
    return os.path.join(workdir, f"eval_{re.sub(r'[^A-Za-z0-9_.-]', '_', split)}.json")


def split_source(
    trained: Trained, split: str, *, data_dir: str | None = None, manual_dir: str | None = None
) -> data.DecodedSource:
    """The decoded examples of a split as the run was trained on them (``config.resize_to``),
    from the config's data folders unless ``data_dir`` / ``manual_dir`` are given."""
    config = trained.config
    builder = data.get_builder(
        trained.spec,
        data_dir=config.data_dir if data_dir is None else data_dir,
        manual_dir=config.manual_dir if manual_dir is None else manual_dir,
    )
    return data.DecodedSource(
        builder.as_data_source(split), trained.spec, tuple(config.resize_to) or None
    )


def evaluate_split(
    trained: Trained,
    split: str | None = None,
    *,
    tta: bool | str | None = None,
    tile_size: int | tuple[int, int] | None = None,
    tile_batch_size: int = 8,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    isbi: bool | None = None,
) -> dict[str, Any]:
    """Runs the model over every image of a split and computes its metrics.

    Args:
      trained: from ``jaxseg.runs.load_trained``.
      split: a TFDS split (slices allowed, ``'train[20:]'``); default ``default_split``.
      tta: test-time augmentation: ``None``, ``'flips'``, ``'rotations'``, ``'dihedral'``.
      tile_size: input tile (window) size; ``None``: ``jaxseg.inference.for_model``'s default.
      tile_batch_size: tiles per device call.
      data_dir, manual_dir: override the config's TFDS folder and raw-data folder.
      isbi: add the ISBI 2012 scores; ``None``: for ``MEMBRANE_DATASETS``.

    Returns:
      A JSON-ready dict: the run (``workdir``, ``step``, ``checkpoint``), what was evaluated
      (``dataset``, ``split``, ``tta``, ``tile_size``, ``class_names``, ``num_images``,
      ``num_pixels`` counted), ``segmentation_metrics``' keys, ``confusion_matrix`` (rows =
      ground truth), and for membrane data ``isbi`` and ``isbi_best``. Undefined values (a class
      absent from labels and predictions) are None.
    """
    spec = trained.spec
    split = split or default_split(trained)
    source = split_source(trained, split, data_dir=data_dir, manual_dir=manual_dir)
    if len(source) == 0:
        raise ValueError(f"split {split!r} of {spec.name} is empty")
    isbi = spec.name in MEMBRANE_DATASETS if isbi is None else isbi
    if isbi and spec.num_classes != 2:
        raise ValueError(
            f"ISBI scores need 2 classes (membrane, cell); {spec.name} has {spec.num_classes}"
        )

    predictor = trained.predictor(tile_size=tile_size, tta=tta, tile_batch_size=tile_batch_size)
    k = spec.num_classes
    confusion = np.zeros((k, k), np.int64)
    cell_probabilities, labels = [], []
    for index in range(len(source)):
        example = source[index]
        probabilities = predict_image(predictor, example["image"])
        confusion += np.asarray(
            metrics.confusion_matrix(
                np.argmax(probabilities, -1), example["label"], k, ignore_label=data.IGNORE_INDEX
            ),
            np.int64,
        )
        if isbi:
            cell_probabilities.append(probabilities[..., 1])
            labels.append(example["label"])

    result: dict[str, Any] = {
        "workdir": trained.workdir,
        "step": trained.step,
        "checkpoint": trained.checkpoint,
        "dataset": spec.name,
        "split": split,
        "tta": tta or None,
        "tile_size": list(predictor.tile_size),
        "class_names": list(spec.class_names),
        "num_images": len(source),
        "num_pixels": int(confusion.sum()),
        **metrics.segmentation_metrics(confusion),
        "confusion_matrix": confusion.tolist(),
    }
    if isbi:
        result.update(_isbi(cell_probabilities, labels))
    return jsonable(result)


def _isbi(cell_probabilities: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, Any]:
    """ISBI scores of the slices: at 0.5 and at the best thresholds (slices averaged)."""
    if any((label == data.IGNORE_INDEX).any() for label in labels):
        raise ValueError("ISBI scores need labels without ignored pixels")
    if len({p.shape for p in cell_probabilities}) == 1:
        stack, truth = np.stack(cell_probabilities), np.stack(labels)
        return {
            "isbi": isbi_metrics.isbi_scores(stack, truth),
            "isbi_best": isbi_metrics.best_isbi_scores(stack, truth),
        }
    per_slice = [isbi_metrics.isbi_scores(p, t) for p, t in zip(cell_probabilities, labels)]
    return {"isbi": {key: float(np.mean([s[key] for s in per_slice])) for key in per_slice[0]}}


def write_json(result: dict[str, Any], path: str) -> None:
    """Writes ``result`` as strict JSON (no NaN), creating the folder; whole or not at all (a
    temporary file renamed), so a crash leaves no half-written file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    with open(f"{path}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{path}.tmp", path)
