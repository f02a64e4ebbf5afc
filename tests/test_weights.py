"""Pretrained-weight import: files read without PyTorch, torchvision/timm VGG16 converted to the
FCN trunk and checked against PyTorch (``tests/torch_vgg_reference.py``), merge errors.

One full-width torchvision VGG16 (138M parameters, ~550 MB as safetensors) is built per module:
it is loaded into the real FCN-32s tree and its fc6/fc7 convolutionalisation checked against the
``Linear`` layers. Forward passes through the 100-pixel-padded trunk use narrow widths (the
same code path, 1/16 of the work).
"""

import json
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from jaxseg import models
from jaxseg.errors import UserError
from jaxseg.models import convert, pretrained, weights
from jaxseg.models.vgg import VGG16

torch = pytest.importorskip("torch")
import safetensors.torch  # noqa: E402
import torch_vgg_reference as ref  # noqa: E402

torch.set_num_threads(2)
NARROW = dict(widths=(16, 32, 64, 128, 128), fc_width=64, num_classes=10)
NARROW_FCN = dict(base_features=16, fc_features=64)
REPO = "timm/vgg16.tv_in1k"
assert_close, assert_same_state = ref.assert_close, ref.assert_same_state
nchw, nhwc, numpy_state = ref.nchw, ref.nhwc, ref.numpy_state


def raises(pattern):
    return pytest.raises(UserError, match=pattern)


