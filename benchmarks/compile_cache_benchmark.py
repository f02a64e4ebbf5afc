"""Start-up with and without the persistent compilation cache: a first and a second process.

    python benchmarks/compile_cache_benchmark.py               # seed U-Net, ~2 minutes on 2 cores
    python benchmarks/compile_cache_benchmark.py --model unet --size 572 --batch 1 --in-channels 1
    python benchmarks/compile_cache_benchmark.py --commands    # jaxseg.train and jaxseg.predict
    python benchmarks/compile_cache_benchmark.py --commands --dry-run  # print them, run nothing

Each start is a fresh Python process that turns the cache on (``jaxseg.compile_cache``) in an
empty temporary folder shared by the starts, and times the trace + compile of the model's
``init``, of what ``predict`` compiles (the jitted forward) and of what ``train`` compiles (a
jitted Adam step), then runs the forward and the step once. The first start fills the cache,
the next ones read it; a start with the cache off is the reference.

``--commands`` times the command lines themselves instead, each the wall time of a fresh
process, with ``JAXSEG_COMPILE_CACHE`` set to a new empty folder: ``python -m jaxseg.train
--config configs/unet.py`` for 2 steps (evaluating and saving at step 2), a first time and then
again in a new workdir with the cache warm, and ``python -m jaxseg.predict`` on the first run
(``--images`` generated images), a first and a second time. One training start with the cache
off comes before them (recorded, not compared), so that the data set is built and Python's
files are read before the timed starts. The cache entries after each start are recorded: JAX
writes only compilations of at least 1 s.

Writes the seconds to ``benchmarks/results/compile_cache.json``, ``--commands`` under its
``commands`` key; each mode keeps the other's figures. The 1-minute load average is read before
any work and at the end, with a warning when the machine was busy at the start.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD_AT_START = os.getloadavg()[0]  # Before any work (this process imports no jax).

from machine import load_record, warn_if_busy  # noqa: E402 - a stdlib-only module.

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
    parser.add_argument(
        "--commands", action="store_true", help="time python -m jaxseg.train / jaxseg.predict"
    )
    parser.add_argument("--images", type=int, default=4, help="--commands: images to predict")
    parser.add_argument("--image-size", type=int, default=256, help="--commands: their size")
    parser.add_argument(
        "--dry-run", action="store_true", help="--commands: print the command lines, run nothing"
    )
    args = parser.parse_args()
    warn_if_busy(LOAD_AT_START)
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.commands or args.dry_run:
        commands = command_starts(args)
        if commands is not None:
            write(out_path, {**previous, "commands": commands})
        return

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
        "config": {k: v for k, v in vars(args).items() if k in CHILD_ARGS},
        "starts": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in runs.items()},
        "first_over_best_warm": speedup,
        **load_record(LOAD_AT_START),
        "cpu_count": os.cpu_count(),
    }
    if "commands" in previous:
        result["commands"] = previous["commands"]
    write(out_path, result)
    print(f"first start / best warm start: {speedup}")


CHILD_ARGS = ("model", "classes", "in_channels", "size", "batch", "warm_starts")
TRAIN = ["-m", "jaxseg.train", "--config", "configs/unet.py"]
TRAIN_FLAGS = [
    "--config.num_train_steps=2",
    "--config.eval_every_steps=2",
    "--config.checkpoint_every_steps=2",
]


def command_starts(args) -> dict | None:
    """Wall times of ``jaxseg.train`` and ``jaxseg.predict`` processes, first and second start
    with a fresh cache folder (``None`` with ``--dry-run``)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache, images = tmp / "cache", tmp / "images"

        def start(argv: list[str], cache_setting: str) -> dict | None:
            command = [sys.executable, *argv]
            print(f"$ JAXSEG_COMPILE_CACHE={cache_setting} {shlex.join(command)}", flush=True)
            if args.dry_run:
                return None
            env = dict(os.environ, JAXSEG_COMPILE_CACHE=cache_setting)
            begin = time.perf_counter()
            out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            wall_s = time.perf_counter() - begin
            if out.returncode:
                sys.exit(f"exit status {out.returncode}:\n{out.stderr[-4000:]}")
            print(f"  {wall_s:.1f} s", flush=True)
            return {"wall_s": round(wall_s, 2), "cache_entries": cache_entries(cache)}

        def train(workdir: str) -> list[str]:
            return [*TRAIN, "--workdir", str(tmp / workdir), *TRAIN_FLAGS]

        def predict(output: str) -> list[str]:
            return ["-m", "jaxseg.predict", "--workdir", str(tmp / "run"), "--input",
                    str(images), "--output", str(tmp / output)]  # fmt: skip

        if not args.dry_run:
            write_images(images, args.images, args.image_size)
        starts = {
            "train_cache_off_before_the_timed_starts": start(train("warm_up"), "0"),
            "train_first": start(train("run"), str(cache)),
            "train_second": start(train("run_second"), str(cache)),
            "predict_first": start(predict("predictions_first"), str(cache)),
            "predict_second": start(predict("predictions_second"), str(cache)),
        }
    if args.dry_run:
        return None
    return {
        "what": "wall time of each process; JAXSEG_COMPILE_CACHE=<a new empty folder>",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "train": shlex.join(["python", *TRAIN, "--workdir", "<tmp>/run", *TRAIN_FLAGS]),
        "predict": f"python -m jaxseg.predict --workdir <tmp>/run --input <{args.images} "
        f"{args.image_size}x{args.image_size} RGB PNGs> --output <tmp>/predictions",
        "starts": starts,
        "first_over_second": {
            name: round(starts[f"{name}_first"]["wall_s"] / starts[f"{name}_second"]["wall_s"], 2)
            for name in ("train", "predict")
        },
        **load_record(LOAD_AT_START),
        "cpu_count": os.cpu_count(),
    }


def write_images(folder: Path, count: int, size: int) -> None:
    """``count`` random RGB PNGs of ``size`` x ``size`` pixels for ``jaxseg.predict``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{i}.png")


def cache_entries(folder: Path) -> int:
    """Executables in a cache folder (as ``jaxseg.compile_cache.entries`` counts them)."""
    return sum(1 for p in folder.iterdir() if p.name.endswith("-cache")) if folder.is_dir() else 0


def write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    warn_if_busy(LOAD_AT_START)  # Again, beside the figures.


if __name__ == "__main__":
    main()
