"""Training an experiment's runs (``runs.experiments``): one after another, or several at once
in processes of their own, each to its last step, then scored into its ``result.json``.

A run that fails is reported and the others go on. A SIGTERM stops the job as it stops a training
run: the running runs save a checkpoint and no new one starts, so the same call later resumes.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence

from jaxseg.checkpoint import CHECKPOINT_DIR
from jaxseg.runs.experiments import (
    RESULT_FILE,
    check_workdir,
    read_result,
    run_config,
    run_dir,
    runs,
)
from jaxseg.summary import jsonable

STOPPED_EXIT = 3  # A parallel run stopped (SIGTERM) before it started training.


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
        "metrics": jsonable(final),  # NaN (a class absent everywhere) as null.
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
    A SIGTERM or Ctrl-C stops the job as a SIGTERM stops a training run: the running runs save a
    checkpoint and no new one starts, so the same call later resumes. With ``processes > 1``,
    that many runs train at once, each in its own process (its own jax), and the signal is passed
    on to them.

    Raises:
      ValueError: a run's workdir holds a run of another config (``check_workdir``).
    """
    for run in runs(experiment, arms):
        check_workdir(experiment, root, *run)
    todo = [r for r in runs(experiment, arms) if read_result(root, *r) is None]
    log(f"{len(runs(experiment, arms)) - len(todo)} runs finished, {len(todo)} to train in {root}")
    if processes <= 1:
        outcomes = []
        # Ctrl-C as a SIGTERM: the training run saves a checkpoint and stops.
        previous = signal.signal(signal.SIGINT, lambda *_: signal.raise_signal(signal.SIGTERM))
        try:
            for arm, seed in todo:
                log(f"run {arm} seed {seed}")
                outcomes.append(_attempt(experiment, root, arm, seed))
                if outcomes[-1][0] == "stopped":
                    break
        finally:
            signal.signal(signal.SIGINT, previous)
    else:
        outcomes = _in_processes(experiment, root, todo, processes, log)
    if any(status == "stopped" for status, _ in outcomes):
        log("stopped: run the same command again to resume")
    return [message for status, message in outcomes if status == "failed"]


def _attempt(experiment, root: str, arm: str, seed: int) -> tuple[str, str]:
    """``("done" | "stopped" | "failed", message)`` of training one run. A user error is one
    line; any other exception (a bug, memory) keeps its traceback on stderr."""
    from jaxseg.errors import UserError, one_line

    try:
        finished = train_run(experiment, root, arm, seed)
    except (UserError, ValueError, FloatingPointError) as error:
        return "failed", f"{arm} seed {seed}: {one_line(error)}"
    except Exception as error:  # noqa: BLE001 - the other runs go on; the reason is shown.
        traceback.print_exc()
        return "failed", f"{arm} seed {seed}: {type(error).__name__}: {one_line(error)}"
    return ("done", "") if finished else ("stopped", f"{arm} seed {seed}")


def _child(outcomes, experiment, root: str, arm: str, seed: int) -> None:
    from jaxseg import compile_cache

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us.
    signal.signal(signal.SIGTERM, _stop_before_training)
    compile_cache.enable()
    outcomes.put(_attempt(experiment, root, arm, seed))


def _stop_before_training(signum, frame):
    raise SystemExit(STOPPED_EXIT)  # Replaced by the trainer's own handler once it trains.


def _prepare_data(experiment, todo) -> None:
    """Prepares each dataset the runs read, once, before parallel runs would all prepare it,
    in a process of its own (so this one does not take the accelerators the runs need)."""
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
    context = multiprocessing.get_context("spawn")  # A fresh jax in each process.
    preparing = context.Process(target=_prepare_data, args=(experiment, todo))
    preparing.start()
    preparing.join()
    outcomes = context.SimpleQueue()
    waiting, running, stopping, found = list(todo), {}, [], []

    def stop(signum, frame):
        del signum, frame
        stopping.append(True)
        for process in running.values():
            process.terminate()  # SIGTERM: the run saves a checkpoint and exits.

    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, stop) for signum in signals}
    try:
        while running or (waiting and not stopping):
            while waiting and len(running) < processes and not stopping:
                arm, seed = waiting.pop(0)
                process = context.Process(
                    target=_child, args=(outcomes, experiment, root, arm, seed)
                )
                signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # Registered before a stop.
                process.start()
                running[(arm, seed)] = process
                signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
                log(f"run {arm} seed {seed} (process {process.pid})")
            multiprocessing.connection.wait([p.sentinel for p in running.values()])
            while not outcomes.empty():  # Read as they come: a full pipe would block a child.
                found.append(outcomes.get())
            for (arm, seed), process in list(running.items()):
                if not process.is_alive():
                    process.join()
                    del running[(arm, seed)]
                    if process.exitcode in (STOPPED_EXIT, -signal.SIGTERM) and stopping:
                        found.append(("stopped", f"{arm} seed {seed}"))
                    elif process.exitcode:
                        found.append(("failed", f"{arm} seed {seed}: exit {process.exitcode}"))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    while not outcomes.empty():
        found.append(outcomes.get())
    if stopping:
        found.append(("stopped", ""))
    return found