def fresh_params(model, shape):
    """The model's parameter tree at its shapes (zeros: init would cost seconds at 134M)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])


@pytest.fixture(scope="module")
def full_vgg16(tmp_path_factory):
    model = ref.make(ref.TorchvisionVGG16, seed=0)
    path = tmp_path_factory.mktemp("full") / "vgg16.safetensors"
    safetensors.torch.save_file(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def narrow_vgg16():
    return ref.make(ref.TorchvisionVGG16, seed=1, **NARROW)


def test_full_vgg16_safetensors_loads_into_fcn32s(full_vgg16):
    torch_model, path = full_vgg16
    state = weights.load_state_dict(path)
    expected = numpy_state(torch_model)
    assert_same_state(state, expected)
    assert len(state) == 32
    assert {f"features.{i}.weight" for i in ref.TORCHVISION_VGG16_CONVS} < set(state)
    assert weights.detect_layout(state) == "torchvision_vgg16"

    fcn = models.create("fcn32s", num_classes=21)
    params, report = convert.load_fcn_vgg16(fresh_params(fcn, (1, 32, 32, 3)), path)
    assert report["unused"] == ["classifier.6.bias", "classifier.6.weight"]
    assert report["fresh"] == ["score_fr/bias", "score_fr/kernel"]
    assert len(report["loaded"]) == 30 and report["dropped"] == []
    vgg = params["vgg16"]
    assert vgg["fc6"]["kernel"].shape == (7, 7, 512, 4096)
    assert vgg["fc7"]["kernel"].shape == (1, 1, 4096, 4096)
    # conv1_1 is features.0, conv5_3 features.28 (OIHW -> HWIO, no flip).
    oihw = expected["features.0.weight"]
    np.testing.assert_array_equal(vgg["conv1_1"]["kernel"], oihw.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(vgg["conv5_3"]["bias"], expected["features.28.bias"])

    # fc6 as the 7x7 convolution equals classifier.0 on each flattened 7x7 window (torch flattens
    # C, H, W): a 7x7 map gives one position, a 9x8 map 3x2 windows.
    rng = np.random.default_rng(0)
    fc6, fc7 = nn.Conv(4096, (7, 7), padding="VALID"), nn.Conv(4096, (1, 1))
    pool5 = rng.standard_normal((2, 9, 8, 512), np.float32)
    got6 = np.asarray(jax.jit(fc6.apply)({"params": vgg["fc6"]}, pool5))
    got7 = np.asarray(jax.jit(fc7.apply)({"params": vgg["fc7"]}, jnp.maximum(got6, 0)))
    assert got6.shape == (2, 3, 2, 4096)
    linear6, linear7 = torch_model.classifier[0], torch_model.classifier[3]
    with torch.no_grad():
        for i, j in [(0, 0), (2, 1), (1, 0)]:
            window = nchw(pool5[:, i : i + 7, j : j + 7]).flatten(1)
            fc6_ij = linear6(window)
            assert_close(got6[:, i, j], fc6_ij.numpy(), f"fc6 at ({i}, {j})")
            assert_close(got7[:, i, j], linear7(fc6_ij.relu()).numpy(), f"fc7 at ({i}, {j})")


def test_fcn_trunk_matches_caffe_style_torch_vgg16(narrow_vgg16, tmp_path):
    safetensors.torch.save_file(narrow_vgg16.state_dict(), path := tmp_path / "w.safetensors")
    fcn = models.create("fcn32s", num_classes=21, **NARROW_FCN)
    x = np.random.default_rng(2).standard_normal((2, 32, 40, 3), np.float32)
    got, report = pretrained.load_pretrained("fcn32s", {"params": fresh_params(fcn, x.shape)}, path)
    assert report["fresh"] == ["params/score_fr/bias", "params/score_fr/kernel"]
    capture = lambda module, _: module.name in ("vgg16", "conv5_3")  # noqa: E731
    apply = lambda p, x: fcn.apply({"params": p}, x, capture_intermediates=capture)  # noqa: E731
    _, state = jax.jit(apply)(got["params"], x)
    trunk = state["intermediates"]["vgg16"]
    expected = {k: nhwc(v) for k, v in ref.fcn_trunk(narrow_vgg16, nchw(x)).items()}
    for key in ("pool3", "pool4", "fc7"):
        assert_close(trunk["__call__"][0][key], expected[key], f"FCN trunk {key}")
    # pool5: ReLU and Caffe (ceil-mode) pooling of the captured conv5_3, done by torch.
    conv5_3 = nchw(np.asarray(trunk["conv5_3"]["__call__"][0]))
    pool5 = torch.nn.functional.max_pool2d(torch.relu(conv5_3), 2, 2, ceil_mode=True)
    assert_close(nhwc(pool5), expected["pool5"], "FCN trunk pool5")
    assert expected["fc7"].shape[1:3] == (2, 2)  # (32 + 198) / 32 rounded up = 8; 8 - 6 = 2.


def test_timm_layout_converts_like_torchvision_and_matches_timm_forward(narrow_vgg16):
    tv_state = numpy_state(narrow_vgg16)
    timm_model = ref.TimmVGG16(**NARROW).eval()
    timm_model.load_state_dict(ref.timm_from_torchvision(narrow_vgg16.state_dict()))
    timm_state = numpy_state(timm_model)
    assert weights.detect_layout(timm_state) == "timm_vgg16"
    assert timm_state["pre_logits.fc1.weight"].ndim == 4
    fcn8s = fresh_params(models.create("fcn8s", num_classes=3, **NARROW_FCN), (1, 32, 32, 3))
    from_timm, report = pretrained.load_pretrained("fcn8s", {"params": fcn8s}, timm_state)
    from_tv = convert.vgg16_to_fcn(tv_state)["params"]["vgg16"]
    jax.tree.map(np.testing.assert_array_equal, from_tv, from_timm["params"]["vgg16"])
    assert report["dropped"] == ["head.fc.bias", "head.fc.weight"]
    assert all("score" in p for p in report["fresh"])  # score_*, upscore*: the FCN's own.

    # Without the 100-pixel padding a 224 x 224 input gives a 7 x 7 pool5: fc7 is then one
    # position, torchvision's classifier (through its second ReLU) and timm's pre_logits.
    x = np.random.default_rng(3).standard_normal((1, 224, 224, 3), np.float32)
    trunk = VGG16(base_features=16, fc_features=64, input_padding=1)
    got = jax.jit(trunk.apply)({"params": from_timm["params"]["vgg16"]}, x)["fc7"]
    with torch.no_grad():
        assert_close(got[:, 0, 0], narrow_vgg16.fc7(nchw(x)).numpy(), "fc7 vs torchvision")
        expected = nhwc(timm_model.forward_features(nchw(x)))
    assert_close(got, expected, "fc7 vs timm")


def test_npz_and_pth_round_trips(narrow_vgg16, tmp_path):
    expected = numpy_state(narrow_vgg16)
    np.savez(tmp_path / "w.npz", **expected)
    torch.save(narrow_vgg16.state_dict(), tmp_path / "plain.pth")
    # A training checkpoint: nested under 'state_dict', DataParallel's 'module.' prefix.
    wrapped = {f"module.{k}": v for k, v in narrow_vgg16.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": wrapped}, tmp_path / "checkpoint.pt")
    for name in ("w.npz", "plain.pth", "checkpoint.pt"):
        assert_same_state(weights.load_state_dict(tmp_path / name), expected, name)
    model_prefixed = {f"model.{k}": v for k, v in expected.items()}
    assert sorted(weights.load_state_dict(model_prefixed)) == sorted(expected)


def test_bfloat16_reads_bit_exact(tmp_path):
    tensor = torch.randn(3, 5).to(torch.bfloat16)
    safetensors.torch.save_file({"w": tensor, "b": torch.arange(4)}, tmp_path / "bf16.safetensors")
    torch.save({"w": tensor}, tmp_path / "bf16.pth")
    for name in ("bf16.safetensors", "bf16.pth"):
        w = weights.load_state_dict(tmp_path / name)["w"]
        assert w.dtype == ml_dtypes.bfloat16, name
        np.testing.assert_array_equal(w.astype(np.float32), tensor.float().numpy())
    assert weights.load_state_dict(tmp_path / "bf16.safetensors")["b"].tolist() == [0, 1, 2, 3]


def test_hub_id_reads_the_offline_cache(narrow_vgg16, tmp_path, monkeypatch):
    expected = numpy_state(narrow_vgg16)
    write_config = lambda p: p.write_text(json.dumps({"architecture": "vgg16"}))  # noqa: E731
    write_safetensors = lambda p: safetensors.numpy.save_file(expected, p)  # noqa: E731
    files = {"model.safetensors": write_safetensors, "config.json": write_config}
    ref.hub_cache(tmp_path, REPO, files)
    save_bin = lambda p: torch.save(narrow_vgg16.state_dict(), p)  # noqa: E731
    ref.hub_cache(tmp_path, "org/bin-only", {"pytorch_model.bin": save_bin})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in (f"hf-hub:{REPO}", "hf-hub:org/bin-only"):
        assert_same_state(weights.load_state_dict(source), expected, source)
    assert weights.hub_file(REPO).name == "model.safetensors"


def test_hub_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with raises(r"offline.*run: hf download timm/vgg16.tv_in1k model.safetensors --cache-dir"):
        weights.load_state_dict(f"hf-hub:{REPO}")
    with raises("not a hub id"):
        weights.load_state_dict("hf-hub:vgg16")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with raises(r"needs huggingface_hub: pip install 'jaxseg\[hub\]'"):
        weights.load_state_dict(f"hf-hub:{REPO}")


def test_file_errors_and_torch_file_without_torch(tmp_path, monkeypatch):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    assert weights.load_state_dict(tmp_path / "w.pth")["w"].tolist() == [1.0, 1.0]
    monkeypatch.setitem(sys.modules, "torch", None)
    with raises(r"needs PyTorch.*from safetensors.torch import save_file.*w\.safetensors"):
        weights.load_state_dict(tmp_path / "w.pth")
    safetensors.numpy.save_file({"w": np.ones(2, np.float32)}, tmp_path / "w.safetensors")
    assert weights.load_state_dict(tmp_path / "w.safetensors")["w"].tolist() == [1.0, 1.0]
    with raises("does not exist"):
        weights.load_state_dict(tmp_path / "nothing.safetensors")
    (tmp_path / "w.h5").write_bytes(b"")
    with raises(r"expected \.safetensors, \.npz"):
        weights.load_state_dict(tmp_path / "w.h5")


def test_layout_detection():
    def state(*names):  # 4-D features.* (convolutions), 1-D anything else.
        return {k: np.zeros((1,) * (4 if k.startswith("features") else 1)) for k in names}

    resnet18 = numpy_state(ref.TorchvisionResNet(widths=(4, 8, 8, 8)))
    resnet50 = numpy_state(ref.TorchvisionResNet((3, 4, 6, 3), True, widths=(4, 4, 4, 4)))
    assert {weights.detect_layout(s) for s in (resnet18, resnet50)} == {"torchvision_resnet"}
    assert weights.resnet_stages(resnet18) == ((2, 2, 2, 2), False)
    assert weights.resnet_stages(resnet50) == ((3, 4, 6, 3), True)
    with raises(r"unknown layout \(keys: \['decoder.weight', 'encoder.weight'\]"):
        weights.detect_layout(state("encoder.weight", "decoder.weight"))
    vgg11 = [f"features.{i}.weight" for i in (0, 3, 6, 8, 11, 13, 16, 18)]
    with raises("VGG with 8 convolutions; VGG16 has 13"):
        weights.detect_layout(state(*vgg11, "classifier.0.weight", "classifier.3.weight"))
    vgg16_bn = [f"features.{i}.weight" for i in range(0, 39, 3)]
    with raises("batch norm"):
        weights.detect_layout(state(*vgg16_bn, "features.1.running_mean"))
    features_only = [f"features.{i}.weight" for i in ref.TORCHVISION_VGG16_CONVS]
    with raises("without fc6/fc7"):
        weights.detect_layout(state(*features_only))
    with raises("expected VGG16 weights.*torchvision_resnet"):
        convert.vgg16_to_fcn(resnet18)


def test_conversion_errors_name_the_tensor(narrow_vgg16):
    state = numpy_state(narrow_vgg16)
    fresh = fresh_params(models.create("fcn32s", num_classes=3, **NARROW_FCN), (1, 32, 32, 3))
    with raises(r"1 tensor\(s\) .* no place in the model: classifier.1.weight \(5,\)"):
        convert.vgg16_to_fcn({**state, "classifier.1.weight": np.zeros(5, np.float32)})
    with raises(r"missing: vgg16/conv3_1/bias \(64,\) is not in the weights"):
        convert.load_fcn_vgg16(fresh, {k: v for k, v in state.items() if k != "features.10.bias"})
    wider = numpy_state(ref.TorchvisionVGG16(widths=(8, 32, 64, 128, 128), fc_width=64))
    with raises("5 problem") as error:  # conv1_1, conv1_2 kernels and biases, conv2_1's input.
        convert.load_fcn_vgg16(fresh, wider)
    for part in ["kernel is (3, 3, 3, 8) in the weights but (3, 3, 3, 16)", "bias is (8,) in"]:
        assert f"shape: vgg16/conv1_1/{part}" in str(error.value)
    with raises(r"'classifier.3.weight' is missing .*keys: \['classifier.0.weight'\]"):
        convert.conv({"classifier.0.weight": state["classifier.0.weight"]}, "classifier.3")


def test_merge_params_loads_keeps_drops_and_reports():
    conv = {"kernel": jnp.zeros((3, 3, 2, 4)), "bias": jnp.zeros(4)}
    target = {"enc": {"conv": conv}, "head": {"kernel": jnp.full((1, 1, 4, 2), 7.0)}}
    kernel = np.arange(72, dtype=np.float16).reshape(3, 3, 2, 4)
    converted = {
        "enc": {"conv": {"kernel": kernel, "bias": np.ones(4)}},
        "classifier": {"kernel": np.ones((4, 10))},
    }
    params, report = convert.merge_params(target, converted, exclude=("head", "classifier"))
    assert report == {
        "loaded": ["enc/conv/bias", "enc/conv/kernel"],
        "fresh": ["head/kernel"],
        "dropped": ["classifier/kernel"],
    }
    assert params["enc"]["conv"]["kernel"].dtype == jnp.float32
    np.testing.assert_array_equal(params["enc"]["conv"]["kernel"], kernel.astype(np.float32))
    assert params["head"]["kernel"] is target["head"]["kernel"]
    wrong = {"enc": {"conv": {"kernel": np.ones((3, 3, 2, 5))}}, "extra": {"w": np.ones(1)}}
    with raises("4 problem") as error:
        convert.merge_params(target, wrong)
    for part in [
        "extra: extra/w (1,) has no place in the model",
        "shape: enc/conv/kernel is (3, 3, 2, 5) in the weights but (3, 3, 2, 4) in the model",
        "missing: enc/conv/bias (4,) is not in the weights",
        "missing: head/kernel (1, 1, 4, 2) is not in the weights",
    ]:
        assert part in str(error.value)
    with raises(r"1 problem.*missing: head/kernel"):  # Fresh only when excluded.
        convert.merge_params(target, converted, exclude=("classifier",))
    with raises("no path in common"):
        convert.merge_params({"params": target}, converted)


def test_conv_and_batch_norm_helpers_match_torch_resnet_stem():
    resnet = ref.randomize_batch_norms(ref.make(ref.TorchvisionResNet, 5, widths=(8,) * 4), 5)
    reader = convert.StateReader(numpy_state(resnet))
    conv = convert.conv(reader, "conv1")
    assert set(conv) == {"kernel"} and conv["kernel"].shape == (7, 7, 3, 8)
    bn, stats = convert.batch_norm(reader, "bn1")
    assert reader.dropped == ["bn1.num_batches_tracked"]
    taken = "conv1.weight bn1.weight bn1.bias bn1.running_mean bn1.running_var"
    assert reader.taken == set(taken.split())
    conv_layer = nn.Conv(8, (7, 7), strides=2, padding=3, use_bias=False)
    stem = nn.Sequential([conv_layer, nn.BatchNorm(use_running_average=True), nn.relu])
    variables = {"params": {"layers_0": conv, "layers_1": bn}, "batch_stats": {"layers_1": stats}}
    x = np.random.default_rng(5).standard_normal((2, 20, 18, 3), np.float32)
    assert_close(stem.apply(variables, x), nhwc(resnet.stem(nchw(x))), "resnet stem")
    dense = convert.dense(numpy_state(resnet), "fc")
    np.testing.assert_array_equal(dense["kernel"], resnet.fc.weight.detach().numpy().T)


def test_a_cut_short_or_foreign_file_is_a_one_line_error_naming_it(tmp_path):
    good = {"w": np.arange(1000, dtype=np.float32)}
    safetensors.numpy.save_file(good, tmp_path / "w.safetensors")
    np.savez(tmp_path / "w.npz", **good)
    torch.save({"w": torch.arange(1000.0)}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.npz", "w.pth"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
        with raises(rf"cut_{re.escape(name)} is not a readable \.\w+ file \(cut short"):
            weights.load_state_dict(tmp_path / f"cut_{name}")
    (tmp_path / "page.safetensors").write_text("<html>not found</html>")
    with raises(r"page\.safetensors is not a readable \.safetensors file"):
        weights.load_state_dict(tmp_path / "page.safetensors")
