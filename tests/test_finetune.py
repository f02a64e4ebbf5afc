"""Starting from other weights: fine-tuning another run into a new head, frozen parameter groups
(their batch statistics included), learning-rate multipliers, and the input normalisation that
training, prediction and export share."""

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trained_run import tiny_config

from jaxseg import checkpoint, data, models, runs, serving, training
from jaxseg.models.geometry import Geometry
from jaxseg.training import frozen as training_frozen
from jaxseg.training import init as training_init


class NormNet(nn.Module):
    """Conv + batch norm 'encoder' and a conv head: enough to test groups and statistics."""

    num_classes: int
    dtype: object = None

    def geometry(self) -> Geometry:
        return Geometry("norm_net")

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Conv(4, (3, 3), name="encoder_conv")(x)
        x = nn.BatchNorm(momentum=0.9, name="encoder_bn")(x, use_running_average=not train)
        x = nn.relu(x)
        x = nn.Conv(4, (3, 3), name="middle")(x)
        return nn.Conv(self.num_classes, (1, 1), name="head")(nn.relu(x))


@pytest.fixture
def norm_net(monkeypatch):
    monkeypatch.setitem(models.MODELS, "norm_net", NormNet)


def _config(tmp_path, **overrides):
    config = tiny_config(model="norm_net", data_dir=str(tmp_path / "tfds"), optimizer="sgd",
                         momentum=0.0, weight_decay=0.0, grad_clip_norm=0.0, schedule="constant",
                         warmup_steps=0, learning_rate=0.1, **overrides)  # fmt: skip
    config.model_kwargs = {}
    config.augment = {}
    return config


def _steps(config, n: int):
    """The state before and after ``n`` SGD steps on fixed synthetic batches."""
    setup = training.resolve(config, jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))
    tx, _ = training.create_optimizer(config)
    state = training.create_train_state(config, setup, tx)
    step = jax.jit(functools.partial(training.train_step, config=config, aug=setup.augment))
    rng = np.random.default_rng(0)
    first = state
    for _ in range(n):
        batch = {"image": rng.random((4, 16, 16, 3), np.float32),
                 "label": rng.integers(0, 5, (4, 16, 16)).astype(np.int32)}  # fmt: skip
        state, _ = step(state, batch)
    return jax.device_get(first), jax.device_get(state)


def test_frozen_group_and_its_batch_statistics_stay_unchanged(norm_net, tmp_path):
    before, after = _steps(_config(tmp_path, frozen=("encoder_*",)), 3)
    for name in ("encoder_conv", "encoder_bn"):
        for a, b in zip(jax.tree.leaves(before.params[name]), jax.tree.leaves(after.params[name])):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(before.batch_stats), jax.tree.leaves(after.batch_stats)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(before.params["head"]["kernel"], after.params["head"]["kernel"])
    # Not frozen: the statistics move.
    free_before, free_after = _steps(_config(tmp_path), 1)
    assert not np.allclose(free_before.batch_stats["encoder_bn"]["mean"],
                           free_after.batch_stats["encoder_bn"]["mean"])  # fmt: skip


def test_learning_rate_multiplier_scales_a_groups_first_update(norm_net, tmp_path):
    base_before, base_after = _steps(_config(tmp_path), 1)
    before, after = _steps(_config(tmp_path, lr_multipliers=(("middle", 0.1),)), 1)
    base = base_after.params["middle"]["kernel"] - base_before.params["middle"]["kernel"]
    scaled = after.params["middle"]["kernel"] - before.params["middle"]["kernel"]
    # Differences of float32 parameters: round-off of ~1e-8 on updates of ~1e-3.
    np.testing.assert_allclose(scaled, 0.1 * base, rtol=1e-4, atol=1e-7)
    assert np.abs(base).max() > 1e-4
    np.testing.assert_allclose(after.params["head"]["kernel"], base_after.params["head"]["kernel"],
                               rtol=1e-6)  # fmt: skip


def test_a_pattern_that_matches_nothing_is_an_error(norm_net, tmp_path):
    with pytest.raises(ValueError, match="'encodr' .* matches no parameter.*encoder_conv"):
        _steps(_config(tmp_path, frozen=("encodr",)), 1)


def _saved_run(workdir, model, num_classes, seed):
    """A workdir holding one checkpoint of ``model`` with ``num_classes`` outputs."""
    variables = model(num_classes).init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)))
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model": "norm_net"}, f)
    manager = checkpoint.create_manager(os.path.join(workdir, "checkpoints"))
    checkpoint.save(manager, 1, {"step": 1, **variables})
    manager.wait_until_finished()
    manager.close()
    return variables


def test_fine_tuning_a_five_class_run_into_a_three_class_head(tmp_path):
    old = _saved_run(str(tmp_path / "five"), NormNet, 5, seed=1)
    fresh = NormNet(3).init(jax.random.key(2), jnp.zeros((1, 16, 16, 3)))
    merged, report = training_init.from_run(str(tmp_path / "five"), dict(fresh), num_classes=3)
    for name in ("encoder_conv", "middle"):
        for a, b in zip(
            jax.tree.leaves(merged["params"][name]), jax.tree.leaves(old["params"][name])
        ):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(merged["batch_stats"]["encoder_bn"]["var"],
                                  old["batch_stats"]["encoder_bn"]["var"])  # fmt: skip
    np.testing.assert_array_equal(
        merged["params"]["head"]["kernel"], fresh["params"]["head"]["kernel"]
    )
    assert report["fresh"] == ["params/head/bias", "params/head/kernel"]
    # init_exclude keeps more fresh.
    merged, report = training_init.from_run(
        str(tmp_path / "five"), dict(fresh), exclude=("middle",), num_classes=3
    )
    np.testing.assert_array_equal(
        merged["params"]["middle"]["kernel"], fresh["params"]["middle"]["kernel"]
    )
    assert "params/middle/kernel" in report["fresh"]


