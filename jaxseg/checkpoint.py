"""Orbax checkpoints of the train state and the data iterator, in one place.

Saves are asynchronous. The two latest checkpoints and the best one by validation mean IoU are
kept (``preservation_policy``: keeping both needs ``AnyPreservationPolicy``; ``max_to_keep`` with
``best_fn`` would delete the latest and break resuming). Two latest, so that a damaged latest one
(a full disk, a copy cut short) still leaves one to resume from: ``restore_newest`` says which step
is damaged, moves it aside to ``<workdir>/checkpoints-damaged/`` and resumes from the newest one
that restores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxseg import inference
from jaxseg.errors import UserError
from jaxseg.summary import CONFIG_FILE

if TYPE_CHECKING:
    import flax.linen as nn

    from jaxseg.data import DatasetSpec

BEST_METRIC = "mean_iou"
CHECKPOINT_DIR = "checkpoints"  # Where a run keeps its checkpoints, inside its workdir.
DAMAGED_DIR = "checkpoints-damaged"  # Where damaged checkpoints are moved, inside the workdir.
KEEP_LATEST = 2  # Latest checkpoints kept (besides the best): one may be damaged.


def create_manager(directory: str, *, read_only: bool = False) -> ocp.CheckpointManager:
    """A manager over ``directory`` keeping the two latest and the best (by mean IoU) checkpoints."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(
            [
                policies.LatestN(KEEP_LATEST),
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        ),
        best_fn=lambda metrics: metrics[BEST_METRIC],
        best_mode="max",
        create=not read_only,
        read_only=read_only,
    )
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "data_iter": grain.checkpoint.CheckpointHandler(),
    }
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=handlers
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: Any, data_iter=None, metrics=None
) -> None:
    """Starts an asynchronous save of ``state`` (and the data iterator's position) at ``step``."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


class CheckpointMismatch(UserError):
    """A checkpoint whose parameters do not fit the model the config builds."""


class DamagedCheckpoint(UserError):
    """A checkpoint that cannot be read back (files cut short or missing)."""

    def __init__(self, message: str, step: int | None = None, reason: str = ""):
        super().__init__(message)
        self.step, self.reason = step, reason


def _damaged(directory, step: int, cause: BaseException) -> DamagedCheckpoint:
    reason = _reason(cause)
    return DamagedCheckpoint(
        f"checkpoint step {step} in {directory} is damaged: {reason}", step, reason
    )


def _reason(error: BaseException) -> str:
    """A one-line cause; TensorStore puts the useful part (OUT_OF_RANGE, NOT_FOUND) deepest."""
    while error.__cause__ is not None and not str(error).startswith(("OUT_OF_RANGE", "NOT_FOUND")):
        error = error.__cause__
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r" \[tensorstore_spec=.*", "", text)  # A page of JSON.
    status = re.match(r"([A-Z_]{4,}): (.*)", text)
    if status:  # 'OUT_OF_RANGE: Error opening ...: Error reading "<array>/...": ...: <cause>'
        code, rest = status.groups()
        array = re.search(r'Error reading "([^"/]+)', rest)
        text = f"{code}{f' reading {array.group(1)}' if array else ''}: {rest.rsplit(': ', 1)[-1]}"
    return text if len(text) <= 240 else text[:237] + "..."


def _quiet_late_tensorstore_callbacks() -> None:
    """When reading a checkpoint fails, TensorStore reads still in flight complete into Orbax's
    closed event loop and each prints a ``RuntimeError: Event loop is closed`` traceback through
    ``sys.unraisablehook`` (harmless, but hundreds of lines around the one that matters). Drops
    just those, from the first restore on."""
    previous = sys.unraisablehook
    if getattr(previous, "jaxseg_quiet", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.jaxseg_quiet = True
    sys.unraisablehook = hook


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{dotted name: shape}``: Orbax's own names for a state's arrays. (Dtypes may differ:
    restoring casts.)"""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path, simple=True, separator="."): tuple(np.shape(x))
        for path, x in flat
    }


