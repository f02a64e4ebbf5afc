"""Training: configs, errors, sharding parity, learning, resume, preemption, multi-process."""

import functools
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trained_run import load_config

from jaxseg import augment, checkpoint, data, parallel, summary, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    data.get_builder(data.get_spec("synthetic_shapes"), data_dir=d)
    return d


def tiny_config(data_dir, **overrides):
    config = load_config("unet.py")
    config.model_kwargs = {"padding": "SAME", "depth": 2, "base_features": 4}
    config.data_dir = data_dir
    config.input_size = (32, 32)
    config.batch_size = 8
    config.eval_batch_size = 40
    config.num_train_steps = 12
    config.eval_every_steps = 6
    config.checkpoint_every_steps = 4
    config.log_every_steps = 2
    config.warmup_steps = 2
    config.num_log_images = 2
    config.update(overrides)
    return config


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if not p.endswith("__init__.py")], ids=os.path.basename
)
def test_every_config_builds_its_model_and_dataset(path):
    config = load_config(os.path.basename(path))
    assert config.model and config.dataset and config.batch_size and config.num_train_steps
    assert config.eval_every_steps and config.checkpoint_every_steps and "seed" in config
    assert "manual_dir" in config and "data_dir" in config
    with open(path) as f:
        assert "python -m jaxseg.train --config configs/" in f.read()  # The docstring's command.
    one_device = parallel.data_mesh(jax.devices()[:1])  # The tests' 8 fake devices aside.
    setup = training.resolve(config, one_device)
    assert setup.model is not None and setup.spec.num_classes >= 2
    assert setup.augment == augment.AugmentParams.from_dict(config.augment.to_dict())
    assert setup.host_batch_size == config.batch_size
    training.create_optimizer(config)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"dataset": "coco"}, "unknown dataset 'coco'"),
        ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
        ({"schedule": "step"}, "unknown schedule 'step'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"num_train_steps": -5}, "num_train_steps must be a positive integer"),
        ({"input_size": (32, 0)}, "input_size must be a positive integer"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"grad_accum_steps": 3}, "batch_size must divide by config.grad_accum_steps"),
        (
            {"model_kwargs": {"padding": "VALID", "depth": 2, "base_features": 4}},
            r"input height 32.*nearest valid sizes: 44",
        ),
        ({"model_kwargs": {"depth": 6, "base_features": 4}}, "divisible by 64"),
        ({"class_weights": (1.0, 2.0)}, "needs 5 values"),
    ],
)
def test_bad_configs_get_clear_errors(data_dir, overrides, match):
    with pytest.raises(ValueError, match=match):
        training.resolve(tiny_config(data_dir, **overrides))


def test_batch_not_divisible_by_device_count(data_dir, tmp_path):
    with pytest.raises(
        ValueError, match=r"batch_size=12 must be a positive multiple of the device count \(8\)"
    ):
        training.train_and_evaluate(tiny_config(data_dir, batch_size=12), str(tmp_path))


def _one_step(config, devices, batch):
    setup = training.resolve(config)
    tx, _ = training.create_optimizer(config)
    mesh = parallel.data_mesh(devices)
    replicated, sharded = parallel.shardings(mesh)
    state = jax.device_put(training.create_train_state(config, setup, tx), replicated)
    aug = augment.AugmentParams.from_dict(config.augment.to_dict())
    step = jax.jit(
        functools.partial(training.train_step, config=config, aug=aug),
        in_shardings=(replicated, sharded),
    )
    state, metrics = step(state, parallel.global_batch(batch, sharded))
    return jax.device_get(state.params), jax.device_get(metrics)


def plain_sgd_config(data_dir, **overrides):
    """SGD without momentum, decay or clipping: parameters move exactly by the gradient."""
    return tiny_config(data_dir, optimizer="sgd", schedule="constant", warmup_steps=0, momentum=0.0,
                       grad_clip_norm=0.0, weight_decay=0.0, learning_rate=0.1, **overrides)  # fmt: skip


def first_train_batch(data_dir):
    spec = data.get_spec("synthetic_shapes")
    loader = data.create_loader(
        spec, "train", batch_size=8, size=(32, 32), train=True, data_dir=data_dir
    )
    return next(iter(loader))


