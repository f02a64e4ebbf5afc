"""Finding the newest checkpoint that restores: damaged ones are named, and for training moved
to ``<workdir>/checkpoints-damaged/`` so that their steps can be saved again."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxseg.checkpoint.orbax_io import (
    DAMAGED_DIR,
    DamagedCheckpoint,
    _damaged,
    create_manager,
    restore,
)


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
    partial: bool = False,
) -> tuple[int | None, Any]:
    """Restores the newest checkpoint that can be read, state and data iterator from the same one.

    Each damaged one is named in one line (``log``); with ``move_damaged`` the damaged steps newer
    than the restored one are moved to ``<workdir>/checkpoints-damaged/`` so that training can
    save those steps again.

    Args:
      steps: the steps to try, in order (default: every step, newest first).
      partial: restore only the entries ``state`` has (see ``restore``).

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
            restored = restore(manager, step, state, data_iter, partial=partial)
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


def open_read_only(directory: str) -> ocp.CheckpointManager:
    """A read-only manager over a run's checkpoint folder, for using (not training) the run.

    Raises:
      FileNotFoundError: the folder holds no checkpoint.
      DamagedCheckpoint: a checkpoint whose small files do not parse (a read-only look cannot
        move it out of the way, and Orbax cannot list the others while it is there).
    """
    unlistable = _unlistable(directory)
    if unlistable:
        step = max(unlistable)
        damaged_dir = os.path.join(os.path.dirname(os.path.abspath(directory)), DAMAGED_DIR)
        raise DamagedCheckpoint(
            f"checkpoint step {step} in {directory} is damaged: {unlistable[step]}; move it out of "
            f"{directory} (e.g. to {damaged_dir}) to use the others",
            step,
            unlistable[step],
        )
    manager = create_manager(directory, read_only=True) if os.path.isdir(directory) else None
    if manager is None or not manager.all_steps():
        raise FileNotFoundError(f"no checkpoint in {directory!r}")
    return manager
