"""The one exception type for a user's mistake: a bad config value, missing data, a checkpoint that
does not fit, a workdir in use, checkpoints that cannot be read.

Command lines print its message as one line on stderr and exit with status 2; any other exception
is a bug and keeps its traceback. It subclasses ``ValueError``, so code that catches
``ValueError`` (``jaxseg.predict``, ``jaxseg.evaluate``, tests) still does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class UserError(ValueError):
    """A problem the user can fix; the message says what, and how."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (ConfigDict and TFDS messages span several)."""
    return " ".join(str(error).split())


@contextlib.contextmanager
def as_user_errors(*types: type[BaseException]) -> Iterator[None]:
    """Re-raises ``types`` raised inside as ``UserError`` (message on one line, cause chained):
    for code whose errors of those types come from the config or the data, not from a bug."""
    try:
        yield
    except UserError:
        raise
    except types as e:
        raise UserError(one_line(e)) from e
