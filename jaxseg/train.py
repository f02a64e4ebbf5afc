"""Command line: ``python -m jaxseg.train --config configs/unet.py [--workdir DIR] [--config.KEY=VALUE]``.

Re-running the same command resumes from the workdir's latest checkpoint. For several hosts, set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (or run where jax detects the cluster).
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default: workdirs/<config>-<time>)."
)


def default_workdir(config_path: str) -> str:
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("workdirs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxseg import parallel, trainer  # After flag parsing: jax reads its flags at import.

    logging.set_verbosity(logging.WARNING)  # Orbax logs every save step at INFO.
    parallel.initialize_distributed()
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    print(f"workdir: {os.path.abspath(workdir)}")
    trainer.train_and_evaluate(_CONFIG.value, workdir)


def config_package_on_path(argv: list[str]) -> None:
    """Lets config files ``from configs import base`` wherever the command runs: puts the folder
    that holds the config's package (``configs/``) on ``sys.path``."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        else:
            continue
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    config_package_on_path(sys.argv)
    app.run(main)
