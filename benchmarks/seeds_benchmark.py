"""K seeds in one vmapped step (``jaxseg.training.seeds``) against the same K runs one after another.

    python benchmarks/seeds_benchmark.py            # K = 4 and 8, 3 rounds, ~10 min on 2 cores
    python benchmarks/seeds_benchmark.py --quick    # smoke run: tiny U-Net, 1 round, /tmp output
    python benchmarks/seeds_benchmark.py --ks 2,4,8 --base-features 16 --size 64 --batch 16

The model is a small 'SAME' U-Net (``configs/unet.py`` with ``--depth`` and ``--base-features``)
trained as ``jaxseg.train`` trains it (AdamW, cosine, flips on, float32, the trainer's XLA
options) on one fixed random batch of ``--batch`` images of ``--size`` pixels, 5 classes.

For each K two sides train K seeds for ``--steps`` steps:

* ``vmapped``: one stacked step (``training.seeds_train_step``) advances all K seeds at once;
* ``sequential``: the trainer's standalone step (``training.train_step`` jitted as the loop
  jits it), run K times over, one seed's steps after the other's.

The sides alternate within each round (the order rotates every round), so a change in machine
load touches both: compare them within a round. Recorded per K and round: images/s (K x batch x
steps / seconds) and the wall time of one step of all K seeds; per K, the median speed-up
(sequential / vmapped time) and the compile times. A standalone run puts its seed in its
program as a constant, so K separate runs compile K programs: ``sequential_runs_compile_s`` is K x
the one standalone compile measured (the timing side reuses one program for all K states,
which times the same work). ``break_even_steps``: the steps after which the vmapped side, its
compile included, is ahead of the sequential runs sharing one compiled program (the cheapest
way to run them one after another; 0: from the start, null: never).

Writes ``benchmarks/results/seeds.json`` (``--quick``: ``seeds_quick.json`` in the system's
temporary folder; ``--out`` to choose), with the machine and the 1-minute load average read
before any work (a warning when it is busy) and at the end.
"""

# ruff: noqa: E402 - the load average is read before the imports below do any work.
from __future__ import annotations

import os

LOAD_AT_START = os.getloadavg()[0]  # Before importing jax, before compiling.

import argparse
import datetime
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import jaxlib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import load_record, machine_info, warn_if_busy

from jaxseg import training, xla_options
from jaxseg.training.seeds import seed_array

NUM_CLASSES = 5  # synthetic_shapes


def make_config(args):
    from configs import unet

    config = unet.get_config()
    config.model_kwargs = {
        "padding": "SAME",
        "depth": args.depth,
        "base_features": args.base_features,
    }
    config.input_size = (args.size, args.size)
    config.batch_size = args.batch
    config.eval_batch_size = args.batch
    config.num_train_steps = 1000  # The schedule's length; the timings run a few steps of it.
    config.warmup_steps = 0
    return config


def timed(run, steps: int) -> float:
    start = time.perf_counter()
    run(steps)
    return time.perf_counter() - start


def compiled(fn, *args):
    """``fn`` lowered and compiled for ``args``, and the seconds that took."""
    start = time.perf_counter()
    out = fn.lower(*args).compile()
    return out, time.perf_counter() - start


