"""The machine a benchmark ran on, recorded with its results."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import jax
import numpy as np


def machine_info(**extra) -> dict:
    """CPU model, core count, platform, Python/jax/numpy versions, devices, plus ``extra``."""
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
