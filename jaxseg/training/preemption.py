"""Preemption: a SIGTERM (or Orbax's preemption notice) becomes a save-and-exit at a step."""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preemption:
    """Turns SIGTERM into a flag the loop checks, so a preempted run saves and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread (e.g. a notebook worker): no handler.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def stop_at(self, manager, step: int, every: int) -> bool:
        """Whether to save and stop now. Hosts must agree (a save is collective): with several
        processes a local SIGTERM counts once all hosts have compared flags, every ``every``
        steps."""
        if manager.reached_preemption(step):
            return True
        if jax.process_count() == 1:
            return self.requested
        if step % every:
            return False
        flags = multihost_utils.process_allgather(np.int32(self.requested))
        return bool(np.any(flags))
