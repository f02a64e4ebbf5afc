"""One run at a time in a workdir: ``<workdir>/jaxseg.lock``.

A second run started into a busy workdir is refused at once, naming the holder (process id, host,
start time, command). A lock left by a run that was killed (same host, process gone) is taken
over, with one line saying so. A lock from another host cannot be checked from here: the message
says which file to delete if that run is gone.

How: the file is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS) and holds the holder as
JSON; the holder also keeps an ``flock`` on it. The kernel drops the ``flock`` when the holder dies,
so on one host a live holder is seen even if its process id was reused, and two runs that find the
same stale lock cannot both take it over. Where a filesystem has no ``flock``, the process-id check
alone decides.

With several processes only process 0 takes the lock: it is the one that writes the workdir's
metrics, config and checkpoint metadata, and one holder gives one message and one stale-lock check
(per-process files would each need their own host's check, and a second run's processes could land
on other hosts than the first's). Every process learns the outcome, so all stop together.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator

from jaxseg.errors import UserError

LOCK_FILE = "jaxseg.lock"


class WorkdirLocked(UserError):
    """The workdir is in use by another run (or its lock cannot be taken)."""


def _holder_info() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(sys.argv),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Alive, owned by someone else.
        return True
    return True


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: someone holds it; None: this filesystem has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


def _describe(holder: dict) -> str:
    command = str(holder.get("command") or "")
    if len(command) > 120:
        command = command[:117] + "..."
    return (
        f"process {holder.get('pid')} on host {holder.get('host')}, started "
        f"{holder.get('started')}" + (f" ({command})" if command else "")
    )


class WorkdirLock:
    """The lock of one workdir. ``acquire()`` or refuse; ``release()`` (also on exit)."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._fd: int | None = None
        self._created: list[str] = []  # Folders acquire() made, deepest first.

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, log: Callable[[str], None] = print) -> WorkdirLock:
        """Takes the lock, creating the workdir if needed.

        Raises:
          WorkdirLocked: another live run holds it, naming that run.
        """
        try:
            folder = self.workdir
            while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
                self._created.append(folder)
                folder = os.path.dirname(folder)
            os.makedirs(self.workdir, exist_ok=True)
        except OSError as e:
            raise WorkdirLocked(f"cannot create workdir {self.workdir!r}: {e}") from e
        try:
            for _ in range(20):  # Retries only while other runs release or take over meanwhile.
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise WorkdirLocked(f"cannot create lock file {self.path!r}: {e}") from e
                else:
                    self._take(fd, wait=True)
                    return self
                if self._take_over_if_stale(log):
                    return self
            raise WorkdirLocked(
                f"could not lock {self.workdir}: its lock file {self.path} keeps changing"
            )
        except BaseException:
            self._remove_created()
            raise

    def _take(self, fd: int, *, wait: bool) -> None:
        """Holds ``fd`` (our new or taken-over lock file) and writes us into it."""
        # A run checking our fresh file may hold its flock for an instant: wait that out.
        deadline = time.monotonic() + (2.0 if wait else 0.0)
        while _try_flock(fd) is False and time.monotonic() < deadline:
            time.sleep(0.01)
        data = json.dumps(_holder_info()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd

    def _take_over_if_stale(self, log) -> bool:
        """With the lock file present: takes it over if its run is dead; refuses if it lives;
        False to try creating it again (it was released meanwhile)."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            flocked = _try_flock(fd)
            if not _same_file(fd, self.path):  # Released (unlinked) between open and flock.
                os.close(fd)
                return False
            holder = _read_holder(fd)
            stale = (
                flocked is not False
                and holder is not None
                and holder.get("host") == socket.gethostname()
                and isinstance(holder.get("pid"), int)
                and holder["pid"] > 0
                and not _pid_alive(holder["pid"])
            )
            if not stale:
                raise WorkdirLocked(self._refusal(holder, flocked))
            self._take(fd, wait=False)
        except BaseException:
            if self._fd != fd:
                os.close(fd)
            raise
        log(
            f"workdir lock: took over {self.path} from process {holder['pid']} on "
            f"{holder['host']}, which is no longer running"
        )
        return True

    def _refusal(self, holder: dict | None, flocked: bool | None) -> str:
        if holder is None:
            return (
                f"workdir {self.workdir} is locked by {self.path}, which names no process (a run "
                f"starting this instant, or one that died starting); if no run uses this "
                f"workdir, delete {self.path}"
            )
        text = f"workdir {self.workdir} is in use by {_describe(holder)}"
        if holder.get("host") == socket.gethostname() or flocked is False:  # Known to be alive.
            return f"{text}; wait for it to end, stop it, or choose another --workdir"
        return (
            f"{text}; if that run has ended (it cannot be checked from this host), delete "
            f"{self.path}, or choose another --workdir"
        )

    def release(self) -> None:
        """Drops the lock (deletes the file) if held; safe to call twice. Folders that
        ``acquire`` created for the workdir and nothing else wrote to are removed again."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                os.rmdir(folder)
            except OSError:  # Not empty: the run wrote to it.
                break
        self._created = []

    def __enter__(self) -> WorkdirLock:
        return self.acquire() if not self.held else self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> dict | None:
    try:
        holder = json.loads(os.pread(fd, 65536, 0).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def read_holder(workdir: str) -> dict | None:
    """Who holds ``workdir``'s lock (``pid``, ``host``, ``started``, ``command``), or None."""
    try:
        with open(os.path.join(workdir, LOCK_FILE), "rb") as f:
            holder = json.loads(f.read().decode() or "null")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


@contextlib.contextmanager
def hold(workdir: str, log: Callable[[str], None] = print) -> Iterator[WorkdirLock | None]:
    """Holds ``workdir``'s lock for a run of one or several processes: process 0 takes it (or
    raises ``WorkdirLocked``), every other process learns the outcome and raises too."""
    import jax
    import numpy as np

    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir).acquire(log)
        except WorkdirLocked as e:
            error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
        if not ok and error is None:
            error = WorkdirLocked(
                f"workdir {os.path.abspath(workdir)} is in use by another run (process 0 says which)"
            )
    if error is not None:
        raise error
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
