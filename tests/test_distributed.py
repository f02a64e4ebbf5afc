"""Several processes: clusters jax detects join (SLURM here, on loopback), and every process uses
the same default workdir (issue 8, items 7 and 8)."""

import json
import os
import random
import socket
import subprocess
import sys

import jax
import pytest
from trained_run import ROOT, subprocess_env

from jaxseg import parallel

# jax's SLURM support puts the coordinator at the first host of SLURM_STEP_NODELIST, on port
# 61440 + SLURM_JOB_ID % 4096.
SLURM_PORTS = range(65536 - 4096, 65536)
CLUSTER_VARIABLES = ("SLURM_", "OMPI_", "PMI_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES",
                     "JAX_PROCESS_ID", "KUBERNETES_SERVICE_HOST", "TPU_")  # fmt: skip


def _without_cluster(env: dict) -> dict:
    return {k: v for k, v in env.items() if not k.startswith(CLUSTER_VARIABLES)}


def _slurm_env(port: int, tasks: int, task: int) -> dict:
    return {
        "SLURM_JOB_ID": str(port - SLURM_PORTS.start + 4096 * 100),
        "SLURM_NTASKS": str(tasks),
        "SLURM_PROCID": str(task),
        "SLURM_LOCALID": str(task),
        "SLURM_STEP_NODELIST": "127.0.0.1",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_NNODES": "1",
    }


@pytest.fixture
def no_cluster(monkeypatch):
    for name in list(os.environ):
        if name.startswith(CLUSTER_VARIABLES):
            monkeypatch.delenv(name)

    def must_not_run(*args, **kwargs):
        raise AssertionError("jax.distributed.initialize called for a single process")

    monkeypatch.setattr(jax.distributed, "initialize", must_not_run)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)


def test_a_plain_process_does_nothing(no_cluster):
    assert parallel.detected_cluster() is None
    assert parallel.initialize_distributed() is False


def test_a_one_task_slurm_allocation_does_nothing(no_cluster, monkeypatch):
    for name, value in _slurm_env(SLURM_PORTS.start, tasks=1, task=0).items():
        monkeypatch.setenv(name, value)
    assert parallel.detected_cluster() == ("slurm", 1)
    assert parallel.initialize_distributed() is False


def _free_slurm_port() -> int:
    for port in random.sample(SLURM_PORTS, 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in jax's SLURM range")


AGREE = """
import json, sys, time
sys.argv = ["train"]
from jaxseg import parallel, train
joined = parallel.initialize_distributed()
import jax
if jax.process_index() == 1:
    time.sleep(1.5)  # A later clock: the default workdir must still be process 0's.
print("RESULT " + json.dumps({"joined": joined, "count": jax.process_count(),
                               "workdir": train.default_workdir("configs/unet.py")}))
"""


def test_slurm_tasks_join_and_agree_on_the_default_workdir(tmp_path):
    port = _free_slurm_port()
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    procs = []
    for task in range(2):
        env = {
            **_without_cluster(subprocess_env()),
            **_slurm_env(port, tasks=2, task=task),
            # jax binds the coordinator to every interface by default: loopback only here.
            "JAX_COORDINATOR_BIND_ADDRESS": f"127.0.0.1:{port}",
        }
        procs.append(subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))  # fmt: skip
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    assert [r["joined"] for r in results] == [True, True]
    assert [r["count"] for r in results] == [2, 2]
    assert results[0]["workdir"] == results[1]["workdir"]
    assert results[0]["workdir"].startswith(os.path.join("workdirs", "unet-"))