def test_eight_devices_match_one_device(data_dir):
    config = plain_sgd_config(data_dir, augment={"flip_h_prob": 0.5, "elastic_prob": 0.5})
    batch = first_train_batch(data_dir)
    params8, metrics8 = _one_step(config, jax.devices(), batch)
    params1, metrics1 = _one_step(config, jax.devices()[:1], batch)
    assert len(jax.devices()) == 8
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=2e-5)  # Summation order.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params8, params1)


def test_gradient_accumulation_matches_one_big_batch(data_dir):
    config = plain_sgd_config(data_dir, augment={})
    batch = first_train_batch(data_dir)
    # Equal-weight micro-batches: the loss is a per-pixel mean, so use a dataset-free check of
    # grads through equal pixel counts (no ignore pixels in synthetic crops).
    params1, m1 = _one_step(config, jax.devices()[:1], batch)
    config.grad_accum_steps = 2
    params2, m2 = _one_step(config, jax.devices()[:1], batch)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params1, params2)


def _uneven_batch(data_dir, seed=0):
    """The first training batch with most pixels of the micro-batch-0 examples ignored and a
    random pixel-weight map: micro-batch 0 (even examples) keeps 32 valid pixels, micro-batch 1
    all 4 x 1024."""
    batch = dict(first_train_batch(data_dir))
    labels = np.array(batch["label"])
    keep = np.zeros(labels.shape[1:], bool)
    keep[:4, :2] = True  # 8 pixels per even example, 32 in micro-batch 0.
    labels[0::2] = np.where(keep, labels[0::2], data.IGNORE_INDEX)
    batch["label"] = labels
    rng = np.random.default_rng(seed)
    batch["weight"] = rng.uniform(0.5, 10.0, labels.shape).astype(np.float32)
    return batch


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"class_weights": (0.5, 1.0, 2.0, 3.0, 4.0)},
        {"loss": {"cross_entropy": 0.0, "dice": 1.0, "focal": 0.0}},
        {"loss": {"cross_entropy": 1.0, "dice": 0.5, "focal": 2.0}, "class_weights": (1.0, 2.0, 1.0, 3.0, 1.0)},
    ],
    ids=["ignored_and_border_weights", "class_weights", "dice", "all_losses"],
)  # fmt: skip
def test_gradient_accumulation_with_uneven_micro_batches_matches_one_big_batch(data_dir, overrides):
    # Every loss is a ratio of sums over the whole batch: accumulation must sum numerators and
    # denominators (and Dice's per-class sums) and divide once, not average micro-batch means.
    config = plain_sgd_config(data_dir, augment={}, **overrides)
    config.learning_rate = 1.0  # Parameters move by exactly the gradient.
    batch = _uneven_batch(data_dir)
    params1, m1 = _one_step(config, jax.devices()[:1], batch)
    config.grad_accum_steps = 2
    params2, m2 = _one_step(config, jax.devices()[:1], batch)
    for name in ("loss", "cross_entropy", "dice", "focal", "grad_norm"):
        np.testing.assert_allclose(m2[name], m1[name], rtol=1e-5, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params1, params2)


def test_gradient_accumulation_on_eight_devices_matches_one_big_batch(data_dir):
    config = plain_sgd_config(data_dir, augment={}, loss={"cross_entropy": 1.0, "dice": 1.0, "focal": 0.0})  # fmt: skip
    config.learning_rate = 1.0
    batch = _uneven_batch(data_dir)
    params1, m1 = _one_step(config, jax.devices()[:1], batch)
    config.grad_accum_steps = 4
    params8, m8 = _one_step(config, jax.devices(), batch)
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), params1, params8)


