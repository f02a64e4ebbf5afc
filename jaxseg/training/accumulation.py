"""Gradient accumulation that equals one large batch, for losses that are ratios of sums."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def accumulate_gradients(
    apply_fn, sums_fn, total_fn, params, batch_stats, batch, key, *, steps, linear_in_logits
):
    """The gradient of ``total_fn(sums over the whole batch)``, one micro-batch at a time.

    The losses are ratios of sums over the whole batch (valid pixels, class and border weights,
    Dice's per-class sums), so averaging the micro-batches' losses is wrong whenever the
    micro-batches count different pixels. By the chain rule the gradient is
    ``sum_i J_i^T g``, with ``J_i`` the Jacobian of micro-batch ``i``'s sums and ``g`` the
    gradient of ``total_fn`` at the whole batch's sums: each micro-batch back-propagates ``g``.

    ``g`` needs the whole batch's sums first. When the loss is linear in every sum the logits
    enter (cross-entropy and focal: numerators over label-only denominators), ``g`` depends on
    the labels alone, and the sums are taken with zero logits without running the model. Dice
    is not linear, so ``linear_in_logits=False`` runs a forward pass per micro-batch first
    (same dropout keys), about a third more work per step.

    Batch norm normalises each micro-batch by its own statistics (as PyTorch does), so with batch
    norm the step equals one big batch only up to that; the running averages take one update
    per micro-batch, in order.

    Args:
      apply_fn: ``(params, batch_stats, images, key) -> (logits, new_batch_stats)``.
      sums_fn: ``(logits, micro_batch) -> sums`` (a pytree of arrays that add across batches).
      total_fn: ``sums -> scalar loss``.
      params: the parameters to differentiate.
      batch_stats: batch-norm statistics (or None).
      batch: ``(images, *others)``, arrays (or None) with the examples on axis 0. Example ``j``
        goes to micro-batch ``j % steps``, so every micro-batch spans every device.
      key: dropout key; micro-batch ``i`` uses ``fold_in(key, i)``.
      steps: the number of micro-batches.
      linear_in_logits: whether ``g`` may be taken from label-only sums (see above).

    Returns:
      ``(grads, sums, batch_stats)``: the whole batch's gradient and sums, and the statistics
      after the last micro-batch.
    """

    def split(x):
        return x.reshape(-1, steps, *x.shape[1:]).swapaxes(0, 1)

    micro = jax.tree.map(split, batch)
    inputs = (jnp.arange(steps), micro)
    add = functools.partial(jax.tree.map, jnp.add)
    first = jax.tree.map(lambda x: x[0], micro)
    logits_shape = jax.eval_shape(apply_fn, params, batch_stats, first[0], key)[0]
    zero_sums = jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(sums_fn, logits_shape, first)
    )

    def forward(total, inputs):
        i, micro = inputs
        if linear_in_logits:
            logits = jnp.zeros(logits_shape.shape, logits_shape.dtype)
        else:
            logits, _ = apply_fn(params, batch_stats, micro[0], jax.random.fold_in(key, i))
        return add(total, sums_fn(logits, micro)), None

    whole, _ = jax.lax.scan(forward, zero_sums, inputs)
    cotangent = jax.grad(total_fn)(whole)

    def backward(carry, inputs):
        grads, sums, batch_stats = carry
        i, micro = inputs

        def micro_sums_fn(params):
            logits, new_stats = apply_fn(params, batch_stats, micro[0], jax.random.fold_in(key, i))
            return sums_fn(logits, micro), new_stats

        micro_sums, vjp_fn, batch_stats = jax.vjp(micro_sums_fn, params, has_aux=True)
        (micro_grads,) = vjp_fn(cotangent)
        return (add(grads, micro_grads), add(sums, micro_sums), batch_stats), None

    init = (jax.tree.map(jnp.zeros_like, params), zero_sums, batch_stats)
    (grads, sums, batch_stats), _ = jax.lax.scan(backward, init, inputs)
    return grads, sums, batch_stats
