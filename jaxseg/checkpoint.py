"""Orbax checkpoints of the train state and the data iterator, in one place.

Saves are asynchronous. The latest checkpoint and the best one by validation mean IoU are kept
(``preservation_policy``: keeping both needs ``AnyPreservationPolicy``; ``max_to_keep`` with
``best_fn`` would delete the latest and break resuming).
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_METRIC = "mean_iou"


def create_manager(directory: str, *, read_only: bool = False) -> ocp.CheckpointManager:
    """A manager over ``directory`` keeping the latest and the best (by mean IoU) checkpoints."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(
            [
                policies.LatestN(1),
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


def restore(manager: ocp.CheckpointManager, step: int, state: Any, data_iter=None) -> Any:
    """Restores checkpoint ``step`` into the structure, shapes and shardings of ``state``.

    The data iterator, if given, is restored in place. A checkpoint whose parameters do not
    match ``state`` (another model or size) raises a ``ValueError`` that says so.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"checkpoint {step} in {manager.directory} does not match the model built from the "
            f"config (different model, size or options?): {str(e)[:500]}"
        ) from e
    return restored["state"]


def restore_params(directory: str, state: Any, *, best: bool = True) -> tuple[Any, int]:
    """Restores the best (or latest) checkpoint's state without its data iterator."""
    manager = create_manager(directory, read_only=True)
    step = manager.best_step() if best else None
    step = step if step is not None else manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    return restore(manager, step, state), step
