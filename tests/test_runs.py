"""Runs that must not be lost or tangled: the workdir lock, damaged checkpoints, user errors as one
line (issue 8, items 4-6)."""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from trained_run import (
    ROOT,
    same_run,  # noqa: F401  (a fixture)
    subprocess_env,
    tiny_config,
)

from jaxseg import checkpoint, data, runs, summary, training
from jaxseg.errors import UserError
from jaxseg.training import workdir_lock


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    data.get_builder(data.get_spec("synthetic_shapes"), data_dir=d)
    return d


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_holder(workdir, **holder) -> str:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    with open(path, "w") as f:
        import json

        json.dump({"started": "2026-11-22 03:00:00 +0000", "command": "test", **holder}, f)
    return path


# --- The lock itself ----------------------------------------------------------------------------


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first = workdir_lock.WorkdirLock(str(tmp_path / "run")).acquire()
    try:
        holder = workdir_lock.read_holder(str(tmp_path / "run"))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(workdir_lock.WorkdirLocked) as e:
            workdir_lock.WorkdirLock(str(tmp_path / "run")).acquire()
        assert f"in use by process {os.getpid()} on host {socket.gethostname()}" in str(e.value)
        assert "started " in str(e.value) and isinstance(e.value, UserError)
    finally:
        first.release()
    assert not os.path.exists(tmp_path / "run" / workdir_lock.LOCK_FILE)
    workdir_lock.WorkdirLock(str(tmp_path / "run")).acquire().release()  # Free again.


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    pid = _dead_pid()
    _write_holder(tmp_path, pid=pid, host=socket.gethostname())
    said = []
    lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire(log=said.append)
    assert len(said) == 1 and f"from process {pid}" in said[0] and "no longer running" in said[0]
    assert workdir_lock.read_holder(str(tmp_path))["pid"] == os.getpid()
    lock.release()


def test_lock_from_another_host_is_refused_with_what_to_delete(tmp_path):
    path = _write_holder(tmp_path, pid=_dead_pid(), host="some-other-host")
    with pytest.raises(workdir_lock.WorkdirLocked, match="on host some-other-host") as e:
        workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert f"delete {path}" in str(e.value)


def test_a_workdir_the_lock_created_is_removed_when_nothing_was_written(tmp_path):
    workdir_lock.WorkdirLock(str(tmp_path / "new")).acquire().release()
    assert not os.path.exists(tmp_path / "new")


def test_a_refused_run_writes_nothing(data_dir, tmp_path):
    workdir = str(tmp_path / "busy")
    holder = workdir_lock.WorkdirLock(workdir).acquire()
    try:
        with pytest.raises(workdir_lock.WorkdirLocked):
            training.train_and_evaluate(tiny_config(data_dir=data_dir), workdir)
        assert os.listdir(workdir) == [workdir_lock.LOCK_FILE]
    finally:
        holder.release()


# --- Two commands into one workdir --------------------------------------------------------------

TRAIN_ARGS = [
    "--config.model_kwargs.base_features=4", "--config.model_kwargs.depth=2",
    "--config.input_size=(32, 32)", "--config.batch_size=8", "--config.eval_batch_size=16",
    "--config.eval_split=validation[:16]", "--config.eval_every_steps=1000",
    "--config.checkpoint_every_steps=4", "--config.log_every_steps=4", "--config.warmup_steps=2",
]  # fmt: skip


def _train_cmd(workdir, data_dir, *extra):
    return [sys.executable, "-m", "jaxseg.train", "--config", os.path.join(ROOT, "configs", "unet.py"),
            "--workdir", str(workdir), f"--config.data_dir={data_dir}", *TRAIN_ARGS, *extra]  # fmt: skip


def _errors(stderr: str) -> list[str]:
    """stderr's lines but absl's log lines (``W1122 03:44:15.086320 ...``: warnings of TFDS etc.)."""
    return [line for line in stderr.splitlines() if not re.match(r"[DIWEF]\d{4} \d\d:", line)]


