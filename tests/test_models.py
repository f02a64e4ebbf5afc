"""Model zoo: PyTorch parity, golden parameter counts, shapes, initialisation, dtypes, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import models

torch = pytest.importorskip("torch")
import torch_fcn_reference as fcn_ref  # noqa: E402
import torch_reference as ref  # noqa: E402

torch.set_num_threads(2)


def random_params(model, x, seed=0):
    """Every parameter (biases included) drawn at unit-variance (He) scale, batch statistics
    near (0, 1): from the shapes alone, with NumPy. An eager ``init`` would take 30 s for a
    bfloat16 model on CPU; 134M parameters draw in seconds."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1].key == "mean":
            return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)
        if path[-1].key == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 16
        return rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))

    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree_util.tree_map_with_path(draw, shapes)


def param_count(model, shape):
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def output_shape(model, shape):
    def forward():
        x = jnp.zeros(shape)
        return model.apply(model.init(jax.random.key(0), x), x)

    return jax.eval_shape(forward).shape


def assert_parity(model, torch_model, load, shape, seed=0):
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    variables = random_params(model, jnp.asarray(x), seed)
    load(torch_model, variables["params"])
    expected = ref.run_nhwc(torch_model, x)
    got = np.asarray(jax.jit(model.apply)(variables, x))
    assert got.shape == expected.shape
    diff = np.abs(got - expected).max()
    print(f"max abs diff {diff:.2e} (output scale {np.abs(expected).max():.2f})")
    assert diff <= 1e-4


def test_simple_fcn_matches_pytorch():
    model = models.create("simple_fcn", num_classes=5)
    assert param_count(model, (1, 32, 32, 3)) == sum(
        p.numel() for p in ref.TorchSimpleFCN(3, 5).parameters()
    )
    assert_parity(model, ref.TorchSimpleFCN(3, 5), ref.load_simple_fcn, (2, 32, 40, 3))


def test_simple_unet_matches_pytorch():
    model = models.create("simple_unet", num_classes=4)
    assert param_count(model, (1, 32, 32, 3)) == sum(
        p.numel() for p in ref.TorchSimpleUNet(3, 4).parameters()
    )
    assert_parity(model, ref.TorchSimpleUNet(3, 4), ref.load_simple_unet, (1, 32, 48, 3))


@pytest.mark.parametrize(
    "padding, shape, torch_padding",
    [("VALID", (1, 188, 204, 1), 0), ("SAME", (1, 48, 64, 1), 1)],
)
def test_unet_matches_pytorch(padding, shape, torch_padding):
    """The paper's full-width network (31M parameters) against the PyTorch reference."""
    model = models.create("unet", num_classes=2, padding=padding)
    torch_model = ref.TorchUNet(1, 2, padding=torch_padding)
    assert sum(p.numel() for p in torch_model.parameters()) == 31_030_658
    assert_parity(model, torch_model, ref.load_unet, shape)


