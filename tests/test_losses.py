"""Losses against NumPy references and PyTorch, ignore handling, gradients, the weight map."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses

IGNORE = 255


def log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def valid_pixels(labels, num_classes, ignore_label):
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_label is not None:
        valid &= labels != ignore_label
    return valid


def ref_cross_entropy(logits, labels, ignore_label=None, class_weights=None, pixel_weights=None):
    """Pixel by pixel: sum c_y * w_p * nll / sum c_y over valid pixels."""
    num_classes = logits.shape[-1]
    log_probs = log_softmax(logits)
    valid = valid_pixels(labels, num_classes, ignore_label)
    numerator = denominator = 0.0
    for index in np.ndindex(labels.shape):
        if not valid[index]:
            continue
        y = labels[index]
        c = 1.0 if class_weights is None else class_weights[y]
        w = 1.0 if pixel_weights is None else pixel_weights[index]
        numerator += c * w * -log_probs[index + (y,)]
        denominator += c
    return numerator / denominator if denominator else 0.0


def ref_dice(logits, labels, ignore_label=None, smooth=1.0):
    num_classes = logits.shape[-1]
    probs = np.exp(log_softmax(logits))
    valid = valid_pixels(labels, num_classes, ignore_label)
    dices = []
    for k in range(num_classes):
        q = probs[..., k][valid]
        g = (labels[valid] == k).astype(np.float64)
        dices.append((2 * np.sum(q * g) + smooth) / (np.sum(q) + np.sum(g) + smooth))
    return 1.0 - np.mean(dices)


def ref_focal(logits, labels, gamma, alpha=None, ignore_label=None):
    num_classes = logits.shape[-1]
    log_probs = log_softmax(logits)
    valid = valid_pixels(labels, num_classes, ignore_label)
    total, count = 0.0, 0
    for index in np.ndindex(labels.shape):
        if not valid[index]:
            continue
        y = labels[index]
        p = np.exp(log_probs[index + (y,)])
        a = 1.0 if alpha is None else (alpha if np.isscalar(alpha) else alpha[y])
        total += a * (1 - p) ** gamma * -np.log(p)
        count += 1
    return total / count if count else 0.0


@pytest.fixture
def batch():
    """[2, 5, 6, 3] logits; labels with ignore (255) and one out-of-range label (7)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(2, 5, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 5, 6))
    labels[0, 0, :4] = IGNORE
    labels[1, 2, 3] = IGNORE
    labels[1, 4, 5] = 7
    pixel_weights = rng.uniform(0.5, 3.0, size=(2, 5, 6)).astype(np.float32)
    return logits, labels, pixel_weights


def test_cross_entropy_matches_numpy_reference(batch):
    logits, labels, pixel_weights = batch
    class_weights = np.array([0.2, 1.0, 3.0])
    for cw in (None, class_weights):
        for pw in (None, pixel_weights):
            got = losses.softmax_cross_entropy(
                logits, labels, ignore_label=IGNORE, class_weights=cw, pixel_weights=pw
            )
            want = ref_cross_entropy(logits, labels, IGNORE, cw, pw)
            np.testing.assert_allclose(got, want, rtol=1e-5)


def test_cross_entropy_matches_torch(batch):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    logits, labels, _ = batch
    labels = labels.copy()
    labels[1, 4, 5] = 1  # PyTorch rejects labels outside [0, K) that are not ignore_index
    class_weights = np.array([0.2, 1.0, 3.0], np.float32)
    torch_logits = torch.from_numpy(logits).permute(0, 3, 1, 2)  # NCHW
    torch_labels = torch.from_numpy(labels).long()
    for cw in (None, class_weights):
        want = F.cross_entropy(
            torch_logits,
            torch_labels,
            weight=None if cw is None else torch.from_numpy(cw),
            ignore_index=IGNORE,
        ).item()
        got = losses.softmax_cross_entropy(logits, labels, ignore_label=IGNORE, class_weights=cw)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_cross_entropy_exact_values():
    # Pixel a: logits (2, 0), label 0: nll = log(1 + e^-2). Pixel b: logits (0, 2), label 0:
    # nll = log(1 + e^2). Pixel c: label 255 with wild logits: ignored.
    logits = jnp.array([[[[2.0, 0.0], [0.0, 2.0], [1e4, -1e4]]]])
    labels = jnp.array([[[0, 0, IGNORE]]])
    a, b = math.log1p(math.exp(-2.0)), math.log1p(math.exp(2.0))
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, labels, ignore_label=IGNORE), (a + b) / 2, rtol=1e-6
    )
    # Class weights (3, 1), both labels 0: weights cancel -> (3a + 3b) / 6 = same mean.
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, labels, ignore_label=IGNORE, class_weights=[3.0, 1.0]),
        (a + b) / 2,
        rtol=1e-6,
    )
    # Labels (0, 1) with class weights (3, 1): pixel b now has nll a -> (3a + 1a) / (3 + 1) = a.
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(
            logits, jnp.array([[[0, 1, IGNORE]]]), ignore_label=IGNORE, class_weights=[3.0, 1.0]
        ),
        a,
        rtol=1e-6,
    )
    # Pixel weights (2, 4, nan at the ignored pixel) enter the numerator only: (2a + 4b) / 2.
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(
            logits, labels, ignore_label=IGNORE, pixel_weights=jnp.array([[[2.0, 4.0, np.nan]]])
        ),
        (2 * a + 4 * b) / 2,
        rtol=1e-6,
    )


