"""Train-step and forward throughput of jaxseg against the same networks in PyTorch eager.

    python benchmarks/train_step_benchmark.py            # 3 rounds, all pairs, ~10 min on 2 cores
    python benchmarks/train_step_benchmark.py --quick    # smoke run: 1 round, small inputs
    python benchmarks/train_step_benchmark.py --models simple_unet --modes train

Pairs: the seed's SimpleFCN and SimpleUNet (3 channels, 21 classes, batch 4, 128x128) and the
paper's U-Net (1 channel, 2 classes, batch 1, 572x572 -> 388x388). The PyTorch networks are the
independent twins in ``tests/torch_reference.py``. Both sides get the same batch, float32,
Adam (lr 1e-3) on the mean pixel cross-entropy; jaxseg runs a plain ``jax.jit`` step with the
state donated, PyTorch runs eagerly (``zero_grad``, ``backward``, ``step``). Forward-only is
``jax.jit(model.apply)`` against ``model.eval()`` under ``torch.inference_mode()``.

The two frameworks alternate within one run, in rounds (the order rotates every round), so a
change in machine load touches both: compare the ratio (jaxseg / PyTorch images/s) per round,
not absolute numbers across runs. Each timing is ``--steps`` consecutive steps after warm-up.
The jaxseg steps are compiled with ``jaxseg.xla_options.compiler_options()`` as the trainer
does (on CPU: convolutions on XLA's own emitter instead of YNNPACK; ``--no-cpu-options`` for
XLA's defaults; ``--with-xla-defaults`` times that as a third side in the same rounds).
Writes images/s per round, the ratio's median, min and max over rounds, XLA's FLOP count of
the jaxseg step and the achieved GFLOP/s of both sides (same network, same arithmetic) with the
machine description to ``benchmarks/results/train_step.json``.
"""

# ruff: noqa: E402 - the load average is read before the imports below do any work.
from __future__ import annotations

import os

LOAD_AT_START = os.getloadavg()[0]  # Before importing jax and torch, before compiling.

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from machine import load_record, machine_info, warn_if_busy
from torch_reference import TorchSimpleFCN, TorchSimpleUNet, TorchUNet  # noqa: E402

from jaxseg import flops, models, xla_options  # noqa: E402

# name: (jaxseg model kwargs, torch constructor, in channels, classes, batch, input size)
PAIRS = {
    "simple_fcn": (("simple_fcn", {}), lambda: TorchSimpleFCN(3, 21), 3, 21, 4, 128),
    "simple_unet": (("simple_unet", {}), lambda: TorchSimpleUNet(3, 21), 3, 21, 4, 128),
    "unet": (("unet", {}), lambda: TorchUNet(1, 2, padding=0), 1, 2, 1, 572),
}
QUICK_SIZES = {"simple_fcn": 64, "simple_unet": 64, "unet": 188}  # 188 -> 4x4 output.
MODES = ("train", "forward")
LEARNING_RATE = 1e-3


def run_machine_info() -> dict:
    import flax

    return machine_info(
        jaxlib=jaxlib.__version__,
        flax=flax.__version__,
        optax=optax.__version__,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )


def jax_runner(name: str, mode: str, images: np.ndarray, labels: np.ndarray, options: dict):
    """Returns ``(run(steps), per-device FLOPs of one step)`` for the jaxseg side.

    ``options``: XLA compiler options (``jaxseg.xla_options.compiler_options()`` or none).
    """
    (model_name, overrides), *_ = PAIRS[name]
    model = models.create(model_name, PAIRS[name][3], **overrides)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    params = model.init(jax.random.key(0), x)["params"]

    if mode == "forward":
        compiled, count = flops.step_flops(
            jax.jit(lambda p, x: model.apply({"params": p}, x), compiler_options=options), params, x
        )

        def run(steps):
            for _ in range(steps):
                out = compiled(params, x)
            out.block_until_ready()

        return run, count

    tx = optax.adam(LEARNING_RATE)

    def loss_fn(p):
        logits = model.apply({"params": p}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(state, x, y):
        p, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    state = [(params, tx.init(params))]
    compiled, count = flops.step_flops(
        jax.jit(step, donate_argnums=0, compiler_options=options), state[0], x, y
    )

    def run(steps):
        for _ in range(steps):
            state[0], loss = compiled(state[0], x, y)
        loss.block_until_ready()

    return run, count


def torch_runner(name: str, mode: str, images: np.ndarray, labels: np.ndarray):
    model = PAIRS[name][1]()
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.astype(np.int64))
    if mode == "forward":
        model.eval()

        def run(steps):
            with torch.inference_mode():
                for _ in range(steps):
                    model(x)

        return run

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

    return run


