"""The training loop, ``train_and_evaluate(config, workdir)``: create, restore, loop, log, save.

The step functions (``steps``) are ``jax.jit``-ed with the batch sharded over a ``('data',)``
mesh of every device and the state replicated, so the same code runs on one CPU, eight fake CPU
devices, a GPU, a TPU slice or several hosts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxseg import checkpoint, data, errors, flops, parallel, summary, xla_options
from jaxseg.data import weight_map
from jaxseg.training import steps, validation, workdir_lock
from jaxseg.training.init import initialized_state
from jaxseg.training.optimizer import create_optimizer
from jaxseg.training.preemption import Preemption
from jaxseg.training.setup import DTYPES, Setup, complete_config, resolve
from jaxseg.training.state import create_train_state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains and evaluates as the config says, resuming from ``workdir`` if it holds a checkpoint.

    One run at a time: the workdir is locked (``workdir_lock``) while it trains. A damaged
    latest checkpoint is named, moved aside, and the newest good one resumed from (state and data
    iterator from the same one).

    Returns:
      The last evaluation's metrics.

    Raises:
      UserError: a bad config value, missing data, a batch that does not split over the
        devices, a workdir in use, a checkpoint that does not match the model or none that can
        be read. Nothing is left in ``workdir`` by these (a lock file is removed again).
    """
    with errors.as_user_errors(ValueError, FileNotFoundError):  # Config, data and model checks.
        config = complete_config(config)
        setup = resolve(config)
    with workdir_lock.hold(workdir):
        return _train_and_evaluate(config, workdir, setup)


def _train_and_evaluate(config, workdir: str, setup: Setup) -> dict:
    replicated, batch_sharding = parallel.shardings(parallel.data_mesh())
    if setup.spec.license_note:
        print(f"Dataset {setup.spec.name}: {setup.spec.license_note}")
    tx, schedule = create_optimizer(config)
    with errors.as_user_errors(ValueError, FileNotFoundError):  # Parameter groups.
        state = jax.device_put(create_train_state(config, setup, tx), replicated)
    train_fn = jax.jit(
        functools.partial(steps.train_step, config=config, aug=setup.augment),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
        compiler_options=xla_options.compiler_options(),  # CPU: XLA's own convolutions.
    )
    eval_fn = jax.jit(
        functools.partial(
            steps.eval_step, num_classes=setup.spec.num_classes, num_samples=config.num_log_images
        ),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        compiler_options=xla_options.compiler_options(),
    )
    with errors.as_user_errors(ValueError, FileNotFoundError):  # Missing or unfit data.
        train_iter, eval_loader = _loaders(config, setup)

    # The newest checkpoint that restores (a damaged one is named and moved aside).
    manager, start, state = checkpoint.resume(
        os.path.join(workdir, checkpoint.CHECKPOINT_DIR), state, train_iter
    )
    if start:
        print(f"Resumed from step {start} in {workdir}")
    try:
        if not start:  # A new run: its start (config.init_from), read now that it is used.
            with errors.as_user_errors(ValueError, FileNotFoundError):
                state = jax.device_put(initialized_state(config, state), replicated)
        writer = summary.SummaryWriter(workdir, config.get("loggers", summary.DEFAULT_LOGGERS))
    except BaseException:
        manager.close()
        with contextlib.suppress(OSError):  # A new run leaves no empty checkpoint folder.
            os.rmdir(os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
        raise
    start = start or 0
    writer.write_config(workdir, config)

    def evaluate(step):
        result, samples = validation.validate(state, eval_loader, eval_fn, batch_sharding)
        if step is not None:
            writer.scalars(step, "eval", result)
            panel = validation.sample_panel(samples, setup.spec.class_names)
            if panel is not None:
                writer.panel(step, "eval", panel)
            tqdm.write(
                f"step {step}: eval mean_iou {result['mean_iou']:.4f} "
                f"pixel_accuracy {result['pixel_accuracy']:.4f}"
            )
        return result

    def check_finite(step, step_metrics):
        """Raises unless the loss and the gradient (hence the updated parameters) are finite."""
        loss, grad_norm = float(step_metrics["loss"]), float(step_metrics["grad_norm"])
        if not (np.isfinite(loss) and np.isfinite(grad_norm)):
            manager.wait_until_finished()
            raise FloatingPointError(
                f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the "
                f"last good checkpoint is step {manager.latest_step()} in {workdir}"
            )

    last_eval: dict = {}
    if start >= config.num_train_steps:  # Already trained: report the final model's metrics.
        print(f"{workdir} already holds step {start} of {config.num_train_steps}; evaluating it.")
        last_eval = evaluate(None)
    log = _TrainLog(config, schedule, writer, start, setup.augment, (replicated, batch_sharding))
    pending = None  # (step, metrics) of the step dispatched before this one.
    bar = tqdm(
        total=config.num_train_steps, initial=start, disable=jax.process_index() != 0, unit="step"
    )
    with Preemption() as preemption:
        for step in range(start + 1, config.num_train_steps + 1):
            batch = parallel.global_batch(next(train_iter), batch_sharding)
            train_fn = log.compiled(train_fn, state, batch)
            state, step_metrics = train_fn(state, batch)
            if pending is not None:  # Checked a step late: the host does not wait on the device.
                check_finite(*pending)
            pending = (step, step_metrics)
            bar.update(1)
            last = step == config.num_train_steps
            if step % config.log_every_steps == 0 or last:
                check_finite(step, step_metrics)
                bar.set_postfix(log.write(step, step_metrics))
            evaluated = step % config.eval_every_steps == 0 or last
            if evaluated:
                check_finite(step, step_metrics)
                last_eval = evaluate(step)
                log.restart(step)  # The next rates are of training steps only.
            stop = preemption.stop_at(manager, step, config.log_every_steps)
            if step % config.checkpoint_every_steps == 0 or last or stop:
                check_finite(step, step_metrics)
                score = {checkpoint.BEST_METRIC: last_eval["mean_iou"]} if evaluated else None
                checkpoint.save(manager, step, state, train_iter, metrics=score)
                log.restart(step)
            if stop:
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


def _loaders(config, setup: Setup):
    """The training batch iterator (its position is checkpointed) and the ``EvalLoader``."""
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
        setup.spec,
        setup.train_split,
        batch_size=setup.host_batch_size,
        size=setup.input_size,
        train=True,
        seed=config.seed,
        weight_fn=weight_fn,
        worker_count=config.data_workers,
        **common,
    )
    eval_loader = data.create_eval_loader(
        setup.spec,
        setup.eval_split,
        batch_size=setup.host_eval_batch_size,
        size=setup.eval_input_size,
        **common,
    )
    return iter(train_loader), eval_loader


