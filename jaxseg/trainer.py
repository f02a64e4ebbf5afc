"""The training loop: ``train_and_evaluate(config, workdir)`` and the pieces it is made of.

One pure ``train_step`` (augment -> model -> loss -> optax) and ``eval_step`` (confusion matrix),
each ``jax.jit``-ed with the batch sharded over a ``('data',)`` mesh of every device and the
state replicated, so the same code runs on one CPU, eight fake CPU devices, a GPU, a TPU slice
or several hosts.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.experimental import multihost_utils
from tqdm import tqdm

from jaxseg import (
    augment,
    checkpoint,
    data,
    errors,
    flops,
    losses,
    metrics,
    models,
    parallel,
    summary,
    visualize,
    workdir_lock,
)
from jaxseg.data import weight_map
from jaxseg.models.layers import center_crop

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "polynomial")  # Each after a linear warm-up of warmup_steps.


class TrainState(train_state.TrainState):
    batch_stats: Any = None

    @property
    def variables(self) -> dict:
        """The model's variables: ``{'params': ...}``, plus ``'batch_stats'`` with batch norm."""
        return model_variables(self.params, self.batch_stats)


def model_variables(params, batch_stats=None) -> dict:
    """``{'params': params}``, with ``'batch_stats'`` added when the model has them."""
    return (
        {"params": params}
        if batch_stats is None
        else {"params": params, "batch_stats": batch_stats}
    )


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a config resolves to: the dataset, the model and its input geometry."""

    spec: data.DatasetSpec
    model: nn.Module
    input_size: tuple[int, int]  # Training crop fed to the model.
    eval_input_size: tuple[int, int]  # Evaluation input (eval_size plus the valid-padding margin).
    margin: int  # Mirror-extension so that labels line up with a valid-padding model's output.


def _positive(config, *names):
    for name in names:
        value = config[name]
        values = value if isinstance(value, (tuple, list)) else (value,)
        if not values or any(not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"config.{name} must be a positive integer (or pair); got {value!r}")


def resolve(config: ml_collections.ConfigDict) -> Setup:
    """Checks a config and builds its dataset spec and model; every bad value gets a clear error."""
    _positive(config, "batch_size", "eval_batch_size", "num_train_steps", "eval_every_steps")
    _positive(config, "checkpoint_every_steps", "log_every_steps", "input_size", "eval_size")
    _positive(config, "grad_accum_steps")
    if config.warmup_steps < 0:
        raise ValueError(f"config.warmup_steps must be >= 0; got {config.warmup_steps}")
    if len(config.resize_to) not in (0, 2):
        raise ValueError(f"config.resize_to must be () or (height, width); got {config.resize_to}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {SCHEDULES}")
    if config.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {config.dtype!r}; choose one of {tuple(DTYPES)}")
    if not config.learning_rate > 0:
        raise ValueError(f"config.learning_rate must be > 0; got {config.learning_rate}")
    if config.batch_size % config.grad_accum_steps:
        raise ValueError("config.batch_size must divide by config.grad_accum_steps")
    folder = {"class_names": tuple(config.class_names), "ignore_label": config.ignore_label}
    spec = data.get_spec(config.dataset, **(folder if config.dataset.startswith("folder:") else {}))
    if config.class_weights and len(config.class_weights) != spec.num_classes:
        raise ValueError(f"config.class_weights needs {spec.num_classes} values (one per class)")
    model = models.create(
        config.model, spec.num_classes, dtype=DTYPES[config.dtype], **config.model_kwargs.to_dict()
    )
    geometry = model.geometry()
    input_size = tuple(config.input_size)
    geometry.check_input(input_size)
    eval_input = tuple(config.eval_size)
    if geometry.valid_padding:  # Evaluation images are whole: the input covers them.
        eval_input = tuple(geometry.input_size_for_output(s) for s in eval_input)
    geometry.check_input(eval_input)
    return Setup(spec, model, input_size, eval_input, geometry.margin)


def create_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax optimizer and learning-rate schedule the config names."""
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


