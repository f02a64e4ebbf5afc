"""The configs that start from pretrained weights: the FCNs from ImageNet VGG16 (or a clear error
naming both ways to get it), the staged FCN-16s/8s from the previous stage's run, the at-once
FCN-8s's fixed skip scales, and U-Net-ResNet34 on CamVid from an ImageNet ResNet-34."""

# ruff: noqa: F811  (the same_run fixture is imported, then named as an argument)

import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trained_run import load_config, same_run, tiny_config  # noqa: F401

from jaxseg import checkpoint, models, training
from jaxseg.errors import UserError
from jaxseg.models.weights import WeightsNotFound
from jaxseg.training import init as training_init

TINY_FCN = {"base_features": 2, "fc_features": 4}
FCN_CONFIGS = ("fcn32s.py", "fcn16s.py", "fcn8s.py", "fcn8s_atonce.py")


def tiny(name: str, tmp_path, **model_kwargs):
    """Config ``name`` with a tiny model on the embedded data (the weights' code path unchanged)."""
    config = load_config(name)
    config.model_kwargs = {**config.model_kwargs, **model_kwargs}
    config.dataset = "synthetic_shapes"
    config.data_dir = str(tmp_path / "tfds")
    config.input_size = config.eval_size = (64, 64)
    return config


def fresh_state(config):
    setup = training.resolve(config, jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))
    return training.create_train_state(config, setup, training.create_optimizer(config)[0])


@pytest.mark.parametrize("name", FCN_CONFIGS)
def test_fcn_configs_start_from_imagenet_vgg16_or_say_how_to_get_it(name, tmp_path, monkeypatch):
    config = tiny(name, tmp_path, **TINY_FCN)
    assert config.init_from == "hf-hub:timm/vgg16.tv_in1k"
    assert config.normalization == "imagenet"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound) as error:
        training_init.initialized_state(config, fresh_state(config))
    message = str(error.value)
    assert "hf download timm/vgg16.tv_in1k model.safetensors" in message  # Way 1: the hub.
    assert "--config.init_from=PATH.safetensors" in message  # Way 2: a file of one's own.
    assert "--config.init_from='' starts from random weights" in message


