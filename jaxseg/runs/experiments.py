"""Experiments: one base config, named arms that change it, every arm trained once per seed.

An experiment file is a config file (``python -m jaxseg.experiment --config FILE``) whose
``get_config()`` returns a ``ConfigDict`` with these fields:

- ``base``: the training config every run starts from.
- ``arms``: ``((name, overrides), ...)`` in the order the tables show them. ``overrides`` is a
  dict of config fields; a nested dict changes only the fields it names
  (``{"model_kwargs": {"skip": "add"}}``), so a base without ``model_kwargs`` takes an arm's whole.
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
the job. The report (``runs.experiment_report``) is made from the ``result.json`` files.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from jaxseg.checkpoint import CHECKPOINT_DIR

RESULT_FILE = "result.json"
OPEN_FIELDS = ("model_kwargs", "augment")  # Dicts whose keys an arm may add.
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def check(experiment: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` naming the first bad field of an experiment."""
    for field in ("base", "arms", "seeds", "metrics"):
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
    for name in names:
        arm_config(experiment, name)  # Every arm's overrides fit the base config.


def arm_names(experiment) -> list[str]:
    return [name for name, _ in experiment.arms]


def arm_config(experiment, arm: str) -> ml_collections.ConfigDict:
    """The base config with ``arm``'s overrides."""
    overrides = dict(experiment.arms).get(arm)
    if overrides is None:
        raise ValueError(f"no arm {arm!r}; the experiment has {arm_names(experiment)}")
    config = experiment.base.copy_and_resolve_references()
    with config.unlocked():
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


def runs(experiment, arms: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """``(arm, seed)`` of every run (of ``arms`` only, where given), seed-major, so that with
    every arm's first seed done a report can already compare arms."""
    names = arm_names(experiment)
    for arm in arms or ():
        if arm not in names:
            raise ValueError(f"no arm {arm!r}; the experiment has {names}")
    chosen = [a for a in names if not arms or a in arms]
    return [(arm, int(seed)) for seed in experiment.seeds for arm in chosen]


def train_run(experiment, root: str, arm: str, seed: int) -> dict:
    """Trains (or resumes) one run to its last step, scores it and writes its ``result.json``.

    Returns the result; a run stopped early (SIGTERM, preemption) returns ``{}`` and writes no
    result, so the next call resumes it.
    """
    from jaxseg import training
    from jaxseg.runs import scoring
    from jaxseg.runs.loading import load_trained

    config = run_config(experiment, arm, seed)
    workdir = run_dir(root, arm, seed)
    resumed = os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR))
    start = time.perf_counter()
    final = training.train_and_evaluate(config, workdir)
    trained = load_trained(workdir, best=False)
    if trained.step < config.num_train_steps:
        return {}
    if experiment.evaluate:
        final = scoring.evaluate_split(trained)
        final.pop("confusion_matrix", None)
    result = {
        "arm": arm,
        "seed": int(seed),
        "step": trained.step,
        "seconds": round(time.perf_counter() - start, 1),
        "resumed": resumed,  # Then ``seconds`` counts this last part only.
        "metrics": final,
    }
    scoring.write_json(result, os.path.join(workdir, RESULT_FILE))
    return result


def run_all(
    experiment,
    root: str,
    *,
    arms: Sequence[str] | None = None,
    processes: int = 1,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Trains every unfinished run of the experiment; returns the failed runs' messages.

    A run that fails (a bad value in one arm, a workdir in use) is reported and the others go on.
    A SIGTERM stops the job as it stops a training run: the running runs save a checkpoint and
    no new one starts, so the same call later resumes. With ``processes > 1``, that many runs
    train at once, each in its own process (its own jax); a SIGTERM to this process is passed on
    to them.
    """
    todo = [r for r in runs(experiment, arms) if read_result(root, *r) is None]
    log(f"{len(runs(experiment, arms)) - len(todo)} runs finished, {len(todo)} to train in {root}")
    if processes <= 1:
        outcomes = []
        for arm, seed in todo:
            log(f"run {arm} seed {seed}")
            outcomes.append(_attempt(experiment, root, arm, seed))
            if outcomes[-1][0] == "stopped":
                break
    else:
        outcomes = _in_processes(experiment, root, todo, processes, log)
    if any(status == "stopped" for status, _ in outcomes):
        log("stopped: run the same command again to resume")
    return [message for status, message in outcomes if status == "failed"]


def _attempt(experiment, root: str, arm: str, seed: int) -> tuple[str, str]:
    """``("done" | "stopped" | "failed", message)`` of training one run."""
    from jaxseg.errors import UserError, one_line

    try:
        finished = train_run(experiment, root, arm, seed)
    except (UserError, ValueError, FloatingPointError) as error:
        return "failed", f"{arm} seed {seed}: {one_line(error)}"
    return ("done", "") if finished else ("stopped", f"{arm} seed {seed}")


def _child(outcomes, experiment, root: str, arm: str, seed: int) -> None:
    outcomes.put(_attempt(experiment, root, arm, seed))


def _prepare_data(experiment, todo) -> None:
    """Prepares each dataset the runs read, here, once: parallel runs would prepare it at once."""
    from jaxseg import data, training

    prepared = set()
    for arm, seed in todo:
        try:
            config = training.complete_config(run_config(experiment, arm, seed))
            where = (config.dataset, config.data_dir, config.manual_dir)
            if where not in prepared:
                prepared.add(where)
                spec = training.resolve(config).spec
                data.get_builder(spec, data_dir=config.data_dir, manual_dir=config.manual_dir)
        except (ValueError, FileNotFoundError):
            pass  # The run reports it.


def _in_processes(experiment, root: str, todo, processes: int, log) -> list[tuple[str, str]]:
    _prepare_data(experiment, todo)
    context = multiprocessing.get_context("spawn")  # A fresh jax in each process.
    outcomes = context.SimpleQueue()
    waiting, running, stopping = list(todo), {}, []

    def stop(signum, frame):
        del signum, frame
        stopping.append(True)
        for process in running.values():
            process.terminate()  # SIGTERM: the run saves a checkpoint and exits.

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while running or (waiting and not stopping):
            while waiting and len(running) < processes and not stopping:
                arm, seed = waiting.pop(0)
                process = context.Process(
                    target=_child, args=(outcomes, experiment, root, arm, seed)
                )
                process.start()
                running[(arm, seed)] = process
                log(f"run {arm} seed {seed} (process {process.pid})")
            multiprocessing.connection.wait([p.sentinel for p in running.values()])
            for run, process in list(running.items()):
                if not process.is_alive():
                    process.join()
                    del running[run]
                    if process.exitcode:
                        outcomes.put(("failed", f"{run[0]} seed {run[1]}: exit {process.exitcode}"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    found = []
    while not outcomes.empty():
        found.append(outcomes.get())
    if stopping:
        found.append(("stopped", ""))
    return found


def results(experiment, root: str) -> dict[str, list[dict[str, Any]]]:
    """``{arm: [result of each finished seed]}`` in the experiment's arm order."""
    found = {arm: [] for arm in arm_names(experiment)}
    for arm, seed in runs(experiment):
        result = read_result(root, arm, seed)
        if result is not None:
            found[arm].append(result)
    return found
