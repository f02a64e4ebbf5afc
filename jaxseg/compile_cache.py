"""JAX's persistent compilation cache, on by default, under the user's cache folder.

Every ``jaxseg`` command and notebook calls :func:`enable` before compiling anything, so the
second start of ``train``, ``predict`` or ``evaluate`` for the same model, shapes and JAX
version loads its executables from disk instead of compiling them again.

Where (first that applies):

1. ``enable(cache_dir=...)``;
2. ``$JAXSEG_COMPILE_CACHE`` set to a path;
3. ``$JAX_COMPILATION_CACHE_DIR`` or an earlier ``jax.config.update("jax_compilation_cache_dir")``
   (left as it is);
4. ``$XDG_CACHE_HOME/jaxseg/xla``, else ``~/.cache/jaxseg/xla``.

A local folder is created if missing. A URL (any ``scheme://``, e.g. ``gs://bucket/jaxseg-xla``)
is handed to JAX as it is, for JAX's own file layer (``etils.epath``) to open.

Off: ``JAXSEG_COMPILE_CACHE=0`` (or ``false``, ``off``, ``no``), ``JAX_ENABLE_COMPILATION_CACHE=0``,
or ``enable(False)``: JAX's ``jax_enable_compilation_cache`` is set to False, so the cache stays
off even with ``$JAX_COMPILATION_CACHE_DIR`` set or after an earlier :func:`enable` in the same
process (a later ``enable()`` turns it on again).

Several hosts (a multi-process run): JAX writes cache entries from process 0 only, and every
process reads them, so point every host at one shared folder (a network file system or a
bucket URL, through ``$JAXSEG_COMPILE_CACHE``); with a folder per host the other hosts never
find an entry and compile every time.

Only compilations that take at least ``min_compile_time_secs`` (JAX's default: 1 s) are
written, so small helper functions do not fill the folder. The cache is trusted code: do not
point it at a folder other users can write to (JAX's own warning).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax

ENV_VAR = "JAXSEG_COMPILE_CACHE"
_OFF = ("0", "false", "off", "no")
_ON = ("", "1", "true", "on", "yes")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxseg/xla``, or ``~/.cache/jaxseg/xla`` when it is not set."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxseg" / "xla"


def is_url(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(os.fspath(location)))


def enable(
    enabled: bool | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    min_compile_time_secs: float | None = None,
) -> Path | str | None:
    """Turns JAX's persistent compilation cache on (or off); call it before the first compilation.

    Args:
      enabled: ``False`` turns the cache off; ``None`` reads ``$JAXSEG_COMPILE_CACHE`` (and
        JAX's ``$JAX_ENABLE_COMPILATION_CACHE``).
      cache_dir: a folder (created if missing) or a URL (used as it is); ``None``: see the
        module docstring.
      min_compile_time_secs: compilations faster than this are not written (``None``: JAX's
        setting, 1 s by default).

    Returns:
      The cache folder in use (a ``Path``, or the URL as a string), or ``None`` when it is off.
    """
    from jax.experimental.compilation_cache import compilation_cache

    env = os.environ.get(ENV_VAR, "").strip()
    if enabled is None:
        jax_env = os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "").strip().lower()
        enabled = env.lower() not in _OFF and jax_env not in (*_OFF, "f", "n")
    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()  # Forget a cache opened (or looked up) before.
        return None
    if cache_dir is None and env.lower() not in _ON:
        cache_dir = env  # The variable names a folder or a URL.
    if cache_dir is None:
        cache_dir = jax.config.jax_compilation_cache_dir or default_dir()
    if is_url(cache_dir):
        location = os.fspath(cache_dir)
    else:
        location = Path(cache_dir).expanduser()
        location.mkdir(parents=True, exist_ok=True)

    if (
        jax.config.jax_compilation_cache_dir != str(location)
        or not jax.config.jax_enable_compilation_cache
    ):
        compilation_cache.reset_cache()  # Opened elsewhere, or found off: reopen it here.
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(location))
    if min_compile_time_secs is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_secs)
    return location


def is_enabled() -> bool:
    """Whether JAX will read and write a persistent compilation cache in this process."""
    return bool(jax.config.jax_compilation_cache_dir) and jax.config.jax_enable_compilation_cache


def entries(cache_dir: str | os.PathLike | None = None) -> int:
    """Executables stored in ``cache_dir`` (default: the folder in use; 0 for none or a URL)."""
    folder = cache_dir or jax.config.jax_compilation_cache_dir
    if not folder or is_url(folder) or not Path(folder).is_dir():
        return 0
    return sum(1 for p in Path(folder).iterdir() if p.name.endswith("-cache"))
