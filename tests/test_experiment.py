"""The experiment runner (``jaxseg.runs.experiments``, ``experiment_report``, ``jaxseg.experiment``):
arms merged into the base config, every run kept and skipped once finished, a killed job resumed,
the statistics exact, and the report written from the runs' own results."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import ml_collections
import numpy as np
import pytest
from PIL import Image
from trained_run import ROOT, subprocess_env, tiny_config

from jaxseg.runs import experiment_plots, experiment_report, experiment_runner, experiments


def _experiment(data_dir: str, steps: int = 4, seeds=(0, 1)) -> ml_collections.ConfigDict:
    experiment = ml_collections.ConfigDict()
    experiment.base = tiny_config(data_dir=data_dir, num_train_steps=steps, eval_every_steps=2,
                                  checkpoint_every_steps=2, log_every_steps=1)  # fmt: skip
    experiment.arms = (("concat", {"model_kwargs": {"skip": "concat"}}),
                       ("none", {"model_kwargs": {"skip": "none"}}))  # fmt: skip
    experiment.seeds = seeds
    experiment.metrics = ("mean_iou", "pixel_accuracy")
    experiment.evaluate = False
    experiment.num_prediction_images = 2
    return experiment


def test_an_arm_changes_only_the_fields_it_names():
    experiment = _experiment("/unused")
    experiment.arms = (
        ("wide", {"model_kwargs": {"base_features": 8}, "loss": {"dice": 0.5}}),
        ("fcn", {"model": "fcn8s", "model_kwargs": {"base_features": 4}, "learning_rate": 0.1}),
        ("open", {"augment": {"rot90_prob": 0.5}}),
    )
    wide = experiments.arm_config(experiment, "wide")
    assert dict(wide.model_kwargs) == {"padding": "SAME", "depth": 2, "base_features": 8}
    assert (wide.loss.dice, wide.loss.cross_entropy) == (0.5, 1.0)
    fcn = experiments.run_config(experiment, "fcn", 7)
    assert (fcn.model, fcn.learning_rate, fcn.seed) == ("fcn8s", 0.1, 7)
    assert dict(fcn.model_kwargs) == {"base_features": 4}  # Not merged into the U-Net's.
    assert experiments.arm_config(experiment, "open").augment.rot90_prob == 0.5  # Added key.
    assert experiment.base.model_kwargs.base_features == 4  # The base is not changed.


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("arms", (("a", {"lerning_rate": 0.1}),), "no field 'lerning_rate'"),
        ("arms", (("a", {"border_weights": {"w": 1.0}}),), "no field 'border_weights.w'"),
        ("arms", (("a", {"batch_size": "big"}),), "batch_size = 'big'"),
        ("arms", (("a", {}), ("a", {})), "unique"),
        ("arms", (("a b", {}),), "arm names"),
        ("arms", (), "non-empty"),
        ("seeds", (0, 0), "distinct"),
        ("seeds", (-1,), "non-negative"),
        ("metrics", (), "metrics"),
        ("metrics", ("mean_iouu",), "unknown metric 'mean_iouu'"),
        ("metrics", ("isbi.v_rand",), "unknown metric"),  # Needs evaluate = True.
        (
            "arms",
            (("a", {"model_kwargs": {"skipp": "add"}}),),
            "arm 'a': model 'unet' has no field",
        ),
        ("arms", (("a", {"model": "nosuch"}),), "arm 'a': unknown model 'nosuch'"),
    ],
)
def test_a_bad_experiment_is_named(field, value, message):
    experiment = _experiment("/unused")
    with experiment.unlocked():
        experiment[field] = value
    with pytest.raises(ValueError, match=message):
        experiments.check(experiment)


def test_no_report_without_a_finished_run(tmp_path):
    with pytest.raises(ValueError, match="no finished run"):
        experiment_report.write_report("tiny", _experiment("/unused"), str(tmp_path), str(tmp_path))
    assert not os.listdir(tmp_path)  # Nothing written (an earlier report would stay as it is).


def test_unknown_arms_are_refused_before_training():
    with pytest.raises(ValueError, match="no arm 'nope'"):
        experiments.runs(_experiment("/unused"), ["nope"])


def test_spread_is_mean_and_sample_standard_deviation():
    assert experiment_report.spread([1.0, 2.0, 4.0]) == {"mean": 7 / 3, "std": np.std([1, 2, 4], ddof=1), "n": 3}  # fmt: skip
    assert experiment_report.spread([0.5, None]) == {"mean": 0.5, "std": None, "n": 1}
    assert experiment_report.spread([None]) == {"mean": None, "std": None, "n": 0}


def test_the_table_shows_mean_spread_and_seed_count():
    experiment = _experiment("/unused")
    runs = [{"seed": s, "metrics": {"mean_iou": v, "pixel_accuracy": 0.9, "per_class_iou": [v, None]}}
            for s, v in ((0, 0.5), (1, 0.7))]  # fmt: skip
    arms = experiment_report.summarize(experiment, {"concat": runs, "none": []})
    table = experiment_report.markdown("tiny", experiment, arms, ["a", "b"])
    assert "| concat | 2 | 0.6000 ± 0.1414 | 0.9000 ± 0.0000 |" in table
    assert "| concat | 0.6000 ± 0.1414 | - |" in table
    assert "| none |" not in table  # No finished seed: no row.
    with pytest.raises(ValueError, match="no metric 'isbi.v_rand'"):
        experiment_report.metric(runs[0], "isbi.v_rand")


def test_runs_are_kept_skipped_once_finished_and_reported(tmp_path):
    experiment = _experiment(str(tmp_path / "tfds"))
    root, logged = str(tmp_path / "runs"), []
    assert experiment_runner.run_all(experiment, root, log=logged.append) == []
    assert logged[0].startswith("0 runs finished, 4 to train")
    results = experiments.results(experiment, root)
    assert [[r["seed"] for r in results[a]] for a in ("concat", "none")] == [[0, 1], [0, 1]]
    for arm, seed in experiments.runs(experiment):
        workdir = experiments.run_dir(root, arm, seed)
        assert os.path.isdir(os.path.join(workdir, "checkpoints"))
        assert os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    # Two seeds of one config differ; the same seed of two arms differs too.
    ious = {(a, r["seed"]): r["metrics"]["mean_iou"] for a in results for r in results[a]}
    assert len(set(ious.values())) == 4

    stamp = os.path.getmtime(os.path.join(experiments.run_dir(root, "none", 1), "result.json"))
    assert experiment_runner.run_all(experiment, root, log=logged.append) == []
    assert logged[-1].startswith("4 runs finished, 0 to train")
    assert (
        os.path.getmtime(os.path.join(experiments.run_dir(root, "none", 1), "result.json")) == stamp
    )

    paths = experiment_report.write_report("tiny", experiment, root, str(tmp_path / "results"))
    report = json.load(open(paths[".json"]))
    values = [ious[("none", 0)], ious[("none", 1)]]
    assert report["arms"]["none"]["metrics"]["mean_iou"]["mean"] == pytest.approx(np.mean(values))
    assert report["arms"]["none"]["metrics"]["mean_iou"]["std"] == pytest.approx(
        np.std(values, ddof=1)
    )
    assert report["class_names"][0] == "background" and report["seeds"] == [0, 1]
    assert "| none | 2 |" in open(paths[".md"]).read()
    for kind in ("_curves.png", "_per_class.png", "_predictions.png"):
        assert Image.open(paths[kind]).size[0] > 200
    changed = _experiment(str(tmp_path / "tfds"), steps=6)  # The experiment changed since.
    with pytest.raises(ValueError, match=r"another config \(num_train_steps: 4 -> 6"):
        experiment_runner.run_all(changed, root, log=logged.append)
    with pytest.raises(ValueError, match="another config"):
        experiment_report.write_report("tiny", changed, root, str(tmp_path / "results"))
    curves = experiment_plots.learning_curves(root, "none", [0, 1])
    assert curves["mean_iou"][0] == [2, 4] and curves["loss"][1].shape == (2, 4)


def test_a_failing_arm_is_reported_and_the_others_train(tmp_path):
    experiment = _experiment(str(tmp_path / "tfds"), steps=2, seeds=(0,))
    experiment.arms = (("bad", {"model_kwargs": {"depth": 0}}), ("good", {}))
    failures = experiment_runner.run_all(experiment, str(tmp_path / "runs"), log=lambda _: None)
    assert len(failures) == 1 and failures[0].startswith("bad seed 0:")
    assert experiments.read_result(str(tmp_path / "runs"), "good", 0)["step"] == 2


def test_runs_train_in_parallel_processes(tmp_path):
    experiment = _experiment(str(tmp_path / "tfds"), steps=2, seeds=(0,))
    root = str(tmp_path / "runs")
    assert experiment_runner.run_all(experiment, root, processes=2, log=lambda _: None) == []
    assert [experiments.read_result(root, arm, 0)["step"] for arm in ("concat", "none")] == [2, 2]


EXPERIMENT_FILE = """
import ml_collections
from configs import base as base_config

