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
import sys
import time
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

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
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # After flag parsing: jax reads its flags at import.
    from jaxseg import compile_cache, errors, parallel, trainer

    compile_cache.enable()  # A second start skips compiling (JAXSEG_COMPILE_CACHE=0: off).

    logging.set_verbosity(logging.WARNING)  # Orbax logs every save step at INFO.
    parallel.initialize_distributed()
    config = _CONFIG.value
    try:
        with errors.as_user_errors(ValueError):  # Check the config before choosing a workdir.
            trainer.resolve(config)
        workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
        print(f"workdir: {os.path.abspath(workdir)}")
        trainer.train_and_evaluate(config, workdir)
    except errors.UserError as e:
        print(f"error: {errors.one_line(e)}", file=sys.stderr)
        return 2
    return 0


def _user_error(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, a missing config file or an unknown ``--config.KEY``
    as one line on stderr and exit status 2 (absl prints a traceback or two lines and exits 1).
    A config file that raises while it builds its config keeps its traceback: that is a bug."""
    config_path = config_argument(argv)
    if config_path is not None and not os.path.isfile(config_path.split(":")[0]):
        _user_error(f"--config: no such file {config_path.split(':')[0]!r}")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _user_error(str(e))
    except (AttributeError, KeyError) as e:  # ml_collections, for an override of an unknown key.
        frames = [frame.filename for frame in traceback.extract_tb(e.__traceback__)]
        if config_path and any(
            os.path.samefile(f, config_path) for f in frames if os.path.isfile(f)
        ):
            raise  # Raised by the config file's own code.
        while e.args and isinstance(e.args[0], BaseException):
            e = e.args[0]
        text = str(e.args[0]) if e.args else str(e)
        key, _, hint = text.partition("\n")
        key = key.strip("'\"")
        given = [
            a.split("=", 1)[0]
            for a in argv
            if a.startswith("--config.") and a.split("=", 1)[0].rsplit(".", 1)[-1] == key
        ]
        _user_error(f"{given[0] if given else '--config'}: no such config key {key!r}. {hint}")
    return []  # Not reached.


def config_argument(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv``, if any."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def config_package_on_path(argv: list[str]) -> None:
    """Lets config files ``from configs import base`` wherever the command runs: puts the folder
    that holds the config's package (``configs/``) on ``sys.path``."""
    path = config_argument(argv)
    if path is not None:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    config_package_on_path(sys.argv)
    app.run(main, flags_parser=parse_flags)
