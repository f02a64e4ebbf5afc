"""config.loggers: checked at resolution; TensorBoard and Weights & Biases (offline mode, its
local run files read back) get the same scalars, config and panels as metrics.jsonl."""

import glob
import json
import os
import struct
import sys
import time

import ml_collections
import numpy as np
import pytest
from event_files import tensorboard_events
from PIL import Image
from trained_run import tiny_config

from jaxseg import summary, training
from jaxseg.errors import UserError


def wandb_records(run_dir: str) -> list:
    """The records of a W&B run's ``run-*.wandb`` file: a LevelDB-style log (a 7-byte header,
    32 KiB blocks of chunks, each ``crc32 | length | type`` then data) of protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:4] == b":W&B"
    records, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # A block's tail too short for a chunk header: padding.
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # A full record, or the last chunk of one.
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def _key(item) -> tuple[str, ...]:
    return tuple(item.nested_key) or (item.key,)


def wandb_run(run_dir: str) -> dict:
    """``{"run": RunRecord, "config": {key: value}, "history": {step: {key: value}}}``."""
    run, config, history = None, {}, {}
    # W&B's service may still be writing the file when ``finish()`` returns: wait for its exit
    # record (a few seconds at most) before reading.
    deadline = time.monotonic() + 60
    while not any(r.HasField("exit") for r in wandb_records(run_dir)):
        assert time.monotonic() < deadline, f"no exit record in {run_dir}"
        time.sleep(0.2)
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({_key(u)[0]: json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            config.update({_key(u)[0]: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(row[("_step",)], {}).update(row)
    return {"run": run, "config": config, "history": history}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B in offline mode, its settings and caches under ``tmp_path``, no run variables set."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("CONFIG_DIR", "CACHE_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        monkeypatch.setenv(f"WANDB_{name}", str(tmp_path / "wandb_home" / name.lower()))
    for name in ("WANDB_DIR", "WANDB_NAME", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_unknown_logger_is_a_clear_error_before_the_workdir_is_touched(tmp_path):
    config = tiny_config(loggers=("tensorboard", "mlflow"))
    with pytest.raises(UserError, match=r"unknown logger 'mlflow' in config.loggers; choose from"):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="config.loggers must be a tuple of names"):
        summary.check_loggers("wandb")
    assert summary.check_loggers(("wandb", "tensorboard", "wandb")) == ("wandb", "tensorboard")


def test_wandb_without_its_package_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # ``import wandb`` fails as if not installed.
    expected = r"the wandb package is not installed: pip install 'jaxseg\[wandb\]'$"
    with pytest.raises(UserError, match=expected):
        training.resolve(tiny_config(loggers=("tensorboard", "wandb")))
    with pytest.raises(UserError, match=expected):
        summary.SummaryWriter(str(tmp_path), ("wandb",))
    with pytest.raises(UserError, match=expected):
        summary.WandbLogger(str(tmp_path))
    training.resolve(tiny_config())  # TensorBoard alone needs no W&B.


@pytest.mark.parametrize(
    "env, project, name",
    [
        ({}, "jaxseg", "my_run"),
        ({"WANDB_PROJECT": "seg", "WANDB_NAME": "trial 3"}, "seg", "trial 3"),
    ],
)
def test_wandb_run_is_named_after_the_workdir_and_kept_in_it_unless_the_environment_says(
    tmp_path, offline_wandb, env, project, name
):
    for key, value in env.items():
        offline_wandb.setenv(key, value)
    workdir = str(tmp_path / "my_run")
    writer = summary.SummaryWriter(workdir, ("wandb",))
    writer.write_config(workdir, ml_collections.ConfigDict({"model": "unet", "sizes": (1, 2)}))
    writer.scalars(3, "train", {"loss": np.float32(0.25), "per_class": [1.0, None, 0.5]})
    writer.close()
    (run_dir,) = glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))
    run = wandb_run(run_dir)
    assert (run["run"].project, run["run"].display_name) == (project, name)
    assert run["config"]["model"] == "unet" and run["config"]["sizes"] == [1, 2]
    row = run["history"][3]
    assert row[("train/loss",)] == 0.25 and row[("train/per_class/2",)] == 0.5
    assert ("train/per_class/1",) not in row  # No value (NaN in metrics.jsonl): not logged.


def test_training_logs_the_same_scalars_config_and_panels_to_tensorboard_and_wandb(
    tmp_path, offline_wandb
):
    offline_wandb.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    workdir = str(tmp_path / "run")
    config = tiny_config(
        data_dir=str(tmp_path / "tfds"),
        loggers=("tensorboard", "wandb"),
        num_train_steps=4,
        eval_every_steps=4,
        checkpoint_every_steps=4,
        log_every_steps=2,
    )
    training.train_and_evaluate(config, workdir)
    (run_dir,) = glob.glob(str(tmp_path / "wandb" / "wandb" / "offline-run-*"))
    run = wandb_run(run_dir)
    assert run["run"].display_name == "run"

    # The config: all of config.json.
    with open(os.path.join(workdir, summary.CONFIG_FILE)) as f:
        written = json.load(f)
    assert written["loggers"] == ["tensorboard", "wandb"]
    assert {k: run["config"][k] for k in written} == written

    # The scalars: every number of metrics.jsonl, at its step, in both loggers.
    tensorboard = {
        (value.tag, event.step): value.simple_value
        for event in tensorboard_events(os.path.join(workdir, "tensorboard"))
        for value in event.summary.value
        if value.HasField("simple_value")
    }
    expected = {}
    for record in summary.read_metrics(workdir):
        for name, value in record.items():
            tag = f"{record['split']}/{name}"
            if name in ("step", "split", "time"):
                continue
            if isinstance(value, list):
                expected.update({(f"{tag}/{i}", record["step"]): v for i, v in enumerate(value)})
            else:
                expected[tag, record["step"]] = value
    assert ("eval/per_class_iou/4", 4) in expected and ("train/loss", 2) in expected
    logged = {(k[0], step): v for step, row in run["history"].items() for k, v in row.items()}
    for key, value in expected.items():
        if value is None:  # NaN: in neither.
            assert key not in logged and key not in tensorboard
            continue
        assert logged[key] == pytest.approx(value, rel=1e-6), key
        assert tensorboard[key] == pytest.approx(value, rel=1e-6), key

    # The panel: the PNG in the workdir, in W&B's media files and as TensorBoard's image.
    panel = np.asarray(Image.open(summary.panel_path(workdir, "eval", 4)).convert("RGB"))
    image = run["history"][4]
    assert image["eval/input_truth_prediction", "_type"] == "image-file"
    media = os.path.join(run_dir, "files", image["eval/input_truth_prediction", "path"])
    np.testing.assert_array_equal(np.asarray(Image.open(media).convert("RGB")), panel)
    tags = {
        v.tag
        for e in tensorboard_events(os.path.join(workdir, "tensorboard"))
        for v in e.summary.value
    }
    assert "eval/input_truth_prediction" in tags and any(t.startswith("config") for t in tags)