@pytest.mark.parametrize("stride, kernel", [(2, 2), (2, 4), (8, 16), (3, 6)])
def test_transposed_conv_matches_pytorch(stride, kernel):
    rng = np.random.default_rng(stride + kernel)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
    expected = (
        torch.nn.functional.conv_transpose2d(
            torch.from_numpy(x.transpose(0, 3, 1, 2)),
            torch.from_numpy(w.transpose(2, 3, 0, 1)),
            stride=stride,
        )
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    got = np.asarray(models.transposed_conv(jnp.asarray(x), jnp.asarray(w), stride))
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("stride, kernel", [(2, 2), (2, 4), (3, 6)])
def test_upconv_kernel_is_flax_conv_transpose_kernel_flipped(stride, kernel):
    """The conversion layers.py documents: flax nn.ConvTranspose needs kernel[::-1, ::-1]."""
    rng = np.random.default_rng(stride * kernel)
    x = jnp.asarray(rng.normal(size=(2, 5, 7, 3)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32))
    ours = models.UpConv(4, kernel, stride, use_bias=False).apply({"params": {"kernel": w}}, x)

    def flax_conv_transpose(k, **kwargs):
        layer = nn.ConvTranspose(4, (kernel, kernel), (stride, stride), "VALID", use_bias=False)
        return layer.clone(**kwargs).apply({"params": {"kernel": k}}, x)

    assert ours.shape == (2, 4 * stride + kernel, 6 * stride + kernel, 4)
    np.testing.assert_allclose(flax_conv_transpose(w[::-1, ::-1]), ours, atol=1e-5)
    np.testing.assert_allclose(
        flax_conv_transpose(w.swapaxes(2, 3), transpose_kernel=True), ours, atol=1e-5
    )
    # The same array unflipped is a different layer (the kernel is not symmetric).
    assert np.abs(flax_conv_transpose(w) - ours).max() > 1.0


GOLDEN_COUNTS = {
    # name, kwargs, input channels -> parameters
    ("unet", 2, 1): 31_030_658,  # The paper's U-Net.
    ("fcn32s", 21, 3): 134_346_581,
    ("fcn16s", 21, 3): 134_364_410,
    ("fcn8s", 21, 3): 134_376_863,  # Caffe's voc-fcn8s less its fixed upscore8 filter.
    ("simple_fcn", 21, 3): 113_877,
    ("simple_unet", 21, 3): 7_698_645,
}

TWO_SIZES = {"unet": (188, 572), "fcn32s": (64, 117), "fcn16s": (64, 117), "fcn8s": (64, 117)}


@pytest.mark.parametrize("name, num_classes, channels", list(GOLDEN_COUNTS))
def test_golden_parameter_counts_at_two_input_sizes(name, num_classes, channels):
    model = models.create(name, num_classes)
    sizes = TWO_SIZES.get(name, (32, 96))
    counts = {s: param_count(model, (1, s, s, channels)) for s in sizes}
    assert set(counts.values()) == {GOLDEN_COUNTS[name, num_classes, channels]}, counts


def test_unet_paper_geometry():
    assert output_shape(models.create("unet", 2), (1, 572, 572, 1)) == (1, 388, 388, 2)
    assert models.unet_output_size(572) == 388
    assert models.unet_input_size_for_output(388) == 572
    assert models.valid_unet_input_sizes(4, 600)[:3] == [188, 204, 220]
    # Every size the helper calls valid gives the promised output; every other size is refused.
    for size in range(180, 240):
        out = models.unet_output_size(size, depth=2)
        if out is None:
            with pytest.raises(ValueError):
                models.check_unet_input((size, size), 2, "VALID")
        else:
            tiny = models.create("unet", 2, depth=2, base_features=2)
            assert output_shape(tiny, (1, size, size + 4, 1))[1] == out


def test_unet_wrong_size_error_names_nearest_valid_sizes():
    with pytest.raises(ValueError, match=r"input height 573.*572 or 588"):
        output_shape(models.create("unet", 2), (1, 573, 572, 1))
    with pytest.raises(ValueError, match=r"divisible by 16.*width 50.*48 or 64"):
        output_shape(models.create("unet", 2, padding="SAME"), (1, 64, 50, 1))
    with pytest.raises(ValueError, match=r"simple_unet needs .* divisible by 8"):
        output_shape(models.create("simple_unet", 2), (1, 60, 64, 3))


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(100, 117), (1, 1), (33, 250), (500, 375)])
def test_fcn_logits_have_input_size(name, size):
    assert output_shape(models.create(name, 21), (2, *size, 3)) == (2, *size, 21)


def test_fcn_crop_offsets_are_the_papers():
    assert models.fcn_crop_offsets(32) == {"input": 19}
    assert models.fcn_crop_offsets(16) == {"pool4": 5, "input": 27}
    assert models.fcn_crop_offsets(8) == {"pool4": 5, "pool3": 9, "input": 31}


