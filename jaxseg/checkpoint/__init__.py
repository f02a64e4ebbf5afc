"""Orbax checkpoints of the train state and the data iterator, in one place.

Saves are asynchronous. The two latest checkpoints and the best one by validation mean IoU are
kept (``preservation_policy``: keeping both needs ``AnyPreservationPolicy``; ``max_to_keep`` with
``best_fn`` would delete the latest and break resuming). Two latest, so that a damaged latest one
(a full disk, a copy cut short) still leaves one to resume from: ``restore_newest`` says which step
is damaged, moves it aside to ``<workdir>/checkpoints-damaged/`` and resumes from the newest one
that restores.

``orbax_io`` reads and writes one checkpoint; ``recovery`` finds the newest one that restores.
Nothing here knows the trainer or the model: they hand in the (abstract) state to restore into.
"""

from jaxseg.checkpoint.orbax_io import (
    BEST_METRIC,
    CHECKPOINT_DIR,
    DAMAGED_DIR,
    KEEP_LATEST,
    CheckpointMismatch,
    DamagedCheckpoint,
    create_manager,
    restore,
    save,
    saved_arrays,
)
from jaxseg.checkpoint.recovery import open_read_only, restore_newest, resume

__all__ = [
    "BEST_METRIC",
    "CHECKPOINT_DIR",
    "DAMAGED_DIR",
    "KEEP_LATEST",
    "CheckpointMismatch",
    "DamagedCheckpoint",
    "create_manager",
    "open_read_only",
    "restore",
    "restore_newest",
    "resume",
    "save",
    "saved_arrays",
]
