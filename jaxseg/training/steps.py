"""The two jitted functions of training: ``train_step`` (augment -> model -> loss -> optax) and
``eval_step`` (a mergeable confusion matrix). Both are pure: the loop ``jax.jit``s them with the
batch sharded over the devices and the state replicated."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from jaxseg import augment, data, losses, metrics
from jaxseg.models import model_variables
from jaxseg.models.layers import center_crop
from jaxseg.training.accumulation import accumulate_gradients
from jaxseg.training.frozen import running_statistics_for_frozen, zero_frozen_gradients
from jaxseg.training.state import TrainState


def _crop_like(x, logits):
    if x is None:
        return None
    return center_crop(x[..., None], logits.shape[1], logits.shape[2])[..., 0]


def train_step(state: TrainState, batch: dict, *, config, aug: augment.AugmentParams, seed=None):
    """One update on a (global) batch; returns the new state and scalar metrics.

    ``seed`` (an integer, possibly traced: ``training.seeds`` vmaps over it) replaces
    ``config.seed`` as the source of the augmentation and dropout keys; ``None`` uses the config's.
    """
    rng = jax.random.fold_in(jax.random.key(config.seed if seed is None else seed), state.step)
    aug_key, dropout_key = jax.random.split(rng)
    images, labels, weights = batch["image"], batch["label"], batch.get("weight")
    chex.assert_rank([images, labels], [4, 3])
    chex.assert_equal_shape_prefix([images, labels], 3)
    if aug != augment.AugmentParams():
        images, labels, weights = augment.augment_batch(
            aug_key, images, labels, aug, weights, outside_label=data.IGNORE_INDEX
        )
    class_weights = jnp.asarray(config.class_weights, jnp.float32) if config.class_weights else None
    loss_weights = dict(config.loss)

    frozen = tuple(config.get("frozen", ()))

    def apply_fn(params, batch_stats, images, key):
        """Logits of a (micro-)batch, and the updated batch-norm statistics."""
        with running_statistics_for_frozen(frozen):
            logits, updates = state.apply_fn(
                model_variables(params, batch_stats),
                images,
                train=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
        return logits, updates.get("batch_stats", batch_stats)

    def sums_fn(logits, micro):
        """The loss's sums over one (micro-)batch ``(images, labels, weights)``."""
        _, labels, weights = micro
        return losses.segmentation_loss_sums(
            logits,
            _crop_like(labels, logits),
            names=loss_weights,
            ignore_label=data.IGNORE_INDEX,
            class_weights=class_weights,
            pixel_weights=_crop_like(weights, logits),
        )

    def total_fn(sums):
        return losses.segmentation_loss_from_sums(sums, weights=loss_weights)

    batch = (images, labels, weights)
    if config.grad_accum_steps == 1:

        def loss_fn(params):
            logits, batch_stats = apply_fn(params, state.batch_stats, images, dropout_key)
            total, parts = total_fn(sums_fn(logits, batch))
            return total, (parts, batch_stats)

        (loss, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
    else:
        grads, sums, batch_stats = accumulate_gradients(
            apply_fn,
            sums_fn,
            lambda sums: total_fn(sums)[0],
            state.params,
            state.batch_stats,
            batch,
            dropout_key,
            steps=config.grad_accum_steps,
            linear_in_logits=not loss_weights.get("dice"),
        )
        loss, parts = total_fn(sums)
    grads = zero_frozen_gradients(grads, frozen)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, {"loss": loss, **parts, "grad_norm": optax.tree.norm(grads)}


def eval_step(state: TrainState, batch: dict, *, num_classes: int, num_samples: int):
    """The confusion matrix of one (global) evaluation batch (padding examples not counted), a
    ``metrics.ConfusionMatrix`` to ``merge``, and the first ``num_samples`` images, labels and
    predictions for logging."""
    logits = state.apply_fn(state.variables, batch["image"], train=False)
    predictions = jnp.argmax(logits, -1)
    labels = _crop_like(batch["label"], logits)
    confusion = metrics.ConfusionMatrix.with_classes(
        num_classes, ignore_label=data.IGNORE_INDEX
    ).from_model_output(predictions=predictions, labels=labels, valid=batch["valid"])
    images = center_crop(batch["image"], logits.shape[1], logits.shape[2])
    samples = {"image": images, "label": labels, "prediction": predictions}
    return confusion, jax.tree.map(lambda x: x[:num_samples], samples)