# FCN against the Caffe nets rebuilt in PyTorch (tests/torch_fcn_reference.py). Widths shrunk
# 16x (base 4, fc 32) keep each case to about two seconds; the slow test runs the full network.
TINY_FCN = dict(base_features=4, fc_features=32)
TINY_WIDTHS = dict(widths=(4, 8, 16, 32, 32), fc_width=32)


def fcn_random_params(model, x, seed=0):
    """Every leaf drawn at He scale, score layers and biases included.

    The learnable up-convolutions get random, not bilinear, kernels: they are not symmetric,
    so a flipped or transposed copy would show.
    """
    params = random_params(model, x, seed)["params"]
    for name in ("upscore2", "upscore_pool4"):
        if name in params:
            kernel = params[name]["kernel"]
            assert not np.allclose(kernel, kernel[::-1, ::-1])
            assert not np.allclose(kernel, kernel.transpose(1, 0, 2, 3))
    return params


def fcn_difference(name, shape, widths, crops=None, flip=False, **overrides):
    """Largest |jaxseg - Caffe reference| logit difference, and the largest reference logit."""
    stride = int(name[3:-1])
    model = models.create(name, 5, **overrides)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    params = fcn_random_params(model, x)
    torch_model = fcn_ref.CaffeFCN(5, stride, crops=crops, **widths)
    fcn_ref.load_fcn(torch_model, params)
    if flip:  # A deliberately wrong copy: upscore2 spatially flipped.
        with torch.no_grad():
            torch_model.upscore2.weight.copy_(torch_model.upscore2.weight.flip(2, 3))
    expected = ref.run_nhwc(torch_model, x)
    got = np.asarray(jax.jit(model.apply)({"params": params}, x))
    assert got.shape == expected.shape == (*shape[:3], 5)
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


FCN_TOLERANCE = 2e-5  # of the largest logit; measured 6e-7 to 1e-6 (tiny), up to 5e-6 (full).


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("shape", [(2, 33, 47, 3), (1, 64, 64, 3), (1, 97, 130, 3)])
def test_fcn_matches_caffe_reference(name, shape):
    diff, scale = fcn_difference(name, shape, TINY_WIDTHS, **TINY_FCN)
    print(f"{name} {shape}: max abs diff {diff:.2e} (output scale {scale:.2f})")
    assert scale > 1.0 and diff <= FCN_TOLERANCE * scale


@pytest.mark.parametrize(
    "name, crops",
    [
        ("fcn32s", {"score": 18}),
        ("fcn32s", {"score": 20}),
        ("fcn16s", {"score_pool4c": 5, "score": 26}),
        ("fcn16s", {"score_pool4c": 6, "score": 27}),
        ("fcn8s", {"score_pool4c": 4, "score_pool3c": 9, "score": 31}),
        ("fcn8s", {"score_pool4c": 5, "score_pool3c": 10, "score": 31}),
        ("fcn8s", {"score_pool4c": 5, "score_pool3c": 9, "score": 30}),
        ("fcn8s", None),  # right crops, flipped upscore2
    ],
)
def test_fcn_reference_comparison_catches_a_wrong_crop_or_flip(name, crops):
    diff, scale = fcn_difference(
        name, (1, 33, 47, 3), TINY_WIDTHS, crops, crops is None, **TINY_FCN
    )
    print(f"{name} crops {crops}: max abs diff {diff:.2e} (output scale {scale:.2f})")
    assert diff > 1000 * FCN_TOLERANCE * scale


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_fcn_caffe_reference_has_the_golden_parameter_count(name):
    with torch.device("meta"):
        torch_model = fcn_ref.CaffeFCN(21, int(name[3:-1]))
    assert sum(p.numel() for p in torch_model.parameters()) == GOLDEN_COUNTS[name, 21, 3]


