"""The pictures of an experiment's report (``runs.experiment_report``), drawn with matplotlib's
object API (no pyplot, no display needed): learning curves, per-class IoU, a prediction grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxseg.runs import experiments
from jaxseg.summary import read_metrics


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "the experiment pictures need matplotlib: pip install 'jaxseg[experiments]'"
        ) from error
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def learning_curves(root: str, arm: str, seeds: list[int]) -> dict[str, tuple[list, np.ndarray]]:
    """``{"loss": (steps, [seeds, steps]), "mean_iou": ...}``: training loss and validation mean
    IoU of each seed's ``metrics.jsonl`` (a step logged twice, after a resume, counts once)."""
    curves = {}
    for key, split in (("loss", "train"), ("mean_iou", "eval")):
        per_seed = []
        for seed in seeds:
            records = read_metrics(experiments.run_dir(root, arm, seed))
            per_seed.append({r["step"]: r[key] for r in records if r["split"] == split})
        steps = sorted(set.intersection(*(set(s) for s in per_seed)))
        curves[key] = (steps, np.asarray([[s[t] for t in steps] for s in per_seed], np.float64))
    return curves


def curves(experiment, root: str, arms: dict[str, Any], class_names, path: str) -> None:
    """Training loss and validation mean IoU against the step: mean over seeds, ± 1 s.d. band."""
    figure = _figure(11, 4)
    axes = figure.subplots(1, 2)
    for arm, summary in arms.items():
        for ax, (steps, values) in zip(axes, learning_curves(root, arm, summary["seeds"]).values()):
            if not steps:
                continue
            mean = values.mean(0)
            std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            (line,) = ax.plot(steps, mean, label=f"{arm} (n={len(values)})")
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for ax, title in zip(axes, ("training loss", "validation mean IoU")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    figure.savefig(path)


def per_class(experiment, root: str, arms: dict[str, Any], class_names, path: str) -> None:
    """Grouped bars of per-class IoU (mean over seeds), error bars of one standard deviation."""
    figure = _figure(max(6, 0.9 * len(class_names) * max(1, len(arms) / 3)), 4)
    ax = figure.subplots()
    width = 0.8 / len(arms)
    x = np.arange(len(class_names))
    for i, (arm, summary) in enumerate(arms.items()):
        means = [np.nan if s["mean"] is None else s["mean"] for s in summary["per_class_iou"]]
        stds = [0.0 if s["std"] is None else s["std"] for s in summary["per_class_iou"]]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=arm)
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncols=min(len(arms), 4))
    ax.grid(axis="y", alpha=0.3)
    figure.savefig(path)


def predictions(experiment, root: str, arms: dict[str, Any], class_names, path: str) -> None:
    """The first ``num_prediction_images`` evaluation images, their labels and each arm's
    prediction (its first finished seed, last checkpoint), as ``visualize.panel`` draws them.
    The images are the first arm's evaluation data: arms are compared on the same data."""
    from PIL import Image

    from jaxseg import visualize
    from jaxseg.runs import scoring
    from jaxseg.runs.image_files import predict_image
    from jaxseg.runs.loading import load_trained

    count = experiment.get("num_prediction_images", 4)
    columns, examples = {}, None
    for arm, summary in arms.items():
        trained = load_trained(experiments.run_dir(root, arm, summary["seeds"][0]), best=False)
        if examples is None:
            source = scoring.split_source(trained, scoring.default_split(trained))
            examples = [source[i] for i in range(min(count, len(source)))]
        predictor = trained.predictor()
        columns[arm] = [np.argmax(predict_image(predictor, e["image"]), -1) for e in examples]
    images = [e["image"] for e in examples]
    labels = [e["label"] for e in examples]
    if len({image.shape for image in images}) > 1:  # Shown cropped to the smallest.
        images, labels, columns = _same_size(images, labels, columns)
    picture = visualize.panel(
        np.stack(images),
        np.stack(labels),
        {a: np.stack(p) for a, p in columns.items()},
        class_names,
    )
    Image.fromarray(picture).save(path)


def _same_size(images, labels, columns):
    """Everything cropped to the smallest height and width (top-left)."""
    h = min(i.shape[0] for i in images)
    w = min(i.shape[1] for i in images)
    crop = lambda arrays: [a[:h, :w] for a in arrays]
    return crop(images), crop(labels), {arm: crop(p) for arm, p in columns.items()}
