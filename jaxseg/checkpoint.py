"""Orbax checkpoints of the train state and the data iterator, in one place.

Saves are asynchronous. The latest checkpoint and the best one by validation mean IoU are kept
(``preservation_policy``: keeping both needs ``AnyPreservationPolicy``; ``max_to_keep`` with
``best_fn`` would delete the latest and break resuming).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxseg import inference
from jaxseg.summary import CONFIG_FILE

if TYPE_CHECKING:
    import flax.linen as nn

    from jaxseg.data import DatasetSpec

BEST_METRIC = "mean_iou"
CHECKPOINT_DIR = "checkpoints"  # Where a run keeps its checkpoints, inside its workdir.


def create_manager(directory: str, *, read_only: bool = False) -> ocp.CheckpointManager:
    """A manager over ``directory`` keeping the latest and the best (by mean IoU) checkpoints."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(
            [
                policies.LatestN(1),
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[BEST_METRIC],
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        ),
        best_fn=lambda metrics: metrics[BEST_METRIC],
        best_mode="max",
        create=not read_only,
        read_only=read_only,
    )
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "data_iter": grain.checkpoint.CheckpointHandler(),
    }
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=handlers
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: Any, data_iter=None, metrics=None
) -> None:
    """Starts an asynchronous save of ``state`` (and the data iterator's position) at ``step``."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, state: Any, data_iter=None) -> Any:
    """Restores checkpoint ``step`` into the structure, shapes and shardings of ``state``.

    The data iterator, if given, is restored in place. A checkpoint whose parameters do not
    match ``state`` (another model or size) raises a ``ValueError`` that says so.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iter is not None:
        items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"checkpoint {step} in {manager.directory} does not match the model built from the "
            f"config (different model, size or options?): {str(e)[:500]}"
        ) from e
    return restored["state"]


# --- A trained run read back from its workdir -------------------------------------------------


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
      checkpoint: ``'best'`` (highest eval mean IoU) or ``'latest'``.
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

    def predictor(
        self,
        *,
        tile_size: int | tuple[int, int] | None = None,
        tta: bool | str | None = None,
        tile_batch_size: int = 8,
        **kwargs,
    ) -> inference.Predictor:
        """A tiled ``Predictor`` for this model (``jaxseg.inference.for_model``).

        It takes ``[H, W, C]`` float32 in [0, 1] (``jaxseg.prediction.predict_image`` takes
        uint8); reuse it across images so that compiled tile batches are reused.
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
    trainer's ``resolve`` accepts both.

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


def load_trained(workdir: str, *, best: bool = True) -> Trained:
    """Reads a run's config and restores its best (or latest) checkpoint for inference::

        trained = load_trained("workdirs/unet")
        probabilities = trained.predictor(tta="flips")(image_uint8 / 255.0)  # [H, W, K]

    Args:
      workdir: a directory written by ``python -m jaxseg.train`` (``config.json`` and
        ``checkpoints/``).
      best: the checkpoint with the highest evaluation mean IoU; when no checkpoint has a
        score, or with ``best=False``, the latest.

    Raises:
      FileNotFoundError: no workdir, no ``config.json`` or no checkpoint.
      ValueError: a config that does not resolve, or a checkpoint that does not match the
        model the config builds.
    """
    from jaxseg import trainer  # Here, not at the top: the trainer imports this module.

    workdir = os.path.abspath(workdir)
    config = read_config(workdir)
    try:
        setup = trainer.resolve(config)
        tx, _ = trainer.create_optimizer(config)
    except (ValueError, KeyError, AttributeError, TypeError) as e:
        raise ValueError(f"{os.path.join(workdir, CONFIG_FILE)}: {e}") from e

    directory = os.path.join(workdir, CHECKPOINT_DIR)
    manager = create_manager(directory, read_only=True) if os.path.isdir(directory) else None
    if manager is None or not manager.all_steps():
        raise FileNotFoundError(
            f"no checkpoint in {directory!r}: training saves one every "
            f"config.checkpoint_every_steps ({config.checkpoint_every_steps}) steps"
        )
    step = manager.best_step() if best else None
    which = "best" if step is not None else "latest"
    step = step if step is not None else manager.latest_step()

    # Shapes only (nothing is initialised): restoring fills every leaf.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.eval_shape(lambda: trainer.create_train_state(config, setup, tx))
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
    )
    try:
        state = restore(manager, step, abstract)
    finally:
        manager.close()
    return Trained(workdir, config, setup.spec, setup.model, state.variables, int(step), which)
