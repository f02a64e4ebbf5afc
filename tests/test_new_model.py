"""Adding a model is its module plus one registry line: training, prediction and export ask the
model's ``geometry()`` and need no other change."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from trained_run import tiny_config

from jaxseg import models, runs, serving, training
from jaxseg.models.geometry import Geometry


class PooledNet(nn.Module):
    """A model jaxseg has never seen: conv, 2x2 average pool, conv, 2x upsampling."""

    num_classes: int
    dtype: object = None
    param_dtype: object = jnp.float32

    def geometry(self) -> Geometry:
        return Geometry("pooled_net", size_multiple=2, alignment=2)

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        del train
        self.geometry().check_input(x.shape[1:3])
        x = nn.relu(nn.Conv(4, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.Conv(self.num_classes, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(x)
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return x.astype(jnp.float32)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(models.MODELS, "pooled_net", PooledNet)


def test_a_new_model_trains_predicts_and_exports_with_one_registry_line(registered, tmp_path):
    config = tiny_config(
        model="pooled_net",
        data_dir=str(tmp_path / "tfds"),
        num_train_steps=4,
        eval_every_steps=4,
        checkpoint_every_steps=4,
        eval_split="validation[:8]",
        eval_size=(95, 95),  # Not a multiple of 2: the geometry refuses it.
    )
    config.model_kwargs = {}
    with pytest.raises(ValueError, match="pooled_net needs height and width divisible by 2"):
        training.resolve(config)
    config.eval_size = (96, 96)
    workdir = str(tmp_path / "run")
    final = training.train_and_evaluate(config, workdir)

    run = runs.load_trained(workdir)
    image = np.random.default_rng(0).random((41, 37, 3)).astype(np.float32)
    probabilities = run.predictor(tile_size=16)(image)  # Sliding windows, as its geometry says.
    assert probabilities.shape == (41, 37, 5)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible by 2"):
        run.predictor(tile_size=15)

    metadata = runs.export_run(workdir, str(tmp_path / "pooled.jax"), height=41, width=37)
    served = serving.load_exported(str(tmp_path / "pooled.jax"))
    out = served((image[None] * 255).round().astype(np.uint8))
    assert out["classes"].shape == (1, 41, 37) and metadata["step"] == 4
    assert 0.0 <= final["mean_iou"] <= 1.0
