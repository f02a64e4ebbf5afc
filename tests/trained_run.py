"""Tiny trained runs shared by the prediction, evaluation and export tests.

Import the fixtures into a test module (``from trained_run import same_run``). Each run is
trained once per test process, whichever module asks first, and must not be changed by tests
(copy it to change it):

* ``same_run``: a 'SAME' U-Net (depth 2, 4 base features) on the embedded synthetic dataset,
  5 classes, RGB, 8 steps with evaluations (and best-checkpoint scores) at steps 4 and 8;
* ``isbi_run``: a valid-padding U-Net (depth 2) on ``isbi2012`` read from slices written here
  (64x64 Voronoi cells with membranes, in the dataset's ``image_NN.png`` + ``label_NN.png``
  layout), 2 classes, grayscale, so the ISBI metrics path runs without the real data;
* ``resized_run``: ``same_run``'s set-up trained on images resized to ``RESIZE_TO`` (42x54, not
  a multiple of the model's 4: evaluation pads them to 44x56);
* ``fcn_run``: a tiny FCN-8s on ``same_run``'s data, 4 steps.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
from PIL import Image

from jaxseg import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISBI_SLICES = 8  # train[:6] trains, train[6:] evaluates.
RESIZE_TO = (42, 54)
_RUNS: dict[str, str] = {}


def load_config(name: str):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, ROOT)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(ROOT)
    return module.get_config()


def tiny_config(**overrides):
    config = load_config("unet.py")
    config.model_kwargs = {"padding": "SAME", "depth": 2, "base_features": 4}
    config.input_size = (32, 32)
    config.batch_size = 8
    config.eval_batch_size = 16
    config.eval_split = "validation[:16]"
    config.num_train_steps = 8
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.log_every_steps = 4
    config.warmup_steps = 2
    config.num_log_images = 1
    config.update(overrides)
    return config


def write_membrane_slices(folder: str, count: int = ISBI_SLICES, size: int = 64) -> None:
    """ISBI-style slices: Voronoi cells (255) separated by ~3 px membranes (0), noisy images."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        centres = rng.uniform(0, size, (9, 2))
        distance = np.hypot(yy[..., None] - centres[:, 0], xx[..., None] - centres[:, 1])
        distance.sort(axis=-1)
        cell = distance[..., 1] - distance[..., 0] > 3.0
        image = np.where(cell, 180.0, 70.0) + rng.normal(0, 25, cell.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"image_{i:02d}.png")
        )
        Image.fromarray(cell.astype(np.uint8) * 255).save(
            os.path.join(folder, f"label_{i:02d}.png")
        )


def _run(name: str, tmp_path_factory, make_config) -> str:
    if name not in _RUNS:
        root = tmp_path_factory.mktemp(name)
        workdir = str(root / "workdir")
        training.train_and_evaluate(make_config(str(root)), workdir)
        _RUNS[name] = workdir
    return _RUNS[name]


@pytest.fixture(scope="session")
def same_run(tmp_path_factory) -> str:
    return _run("same", tmp_path_factory, lambda root: tiny_config(data_dir=f"{root}/tfds"))


@pytest.fixture(scope="session")
def isbi_run(tmp_path_factory) -> str:
    def make_config(root):
        write_membrane_slices(f"{root}/raw")
        return tiny_config(
            dataset="isbi2012",
            data_dir=f"{root}/tfds",
            manual_dir=f"{root}/raw",
            model_kwargs={"padding": "VALID", "depth": 2, "base_features": 4},
            input_size=(60, 60),  # Output 20x20; margin 20.
            eval_size=(64, 64),
            train_split=f"train[:{ISBI_SLICES - 2}]",
            eval_split=f"train[{ISBI_SLICES - 2}:]",
            eval_batch_size=8,
            num_train_steps=6,
            eval_every_steps=6,
            checkpoint_every_steps=6,
            log_every_steps=6,
            augment={},
        )

    return _run("isbi", tmp_path_factory, make_config)


@pytest.fixture(scope="session")
def resized_run(tmp_path_factory, same_run) -> str:
    data_dir = os.path.join(os.path.dirname(same_run), "tfds")  # Prepared once, for both.

    def make_config(root):
        return tiny_config(data_dir=data_dir, resize_to=RESIZE_TO, eval_size=(44, 56))

    return _run("resized", tmp_path_factory, make_config)


@pytest.fixture(scope="session")
def fcn_run(tmp_path_factory, same_run) -> str:
    """A tiny FCN-8s (2 base features, fc 8) on same_run's data, 4 steps."""
    data_dir = os.path.join(os.path.dirname(same_run), "tfds")  # Prepared once, for both.

    def make_config(root):
        config = tiny_config(data_dir=data_dir, model="fcn8s", num_train_steps=4)
        config.model_kwargs = {"base_features": 2, "fc_features": 8}
        return config

    return _run("fcn8s", tmp_path_factory, make_config)


def subprocess_env() -> dict[str, str]:
    """One CPU device (no fake devices), light compilation, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {
        **env,
        "JAX_PLATFORMS": "cpu",
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",
        "PYTHONPATH": ROOT,
    }