def create_train_state(config, setup: Setup, tx) -> TrainState:
    shape = (1, *setup.input_size, setup.spec.num_channels)
    variables = setup.model.init(jax.random.key(config.seed), jnp.zeros(shape), train=False)
    return TrainState.create(
        apply_fn=setup.model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats"),
    )


def _crop_like(x, logits):
    if x is None:
        return None
    return center_crop(x[..., None], logits.shape[1], logits.shape[2])[..., 0]


def train_step(state: TrainState, batch: dict, *, config, aug: augment.AugmentParams):
    """One update on a (global) batch; returns the new state and scalar metrics."""
    rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
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

    def apply_fn(params, batch_stats, images, key):
        """Logits of a (micro-)batch, and the updated batch-norm statistics."""
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
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, {"loss": loss, **parts, "grad_norm": optax.tree.norm(grads)}


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


def eval_step(state: TrainState, batch: dict, *, num_classes: int, num_samples: int):
    """Confusion matrix ``[K, K]`` of one (global) evaluation batch (padding not counted), and
    the first ``num_samples`` images, labels and predictions for logging."""
    logits = predict_logits(state, batch["image"])
    predictions = jnp.argmax(logits, -1)
    labels = _crop_like(batch["label"], logits)
    confusion = metrics.confusion_matrix(
        predictions, labels, num_classes, ignore_label=data.IGNORE_INDEX, valid=batch["valid"]
    )
    images = center_crop(batch["image"], logits.shape[1], logits.shape[2])
    samples = {"image": images, "label": labels, "prediction": predictions}
    return confusion, jax.tree.map(lambda x: x[:num_samples], samples)


def predict_logits(state: TrainState, images):
    return state.apply_fn(state.variables, images, train=False)


