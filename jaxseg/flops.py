"""FLOPs of a compiled step (XLA's cost analysis), device peaks, and model FLOPs utilisation.

    compiled, flops = step_flops(train_fn, state, batch)  # Per-device FLOPs of one step.
    peak = peak_flops()                                      # This device's dense peak, or None.
    utilisation = mfu(flops, step_seconds, peak)

XLA counts a multiply-add as two FLOPs: the paper U-Net's forward at 572x572 (150.4 GMAC) comes
out at 301.1 GFLOP. The count is per device: an SPMD-partitioned step reports what one device
runs, so the whole step is ``flops * num_devices(compiled)``.

XLA's cost analysis counts the body of a loop (``lax.scan``, ``fori_loop``, ``while_loop``) once,
whatever its trip count: a step that scans over ``k`` micro-batches (gradient accumulation) is
counted about ``k`` times too low. :func:`step_flops` takes ``count_fn``, the same step without
the loop (e.g. ``grad_accum_steps=1`` on the same global batch), which it lowers but does not
compile, and counts that instead.

With ``remat=True`` (activation checkpointing) the backward pass recomputes the forward. On GPU
and TPU the compiled step's count then includes that recomputation (as does a lowered
``count_fn``'s on every platform; XLA:CPU's compiled count leaves it out), so the "MFU" logged
is hardware FLOPs utilisation rather than model FLOPs utilisation: higher by up to a third
(a forward is about a third of a forward + backward).

Peaks are the vendors' dense figures (no 2:4 structured sparsity) in FLOP/s per device as JAX
sees it (one device per GPU or TPU chip). Which column applies depends on the compute dtype and
the matmul precision: with JAX's default precision, float32 dots and convolutions run as TF32
on NVIDIA tensor cores (Ampere and later) and as one bfloat16 pass on TPU (JAX's "Matmul
precision" guide), so :func:`peak_flops` counts float32 at default precision against those
columns; ``precision="highest"`` counts it against true float32.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import numpy as np

TERA = 1e12


@dataclasses.dataclass(frozen=True)
class DevicePeak:
    """Dense peak TFLOP/s of one device; ``None`` where the vendor publishes no figure."""

    name: str
    bf16: float
    tf32: float | None  # NVIDIA tensor-core TF32; None on TPU.
    fp32: float | None  # True float32 (CUDA cores); not published for TPUs.
    source: str


# Dense figures. NVIDIA's datasheets print tensor-core numbers "with sparsity" (2:4); the dense
# figure is half of that, and is what is listed here.
PEAKS: dict[str, DevicePeak] = {
    "h100_sxm": DevicePeak(
        name="NVIDIA H100 SXM",
        bf16=989.4,
        tf32=494.7,
        fp32=66.9,
        source="NVIDIA H100 datasheet: BF16 1,979 / TF32 989 TFLOPS with sparsity, FP32 67",
    ),
    "h100_pcie": DevicePeak(
        name="NVIDIA H100 PCIe",
        bf16=756.5,
        tf32=378.0,
        fp32=51.2,
        source="NVIDIA H100 datasheet: BF16 1,513 / TF32 756 TFLOPS with sparsity, FP32 51",
    ),
    "h100_nvl": DevicePeak(
        name="NVIDIA H100 NVL",
        bf16=835.5,
        tf32=417.5,
        fp32=60.0,
        source="NVIDIA H100 datasheet: BF16 1,671 / TF32 835 TFLOPS with sparsity, FP32 60",
    ),
    "h200_sxm": DevicePeak(
        name="NVIDIA H200 SXM",
        bf16=989.4,
        tf32=494.7,
        fp32=66.9,
        source="NVIDIA H200 datasheet: BF16 1,979 / TF32 989 TFLOPS with sparsity, FP32 67",
    ),
    "h200_nvl": DevicePeak(
        name="NVIDIA H200 NVL",
        bf16=835.5,
        tf32=417.5,
        fp32=60.0,
        source="NVIDIA H200 datasheet: BF16 1,671 / TF32 835 TFLOPS with sparsity, FP32 60",
    ),
    "a100": DevicePeak(
        name="NVIDIA A100 (SXM4 and PCIe)",
        bf16=312.0,
        tf32=156.0,
        fp32=19.5,
        source="NVIDIA A100 datasheet: BF16 312 (624 sparse), TF32 156 (312 sparse), FP32 19.5",
    ),
    "tpu_v4": DevicePeak(
        name="TPU v4",
        bf16=275.0,
        tf32=None,
        fp32=None,
        source="Cloud TPU v4 docs: 275 TFLOPs per chip (bf16 or int8)",
    ),
    "tpu_v5e": DevicePeak(
        name="TPU v5e",
        bf16=197.0,
        tf32=None,
        fp32=None,
        source="Cloud TPU v5e docs: 197 TFLOPs per chip (bf16)",
    ),
    "tpu_v5p": DevicePeak(
        name="TPU v5p",
        bf16=459.0,
        tf32=None,
        fp32=None,
        source="Cloud TPU v5p docs: 459 TFLOPs per chip (bf16)",
    ),
    "tpu_v6e": DevicePeak(
        name="TPU v6e (Trillium)",
        bf16=918.0,
        tf32=None,
        fp32=None,
        source="Cloud TPU v6e docs: 918 TFLOPs per chip (bf16)",
    ),
}

# ``device.device_kind`` -> PEAKS key; first match wins, so the specific names come first.
_KINDS = (
    (r"h100.*pcie", "h100_pcie"),
    (r"h100.*nvl", "h100_nvl"),
    (r"h100", "h100_sxm"),
    (r"h200.*nvl", "h200_nvl"),
    (r"h200", "h200_sxm"),
    (r"a100", "a100"),
    (r"tpu v4", "tpu_v4"),
    (r"tpu v5 ?(lite|e)", "tpu_v5e"),
    (r"tpu v5p?$", "tpu_v5p"),
    (r"tpu v6 ?(lite|e)", "tpu_v6e"),
)


def device_peak(device: Any = None) -> DevicePeak | None:
    """The :class:`DevicePeak` of ``device`` (default: ``jax.devices()[0]``), or ``None`` if unknown.

    CPUs are unknown: their peak depends on the core count, clock and vector units in use.
    """
    kind = (device or jax.devices()[0]).device_kind.lower()
    for pattern, key in _KINDS:
        if re.search(pattern, kind):
            return PEAKS[key]
    return None


def peak_flops(
    device: Any = None, dtype: Any = np.float32, precision: str = "default"
) -> float | None:
    """Dense peak FLOP/s of ``device`` for ``dtype`` compute, or ``None`` if it is not known.

    Args:
      device: a JAX device (default: the first).
      dtype: the model's compute dtype (``None`` means float32, as in jaxseg's models).
      precision: ``'default'`` (JAX's default matmul precision: float32 runs as TF32 on NVIDIA
        tensor cores and as bfloat16 on TPU) or ``'highest'`` (true float32).
    """
    if precision not in ("default", "highest"):
        raise ValueError(f"precision must be 'default' or 'highest'; got {precision!r}")
    peak = device_peak(device)
    if peak is None:
        return None
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.itemsize <= 2:  # bfloat16, float16: tensor cores / MXU at their full rate.
        tflops = peak.bf16
    elif precision == "highest":
        tflops = peak.fp32
    else:
        tflops = peak.tf32 if peak.tf32 is not None else peak.bf16
    return None if tflops is None else tflops * TERA


def compiled_flops(compiled: Any) -> float | None:
    """Per-device FLOPs of a compiled (or lowered) computation from XLA's cost analysis."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per computation.
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    flops = float(analysis["flops"])
    return flops if flops > 0 else None


