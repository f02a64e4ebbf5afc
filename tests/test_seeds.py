"""K seeds in one vmapped step (``training.seeds``): each seed is its standalone run.

The runs train with SGD and momentum (the U-Net paper's optimizer), where a seed's vmapped and
standalone runs agree to float round-off. With Adam(W) they agree as closely for most parameters,
but a parameter whose gradient is near zero (noise) gets an update of about the learning rate
either way (Adam divides by the gradient's own size), so one ulp of difference between the two
compiled programs can move it by up to ~1e-3 within a few steps (measured with the default AdamW
on these runs: 4.3e-4 after 4 steps for seed 2 of the plain case, 3.8e-3 for seed 1 with batch
norm; the other seeds within 2e-6), while the losses still agree to 1e-5.
"""

import functools

import jax
import numpy as np
import pytest
from trained_run import tiny_config

from jaxseg import training, xla_options

SEEDS = (0, 1, 2)
STEPS = 4
AUGMENT = {"flip_h_prob": 0.5, "flip_v_prob": 0.5, "rot90_prob": 0.5}  # Square 32x32 crops.


def _config(tmp_path, batch_norm: bool):
    config = tiny_config(data_dir=str(tmp_path / "tfds"), num_train_steps=STEPS, optimizer="sgd",
                         momentum=0.9, learning_rate=0.05, warmup_steps=0)  # fmt: skip
    config.model_kwargs = {"padding": "SAME", "depth": 2, "base_features": 4,
                           "dropout_rate": 0.5, "batch_norm": batch_norm}  # fmt: skip
    config.augment = AUGMENT
    return config


def _batches():
    """The same fixed batches for every run (synthetic_shapes has 5 classes)."""
    rng = np.random.default_rng(0)
    return [{"image": rng.random((8, 32, 32, 3), np.float32),
             "label": rng.integers(0, 5, (8, 32, 32)).astype(np.int32)}
            for _ in range(STEPS)]  # fmt: skip


def _one_device(config):
    return training.resolve(config, jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))


def _standalone(config, seed, batches):
    """A standalone run with ``config.seed = seed``: the trainer's step, the seed a constant."""
    config = config.copy_and_resolve_references()
    config.seed = seed
    setup = _one_device(config)
    tx, _ = training.create_optimizer(config)
    state = training.create_train_state(config, setup, tx)
    step = jax.jit(functools.partial(training.train_step, config=config, aug=setup.augment),
                   donate_argnums=0, compiler_options=xla_options.compiler_options())  # fmt: skip
    losses = []
    for batch in batches:
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), np.array(losses)


def _max_abs(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture
def optimized():
    """XLA's optimisations on, as the trainer compiles (the suite turns most of them off).

    Without them the U-Net's max-pool gradient turns NaN with batch norm, in the standalone run
    as in the vmapped one: ``max_pool_2x2`` is a ``max`` over a reshape, whose gradient divides by
    the count of inputs equal to the max, and the unoptimised program recomputes the batch-norm
    output with another rounding, so that count can be 0.
    """
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batch_norm"])
def test_each_vmapped_seed_is_its_standalone_run(tmp_path, batch_norm, request):
    if batch_norm:
        request.getfixturevalue("optimized")
    config = _config(tmp_path, batch_norm)
    setup = _one_device(config)
    assert setup.augment.flip_h_prob and setup.model.dropout_rate  # The randomness matters.
    tx, _ = training.create_optimizer(config)
    batches = _batches()
    states = training.create_seed_states(config, setup, tx, SEEDS)
    assert states.step.shape == (len(SEEDS),)
    step = training.seeds_train_step(config, setup.augment)
    states, metrics = training.train_seeds(step, states, SEEDS, iter(batches), STEPS)
    assert set(metrics) >= {"loss", "grad_norm"} and metrics["loss"].shape == (STEPS, len(SEEDS))
    assert np.all(np.asarray(states.step) == STEPS)

    finals = []
    for k, seed in enumerate(SEEDS):
        alone, losses = _standalone(config, seed, batches)
        mine = jax.device_get(training.seed_state(states, k))
        diff = _max_abs(mine.params, alone.params)
        print(f"batch_norm={batch_norm} seed {seed}: max abs parameter difference {diff:.2e}")
        assert diff <= 1e-5
        np.testing.assert_allclose(metrics["loss"][:, k], losses, rtol=1e-5)
        momentum_diff = _max_abs(mine.opt_state, alone.opt_state)
        print(f"  momentum: max abs difference {momentum_diff:.2e}")
        assert momentum_diff <= 1e-4  # Sums of gradients (up to ~1), so round-off sums too.
        if batch_norm:  # Each seed keeps its own batch statistics.
            assert alone.batch_stats is not None
            stats_diff = _max_abs(mine.batch_stats, alone.batch_stats)
            print(f"  batch statistics: max abs difference {stats_diff:.2e}")
            assert stats_diff <= 1e-5
        finals.append(mine)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert _max_abs(finals[a].params, finals[b].params) > 1e-3
        if batch_norm:
            assert _max_abs(finals[a].batch_stats, finals[b].batch_stats) > 1e-4

    # One start, three seeds: the runs still part, by augmentation and dropout alone.
    start = training.create_train_state(config, setup, tx)
    same_start = training.stack_states([start] * len(SEEDS))
    parted, _ = training.train_seeds(step, same_start, SEEDS, iter(batches), STEPS)
    parted = [jax.device_get(training.seed_state(parted, k)) for k in range(len(SEEDS))]
    assert _max_abs(parted[0].params, parted[1].params) > 1e-4
    assert _max_abs(parted[1].params, parted[2].params) > 1e-4
    assert _max_abs(parted[0].params, finals[0].params) <= 1e-5  # Seed 0 started as config's.


def test_seeds_are_checked(tmp_path):
    config = _config(tmp_path, batch_norm=False)
    setup = _one_device(config)
    tx, _ = training.create_optimizer(config)
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence of integers"):
        training.create_seed_states(config, setup, tx, ())
    states = training.create_seed_states(config, setup, tx, (0, 1))
    step = training.seeds_train_step(config, setup.augment, donate=False)
    with pytest.raises(ValueError, match="3 seeds for 2 stacked states"):
        training.train_seeds(step, states, (0, 1, 2), iter(_batches()), 1)
    with pytest.raises(ValueError, match="batches ran out after 4 of 5 steps"):
        training.train_seeds(step, states, (0, 1), iter(_batches()), 5)