@pytest.mark.slow
def test_full_width_fcn8s_matches_caffe_reference():
    """134M parameters: about 1 minute and 2.3 GB on two busy CPU cores; measured 4.6e-7."""
    diff, scale = fcn_difference("fcn8s", (1, 33, 47, 3), {})
    print(f"full fcn8s: max abs diff {diff:.2e} (output scale {scale:.2f})")
    assert scale > 1.0 and diff <= FCN_TOLERANCE * scale


def test_bilinear_kernel_values():
    np.testing.assert_allclose(
        models.bilinear_kernel(4)[0], [0.0625, 0.1875, 0.1875, 0.0625], rtol=0, atol=1e-7
    )
    np.testing.assert_allclose(models.bilinear_kernel(4)[1, 1], 0.5625)
    np.testing.assert_allclose(models.bilinear_kernel(3), np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))


def test_fcn_upsampling_initialised_to_bilinear():
    model = models.create("fcn8s", 3, base_features=2, fc_features=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 40, 40, 3)))["params"]
    for name in ("upscore2", "upscore_pool4"):
        kernel = np.asarray(params[name]["kernel"])
        assert kernel.shape == (4, 4, 3, 3) and "bias" not in params[name]
        for c in range(3):
            for d in range(3):
                expected = models.bilinear_kernel(4) if c == d else np.zeros((4, 4))
                np.testing.assert_array_equal(kernel[:, :, c, d], expected)
    # Behaviour: upsampling a linear ramp by 2 with that kernel interpolates it linearly.
    ramp = jnp.arange(6.0)[None, :, None, None] * jnp.ones((1, 6, 6, 1))
    up = models.transposed_conv(ramp, jnp.asarray(models.bilinear_kernel(4))[:, :, None, None], 2)
    np.testing.assert_allclose(np.asarray(up)[0, 2:12, 5, 0], 0.25 + 0.5 * np.arange(10), atol=1e-6)


def test_tiny_fcn8s_runs_on_odd_size_and_dropout_only_in_training():
    model = models.create("fcn8s", 4, base_features=2, fc_features=8)
    x = jax.random.normal(jax.random.key(0), (1, 37, 53, 3))
    variables = random_params(model, x)
    eval1 = model.apply(variables, x)
    eval2 = model.apply(variables, x)
    np.testing.assert_array_equal(eval1, eval2)
    train = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert eval1.shape == train.shape == (1, 37, 53, 4)
    assert not np.allclose(eval1, train)


@pytest.mark.parametrize(
    "name, overrides, shape",
    [
        ("unet", dict(depth=2, base_features=4), (1, 44, 44, 1)),
        ("unet", dict(depth=2, base_features=4, padding="SAME", batch_norm=True), (1, 16, 16, 1)),
        ("fcn8s", dict(base_features=2, fc_features=4), (1, 20, 20, 3)),
        ("simple_fcn", {}, (1, 8, 8, 3)),
        ("simple_unet", {}, (1, 8, 8, 3)),
    ],
)
def test_bf16_compute_keeps_float32_params_and_logits(name, overrides, shape):
    model = models.create(name, 3, dtype=jnp.bfloat16, **overrides)
    x = jax.random.normal(jax.random.key(10), shape)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    # Random parameters: FCN's zero-initialised score layers would give all-zero logits.
    variables = random_params(model, x)
    apply = lambda m: jax.jit(lambda v: m.apply(v, x, mutable=["batch_stats"])[0])  # noqa: E731
    got16 = apply(model)(variables)
    assert got16.dtype == jnp.float32
    assert_bf16_close(got16, apply(models.create(name, 3, **overrides))(variables))


def assert_bf16_close(got16, ref32):
    """bfloat16 compute vs float32: within 3% of the largest float32 logit.

    Measured over 6 draws of parameters and input per model above: at most 1.9% (unet), 1.6%
    (fcn8s); 0.4-1.6% for the draw the test uses. A dropped skip moves the logits by far more
    (next test), and a 5% error anywhere fails.
    """
    scale = float(np.abs(ref32).max())
    assert scale > 0.1
    np.testing.assert_allclose(got16, ref32, rtol=0, atol=0.03 * scale)


