"""ONNX export: onnxruntime's outputs equal jaxseg.predict's for a 'SAME' U-Net and FCN-8s at a
symbolic size, a valid-padding U-Net at a fixed size; the command line; the missing extra."""

# ruff: noqa: F401, F811  (fixtures from trained_run are imported, then named as arguments)

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

from trained_run import ROOT, fcn_run, isbi_run, same_run, subprocess_env  # noqa: E402

from jaxseg import runs  # noqa: E402
from jaxseg.errors import UserError  # noqa: E402
from jaxseg.runs import export_onnx, load_trained, save_onnx  # noqa: E402

RNG = np.random.default_rng(0)
PARITY = 1e-4  # Issue 13: onnxruntime equals jaxseg.predict within this.


def images(batch, height, width, channels):
    return RNG.integers(0, 256, (batch, height, width, channels), dtype=np.uint8)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def max_difference(trained, model, x) -> float:
    """Runs ``x`` through the ONNX session; checks both outputs against jaxseg.predict's
    probabilities (``runs.predict_image`` with the run's default predictor, image by image);
    returns the largest absolute difference of the probabilities."""
    probabilities, classes = model.run(["probabilities", "classes"], {"images": x})
    assert probabilities.dtype == np.float32 and classes.dtype == np.int32
    assert probabilities.shape == (*x.shape[:3], trained.spec.num_classes)
    predictor = trained.predictor()
    want = np.stack([runs.predict_image(predictor, image) for image in x])
    difference = float(np.abs(probabilities - want).max())
    assert difference < PARITY, difference
    top2 = np.sort(want, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4  # Not a near tie.
    np.testing.assert_array_equal(classes[clear], want.argmax(-1)[clear])
    return difference


def export_and_check(trained, path, *, height=None, width=None, sizes):
    """Exports to ``path``, checks its inputs, outputs and sidecar, then the parity at batch
    1 and 3 for each ``(height, width)`` of ``sizes``; returns the model and the sidecar."""
    model, metadata = export_onnx(trained, height=height, width=width)
    save_onnx(str(path), model, metadata)
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())  # Beside a .jax one.
    assert sidecar["format"] == "onnx" and sidecar["file"] == path.name
    assert sidecar["class_names"] == list(trained.spec.class_names)
    assert sidecar["step"] == trained.step and sidecar["opset"] >= 17
    onnx_model = session(path)
    channels = trained.spec.num_channels
    (given,) = onnx_model.get_inputs()
    assert (given.name, given.type) == ("images", "tensor(uint8)")
    assert given.shape == ["batch", height or "height", width or "width", channels]
    assert [o.name for o in onnx_model.get_outputs()] == ["probabilities", "classes"]
    differences = [
        max_difference(trained, onnx_model, images(batch, h, w, channels))
        for h, w in sizes
        for batch in (1, 3)
    ]
    print(f"\n{type(trained.model).__name__}: max |onnx - predict| = {max(differences):.2e}")
    return onnx_model, sidecar


def test_same_unet_symbolic_batch_and_size(same_run, tmp_path):
    trained = load_trained(same_run)
    model, sidecar = export_and_check(
        trained, tmp_path / "unet.onnx", sizes=[(32, 64), (64, 32)]
    )  # fmt: skip
    assert sidecar["input"]["size_multiple"] == 4 and sidecar["input"]["height"] is None
    with pytest.raises(Exception, match="cannot be reshaped"):  # Not a multiple of 4.
        model.run(None, {"images": images(1, 30, 32, 3)})


def test_fcn8s_symbolic_on_multiples_of_32(fcn_run, tmp_path):
    # Run after another export in this process: jax2onnx 0.17's gather folding was registered
    # for the first conversion only (onnx_export._fresh_gather_folding).
    trained = load_trained(fcn_run)
    assert trained.config.model == "fcn8s"
    _, sidecar = export_and_check(trained, tmp_path / "fcn.onnx", sizes=[(32, 96)])
    assert sidecar["input"]["size_multiple"] == 32  # jaxseg's pooling alignment.


def test_valid_unet_fixed_size(isbi_run, tmp_path):
    trained = load_trained(isbi_run)
    with pytest.raises(ValueError, match="fixed size"):
        export_onnx(trained)
    _, sidecar = export_and_check(
        trained, tmp_path / "isbi.onnx", height=45, width=38, sizes=[(45, 38)]
    )  # fmt: skip
    assert sidecar["input"]["size_multiple"] is None and sidecar["input"]["channels"] == 1


def test_missing_jax2onnx_is_one_line_naming_the_extra(same_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx -> ImportError.
    with pytest.raises(UserError, match=r"pip install 'jaxseg\[onnx\]'") as raised:
        runs.export_run_onnx(same_run, str(tmp_path / "unet.onnx"))
    assert "\n" not in str(raised.value) and not os.path.exists(tmp_path / "unet.onnx")


def command(*args):
    cmd = [sys.executable, "-m", "jaxseg.export", *args]
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)


def test_cli_exports_onnx_and_refuses_bad_options(same_run, tmp_path):
    output = tmp_path / "exports" / "unet.onnx"
    proc = command("--format", "onnx", "--workdir", same_run, "--output", str(output))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "[batch, 4*h, 4*w, 3]" in proc.stdout and "ONNX opset" in proc.stdout
    sidecar = json.loads((tmp_path / "exports" / "unet.onnx.json").read_text())
    assert sidecar["format"] == "onnx" and sidecar["checkpoint"] == "best"
    max_difference(load_trained(same_run), session(output), images(2, 32, 48, 3))

    for args, message in (
        (["--format", "tflite"], "--format=tflite: value should be one of <jax|onnx>"),
        (["--format", "onnx", "--platforms", "cuda"], "--platforms applies to --format jax"),
    ):
        proc = command(*args, "--workdir", same_run, "--output", str(tmp_path / "x.onnx"))
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], proc.stderr[-3000:]


def test_importing_runs_does_not_import_the_converter():
    code = "import sys, jaxseg.runs; print(sorted({'jax2onnx', 'onnx'} & set(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-3000:]
