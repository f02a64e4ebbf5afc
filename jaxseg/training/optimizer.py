"""The optax optimizer and learning-rate schedule a config names."""

from __future__ import annotations

import optax


def create_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, schedule)``: a linear warm-up of ``warmup_steps``, then the schedule;
    weight decay decoupled for AdamW and L2 otherwise; global-norm clipping first."""
    lr, steps, warmup = config.learning_rate, config.num_train_steps, config.warmup_steps
    decay_steps = max(steps - warmup, 1)
    if config.schedule == "constant":
        body = optax.constant_schedule(lr)
    elif config.schedule == "polynomial":
        body = optax.polynomial_schedule(lr, 0.0, config.polynomial_power, decay_steps)
    else:
        body = optax.cosine_decay_schedule(lr, decay_steps)
    schedule = body
    if warmup > 0:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), body], [warmup])
    if config.optimizer == "adamw":  # Decoupled weight decay.
        tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        if config.optimizer == "sgd":
            tx = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
        else:
            tx = optax.adam(schedule)
        if config.weight_decay:  # L2: the decay joins the gradient before the optimizer.
            tx = optax.chain(optax.add_decayed_weights(config.weight_decay), tx)
    if config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, schedule