def test_ignored_pixels_do_not_matter_and_all_ignored_is_zero(batch):
    logits, labels, pixel_weights = batch
    ignored = labels == IGNORE
    changed = np.where(ignored[..., None], 1e6, logits).astype(np.float32)
    for loss_fn in (losses.softmax_cross_entropy, losses.dice_loss, losses.focal_loss):
        before = loss_fn(logits, labels, ignore_label=IGNORE)
        after = loss_fn(changed, labels, ignore_label=IGNORE)
        np.testing.assert_allclose(before, after, rtol=1e-6)
    everything_ignored = np.full(labels.shape, IGNORE)
    for loss_fn in (losses.softmax_cross_entropy, losses.focal_loss):
        assert float(loss_fn(logits, everything_ignored, ignore_label=IGNORE)) == 0.0
    assert float(losses.dice_loss(logits, everything_ignored, ignore_label=IGNORE)) == 0.0
    assert float(losses.dice_loss(logits, everything_ignored, ignore_label=IGNORE, smooth=0)) == 0


def test_ignore_255_with_three_classes_no_nan():
    logits = jnp.zeros((1, 2, 2, 3))
    labels = jnp.array([[[0, 255], [255, 2]]])
    for loss_fn in (losses.softmax_cross_entropy, losses.dice_loss, losses.focal_loss):
        value = loss_fn(logits, labels, ignore_label=255)
        assert np.isfinite(value)
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, labels, ignore_label=255), math.log(3), rtol=1e-6
    )
    # Without declaring 255 as ignore it is out of range and also excluded (documented).
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), math.log(3), rtol=1e-6)


def test_dice_matches_numpy_reference(batch):
    logits, labels, _ = batch
    for smooth in (0.0, 1.0):
        got = losses.dice_loss(logits, labels, ignore_label=IGNORE, smooth=smooth)
        np.testing.assert_allclose(got, ref_dice(logits, labels, IGNORE, smooth), rtol=1e-5)


def test_dice_exact_value():
    # Two pixels, K = 2. Pixel 1: probs (0.75, 0.25), label 0. Pixel 2: probs (0.5, 0.5),
    # label 1. smooth = 0:
    #   class 0: 2 * 0.75 / (0.75 + 0.5 + 1) = 1.5 / 2.25 = 2/3
    #   class 1: 2 * 0.5 / (0.25 + 0.5 + 1) = 1 / 1.75 = 4/7
    #   loss = 1 - (2/3 + 4/7) / 2 = 1 - 13/21 = 8/21
    logits = jnp.log(jnp.array([[[[0.75, 0.25], [0.5, 0.5]]]]))
    got = losses.dice_loss(logits, jnp.array([[[0, 1]]]), smooth=0.0)
    np.testing.assert_allclose(got, 8 / 21, rtol=1e-6)


def test_focal_matches_numpy_reference_and_reduces_to_cross_entropy(batch):
    logits, labels, _ = batch
    alphas = (None, 0.25, np.array([0.5, 1.0, 2.0]))
    for gamma in (0.0, 0.5, 2.0):
        for alpha in alphas:
            got = losses.focal_loss(logits, labels, gamma=gamma, alpha=alpha, ignore_label=IGNORE)
            want = ref_focal(logits, labels, gamma, alpha, IGNORE)
            np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(
        losses.focal_loss(logits, labels, gamma=0.0, ignore_label=IGNORE),
        losses.softmax_cross_entropy(logits, labels, ignore_label=IGNORE),
        rtol=1e-6,
    )


