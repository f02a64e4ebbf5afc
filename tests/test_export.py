"""Export: round trips against the in-process model, fixed and symbolic sizes, a fresh process."""

# ruff: noqa: F401, F811  (fixtures from trained_run are imported, then named as arguments)

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from trained_run import RESIZE_TO, ROOT, fcn_run, isbi_run, resized_run, same_run, subprocess_env

from jaxseg import inference, runs
from jaxseg.data import synthetic
from jaxseg.runs import export_model, load_trained, save_exported
from jaxseg.serving import load_exported

RNG = np.random.default_rng(0)


def images(batch, height, width, channels):
    return RNG.integers(0, 256, (batch, height, width, channels), dtype=np.uint8)


def model_probabilities(trained, x):
    """The in-process model on uint8 images: softmax of the logits, [B, H, W, K]."""
    logits = trained.model.apply(trained.variables, x.astype(np.float32) / 255.0)
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def check_classes(classes, probabilities):
    """Class ids are the argmax, wherever the top two probabilities are not a near tie."""
    top2 = np.sort(probabilities, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-5
    np.testing.assert_array_equal(classes[clear], probabilities.argmax(-1)[clear])
    assert classes.dtype == np.int32 and clear.mean() > 0.99


def test_symbolic_batch_and_size_round_trip(same_run, tmp_path):
    trained = load_trained(same_run)
    exported, metadata = export_model(trained)
    assert metadata["input"] == {
        "dtype": "uint8", "layout": "NHWC", "channels": 3, "height": None, "width": None,
        "size_multiple": 4, "value_range": [0, 255],
    }  # fmt: skip
    save_exported(str(tmp_path / "unet.jax"), exported, metadata)
    sidecar = json.loads((tmp_path / "unet.json").read_text())
    assert sidecar["class_names"] == list(trained.spec.class_names)
    assert sidecar["step"] == trained.step and sidecar["file"] == "unet.jax"

    model = load_exported(str(tmp_path / "unet.jax"))
    for batch, height, width in ((1, 40, 28), (3, 40, 28), (2, 24, 52)):
        x = images(batch, height, width, 3)
        out = model(x)
        assert out["probabilities"].shape == (batch, height, width, 5)
        want = model_probabilities(trained, x)
        np.testing.assert_allclose(out["probabilities"], want, atol=1e-5)
        check_classes(out["classes"], want)
    for bad, match in (
        (images(1, 42, 28, 3), "height a positive multiple of 4; got 42"),
        (images(1, 40, 28, 1), "takes 3 channel"),
        (images(1, 40, 28, 3).astype(np.float32), "must be uint8"),
    ):
        with pytest.raises(ValueError, match=match):
            model(bad)


def test_valid_unet_fixed_size_equals_overlap_tile(isbi_run, tmp_path):
    trained = load_trained(isbi_run)
    with pytest.raises(ValueError, match="fixed size"):
        export_model(trained)
    exported, metadata = export_model(trained, height=45, width=38)
    save_exported(str(tmp_path / "isbi.bin"), exported, metadata)
    model = load_exported(str(tmp_path / "isbi.bin"))
    predictor = inference.for_model(trained.model, trained.variables, tile_size=60)
    for batch in (1, 2):
        x = images(batch, 45, 38, 1)
        out = model(x)
        assert out["probabilities"].shape == (batch, 45, 38, 2)
        want = np.stack([predictor(image / np.float32(255)) for image in x])
        np.testing.assert_allclose(out["probabilities"], want, atol=1e-5)
        check_classes(out["classes"], want)
    with pytest.raises(ValueError, match="height 45 only; got 44"):
        model(images(1, 44, 38, 1))


LOADER = """
import sys
import numpy as np
from jaxseg.serving import load_exported

model = load_exported(sys.argv[1])
inputs = np.load(sys.argv[2])
outputs = {f"{key}_{name}": value for key in inputs for name, value in model(inputs[key]).items()}
np.savez(sys.argv[3], **outputs)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "jaxseg", "orbax", "optax"))
assert "flax" not in sys.modules and "jaxseg.training" not in sys.modules, loaded
print("modules:", loaded)
"""


def test_cli_export_runs_in_a_fresh_process_without_training_code(same_run, tmp_path):
    output = tmp_path / "exports" / "unet.jax"
    cmd = [sys.executable, "-m", "jaxseg.export", "--workdir", same_run, "--output", str(output)]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "[batch, 4*h, 4*w, 3]" in proc.stdout
    sidecar = json.loads((tmp_path / "exports" / "unet.json").read_text())
    assert sidecar["checkpoint"] == "best" and sidecar["dataset"] == "synthetic_shapes"

    inputs = {"one": images(1, 32, 20, 3), "two": images(2, 16, 36, 3)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = [sys.executable, "-c", textwrap.dedent(LOADER), str(output), str(tmp_path / "inputs.npz"),
              str(tmp_path / "outputs.npz")]  # fmt: skip
    proc = subprocess.run(script, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "modules: ['jaxseg', 'jaxseg.serving', 'jaxseg.xla_options']" in proc.stdout

    trained = load_trained(same_run)
    outputs = np.load(tmp_path / "outputs.npz")
    for key, x in inputs.items():
        want = model_probabilities(trained, x)
        np.testing.assert_allclose(outputs[f"{key}_probabilities"], want, atol=1e-5)
        check_classes(outputs[f"{key}_classes"], want)


def test_resized_run_export_resizes_like_predict(resized_run, tmp_path):
    # Issue 8 item 3: a run trained on images resized to 42x54 is served as jaxseg.predict
    # serves it: resized in, the model at 42x54 (padded to 44x56), probabilities resized back.
    trained = load_trained(resized_run)
    assert tuple(trained.config.resize_to) == RESIZE_TO
    exported, metadata = export_model(trained)
    assert metadata["resize_to"] == list(RESIZE_TO)
    assert metadata["input"]["size_multiple"] == 1  # Any size: the model sees 42x54.
    save_exported(str(tmp_path / "resized.jax"), exported, metadata)
    assert json.loads((tmp_path / "resized.json").read_text())["resize_to"] == list(RESIZE_TO)
    model = load_exported(str(tmp_path / "resized.jax"))
    predictor = trained.predictor()
    for height, width in ((96, 96), (37, 45), (121, 70)):
        x = np.stack([smooth_image(height, width, seed) for seed in (1, 2)])
        out = model(x)
        assert out["probabilities"].shape == (2, height, width, 5)
        want = np.stack([runs.predict_image(predictor, image, RESIZE_TO) for image in x])
        # The resize in is Pillow's arithmetic in jax: a pixel may differ by one level.
        np.testing.assert_allclose(out["probabilities"], want, atol=5e-3)
        assert np.abs(out["probabilities"] - want).mean() < 1e-4
        assert (out["classes"] == want.argmax(-1)).mean() > 0.995
        if (height, width) == (37, 45):
            fixed, _ = export_model(trained, height=height, width=width)
            fixed_out = jax.jit(fixed.call)(x)
            np.testing.assert_allclose(fixed_out["probabilities"], out["probabilities"], atol=1e-5)


def smooth_image(height, width, seed):
    """A photo-like uint8 RGB image (synthetic shapes), so that resizing is not all noise."""
    image, _ = synthetic.make_example(0, seed, size=max(height, width))
    return image[:height, :width]


def test_fcn_exports_for_symbolic_multiples_of_32(fcn_run, tmp_path):
    trained = load_trained(fcn_run)
    exported, metadata = export_model(trained)
    assert metadata["input"]["size_multiple"] == 32  # Ceil-mode pooling: static at 32s.
    save_exported(str(tmp_path / "fcn.jax"), exported, metadata)
    model = load_exported(str(tmp_path / "fcn.jax"))
    for batch, height, width in ((1, 32, 64), (2, 64, 32)):
        x = images(batch, height, width, 3)
        want = model_probabilities(trained, x)
        np.testing.assert_allclose(model(x)["probabilities"], want, atol=1e-5)
