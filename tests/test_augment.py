"""Tests for jaxseg.augment: exactness, SciPy parity, image/mask alignment, parameter checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxseg import augment as aug
from jaxseg.augment import AugmentParams

H, W = 32, 48
LEVELS = (1 / 3, 2 / 3)  # thresholds that turn the smooth channel into a 3-class mask
jit_batch = jax.jit(aug.augment_batch, static_argnames="params")


def make_example(h=H, w=W, seed=0):
    """Image whose channels 0 and 1 encode each pixel's (row, col), channel 2 is smooth noise.

    Bilinear resampling of a linear ramp returns the sampled coordinate, so an augmented image
    says where each output pixel came from; the mask is the quantised smooth channel.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(h) / (h - 1), np.arange(w) / (w - 1), indexing="ij")
    smooth = ndi.gaussian_filter(rng.standard_normal((h, w)), 4, mode="wrap")
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    image = np.stack([rows, cols, smooth], -1).astype(np.float32)
    mask = np.digitize(smooth, LEVELS).astype(np.int32)
    weights = rng.random((h, w)).astype(np.float32)
    return image, mask, weights


def batch(n, h=H, w=W):
    image, mask, weights = make_example(h, w)
    return np.stack([image] * n), np.stack([mask] * n), np.stack([weights] * n)


def assert_aligned(out_image, out_mask, out_weights, image, mask, weights, outside_label=-1):
    """Mask and weights equal the source pixel that the image says it was sampled from."""
    out_image, out_mask, out_weights = map(np.asarray, (out_image, out_mask, out_weights))
    h, w = mask.shape
    rows, cols = out_image[..., 0] * (h - 1), out_image[..., 1] * (w - 1)
    inside = out_mask != outside_label
    tie = (np.abs(rows % 1 - 0.5) < 1e-3) | (np.abs(cols % 1 - 0.5) < 1e-3)
    check = inside & ~tie
    assert check.mean() > 0.5
    r = np.clip(np.round(rows).astype(int), 0, h - 1)
    c = np.clip(np.round(cols).astype(int), 0, w - 1)
    np.testing.assert_array_equal(out_mask[check], mask[r, c][check])
    np.testing.assert_array_equal(out_weights[check], weights[r, c][check])
    # The mask derived from the augmented image agrees except near class boundaries.
    derived = np.digitize(out_image[..., 2], LEVELS)
    assert (derived == out_mask)[inside].mean() > 0.9
    assert np.all(out_image[~inside] == 0) and np.all(out_weights[~inside] == 0)


def test_defaults_are_identity():
    image, mask, weights = make_example()
    out = aug.augment(jax.random.key(0), image, mask.astype(np.uint8), AugmentParams(), weights)
    np.testing.assert_array_equal(out[0], image)
    np.testing.assert_array_equal(out[1], mask)
    assert out[1].dtype == jnp.uint8
    np.testing.assert_array_equal(out[2], weights)


@pytest.mark.parametrize("mode", ["mirror", "ignore"])
def test_zero_strength_ops_are_identity_through_resample(mode):
    params = AugmentParams(
        rotate_prob=1, scale_prob=1, translate_prob=1, elastic_prob=1, elastic_std=0.0,
        simard_prob=1, simard_alpha=0.0, brightness_prob=1, out_of_bounds=mode,
    )  # fmt: skip
    assert params.geometric
    images, masks, weights = batch(2)
    out = jit_batch(jax.random.key(1), images, masks, params, weights)
    for got, want in zip(out, (images, masks, weights)):
        np.testing.assert_array_equal(got, want)


PARAMS = AugmentParams(
    flip_h_prob=0.5, rotate_prob=1, rotate_max_degrees=20, scale_prob=0.5, scale_min=0.8,
    scale_max=1.2, elastic_prob=1, elastic_std=3.0, brightness_prob=1, brightness_max_delta=0.1,
    noise_prob=1, noise_std=0.02,
)  # fmt: skip


def test_same_key_same_output_different_keys_differ():
    image, mask, _ = make_example()
    f = jax.jit(aug.augment, static_argnames="params")
    a, b, c = (f(jax.random.key(k), image, mask, PARAMS) for k in (3, 3, 4))
    for x, y in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])
    assert np.any(a[1] != c[1])