def _run(cmd, cwd=ROOT, timeout=300):
    return subprocess.run(
        cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def test_second_command_into_a_busy_workdir_is_refused_then_takes_over_once_killed(
    data_dir, tmp_path
):
    workdir = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(workdir, data_dir, "--config.num_train_steps=100000"), cwd=ROOT,
                             env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        start = time.time()
        while not os.path.isdir(workdir / "checkpoints" / "4"):
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.time() - start < 300
            time.sleep(0.1)
        lines_before = len(summary.read_metrics(str(workdir)))

        second = _run(_train_cmd(workdir, data_dir, "--config.num_train_steps=100000"))
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert len(_errors(second.stderr)) == 1 and "Traceback" not in second.stderr
        assert _errors(second.stderr)[0].startswith(f"error: workdir {workdir} is in use by process {first.pid} "
                                        f"on host {socket.gethostname()}, started ")  # fmt: skip
        assert first.poll() is None  # Untouched.
        records = summary.read_metrics(str(workdir))
        steps = [r["step"] for r in records]
        assert len(records) >= lines_before and steps == sorted(set(steps))  # One run's lines.
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=120)

    third = _run(_train_cmd(workdir, data_dir, "--config.num_train_steps=8"))
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert (
        f"workdir lock: took over {workdir / workdir_lock.LOCK_FILE} from process {first.pid}"
        in third.stdout
    )
    assert "Resumed from step" in third.stdout
    assert not os.path.exists(workdir / workdir_lock.LOCK_FILE)  # Released at the end.


# --- Damaged checkpoints ------------------------------------------------------------------------


def _config(data_dir, **overrides):
    return tiny_config(data_dir=data_dir, num_train_steps=16, eval_every_steps=8, checkpoint_every_steps=4,
                       log_every_steps=4, **overrides)  # fmt: skip


