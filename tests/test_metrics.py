"""Confusion matrix and FCN metrics: hand-computed values, ignore/valid masks, clu merging,
jit, and summing over 8 fake devices."""

import doctest
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metrics as clu_metrics
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxseg import metrics

IGNORE = 255

# 3 classes, 4x4, two ignore pixels.
LABELS = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, IGNORE, 1],
        [2, 2, 2, IGNORE],
    ]
)
PREDICTIONS = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 2],
        [2, 0, 0, 1],
        [2, 2, 1, 0],
    ]
)
# (truth, prediction) pairs, row by row, ignore pixels skipped:
#   row 0: (0,0) (0,1) (1,1) (1,1)     row 1: (0,0) (0,0) (1,1) (1,2)
#   row 2: (2,2) (2,0)  --   (1,1)     row 3: (2,2) (2,2) (2,1)  --
# truth 0: 3 x pred 0, 1 x pred 1; truth 1: 4 x pred 1, 1 x pred 2;
# truth 2: 1 x pred 0, 1 x pred 1, 3 x pred 2.
EXPECTED_CONFUSION = np.array([[3, 1, 0], [0, 4, 1], [1, 1, 3]])


def numpy_confusion(predictions, labels, num_classes, ignore_label=None, valid=None):
    keep = (labels >= 0) & (labels < num_classes) & (predictions >= 0)
    keep &= predictions < num_classes
    if ignore_label is not None:
        keep &= labels != ignore_label
    if valid is not None:
        keep &= valid.reshape(valid.shape + (1,) * (labels.ndim - valid.ndim))
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (labels[keep], predictions[keep]), 1)
    return out


def test_confusion_matrix_hand_computed():
    got = metrics.confusion_matrix(PREDICTIONS, LABELS, 3, ignore_label=IGNORE)
    assert got.dtype == jnp.int32 and got.shape == (3, 3)
    np.testing.assert_array_equal(got, EXPECTED_CONFUSION)
    jitted = jax.jit(metrics.confusion_matrix, static_argnums=2, static_argnames="ignore_label")
    np.testing.assert_array_equal(
        jitted(PREDICTIONS[None], LABELS[None], 3, ignore_label=IGNORE), EXPECTED_CONFUSION
    )