def prepare(config, k: int, batch: dict, mesh) -> dict:
    """Both sides for ``k`` seeds, compiled and warmed up: ``{side: run(steps)}`` and times."""
    setup = training.resolve(config, mesh)
    tx, _ = training.create_optimizer(config)
    seeds = list(range(k))

    states = [training.create_seed_states(config, setup, tx, seeds)]
    seeds_ = seed_array(seeds)
    vmapped, vmapped_compile = compiled(
        training.seeds_train_step(config, setup.augment), states[0], seeds_, batch
    )

    def run_vmapped(steps):
        for _ in range(steps):
            states[0], metrics = vmapped(states[0], seeds_, batch)
        jax.block_until_ready(metrics)

    alone = []
    for seed in seeds:
        one = config.copy_and_resolve_references()
        one.seed = seed
        alone.append(training.create_train_state(one, setup, tx))
    step = jax.jit(
        functools.partial(training.train_step, config=config, aug=setup.augment),
        donate_argnums=0,
        compiler_options=xla_options.compiler_options(),
    )
    step, standalone_compile = compiled(step, alone[0], batch)

    def run_sequential(steps):
        for i in range(k):  # One run after another.
            for _ in range(steps):
                alone[i], metrics = step(alone[i], batch)
            jax.block_until_ready(metrics)

    return {
        "runs": {"vmapped": run_vmapped, "sequential": run_sequential},
        "vmapped_compile_s": vmapped_compile,
        "standalone_compile_s": standalone_compile,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="4,8", help="comma-separated seed counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="steps per timing")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--base-features", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 2 steps, a depth-2 U-Net of 4 features"
    )
    parser.add_argument("--out", default=None, help="default: benchmarks/results/seeds.json")
    args = parser.parse_args()
    warn_if_busy(LOAD_AT_START)
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 2, 1
        args.depth, args.base_features, args.size, args.batch = 2, 4, 32, 4
    out_path = Path(
        args.out
        or (
            Path(tempfile.gettempdir()) / "seeds_quick.json"
            if args.quick
            else ROOT / "benchmarks/results/seeds.json"
        )
    )
    ks = [int(k) for k in args.ks.split(",")]
    if any(k < 1 for k in ks):
        parser.error(f"--ks must be positive integers; got {args.ks!r}")

    config = make_config(args)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))  # One device, both sides.
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.random((args.batch, args.size, args.size, 3), np.float32),
        "label": rng.integers(0, NUM_CLASSES, (args.batch, args.size, args.size)).astype(np.int32),
    }
    sides = ("vmapped", "sequential")
    cases = []
    for k in ks:
        case = prepare(config, k, batch, mesh)
        for run in case["runs"].values():
            run(args.warmup)
        case.update(k=k, seconds={side: [] for side in sides})
        cases.append(case)
        print(
            f"ready: K={k} (compiled: vmapped {case['vmapped_compile_s']:.1f} s, "
            f"standalone {case['standalone_compile_s']:.1f} s)",
            flush=True,
        )

    for r in range(args.rounds):
        for case in cases:
            order = sides[r % 2 :] + sides[: r % 2]  # Rotates every round.
            for side in order:
                case["seconds"][side].append(timed(case["runs"][side], args.steps))
            images = case["k"] * args.batch * args.steps
            print(
                f"round {r + 1}: K={case['k']}: "
                + ", ".join(f"{s} {images / case['seconds'][s][-1]:.1f} img/s" for s in sides),
                flush=True,
            )

    results = []
    for case in cases:
        k, seconds = case["k"], case["seconds"]
        images = k * args.batch * args.steps
        speedup = [s / v for v, s in zip(seconds["vmapped"], seconds["sequential"])]
        step_s = {side: float(np.median(seconds[side])) / args.steps for side in sides}
        extra_compile = case["vmapped_compile_s"] - case["standalone_compile_s"]
        saved_per_step = step_s["sequential"] - step_s["vmapped"]
        break_even = None  # Never: the vmapped step is not faster.
        if saved_per_step > 0:
            break_even = max(0, int(np.ceil(extra_compile / saved_per_step)))
        results.append(
            {
                "k": k,
                "images_per_s": {
                    side: [round(images / t, 2) for t in seconds[side]] for side in sides
                },
                "step_wall_s_all_seeds": {
                    side: [round(t / args.steps, 4) for t in seconds[side]] for side in sides
                },
                "speedup_per_round": [round(v, 3) for v in speedup],
                "speedup_median": round(float(np.median(speedup)), 3),
                "vmapped_compile_s": round(case["vmapped_compile_s"], 2),
                "standalone_compile_s": round(case["standalone_compile_s"], 2),
                "sequential_runs_compile_s": round(k * case["standalone_compile_s"], 2),
                "break_even_steps": break_even,
            }
        )

    result = {
        "benchmark": "vmapped_seeds_vs_sequential",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "config": {
            "model": "unet",
            "model_kwargs": dict(config.model_kwargs),
            "input": [args.size, args.size],
            "batch_per_seed": args.batch,
            "classes": NUM_CLASSES,
            "optimizer": f"{config.optimizer}(lr={config.learning_rate}), {config.schedule}",
            "augment": dict(config.augment),
            "rounds": args.rounds,
            "steps_per_timing": args.steps,
            "warmup_steps": args.warmup,
            "compiler_options": xla_options.compiler_options(),
            "images_per_s": "K x batch x steps / seconds, per round",
            "speedup": "sequential seconds / vmapped seconds, per round",
        },
        "results": results,
        **load_record(LOAD_AT_START),
        "machine": machine_info(
            jaxlib=jaxlib.__version__,
            xla_flags=os.environ.get("XLA_FLAGS", ""),
        ),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    for e in results:
        print(
            f"K={e['k']}: speed-up {e['speedup_median']:.2f} (per round {e['speedup_per_round']}); "
            f"step of all seeds: vmapped {np.median(e['step_wall_s_all_seeds']['vmapped']):.3f} s, "
            f"sequential {np.median(e['step_wall_s_all_seeds']['sequential']):.3f} s; compile: "
            f"vmapped {e['vmapped_compile_s']:.1f} s, K runs {e['sequential_runs_compile_s']:.1f} s"
        )
    print(f"wrote {out_path}")
    warn_if_busy(LOAD_AT_START)  # Again, beside the figures.


if __name__ == "__main__":
    main()
