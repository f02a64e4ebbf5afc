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

Off: ``JAXSEG_COMPILE_CACHE=0`` (or ``false``, ``off``, ``no``), or ``enable(False)``.

Only compilations that take at least ``min_compile_time_secs`` (JAX's default: 1 s) are
written, so small helper functions do not fill the folder. The cache is trusted code: do not
point it at a folder other users can write to (JAX's own warning).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = "JAXSEG_COMPILE_CACHE"
_OFF = ("0", "false", "off", "no")
_ON = ("", "1", "true", "on", "yes")


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxseg/xla``, or ``~/.cache/jaxseg/xla`` when it is not set."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxseg" / "xla"


def enable(
    enabled: bool | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    min_compile_time_secs: float | None = None,
) -> Path | None:
    """Turns on JAX's persistent compilation cache; call it before the first compilation.

    Args:
      enabled: ``False`` leaves the cache off; ``None`` reads ``$JAXSEG_COMPILE_CACHE``.
      cache_dir: the folder (created if missing); ``None``: see the module docstring.
      min_compile_time_secs: compilations faster than this are not written (``None``: JAX's
        setting, 1 s by default).

    Returns:
      The cache folder in use, or ``None`` when the cache is off.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if enabled is None:
        enabled = env.lower() not in _OFF
    if not enabled:
        return None
    if cache_dir is None and env.lower() not in _ON:
        cache_dir = env  # The variable names a folder.
    if cache_dir is None:
        cache_dir = jax.config.jax_compilation_cache_dir or default_dir()
    path = Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)

    from jax.experimental.compilation_cache import compilation_cache

    if jax.config.jax_compilation_cache_dir != str(path):
        compilation_cache.reset_cache()  # If it was opened at another folder, reopen it here.
    jax.config.update("jax_compilation_cache_dir", str(path))
    if min_compile_time_secs is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_secs)
    return path


def is_enabled() -> bool:
    """Whether JAX will read and write a persistent compilation cache in this process."""
    return bool(jax.config.jax_compilation_cache_dir) and jax.config.jax_enable_compilation_cache


def entries(cache_dir: str | os.PathLike | None = None) -> int:
    """Number of executables stored in ``cache_dir`` (default: the folder in use, else 0)."""
    folder = cache_dir or jax.config.jax_compilation_cache_dir
    if not folder or not Path(folder).is_dir():
        return 0
    return sum(1 for p in Path(folder).iterdir() if p.name.endswith("-cache"))
