"""An experiment's report: mean and spread over seeds, as JSON, a Markdown table and pictures.

``write_report`` reads the runs' ``result.json`` and ``metrics.jsonl`` files
(``runs.experiments``) and writes, into the results folder:

- ``<name>.json``: every run's metrics, and per arm each metric's mean, sample standard deviation
  (n - 1) and seed count, per class too;
- ``<name>.md``: the same as tables (``mean ± s.d.``), one row per arm;
- ``<name>_curves.png``: training loss and validation mean IoU against the step, the mean over
  seeds with a band of ± one standard deviation;
- ``<name>_per_class.png``: per-class IoU bars with the spread;
- ``<name>_predictions.png``: a few evaluation images, their labels and each arm's prediction
  (its first finished seed).

The pictures need matplotlib (``pip install 'jaxseg[experiments]'``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

import numpy as np

from jaxseg.runs import experiments
from jaxseg.summary import jsonable


def spread(values: list[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of the defined values; ``std`` with n - 1 (None for one value)."""
    defined = np.asarray([v for v in values if v is not None], np.float64)
    n = len(defined)
    return {
        "mean": float(defined.mean()) if n else None,
        "std": float(defined.std(ddof=1)) if n > 1 else None,
        "n": n,
    }


def metric(result: dict, name: str) -> Any:
    """A run's metric by dotted name (``isbi.v_rand``)."""
    value = result["metrics"]
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            available = sorted(k for k, v in result["metrics"].items() if not isinstance(v, list))
            raise ValueError(f"no metric {name!r} in the results; they have {available}")
        value = value[part]
    return value


def summarize(experiment, found: dict[str, list[dict]]) -> dict[str, Any]:
    """Per arm: each metric's ``spread`` and per-class IoU's, and the runs' own values."""
    arms = {}
    for arm, results in found.items():
        if not results:
            continue
        per_class = np.asarray(
            [[np.nan if v is None else v for v in r["metrics"]["per_class_iou"]] for r in results]
        )
        arms[arm] = {
            "seeds": [r["seed"] for r in results],
            "metrics": {m: spread([metric(r, m) for r in results]) for m in experiment.metrics},
            "per_class_iou": [spread([None if np.isnan(v) else v for v in c]) for c in per_class.T],
            "runs": results,
        }
    return arms


def markdown(name: str, experiment, arms: dict[str, Any], class_names: list[str]) -> str:
    """The tables: the metrics, then per-class IoU (mean ± s.d. over seeds, n seeds)."""

    def cell(s: dict) -> str:
        if s["mean"] is None:
            return "-"
        return f"{s['mean']:.4f}" + ("" if s["std"] is None else f" ± {s['std']:.4f}")

    lines = [f"### {name}", "", "Mean ± standard deviation over seeds (n = seeds finished); "
             "s/run: wall seconds of a run (training and scoring; a resumed run's last part).", ""]  # fmt: skip
    lines += ["| arm | n | " + " | ".join(experiment.metrics) + " | s/run |"]
    lines += ["|---|---:|" + "---:|" * (len(experiment.metrics) + 1)]
    for arm, summary in arms.items():
        values = [cell(summary["metrics"][m]) for m in experiment.metrics]
        seconds = [r["seconds"] for r in summary["runs"] if "seconds" in r]
        values.append(f"{np.mean(seconds):.0f}" if seconds else "-")
        lines += [f"| {arm} | {len(summary['seeds'])} | " + " | ".join(values) + " |"]
    lines += ["", "Per-class IoU:", ""]
    lines += ["| arm | " + " | ".join(class_names) + " |", "|---|" + "---:|" * len(class_names)]
    for arm, summary in arms.items():
        lines += [f"| {arm} | " + " | ".join(cell(s) for s in summary["per_class_iou"]) + " |"]
    return "\n".join(lines) + "\n"


def write_report(
    name: str, experiment, root: str, results_dir: str, *, command: str = ""
) -> dict[str, str]:
    """Writes the JSON, the Markdown and the pictures of the finished runs; returns their paths.

    Raises:
      ValueError: no finished run, or a metric the results do not have.
    """
    from jaxseg.training import resolve_model

    found = experiments.results(experiment, root)
    arms = summarize(experiment, found)
    if not arms:
        raise ValueError(f"no finished run in {root} to report")
    first = experiments.arm_config(experiment, experiments.arm_names(experiment)[0])
    class_names = list(resolve_model(first)[0].class_names)
    os.makedirs(results_dir, exist_ok=True)
    paths = {kind: os.path.join(results_dir, f"{name}{kind}") for kind in (".json", ".md")}
    report = {
        "experiment": name,
        "command": command,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "seeds": list(experiment.seeds),
        "metrics": list(experiment.metrics),
        "class_names": class_names,
        "budget": _budget(experiment),
        "arms": arms,
    }
    with open(paths[".json"], "w") as f:
        json.dump(jsonable(report), f, indent=2)
        f.write("\n")
    with open(paths[".md"], "w") as f:
        f.write(markdown(name, experiment, arms, class_names))
        f.write(f"\n`{command}`; {report['machine']}; budget {json.dumps(report['budget'])}.\n")
    from jaxseg.runs import experiment_plots

    for kind, draw in (
        ("_curves.png", experiment_plots.curves),
        ("_per_class.png", experiment_plots.per_class),
        ("_predictions.png", experiment_plots.predictions),
    ):
        if kind == "_predictions.png" and not experiment.get("num_prediction_images", 4):
            continue
        paths[kind] = os.path.join(results_dir, f"{name}{kind}")
        draw(experiment, root, arms, class_names, paths[kind])
    return paths


def machine() -> str:
    """The CPU model and core count (and accelerator, where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import jax

    device = jax.devices()[0]
    accelerator = "" if device.platform == "cpu" else f", {device.device_kind}"
    return f"{cpu}, {os.cpu_count()} cores{accelerator}"


def _budget(experiment) -> dict[str, Any]:
    base = experiment.base
    return {
        "num_train_steps": base.num_train_steps,
        "batch_size": base.batch_size,
        "input_size": list(base.input_size),
        "arms_change": dict(experiment.arms),  # Plain dicts (ConfigDict keeps tuples as given).
    }