@pytest.mark.parametrize(
    "name, overrides, shape, layer",
    [
        ("fcn8s", dict(base_features=2, fc_features=4), (1, 20, 20, 3), "score_pool4"),
        ("unet", dict(depth=2, base_features=4), (1, 44, 44, 1), "2_up_1"),
    ],
)
def test_bf16_tolerance_catches_a_dropped_skip(name, overrides, shape, layer):
    model = models.create(name, 3, **overrides)
    x = jax.random.normal(jax.random.key(10), shape)
    params = random_params(model, x)["params"]
    apply = jax.jit(model.apply)
    ref32 = apply({"params": params}, x)
    if name == "fcn8s":  # FCN-8s without its pool4 skip.
        params = {**params, layer: jax.tree.map(jnp.zeros_like, params[layer])}
    else:  # U-Net whose last up block ignores the skip half of its input.
        kernel = params[layer]["block"]["conv1"]["kernel"]
        kernel = jnp.asarray(kernel).at[:, :, : kernel.shape[2] // 2].set(0)
        params = {**params, layer: {**params[layer], "block": {**params[layer]["block"]}}}
        params[layer]["block"]["conv1"] = {**params[layer]["block"]["conv1"], "kernel": kernel}
    wrong = apply({"params": params}, x)
    with pytest.raises(AssertionError):
        assert_bf16_close(wrong, ref32)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(skip="add"),
        dict(skip="none"),
        dict(upsampling="bilinear"),
        dict(batch_norm=True, dropout_rate=0.5),
        dict(remat=True),
    ],
)
def test_unet_options_train_and_keep_geometry(overrides):
    model = models.create("unet", 3, depth=2, base_features=4, **overrides)
    x = jax.random.normal(jax.random.key(0), (2, 44, 44, 1))
    variables = model.init(jax.random.key(1), x)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params},
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        return jnp.mean(logits**2)

    value, grads = jax.value_and_grad(loss)(variables["params"])
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    out = models.unet_output_size(44, depth=2)
    assert output_shape(model, (2, 44, 44, 1)) == (2, out, out, 3)


def test_unet_skip_none_has_fewer_parameters_and_params_in_data_flow_order():
    concat = models.create("unet", 2, depth=2, base_features=4)
    none = models.create("unet", 2, depth=2, base_features=4, skip="none")
    assert param_count(none, (1, 44, 44, 1)) < param_count(concat, (1, 44, 44, 1))
    names = list(
        jax.eval_shape(concat.init, jax.random.key(0), jnp.zeros((1, 44, 44, 1)))["params"]
    )
    assert (
        names
        == sorted(names)
        == ["0_down_0", "0_down_1", "1_bottleneck", "2_up_0", "2_up_1", "3_head"]
    )


def test_remat_gives_the_same_gradients():
    x = jax.random.normal(jax.random.key(0), (1, 44, 44, 1))
    plain = models.create("unet", 2, depth=2, base_features=4)
    remat = models.create("unet", 2, depth=2, base_features=4, remat=True)
    params = plain.init(jax.random.key(1), x)["params"]
    grad = lambda m: jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x) ** 2))(params)  # noqa: E731
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        grad(plain),
        grad(remat),
    )


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet", {}, "unknown model 'resnet'"),
        ("unet", {"paddding": "SAME"}, r"no field\(s\) \['paddding'\]"),
        ("unet", {"padding": "FULL"}, "padding must be one of"),
        ("unet", {"skip": "mul"}, "skip must be one of"),
        ("unet", {"depth": 0}, "depth, base_features and num_classes >= 1"),
        ("fcn8s", {"output_stride": 4}, None),
    ],
)
def test_create_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        models.create(name, 2, **kwargs)


def test_create_rejects_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        models.create("unet", 0)
