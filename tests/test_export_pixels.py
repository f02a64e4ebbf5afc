"""Exports of runs trained on 16-bit gray and 5-channel float32 TIFFs (written here) take those
images as they are: the run records its pixel type, the jax and ONNX exports take it and scale
it as training did, and their outputs equal jaxseg.predict's on the same images."""

# ruff: noqa: F401, F811  (fixtures from trained_run are imported, then named as arguments)

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tifffile
from PIL import Image
from trained_run import ROOT, _run, subprocess_env, tiny_config

from jaxseg import runs, training
from jaxseg.data import pixels
from jaxseg.runs import export_model, exporting, load_trained, save_exported
from jaxseg.runs.loading import config_input_dtype
from jaxseg.serving import load_exported

CLASSES = ("a", "b", "c")
SIZE = (40, 48)  # Training images; exports are checked on other sizes too.
JAX_PARITY, ONNX_PARITY = 1e-5, 1e-4  # Against jaxseg.predict (runs.predict_image).
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("jax2onnx", "onnx", "onnxruntime"))


def gray16(rng, size=SIZE):
    """uint16 ``[H, W, 1]`` over the whole range, low bits set (not 8-bit data scaled up)."""
    return rng.integers(0, 65536, (*size, 1), dtype=np.uint16)


def float5(rng, size=SIZE):
    """float32 ``[H, W, 5]``, partly outside [0, 1] (float images are taken as they are)."""
    return (rng.standard_normal((*size, 5)) * 0.8 + 0.5).astype(np.float32)


def write_folder(root, make, n=8):
    """``images/img{i}.tif`` (tifffile, channels interleaved) + ``masks/img{i}.png``."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = make(rng)
        tifffile.imwrite(root / "images" / f"img{i}.tif", image, photometric="minisblack")
        mask = rng.integers(0, len(CLASSES), SIZE, dtype=np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")


def folder_config(root, name, channels, **overrides):
    return tiny_config(
        dataset=f"folder:{name}", class_names=CLASSES, num_channels=channels,
        data_dir=f"{root}/tfds", manual_dir=f"{root}/raw", eval_split="train", eval_size=SIZE,
        num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=4, **overrides,
    )  # fmt: skip


@pytest.fixture(scope="session")
def gray16_run(tmp_path_factory) -> str:
    def make_config(root):
        write_folder(pathlib.Path(root) / "raw", gray16)
        return folder_config(root, "gray16", 1)

    return _run("gray16", tmp_path_factory, make_config)


@pytest.fixture(scope="session")
def float5_run(tmp_path_factory) -> str:
    def make_config(root):  # With statistics: read in the same pass as the pixel type.
        write_folder(pathlib.Path(root) / "raw", float5)
        return folder_config(root, "float5", 5, normalization="statistics")

    return _run("float5", tmp_path_factory, make_config)


RUNS = {"gray16": ("gray16_run", gray16, "uint16", [0, 65535]),
        "float5": ("float5_run", float5, "float32", None)}  # fmt: skip


def trained_and_images(request, name):
    fixture, make, _, _ = RUNS[name]
    trained = load_trained(request.getfixturevalue(fixture))
    rng = np.random.default_rng(7)
    sizes = [(1, *SIZE), (2, 24, 36)]  # Multiples of the U-Net's 4 (symbolic sizes).
    return trained, [np.stack([make(rng, (h, w)) for _ in range(b)]) for b, h, w in sizes]


def predicted(trained, x):
    """jaxseg.predict's probabilities for each image of ``x`` (its default predictor)."""
    predictor = trained.predictor()
    return np.stack([runs.predict_image(predictor, image) for image in x])


