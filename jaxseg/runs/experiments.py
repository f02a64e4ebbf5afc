"""Experiments: one base config, named arms that change it, every arm trained once per seed.

An experiment file is a config file (``python -m jaxseg.experiment --config FILE``) whose
``get_config()`` returns a ``ConfigDict`` with these fields:

- ``base``: the training config every run starts from.
- ``arms``: ``((name, overrides), ...)`` in the order the tables show them. ``overrides`` is a
  dict of config fields; a nested dict changes only the fields it names
  (``{"model_kwargs": {"skip": "add"}}``). An arm that changes ``model`` and gives
  ``model_kwargs`` gets only those (the base's belong to the base's model).
- ``seeds``: e.g. ``(0, 1, 2)``. A run's ``config.seed`` sets its initialisation, data order,
  augmentation and dropout.
- ``metrics``: the final metrics the tables show, by name in a run's result (``mean_iou``;
  nested with dots: ``isbi.v_rand``).
- ``evaluate``: ``False`` keeps the metrics of training's last evaluation; ``True`` scores the
  last checkpoint with ``runs.scoring.evaluate_split`` (whole images through tiled inference, with
  the ISBI scores on membrane data).
- ``num_prediction_images``: evaluation images in the report's prediction grid.

Every run keeps its workdir, ``<root>/<arm>/seed_<seed>`` (checkpoints, ``metrics.jsonl``,
TensorBoard logs). A finished run writes ``result.json`` there and is skipped next time; an
interrupted one resumes from its last checkpoint, so re-running the command after a kill finishes
the job. Training is ``runs.experiment_runner``'s; the report (``runs.experiment_report``) is made from
the ``result.json`` files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from flax import traverse_util

from jaxseg.metrics import segmentation_metrics
from jaxseg.summary import CONFIG_FILE

RESULT_FILE = "result.json"
OPEN_FIELDS = ("model_kwargs", "augment")  # Dicts whose keys an arm may add.
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check(experiment: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` naming the first bad field of an experiment."""
    for field in ("base", "arms", "seeds", "metrics", "evaluate"):  # num_prediction_images: 4.
        if field not in experiment:
            raise ValueError(f"the experiment has no {field!r} field")
    arms = experiment.arms
    if not arms or not all(isinstance(a, (tuple, list)) and len(a) == 2 for a in arms):
        raise ValueError("arms must be a non-empty sequence of (name, overrides) pairs")
    names = [name for name, _ in arms]
    for name, overrides in arms:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"arm names are made of [A-Za-z0-9_.-]; got {name!r}")
        if not isinstance(overrides, (dict, ml_collections.ConfigDict)):
            raise ValueError(f"arm {name!r}: overrides must be a dict; got {overrides!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique; got {names}")
    seeds = tuple(experiment.seeds)
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct; got {seeds!r}")
    if not experiment.metrics or not all(isinstance(m, str) for m in experiment.metrics):
        raise ValueError(f"metrics must be names of result fields; got {experiment.metrics!r}")
    for name in names:  # Every arm's overrides fit the base config and build its model.
        from jaxseg import training

        try:
            training.resolve_model(training.complete_config(arm_config(experiment, name)))
        except ValueError as error:
            raise ValueError(f"arm {name!r}: {error}") from None
    known = set(segmentation_metrics(np.eye(2))) | (
        {"isbi", "isbi_best"} if experiment.evaluate else set()
    )
    for metric in experiment.metrics:
        if metric.split(".")[0] not in known:
            raise ValueError(f"unknown metric {metric!r}; choose from {sorted(known)}")


def arm_names(experiment) -> list[str]:
    return [name for name, _ in experiment.arms]


def arm_config(experiment, arm: str) -> ml_collections.ConfigDict:
    """The base config with ``arm``'s overrides."""
    overrides = dict(experiment.arms).get(arm)
    if overrides is None:
        raise ValueError(f"no arm {arm!r}; the experiment has {arm_names(experiment)}")
    config = experiment.base.copy_and_resolve_references()
    with config.unlocked():
        overrides = dict(overrides)
        if overrides.get("model", config.model) != config.model and "model_kwargs" in overrides:
            config.model_kwargs = {}  # Another model's kwargs: the base's are not merged in.
        _merge(config, overrides, f"arm {arm!r}")
    return config


def _merge(config: ml_collections.ConfigDict, overrides, where: str, prefix: str = "") -> None:
    """Sets ``overrides`` on ``config``, into nested dicts field by field. Unknown fields are
    errors, except under ``OPEN_FIELDS`` (checked where training reads them)."""
    for key, value in dict(overrides).items():
        name = prefix + key
        if key not in config and prefix.rstrip(".") not in OPEN_FIELDS:
            raise ValueError(f"{where}: the base config has no field {name!r}")
        current = config.get(key)
        if isinstance(current, ml_collections.ConfigDict) and isinstance(
            value, (dict, ml_collections.ConfigDict)
        ):
            _merge(current, value, where, f"{name}.")
            continue
        try:
            config[key] = value
        except TypeError as error:
            raise ValueError(f"{where}: {name} = {value!r}: {error}") from None


def run_config(experiment, arm: str, seed: int) -> ml_collections.ConfigDict:
    """The training config of ``arm`` with ``seed``."""
    config = arm_config(experiment, arm)
    config.seed = int(seed)
    return config


def run_dir(root: str, arm: str, seed: int) -> str:
    return os.path.join(root, arm, f"seed_{seed}")


def read_result(root: str, arm: str, seed: int) -> dict | None:
    """A finished run's ``result.json``, or None while it is not finished."""
    path = os.path.join(run_dir(root, arm, seed), RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_workdir(experiment, root: str, arm: str, seed: int) -> None:
    """Raises ``ValueError`` when the run's workdir holds a run of another config (the
    experiment changed since): its checkpoints and result would be passed off as this one's."""
    path = os.path.join(run_dir(root, arm, seed), CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = _flat(json.load(f))
    wanted = _flat(json.loads(run_config(experiment, arm, seed).to_json_best_effort()))
    unset = ("", None, [])  # Fields training fills in (input_dtype) or leaves to defaults.
    changed = [k for k, v in sorted(wanted.items()) if v not in unset and saved.get(k) != v]
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in changed[:4])
        raise ValueError(
            f"{run_dir(root, arm, seed)} holds a run of another config ({shown}); "
            "give another --workdir or remove that run"
        )


def _flat(values: dict) -> dict:
    """``{"a.b": value}``; ``model_kwargs`` stays whole (a kwarg removed is a change too)."""
    return traverse_util.flatten_dict(
        values, sep=".", is_leaf=lambda path, _: path[-1:] == ("model_kwargs",)
    )


def runs(experiment, arms: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """``(arm, seed)`` of every run (of ``arms`` only, where given), seed-major, so that with
    every arm's first seed done a report can already compare arms."""
    names = arm_names(experiment)
    for arm in arms or ():
        if arm not in names:
            raise ValueError(f"no arm {arm!r}; the experiment has {names}")
    chosen = [a for a in names if not arms or a in arms]
    return [(arm, int(seed)) for seed in experiment.seeds for arm in chosen]


def results(experiment, root: str) -> dict[str, list[dict[str, Any]]]:
    """``{arm: [result of each finished seed]}`` in the experiment's arm order."""
    found = {arm: [] for arm in arm_names(experiment)}
    for arm, seed in runs(experiment):
        check_workdir(experiment, root, arm, seed)
        result = read_result(root, arm, seed)
        if result is not None:
            found[arm].append(result)
    return found