@pytest.mark.parametrize("flip_v", [False, True])
@pytest.mark.parametrize("flip_h", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_flips_and_rot90_exact(flip_v, flip_h, k):
    image, mask, weights = make_example(40, 40)
    matrix = aug.affine_matrix(image.shape[:2], flip_v=flip_v, flip_h=flip_h, rot90=k)
    coords = aug.sampling_coords(matrix, image.shape[:2])
    out = aug.resample(image, mask, coords, weights=weights)
    for got, x in zip(out, (image, mask, weights)):
        x = np.flip(x, 0) if flip_v else x
        x = np.flip(x, 1) if flip_h else x
        np.testing.assert_array_equal(got, np.rot90(x, k))  # numpy: flips first, then the turn


def test_random_flips_and_rot90_exact():
    images, masks, _ = batch(16, 40, 40)
    flips = jit_batch(jax.random.key(0), images, masks, AugmentParams(flip_h_prob=1))
    np.testing.assert_array_equal(flips[0], np.flip(images, 2))
    np.testing.assert_array_equal(flips[1], np.flip(masks, 2))
    flips = jit_batch(jax.random.key(0), images, masks, AugmentParams(flip_v_prob=1))
    np.testing.assert_array_equal(flips[1], np.flip(masks, 1))
    turns = jit_batch(jax.random.key(0), images, masks, AugmentParams(rot90_prob=1))
    seen = set()
    for out_image, out_mask in zip(*turns[:2]):
        (k,) = [k for k in (1, 2, 3) if np.array_equal(out_image, np.rot90(images[0], k))]
        np.testing.assert_array_equal(out_mask, np.rot90(masks[0], k))
        seen.add(k)
    assert seen == {1, 2, 3}


def test_rot90_needs_square_image():
    image, mask, _ = make_example()
    with pytest.raises(ValueError, match="square"):
        aug.augment(jax.random.key(0), image, mask, AugmentParams(rot90_prob=0.5))


def test_rotation_and_scale_conventions():
    shape = (40, 40)
    np.testing.assert_allclose(
        aug.affine_matrix(shape, rotate=90.0), aug.affine_matrix(shape, rot90=1), atol=1e-5
    )
    # Zoom by 2 about the centre: output pixel centre + 2 samples input centre + 1.
    coords = aug.sampling_coords(aug.affine_matrix((41, 41), scale=2.0), (41, 41))
    np.testing.assert_allclose(coords[:, 20, 22], [20, 21])
    np.testing.assert_allclose(coords[:, 22, 20], [21, 20])


@pytest.mark.parametrize("mode", ["mirror", "ignore"])
def test_resample_matches_scipy(mode):
    image, mask, weights = make_example()
    key_a, key_b = jax.random.split(jax.random.key(0))
    field = aug.unet_displacement(key_a, (H, W), std=20.0)  # reaches beyond one reflection
    field += aug.simard_displacement(key_b, (H, W), alpha=100.0, sigma=3.0)
    matrix = aug.affine_matrix((H, W), rotate=17.0, scale=1.1)
    coords = np.asarray(aug.sampling_coords(matrix, (H, W), field))
    size = np.array([H, W])[:, None, None]
    assert np.any((coords < 1 - size) | (coords > 2 * (size - 1)))
    out = aug.resample(image, mask, coords, weights=weights, out_of_bounds=mode)
    scipy_mode = "mirror" if mode == "mirror" else "nearest"
    expected_image = np.stack(
        [ndi.map_coordinates(image[..., c], coords, order=1, mode=scipy_mode) for c in range(3)],
        -1,
    )
    expected_mask = ndi.map_coordinates(mask, coords, order=0, mode=scipy_mode)
    expected_weights = ndi.map_coordinates(weights, coords, order=0, mode=scipy_mode)
    if mode == "ignore":
        outside = np.any((coords < 0) | (coords > size - 1), axis=0)
        assert 0.1 < outside.mean() < 0.9
        expected_image[outside], expected_mask[outside], expected_weights[outside] = 0, -1, 0
    tie = np.any(np.abs(coords % 1 - 0.5) < 1e-4, axis=0)
    np.testing.assert_allclose(out[0], expected_image, atol=2e-5)
    np.testing.assert_array_equal(np.asarray(out[1])[~tie], expected_mask[~tie])
    np.testing.assert_array_equal(np.asarray(out[2])[~tie], expected_weights[~tie])


def test_integer_translation_ignore_band_and_mirror():
    image, mask, weights = make_example()
    coords = aug.sampling_coords(aug.affine_matrix((H, W), translate=(3, -5)), (H, W))
    out_image, out_mask, out_weights = aug.resample(
        image, mask, coords, weights=weights, out_of_bounds="ignore", outside_label=7
    )
    band = np.zeros((H, W), bool)
    band[:3], band[:, -5:] = True, True
    np.testing.assert_array_equal(np.asarray(out_mask) == 7, band)
    np.testing.assert_array_equal(out_mask[3:, :-5], mask[:-3, 5:])
    np.testing.assert_array_equal(out_image[3:, :-5], image[:-3, 5:])
    assert np.all(np.asarray(out_image)[band] == 0) and np.all(np.asarray(out_weights)[band] == 0)
    # 'mirror' is numpy's pad mode 'reflect' (edge pixel not repeated), i.e. SciPy's 'mirror'.
    out_image, out_mask, _ = aug.resample(image, mask, coords, out_of_bounds="mirror")
    padded = np.pad(mask, ((3, 3), (5, 5)), mode="reflect")
    np.testing.assert_array_equal(out_mask, padded[:H, 10 : 10 + W])
    np.testing.assert_array_equal(out_mask, ndi.shift(mask, (3, -5), order=0, mode="mirror"))
    padded = np.pad(image, ((3, 3), (5, 5), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(out_image, padded[:H, 10 : 10 + W])


def test_random_translation_is_whole_pixels_with_exact_ignore_band():
    images, masks, _ = batch(8)
    params = AugmentParams(translate_prob=1, translate_max_fraction=0.25, out_of_bounds="ignore")
    out_images, out_masks, _ = jit_batch(jax.random.key(5), images, masks, params)
    shifts = []
    for out_image, out_mask in zip(np.asarray(out_images), np.asarray(out_masks)):
        matches = []
        for dy in range(-8, 9):
            for dx in range(-12, 13):
                want = np.full((H, W), -1)
                want[max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = masks[0][
                    max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
                ]
                if np.array_equal(out_mask, want):
                    matches.append((dy, dx))
        assert len(matches) == 1
        shifts.append(matches[0])
        dy, dx = matches[0]
        np.testing.assert_array_equal(out_image[out_mask == -1], 0)
        inside = out_mask != -1
        np.testing.assert_array_equal(
            out_image[inside], np.roll(images[0], (dy, dx), (0, 1))[inside]
        )
    assert len(set(shifts)) > 4


ALIGNMENT_CASES = {
    "flips": (AugmentParams(flip_v_prob=0.5, flip_h_prob=0.5), (H, W)),
    "rot90": (AugmentParams(rot90_prob=1), (40, 40)),
    "rotate": (AugmentParams(rotate_prob=1, rotate_max_degrees=30), (H, W)),
    "scale": (AugmentParams(scale_prob=1, scale_min=0.7, scale_max=1.4), (H, W)),
    "translate": (AugmentParams(translate_prob=1, translate_max_fraction=0.2), (H, W)),
    "elastic": (AugmentParams(elastic_prob=1, elastic_std=4.0), (H, W)),
    "simard": (AugmentParams(simard_prob=1, simard_alpha=60.0, simard_sigma=3.0), (H, W)),
    "all": (
        AugmentParams(
            flip_v_prob=0.5,
            flip_h_prob=0.5,
            rot90_prob=0.75,
            rotate_prob=1,
            rotate_max_degrees=15,
            scale_prob=1,
            scale_min=0.8,
            scale_max=1.25,
            translate_prob=1,
            translate_max_fraction=0.1,
            elastic_prob=1,
            elastic_std=3.0,
            simard_prob=1,
            simard_alpha=30.0,
            simard_sigma=3.0,
        ),
        (40, 40),
    ),  # fmt: skip
}


@pytest.mark.parametrize("mode", ["mirror", "ignore"])
@pytest.mark.parametrize("case", ALIGNMENT_CASES)
def test_image_and_mask_stay_aligned(case, mode):
    params, shape = ALIGNMENT_CASES[case]
    params = dataclasses.replace(params, out_of_bounds=mode)
    images, masks, weights = batch(4, *shape)
    out = jit_batch(jax.random.key(2), images, masks, params, weights)
    changed = 0
    for i in range(4):
        assert_aligned(*(x[i] for x in out), images[0], masks[0], weights[0])
        changed += not np.array_equal(out[0][i], images[0])
    assert changed >= 2
    if case == "all":  # the check can fail: a one-pixel slip of the mask is caught
        with pytest.raises(AssertionError):
            slipped = np.roll(out[1][0], 1, axis=1)
            assert_aligned(out[0][0], slipped, out[2][0], images[0], masks[0], weights[0])


def test_unet_field_std_and_smoothness():
    shape, std = (33, 49), 10.0  # odd sizes: the middle coarse node sits on pixel (16, 24)
    keys = jax.random.split(jax.random.key(0), 2000)
    fields = np.asarray(jax.jit(jax.vmap(lambda k: aug.unet_displacement(k, shape, 3, std)))(keys))
    coarse = std * jax.random.normal(keys[0], (2, 3, 3))
    np.testing.assert_allclose(fields[0, :, 16, 24], coarse[:, 1, 1], rtol=1e-5)
    resized = jax.image.resize(coarse, (2, *shape), method="cubic")  # bicubic upsampling
    np.testing.assert_allclose(fields[0], resized, atol=1e-5)
    centre = fields[:, :, 16, 24]
    assert abs(centre.std() - std) < 0.05 * std and abs(centre.mean()) < 0.06 * std
    assert 0.5 * std < fields.std() <= 1.02 * std
    step = np.diff(fields, axis=-1)  # smooth: neighbours differ by a small fraction of std
    assert np.sqrt((step**2).mean()) < 0.1 * std


def test_gaussian_matrix_matches_scipy_including_multiple_reflections():
    rng = np.random.default_rng(0)
    for n, sigma in ((48, 3.0), (10, 4.0), (7, 0.7)):
        x = rng.standard_normal((n, 5))
        np.testing.assert_allclose(
            aug.gaussian_matrix(n, sigma) @ x, ndi.gaussian_filter1d(x, sigma, axis=0), atol=1e-6
        )


def test_simard_field_matches_scipy_gaussian_filter():
    key, alpha, sigma = jax.random.key(3), 34.0, 4.0
    field = aug.simard_displacement(key, (H, W), alpha, sigma)
    u = np.asarray(jax.random.uniform(key, (2, H, W), minval=-1.0, maxval=1.0), np.float64)
    expected = np.stack([alpha * ndi.gaussian_filter(u[i], sigma, mode="reflect") for i in (0, 1)])
    np.testing.assert_allclose(field, expected, atol=1e-4)
    assert np.abs(expected).max() > 1.0


def photometric_input():
    image = np.full((4, 6, 3), 0.5, np.float32)
    image[0, :3], image[1, :2], image[2] = 0.0, 1.0, 0.9
    image[..., 1] *= 0.5
    return image


def run_photometric(params, n=8, image=None):
    image = photometric_input() if image is None else image
    images = np.stack([image] * n)
    masks = np.arange(images[..., 0].size).reshape(images.shape[:3])
    weights = masks / 7.0
    out_images, out_masks, out_weights = jit_batch(
        jax.random.key(7), images, masks, params, weights
    )
    np.testing.assert_array_equal(out_masks, masks)  # photometric ops leave mask and weights alone
    np.testing.assert_array_equal(out_weights, weights.astype(np.float32))
    return image, np.asarray(out_images)


def test_brightness():
    image, out = run_photometric(AugmentParams(brightness_prob=1, brightness_max_delta=0.3))
    deltas = out[:, 3, 5, 0] - image[3, 5, 0]  # a 0.5 pixel: never clipped
    assert np.all(np.abs(deltas) <= 0.3) and len(np.unique(deltas.round(6))) == len(deltas)
    for delta, got in zip(deltas, out):
        np.testing.assert_allclose(got, np.clip(image + delta, 0, 1), atol=1e-6)


def test_contrast_gamma_exact():
    image, out = run_photometric(AugmentParams(contrast_prob=1, contrast_min=2, contrast_max=2))
    mean = image.mean((0, 1))
    np.testing.assert_allclose(
        out, np.broadcast_to(np.clip((image - mean) * 2 + mean, 0, 1), out.shape), atol=1e-6
    )
    image, out = run_photometric(AugmentParams(gamma_prob=1, gamma_min=2, gamma_max=2))
    np.testing.assert_allclose(out, np.broadcast_to(image**2, out.shape), atol=1e-6)


def test_noise_and_probability():
    grey = np.full((32, 32, 3), 0.5, np.float32)
    _, out = run_photometric(AugmentParams(noise_prob=1, noise_std=0.05), n=2, image=grey)
    assert abs((out - 0.5).std() - 0.05) < 0.005 and abs((out - 0.5).mean()) < 0.005
    params = AugmentParams(brightness_prob=0.5, brightness_max_delta=0.3)
    image, out = run_photometric(params, n=200)
    changed = np.any(out != image, axis=(1, 2, 3)).mean()
    assert 0.35 < changed < 0.65


def test_from_dict():
    params = AugmentParams.from_dict(
        {"flip_h_prob": 0.5, "scale_min": 0.5, "out_of_bounds": "ignore"}
    )
    assert params == AugmentParams(flip_h_prob=0.5, scale_min=0.5, out_of_bounds="ignore")
    assert hash(params) == hash(AugmentParams.from_dict(dataclasses.asdict(params)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.flip_h_prob = 1.0
    with pytest.raises(ValueError, match=r"Unknown AugmentParams keys \['flip_prob', 'rotate'\]"):
        AugmentParams.from_dict({"flip_prob": 0.5, "rotate": 1, "flip_h_prob": 0.5})
    bad = {
        "rotate_prob": 1.5, "noise_std": -0.1, "scale_min": 1.5, "scale_max": 1.2,
        "elastic_grid": 1, "gamma_min": 0.0, "out_of_bounds": "wrap", "simard_sigma": 0.0,
        "flip_v_prob": float("nan"),
    }  # fmt: skip
    with pytest.raises(ValueError) as error:
        AugmentParams.from_dict(bad)
    expected = ["rotate_prob=1.5 not in [0, 1]", "noise_std=-0.1 < 0", "scale_min=1.5 > scale_max",
                "elastic_grid=1", "gamma_min=0.0 <= 0", "out_of_bounds='wrap'",
                "simard_sigma=0.0 <= 0", "flip_v_prob=nan"]  # fmt: skip
    for text in expected:
        assert text in str(error.value)


def test_augment_batch_jit_per_example_keys():
    images, masks, weights = batch(4)
    key = jax.random.key(11)
    out = jit_batch(key, images, masks, PARAMS, weights)
    assert (
        out[0].shape == images.shape and out[1].shape == masks.shape and out[0].dtype == jnp.float32
    )
    augment_one = jax.jit(aug.augment, static_argnames="params")
    for i, k in enumerate(jax.random.split(key, 4)):
        one = augment_one(k, images[i], masks[i], PARAMS, weights[i])
        np.testing.assert_allclose(out[0][i], one[0], atol=1e-5)
        np.testing.assert_array_equal(out[1][i], one[1])
        for j in range(i):
            assert not np.allclose(out[0][i], out[0][j])
    assert jit_batch(key, images, masks, PARAMS)[2] is None


def test_augment_batch_on_data_sharded_batch():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    images, masks, _ = batch(8)
    sharded = [jax.device_put(x, shard) for x in (images, masks)]
    out = jax.jit(aug.augment_batch, static_argnames="params")(jax.random.key(3), *sharded, PARAMS)
    want = jit_batch(jax.random.key(3), images, masks, PARAMS)
    np.testing.assert_allclose(out[0], want[0], atol=1e-5)
    np.testing.assert_array_equal(out[1], want[1])
