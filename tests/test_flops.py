"""FLOPs from XLA's cost analysis, checked against analytic counts, and the peak table / MFU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxseg import flops, models


def unet_forward_macs(size, in_channels=1, num_classes=2, base=64, depth=4):
    """Multiply-adds of the paper U-Net (valid 3x3 convs, 2x2 up-convs, 1x1 head), by layer shapes."""
    widths = [base * 2**i for i in range(depth + 1)]
    macs, s, c = 0, size, in_channels
    for level, w in enumerate(widths):
        for _ in range(2):  # Two valid 3x3 convolutions: each loses a 1-pixel border.
            s -= 2
            macs += s * s * 9 * c * w
            c = w
        if level < depth:
            s //= 2  # 2x2 max pooling.
    for w in reversed(widths[:-1]):
        s *= 2  # 2x2 stride-2 up-convolution: one c-long dot per output pixel and channel.
        macs += s * s * c * w
        c = 2 * w  # Concatenated with the cropped skip.
        for _ in range(2):
            s -= 2
            macs += s * s * 9 * c * w
            c = w
    return macs + s * s * c * num_classes, s


def test_paper_unet_forward_flops_match_its_150_gmac():
    macs, out_size = unet_forward_macs(572)
    assert out_size == 388
    assert macs == pytest.approx(150.4e9, rel=1e-3)  # The figure quoted for the paper's U-Net.

    model = models.create("unet", 2)
    x = jax.ShapeDtypeStruct((1, 572, 572, 1), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    # The lowered (pre-optimisation) module's cost analysis: no compilation, no allocation.
    xla_flops = flops.compiled_flops(jax.jit(model.apply).lower(variables, x))
    # XLA counts a multiply-add as 2 FLOPs; bias, ReLU and pooling add well under 1%.
    assert xla_flops / 2 == pytest.approx(macs, rel=0.02)


def test_step_flops_returns_a_usable_executable_and_counts_a_matmul():
    f = lambda a, b: a @ b
    a, b = jnp.ones((32, 64)), jnp.ones((64, 16))
    compiled, count = flops.step_flops(f, a, b)
    assert count == 2 * 32 * 64 * 16
    np.testing.assert_allclose(compiled(a, b), np.full((32, 16), 64.0))
    assert flops.num_devices(compiled) == 1


def test_sharded_step_counts_per_device():
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs several (fake) devices; conftest asks for 8")
    mesh = Mesh(np.array(devices), ("data",))
    rows = 16 * len(devices)
    a = jax.device_put(jnp.ones((rows, 64)), NamedSharding(mesh, PartitionSpec("data")))
    b = jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, PartitionSpec()))
    compiled, count = flops.step_flops(jax.jit(lambda a, b: a @ b), a, b)
    n = flops.num_devices(compiled)
    assert n == len(devices)
    assert count * n == 2 * rows * 64 * 32


class FakeDevice:
    def __init__(self, kind):
        self.device_kind = kind


@pytest.mark.parametrize(
    "kind, key",
    [
        ("NVIDIA H100 80GB HBM3", "h100_sxm"),
        ("NVIDIA H100 PCIe", "h100_pcie"),
        ("NVIDIA H100 NVL", "h100_nvl"),
        ("NVIDIA H200", "h200_sxm"),
        ("NVIDIA H200 NVL", "h200_nvl"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100-PCIE-40GB", "a100"),
        ("TPU v4", "tpu_v4"),
        ("TPU v5 lite", "tpu_v5e"),
        ("TPU v5e", "tpu_v5e"),
        ("TPU v5", "tpu_v5p"),
        ("TPU v5p", "tpu_v5p"),
        ("TPU v6 lite", "tpu_v6e"),
    ],
)
def test_device_kinds_map_to_their_peaks(kind, key):
    assert flops.device_peak(FakeDevice(kind)) is flops.PEAKS[key]


def test_peak_columns_follow_dtype_and_precision():
    h100, tpu = FakeDevice("NVIDIA H100 80GB HBM3"), FakeDevice("TPU v6 lite")
    assert flops.peak_flops(h100, jnp.bfloat16) == pytest.approx(989.4e12)
    # float32 at JAX's default matmul precision runs as TF32 on tensor cores.
    assert flops.peak_flops(h100, None) == pytest.approx(494.7e12)
    assert flops.peak_flops(h100, np.float32, "highest") == pytest.approx(66.9e12)
    assert flops.peak_flops(tpu, np.float32) == pytest.approx(918e12)  # One bf16 pass on TPU.
    assert flops.peak_flops(tpu, np.float32, "highest") is None  # No published figure.
    assert flops.peak_flops(FakeDevice("cpu")) is None
    for peak in flops.PEAKS.values():  # Dense figures: bf16 is twice TF32 on NVIDIA parts.
        if peak.tf32:
            assert peak.bf16 == pytest.approx(2 * peak.tf32, rel=0.01)


def test_mfu_and_throughput_metrics():
    assert flops.mfu(1e12, 0.5, 4e12) == pytest.approx(0.5)
    assert flops.mfu(None, 0.5, 4e12) is None and flops.mfu(1e12, 0.5, None) is None
    m = flops.throughput_metrics(1e12, 0.5, devices=8, peak=4e12)
    assert m == {"tflops_per_s": pytest.approx(16.0), "mfu": pytest.approx(0.5)}
    assert flops.throughput_metrics(1e12, 0.5) == {"tflops_per_s": pytest.approx(2.0)}
    assert flops.throughput_metrics(None, 0.5) == {}