def get_config():
    experiment = ml_collections.ConfigDict()
    base = base_config.get_config()
    base.data_dir = {data_dir!r}
    base.model_kwargs = {{"padding": "SAME", "depth": 2, "base_features": 4}}
    base.input_size, base.batch_size, base.eval_batch_size = (32, 32), 8, 16
    base.eval_split = "validation[:16]"
    base.num_train_steps, base.eval_every_steps = 30, 30
    base.checkpoint_every_steps, base.log_every_steps = 1, 1
    experiment.base = base
    experiment.arms = (("plain", {{}}),)
    experiment.seeds = (0,)
    experiment.metrics = ("mean_iou",)
    experiment.evaluate = True
    experiment.num_prediction_images = 1
    return experiment
"""


def test_a_killed_job_resumes_with_the_same_command(tmp_path):
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    (tmp_path / "experiments").mkdir()
    path = tmp_path / "experiments" / "tiny.py"
    path.write_text(textwrap.dedent(EXPERIMENT_FILE.format(data_dir=str(tmp_path / "tfds"))))
    command = [sys.executable, "-m", "jaxseg.experiment", f"--config={path}",
               f"--workdir={tmp_path / 'runs'}", f"--results_dir={tmp_path / 'results'}"]  # fmt: skip
    workdir = tmp_path / "runs" / "plain" / "seed_0"
    job = subprocess.Popen(command, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 240
    while not (workdir / "checkpoints" / "3").exists() and job.poll() is None:
        assert time.time() < deadline, "no checkpoint"
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    output = job.communicate(timeout=120)[0]
    assert job.returncode == 0, output
    assert "stopped: run the same command again to resume" in output
    assert "no run finished yet: no report written" in output
    assert not (workdir / "result.json").exists()

    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((workdir / "result.json").read_text())
    assert (result["step"], result["resumed"]) == (30, True)
    assert "Resumed from step" in done.stdout
    assert result["metrics"]["tile_size"]  # Scored by evaluate_split (evaluate = True).
    assert "| plain | 1 |" in (tmp_path / "results" / "tiny.md").read_text()

    bad = subprocess.run([*command, "--arms=nope"], cwd=ROOT, env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "no arm 'nope'" in bad.stderr
