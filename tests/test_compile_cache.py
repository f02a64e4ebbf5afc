"""The persistent compilation cache: where it lives, how to turn it off, and a second start hits it."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from jaxseg import compile_cache

# A child process: turns the cache on, compiles the gradient of a 24-layer network (about a
# second to compile; plain JAX so the child starts fast) and reports the compile time, the
# cache entries and whether JAX logged a persistent-cache hit.
CHILD = textwrap.dedent(
    """
    import json, logging, sys, time
    records = []
    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger("jax._src.compiler").addHandler(Grab())
    logging.getLogger("jax._src.compiler").setLevel(logging.DEBUG)

    import jax, jax.numpy as jnp
    from jaxseg import compile_cache
    path = compile_cache.enable(min_compile_time_secs=0)
    def loss(weights, x):
        for i, w in enumerate(weights):
            x = jnp.tanh(x @ w) if i % 2 else jax.nn.relu(x @ w + 1.0)
        return jnp.sum(x**2)
    weights = [jnp.zeros((32, 32))] * 24
    lowered = jax.jit(jax.grad(loss)).lower(weights, jnp.zeros((8, 32)))
    start = time.perf_counter()
    lowered.compile()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "path": str(path),
        "seconds": seconds,
        "entries": compile_cache.entries(),
        "hit": any("Persistent compilation cache hit" in m for m in records),
    }))
    """
)


def _run_child(env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def child_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.pop(compile_cache.ENV_VAR, None)
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu", XLA_FLAGS="")
    return env


def test_second_start_loads_from_the_cache_and_compiles_faster(child_env, tmp_path):
    first = _run_child(child_env)
    assert first["path"] == str(tmp_path / "xdg" / "jaxseg" / "xla")
    assert first["entries"] >= 1 and not first["hit"]
    second = _run_child(child_env)
    assert second["hit"], "the second process did not load from the persistent cache"
    assert second["entries"] == first["entries"]  # Nothing compiled, nothing new written.
    assert second["seconds"] < first["seconds"], (first, second)


@pytest.fixture
def restore_config():
    saved = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
        jax.config.jax_enable_compilation_cache,
    )
    yield
    from jax.experimental.compilation_cache import compilation_cache as cc

    cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
    jax.config.update("jax_enable_compilation_cache", saved[2])


def test_folder_precedence(tmp_path, monkeypatch, restore_config):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    assert compile_cache.default_dir() == tmp_path / "xdg" / "jaxseg" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compile_cache.default_dir() == (
        compile_cache.Path(os.path.expanduser("~")) / ".cache" / "jaxseg" / "xla"
    )

    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "from_env"))
    assert compile_cache.enable() == tmp_path / "from_env"
    assert (tmp_path / "from_env").is_dir() and compile_cache.is_enabled()
    explicit = compile_cache.enable(cache_dir=tmp_path / "explicit", min_compile_time_secs=2.5)
    assert explicit == tmp_path / "explicit"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "explicit")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_off_values(value, monkeypatch, restore_config):
    monkeypatch.setenv(compile_cache.ENV_VAR, value)
    before = jax.config.jax_compilation_cache_dir
    assert compile_cache.enable() is None
    assert compile_cache.enable(False) is None
    assert jax.config.jax_compilation_cache_dir == before


@pytest.mark.parametrize("url", ["gs://bucket/jaxseg-xla", "s3://bucket/path/xla"])
def test_a_url_goes_to_jax_untouched(url, tmp_path, monkeypatch, restore_config):
    monkeypatch.chdir(tmp_path)  # Path(url).mkdir() would create ./gs:/bucket/... here.
    monkeypatch.setenv(compile_cache.ENV_VAR, url)
    assert compile_cache.enable() == url
    assert jax.config.jax_compilation_cache_dir == url and compile_cache.is_enabled()
    monkeypatch.delenv(compile_cache.ENV_VAR)
    assert compile_cache.enable(cache_dir=url + "/explicit") == url + "/explicit"
    jax.config.update("jax_compilation_cache_dir", url)  # As $JAX_COMPILATION_CACHE_DIR sets it.
    assert compile_cache.enable() == url
    assert jax.config.jax_compilation_cache_dir == url
    assert list(tmp_path.iterdir()) == [] and compile_cache.entries() == 0


def test_off_after_an_earlier_enable_in_the_same_process(tmp_path, restore_config):
    folder = tmp_path / "cache"
    x = jax.numpy.arange(8.0)
    assert compile_cache.enable(cache_dir=folder, min_compile_time_secs=0) == folder
    jax.jit(lambda x: x * 2.0 + 1.0).lower(x).compile()
    written = compile_cache.entries(folder)
    assert written >= 1

    assert compile_cache.enable(False) is None
    assert not compile_cache.is_enabled() and not jax.config.jax_enable_compilation_cache
    jax.jit(lambda x: jax.numpy.sin(x) * 3.0).lower(x).compile()
    assert compile_cache.entries(folder) == written  # Off: nothing written.

    assert compile_cache.enable(cache_dir=folder) == folder  # And on again.
    jax.jit(lambda x: jax.numpy.cos(x) - 2.0).lower(x).compile()
    assert compile_cache.entries(folder) > written


def test_off_wins_over_jax_compilation_cache_dir(child_env, tmp_path):
    folder = tmp_path / "jax_dir"
    child_env.update(
        JAX_COMPILATION_CACHE_DIR=str(folder),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",  # Else nothing would be written anyway.
        **{compile_cache.ENV_VAR: "0"},
    )
    off = _run_child(child_env)
    assert off["path"] == "None" and not off["hit"]
    assert compile_cache.entries(folder) == 0
    del child_env[compile_cache.ENV_VAR]  # The same with the cache on writes there.
    on = _run_child(child_env)
    assert on["path"] == str(folder) and compile_cache.entries(folder) >= 1
