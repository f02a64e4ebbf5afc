"""Where training starts: random initialisation, pretrained weights, or another run (fine-tuning).

``config.init_from`` names either a weight source that ``jaxseg.models.pretrained`` reads (a
``.safetensors`` / ``.npz`` / torch file, or ``hf-hub:ORG/NAME``), converted for the model, or the
workdir of another jaxseg run, whose best (else latest) checkpoint's parameters and batch-norm
statistics are matched by name. Tensors whose shape changed (a head for another class count) and
those matching ``config.init_exclude`` stay freshly initialised; everything that happened is one
log line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
from flax import traverse_util

from jaxseg import checkpoint
from jaxseg.errors import UserError
from jaxseg.models import pretrained
from jaxseg.models.convert import merge_params
from jaxseg.models.weights import WeightsNotFound
from jaxseg.summary import CONFIG_FILE
from jaxseg.training.state import TrainState


def is_run(source: str) -> bool:
    """Whether ``source`` is a jaxseg run's workdir (it has ``config.json``)."""
    return os.path.isfile(os.path.join(source, CONFIG_FILE))


def initialized_state(config, state: TrainState, *, log: Callable[[str], None] = print):
    """``state`` with its parameters (and batch statistics) taken from ``config.init_from``.

    Raises:
      UserError (a ValueError) or FileNotFoundError: weights that cannot be read or do not fit.
    """
    source = config.get("init_from", "")
    if not source:
        return state
    exclude = tuple(config.get("init_exclude", ()))
    variables = {"params": state.params}
    if state.batch_stats is not None:
        variables["batch_stats"] = state.batch_stats
    if is_run(source):
        with open(os.path.join(source, CONFIG_FILE)) as f:
            theirs = json.load(f).get("normalization", "unit")
        if theirs != config.get("normalization", "unit"):
            log(f"warning: {source} was trained with normalization={theirs!r}, this run uses "
                f"{config.get('normalization', 'unit')!r}")  # fmt: skip
        variables, report = from_run(source, variables, exclude=exclude)
    elif os.path.isdir(source):
        raise UserError(f"config.init_from={source!r} is a folder without {CONFIG_FILE}, not a "
                        "jaxseg run's workdir")  # fmt: skip
    else:
        try:
            variables, report = pretrained.load_pretrained(
                config.model, variables, source, exclude=exclude
            )
        except WeightsNotFound as e:
            raise WeightsNotFound(
                f"config.init_from={source!r}: {e}. Or pass a weights file you have "
                "(--config.init_from=PATH.safetensors, .npz, or .pth with torch installed) or a "
                "trained run's workdir; --config.init_from='' starts from random weights"
            ) from e
    fresh = sorted({path.rsplit("/", 1)[0] for path in report["fresh"]})
    log(
        f"init_from {source}: loaded {len(report['loaded'])} tensors"
        + (f"; fresh: {', '.join(fresh)}" if fresh else "")
        + (f"; not used: {len(report['dropped'])}" if report.get("dropped") else "")
    )
    return state.replace(params=variables["params"], batch_stats=variables.get("batch_stats"))


def from_run(workdir: str, variables: dict, *, exclude=()) -> tuple[dict, dict]:
    """``variables`` filled, by name, from another run's best (else latest) checkpoint; tensors
    whose shape differs there, or that it lacks, stay fresh; its tensors without a place here are
    dropped. Returns ``(variables, report)`` as ``merge_params``.

    Raises:
      UserError: the run shares no tensor with ``variables`` (another model).
    """
    manager = checkpoint.open_read_only(os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
    try:
        step = manager.best_step()
        step = manager.latest_step() if step is None else step
        saved = checkpoint.saved_arrays(manager, step)
    finally:
        manager.close()
    merged, report = {}, {"loaded": [], "fresh": [], "dropped": []}
    for key, target in variables.items():
        here = traverse_util.flatten_dict(target, sep="/")
        there = traverse_util.flatten_dict(saved.get(key, {}), sep="/")
        # New layers (FCN-16s's pool4 skip on an FCN-32s run) and resized ones stay fresh;
        # the run's tensors without a place here (its own extra layers) are not used.
        keep = [p for p in here if p not in there or np.shape(here[p]) != np.shape(there[p])]
        unused = [p for p in there if p not in here]
        merged[key], part = merge_params(
            target, saved.get(key, {}), exclude=(*exclude, *keep, *unused)
        )
        for name, paths in part.items():
            report[name] += [f"{key}/{p}" for p in paths]
    if not report["loaded"]:
        raise UserError(
            f"the run in {workdir} shares no parameter (name and shape) with this model"
        )
    return merged, report