def test_focal_exact_value():
    # p = 0.75, label 0, gamma 2, alpha (0.25, 1): 0.25 * 0.25^2 * -log(0.75); the second pixel
    # (p = 0.5, label 1, alpha 1): 1 * 0.5^2 * -log 0.5. Mean over the two pixels.
    logits = jnp.log(jnp.array([[[[0.75, 0.25], [0.5, 0.5]]]]))
    want = (0.25 * 0.0625 * -math.log(0.75) + 0.25 * -math.log(0.5)) / 2
    got = losses.focal_loss(logits, jnp.array([[[0, 1]]]), gamma=2.0, alpha=[0.25, 1.0])
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "focal", "focal_half"])
def test_gradients_finite_and_zero_at_ignored_pixels(batch, name):
    logits, labels, pixel_weights = batch
    labels = labels.copy()
    logits = logits.copy()
    logits[0, 1, 1] = [40.0, -40.0, -40.0]  # a confident pixel: p == 1 in float32
    labels[0, 1, 1] = 0

    def loss(x):
        if name == "cross_entropy":
            return losses.softmax_cross_entropy(
                x,
                labels,
                ignore_label=IGNORE,
                class_weights=[1.0, 2.0, 0.5],
                pixel_weights=pixel_weights,
            )
        if name == "dice":
            return losses.dice_loss(x, labels, ignore_label=IGNORE)
        gamma = 2.0 if name == "focal" else 0.5
        return losses.focal_loss(x, labels, gamma=gamma, ignore_label=IGNORE)

    grads = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(logits)))
    assert np.all(np.isfinite(grads))
    excluded = ~valid_pixels(labels, 3, IGNORE)
    assert excluded.sum() == 6  # five 255s and one 7
    assert np.all(grads[excluded] == 0.0)
    assert np.any(grads[~excluded] != 0.0)


def test_losses_jit_and_shape_errors(batch):
    logits, labels, _ = batch
    jitted = jax.jit(lambda x, y: losses.softmax_cross_entropy(x, y, ignore_label=IGNORE))
    np.testing.assert_allclose(
        jitted(logits, labels), losses.softmax_cross_entropy(logits, labels, ignore_label=IGNORE)
    )
    with pytest.raises(ValueError, match="expected logits"):
        losses.dice_loss(logits, labels[:, :4])
    with pytest.raises(ValueError, match="class_weights"):
        losses.softmax_cross_entropy(logits, labels, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="pixel_weights"):
        losses.softmax_cross_entropy(logits, labels, pixel_weights=np.ones((2, 5, 5)))


def test_segmentation_loss_weighted_sum_and_unknown_name(batch):
    logits, labels, pixel_weights = batch
    total, parts = jax.jit(
        lambda x: losses.segmentation_loss(
            x,
            labels,
            weights={"cross_entropy": 1.0, "dice": 0.5, "focal": 2.0},
            ignore_label=IGNORE,
            pixel_weights=pixel_weights,
            focal_gamma=1.0,
        )
    )(logits)
    assert set(parts) == {"cross_entropy", "dice", "focal"}
    ce = losses.softmax_cross_entropy(
        logits, labels, ignore_label=IGNORE, pixel_weights=pixel_weights
    )
    dice = losses.dice_loss(logits, labels, ignore_label=IGNORE)
    focal = losses.focal_loss(logits, labels, gamma=1.0, ignore_label=IGNORE)
    np.testing.assert_allclose(parts["cross_entropy"], ce, rtol=1e-6)
    np.testing.assert_allclose(total, ce + 0.5 * dice + 2.0 * focal, rtol=1e-6)
    with pytest.raises(ValueError, match=r"unknown loss name\(s\) \['lovasz'\]"):
        losses.segmentation_loss(
            logits, labels, weights={"dice": 1.0, "lovasz": 1.0}, ignore_label=None
        )
    with pytest.raises(ValueError, match="empty"):
        losses.segmentation_loss(logits, labels, weights={}, ignore_label=None)


def test_docstring_examples():
    result = doctest.testmod(losses, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
