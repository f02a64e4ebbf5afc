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

from jaxseg import checkpoint
from jaxseg.errors import UserError
from jaxseg.models import pretrained
from jaxseg.models.convert import merge_params
from jaxseg.models.weights import WeightsNotFound
from jaxseg.summary import CONFIG_FILE
from jaxseg.training.setup import dataset_spec
from jaxseg.training.state import TrainState


def is_run(source: str) -> bool:
    """Whether ``source`` is a jaxseg run's workdir (it has ``config.json``)."""
    return os.path.isfile(os.path.join(source, CONFIG_FILE))


def initialized_state(config, state: TrainState, *, log: Callable[[str], None] = print):
    """``state`` with its parameters (and batch statistics) taken from ``config.init_from``.

    Heads sized for another class count stay fresh, and so do whole modules a run does not
    have (FCN-16s's pool4 skip on an FCN-32s run); any other difference in names or shapes is
    another architecture and an error naming it (``config.init_exclude`` keeps layers fresh).

    Raises:
      UserError (a ValueError) or FileNotFoundError: weights that cannot be read or do not fit.
    """
    source = config.get("init_from", "")
    if not source:
        return state
    exclude = tuple(config.get("init_exclude", ()))
    num_classes = dataset_spec(config).num_classes
    normalization = config.get("normalization", "unit")
    variables = {"params": state.params}
    if state.batch_stats is not None:
        variables["batch_stats"] = state.batch_stats
    if is_run(source):
        with open(os.path.join(source, CONFIG_FILE)) as f:
            theirs = json.load(f).get("normalization", "unit")
        if theirs != normalization:
            log(f"warning: {source} was trained with normalization={theirs!r}, this run uses "
                f"{normalization!r}")  # fmt: skip
        variables, report = from_run(source, variables, exclude=exclude, num_classes=num_classes)
    elif os.path.isdir(source):
        raise UserError(f"config.init_from={source!r} is a folder without {CONFIG_FILE}, not a "
                        "jaxseg run's workdir")  # fmt: skip
    else:
        if normalization == "unit":
            log(f"warning: {source} is loaded into a model with normalization='unit' ([0, 1] "
                "inputs); ImageNet weights expect 'imagenet' (torchvision, timm) or 'caffe'")  # fmt: skip
        try:
            variables, report = pretrained.load_pretrained(
                config.model, variables, source, exclude=exclude, num_classes=num_classes
            )
        except WeightsNotFound as e:
            raise WeightsNotFound(
                f"config.init_from={source!r}: {e}. Or pass a weights file you have "
                "(--config.init_from=PATH.safetensors, .npz, or .pth with torch installed) or a "
                "trained run's workdir; --config.init_from='' starts from random weights"
            ) from e
    fresh = sorted({path.rsplit("/", 1)[0] for path in report["fresh"]})
    dropped = report.get("dropped", [])
    log(
        f"init_from {source}: loaded {len(report['loaded'])} tensors"
        + (f"; fresh: {', '.join(fresh)}" if fresh else "")
        + (f"; not used: {len(dropped)} ({', '.join(dropped[:4])}" if dropped else "")
        + (", ...)" if len(dropped) > 4 else ")" if dropped else "")
    )
    return state.replace(params=variables["params"], batch_stats=variables.get("batch_stats"))


def _modules(tree) -> set[str]:
    """``collection/top-level module`` names of a ``{collection: {module: ...}}`` tree."""
    return {f"{c}/{m}" for c, sub in tree.items() for m in sub}


def from_run(
    workdir: str, variables: dict, *, exclude=(), num_classes: int | None = None
) -> tuple[dict, dict]:
    """``variables`` filled, by name, from another run's best (else latest) checkpoint.

    Stay fresh: heads whose shape differs only by the class count (``num_classes``), and
    top-level modules the run does not have; the run's top-level modules this model lacks are
    dropped. Returns ``(variables, report)`` as ``merge_params``.

    Raises:
      UserError: any other missing, extra or resized tensor (another architecture, named), or a
        run that shares no tensor with ``variables``.
    """
    manager = checkpoint.open_read_only(os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
    try:
        step = manager.best_step()
        step = manager.latest_step() if step is None else step
        saved = checkpoint.saved_arrays(manager, step)
    finally:
        manager.close()
    saved = {key: saved.get(key, {}) for key in variables}
    here, there = _modules(variables), _modules(saved)
    heads = pretrained.resized_heads(variables, saved, num_classes)
    user = [f"{c}/{p}" for p in exclude for c in variables]  # init_exclude, per collection.
    patterns = (*user, *heads, *sorted(here ^ there))  # New here; only there: dropped.
    merged, report = merge_params(variables, saved, exclude=patterns)
    if not report["loaded"]:
        raise UserError(
            f"the run in {workdir} shares no parameter (name and shape) with this model"
        )
    return merged, report
