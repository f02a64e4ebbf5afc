"""The train state: parameters, batch-norm statistics and optimizer state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state

from jaxseg.models import model_variables


class TrainState(train_state.TrainState):
    batch_stats: Any = None

    @property
    def variables(self) -> dict:
        """The model's variables: ``{'params': ...}``, plus ``'batch_stats'`` with batch norm."""
        return model_variables(self.params, self.batch_stats)


def create_train_state(config, setup, tx) -> TrainState:
    """A freshly initialised state (seeded by ``config.seed``) for ``setup.model``."""
    shape = (1, *setup.input_size, setup.spec.num_channels)
    variables = setup.model.init(jax.random.key(config.seed), jnp.zeros(shape), train=False)
    return TrainState.create(
        apply_fn=setup.model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats"),
    )