def test_training_lowers_loss_and_raises_miou(data_dir, tmp_path):
    # A small slice, evaluated on itself: this checks that the loop learns, quickly; how well
    # the default config generalises is measured by the README's run.
    config = tiny_config(data_dir, num_train_steps=80, eval_every_steps=10, checkpoint_every_steps=80,
                         learning_rate=1e-2, log_every_steps=10, input_size=(64, 64), batch_size=16,
                         eval_batch_size=16, train_split="train[:16]", eval_split="train[:16]", augment={},
                         loss={"cross_entropy": 1.0, "dice": 1.0, "focal": 0.0})  # fmt: skip
    config.model_kwargs = {"padding": "SAME", "depth": 3, "base_features": 8}
    final = training.train_and_evaluate(config, str(tmp_path))
    records = summary.read_metrics(str(tmp_path))
    train = [r["loss"] for r in records if r["split"] == "train"]
    evals = [r["mean_iou"] for r in records if r["split"] == "eval"]
    assert train[-1] < 0.9 * train[0], train
    # The step's FLOPs come from XLA's cost analysis; a CPU has no peak in the table: no MFU.
    assert all(r["tflops_per_s"] > 0 and "mfu" not in r for r in records if r["split"] == "train")
    # All-background prediction scores 1/5 of the background IoU (about 0.17).
    assert evals[-1] > max(evals[0] + 0.03, 0.2), evals
    assert final["mean_iou"] == evals[-1]
    assert os.path.exists(tmp_path / "config.json") and glob.glob(
        str(tmp_path / "tensorboard" / "events*")
    )


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    data_dir, tmp_path
):
    config = tiny_config(data_dir, learning_rate=1e12, optimizer="sgd", grad_clip_norm=0.0, warmup_steps=0,
                         schedule="constant", num_train_steps=40)  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step \d+"):
        training.train_and_evaluate(config, str(tmp_path))
    manager = checkpoint.create_manager(str(tmp_path / "checkpoints"), read_only=True)
    for step in manager.all_steps():
        state = training.create_train_state(
            config, training.resolve(config), training.create_optimizer(config)[0]
        )
        restored = checkpoint.restore(manager, step, state)
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored.params))


def test_checkpoint_that_does_not_match_the_model_is_a_clear_error(data_dir, tmp_path):
    training.train_and_evaluate(tiny_config(data_dir, num_train_steps=4), str(tmp_path))
    other = tiny_config(data_dir, num_train_steps=8)
    other.model_kwargs = {"padding": "SAME", "depth": 2, "base_features": 6}
    with pytest.raises(ValueError, match="does not match the model built from the config"):
        training.train_and_evaluate(other, str(tmp_path))


# --- Runs in subprocesses: SIGKILL / SIGTERM and two processes -------------------------------

TRAIN_ARGS = [
    "--config.model_kwargs.base_features=4", "--config.model_kwargs.depth=2",
    "--config.input_size=(32, 32)", "--config.batch_size=8", "--config.eval_batch_size=20",
    "--config.num_train_steps=16", "--config.eval_every_steps=8", "--config.checkpoint_every_steps=4",
    "--config.log_every_steps=2", "--config.warmup_steps=2",
]  # fmt: skip


def _train_cmd(workdir, data_dir, *extra):
    return [sys.executable, "-m", "jaxseg.train", "--config", "configs/unet.py", "--workdir", str(workdir),
            f"--config.data_dir={data_dir}", *TRAIN_ARGS, *extra]  # fmt: skip


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}


def _final_params(workdir, data_dir, step=16):
    config = tiny_config(data_dir, num_train_steps=16)
    config.model_kwargs = {"padding": "SAME", "depth": 2, "base_features": 4}
    state = training.create_train_state(
        config, training.resolve(config), training.create_optimizer(config)[0]
    )
    manager = checkpoint.create_manager(os.path.join(workdir, "checkpoints"), read_only=True)
    assert manager.latest_step() == step
    return jax.device_get(checkpoint.restore(manager, step, state).params)


def _wait_for(path, proc, timeout=240):
    start = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_or_preempted_run_resumes_to_the_same_parameters(data_dir, tmp_path, sig):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(
        _train_cmd(straight, data_dir), cwd=ROOT, env=_env(), check=True, capture_output=True
    )

    proc = subprocess.Popen(_train_cmd(interrupted, data_dir), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    _wait_for(interrupted / "checkpoints" / "4", proc)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, output[-3000:]
        assert "Preempted: saved step" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = subprocess.run(
        _train_cmd(interrupted, data_dir), cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Resumed from step" in resumed.stdout
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
        _final_params(str(straight), data_dir),
        _final_params(str(interrupted), data_dir),
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_and_agree(data_dir, tmp_path):
    port = _free_port()
    procs = []
    for i in range(2):
        env = {
            **_env(),
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i),
        }
        cmd = _train_cmd(tmp_path / "run", data_dir, "--config.num_train_steps=6", "--config.eval_every_steps=6",
                         "--config.checkpoint_every_steps=6")  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    records = summary.read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in records if r["split"] == "eval"] == [6]
    # One global evaluation over both hosts' shards: every validation pixel counted once.
    eval_record = next(r for r in records if r["split"] == "eval")
    assert eval_record["num_pixels"] == 100 * 96 * 96
    assert os.path.isdir(tmp_path / "run" / "checkpoints" / "6")


