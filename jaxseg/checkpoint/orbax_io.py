"""Orbax I/O of a run's checkpoints: the manager, saving, and restoring one step (all of the
train state and the data iterator for training, or some entries, e.g. the parameters, for
inference), with a clear error for a checkpoint that does not fit the model or cannot be read."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxseg.errors import UserError

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


def _check_fits(manager: ocp.CheckpointManager, step: int, abstract: Any, partial: bool) -> None:
    """Compares a checkpoint's recorded array names and shapes with the state's, before reading
    any array: a mismatch is the config's fault, unreadable metadata the checkpoint's. With
    ``partial``, only the top-level entries of ``abstract`` (e.g. ``params``) are compared."""
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
    if partial:
        wanted = tuple(f"{key}." for key in abstract)
        saved = {name: shape for name, shape in saved.items() if name.startswith(wanted)}
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


def restore(
    manager: ocp.CheckpointManager, step: int, state: Any, data_iter=None, *, partial=False
) -> Any:
    """Restores checkpoint ``step`` into the structure, shapes and shardings of ``state``.

    The data iterator, if given, is restored in place. With ``partial``, ``state`` is a dict
    of some of the saved state's entries (``{'params': ..., 'batch_stats': ...}``) and only
    their arrays are read: a model for inference without its optimizer state.

    Raises:
      CheckpointMismatch: its parameters do not match ``state`` (another model or size).
      DamagedCheckpoint: it cannot be read (files cut short or missing).
    """
    _quiet_late_tensorstore_callbacks()  # Before reading: they come while the error propagates.
    if partial and data_iter is not None:
        raise ValueError("a partial restore takes no data iterator")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    _check_fits(manager, step, abstract, partial)
    try:
        if partial:  # The manager's StandardCheckpointHandler cannot read a subset.
            return ocp.PyTreeCheckpointer().restore(
                os.path.join(manager.directory, str(step), "state"),
                args=ocp.args.PyTreeRestore(
                    item=abstract,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                    partial_restore=True,
                ),
            )
        items = {"state": ocp.args.StandardRestore(abstract)}
        if data_iter is not None:
            items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
        return manager.restore(step, args=ocp.args.Composite(**items))["state"]
    except Exception as e:  # Its names and shapes fit (checked above): the files are at fault.
        raise _damaged(manager.directory, step, e) from e


def saved_arrays(manager: ocp.CheckpointManager, step: int, keys=("params", "batch_stats")) -> dict:
    """The arrays of the state's entries ``keys`` in checkpoint ``step``, with their saved
    shapes (those without arrays are left out): to start another model from them without
    building the model that wrote them. Read as ``restore(..., partial=True)`` reads."""
    try:
        metadata = manager.item_metadata(step)["state"]
    except Exception as e:  # Orbax and TensorStore raise many kinds on unreadable files.
        raise _damaged(manager.directory, step, e) from e
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {
        key: jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
            metadata[key],
        )
        for key in keys
        if key in metadata and jax.tree.leaves(metadata[key])
    }
    return restore(manager, step, abstract, partial=True)