def test_confusion_matrix_valid_mask_and_out_of_range_labels():
    predictions = np.stack([PREDICTIONS, np.zeros((4, 4), int)])
    labels = np.stack([LABELS, np.ones((4, 4), int)])  # example 1 would add 16 to [1, 0]
    got = metrics.confusion_matrix(
        predictions, labels, 3, ignore_label=IGNORE, valid=np.array([True, False])
    )
    np.testing.assert_array_equal(got, EXPECTED_CONFUSION)
    # Labels outside [0, K) that are not the ignore label are not counted, nor are
    # out-of-range predictions.
    labels = LABELS.copy()
    labels[0, 0] = 7  # was (0, 0)
    labels[0, 1] = -1  # was (0, 1)
    predictions = PREDICTIONS.copy()
    predictions[1, 3] = 5  # was (1, 2)
    got = metrics.confusion_matrix(predictions, labels, 3, ignore_label=IGNORE)
    np.testing.assert_array_equal(got, EXPECTED_CONFUSION - [[1, 1, 0], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="valid"):
        metrics.confusion_matrix(PREDICTIONS[None], LABELS[None], 3, valid=np.ones(2, bool))
    with pytest.raises(ValueError, match="one shape"):
        metrics.confusion_matrix(PREDICTIONS, LABELS[:3], 3)


def test_segmentation_metrics_hand_computed():
    m = metrics.segmentation_metrics(EXPECTED_CONFUSION)
    # 10 of 14 counted pixels are right.
    assert m["pixel_accuracy"] == pytest.approx(10 / 14)
    # Per-class accuracy n_ii / t_i with t = (4, 5, 5): 3/4, 4/5, 3/5.
    np.testing.assert_allclose(m["per_class_accuracy"], [3 / 4, 4 / 5, 3 / 5])
    assert m["mean_accuracy"] == pytest.approx((3 / 4 + 4 / 5 + 3 / 5) / 3)
    # Predicted counts p = column sums = (4, 6, 4). IoU = n_ii / (t_i + p_i - n_ii):
    # 3 / (4 + 4 - 3) = 3/5, 4 / (5 + 6 - 4) = 4/7, 3 / (5 + 4 - 3) = 1/2; mean = 39/70.
    np.testing.assert_allclose(m["per_class_iou"], [3 / 5, 4 / 7, 1 / 2])
    assert m["mean_iou"] == pytest.approx(39 / 70)
    # fwIoU = (4 * 3/5 + 5 * 4/7 + 5 * 1/2) / 14 = (543 / 70) / 14 = 543/980.
    assert m["frequency_weighted_iou"] == pytest.approx(543 / 980)
    # Dice = 2 n_ii / (t_i + p_i): 6/8, 8/11, 6/9.
    np.testing.assert_allclose(m["per_class_dice"], [3 / 4, 8 / 11, 2 / 3])
    assert m["mean_dice"] == pytest.approx((3 / 4 + 8 / 11 + 2 / 3) / 3)
    json.loads(json.dumps(m))  # plain floats and lists


def test_segmentation_metrics_absent_classes():
    # K = 4. Class 2 is predicted twice but absent from the ground truth; class 3 appears in
    # neither. Truth 0: 2 right, 1 predicted as 2; truth 1: 3 right, 1 predicted as 2.
    confusion = np.array([[2, 0, 1, 0], [0, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    m = metrics.segmentation_metrics(confusion)
    # Class 2: accuracy undefined (no true pixel), IoU = Dice = 0 (false positives count).
    # Class 3: undefined everywhere, left out of every mean.
    acc, iou, dice = m["per_class_accuracy"], m["per_class_iou"], m["per_class_dice"]
    assert math.isnan(acc[2]) and math.isnan(acc[3])
    assert iou[2] == 0.0 and dice[2] == 0.0
    assert math.isnan(iou[3]) and math.isnan(dice[3])
    # IoU: 2 / (3 + 2 - 2) = 2/3, 3 / (4 + 3 - 3) = 3/4, 0 -> mean over 3 classes.
    assert m["mean_iou"] == pytest.approx((2 / 3 + 3 / 4 + 0) / 3)
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7)
    # fwIoU weights by true frequency (3, 4, 0, 0) / 7: (3 * 2/3 + 4 * 3/4) / 7 = 5/7.
    assert m["frequency_weighted_iou"] == pytest.approx(5 / 7)
    empty = metrics.segmentation_metrics(np.zeros((2, 2), int))
    assert all(math.isnan(empty[key]) for key in ("pixel_accuracy", "mean_iou", "mean_accuracy"))
    with pytest.raises(ValueError, match="square"):
        metrics.segmentation_metrics(np.zeros((2, 3)))


# --------------------------------------------------------------------------------------------
# The mergeable metric.

Confusion3 = metrics.ConfusionMatrix.with_classes(3, ignore_label=IGNORE)


def random_batch(seed, batch=16, size=8, num_classes=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=(batch, size, size))
    labels[rng.random(labels.shape) < 0.1] = IGNORE
    predictions = np.where(
        rng.random(labels.shape) < 0.6, labels % num_classes, rng.integers(0, num_classes)
    )
    valid = np.ones(batch, bool)
    valid[-3:] = False
    return predictions.astype(np.int32), labels.astype(np.int32), valid


def test_merge_equals_confusion_of_concatenation():
    parts = [random_batch(seed, batch=4) for seed in range(3)]
    merged = Confusion3.empty()
    for predictions, labels, valid in parts:
        merged = merged.merge(
            Confusion3.from_model_output(predictions=predictions, labels=labels, valid=valid)
        )
    predictions, labels, valid = (np.concatenate(x) for x in zip(*parts))
    np.testing.assert_array_equal(
        merged.matrix, numpy_confusion(predictions, labels, 3, IGNORE, valid)
    )
    np.testing.assert_array_equal(
        merged.matrix,
        metrics.confusion_matrix(predictions, labels, 3, ignore_label=IGNORE, valid=valid),
    )
    assert merged.compute() == metrics.segmentation_metrics(np.asarray(merged.matrix))


def test_from_model_output_logits_mask_and_errors():
    predictions, labels, valid = random_batch(0, batch=4)
    logits = jax.nn.one_hot(predictions, 3) * 5.0
    from_logits = Confusion3.from_model_output(logits=logits, labels=labels, mask=valid)
    from_predictions = Confusion3.from_model_output(
        predictions=predictions, labels=labels, valid=valid, loss=1.0
    )
    np.testing.assert_array_equal(from_logits.matrix, from_predictions.matrix)
    # valid and mask together: an example must pass both (here examples 1 and 2).
    valid, mask = np.array([1, 1, 1, 0], bool), np.array([0, 1, 1, 1], bool)
    both = Confusion3.from_model_output(
        predictions=predictions, labels=labels, valid=valid, mask=mask
    )
    np.testing.assert_array_equal(
        both.matrix, numpy_confusion(predictions[1:3], labels[1:3], 3, IGNORE)
    )
    # The class count is static type information, not a pytree leaf; one class per arguments.
    assert len(jax.tree.leaves(Confusion3.empty())) == 1
    assert metrics.ConfusionMatrix.with_classes(3, ignore_label=IGNORE) is Confusion3
    with pytest.raises(ValueError, match=">= 1"):
        metrics.ConfusionMatrix.with_classes(0)
    with pytest.raises(TypeError, match="with_classes"):
        metrics.ConfusionMatrix.empty()
    with pytest.raises(ValueError, match="predictions or logits"):
        Confusion3.from_model_output(labels=labels)
    with pytest.raises(ValueError, match="4 classes"):
        Confusion3.from_model_output(logits=jnp.zeros((4, 8, 8, 4)), labels=labels)
    with pytest.raises(ValueError, match="merge"):
        Confusion3.empty().merge(metrics.ConfusionMatrix.with_classes(2).empty())


def fake_model(images):
    """Fixed logits: columns 0-1 score class 0, columns 2-3 score class 1, for every image."""
    width = images.shape[2]
    column_is_right = (jnp.arange(width) >= 2)[None, None, :, None]
    logits = jnp.where(column_is_right, jnp.array([0.0, 5.0]), jnp.array([5.0, 0.0]))
    return jnp.broadcast_to(logits, images.shape[:3] + (2,))


def test_fixed_logit_model_exact_miou_in_jitted_eval_loop():
    # Every 2 x 4 image has truth [[0, 0, 0, 255], [0, 0, 0, 1]]; predictions [[0, 0, 1, 1]] * 2.
    # Counted pixels per image: truth 0 x6 (4 predicted 0, 2 predicted 1), truth 1 x1 (predicted
    # 1). IoU_0 = 4 / (6 + 4 - 4) = 2/3, IoU_1 = 1 / (1 + 3 - 1) = 1/3: mIoU = 1/2 exactly,
    # pixel accuracy 5/7. Five images in batches of 2: the last batch carries a padded image
    # whose labels (all 1) would change the numbers if they were counted.
    Metrics = clu_metrics.Collection.create(
        confusion=metrics.ConfusionMatrix.with_classes(2, ignore_label=IGNORE),
        loss=clu_metrics.Average.from_output("loss"),
    )
    truth = np.array([[0, 0, 0, IGNORE], [0, 0, 0, 1]])

    @jax.jit
    def eval_step(images, labels, valid):
        logits = fake_model(images)
        return Metrics.single_from_model_output(
            logits=logits, labels=labels, mask=valid, loss=jnp.zeros(labels.shape[0])
        )

    collected = Metrics.empty()
    for start in range(0, 5, 2):
        count = min(2, 5 - start)
        labels = np.stack([truth] * count + [np.ones_like(truth)] * (2 - count))
        valid = np.arange(2) < count
        collected = collected.merge(eval_step(np.zeros((2, 2, 4, 1)), labels, valid))
    results = collected.compute()["confusion"]
    np.testing.assert_array_equal(collected.confusion.matrix, [[20, 10], [0, 5]])
    assert results["mean_iou"] == 0.5
    assert results["pixel_accuracy"] == pytest.approx(5 / 7)
    np.testing.assert_allclose(results["per_class_iou"], [2 / 3, 1 / 3])


def test_eight_devices_match_one_device():
    assert jax.device_count() == 8
    predictions, labels, valid = random_batch(7, batch=16)
    want = numpy_confusion(predictions, labels, 3, IGNORE, valid)

    def count(p, y, v):
        return Confusion3.from_model_output(predictions=p, labels=y, valid=v)

    one_device = jax.jit(count)(predictions, labels, valid).matrix
    np.testing.assert_array_equal(one_device, want)

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = [
        jax.device_put(x, NamedSharding(mesh, P("data"))) for x in (predictions, labels, valid)
    ]
    assert len(sharded[0].sharding.device_set) == 8
    global_jit = jax.jit(count)(*sharded).matrix
    np.testing.assert_array_equal(global_jit, want)

    # Per-device metrics inside shard_map, summed the clu way (all_gather + reduce) and by psum.
    def per_device(p, y, v):
        local = count(p, y, v)
        gathered = jax.lax.all_gather(local, "data").reduce()
        return gathered.matrix, jax.lax.psum(local.matrix, "data")

    # check_vma=False: JAX cannot see through clu's reduce() (a scan over the gathered copies)
    # that its result is the same on every device.
    gathered, summed = jax.jit(
        jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=P(), check_vma=False)
    )(*sharded)
    np.testing.assert_array_equal(gathered, want)
    np.testing.assert_array_equal(summed, want)


def test_docstring_examples():
    result = doctest.testmod(metrics)
    assert result.attempted >= 2 and result.failed == 0
