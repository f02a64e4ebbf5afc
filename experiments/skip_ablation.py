"""Ablation: do skip connections matter on the embedded dataset?

Trains FCN-32s / FCN-16s / FCN-8s (narrow VGG16: base 8 features, fc 128) and U-Nets with the
skips concatenated, added, or removed, each for the same number of steps on the embedded
synthetic dataset, and writes the validation metrics to experiments/results/skip_ablation.json.

    python experiments/skip_ablation.py [--steps 1200] [--runs fcn32s fcn8s unet_concat unet_none]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import base  # noqa: E402
from jaxseg import data, training  # noqa: E402

FCN = {"base_features": 8, "fc_features": 128, "dropout_rate": 0.0}
UNET = {"padding": "SAME", "depth": 3, "base_features": 16}
RUNS = {
    "fcn32s": ("fcn32s", FCN),
    "fcn16s": ("fcn16s", FCN),
    "fcn8s": ("fcn8s", FCN),
    "unet_concat": ("unet", {**UNET, "skip": "concat"}),
    "unet_add": ("unet", {**UNET, "skip": "add"}),
    "unet_none": ("unet", {**UNET, "skip": "none"}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument(
        "--output", default=os.path.join(ROOT, "experiments", "results", "skip_ablation.json")
    )
    args = parser.parse_args()
    results = {}
    for name in args.runs:
        model, kwargs = RUNS[name]
        config = base.get_config()
        config.model, config.model_kwargs = model, kwargs
        config.num_train_steps = args.steps
        config.eval_every_steps = config.checkpoint_every_steps = args.steps
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            final = training.train_and_evaluate(config, workdir)
        results[name] = {
            "model": model,
            "model_kwargs": kwargs,
            "steps": args.steps,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "mean_iou": final["mean_iou"],
            "pixel_accuracy": final["pixel_accuracy"],
            "per_class_iou": final["per_class_iou"],
        }
        print(name, json.dumps(results[name]))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"dataset": "synthetic_shapes", "classes": list(data.get_spec("synthetic_shapes").class_names),
                   "time": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": results}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
