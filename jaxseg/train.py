"""Command line: ``python -m jaxseg.train --config configs/unet.py [--workdir DIR] [--config.KEY=VALUE]``.

Re-running the same command resumes from the workdir's latest checkpoint (if that one is damaged,
from the newest one that restores). A workdir in use by another run is refused.

Several hosts: start one process per host (or per GPU) with ``srun`` (SLURM), ``mpirun`` (Open
MPI), on a multi-host Cloud TPU, or with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID set; ``jaxseg.parallel.initialize_distributed`` joins them. They share process 0's
default workdir.

Exit status: 0 when training ended (or was preempted and saved); 2 for a user error (a bad flag or
config value, an unknown config key, missing data, a checkpoint that does not fit the model or
cannot be read, a workdir in use), printed as one line on stderr before anything is written. Other
errors are bugs and keep their traceback.
"""

from __future__ import annotations

import os
import time

from absl import flags, logging
from ml_collections import config_flags

from jaxseg import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default: workdirs/<config>-<time>)."
)


def default_workdir(config_path: str, stamp: str | None = None) -> str:
    """``workdirs/<config name>-<stamp>``; ``stamp`` defaults to ``agreed_timestamp()``."""
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("workdirs", f"{name}-{stamp or agreed_timestamp()}")


def agreed_timestamp() -> str:
    """``YYYYmmdd-HHMMSS`` from process 0's clock, the same on every process (each host's own
    clock, or a process that starts a second later, would give each its own workdir)."""
    import jax
    import numpy as np

    stamp = np.array([int(time.strftime("%Y%m%d")), int(time.strftime("%H%M%S"))], np.int32)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        stamp = multihost_utils.broadcast_one_to_all(stamp)
    return f"{int(stamp[0]):08d}-{int(stamp[1]):06d}"


def main(argv) -> int:
    cli.no_arguments(argv)
    from jaxseg import errors, parallel, training  # After flag parsing: jax reads its flags.

    parallel.initialize_distributed()
    config = _CONFIG.value
    # Check the config (and that the data is there) before choosing a workdir.
    with errors.as_user_errors(ValueError, FileNotFoundError):
        training.resolve(training.complete_config(config))
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    print(f"workdir: {os.path.abspath(workdir)}")
    training.train_and_evaluate(config, workdir)
    return 0


if __name__ == "__main__":
    cli.run(main, required=["config"], verbosity=logging.WARNING)  # Orbax: saves at INFO.
