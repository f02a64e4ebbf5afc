"""Test set-up: eight fake CPU devices, so sharding code runs as it would on a pod slice."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Compile time dominates these small tests; XLA's heavier optimisation passes do not pay off.
jax.config.update("jax_disable_most_optimizations", True)