class _TrainLog:
    """The train scalars of a log step: losses, gradient norm, learning rate, images/s, and
    TFLOP/s (MFU where the device's peak is known) from the compiled step's FLOPs.

    The rates are of training steps only: the interval clock restarts after compiling and after
    each evaluation or checkpoint save (:meth:`restart`). With ``grad_accum_steps > 1`` the FLOPs
    are those of the same step lowered without accumulation on the same global batch, since XLA
    counts the micro-batch loop's body once (``jaxseg.flops``).
    """

    def __init__(
        self,
        config,
        schedule,
        writer: summary.SummaryWriter,
        start: int,
        aug,
        shardings,
        clock=time.perf_counter,
    ):
        self.batch_size, self.schedule, self.writer = config.batch_size, schedule, writer
        self.peak = flops.peak_flops(jax.devices()[0], DTYPES[config.dtype])
        self.clock = clock
        self.timer = (clock(), start)
        self.cost = None  # (per-device FLOPs of one step, devices), once compiled.
        self.count_fn = None
        if config.grad_accum_steps > 1:  # Lowered only, for its FLOP count.
            whole = config.copy_and_resolve_references()
            whole.grad_accum_steps = 1
            self.count_fn = jax.jit(
                functools.partial(steps.train_step, config=whole, aug=aug),
                in_shardings=shardings,
                out_shardings=(shardings[0], shardings[0]),
            )

    def compiled(self, train_fn, state, batch):
        """``train_fn``, compiled for this batch the first time (its FLOPs read from XLA)."""
        if self.cost is not None:
            return train_fn
        train_fn, step_flops = flops.step_flops(train_fn, state, batch, count_fn=self.count_fn)
        self.cost = (step_flops, flops.num_devices(train_fn))
        if step_flops:
            gflop = step_flops * self.cost[1] / 1e9
            gflop = f"{gflop:.0f}" if gflop >= 1000 else f"{gflop:.4g}"
            tqdm.write(f"train step: {gflop} GFLOP on {self.cost[1]} device(s)")
        self.restart(self.timer[1])  # Compiling is not a training step.
        return train_fn

    def restart(self, step: int) -> None:
        """Restarts the interval clock at ``step`` (after compiling, evaluating or saving)."""
        self.timer = (self.clock(), step)

    def write(self, step: int, step_metrics) -> dict[str, str]:
        """Writes the scalars since the last log step; returns the progress bar's postfix."""
        now = self.clock()
        seconds_per_step = (now - self.timer[0]) / (step - self.timer[1])
        self.timer = (now, step)
        images_per_s = self.batch_size / seconds_per_step
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        values.update(learning_rate=float(self.schedule(step - 1)), images_per_second=images_per_s)
        step_flops, devices = self.cost
        values.update(flops.throughput_metrics(step_flops, seconds_per_step, devices, self.peak))
        self.writer.scalars(step, "train", values)
        return {"loss": f"{values['loss']:.4f}", "img_s": f"{images_per_s:.1f}"}