def _check_fits(manager: ocp.CheckpointManager, step: int, abstract: Any) -> None:
    """Compares a checkpoint's recorded array names and shapes with the state's, before reading
    any array: a mismatch is the config's fault, unreadable metadata the checkpoint's."""
    try:
        saved = {
            leaf.name: tuple(leaf.shape)
            for leaf in jax.tree.leaves(manager.item_metadata(step)["state"])
        }
        if not saved:
            raise ValueError("no array metadata")
    except Exception as e:  # Orbax and TensorStore raise many kinds on unreadable files.
        raise _damaged(manager.directory, step, e) from e
    expected = _leaf_shapes(abstract)
    if saved == expected:
        return
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    # Parameters first: their names say the most (``opt_state`` mirrors them).
    changed = sorted(
        (k for k in set(saved) & set(expected) if saved[k] != expected[k]),
        key=lambda k: (not k.startswith("params."), k),
    )
    if changed:
        detail = f"{changed[0]} has shape {saved[changed[0]]} there but {expected[changed[0]]} here"
    elif missing:
        detail = f"it has no {missing[0]}" + (
            f" (and {len(missing) - 1} more)" if missing[1:] else ""
        )
    else:
        detail = f"it has {extra[0]}, which the model has not"
    raise CheckpointMismatch(
        f"checkpoint {step} in {manager.directory} does not match the model built from the "
        f"config (different model, size or options?): {detail}"
    )


def restore(manager: ocp.CheckpointManager, step: int, state: Any, data_iter=None) -> Any:
    """Restores checkpoint ``step`` into the structure, shapes and shardings of ``state``.

    The data iterator, if given, is restored in place.

    Raises:
      CheckpointMismatch: its parameters do not match ``state`` (another model or size).
      DamagedCheckpoint: it cannot be read (files cut short or missing).
    """
    _quiet_late_tensorstore_callbacks()  # Before reading: they come while the error propagates.
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    _check_fits(manager, step, abstract)
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # Its names and shapes fit (checked above): the files are at fault.
        raise _damaged(manager.directory, step, e) from e
    return restored["state"]


