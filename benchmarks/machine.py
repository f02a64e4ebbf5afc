"""The machine a benchmark ran on, recorded with its results, and how busy it was.

Each benchmark reads the 1-minute load average first thing, before it imports jax or torch or
compiles anything (which would raise it), warns when that is above :data:`BUSY_PER_CORE` per
core, and records it with the load at the end (:func:`load_record`). Importing this module
does no work: jax and numpy are imported by :func:`machine_info`.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# The 1-minute load average per core above which the timings are not of a quiet machine.
BUSY_PER_CORE = 0.5


def warn_if_busy(load_1m: float) -> bool:
    """Prints a warning (stderr) when ``load_1m``, read before any work, is above 0.5 per core."""
    cores = os.cpu_count() or 1
    busy = load_1m > BUSY_PER_CORE * cores
    if busy:
        print(
            f"WARNING: the 1-minute load average was {load_1m:.2f} on {cores} cores at the start "
            f"(above {BUSY_PER_CORE} per core): other work is running, so the timings will be "
            "low and noisy. Rerun on a quiet machine for figures to publish.",
            file=sys.stderr,
            flush=True,
        )
    return busy


def load_record(load_at_start: float) -> dict:
    """The 1-minute load average at the start (read before any work) and now, at the end."""
    cores = os.cpu_count() or 1
    return {
        "load_average_1m_start_end": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "busy_at_start": load_at_start > BUSY_PER_CORE * cores,
    }


def machine_info(**extra) -> dict:
    """CPU model, core count, platform, Python/jax/numpy versions, devices, plus ``extra``."""
    import jax
    import numpy as np

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "devices": [str(d) for d in jax.devices()],
        **extra,
    }
