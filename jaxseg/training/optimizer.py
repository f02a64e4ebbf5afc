"""The optax optimizer and learning-rate schedule a config names, with parameter groups."""

from __future__ import annotations

import fnmatch

import optax
from flax import traverse_util

FROZEN = "frozen"


def create_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(optimizer, schedule)``: a linear warm-up of ``warmup_steps``, then the schedule;
    weight decay decoupled for AdamW and L2 otherwise; global-norm clipping first.

    Parameter groups (``optax.multi_transform``): parameters matching a ``config.frozen``
    pattern are not updated (no optimizer state, no decay); those matching a
    ``config.lr_multipliers`` pattern get their updates, hence their learning rate, scaled
    (the first matching pattern wins). The train step zeroes the frozen parameters' gradients
    first (``training.frozen``), so clipping sees the trained parameters' gradients only.
    """
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
    frozen = tuple(config.get("frozen", ()))
    multipliers = tuple((str(p), float(m)) for p, m in config.get("lr_multipliers", ()))
    for pattern, multiplier in multipliers:
        if not multiplier > 0:
            raise ValueError(
                f"config.lr_multipliers: {pattern!r} has multiplier {multiplier:g}; it must be "
                "> 0 (to keep a group unchanged, put its pattern in config.frozen)"
            )
    if frozen or multipliers:
        groups = {"default": tx, FROZEN: optax.set_to_zero()}
        groups.update({f"x{m:g}": optax.chain(tx, optax.scale(m)) for _, m in multipliers})
        tx = optax.multi_transform(groups, lambda params: param_groups(params, frozen, multipliers))
    if config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, schedule


def matches(path: str, patterns) -> bool:
    """Whether a ``/``-joined parameter path (``encoder/layer1_0/conv1/kernel``) matches a glob
    pattern, itself or through one of its modules (``'encoder'`` and ``'encoder/*'`` both match
    everything in the encoder)."""
    return any(
        fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p + "/*") for p in patterns
    )


def param_groups(params, frozen=(), multipliers=()) -> dict:
    """The group label of every parameter: ``'frozen'``, ``'x<multiplier>'`` or ``'default'``."""

    def label(path: tuple) -> str:
        name = "/".join(str(p) for p in path)
        if matches(name, frozen):
            return FROZEN
        for pattern, multiplier in multipliers:
            if matches(name, (pattern,)):
                return f"x{multiplier:g}"
        return "default"

    flat = traverse_util.flatten_dict(params)
    names = ["/".join(str(p) for p in path) for path in flat]
    for pattern in (*frozen, *(p for p, _ in multipliers)):
        if not any(matches(name, (pattern,)) for name in names):
            raise ValueError(
                f"parameter pattern {pattern!r} (config.frozen / config.lr_multipliers) matches "
                f"no parameter; the model's top-level modules are {sorted({n.split('/')[0] for n in names})}"
            )
    return traverse_util.unflatten_dict({path: label(path) for path in flat})