def _fcn32s_run(workdir, normalization="imagenet"):
    """A workdir holding one checkpoint of a tiny FCN-32s whose score layer is not zero."""
    model = models.create("fcn32s", 5, **TINY_FCN)
    variables = model.init(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))
    params = jax.tree.map(np.asarray, variables["params"])
    params["score_fr"]["kernel"] = (
        np.random.default_rng(0).normal(size=params["score_fr"]["kernel"].shape).astype(np.float32)
    )
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model": "fcn32s", "normalization": normalization}, f)
    manager = checkpoint.create_manager(os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
    checkpoint.save(manager, 3, {"step": 3, "params": params})
    manager.wait_until_finished()
    manager.close()
    return params


def test_staged_fcn16s_and_fcn8s_start_from_the_previous_stage(tmp_path):
    run = str(tmp_path / "fcn32s")
    saved = _fcn32s_run(run)
    config = tiny("fcn16s_staged.py", tmp_path, **TINY_FCN)
    assert (config.model, config.learning_rate) == ("fcn16s", pytest.approx(1e-4))
    assert load_config("fcn8s_staged.py").learning_rate == pytest.approx(1e-6)
    assert load_config("fcn8s_staged.py").init_from == "workdirs/fcn16s_staged"
    config.init_from = run
    fresh = fresh_state(config)
    logged = []
    state = training_init.initialized_state(config, fresh, log=logged.append)
    for name in ("vgg16", "score_fr"):  # The FCN-32s run's trunk and class scores.
        for a, b in zip(jax.tree.leaves(state.params[name]), jax.tree.leaves(saved[name])):
            np.testing.assert_array_equal(a, b)
    # The new skip: a zero score layer, a bilinear 2x upsampling (both as initialised).
    np.testing.assert_array_equal(state.params["score_pool4"]["kernel"], 0.0)
    np.testing.assert_array_equal(
        state.params["upscore2"]["kernel"], fresh.params["upscore2"]["kernel"]
    )
    assert logged == [f"init_from {run}: loaded 32 tensors; fresh: params/score_pool4, "
                      "params/upscore2"]  # fmt: skip


def test_init_from_a_run_with_other_normalisation_warns_and_bad_sources_are_named(tmp_path):
    run = str(tmp_path / "fcn32s")
    _fcn32s_run(run, normalization="unit")
    config = tiny("fcn16s_staged.py", tmp_path, **TINY_FCN)
    config.init_from = run
    logged = []
    training_init.initialized_state(config, fresh_state(config), log=logged.append)
    assert logged[0] == (
        f"warning: {run} was trained with normalization='unit', this run uses 'imagenet'"
    )
    unet = tiny("unet.py", tmp_path, base_features=4, depth=2)
    unet.init_from = run  # A run of another model.
    with pytest.raises(UserError, match="shares no parameter .* with this model"):
        training_init.initialized_state(unet, fresh_state(unet))
    config.init_from = str(tmp_path)  # A folder, but no run.
    with pytest.raises(UserError, match="is a folder without config.json, not a jaxseg run"):
        training_init.initialized_state(config, fresh_state(config))
    config.init_from = str(tmp_path / "fcn16s_not_trained_yet")
    with pytest.raises(WeightsNotFound, match=r"does not exist\. Or pass a weights file"):
        training_init.initialized_state(config, fresh_state(config))


def test_at_once_skip_scales_are_fixed_factors_before_the_score_layers(tmp_path):
    config = tiny("fcn8s_atonce.py", tmp_path, **TINY_FCN)
    setup = training.resolve(config, jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))
    assert tuple(setup.model.inner.skip_scales) == (0.01, 0.0001)  # Inside the normalisation.
    plain = models.create("fcn8s", 5, **TINY_FCN)
    scaled = models.create("fcn8s", 5, skip_scales=(0.01, 0.0001), **TINY_FCN)
    x = jax.random.uniform(jax.random.key(0), (2, 40, 52, 3))
    variables = plain.init(jax.random.key(1), x)
    assert jax.tree.structure(variables) == jax.tree.structure(scaled.init(jax.random.key(1), x))
    params = jax.tree.map(np.array, variables["params"])
    rng = np.random.default_rng(0)
    for name in ("score_pool4", "score_pool3"):  # Zero at init: make the skips matter.
        params[name]["kernel"] = rng.normal(size=params[name]["kernel"].shape).astype(np.float32)
    # Scaling a 1x1 convolution's input is scaling its kernel (the bias stays).
    moved = jax.tree.map(np.copy, params)
    moved["score_pool4"]["kernel"] *= 0.01
    moved["score_pool3"]["kernel"] *= 0.0001
    got = scaled.apply({"params": params}, x)
    want = plain.apply({"params": moved}, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    unscaled = plain.apply({"params": params}, x)
    assert np.abs(np.asarray(got) - np.asarray(unscaled)).max() > 1e-3
    with pytest.raises(ValueError, match=r"skip_scales needs \(pool4, pool3\) factors"):
        models.create("fcn8s", 5, skip_scales=(0.01,))


def test_unet_resnet34_camvid_starts_from_an_imagenet_resnet34(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import safetensors.torch
    import torch_backbone_reference as backbone_ref
    import torch_vgg_reference as vgg_ref

    encoder = backbone_ref.randomize(backbone_ref.ResNet(34), seed=3)
    state = backbone_ref.classification_state(encoder)
    save = lambda p: safetensors.torch.save_file(state, p)  # noqa: E731
    vgg_ref.hub_cache(tmp_path / "hub", "timm/resnet34.tv_in1k", {"model.safetensors": save})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config("unet_resnet34_camvid.py")
    assert (config.dataset, config.normalization) == ("camvid", "imagenet")
    assert tuple(config.lr_multipliers[0]) == ("encoder", 0.1)
    config.dataset, config.data_dir = "synthetic_shapes", str(tmp_path / "tfds")
    logged = []
    fresh = fresh_state(config)
    loaded = training_init.initialized_state(config, fresh, log=logged.append)
    conv1 = state["conv1.weight"].numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    np.testing.assert_array_equal(loaded.params["encoder"]["conv1"]["kernel"], conv1)
    np.testing.assert_array_equal(loaded.batch_stats["encoder"]["layer4_2"]["bn2"]["var"],
                                  state["layer4.2.bn2.running_var"].numpy())  # fmt: skip
    for name in ("decoder", "segmentation_head_0"):  # Fresh: as initialised.
        for a, b in zip(jax.tree.leaves(loaded.params[name]), jax.tree.leaves(fresh.params[name])):
            np.testing.assert_array_equal(a, b)
    assert logged[0].startswith("init_from hf-hub:timm/resnet34.tv_in1k: loaded ")
    assert "fresh: batch_stats/decoder" in logged[0] and "not used: 2" in logged[0]


def test_training_starts_from_init_from_and_a_resumed_run_does_not_read_it(
    same_run, tmp_path, capsys
):
    data_dir = os.path.join(os.path.dirname(same_run), "tfds")
    source = str(tmp_path / "source")
    shutil.copytree(same_run, source)
    config = tiny_config(data_dir=data_dir, init_from=source, num_train_steps=2,
                         eval_every_steps=2, checkpoint_every_steps=2, log_every_steps=2)  # fmt: skip
    workdir = str(tmp_path / "finetuned")
    training.train_and_evaluate(config, workdir)
    assert re.search(rf"init_from {source}: loaded \d+ tensors\n", capsys.readouterr().out)
    # Resuming (longer now) restores the run's own checkpoint: init_from is not read again.
    shutil.rmtree(source)
    config.num_train_steps = 4
    training.train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    assert f"Resumed from step 2 in {workdir}" in out and "init_from" not in out


def test_a_head_for_another_class_count_stays_fresh_other_shapes_are_errors(tmp_path):
    pytest.importorskip("torch")
    import safetensors.torch
    import torch_backbone_reference as backbone_ref

    smp = backbone_ref.randomize(backbone_ref.SmpUnet("resnet18", classes=7), seed=4)
    path = tmp_path / "unet7.safetensors"
    safetensors.torch.save_file(smp.state_dict(), path)
    config = tiny("unet_resnet34_camvid.py", tmp_path, encoder_name="resnet18")
    config.init_from = str(path)  # A 7-class smp Unet into this 5-class model.
    fresh, logged = fresh_state(config), []
    loaded = training_init.initialized_state(config, fresh, log=logged.append)
    np.testing.assert_array_equal(
        loaded.params["segmentation_head_0"]["kernel"],
        fresh.params["segmentation_head_0"]["kernel"],
    )
    state_key = "decoder.blocks.4.conv2.0.weight"
    np.testing.assert_array_equal(
        loaded.params["decoder"]["blocks_4"]["conv2_0"]["kernel"],
        smp.state_dict()[state_key].numpy().transpose(2, 3, 1, 0),
    )
    assert "fresh: params/segmentation_head_0" in logged[0]
    # A run of another width is another architecture: an error naming the tensors.
    run = str(tmp_path / "fcn32s")
    _fcn32s_run(run)
    wide = tiny("fcn16s_staged.py", tmp_path, base_features=4, fc_features=4)
    wide.init_from = run
    with pytest.raises(UserError, match=r"shape: params/vgg16/conv1_1/bias is \(2,\) .* \(4,\)"):
        training_init.initialized_state(wide, fresh_state(wide))