def _params(workdir, config, step):
    manager = checkpoint.create_manager(os.path.join(workdir, "checkpoints"), read_only=True)
    state = training.create_train_state(
        config, training.resolve(config), training.create_optimizer(config)[0]
    )
    try:
        return jax.device_get(checkpoint.restore(manager, step, state).params)
    finally:
        manager.close()


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A finished 16-step run (checkpoints 12 and 16 kept as the latest, 8 or 16 as the best) and
    its final parameters."""
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    training.train_and_evaluate(_config(data_dir), workdir)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps[-2:] == [12, 16]  # The two latest are kept.
    return workdir, _params(workdir, _config(data_dir), 16)


def _files(step_dir, part):
    return [f for f in glob.glob(os.path.join(step_dir, part, "**", "*"), recursive=True)
            if os.path.isfile(f) and os.path.getsize(f) > 0]  # fmt: skip


def _damage(step_dir, how):
    if how == "truncated":  # The array data, cut short (a full disk, a copy cut short).
        for f in _files(step_dir, "state/**/d"):
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
    elif how == "arrays_deleted":
        for f in _files(step_dir, "state/**/d"):
            os.remove(f)
    elif how == "iterator_deleted":  # The state is fine, the data iterator's position is not.
        for f in _files(step_dir, "data_iter"):
            os.remove(f)
    elif how == "metadata_deleted":
        os.remove(os.path.join(step_dir, "state", "_METADATA"))
    elif how == "score_truncated":  # Orbax reads it to list checkpoints: none could be listed.
        with open(os.path.join(step_dir, "metrics", "metrics"), "r+b") as fh:
            fh.truncate(5)


@pytest.mark.parametrize(
    "how",
    ["truncated", "arrays_deleted", "iterator_deleted", "metadata_deleted", "score_truncated"],
)
def test_damaged_latest_checkpoint_resumes_exactly_from_the_one_before(
    data_dir, trained, tmp_path, capsys, how
):
    source, final_params = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(source, workdir)
    _damage(os.path.join(workdir, "checkpoints", "16"), how)

    capsys.readouterr()
    training.train_and_evaluate(_config(data_dir), workdir)
    said = capsys.readouterr().out.splitlines()
    damaged = [line for line in said if "is damaged" in line]
    assert len(damaged) == 1, said
    assert damaged[0].startswith(f"checkpoint step 16 in {workdir}/checkpoints is damaged: ")
    if how == "score_truncated":
        assert "metrics/metrics cannot be read" in damaged[0]
    else:
        assert damaged[0].endswith("; trying step 12")
    assert any(line.startswith("moved damaged checkpoint step 16 to ") for line in said)
    assert f"Resumed from step 12 in {workdir}" in said
    assert os.path.isdir(os.path.join(workdir, "checkpoints-damaged", "16"))
    # Resumed from 12 (state and data iterator), trained again to 16: the same parameters.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
        final_params,
        _params(workdir, _config(data_dir), 16),
    )


def test_no_restorable_checkpoint_is_one_error_line(data_dir, trained, tmp_path):
    source, _ = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(source, workdir)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    for step in steps:
        _damage(os.path.join(workdir, "checkpoints", str(step)), "truncated")
    with pytest.raises(checkpoint.DamagedCheckpoint, match="no checkpoint in .* can be restored"):
        training.train_and_evaluate(_config(data_dir), workdir)
    assert (
        sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
        == steps
    )

    result = _run(
        _train_cmd(workdir, data_dir, "--config.num_train_steps=16", "--config.eval_every_steps=8")
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(_errors(result.stderr)) == 1 and "Traceback" not in result.stderr
    listed = ", ".join(str(s) for s in reversed(steps))
    assert _errors(result.stderr)[0].startswith(f"error: no checkpoint in {workdir}/checkpoints can be restored: "
                                    f"steps {listed} are damaged (step {steps[-1]}: ")  # fmt: skip
    assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_FILE))


def test_load_trained_falls_back_from_a_damaged_best_checkpoint(same_run, tmp_path, capsys):  # noqa: F811
    workdir = str(tmp_path / "run")
    shutil.copytree(same_run, workdir)
    best = runs.load_trained(workdir)
    assert best.checkpoint == "best"
    _damage(os.path.join(workdir, "checkpoints", str(best.step)), "truncated")
    capsys.readouterr()
    run = runs.load_trained(workdir)
    assert run.step != best.step and run.checkpoint in ("latest", "newest readable")
    assert (
        f"checkpoint step {best.step} in {workdir}/checkpoints is damaged"
        in capsys.readouterr().err
    )

    _damage(os.path.join(workdir, "checkpoints", str(run.step)), "score_truncated")
    with pytest.raises(checkpoint.DamagedCheckpoint, match=f"step {run.step} .* move it out of"):
        runs.load_trained(workdir)  # Read-only: named, not moved.


# --- User errors: one line, exit status 2, nothing written --------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--config.batch_size=-3"],
            "error: config.batch_size must be a positive integer (or pair); got -3",
        ),
        (
            ["--config.batch_sizee=3"],
            "error: --config.batch_sizee: no such config key 'batch_sizee'. Did you mean \"batch_size\"",
        ),
        (["--config.batch_size=abc"], "error: flag --config.batch_size=abc: invalid literal"),
        (["--config.dataset=coco"], "error: unknown dataset 'coco'"),
        (["--config.dataset=isbi2012", "--config.manual_dir=/nonexistent"], "error: "),
    ],
    ids=["bad_value", "unknown_key", "bad_type", "unknown_dataset", "missing_data"],
)
def test_user_errors_are_one_line_with_status_2_and_write_nothing(
    data_dir, tmp_path, extra, message
):
    cmd = [sys.executable, "-m", "jaxseg.train", "--config", os.path.join(ROOT, "configs", "unet.py"),
           f"--config.data_dir={tmp_path / 'tfds'}", *extra]  # fmt: skip
    result = _run(cmd, cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(_errors(result.stderr)) == 1 and "Traceback" not in result.stderr, result.stderr
    assert _errors(result.stderr)[0].startswith(message), result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "workdirs")  # Neither chosen nor written.
    if extra[0] != "--config.dataset=isbi2012":
        assert "workdir:" not in result.stdout


def test_checkpoint_that_does_not_fit_the_model_is_one_line(data_dir, trained, tmp_path):
    source, _ = trained
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    result = _run(
        _train_cmd(
            workdir,
            data_dir,
            "--config.num_train_steps=20",
            "--config.model_kwargs.base_features=6",
        )
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(_errors(result.stderr)) == 1 and "Traceback" not in result.stderr
    assert "does not match the model built from the config" in result.stderr
    assert "params." in result.stderr  # Names the first parameter that differs.


def test_a_config_file_that_raises_keeps_its_traceback(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "broken.py").write_text(
        "def get_config():\n    return undefined_name\n"
    )
    result = _run(
        [sys.executable, "-m", "jaxseg.train", "--config", str(tmp_path / "configs" / "broken.py")]
    )
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "NameError: name 'undefined_name' is not defined" in result.stderr
