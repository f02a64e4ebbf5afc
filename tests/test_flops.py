"""FLOPs from XLA's cost analysis, checked against analytic counts, and the peak table / MFU;
the training log's FLOPs and rates."""

import functools
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from trained_run import tiny_config

from jaxseg import flops, models, parallel, training
from jaxseg.training import loop


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


def _sharded_operands():
    """``a [16 * devices, 64]`` sharded by rows over every device, ``b [64, 32]`` replicated."""
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs several (fake) devices; conftest asks for 8")
    mesh = Mesh(np.array(devices), ("data",))
    a = jax.device_put(
        jnp.ones((16 * len(devices), 64)), NamedSharding(mesh, PartitionSpec("data"))
    )
    b = jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, PartitionSpec()))
    return devices, a, b


def test_sharded_step_counts_per_device():
    devices, a, b = _sharded_operands()
    rows = a.shape[0]
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


def test_a_scan_body_counts_once_unless_a_count_fn_is_given():
    a, b = jnp.ones((4, 32, 64)), jnp.ones((64, 16))

    def scanned(a, b):  # Four 32x64 @ 64x16 products in a loop.
        return jax.lax.scan(lambda c, x: (c + x @ b, None), jnp.zeros((32, 16)), a)[0]

    whole = 2 * 4 * 32 * 64 * 16
    compiled, count = flops.step_flops(scanned, a, b)
    assert count < whole / 2  # XLA's cost analysis: the body once, not four times.
    unrolled = lambda a, b: jnp.sum(a @ b, axis=0)
    compiled, count = flops.step_flops(scanned, a, b, count_fn=unrolled)
    assert count == pytest.approx(whole, rel=0.01)
    np.testing.assert_allclose(compiled(a, b), np.full((32, 16), 256.0))


def test_a_count_fn_is_divided_over_the_devices():
    devices, a, b = _sharded_operands()
    rows = a.shape[0]
    matmul = jax.jit(lambda a, b: a @ b)
    compiled, count = flops.step_flops(matmul, a, b, count_fn=matmul)
    assert count * flops.num_devices(compiled) == pytest.approx(2 * rows * 64 * 32, rel=0.01)


class Writer:
    def __init__(self):
        self.records = []

    def scalars(self, step, split, values):
        self.records.append((step, split, values))


def _training_log(config, devices):
    """A ``_TrainLog``, the train step, state and a batch, set up as the training loop does."""
    config = training.complete_config(config)
    mesh = parallel.data_mesh(devices)
    setup = training.resolve(config, mesh)
    tx, schedule = training.create_optimizer(config)
    replicated, sharded = parallel.shardings(mesh)
    state = jax.device_put(training.create_train_state(config, setup, tx), replicated)
    train_fn = jax.jit(
        functools.partial(training.train_step, config=config, aug=setup.augment),
        in_shardings=(replicated, sharded),
        out_shardings=(replicated, replicated),
    )
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8),
             "label": rng.integers(0, 5, (8, 32, 32)).astype(np.int32)}  # fmt: skip
    batch = parallel.global_batch(batch, sharded)
    log = loop._TrainLog(config, schedule, Writer(), 0, setup.augment, (replicated, sharded))
    return log, train_fn, state, batch


@pytest.mark.parametrize("devices", [1, 8], ids=["one_device", "eight_devices"])
def test_logged_gflop_per_step_counts_every_micro_batch(devices, capsys):
    # XLA counts the scan over micro-batches once: the log counts the step without it.
    if len(jax.devices()) < devices:
        pytest.skip("needs the conftest's 8 fake devices")
    logged = {}
    for k in (1, 4):
        config = tiny_config(grad_accum_steps=k, batch_size=8)
        log, train_fn, state, batch = _training_log(config, jax.devices()[:devices])
        log.compiled(train_fn, state, batch)
        out = capsys.readouterr().out
        line = re.search(r"train step: ([\d.e+-]+) GFLOP on (\d+) device", out)
        assert line and int(line.group(2)) == devices, out
        logged[k] = float(line.group(1))
        assert log.cost[0] * devices / 1e9 == pytest.approx(logged[k], rel=1e-3)
    assert logged[4] == pytest.approx(logged[1], rel=0.05), logged


def test_rates_leave_out_compiling_evaluating_and_saving():
    now = [0.0]
    config = ml_collections.ConfigDict({"batch_size": 4, "dtype": "float32", "grad_accum_steps": 1})
    writer = Writer()
    log = loop._TrainLog(config, lambda step: 0.1, writer, 0, None, None, clock=lambda: now[0])
    step_fn = jax.jit(lambda state, batch: (state + 1, {"loss": jnp.mean(batch)}))
    state, batch = jnp.zeros(()), jnp.ones((4, 8))
    now[0] = 100.0  # Compiling ends at t = 100 s.
    step_fn = log.compiled(step_fn, state, batch)
    for _ in range(2):
        state, metrics = step_fn(state, batch)
    now[0] = 102.0  # Steps 1 and 2: 1 s each.
    log.write(2, metrics)
    now[0] = 150.0  # An evaluation or a checkpoint save after step 2 (the loop restarts then).
    log.restart(2)
    now[0] = 156.0  # Steps 3 to 5: 2 s each.
    log.write(5, metrics)
    (step2, split, first), (step5, _, second) = writer.records
    assert (step2, step5, split) == (2, 5, "train")
    assert first["images_per_second"] == pytest.approx(4.0)
    assert second["images_per_second"] == pytest.approx(2.0)
    step_flops, devices = log.cost
    assert first["tflops_per_s"] == pytest.approx(step_flops * devices / 1.0 / 1e12)
    assert second["tflops_per_s"] == pytest.approx(step_flops * devices / 2.0 / 1e12)