def num_devices(compiled: Any) -> int:
    """Devices a compiled computation runs on (1 for an unsharded one)."""
    shardings = jax.tree.leaves(compiled.input_shardings)
    return max((len(s.device_set) for s in shardings), default=1)


def step_flops(fn: Any, *args, count_fn: Any = None, **kwargs) -> tuple[Any, float | None]:
    """Compiles ``fn`` (a ``jax.jit`` function, or a plain one to jit) for ``args``.

    Args:
      fn: the step to compile.
      *args: its arguments (arrays, or ``jax.ShapeDtypeStruct`` with shardings).
      count_fn: what to count instead of ``fn``, lowered (not compiled) with the same arguments:
        ``fn`` without a loop whose body XLA would count once (see the module docstring). Its
        lowered module is the whole, unpartitioned computation, so its count is divided by the
        devices ``fn`` runs on.
      **kwargs: keyword arguments of ``fn``.

    Returns:
      ``(compiled, flops)``: the compiled executable, which can be called in place of ``fn``
      with arguments of the same shapes and shardings (so the step is compiled once), and the
      per-device FLOPs of one call (``None`` if XLA reports none).
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    compiled = jitted.lower(*args, **kwargs).compile()
    if count_fn is None:
        return compiled, compiled_flops(compiled)
    counted = count_fn if hasattr(count_fn, "lower") else jax.jit(count_fn)
    whole = compiled_flops(counted.lower(*args, **kwargs))
    return compiled, None if whole is None else whole / num_devices(compiled)


def mfu(flops: float | None, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: ``flops`` per device done in ``seconds``, over the device peak.

    ``None`` when the FLOPs or the peak is unknown (e.g. on CPU).
    """
    if not flops or not peak or seconds <= 0:
        return None
    return flops / seconds / peak


def throughput_metrics(
    flops: float | None, seconds_per_step: float, devices: int = 1, peak: float | None = None
) -> dict[str, float]:
    """The per-log-step numbers for ``metrics.jsonl``: ``tflops_per_s`` (all devices) and ``mfu``.

    Args:
      flops: per-device FLOPs of one step (from :func:`step_flops`).
      seconds_per_step: measured wall time of one step.
      devices: devices the step runs on (:func:`num_devices`).
      peak: per-device peak FLOP/s (:func:`peak_flops`); without it ``mfu`` is left out.
    """
    if not flops or seconds_per_step <= 0:
        return {}
    out = {"tflops_per_s": flops * devices / seconds_per_step / TERA}
    utilisation = mfu(flops, seconds_per_step, peak)
    if utilisation is not None:
        out["mfu"] = utilisation
    return out
