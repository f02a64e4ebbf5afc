"""One checkpoint, one split, one figure: training's evaluation, ``jaxseg.evaluate``,
``jaxseg.predict`` and the exported function agree (issue 8 item 11).

Training evaluates whole images padded to ``config.eval_size``; the others tile them. Before
sliding windows were placed to end at the image border (and shrunk on images smaller than a
window), ``evaluate`` and ``predict`` with the default 256-pixel tile ran these 96x96 images
inside a mirror-filled 256x256 window and scored differently.
"""

# ruff: noqa: F401, F811  (fixtures from trained_run are imported, then named as arguments)

import numpy as np
import pytest
from PIL import Image
from trained_run import isbi_run, resized_run, same_run

from jaxseg import data, metrics, runs, summary
from jaxseg.runs import evaluate_split, export_model, load_trained
from jaxseg.serving import ExportedModel

TOLERANCE = 2e-4  # A few pixels' argmax at near-ties (one pixel of 16 images is 4e-6).


def training_figures(trained) -> dict:
    """What training's evaluation logged at the checkpoint's step."""
    records = [r for r in summary.read_metrics(trained.workdir) if r["split"] == "eval"]
    (record,) = [r for r in records if r["step"] == trained.step]
    return record


def split_examples(trained, split):
    source = data.DecodedSource(
        data.get_builder(trained.spec, data_dir=trained.config.data_dir).as_data_source(split),
        trained.spec,
        tuple(trained.config.resize_to) or None,
    )
    return [source[i] for i in range(len(source))]


def figures(predictions, labels, k) -> dict:
    confusion = sum(
        np.asarray(metrics.confusion_matrix(p, t, k, ignore_label=data.IGNORE_INDEX), np.int64)
        for p, t in zip(predictions, labels)
    )
    return metrics.segmentation_metrics(confusion)


def check(name, got, want):
    for key in ("mean_iou", "pixel_accuracy"):
        assert got[key] == pytest.approx(want[key], abs=TOLERANCE), (name, key, got[key], want)


@pytest.mark.parametrize("run", ["same_run", "isbi_run"])
def test_training_evaluate_predict_and_export_give_the_same_figure(run, request, tmp_path):
    trained = load_trained(request.getfixturevalue(run))
    split = trained.config.eval_split
    want = training_figures(trained)
    check("evaluate", evaluate_split(trained, split), want)  # Default tile size.

    examples = split_examples(trained, split)
    labels = [e["label"] for e in examples]
    paths = []
    for i, e in enumerate(examples):  # The split as files, predicted by jaxseg.predict.
        paths.append(str(tmp_path / "in" / f"{i:03d}.png"))
        (tmp_path / "in").mkdir(exist_ok=True)
        Image.fromarray(e["image"][..., 0] if e["image"].shape[-1] == 1 else e["image"]).save(
            paths[-1]
        )
    report = runs.predict_files(trained, paths, str(tmp_path / "out"), verbose=False)
    assert report.ok and len(report.written) == len(examples)
    masks = [np.asarray(Image.open(tmp_path / "out" / f"{i:03d}.png")) for i in range(len(paths))]
    check("predict", figures(masks, labels, trained.num_classes), want)

    h, w = examples[0]["image"].shape[:2]
    fixed = trained.predictor().mode == "overlap_tile"  # A valid U-Net exports a fixed size.
    exported, metadata = export_model(trained, **(dict(height=h, width=w) if fixed else {}))
    served = ExportedModel(exported, metadata)(np.stack([e["image"] for e in examples]))
    check("export", figures(list(served["classes"]), labels, trained.num_classes), want)


def test_training_and_evaluate_agree_on_a_resized_run(resized_run):
    # 96x96 images resized to 42x54, padded to 44x56 by training's evaluation; tiled, one
    # window of 44x56 (the side rounded up to the model's multiple of 4).
    trained = load_trained(resized_run)
    check("evaluate", evaluate_split(trained), training_figures(trained))