def _agree(ok: bool) -> bool:
    """Whether every process succeeded (processes must restore the same step)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def restore_newest(
    manager: ocp.CheckpointManager,
    state: Any,
    data_iter=None,
    *,
    steps: list[int] | None = None,
    log: Callable[[str], None] = print,
    move_damaged: bool = True,
) -> tuple[int | None, Any]:
    """Restores the newest checkpoint that can be read, state and data iterator from the same one.

    Each damaged one is named in one line (``log``); with ``move_damaged`` the damaged steps newer
    than the restored one are moved to ``<workdir>/checkpoints-damaged/`` so that training can
    save those steps again.

    Args:
      steps: the steps to try, in order (default: every step, newest first).

    Returns:
      ``(step, restored state)``, or ``(None, state)`` when there is no checkpoint.

    Raises:
      CheckpointMismatch: the checkpoints do not match the model (no fallback: all would not).
      DamagedCheckpoint: there are checkpoints, but none can be restored.
    """
    steps = sorted(manager.all_steps(), reverse=True) if steps is None else list(steps)
    damaged: list[DamagedCheckpoint] = []
    for i, step in enumerate(steps):
        error = None
        try:
            restored = restore(manager, step, state, data_iter)
        except DamagedCheckpoint as e:
            error = e
        if _agree(error is None):
            if damaged and move_damaged:
                _move_aside(manager.directory, [d.step for d in damaged], log)
                manager.reload()
            return step, restored
        error = error or _damaged(manager.directory, step, RuntimeError("another process failed"))
        damaged.append(error)
        if i + 1 < len(steps):
            log(f"{error}; trying step {steps[i + 1]}")
    if not damaged:
        return None, state
    if len(damaged) == 1:
        raise DamagedCheckpoint(
            f"{damaged[0]}; there is no other checkpoint: move {manager.directory} aside to "
            "start over",
            damaged[0].step,
            damaged[0].reason,
        )
    raise DamagedCheckpoint(
        f"no checkpoint in {manager.directory} can be restored: steps "
        f"{', '.join(str(d.step) for d in damaged)} are damaged (step {damaged[0].step}: "
        f"{damaged[0].reason}); move {manager.directory} aside to start over",
        damaged[0].step,
        damaged[0].reason,
    )


def _move_aside(directory: str, steps: list[int], log) -> None:
    """Moves damaged checkpoint steps out of the checkpoint folder (not deleted: they may be
    looked at), so that the steps can be saved again."""
    directory = str(directory)
    target = os.path.join(os.path.dirname(directory), DAMAGED_DIR)
    if jax.process_index() == 0:
        os.makedirs(target, exist_ok=True)
        for step in steps:
            source = os.path.join(directory, str(step))
            destination = os.path.join(target, str(step))
            if os.path.exists(destination):
                destination += time.strftime("-%Y%m%d-%H%M%S")
            shutil.move(source, destination)
            log(f"moved damaged checkpoint step {step} to {destination}")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxseg:moved_damaged_checkpoints")


def _step_dirs(directory: str) -> list[int]:
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _unlistable(directory: str) -> dict[int, str]:
    """Steps whose small JSON files (scores, commit metadata) do not parse: Orbax reads them to
    list the checkpoints, and one bad file stops any ``CheckpointManager`` on the folder."""
    bad = {}
    for step in _step_dirs(directory):
        for name in ("metrics/metrics", "_CHECKPOINT_METADATA"):
            path = os.path.join(directory, str(step), name)
            if not os.path.isfile(path):
                continue
            try:
                with open(path) as f:
                    json.load(f)
            except (OSError, ValueError) as e:
                bad[step] = f"{name} cannot be read ({type(e).__name__}: {e})"
                break
    return bad


def resume(
    directory: str, state: Any, data_iter=None, *, log: Callable[[str], None] = print
) -> tuple[ocp.CheckpointManager, int | None, Any]:
    """Opens a run's checkpoint folder for training and restores its newest readable
    checkpoint (``restore_newest``): damaged ones are named and moved to
    ``<workdir>/checkpoints-damaged/``, also those Orbax cannot even list.

    Returns:
      ``(manager, step or None, state)``.

    Raises:
      CheckpointMismatch, DamagedCheckpoint: as ``restore_newest``.
    """
    unlistable = _unlistable(directory)
    if unlistable:
        if set(unlistable) == set(_step_dirs(directory)):
            listed = ", ".join(str(s) for s in sorted(unlistable, reverse=True))
            newest = max(unlistable)
            raise DamagedCheckpoint(
                f"no checkpoint in {directory} can be restored: steps {listed} are damaged "
                f"(step {newest}: {unlistable[newest]}); move {directory} aside to start over",
                newest,
                unlistable[newest],
            )
        for step in sorted(unlistable, reverse=True):
            log(f"checkpoint step {step} in {directory} is damaged: {unlistable[step]}")
        _move_aside(directory, sorted(unlistable), log)
    manager = create_manager(directory)
    try:
        step, state = restore_newest(manager, state, data_iter, log=log)
    except BaseException:
        manager.close()
        raise
    return manager, step, state


# --- A trained run read back from its workdir -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained model and everything needed to use it (from ``load_trained``).

    Attributes:
      workdir: the run directory it was read from (absolute).
      config: the run's config, as ``jaxseg.train`` wrote it to ``config.json``.
      spec: the dataset spec (class names, channels, ignore label).
      model: the Flax module.
      variables: ``{'params': ...}``, plus ``'batch_stats'`` for batch-norm models.
      step: the training step of the restored checkpoint.
      checkpoint: ``'best'`` (highest eval mean IoU), ``'latest'``, or ``'newest readable'``
        when those are damaged.
    """

    workdir: str
    config: ml_collections.ConfigDict
    spec: DatasetSpec
    model: nn.Module
    variables: dict[str, Any]
    step: int
    checkpoint: str

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def predictor(
        self,
        *,
        tile_size: int | tuple[int, int] | None = None,
        tta: bool | str | None = None,
        tile_batch_size: int = 8,
        **kwargs,
    ) -> inference.Predictor:
        """A tiled ``Predictor`` for this model (``jaxseg.inference.for_model``).

        It takes ``[H, W, C]`` float32 in [0, 1] (``jaxseg.prediction.predict_image`` takes
        uint8); reuse it across images so that compiled tile batches are reused.
        """
        return inference.for_model(
            self.model,
            self.variables,
            tile_size=tile_size,
            tta=tta,
            tile_batch_size=tile_batch_size,
            **kwargs,
        )


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run wrote to ``workdir/config.json``, as a ``ConfigDict``.

    JSON gives lists where the config had tuples and ``None`` for unset placeholders; the
    trainer's ``resolve`` accepts both.

    Raises:
      FileNotFoundError: no such directory, or no ``config.json`` in it.
    """
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"no run directory {workdir!r}")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{workdir!r} has no {CONFIG_FILE}; is it a workdir written by python -m jaxseg.train?"
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_trained(workdir: str, *, best: bool = True) -> Trained:
    """Reads a run's config and restores its best (or latest) checkpoint for inference::

        trained = load_trained("workdirs/unet")
        probabilities = trained.predictor(tta="flips")(image_uint8 / 255.0)  # [H, W, K]

    Args:
      workdir: a directory written by ``python -m jaxseg.train`` (``config.json`` and
        ``checkpoints/``).
      best: the checkpoint with the highest evaluation mean IoU; when no checkpoint has a
        score, or with ``best=False``, the latest. A damaged one is named on stderr and the
        newest other one that restores is used.

    Raises:
      FileNotFoundError: no workdir, no ``config.json`` or no checkpoint.
      ValueError: a config that does not resolve, a checkpoint that does not match the
        model the config builds (``CheckpointMismatch``), or no checkpoint that can be read
        (``DamagedCheckpoint``).
    """
    from jaxseg import trainer  # Here, not at the top: the trainer imports this module.

    workdir = os.path.abspath(workdir)
    config = read_config(workdir)
    try:
        setup = trainer.resolve(config)
        tx, _ = trainer.create_optimizer(config)
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        raise UserError(f"{os.path.join(workdir, CONFIG_FILE)}: {e}") from e

    directory = os.path.join(workdir, CHECKPOINT_DIR)
    unlistable = _unlistable(directory)
    if unlistable:  # A read-only look cannot move them out of the way.
        step = max(unlistable)
        raise DamagedCheckpoint(
            f"checkpoint step {step} in {directory} is damaged: {unlistable[step]}; move it out of "
            f"{directory} (e.g. to {os.path.join(workdir, DAMAGED_DIR)}) to use the others",
            step,
            unlistable[step],
        )
    manager = create_manager(directory, read_only=True) if os.path.isdir(directory) else None
    if manager is None or not manager.all_steps():
        raise FileNotFoundError(
            f"no checkpoint in {directory!r}: training saves one every "
            f"config.checkpoint_every_steps ({config.checkpoint_every_steps}) steps"
        )
    best_step = manager.best_step() if best else None
    newest_first = sorted(manager.all_steps(), reverse=True)
    order = ([best_step] if best_step is not None else []) + [
        s for s in newest_first if s != best_step
    ]

    # Shapes only (nothing is initialised): restoring fills every leaf.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.eval_shape(lambda: trainer.create_train_state(config, setup, tx))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
    )
    try:  # A damaged checkpoint is named on stderr and the next one tried; none is moved.
        step, state = restore_newest(
            manager,
            abstract,
            steps=order,
            log=lambda line: print(line, file=sys.stderr),
            move_damaged=False,
        )
    finally:
        manager.close()
    if step == best_step:
        which = "best"
    elif step == newest_first[0]:
        which = "latest"
    else:
        which = "newest readable"
    return Trained(workdir, config, setup.spec, setup.model, state.variables, int(step), which)
