"""A trained run read back from its workdir, for inference: ``load_trained``.

It sits above training and inference: it reads the config the run wrote, builds the model
(``training.resolve_model``) and restores only the model's variables (parameters and batch-norm
statistics) from the best or latest checkpoint; the optimizer state is never built nor read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxseg import checkpoint, inference
from jaxseg.data import DatasetSpec, pixels
from jaxseg.errors import UserError
from jaxseg.models import model_variables
from jaxseg.summary import CONFIG_FILE
from jaxseg.training.setup import resolve_model


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained model and everything needed to use it (from ``load_trained``).

    Attributes:
      workdir: the run directory it was read from (absolute).
      config: the run's config, as ``jaxseg.train`` wrote it to ``config.json``.
      spec: the dataset spec (class names, channels, ignore label).
      model: the Flax module.
      variables: ``{'params': ...}``, plus ``'batch_stats'`` for batch-norm models.
      step: the training step of the restored checkpoint.
      checkpoint: ``'best'`` (highest eval mean IoU), ``'latest'``, or ``'newest readable'``
        when those are damaged.
      input_dtype: (property) the pixel type the model was trained on.
    """

    workdir: str
    config: ml_collections.ConfigDict
    spec: DatasetSpec
    model: nn.Module
    variables: dict[str, Any]
    step: int
    checkpoint: str

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_dtype(self) -> str:
        """The pixel type the model was trained on: ``'uint8'``, ``'uint16'`` or ``'float32'``
        (``config.input_dtype``; runs written before it was recorded: ``'uint8'``). Its images
        reach the model scaled by ``jaxseg.data.pixels.scale_of`` (255, 65535, 1)."""
        return config_input_dtype(self.config)

    def predictor(
        self,
        *,
        tile_size: int | tuple[int, int] | None = None,
        tta: bool | str | None = None,
        tile_batch_size: int = 8,
        **kwargs,
    ) -> inference.Predictor:
        """A tiled ``Predictor`` for this model (``jaxseg.inference.for_model``).

        It takes ``[H, W, C]`` float32 pixels already scaled (``jaxseg.runs.predict_image``
        takes the ``input_dtype`` images and scales them); reuse it across images so that
        compiled tile batches are reused.
        """
        return inference.for_model(
            self.model,
            self.variables,
            tile_size=tile_size,
            tta=tta,
            tile_batch_size=tile_batch_size,
            **kwargs,
        )


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run wrote to ``workdir/config.json``, as a ``ConfigDict``.

    JSON gives lists where the config had tuples and ``None`` for unset placeholders; the
    training ``resolve`` accepts both.

    Raises:
      FileNotFoundError: no such directory, or no ``config.json`` in it.
    """
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"no run directory {workdir!r}")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{workdir!r} has no {CONFIG_FILE}; is it a workdir written by python -m jaxseg.train?"
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def config_input_dtype(config: ml_collections.ConfigDict) -> str:
    """A run config's ``input_dtype`` (``'uint8'`` when absent or empty: older runs).

    Raises:
      ValueError: a type other than uint8, uint16 and float32.
    """
    dtype = config.get("input_dtype") or "uint8"
    names = [d.name for d in pixels.SCALES]
    if dtype not in names:
        raise ValueError(f"input_dtype must be one of {names}; got {dtype!r}")
    return dtype


def load_trained(workdir: str, *, best: bool = True) -> Trained:
    """Reads a run's config and restores its best (or latest) checkpoint for inference::

        trained = load_trained("workdirs/unet")
        probabilities = trained.predictor(tta="flips")(image_uint8 / 255.0)  # [H, W, K]

    Args:
      workdir: a directory written by ``python -m jaxseg.train`` (``config.json`` and
        ``checkpoints/``).
      best: the checkpoint with the highest evaluation mean IoU; when no checkpoint has a
        score, or with ``best=False``, the latest. A damaged one is named on stderr and the
        newest other one that restores is used.

    Raises:
      FileNotFoundError: no workdir, no ``config.json`` or no checkpoint.
      ValueError: a config that does not resolve, a checkpoint that does not match the
        model the config builds (``CheckpointMismatch``), or no checkpoint that can be read
        (``DamagedCheckpoint``).
    """
    workdir = os.path.abspath(workdir)
    config = read_config(workdir)
    try:
        spec, model = resolve_model(config)
        config_input_dtype(config)
        if len(config.resize_to) not in (0, 2):
            raise ValueError(f"resize_to must be () or (height, width); got {config.resize_to}")
        input_shape = (1, *config.input_size, spec.num_channels)
        # The variables' shapes (nothing is initialised): parameters and batch statistics only.
        shapes = jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros(input_shape), train=False)
        )
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        raise UserError(f"{os.path.join(workdir, CONFIG_FILE)}: {e}") from e

    directory = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
    try:
        manager = checkpoint.open_read_only(directory)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}: training saves one every config.checkpoint_every_steps "
            f"({config.checkpoint_every_steps}) steps"
        ) from e
    best_step = manager.best_step() if best else None
    newest_first = sorted(manager.all_steps(), reverse=True)
    order = [best_step] if best_step is not None else []
    order += [s for s in newest_first if s != best_step]

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        model_variables(shapes["params"], shapes.get("batch_stats")),
    )
    try:  # A damaged checkpoint is named on stderr and the next one tried; none is moved.
        step, variables = checkpoint.restore_newest(
            manager,
            abstract,
            steps=order,
            log=lambda line: print(line, file=sys.stderr),
            move_damaged=False,
            partial=True,
        )
    finally:
        manager.close()
    if step == best_step:
        which = "best"
    elif step == newest_first[0]:
        which = "latest"
    else:
        which = "newest readable"
    return Trained(workdir, config, spec, model, variables, int(step), which)
