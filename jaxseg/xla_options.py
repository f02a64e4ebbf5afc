"""XLA compile options that speed up jaxseg's steps on CPU; empty on GPU and TPU.

    step = jax.jit(train_step, ..., compiler_options=xla_options.compiler_options())

XLA:CPU (jaxlib 0.10) hands convolutions and dots to YNNPACK by default. YNNPACK's forward
and input-gradient convolutions are fast, but its weight-gradient convolution is 3-5x slower
than XLA's own (Eigen) one: 237 ms against 90 ms for a 3x3, 64->64 channel layer at 128x128,
batch 4 (``benchmarks/results/cpu_levers.json``). Keeping YNNPACK for dots and letting XLA
run the convolutions, with the same results up to float32 round-off, makes the paper U-Net's
train step and forward pass 2x faster on a 2-core AMD EPYC (the seed U-Net's step 1.04x there,
1.4-2.2x on an Intel Xeon), and the large-image benchmark's valid U-Net forward (16 base
features, 956x956 tiles) 2.4x faster. The train and eval steps, ``inference.Predictor`` and
``serving.ExportedModel`` compile with them.

Off: ``JAXSEG_XLA_CPU_OPTIONS=0``. An ``xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS``
wins over this module, and a jaxlib that does not know the option gets no options.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

ENV_VAR = "JAXSEG_XLA_CPU_OPTIONS"
YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
# YNNPACK for dots only; convolutions go to XLA's own emitter (Eigen).
CPU_OPTIONS = {YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def compiler_options(platform: str | None = None) -> dict[str, str]:
    """Options for ``jax.jit(..., compiler_options=...)`` on ``platform`` (default: JAX's backend)."""
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "off", "no"):
        return {}
    if (platform or jax.default_backend()) != "cpu":
        return {}
    if YNN_FUSION_TYPE in os.environ.get("XLA_FLAGS", ""):
        return {}  # The user chose; do not override.
    return dict(CPU_OPTIONS) if _supported() else {}


@functools.cache
def _supported() -> bool:
    """Whether this jaxlib's CPU compiler accepts :data:`CPU_OPTIONS` (a tiny compile, once).

    The probe runs on a CPU device whatever the default backend is: the options are XLA:CPU's
    (another backend's compiler is no test of them), and CPU work on a GPU host asks for them.
    """
    try:
        x = jax.device_put(np.float32(1.0), jax.devices("cpu")[0])
        jax.jit(lambda x: x + 1).lower(x).compile(compiler_options=CPU_OPTIONS)
    except Exception:  # noqa: BLE001 - no CPU backend, an unknown option or enum value.
        return False
    return True
