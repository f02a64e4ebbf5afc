"""What the four command lines (``train``, ``predict``, ``evaluate``, ``export``) share: their
common flags, flag parsing, and one way to report a user's mistake.

Each command is a module with its flags at the top, a ``main(argv)`` that does the work through
the library, and ``cli.run(main, required=[...])`` under ``if __name__ == '__main__'``. A bad
flag, a missing config file, an unknown ``--config.KEY`` or a user error raised by ``main`` is
one line on stderr and exit status 2; any other exception is a bug and keeps its traceback.
Nothing here imports jax: jax reads its own flags when imported, so commands import it inside
``main``, after parsing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from absl import app, flags, logging

from jaxseg.errors import UserError, one_line

TTA_CHOICES = ["none", "flips", "rotations", "dihedral"]
flags.disclaim_key_flags()  # Flags defined here belong to the command that asks: its --help.


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The flags that pick a trained run's checkpoint, and how to tile it."""

    workdir: flags.FlagHolder
    latest: flags.FlagHolder
    tta: flags.FlagHolder | None = None
    tile_size: flags.FlagHolder | None = None
    tile_batch_size: flags.FlagHolder | None = None

    @property
    def best(self) -> bool:
        return not self.latest.value

    def tiling(self) -> dict:
        """``tta``, ``tile_size`` and ``tile_batch_size`` as the library takes them."""
        tta = self.tta.value
        return {
            "tta": None if tta == "none" else tta,
            "tile_size": self.tile_size.value,
            "tile_batch_size": self.tile_batch_size.value,
        }


def define_run_flags(*, tiling: bool = True) -> RunFlags:
    """``--workdir`` and ``--latest``; with ``tiling``, also ``--tta``, ``--tile_size`` and
    ``--tile_batch_size``. The calling command's ``--help`` lists them."""
    workdir = flags.DEFINE_string("workdir", None, "Run directory written by jaxseg.train.")
    latest = flags.DEFINE_bool("latest", False, "Use the latest checkpoint, not the best.")
    if not tiling:
        return RunFlags(workdir, latest)
    return RunFlags(
        workdir,
        latest,
        tta=flags.DEFINE_enum("tta", "none", TTA_CHOICES, "Test-time augmentation."),
        tile_size=flags.DEFINE_integer(
            "tile_size", None, "Input tile size (default: jaxseg.inference.for_model's)."
        ),
        tile_batch_size=flags.DEFINE_integer("tile_batch_size", 8, "Tiles per device call."),
    )


def no_arguments(argv: Sequence[str]) -> None:
    """Refuses plain arguments after the flags (for commands that take none)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")


def run(
    main: Callable[[list[str]], int],
    *,
    required: Sequence[str] = (),
    user_errors: tuple[type[BaseException], ...] = (UserError,),
    verbosity: int = logging.ERROR,
) -> None:
    """Parses flags (``parse_flags``) and runs ``main``, with the persistent compilation cache
    on and absl logging at ``verbosity`` (Orbax logs routine checkpoint access below it).

    Args:
      main: ``argv -> exit status``.
      required: flags that must be given.
      user_errors: exception types that ``main`` raises for the user's mistakes: printed as
        ``error: <message>`` on one line, exit status 2.
      verbosity: absl logging level while ``main`` runs.
    """
    flags.mark_flags_as_required(list(required))
    config_package_on_path(sys.argv)
    app.run(functools.partial(_guarded, main, user_errors, verbosity), flags_parser=parse_flags)


def _guarded(main, user_errors, verbosity, argv) -> int:
    from jaxseg import compile_cache  # After flag parsing: it imports jax.

    logging.set_verbosity(verbosity)
    compile_cache.enable()  # A second start skips compiling (JAXSEG_COMPILE_CACHE=0: off).
    try:
        return main(argv)
    except app.UsageError as e:  # Stray arguments, a missing input: one line, as a bad flag.
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except user_errors as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


def _usage_error(message: str) -> None:
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, a missing config file or an unknown ``--config.KEY``
    as one line on stderr and exit status 2 (absl prints a traceback or two lines and exits 1).
    A config file that raises while it builds its config keeps its traceback: that is a bug."""
    config_path = config_argument(argv)
    if config_path is not None and not os.path.isfile(config_path.split(":")[0]):
        _usage_error(f"--config: no such file {config_path.split(':')[0]!r}")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _usage_error(str(e))
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
        _usage_error(f"{given[0] if given else '--config'}: no such config key {key!r}. {hint}")
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
