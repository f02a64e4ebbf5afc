"""Evaluating a run over a split: metrics against an independent NumPy count, ISBI, the CLI."""

# ruff: noqa: F401, F811  (fixtures from trained_run are imported, then named as arguments)

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from trained_run import ROOT, isbi_run, same_run, subprocess_env

from jaxseg import data, inference, isbi_metrics
from jaxseg.runs import default_output, evaluate_split, load_trained


def split_predictions(trained, split, tile_size):
    """(cell-or-class probabilities, labels) of every example, predicted here."""
    source = data.DecodedSource(
        data.get_builder(trained.spec, data_dir=trained.config.data_dir).as_data_source(split),
        trained.spec,
    )
    predictor = inference.for_model(trained.model, trained.variables, tile_size=tile_size)
    examples = [source[i] for i in range(len(source))]
    return [predictor(e["image"] / np.float32(255)) for e in examples], [
        e["label"] for e in examples
    ]


def numpy_confusion(predictions, labels, k):
    confusion = np.zeros((k, k), np.int64)
    for prediction, label in zip(predictions, labels):
        keep = label >= 0
        np.add.at(confusion, (label[keep], prediction[keep]), 1)
    return confusion


def test_metrics_equal_an_independent_count_over_the_split(same_run):
    trained = load_trained(same_run)
    split = "validation[:6]"
    result = evaluate_split(trained, split, tile_size=48)  # 96x96 images: several windows.
    probabilities, labels = split_predictions(trained, split, 48)
    confusion = numpy_confusion([p.argmax(-1) for p in probabilities], labels, 5)
    assert result["confusion_matrix"] == confusion.tolist()
    assert result["num_images"] == 6 and result["num_pixels"] == 6 * 96 * 96
    assert result["split"] == split and result["step"] == trained.step
    assert result["tile_size"] == [48, 48] and result["class_names"][0] == "background"

    correct, truth, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    union = truth + predicted - correct
    iou = np.where(union > 0, correct / np.maximum(union, 1), np.nan)
    assert result["pixel_accuracy"] == pytest.approx(correct.sum() / confusion.sum())
    assert result["mean_iou"] == pytest.approx(np.nanmean(iou))
    assert result["frequency_weighted_iou"] == pytest.approx(
        np.nansum(truth * iou) / confusion.sum()
    )
    want_iou = [None if np.isnan(v) else pytest.approx(v) for v in iou]
    assert result["per_class_iou"] == want_iou
    dice = np.where(truth + predicted > 0, 2 * correct / np.maximum(truth + predicted, 1), np.nan)
    assert result["mean_dice"] == pytest.approx(np.nanmean(dice))
    assert "isbi" not in result
    json.dumps(result, allow_nan=False)  # Strict JSON: undefined values are None.


def test_isbi_scores_for_membrane_data_through_overlap_tile(isbi_run):
    trained = load_trained(isbi_run)
    result = evaluate_split(trained, tile_size=60)  # The config's eval split: 2 slices.
    assert trained.predictor(tile_size=60).mode == "overlap_tile"
    probabilities, labels = split_predictions(trained, trained.config.eval_split, 60)
    assert result["num_images"] == 2 and result["num_pixels"] == 2 * 64 * 64
    cells, truth = np.stack([p[..., 1] for p in probabilities]), np.stack(labels)
    want = isbi_metrics.isbi_scores(cells, truth)
    assert set(want) == {"pixel_misclassification", "pixel_fscore", "v_rand", "v_rand_split",
                         "v_rand_merge", "v_info", "v_info_split", "v_info_merge"}  # fmt: skip
    assert result["isbi"] == pytest.approx(want)
    assert result["isbi_best"] == pytest.approx(isbi_metrics.best_isbi_scores(cells, truth))
    # Cell probability > 0.5 is the argmax of two classes.
    misclassified = result["isbi"]["pixel_misclassification"]
    assert misclassified == pytest.approx(1 - result["pixel_accuracy"], abs=1e-4)
    assert result["isbi_best"]["isbi_pixel_error"] == 1 - result["isbi_best"]["pixel_fscore"]


def test_evaluate_cli_writes_the_metrics_json(same_run):
    split = "validation[:4]"
    cmd = [sys.executable, "-m", "jaxseg.evaluate", "--workdir", same_run, "--split", split,
           "--tile_size", "48"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    path = default_output(same_run, split)
    assert os.path.basename(path) == "eval_validation__4_.json" and path in proc.stdout

    def no_nan(name):
        raise AssertionError(f"{name} in the JSON")

    with open(path) as f:
        written = json.load(f, parse_constant=no_nan)
    want = evaluate_split(load_trained(same_run), split, tile_size=48)
    assert written["num_images"] == 4 and written["num_pixels"] == want["num_pixels"]
    # Another process (one device, other compiler settings): argmax may differ at ties only.
    for key in ("pixel_accuracy", "mean_iou", "frequency_weighted_iou", "mean_accuracy"):
        assert written[key] == pytest.approx(want[key], abs=1e-3)
    assert written["checkpoint"] == "best" and written["step"] == want["step"]
