"""K seeds of one config trained at once: one compiled step, ``jax.vmap`` over ``train_step``.

Parameters, batch-norm statistics, optimizer state and the step count of K runs are stacked on a
leading axis of length K; the seeds themselves are a traced ``(K,)`` array, so each run's
augmentation and dropout keys are the ones a standalone run with that seed draws
(``fold_in(key(seed), step)``). Every seed sees the same data batch (augmented with its own key),
so the runs differ only by their initialisation and randomness: the seed spread of an ablation
arm, for the cost of one larger step::

    setup = training.resolve(config)
    tx, _ = training.create_optimizer(config)
    states = training.create_seed_states(config, setup, tx, seeds=(0, 1, 2))
    step = training.seeds_train_step(config, setup.augment)
    states, metrics = training.train_seeds(step, states, (0, 1, 2), batches, num_steps=100)
    run_1 = training.seed_state(states, 1)  # What a standalone run with config.seed = 1 gives.

Each seed's parameters equal the standalone run's up to float rounding (``tests/test_seeds.py``).
The stacked step runs on one device (the default); ``benchmarks/seeds_benchmark.py`` says when
it beats running the seeds one after another.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import augment, xla_options
from jaxseg.training.init import initialized_state
from jaxseg.training.state import TrainState, create_train_state
from jaxseg.training.steps import train_step


def seed_array(seeds: Sequence[int]) -> jax.Array:
    """``seeds`` as the ``(K,)`` integer array the stacked step takes.

    Converted as ``jax.random.key`` converts a Python int (through int64, so int32 without x64),
    so a traced seed gives the same key as ``config.seed`` does in a standalone run.
    """
    values = np.asarray(seeds)
    if values.ndim != 1 or not len(values) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"seeds must be a non-empty sequence of integers; got {seeds!r}")
    return jnp.asarray(values.astype(np.int64))


def create_seed_states(config, setup, tx, seeds: Sequence[int]) -> TrainState:
    """The states of ``len(seeds)`` runs stacked on a leading axis.

    Seed ``k``'s state is the one a standalone run with ``config.seed = seeds[k]`` starts from:
    ``create_train_state`` with that seed, then ``config.init_from``'s weights where set (logged
    once).
    """
    seed_array(seeds)  # Checked before any work.
    states = []
    for index, seed in enumerate(seeds):
        one = config.copy_and_resolve_references()
        one.seed = int(seed)
        state = create_train_state(one, setup, tx)
        log = print if index == 0 else (lambda _: None)
        states.append(initialized_state(one, state, log=log))
    return stack_states(states)


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """States of one model and optimizer, stacked leaf by leaf on a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(x) for x in leaves]), *states)


def seed_state(states: TrainState, index: int) -> TrainState:
    """The ``index``-th run's state out of stacked ``states`` (to evaluate, save or export)."""
    return jax.tree.map(lambda x: x[index], states)


def num_seeds(states: TrainState) -> int:
    """The length of the stacked states' leading (seed) axis."""
    return int(jax.tree.leaves(states)[0].shape[0])


def vmapped_train_step(
    states: TrainState, seeds: jax.Array, batch: dict, *, config, aug: augment.AugmentParams
):
    """``train_step`` over the stacked ``states`` and ``seeds``, with one shared ``batch``.

    Returns the stacked new states and the metrics, each of shape ``(K,)``. Pure, like
    ``train_step``: :func:`seeds_train_step` jits it.
    """

    def one_seed(state, seed, batch):
        return train_step(state, batch, config=config, aug=aug, seed=seed)

    return jax.vmap(one_seed, in_axes=(0, 0, None))(states, seeds, batch)


def seeds_train_step(config, aug: augment.AugmentParams, *, donate: bool = True) -> Callable:
    """The jitted stacked step ``(states, seeds, batch) -> (states, metrics)``.

    Compiled as the trainer compiles ``train_step`` (``xla_options.compiler_options()``), the
    states donated unless ``donate=False``.
    """
    return jax.jit(
        functools.partial(vmapped_train_step, config=config, aug=aug),
        donate_argnums=(0,) if donate else (),
        compiler_options=xla_options.compiler_options(),
    )


def train_seeds(
    step_fn: Callable,
    states: TrainState,
    seeds: Sequence[int],
    batches: Iterable[dict],
    num_steps: int,
) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Runs ``num_steps`` stacked steps on the next ``num_steps`` batches of ``batches``.

    Args:
      step_fn: :func:`seeds_train_step`'s function (``states`` are donated to it).
      states: stacked states (:func:`create_seed_states`), one run per seed.
      seeds: the runs' seeds, in the order of ``states``.
      batches: an iterable of batches (every seed gets the same one); it must hold
        ``num_steps`` of them.
      num_steps: how many steps to run.

    Returns:
      The stacked states after the steps, and each metric of every step and seed,
      ``{name: array of shape (num_steps, K)}``; a seed whose loss or gradient norm turned
      non-finite is reported by the caller from these (the other seeds train on regardless).
    """
    seeds_ = seed_array(seeds)
    if len(seeds_) != num_seeds(states):
        raise ValueError(f"{len(seeds_)} seeds for {num_seeds(states)} stacked states")
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer; got {num_steps}")
    iterator = iter(batches)
    history = []
    for step in range(num_steps):
        try:
            batch = next(iterator)
        except StopIteration:
            raise ValueError(f"batches ran out after {step} of {num_steps} steps") from None
        states, metrics = step_fn(states, seeds_, batch)
        history.append(metrics)  # Fetched at the end: the host does not wait on each step.
    history = jax.device_get(history)
    metrics = {name: np.stack([m[name] for m in history]) for name in history[0]}
    return states, metrics
