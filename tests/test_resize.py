"""Resizing as Pillow does it, in jax (for exported functions) and on the host."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxseg import resize

SIZES = [((96, 96), (42, 54)), ((37, 45), (42, 54)), ((300, 211), (42, 54)), ((42, 54), (42, 54)),
         ((50, 33), (180, 240)), ((360, 480), (180, 240))]  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
def test_uint8_resize_is_pillows_bilinear_to_one_level(channels):
    rng = np.random.default_rng(0)
    equal = total = 0
    for (h, w), size in SIZES:
        x = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(x[..., 0] if channels == 1 else x).resize(
            size[::-1], Image.BILINEAR)).reshape(*size, channels)  # fmt: skip
        got = np.asarray(jax.jit(lambda a, s=size: resize.resize_uint8(a, s))(x[None]))[0]
        assert got.dtype == np.uint8 and got.shape == (*size, channels)
        assert np.abs(got.astype(int) - pil).max() <= 1
        equal, total = equal + (got == pil).sum(), total + got.size
        if (h, w) == size:
            np.testing.assert_array_equal(got, x)
    assert equal / total > 0.99


def test_host_weights_are_pillows_exactly():
    # Pillow's 8-bit coefficients, from the same float64 weights: one pass equals Pillow's.
    rng = np.random.default_rng(1)
    for n, m in ((1000, 40), (96, 42), (33, 240), (45, 54)):
        x = rng.integers(0, 256, (1, n), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(x).resize((m, 1), Image.BILINEAR))[0]
        k = np.floor(resize.weights(n, m) * (1 << resize.PRECISION_BITS) + 0.5).astype(np.int64)
        ours = np.clip((x[0].astype(np.int64) @ k.T + (1 << 21)) >> 22, 0, 255)
        np.testing.assert_array_equal(ours, pil)


def test_score_resize_equals_jax_image_resize_on_host_and_traced():
    rng = np.random.default_rng(2)
    for (h, w), size in SIZES:
        scores = rng.random((h, w, 4)).astype(np.float32)
        want = np.asarray(jax.image.resize(scores, (*size, 4), "linear"))
        host = resize.resize_scores(scores, size)
        assert host.dtype == np.float32
        np.testing.assert_allclose(host, want, atol=1e-5)
        traced = jax.jit(lambda s, size=size: resize.resize_scores(s, size, jnp))(scores[None])
        np.testing.assert_allclose(np.asarray(traced)[0], want, atol=1e-5)
    np.testing.assert_allclose(resize.weights(7, 3).sum(1), 1.0)
