"""Training: a config resolved (``setup``), the state (``state``, ``optimizer``), the jitted
steps (``steps``, ``accumulation``), and the loop that runs them (``loop``), with validation,
preemption and the workdir lock beside it; ``seeds`` trains K seeds at once in one vmapped step.

    from jaxseg import training
    metrics = training.train_and_evaluate(config, workdir)
"""

from jaxseg.training.accumulation import accumulate_gradients
from jaxseg.training.loop import train_and_evaluate
from jaxseg.training.optimizer import create_optimizer
from jaxseg.training.seeds import (
    create_seed_states,
    seed_state,
    seeds_train_step,
    stack_states,
    train_seeds,
    vmapped_train_step,
)
from jaxseg.training.setup import DTYPES, Setup, complete_config, resolve, resolve_model
from jaxseg.training.state import TrainState, create_train_state
from jaxseg.training.steps import eval_step, train_step

__all__ = [
    "DTYPES",
    "Setup",
    "TrainState",
    "accumulate_gradients",
    "complete_config",
    "create_optimizer",
    "create_seed_states",
    "create_train_state",
    "eval_step",
    "resolve",
    "resolve_model",
    "seed_state",
    "seeds_train_step",
    "stack_states",
    "train_and_evaluate",
    "train_seeds",
    "train_step",
    "vmapped_train_step",
]
