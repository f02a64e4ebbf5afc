"""What ``config.frozen`` does inside the train step, besides giving the frozen parameters no
optimizer state (``optimizer.create_optimizer``):

* their gradients are zero before anything reads them, so they count neither in gradient
  clipping nor in the logged ``grad_norm`` (and XLA drops their computation);
* their batch norms normalise with the running statistics in training too, as at evaluation
  (like detectron2's ``FrozenBatchNorm2d`` or MMSegmentation's ``norm_eval``), and so leave the
  statistics unchanged: the layers behave in training exactly as they will in prediction.

Patterns are those of ``config.frozen``, matched against ``/``-joined module and parameter
paths (``optimizer.matches``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.training.optimizer import FROZEN, matches, param_groups


def zero_frozen_gradients(grads, patterns: Sequence[str]):
    """``grads`` with the leaves of frozen parameters replaced by zeros."""
    if not patterns:
        return grads
    labels = param_groups(grads, tuple(patterns))
    return jax.tree.map(lambda g, group: jnp.zeros_like(g) if group == FROZEN else g, grads, labels)


@contextlib.contextmanager
def running_statistics_for_frozen(patterns: Sequence[str]) -> Iterator[None]:
    """Within: every ``nn.BatchNorm`` whose path matches ``patterns`` is called with
    ``use_running_average=True``. The models pass ``use_running_average`` as a call argument
    (``models.resnet.batch_norm``); a batch norm built with it as a field cannot be switched and
    makes flax raise, rather than be silently left in training mode."""
    patterns = tuple(patterns)

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (
            patterns
            and context.method_name == "__call__"
            and isinstance(module, nn.BatchNorm)
            and matches("/".join(module.path), patterns)
        ):
            kwargs = {**kwargs, "use_running_average": True}
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
        yield