def test_normalization_is_the_same_in_training_prediction_and_export(tmp_path):
    """'statistics' normalisation: training computes the train split's statistics and records
    them; the loaded run and its export apply them inside the model."""
    config = tiny_config(data_dir=str(tmp_path / "tfds"), num_train_steps=2, eval_every_steps=2,
                         checkpoint_every_steps=2, normalization="statistics")  # fmt: skip
    workdir = str(tmp_path / "run")
    training.train_and_evaluate(config, workdir)
    run = runs.load_trained(workdir)
    mean, std = run.config.normalization_stats
    spec = data.get_spec("synthetic_shapes")
    builder = data.get_builder(spec, data_dir=config.data_dir)
    source = data.DecodedSource(builder.as_data_source(spec.train_split), spec)
    images = np.stack([source[i]["image"] for i in range(len(source))]).astype(np.float64) / 255
    np.testing.assert_allclose(mean, images.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, images.std((0, 1, 2)), rtol=1e-6)

    assert isinstance(run.model, models.Normalized)
    image = source[0]["image"]
    x = image[None].astype(np.float32) / 255
    inner = run.model.inner.apply(run.variables, (x - np.float32(mean)) / np.float32(std))
    np.testing.assert_allclose(run.model.apply(run.variables, x), inner, atol=1e-6)
    probabilities = runs.predict_image(run.predictor(tile_size=96), image)
    runs.export_run(workdir, str(tmp_path / "m.jax"), height=96, width=96)
    served = serving.load_exported(str(tmp_path / "m.jax"))
    np.testing.assert_allclose(served(image[None])["probabilities"][0], probabilities, atol=2e-5)
    sidecar = json.load(open(tmp_path / "m.json"))
    assert sidecar["normalization"]["name"] == "statistics"
    np.testing.assert_allclose(sidecar["normalization"]["mean"], mean)


def _one_step_metrics(config):
    setup = training.resolve(config, jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))
    tx, _ = training.create_optimizer(config)
    state = training.create_train_state(config, setup, tx)
    rng = np.random.default_rng(0)
    batch = {"image": rng.random((4, 16, 16, 3), np.float32),
             "label": rng.integers(0, 5, (4, 16, 16)).astype(np.int32)}  # fmt: skip
    new, metrics = jax.jit(functools.partial(training.train_step, config=config,
                                             aug=setup.augment))(state, batch)  # fmt: skip
    return jax.device_get(state), jax.device_get(new), jax.device_get(metrics)


def test_frozen_gradients_count_neither_in_clipping_nor_in_the_logged_norm(norm_net, tmp_path):
    # Freezing 'middle' (no batch norm) leaves the forward pass as it was: the other gradients
    # are the unfrozen run's; the logged norm and the clipping see only those.
    before, after, full = _one_step_metrics(_config(tmp_path))
    grads = jax.tree.map(lambda a, b: (a - b) / 0.1, before.params, after.params)  # SGD, lr 0.1.
    middle = float(np.sqrt(sum(np.sum(g**2) for g in jax.tree.leaves(grads["middle"]))))
    _, frozen_after, frozen = _one_step_metrics(_config(tmp_path, frozen=("middle",)))
    rest = np.sqrt(float(full["grad_norm"]) ** 2 - middle**2)
    np.testing.assert_allclose(float(frozen["grad_norm"]), rest, rtol=1e-4)
    assert middle > 0.1 * float(full["grad_norm"])  # The frozen part is not negligible.
    clip = 0.5 * rest  # Clipping now scales the head's step by exactly 0.5.
    clipped_config = _config(tmp_path, frozen=("middle",))
    clipped_config.grad_clip_norm = clip
    _, clipped_after, _ = _one_step_metrics(clipped_config)
    step = frozen_after.params["head"]["kernel"] - before.params["head"]["kernel"]
    clipped = clipped_after.params["head"]["kernel"] - before.params["head"]["kernel"]
    # Differences of float32 parameters of order 1: round-off of ~6e-8 on steps of ~1e-3.
    np.testing.assert_allclose(clipped, 0.5 * step, rtol=1e-4, atol=2e-7)
    assert np.abs(step).max() > 1e-4


def test_frozen_batch_norm_uses_its_running_statistics_in_training(norm_net, tmp_path):
    model = NormNet(5)
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3)) * 3.0 + 1.0
    variables = jax.tree.map(np.array, model.init(jax.random.key(1), x))
    variables["batch_stats"]["encoder_bn"]["mean"] += 0.5  # Not the batch's statistics.
    variables["batch_stats"]["encoder_bn"]["var"] *= 2.0
    evaluated = model.apply(variables, x, train=False)
    trained, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert np.abs(np.asarray(trained) - np.asarray(evaluated)).max() > 1e-2
    with training_frozen.running_statistics_for_frozen(("encoder_*",)):
        frozen, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(frozen, evaluated, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(updates["batch_stats"]["encoder_bn"]["mean"],
                                  variables["batch_stats"]["encoder_bn"]["mean"])  # fmt: skip
