"""The notebooks in experiments/ run top to bottom (nbclient) with small settings put in their
parameters cell, so a broken notebook fails the suite. The Colab one runs on 8 fake CPU devices,
as its batch would be sharded over a TPU's 8 cores."""

import os

import nbformat
import pytest
from nbclient import NotebookClient
from trained_run import ROOT, subprocess_env

EXPERIMENTS = os.path.join(ROOT, "experiments")
SHARED = os.path.join(ROOT, "..", "shared", "data")


def execute(name: str, parameters: dict, monkeypatch, devices: int = 1) -> nbformat.NotebookNode:
    """Runs ``experiments/<name>`` on ``devices`` CPU devices, its ``parameters`` cell followed by
    ``parameters``; returns it executed."""
    book = nbformat.read(os.path.join(EXPERIMENTS, name), as_version=4)
    cells = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "one cell tagged 'parameters'"
    names = {line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line and not line.startswith("#")}  # fmt: skip
    assert set(parameters) <= names, f"not parameters of {name}: {set(parameters) - names}"
    cells[0].source += "\n" + "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    for key, value in subprocess_env().items():  # The kernel inherits this environment.
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices}")
    NotebookClient(book, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": EXPERIMENTS}}).execute()  # fmt: skip
    return book


def text(book) -> str:
    return "\n".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)  # fmt: skip


def images(book) -> int:
    return sum("image/png" in o.get("data", {}) for c in book.cells if c.cell_type == "code" for o in c.outputs)  # fmt: skip


def test_colab_notebook_trains_on_eight_devices(tmp_path, monkeypatch):
    book = execute("colab_tpu.ipynb", {"NUM_STEPS": 4, "BASE_FEATURES": 4, "PER_DEVICE_BATCH": 1,
                                       "DTYPE": "float32", "EVAL_EVERY": 2,
                                       "WORKDIR": str(tmp_path / "run"), "DATA_DIR": str(tmp_path / "tfds")},
                   monkeypatch, devices=8)  # fmt: skip
    output = text(book)
    assert "CpuDevice(id=7)" in output  # The batch is sharded over 8 devices.
    assert "'mean_iou'" in output  # Training's final metrics.
    assert "16 images: mean_iou" in output  # python -m jaxseg.evaluate in the last cell.
    assert images(book) == 2  # The learning curve and the prediction panel.
    assert os.path.isdir(tmp_path / "run" / "checkpoints")


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED, "isbi2012")), reason="../shared/data not present"
)
def test_isbi_notebook_walks_through_the_paper(tmp_path, monkeypatch):
    book = execute("isbi_unet.ipynb", {"MANUAL_DIR": os.path.join(SHARED, "isbi2012"), "NUM_STEPS": 4,
                                       "BASE_FEATURES": 4, "CROP": 64, "EVAL_EVERY": 2,
                                       "WORKDIR": str(tmp_path / "run"), "DATA_DIR": str(tmp_path / "tfds")},
                   monkeypatch)  # fmt: skip
    output = text(book)
    assert "20 training slices, 4 held out" in output
    assert "step 4: pixel error" in output and "V_rand" in output
    assert images(book) == 5  # Data, augmentations, weight map, learning curve, whole slice.