def timed(run, steps: int) -> float:
    start = time.perf_counter()
    run(steps)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(PAIRS), help="comma-separated pairs")
    parser.add_argument("--modes", default=",".join(MODES), help="train, forward or both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per timing")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--quick", action="store_true", help="1 round, 1 step, small inputs")
    parser.add_argument(
        "--no-cpu-options",
        action="store_true",
        help="compile with XLA's defaults instead of jaxseg.xla_options (CPU: YNNPACK convolutions)",
    )
    parser.add_argument(
        "--with-xla-defaults",
        action="store_true",
        help="also time jaxseg compiled with XLA's defaults, as a third side (when they differ)",
    )
    parser.add_argument("--out", default=None, help="default: benchmarks/results/train_step.json")
    args = parser.parse_args()
    warn_if_busy(LOAD_AT_START)
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 1, 1
    out_path = Path(
        args.out
        or ROOT
        / "benchmarks/results"
        / ("train_step_quick.json" if args.quick else "train_step.json")
    )
    names, modes = args.models.split(","), args.modes.split(",")
    for n in names:
        if n not in PAIRS:
            parser.error(f"unknown model {n!r}; choose from {sorted(PAIRS)}")
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}; choose from {MODES}")

    options = {} if args.no_cpu_options else xla_options.compiler_options()
    with_defaults = args.with_xla_defaults and bool(options)
    sides = ("jaxseg", "pytorch") + (("jaxseg_xla_defaults",) if with_defaults else ())
    rng = np.random.default_rng(0)
    cases = []
    for name in names:
        _, _, channels, classes, batch, size = PAIRS[name]
        size = QUICK_SIZES[name] if args.quick else size
        images = rng.standard_normal((batch, size, size, channels), dtype=np.float32)
        out_size = size if name != "unet" else models.unet_output_size(size, 4)
        labels = rng.integers(0, classes, (batch, out_size, out_size)).astype(np.int32)
        for mode in modes:
            start = time.perf_counter()
            jax_run, count = jax_runner(name, mode, images, labels, options)
            compile_s = time.perf_counter() - start
            torch_run = torch_runner(name, mode, images, labels)
            runs = {"jaxseg": jax_run, "pytorch": torch_run}
            if with_defaults:
                runs["jaxseg_xla_defaults"] = jax_runner(name, mode, images, labels, {})[0]
            for run in runs.values():
                run(args.warmup)
            cases.append(
                dict(
                    name=name,
                    mode=mode,
                    batch=batch,
                    size=size,
                    flops=count,
                    compile_s=compile_s,
                    runs=runs,
                    seconds={side: [] for side in sides},
                )
            )
            print(f"ready: {name} {mode} (compiled in {compile_s:.1f} s)", flush=True)

    for r in range(args.rounds):
        for case in cases:
            order = sides[r % len(sides) :] + sides[: r % len(sides)]  # Rotates every round.
            for side in order:
                case["seconds"][side].append(timed(case["runs"][side], args.steps))
            print(
                f"round {r + 1}: {case['name']} {case['mode']}: "
                + ", ".join(
                    f"{side} {case['batch'] * args.steps / case['seconds'][side][-1]:.2f} img/s"
                    for side in sides
                ),
                flush=True,
            )

    results = []
    for case in cases:
        ips = {
            side: [case["batch"] * args.steps / s for s in case["seconds"][side]] for side in sides
        }
        ratios = [j / t for j, t in zip(ips["jaxseg"], ips["pytorch"])]
        per_step = {side: np.array(case["seconds"][side]) / args.steps for side in ips}
        entry = {
            "model": case["name"],
            "mode": case["mode"],
            "batch": case["batch"],
            "input": [case["size"], case["size"]],
            "images_per_s": {k: [round(v, 3) for v in vs] for k, vs in ips.items()},
            "ratio_per_round": [round(v, 3) for v in ratios],
            "ratio_median": round(float(np.median(ratios)), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "jaxseg_compile_s": round(case["compile_s"], 2),
            "gflop_per_step": None if case["flops"] is None else round(case["flops"] / 1e9, 2),
        }
        if with_defaults:
            base = ips["jaxseg_xla_defaults"]
            speedup = [j / d for j, d in zip(ips["jaxseg"], base)]
            entry["xla_defaults_ratio_per_round"] = [
                round(d / t, 3) for d, t in zip(base, ips["pytorch"])
            ]
            entry["cpu_options_speedup_per_round"] = [round(v, 3) for v in speedup]
            entry["cpu_options_speedup_median"] = round(float(np.median(speedup)), 3)
        if case["flops"]:
            entry["gflop_per_s_median"] = {
                side: round(case["flops"] / float(np.median(t)) / 1e9, 1)
                for side, t in per_step.items()
            }
        results.append(entry)

    result = {
        "benchmark": "train_step_vs_pytorch",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "config": {
            "rounds": args.rounds,
            "steps_per_timing": args.steps,
            "warmup_steps": args.warmup,
            "dtype": "float32",
            "optimizer": f"adam(lr={LEARNING_RATE})",
            "loss": "mean pixel softmax cross-entropy",
            "ratio": "jaxseg images/s / PyTorch eager images/s, per round",
            "jaxseg_compiler_options": options,
            "flops": "XLA cost analysis of the compiled jaxseg step (multiply-add = 2 FLOPs)",
        },
        "results": results,
        **load_record(LOAD_AT_START),
        "machine": run_machine_info(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    for e in results:
        print(
            f"{e['model']:>12} {e['mode']:>8}: ratio {e['ratio_median']:.2f} "
            f"[{e['ratio_min']:.2f}, {e['ratio_max']:.2f}]  "
            f"jaxseg {np.median(e['images_per_s']['jaxseg']):.2f} img/s, "
            f"PyTorch {np.median(e['images_per_s']['pytorch']):.2f} img/s"
        )
    print(f"wrote {out_path}")
    warn_if_busy(LOAD_AT_START)  # Again, beside the figures.


if __name__ == "__main__":
    main()
