"""Loading trained runs and predicting image files: formats, sizes, tiling, failures, the CLI."""

# ruff: noqa: F401, F811  (fixtures from trained_run are imported, then named as arguments)

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from trained_run import ROOT, isbi_run, same_run, subprocess_env

from jaxseg import checkpoint, inference, runs, summary, training
from jaxseg.data import files, pixels
from jaxseg.runs import load_trained

RNG = np.random.default_rng(0)


def gray(h, w):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def write_inputs(folder):
    """Odd-sized files of every kind; returns {output name: uint8 [H, W, 3] expected input}."""
    os.makedirs(folder / "nested")
    expected = {}
    g = gray(37, 45)
    Image.fromarray(g).save(folder / "gray.png")
    expected["gray"] = np.repeat(g[..., None], 3, -1)
    rgba = RNG.integers(0, 256, (50, 33, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(folder / "rgba.png")
    expected["rgba"] = rgba[..., :3]
    deep = RNG.integers(0, 65536, (41, 27), dtype=np.uint16)
    Image.fromarray(deep).save(folder / "deep.png")  # 16-bit grayscale PNG.
    expected["deep"] = np.repeat(deep[..., None], 3, -1)  # 16 bits kept, scaled by 65535.
    Image.fromarray(RNG.integers(0, 256, (30, 41, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    expected["photo"] = np.asarray(Image.open(folder / "photo.jpg").convert("RGB"))
    pages = [gray(23, 31) for _ in range(3)]
    Image.fromarray(pages[0]).save(
        folder / "stack.tif", save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]]
    )
    for i, page in enumerate(pages):
        expected[f"stack_p{i:02d}"] = np.repeat(page[..., None], 3, -1)
    (folder / "broken.png").write_bytes(b"not an image")
    Image.fromarray(gray(8, 8)).save(folder / "nested" / "deeper.png")  # Not read: no recursion.
    return expected


def test_predict_files_writes_every_format_and_the_predictors_argmax(same_run, tmp_path, capsys):
    trained = load_trained(same_run)
    expected = write_inputs(tmp_path / "in")
    missing = str(tmp_path / "missing.png")
    report = runs.predict_files(
        trained, [str(tmp_path / "in"), missing], str(tmp_path / "out"), probabilities=True,
        tile_size=32,
    )  # fmt: skip
    assert sorted(w.name for w in report.written) == sorted(expected)
    assert sorted(os.path.basename(p) for p, _ in report.failed) == ["broken.png", "missing.png"]
    assert not report.ok
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing.png" in err

    predictor = inference.for_model(trained.model, trained.variables, tile_size=32)
    for name, image in expected.items():
        want = predictor(pixels.to_unit(image))
        mask = Image.open(tmp_path / "out" / f"{name}.png")
        assert mask.mode == "L" and mask.size == image.shape[1::-1]
        np.testing.assert_array_equal(np.asarray(mask), np.argmax(want, -1))
        probabilities = np.load(tmp_path / "out" / f"{name}_probabilities.npy")
        assert probabilities.shape == (*image.shape[:2], 5) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities, want, atol=1e-6)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        overlay = Image.open(tmp_path / "out" / f"{name}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == image.shape[1::-1]
    assert not os.path.exists(tmp_path / "out" / "deeper.png")


def test_valid_unet_predicts_by_overlap_tile_with_tta(isbi_run, tmp_path):
    trained = load_trained(isbi_run)
    assert trained.spec.num_channels == 1 and trained.num_classes == 2
    image = gray(70, 53)
    rgb = RNG.integers(0, 256, (33, 61, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "slice.tif")
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    report = runs.predict_files(
        trained, [str(tmp_path / "slice.tif"), str(tmp_path / "colour.png")], str(tmp_path / "out"),
        tile_size=60, tta="flips", probabilities=True, probabilities_dtype="float16",
    )  # fmt: skip
    assert report.ok and len(report.written) == 2
    predictor = inference.for_model(trained.model, trained.variables, tile_size=60, tta="flips")
    assert predictor.mode == "overlap_tile" and np.prod(predictor.tile_grid((70, 53, 1))) > 1
    as_gray = np.asarray(Image.fromarray(rgb).convert("L"))  # Colour -> the model's 1 channel.
    for name, array in (("slice", image), ("colour", as_gray)):
        want = predictor(array[..., None].astype(np.float32) / 255.0)
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "out" / f"{name}.png")), np.argmax(want, -1)
        )
        probabilities = np.load(tmp_path / "out" / f"{name}_probabilities.npy")
        assert probabilities.dtype == np.float16 and probabilities.shape == (*array.shape, 2)


def test_output_name_clashes_fail_without_overwriting(same_run, tmp_path):
    trained = load_trained(same_run)
    for name in ("a/x.png", "b/x.png", "c/y.png"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        Image.fromarray(gray(9, 9)).save(tmp_path / name)
    # b/x.png would take a/x.png's output names; c/y.png's mask would overwrite c/y.png itself.
    inputs = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c" / "y.png")]
    report = runs.predict_files(trained, inputs, str(tmp_path / "c"), verbose=False)
    assert [w.source for w in report.written] == [str(tmp_path / "a" / "x.png")]
    assert [p for p, _ in report.failed] == [str(tmp_path / "b" / "x.png"), inputs[2]]
    assert "already taken by" in report.failed[0][1] and "would overwrite" in report.failed[1][1]
    assert np.asarray(Image.open(tmp_path / "c" / "y.png")).shape == (9, 9)  # Untouched input.


def test_load_trained_errors_are_clear(same_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        load_trained(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_trained(str(tmp_path))
    shutil.copy(os.path.join(same_run, "config.json"), tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_trained(str(tmp_path))
    other = tmp_path / "other"
    shutil.copytree(same_run, other)
    config = json.loads((other / "config.json").read_text())
    config["model_kwargs"]["base_features"] = 6
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the model built from the config"):
        load_trained(str(other))
    config["model"] = "resnet"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json: unknown model 'resnet'"):
        load_trained(str(other))


def add_worse_latest_checkpoint(workdir, step):
    """Saves ``step``: the latest run's parameters biased to class 4, scored mean IoU -1."""
    config = load_trained(workdir).config
    setup, (tx, _) = training.resolve(config), training.create_optimizer(config)
    abstract = jax.eval_shape(lambda: training.create_train_state(config, setup, tx))
    manager = checkpoint.create_manager(os.path.join(workdir, "checkpoints"))
    state = checkpoint.restore(manager, manager.latest_step(), abstract)
    params = jax.tree.map(np.asarray, state.params)
    params["3_head"]["bias"] = params["3_head"]["bias"] + np.array([0, 0, 0, 0, 100.0], np.float32)
    checkpoint.save(
        manager, step, state.replace(params=params, step=step), metrics={"mean_iou": -1.0}
    )
    manager.wait_until_finished()
    manager.close()


def test_best_and_latest_checkpoints_and_the_cli(same_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(same_run, run)
    add_worse_latest_checkpoint(str(run), 100)
    evals = [r for r in summary.read_metrics(str(run)) if r["split"] == "eval"]
    best_score = max(r["mean_iou"] for r in evals)
    best = load_trained(str(run))
    assert best.checkpoint == "best"
    assert best.step in [r["step"] for r in evals if r["mean_iou"] == best_score]
    latest = load_trained(str(run), best=False)
    assert (latest.step, latest.checkpoint) == (100, "latest")

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(gray(37, 45)).save(inputs / "gray.png")
    Image.fromarray(RNG.integers(0, 256, (50, 33, 4), dtype=np.uint8)).save(inputs / "rgba.png")
    (inputs / "broken.png").write_bytes(b"not an image")
    forged_png(inputs / "bomb.png")  # Claims 100000x100000 pixels.
    best_masks = runs.predict_files(
        best, [str(inputs / "gray.png")], str(tmp_path / "best"), tile_size=32, verbose=False
    )
    assert best_masks.ok
    assert (np.asarray(Image.open(tmp_path / "best" / "gray.png")) != 4).any()

    cmd = [sys.executable, "-m", "jaxseg.predict", "--workdir", str(run), "--latest",
           "--input", str(inputs / "gray.png"), str(inputs / "broken.png"), str(inputs / "rgba.png"),
           str(inputs / "bomb.png"),
           "--output", str(tmp_path / "out"), "--probabilities", "--tta", "flips",
           "--tile_size", "32"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "broken.png" in proc.stderr and "latest checkpoint, step 100" in proc.stdout
    assert "bomb.png" in proc.stderr and "--max_image_pixels" in proc.stderr
    assert "Traceback" not in proc.stderr
    for name, shape in (("gray", (37, 45)), ("rgba", (50, 33))):
        mask = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert mask.shape == shape and (mask == 4).all()  # The biased latest checkpoint.
        assert np.load(tmp_path / "out" / f"{name}_probabilities.npy").shape == (*shape, 5)
        assert np.asarray(Image.open(tmp_path / "out" / f"{name}_overlay.png")).shape == (*shape, 3)
    assert not os.path.exists(tmp_path / "out" / "broken.png")


def test_predict_image_resizes_like_training_and_back():
    seen = []

    def predictor(x):  # A per-pixel stand-in: class 0 score = intensity.
        seen.append(x.shape)
        return np.stack([x[..., 0], 1 - x[..., 0]], -1).astype(np.float32)

    image = np.full((30, 50, 1), 128, np.uint8)
    image[:, 25:] = 255
    out = runs.predict_image(predictor, image, (16, 24))
    assert seen == [(16, 24, 1)] and out.shape == (30, 50, 2)
    np.testing.assert_allclose(out[:, :20, 0], 128 / 255, atol=1e-6)
    np.testing.assert_allclose(out[:, 31:, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(
        runs.predict_image(predictor, image), predictor(image / 255.0), atol=1e-6
    )


def forged_png(path, width=100_000, height=100_000):
    """A real 8x8 PNG whose IHDR (CRC fixed) claims ``width`` x ``height``."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.fromarray(gray(8, 8)).save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    assert png[12:16] == b"IHDR"
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    path.write_bytes(bytes(png))


def test_an_oversized_image_is_named_and_the_others_predicted(same_run, tmp_path, monkeypatch):
    # Issue 8 item 12: a PNG claiming 100000x100000 raised DecompressionBombError and stopped
    # every prediction. It is now refused like an unreadable file, before anything is decoded.
    trained = load_trained(same_run)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(gray(37, 45)).save(inputs / "a.png")
    forged_png(inputs / "bomb.png")
    Image.fromarray(gray(20, 30)).save(inputs / "c.png")
    (inputs / "empty.png").write_bytes(b"")
    report = runs.predict_files(trained, [str(inputs)], str(tmp_path / "out"),
                                      tile_size=32, verbose=False)  # fmt: skip
    assert sorted(w.name for w in report.written) == ["a", "c"]
    failed = dict((os.path.basename(p), reason) for p, reason in report.failed)
    assert sorted(failed) == ["bomb.png", "empty.png"]
    assert (
        "100000x100000 = 10,000,000,000 pixels, over the limit of 178,956,970" in failed["bomb.png"]
    )
    assert "--max_image_pixels" in failed["bomb.png"]
    with pytest.raises(ValueError, match="over the limit"):
        files.read_image(inputs / "bomb.png", 1)
    with pytest.raises(ValueError, match="over the limit"):
        files.read_mask(inputs / "bomb.png")

    # The limit is the caller's: 1000 pixels refuses a.png (1665), 0 lifts it for real images.
    small = runs.predict_files(trained, [str(inputs / "a.png"), str(inputs / "c.png")],
                                     str(tmp_path / "small"), tile_size=32, verbose=False,
                                     max_image_pixels=1000)  # fmt: skip
    assert [w.name for w in small.written] == ["c"]
    assert "37 = 1,665 pixels, over the limit of 1,000" in small.failed[0][1]
    assert files.read_image(inputs / "a.png", 1, max_pixels=0).shape == (37, 45, 1)
    # Pillow's own check is off while jaxseg reads, so that the limit asked for is the one that
    # holds (here Pillow's would refuse anything over 2 x 100 pixels).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert files.read_image(inputs / "a.png", 1, max_pixels=2000).shape == (37, 45, 1)
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        files.read_image(inputs / "a.png", 1, max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's setting is left as it was.