def test_learning_rate_schedules(data_dir):
    def lr(**kw):
        config = tiny_config(
            data_dir, **{"learning_rate": 1.0, "num_train_steps": 110, "warmup_steps": 10, **kw}
        )
        return training.create_optimizer(config)[1]

    warm = lr(schedule="cosine")
    np.testing.assert_allclose(
        [warm(0), warm(5), warm(10), warm(60), warm(110)], [0, 0.5, 1, 0.5, 0], atol=1e-6
    )
    poly = lr(schedule="polynomial", polynomial_power=2.0, warmup_steps=0)
    np.testing.assert_allclose([poly(0), poly(55), poly(110)], [1, 0.25, 0], atol=1e-6)
    const = lr(schedule="constant", warmup_steps=0)
    assert const(0) == const(100) == 1.0


def test_rerunning_a_finished_run_reports_its_metrics(data_dir, tmp_path):
    config = tiny_config(data_dir, num_train_steps=4, eval_every_steps=4)
    first = training.train_and_evaluate(config, str(tmp_path))
    again = training.train_and_evaluate(config, str(tmp_path))
    assert again["mean_iou"] == first["mean_iou"]


SHARED_ISBI = os.path.join(ROOT, "..", "shared", "data", "isbi2012")


@pytest.mark.skipif(not os.path.isdir(SHARED_ISBI), reason="../shared/data/isbi2012 not present")
def test_valid_unet_on_isbi_with_border_weights_and_elastic_deformation(tmp_path):
    config = load_config("unet_isbi.py")
    config.update(dict(
        manual_dir=SHARED_ISBI, data_dir=str(tmp_path / "tfds"), model_kwargs={"depth": 2, "base_features": 4},
        input_size=(92, 92), eval_size=(512, 512), batch_size=8, eval_batch_size=8, num_train_steps=3,
        eval_every_steps=3, checkpoint_every_steps=3, log_every_steps=1,
    ))  # fmt: skip
    setup = training.resolve(config)
    assert setup.margin == 20 and setup.eval_input_size == (552, 552)  # 552 - 2 * 20 = 512.
    final = training.train_and_evaluate(config, str(tmp_path / "run"))
    records = summary.read_metrics(str(tmp_path / "run"))
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
    assert final["num_pixels"] == 4 * 512 * 512  # Slices 20-23, every pixel once, padding excluded.


def test_bfloat16_training_keeps_float32_parameters_and_loss(data_dir):
    config = plain_sgd_config(data_dir, dtype="bfloat16", augment={})
    params32, metrics32 = _one_step(
        plain_sgd_config(data_dir, augment={}), jax.devices()[:1], first_train_batch(data_dir)
    )
    params16, metrics16 = _one_step(config, jax.devices()[:1], first_train_batch(data_dir))
    assert metrics16["loss"].dtype == np.float32 and np.isfinite(metrics16["loss"])
    assert {leaf.dtype for leaf in jax.tree.leaves(params16)} == {np.dtype(np.float32)}
    np.testing.assert_allclose(metrics16["loss"], metrics32["loss"], rtol=2e-2)  # bf16 rounding.


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_weight_decay_acts_with_every_optimizer(data_dir, optimizer):
    def update(weight_decay):
        config = tiny_config(data_dir, optimizer=optimizer, weight_decay=weight_decay, warmup_steps=0,
                             schedule="constant", learning_rate=0.1)  # fmt: skip
        tx, _ = training.create_optimizer(config)
        params = {"w": jnp.ones(3)}
        updates, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
        return updates["w"]

    assert np.all(update(0.0) == 0) and np.all(
        update(0.5) < 0
    )  # Zero gradient: only decay moves w.
