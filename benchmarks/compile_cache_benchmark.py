"""Start-up with and without the persistent compilation cache: a first and a second process.

    python benchmarks/compile_cache_benchmark.py               # seed U-Net, ~2 minutes on 2 cores
    python benchmarks/compile_cache_benchmark.py --model unet --size 572 --batch 1 --in-channels 1

Each start is a fresh Python process that turns the cache on (``jaxseg.compile_cache``) in an
empty temporary folder shared by the starts, and times the trace + compile of the model's
``init``, of what ``predict`` compiles (the jitted forward) and of what ``train`` compiles (a
jitted Adam step), then runs the forward and the step once. The first start fills the cache,
the next ones read it; a start with the cache off is the reference.
Writes the seconds to ``benchmarks/results/compile_cache.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, {root!r})
from jaxseg import compile_cache, xla_options
compile_cache.enable({enabled})
import jax, jax.numpy as jnp, optax
from jaxseg import models
model = models.create({model!r}, {classes})
x = jnp.zeros(({batch}, {size}, {size}, {channels}))
options = xla_options.compiler_options()
imported = time.perf_counter() - start

def compile_time(fn, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=options).lower(*args).compile()
    return compiled, time.perf_counter() - t

init, init_s = compile_time(model.init, jax.random.key(0), x)
params = init(jax.random.key(0), x)["params"]
forward, predict_s = compile_time(lambda p, x: model.apply({{"params": p}}, x), params, x)
tx = optax.adam(1e-3)
def step(p, o, x):
    loss, g = jax.value_and_grad(lambda p: jnp.mean(model.apply({{"params": p}}, x) ** 2))(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss
train, train_s = compile_time(step, params, tx.init(params), x)
t = time.perf_counter()
forward(params, x).block_until_ready()
train(params, tx.init(params), x)[2].block_until_ready()
run_s = time.perf_counter() - t
print(json.dumps({{"import_s": imported, "init_compile_s": init_s,
                  "predict_compile_s": predict_s, "train_compile_s": train_s,
                  "first_forward_and_step_s": run_s, "total_s": time.perf_counter() - start,
                  "cache_entries": compile_cache.entries()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="simple_unet")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warm-starts", type=int, default=2, help="starts after the first")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/compile_cache.json"))
    args = parser.parse_args()

    def start(enabled: bool, cache_home: str) -> dict:
        code = CHILD.format(
            root=str(ROOT),
            enabled=enabled,
            model=args.model,
            classes=args.classes,
            batch=args.batch,
            size=args.size,
            channels=args.in_channels,
        )
        env = dict(os.environ, XDG_CACHE_HOME=cache_home)
        env.pop("JAXSEG_COMPILE_CACHE", None)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
        )
        if out.returncode:
            sys.exit(out.stderr[-4000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as cache_home:
        runs = {"cache_off": start(False, cache_home), "first": start(True, cache_home)}
        for i in range(args.warm_starts):
            runs[f"warm_{i + 1}"] = start(True, cache_home)
        print(json.dumps(runs, indent=2))

    warm = [v for k, v in runs.items() if k.startswith("warm")]
    speedup = {
        key: round(runs["first"][key] / min(w[key] for w in warm), 2)
        for key in ("init_compile_s", "predict_compile_s", "train_compile_s", "total_s")
    }
    result = {
        "benchmark": "compile_cache_startup",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "starts": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in runs.items()},
        "first_over_best_warm": speedup,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"first start / best warm start: {speedup}\nwrote {args.out}")


if __name__ == "__main__":
    main()