def check_parity(probabilities, classes, want, tolerance):
    """The largest difference of the probabilities, checked against ``tolerance``; the classes
    are their argmax, and predict's wherever its top two are not a near tie (these 4-step models
    leave many pixels near a tie)."""
    difference = float(np.abs(probabilities - want).max())
    assert difference < tolerance, difference
    assert classes.dtype == np.int32
    np.testing.assert_array_equal(classes, probabilities.argmax(-1))
    top2 = np.sort(want, -1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 2 * tolerance
    np.testing.assert_array_equal(classes[clear], want.argmax(-1)[clear])
    assert clear.mean() > 0.5
    return difference


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_run_records_its_pixel_type(request, name):
    fixture, _, dtype, _ = RUNS[name]
    workdir = request.getfixturevalue(fixture)
    config = json.loads(open(f"{workdir}/config.json").read())
    assert config["input_dtype"] == dtype
    assert load_trained(workdir).input_dtype == dtype
    if name == "float5":  # One pass over the data gives the statistics and the type.
        assert len(config["normalization_stats"][0]) == 5


def test_runs_without_a_recorded_type_mean_uint8(gray16_run, tmp_path):
    assert config_input_dtype(ml_collections.ConfigDict({"model": "unet"})) == "uint8"
    assert config_input_dtype(ml_collections.ConfigDict({"input_dtype": ""})) == "uint8"
    with pytest.raises(ValueError, match="input_dtype must be one of"):
        config_input_dtype(ml_collections.ConfigDict({"input_dtype": "int32"}))
    older = tmp_path / "older"
    shutil.copytree(gray16_run, older)
    config = json.loads((older / "config.json").read_text())
    del config["input_dtype"]
    (older / "config.json").write_text(json.dumps(config))
    trained = load_trained(str(older))
    assert trained.input_dtype == "uint8"
    _, metadata = export_model(trained, height=8, width=8)
    assert metadata["input"]["dtype"] == "uint8" and metadata["input"]["value_range"] == [0, 255]


def test_a_given_input_dtype_must_be_the_datas(gray16_run):
    root = pathlib.Path(gray16_run).parent  # Where the fixture wrote and prepared the data.
    config = folder_config(root, "gray16", 1, input_dtype="uint8")
    with pytest.raises(ValueError, match="input_dtype is 'uint8', but the training images of "
                       "gray16 are uint16"):  # fmt: skip
        training.complete_config(config)
    config.input_dtype = "uint16"
    assert training.complete_config(config).input_dtype == "uint16"
    with pytest.raises(ValueError, match="input_dtype is 'float32', but synthetic_shapes is uint8"):
        training.complete_config(tiny_config(input_dtype="float32"))
    assert training.complete_config(tiny_config()).input_dtype == "uint8"  # No data read.


@pytest.mark.parametrize("name", sorted(RUNS))
def test_jax_export_equals_predict(request, name, tmp_path):
    _, _, dtype, value_range = RUNS[name]
    trained, batches = trained_and_images(request, name)
    exported, metadata = export_model(trained)
    assert metadata["input"]["dtype"] == dtype and metadata["input"]["value_range"] == value_range
    assert exported.in_avals[0].dtype == np.dtype(dtype)
    save_exported(str(tmp_path / "model.jax"), exported, metadata)
    model = load_exported(str(tmp_path / "model.jax"))
    assert model.input_dtype == np.dtype(dtype)
    differences = []
    for x in batches:
        out = model(x)
        assert out["probabilities"].shape == (*x.shape[:3], len(CLASSES))
        differences.append(check_parity(**out, want=predicted(trained, x), tolerance=JAX_PARITY))
    print(f"\n{name}: max |jax export - predict| = {max(differences):.2e}")
    x = batches[0]
    with pytest.raises(ValueError, match=f"images must be {dtype}.*trained on; got uint8"):
        model(np.zeros(x.shape, np.uint8))  # 8-bit data is not this model's input.
    if name == "gray16":  # The parity would catch uint16 scaled as uint8 (/ 255).
        wrong = trained.predictor()(x[0] / np.float32(255))
        assert np.abs(model(x)["probabilities"][0] - wrong).max() > 100 * JAX_PARITY


def test_16bit_cli_export_names_its_input_type(gray16_run, tmp_path):
    output = tmp_path / "gray16.jax"
    cmd = [sys.executable, "-m", "jaxseg.export", "--workdir", gray16_run, "--output", str(output)]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "for uint16 [batch, 4*h, 4*w, 1]" in proc.stdout
    sidecar = json.loads((tmp_path / "gray16.json").read_text())
    assert sidecar["input"]["dtype"] == "uint16" and sidecar["input"]["value_range"] == [0, 65535]


@pytest.mark.skipif(not HAS_ONNX, reason="jax2onnx, onnx and onnxruntime are optional")
@pytest.mark.parametrize("name", sorted(RUNS))
def test_onnx_export_equals_predict(request, name, tmp_path):
    import onnxruntime as ort

    from jaxseg.runs import export_onnx, save_onnx

    _, _, dtype, value_range = RUNS[name]
    trained, batches = trained_and_images(request, name)
    model, metadata = export_onnx(trained)
    assert metadata["input"]["dtype"] == dtype and metadata["input"]["value_range"] == value_range
    save_onnx(str(tmp_path / "model.onnx"), model, metadata)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.type == {"uint16": "tensor(uint16)", "float32": "tensor(float)"}[dtype]
    differences = []
    for x in batches:
        probabilities, classes = session.run(["probabilities", "classes"], {"images": x})
        want = predicted(trained, x)
        differences.append(check_parity(probabilities, classes, want, ONNX_PARITY))
    print(f"\n{name}: max |onnx - predict| = {max(differences):.2e}")
    with pytest.raises(Exception, match="Unexpected input data type"):  # onnxruntime's words.
        session.run(None, {"images": batches[0].astype(np.uint8)})


# --- Resizing inside the export (config.resize_to) as training resizes these types ---------------


@pytest.mark.parametrize("make", [gray16, float5], ids=["uint16", "float32"])
def test_resize_inside_the_export_is_trainings(make):
    rng = np.random.default_rng(3)
    images = np.stack([make(rng, (37, 45)) for _ in range(2)])
    for size in ((20, 26), (50, 61)):  # Down (antialiased) and up.
        out = np.asarray(exporting._resized(images, size))
        want = np.stack([pixels.resize(image, size) for image in images])
        assert out.dtype == want.dtype and out.shape == want.shape
        if want.dtype == np.uint16:  # Rounded back: float32 and Pillow's float64 may split a .5.
            assert np.abs(out.astype(np.int64) - want).max() <= 1
            assert (out == want).mean() > 0.99
        else:
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