class _Preemption:
    """Turns SIGTERM into a flag the loop checks, so a preempted run saves and exits cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread (e.g. a notebook worker): no handler.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _loaders(config, setup: Setup):
    spec = setup.spec
    weight_fn = None
    if config.border_weights.enabled:
        weight_fn = functools.partial(
            weight_map.border_weight_map,
            w0=config.border_weights.w0,
            sigma=config.border_weights.sigma,
            foreground=config.border_weights.foreground,
            ignore_label=data.IGNORE_INDEX,
        )
    common = dict(
        data_dir=config.data_dir,
        manual_dir=config.manual_dir,
        resize_to=tuple(config.resize_to) or None,
        margin=setup.margin,
    )
    train_loader = data.create_loader(
        spec,
        config.train_split or spec.train_split,
        batch_size=config.batch_size // jax.process_count(),
        size=setup.input_size,
        train=True,
        seed=config.seed,
        weight_fn=weight_fn,
        worker_count=config.data_workers,
        **common,
    )
    eval_loader = data.create_loader(
        spec,
        config.eval_split or spec.eval_split,
        batch_size=config.eval_batch_size // jax.process_count(),
        size=setup.eval_input_size,
        train=False,
        **common,
    )
    return train_loader, eval_loader


def evaluate(state, eval_loader, eval_fn, num_batches, batch_sharding):
    """Runs an evaluation split once.

    Returns:
      (metrics dict: the FCN paper's four metrics and per-class IoU / Dice, logging samples).
    """
    confusion, samples = None, None
    for batch in data.eval_batches(eval_loader, num_batches):
        c, s = eval_fn(state, parallel.global_batch(batch, batch_sharding))
        confusion = c if confusion is None else confusion + c
        samples = s if samples is None else samples
    confusion = np.asarray(confusion)
    result = {**metrics.segmentation_metrics(confusion), "num_pixels": int(confusion.sum())}
    return result, jax.device_get(samples)


def _sample_images(samples: dict, num_classes: int) -> np.ndarray:
    """Rows of (input, ground truth overlay, prediction overlay) as ``uint8 [n, H, 3W, 3]``."""
    rows = []
    for image, label, prediction in zip(samples["image"], samples["label"], samples["prediction"]):
        shown = visualize.overlay(image, np.full(label.shape, -1), num_classes, alpha=0.0)
        rows.append(
            np.concatenate(
                [
                    shown,
                    visualize.overlay(image, label, num_classes),
                    visualize.overlay(image, prediction, num_classes),
                ],
                axis=1,
            )
        )
    return np.stack(rows) if rows else np.zeros((0, 1, 1, 3), np.uint8)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains and evaluates as the config says, resuming from ``workdir`` if it holds a checkpoint.

    One run at a time: the workdir is locked (``jaxseg.workdir_lock``) while it trains. A damaged
    latest checkpoint is named, moved aside, and the newest good one resumed from (state and data
    iterator from the same one).

    Returns:
      The last evaluation's metrics.

    Raises:
      UserError: a bad config value, missing data, a batch that does not split over the
        devices, a workdir in use, a checkpoint that does not match the model or none that can
        be read. Nothing is left in ``workdir`` by these (a lock file is removed again).
    """
    with errors.as_user_errors(ValueError):  # resolve's checks, and those of data and models.
        setup = resolve(config)
        mesh = parallel.data_mesh()
        parallel.check_batch_size(config.batch_size, mesh, "batch_size")
        parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    with workdir_lock.hold(workdir):
        return _train_and_evaluate(config, workdir, setup, mesh)


def _train_and_evaluate(config, workdir: str, setup: Setup, mesh) -> dict:
    replicated, batch_sharding = parallel.shardings(mesh)
    if setup.spec.license_note:
        print(f"Dataset {setup.spec.name}: {setup.spec.license_note}")

    tx, schedule = create_optimizer(config)
    state = jax.device_put(create_train_state(config, setup, tx), replicated)
    aug = augment.AugmentParams.from_dict(config.augment.to_dict())
    train_fn = jax.jit(
        functools.partial(train_step, config=config, aug=aug),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    eval_fn = jax.jit(
        functools.partial(
            eval_step, num_classes=setup.spec.num_classes, num_samples=config.num_log_images
        ),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
    )

    with errors.as_user_errors(ValueError, FileNotFoundError):  # Missing or unfit data.
        train_loader, eval_loader = _loaders(config, setup)
        train_iter = iter(train_loader)
        eval_split = config.eval_split or setup.spec.eval_split
        num_eval_examples = len(
            data.get_builder(setup.spec, data_dir=config.data_dir).as_data_source(eval_split)
        )
    if num_eval_examples < jax.process_count():
        raise errors.UserError(
            f"evaluation split {eval_split!r} has {num_eval_examples} examples, fewer than the "
            f"{jax.process_count()} processes: every host needs at least one"
        )
    num_eval_batches = data.num_eval_batches(
        num_eval_examples, config.eval_batch_size // jax.process_count()
    )

    # The newest checkpoint that restores (a damaged one is named and moved aside).
    manager, start, state = checkpoint.resume(
        os.path.join(workdir, checkpoint.CHECKPOINT_DIR), state, train_iter
    )
    start = start or 0
    if start:
        print(f"Resumed from step {start} in {workdir}")
    writer = summary.SummaryWriter(workdir)
    writer.write_config(workdir, config)

    last_eval: dict = {}
    if start >= config.num_train_steps:  # Already trained: report the final model's metrics.
        print(f"{workdir} already holds step {start} of {config.num_train_steps}; evaluating it.")
        last_eval, _ = evaluate(state, eval_loader, eval_fn, num_eval_batches, batch_sharding)
    pending = None  # (step, metrics) of the step dispatched before this one.
    timer = (time.perf_counter(), start)
    step_cost = None  # (per-device FLOPs of one step, devices), once the step is compiled.
    peak = flops.peak_flops(jax.devices()[0], DTYPES[config.dtype])

    def check_finite(step, step_metrics):
        """Raises unless the loss and the gradient (hence the updated parameters) are finite."""
        loss, grad_norm = float(step_metrics["loss"]), float(step_metrics["grad_norm"])
        if not (np.isfinite(loss) and np.isfinite(grad_norm)):
            manager.wait_until_finished()
            raise FloatingPointError(
                f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the "
                f"last good checkpoint is step {manager.latest_step()} in {workdir}"
            )
        return loss

    bar = tqdm(
        total=config.num_train_steps, initial=start, disable=jax.process_index() != 0, unit="step"
    )
    with _Preemption() as preemption:
        for step in range(start + 1, config.num_train_steps + 1):
            batch = parallel.global_batch(next(train_iter), batch_sharding)
            if step_cost is None:  # Compile once, and read the step's FLOPs from XLA.
                train_fn, step_flops = flops.step_flops(train_fn, state, batch)
                step_cost = (step_flops, flops.num_devices(train_fn))
                if step_flops:
                    tqdm.write(
                        f"train step: {step_flops * step_cost[1] / 1e9:.1f} GFLOP "
                        f"on {step_cost[1]} device(s)"
                    )
            state, step_metrics = train_fn(state, batch)
            if pending is not None:
                check_finite(*pending)
            pending = (step, step_metrics)
            bar.update(1)

            if step % config.log_every_steps == 0 or step == config.num_train_steps:
                loss = check_finite(step, step_metrics)
                now = time.perf_counter()
                seconds_per_step = (now - timer[0]) / (step - timer[1])
                images_per_s = config.batch_size / seconds_per_step
                timer = (now, step)
                values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                values.update(
                    learning_rate=float(schedule(step - 1)), images_per_second=images_per_s
                )
                step_flops, devices = step_cost  # TFLOP/s, and MFU where the peak is known.
                values.update(flops.throughput_metrics(step_flops, seconds_per_step, devices, peak))
                writer.scalars(step, "train", values)
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_s:.1f}")

            if _evaluated_at(config, step):
                check_finite(step, step_metrics)
                last_eval, samples = evaluate(
                    state, eval_loader, eval_fn, num_eval_batches, batch_sharding
                )
                writer.scalars(step, "eval", last_eval)
                writer.images(
                    step,
                    "eval/input_truth_prediction",
                    _sample_images(samples, setup.spec.num_classes),
                )
                tqdm.write(
                    f"step {step}: eval mean_iou {last_eval['mean_iou']:.4f} "
                    f"pixel_accuracy {last_eval['pixel_accuracy']:.4f}"
                )

            preempted = _preempted(preemption, manager, step, config.log_every_steps)
            if (
                step % config.checkpoint_every_steps == 0
                or step == config.num_train_steps
                or preempted
            ):
                check_finite(step, step_metrics)
                score = (
                    {checkpoint.BEST_METRIC: last_eval["mean_iou"]}
                    if _evaluated_at(config, step)
                    else None
                )
                checkpoint.save(manager, step, state, train_iter, metrics=score)
            if preempted:
                manager.wait_until_finished()
                tqdm.write(
                    f"Preempted: saved step {step} in {workdir}; run the same command to resume."
                )
                break
    bar.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()
    return last_eval


def _preempted(preemption: _Preemption, manager, step: int, every: int) -> bool:
    """Whether to save and stop now. Hosts must agree (a save is collective): with several
    processes a local SIGTERM counts once all hosts have compared flags, every ``every`` steps."""
    if manager.reached_preemption(step):
        return True
    if jax.process_count() == 1:
        return preemption.requested
    if step % every:
        return False
    flags = multihost_utils.process_allgather(np.int32(preemption.requested))
    return bool(np.any(flags))


def _evaluated_at(config, step: int) -> bool:
    return step % config.eval_every_steps == 0 or step == config.num_train_steps
