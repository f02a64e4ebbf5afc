"""Pretrained-backbone models against PyTorch references with torchvision/smp key names.

``tests/torch_backbone_reference.py`` rebuilds torchvision's ResNet/VGG, smp's ``Unet`` and
torchvision's ``fcn_resnet*`` in plain PyTorch. Their seeded random weights (batch norms with
random, non-trivial running statistics) are converted by the library's ``torch_to_flax`` (key
names alone, every key consumed and every Flax variable set) and, saved as safetensors, loaded by
``load_pretrained``; the logits are compared in eval mode (float32). Full channel widths, tiny
images. Classification weights load into the encoder/backbone only: its features are compared.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import UserError
from jaxseg.models import create
from jaxseg.models.convert import torch_to_flax
from jaxseg.models.encoders import ENCODER_CHANNELS, create_encoder, encoder_channels
from jaxseg.models.fcn_resnet import FCNResNet, bilinear_weights, resize_bilinear
from jaxseg.models.pretrained import load_pretrained
from jaxseg.models.resnet import ResNet
from jaxseg.models.unet_encoder import EncoderUNet

torch = pytest.importorskip("torch")
import safetensors.torch  # noqa: E402
import torch_backbone_reference as ref  # noqa: E402

torch.set_num_threads(2)
TOLERANCE = 1e-4
flat = lambda tree: flax.traverse_util.flatten_dict(tree, sep="/")  # noqa: E731


def shapes_of(model, shape):
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False)
    )


def zeros(shapes):
    """Stand-in for freshly initialised variables (a fresh leaf stays zero)."""
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def save(state, tmp_path):
    safetensors.torch.save_file(state, tmp_path / "w.safetensors")
    return tmp_path / "w.safetensors"


def load(model, torch_model, shape, name=None, tmp_path=None):
    """The Flax variables of ``model`` from ``torch_model``'s state dict, by key name only. With
    ``name``, also saved as safetensors and loaded by ``load_pretrained``: all of it, the same."""
    shapes = shapes_of(model, shape)
    variables, leftover, unset = ref.to_flax(torch_model.state_dict(), shapes)
    assert leftover == [], f"converted tensors without a Flax variable: {leftover[:10]}"
    assert unset == [], f"Flax variables no torch key set: {unset[:10]}"
    if name is not None:
        path = save(torch_model.state_dict(), tmp_path)
        loaded, report = load_pretrained(name, zeros(shapes), path)
        assert report["loaded"] == sorted(flat(shapes))
        assert report["fresh"] == report["dropped"] == []
        jax.tree.map(np.testing.assert_array_equal, loaded, variables)
    return jax.device_put(variables)


def assert_close(got, expected, what, relative=False):
    """Logits within ``TOLERANCE``; features (order 10 deep in a ResNet, where float32 sums differ
    by more) within ``TOLERANCE`` times their largest magnitude."""
    scale = np.abs(expected).max()
    error = np.abs(np.asarray(got) - expected).max()
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    print(f"{what}: max |jax - torch| = {error:.2e}, max |value| {scale:.2f}")
    assert scale > 0.1, f"{what}: values too small ({scale}) for the check to mean anything"
    limit = TOLERANCE * (scale if relative else 1.0)
    assert error < limit, f"{what}: max |jax - torch| = {error:.2e} (max |value| {scale:.2f})"


@pytest.mark.parametrize("encoder, seed", [("resnet34", 1), ("resnet50", 2), ("vgg16_bn", 3)])
def test_encoder_unet_matches_smp_unet(encoder, seed, tmp_path):
    torch.manual_seed(seed)
    torch_model = ref.randomize(ref.SmpUnet(encoder, classes=3), seed)
    model = EncoderUNet(num_classes=3, encoder_name=encoder)
    variables = load(model, torch_model, (1, 64, 64, 3), "encoder_unet", tmp_path)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    rng = np.random.default_rng(seed)
    for shape in [(1, 64, 64, 3), (1, 96, 128, 3)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        assert_close(apply(variables, x), ref.run_nhwc(torch_model, x), f"{encoder} {shape}")


def test_fcn_resnet50_matches_torchvision(tmp_path):
    torch.manual_seed(4)
    torch_model = ref.randomize(ref.FCN(50, num_classes=5, aux_loss=True), 4)
    model = FCNResNet(num_classes=5, depth=50, aux_classifier=True)
    # 52 x 60 is no multiple of 8: the stride-8 map (7 x 8) is resized to it, edges included.
    x = np.random.default_rng(4).standard_normal((2, 52, 60, 3), dtype=np.float32)
    variables = load(model, torch_model, x.shape, "fcn_resnet50", tmp_path)
    got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    expected = ref.run_nhwc(torch_model, x)
    for key in ("out", "aux"):
        assert_close(got[key], expected[key], f"fcn_resnet50 {key}")
    # Without an aux head in the model, the weights' is dropped; without one in the weights,
    # the model's stays fresh.
    shapes = shapes_of(create("fcn_resnet50", num_classes=5), x.shape)
    loaded, report = load_pretrained("fcn_resnet50", zeros(shapes), tmp_path / "w.safetensors")
    state = torch_model.state_dict()
    aux = sorted(k for k in state if k.startswith("aux_") and "num_batches" not in k)
    assert report["dropped"] == aux and len(aux) == 7 and report["fresh"] == []
    everything = flat(variables)
    for path, value in flat(loaded).items():
        np.testing.assert_array_equal(value, everything[path], err_msg=path)
    no_aux = {k: v for k, v in state.items() if not k.startswith("aux_")}
    _, report = load_pretrained("fcn_resnet50", jax.tree.map(np.zeros_like, variables), no_aux)
    assert report["fresh"] == sorted(p for p in everything if "/aux_classifier_" in p) != []


@pytest.mark.parametrize("encoder", ["vgg16", "resnet18"])
def test_other_encoders_map_every_key(encoder):
    torch_model = ref.SmpUnet(encoder, classes=2)
    load(EncoderUNet(num_classes=2, encoder_name=encoder), torch_model, (1, 32, 32, 3))


def test_fcn_resnet101_maps_every_key():
    load(FCNResNet(num_classes=21, depth=101), ref.FCN(101, num_classes=21), (1, 32, 32, 3))


def nchw_features(torch_model, x):
    with torch.no_grad():
        features = torch_model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    return [f.numpy().transpose(0, 2, 3, 1) for f in features[1:]]  # Without smp's input.


@pytest.mark.parametrize("encoder", ["resnet18", "vgg16_bn"])
def test_classification_weights_load_into_the_unet_encoder(encoder, tmp_path):
    torch_encoder = ref.randomize(ref.SMP_ENCODERS[encoder][0](), 6)
    path = save(ref.classification_state(torch_encoder), tmp_path)
    shapes = shapes_of(EncoderUNet(num_classes=2, encoder_name=encoder), (1, 64, 64, 3))
    variables, report = load_pretrained("encoder_unet", zeros(shapes), path)
    paths = sorted(flat(shapes))
    assert report["loaded"] == [p for p in paths if p.split("/")[1] == "encoder"]
    assert report["fresh"] == [p for p in paths if p.split("/")[1] != "encoder"]
    assert {p.split("/")[1] for p in report["fresh"]} == {"decoder", "segmentation_head_0"}
    heads = ["fc"] if encoder.startswith("resnet") else [f"classifier.{i}" for i in (0, 3, 6)]
    assert report["dropped"] == [f"{h}.{t}" for h in heads for t in ("bias", "weight")]
    x = np.random.default_rng(6).standard_normal((1, 64, 64, 3), dtype=np.float32)
    encoder_variables = {c: tree["encoder"] for c, tree in variables.items()}
    got = jax.jit(create_encoder(encoder).apply)(encoder_variables, x)
    for i, expected in enumerate(nchw_features(torch_encoder, x)):
        assert_close(got[i], expected, f"{encoder} feature {i}", relative=True)


def test_classification_resnet50_loads_into_the_fcn_backbone(tmp_path):
    dilated = (False, True, True)  # Same keys as the classification net's.
    torch_backbone = ref.ResNet(50, replace_stride_with_dilation=dilated)
    ref.randomize(torch_backbone, 7, shapes=[(4, 3, 32, 32)])
    path = save(ref.classification_state(torch_backbone), tmp_path)
    shapes = shapes_of(create("fcn_resnet50", num_classes=3, aux_classifier=True), (1, 32, 32, 3))
    variables, report = load_pretrained("fcn_resnet50", zeros(shapes), path)
    paths = sorted(flat(shapes))
    assert report["loaded"] == [p for p in paths if p.split("/")[1] == "backbone"]
    assert report["fresh"] == [p for p in paths if "classifier_" in p] != []
    assert report["dropped"] == ["fc.bias", "fc.weight"]
    x = np.random.default_rng(7).standard_normal((1, 32, 32, 3), dtype=np.float32)
    backbone = ResNet(depth=50, replace_stride_with_dilation=dilated)
    got = jax.jit(backbone.apply)({c: tree["backbone"] for c, tree in variables.items()}, x)
    for i, expected in enumerate(nchw_features(torch_backbone, x)):
        assert_close(got[i], expected, f"resnet50 backbone feature {i}", relative=True)


def test_load_pretrained_errors():
    def unet(encoder, classes=2):
        return zeros(shapes_of(EncoderUNet(classes, encoder), (1, 32, 32, 3)))

    smp18, unet18 = ref.SmpUnet("resnet18", classes=3).state_dict(), unet("resnet18")
    with pytest.raises(UserError, match=r"shape: params/segmentation_head_0/bias is \(3,\) in"):
        load_pretrained("encoder_unet", unet18, smp18)
    _, report = load_pretrained("encoder_unet", unet18, smp18, exclude=["*head_0"])
    head = ["params/segmentation_head_0/bias", "params/segmentation_head_0/kernel"]
    assert report["fresh"] == report["dropped"] == head
    resnet50 = ref.classification_state(ref.ResNet(50))
    with pytest.raises(UserError, match=r"weights are resnet50 but the model's encoder \(encoder_"
                       r"name='resnet34'\) is resnet34: create the model with encoder_name='resnet50'"):  # fmt: skip
        load_pretrained("encoder_unet", unet("resnet34"), resnet50)
    with pytest.raises(UserError, match="weights are resnet18 but .*encoder_name='vgg16'"):
        load_pretrained("encoder_unet", unet("vgg16"), smp18)
    fcn = zeros(shapes_of(create("fcn_resnet50", num_classes=2), (1, 32, 32, 3)))
    resnet34 = ref.classification_state(ref.ResNet(34))
    with pytest.raises(UserError, match="resnet34 but fcn_resnet50's backbone is resnet50: load"):
        load_pretrained("fcn_resnet50", fcn, resnet34)
    with pytest.raises(UserError, match="cannot load a state dict .* into 'encoder_unet': exp"):
        load_pretrained("encoder_unet", unet18, {"w.weight": np.zeros(2)})
    with pytest.raises(UserError, match=r"model 'unet'; supported: fcn32s, .*, encoder_unet, fcn_"):
        load_pretrained("unet", {"params": {}}, smp18)


def test_torch_to_flax_rule():
    linear, rng = torch.nn.Linear(4, 3), np.random.default_rng(8)
    state = {
        "head.fc.weight": linear.weight.detach().numpy(),
        "head.fc.bias": linear.bias.detach().numpy(),
        "blocks.0.conv.weight": rng.standard_normal((5, 2, 3, 1)),
        **{f"blocks.0.bn.{k}": rng.standard_normal(5) for k in ("weight", "bias")},
        **{f"blocks.0.bn.running_{k}": rng.random(5) for k in ("mean", "var")},
        "blocks.0.bn.num_batches_tracked": np.array(3),
    }
    got = flat(torch_to_flax(state, prefix_map={"": "encoder", "head": "decoder/out"}))
    bn = "encoder/blocks_0/bn"
    assert sorted(got) == sorted(
        ["params/decoder/out/fc/kernel", "params/decoder/out/fc/bias", f"params/{bn}/scale",
         f"params/{bn}/bias", f"batch_stats/{bn}/mean", f"batch_stats/{bn}/var",
         "params/encoder/blocks_0/conv/kernel"]
    )  # fmt: skip
    conv = got["params/encoder/blocks_0/conv/kernel"]
    np.testing.assert_array_equal(conv, state["blocks.0.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(got[f"params/{bn}/scale"], state["blocks.0.bn.weight"])
    np.testing.assert_array_equal(got[f"batch_stats/{bn}/var"], state["blocks.0.bn.running_var"])
    x = rng.standard_normal((2, 4)).astype(np.float32)
    dense = {"params": {k: got[f"params/decoder/out/fc/{k}"] for k in ("kernel", "bias")}}
    expected = linear(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(flax.linen.Dense(3).apply(dense, x), expected, atol=1e-6)
    with pytest.raises(UserError, match="'blocks.0.bn.alpha': 'alpha' is no weight, bias"):
        torch_to_flax({"blocks.0.bn.alpha": np.zeros(1)})
    with pytest.raises(UserError, match="two tensors map to params/a_1/bias"):
        torch_to_flax({"a.1.bias": np.zeros(1), "a_1.bias": np.zeros(1)})


@pytest.mark.parametrize("encoder", sorted(ENCODER_CHANNELS))
def test_encoder_feature_strides_and_channels(encoder):
    module = create_encoder(encoder)
    x = jnp.zeros((1, 64, 64, 3))
    features = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), x)[0])
    assert [f.shape for f in features] == [
        (1, 64 // s, 64 // s, c) for s, c in zip((2, 4, 8, 16, 32), encoder_channels(encoder))
    ]


def test_train_mode_step_matches_torch_and_updates_batch_stats():
    torch.manual_seed(5)
    torch_model = ref.randomize(ref.SmpUnet("resnet18", classes=2), 5)
    model = EncoderUNet(num_classes=2, encoder_name="resnet18")
    x = np.random.default_rng(5).standard_normal((2, 64, 64, 3), dtype=np.float32)
    variables = load(model, torch_model, x.shape)

    step = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    logits, updates = step(variables, x)
    new_stats = updates["batch_stats"]

    torch_model.train()  # Batch statistics; running statistics updated with momentum 0.1.
    assert_close(logits, ref.run_nhwc(torch_model, x), "resnet18 train-mode logits")
    updated, _, _ = ref.to_flax(torch_model.state_dict(), {"batch_stats": new_stats})
    flat = lambda tree: flax.traverse_util.flatten_dict(tree, sep="/")  # noqa: E731
    old, new, want = flat(variables["batch_stats"]), flat(new_stats), flat(updated["batch_stats"])
    assert old.keys() == new.keys() == want.keys() and len(old) == 2 * 30  # 30 batch norms
    for path in old:
        assert not np.allclose(old[path], new[path]), f"{path} not updated"
        # The running means follow PyTorch's update; the variances differ slightly: PyTorch
        # updates running_var with the unbiased batch variance, Flax with the biased one.
        if path.endswith("mean"):
            np.testing.assert_allclose(new[path], want[path], atol=1e-5, rtol=1e-5, err_msg=path)


@pytest.mark.parametrize("in_size, out_size", [(7, 52), (8, 60), (5, 5), (9, 4), (1, 3), (6, 11)])
def test_resize_bilinear_matches_torch_interpolate(in_size, out_size):
    x = np.random.default_rng(in_size).standard_normal((1, in_size, in_size + 1, 2), np.float32)
    size = (out_size, out_size + 2)
    expected = (
        torch.nn.functional.interpolate(
            torch.from_numpy(x.transpose(0, 3, 1, 2)),
            size=size,
            mode="bilinear",
            align_corners=False,
        )
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(resize_bilinear(jnp.asarray(x), size), expected, atol=1e-5)
    assert np.allclose(bilinear_weights(in_size, out_size).sum(axis=1), 1.0)
    if out_size >= in_size:  # jax.image.resize agrees when upsampling (it antialiases shrinking).
        resized = jax.image.resize(x, (1, *size, 2), method="bilinear")
        np.testing.assert_allclose(resized, expected, atol=1e-5)


def test_geometry_and_input_checks():
    unet = EncoderUNet(num_classes=2, encoder_name="vgg16")
    geometry = unet.geometry()
    assert (geometry.size_multiple, geometry.alignment, geometry.valid_padding) == (32, 32, False)
    assert geometry.output_size(96) == 96 and geometry.output_size(100) is None
    with pytest.raises(ValueError, match="divisible by 32"):
        unet.init(jax.random.key(0), jnp.zeros((1, 48, 64, 3)))
    fcn = FCNResNet(num_classes=2).geometry()
    assert (fcn.size_multiple, fcn.alignment, fcn.output_size(37)) == (1, 8, 37)
    with pytest.raises(ValueError, match="unknown encoder"):
        EncoderUNet(num_classes=2, encoder_name="resnet152")
    with pytest.raises(ValueError, match="depth"):
        FCNResNet(num_classes=2, depth=34)
