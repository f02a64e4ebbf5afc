"""Overlap-tile prediction of one large single-channel image with a valid-padding U-Net.

    python benchmarks/large_image_benchmark.py            # 8192 x 8192, about 3 minutes on 2 cores
    python benchmarks/large_image_benchmark.py --size 2048

Reports wall time, tiles/s and peak host memory (``ru_maxrss``), and writes them with the
configuration and machine information to ``benchmarks/results/large_image.json``.

Against PyTorch: the same network (``tests/torch_reference.TorchUNet``, the same weights) runs
the same tile batches eagerly under ``torch.inference_mode()``, alternating with the jitted
jaxseg network batch by batch for ``--torch-rounds`` rounds, so that load on the machine touches
both; the ratio of their tiles/s (network only: no tiling or stitching on either side) is
reported per round, with its median and spread. ``--torch-rounds 0`` skips it. Parameters
are random (timing does not depend on them). Peak memory should be the image, the float32
``[H, W, K]`` output and a few tile batches: nothing scales with the image beyond those two.
"""

# ruff: noqa: E402 - the load average is read before the imports below do any work.
from __future__ import annotations

import os

LOAD_AT_START = os.getloadavg()[0]  # Before importing jax and torch, before compiling.

import argparse
import datetime
import json
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import load_record, machine_info, warn_if_busy

from jaxseg import inference, models  # noqa: E402
from jaxseg.xla_options import compiler_options  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MIB = 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # KiB on Linux.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8192, help="image height and width")
    parser.add_argument("--depth", type=int, default=4, help="U-Net poolings")
    parser.add_argument("--base-features", type=int, default=16, help="U-Net top-level width")
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--output-tile", type=int, default=772, help="desired output tile size")
    parser.add_argument("--tile-batch-size", type=int, default=2)
    parser.add_argument("--tta", default=None, help="None, or a preset: flips, rotations, dihedral")
    parser.add_argument("--torch-rounds", type=int, default=3, help="0: no PyTorch comparison")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/large_image.json"))
    args = parser.parse_args()
    warn_if_busy(LOAD_AT_START)

    model = models.create(
        "unet", args.num_classes, depth=args.depth, base_features=args.base_features
    )
    tile = inference.unet_tile_size(args.output_tile, args.depth)
    small = inference.unet_tile_size(4, args.depth)  # Parameters do not depend on the size.
    variables = model.init(jax.random.key(0), jnp.zeros((1, small, small, 1)))
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    predictor = inference.for_model(
        model, variables, tile_size=tile, tile_batch_size=args.tile_batch_size, tta=args.tta
    )
    out_tile = predictor.output_tile_shape(1)[0]
    step = out_tile - out_tile % 2**args.depth

    # Warm-up on an image with at least one full tile batch: compiles the one shape used below.
    side = step * int(np.ceil(np.sqrt(predictor.tile_batch_size)))
    start = time.perf_counter()
    predictor(np.zeros((side, side, 1), np.float32))
    compile_s = time.perf_counter() - start

    image = np.random.default_rng(0).random((args.size, args.size, 1), dtype=np.float32)
    rss_before = peak_rss_mib()
    rows, cols = predictor.tile_grid(image.shape)
    start = time.perf_counter()
    probs = predictor(image)
    wall_s = time.perf_counter() - start
    peak = peak_rss_mib()
    assert probs.shape == (args.size, args.size, args.num_classes), probs.shape
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-4)

    tiles = rows * cols * len(predictor.tta)
    versus_torch = None
    if args.torch_rounds:
        versus_torch = torch_comparison(model, variables, args, tile, predictor.tile_batch_size)
    result = {
        "benchmark": "large_image_overlap_tile",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "image": [args.size, args.size, 1],
            "model": "unet",
            "padding": "VALID",
            "depth": args.depth,
            "base_features": args.base_features,
            "num_classes": args.num_classes,
            "parameters": int(n_params),
            "input_tile": tile,
            "output_tile": out_tile,
            "tile_step": step,
            "tile_batch_size": predictor.tile_batch_size,
            "tta": [list(t) for t in predictor.tta],
            "output": predictor.output,
        },
        "tiles": tiles,
        "tile_grid": [rows, cols],
        "wall_s": round(wall_s, 2),
        "tiles_per_s": round(tiles / wall_s, 3),
        "megapixels_per_s": round(args.size**2 * len(predictor.tta) / wall_s / 1e6, 3),
        "warmup_and_compile_s": round(compile_s, 2),
        "peak_rss_mib": round(peak, 1),
        "rss_peak_before_predict_mib": round(rss_before, 1),
        "image_mib": round(image.nbytes / MIB, 1),
        "output_mib": round(probs.nbytes / MIB, 1),
        "tile_batch_input_mib": round(predictor.tile_batch_size * tile**2 * 4 / MIB, 2),
        **load_record(LOAD_AT_START),
        "network_only_vs_pytorch": versus_torch,
        "machine": machine_info(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"wrote {args.out}")
    warn_if_busy(LOAD_AT_START)  # Again, beside the figures.


def torch_comparison(model, variables, args, tile: int, batch: int) -> dict:
    """Tiles/s of the network alone, jitted jaxseg against PyTorch eager, alternating."""
    import torch
    from torch_reference import TorchUNet, load_unet

    net = TorchUNet(1, args.num_classes, depth=args.depth, base=args.base_features, padding=0)
    load_unet(net, jax.device_get(variables["params"]))
    net.eval()
    # Compiled as the Predictor compiles its tiles (jaxseg.xla_options on CPU).
    forward = jax.jit(lambda x: model.apply(variables, x), compiler_options=compiler_options())
    x = np.random.default_rng(1).random((batch, tile, tile, 1), dtype=np.float32)
    x_torch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.inference_mode():
        ours, theirs = np.asarray(forward(x)), net(x_torch).numpy().transpose(0, 2, 3, 1)
    max_diff = float(np.abs(ours - theirs).max())  # Same weights, same network: round-off.

    def time_jax() -> float:
        start = time.perf_counter()
        forward(x).block_until_ready()
        return time.perf_counter() - start

    def time_torch() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            net(x_torch)
        return time.perf_counter() - start

    rounds = []
    for r in range(args.torch_rounds):
        pair = (time_jax, time_torch) if r % 2 == 0 else (time_torch, time_jax)
        seconds = {f.__name__: f() for f in pair}
        jax_tps, torch_tps = batch / seconds["time_jax"], batch / seconds["time_torch"]
        rounds.append({"jaxseg_tiles_per_s": round(jax_tps, 3),
                       "pytorch_tiles_per_s": round(torch_tps, 3),
                       "ratio": round(jax_tps / torch_tps, 3)})  # fmt: skip
    ratios = [r["ratio"] for r in rounds]
    return {
        "what": f"forward of one batch of {batch} {tile}x{tile} tiles, rounds alternate the order",
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "max_abs_difference": max_diff,
        "rounds": rounds,
        "ratio_median": float(np.median(ratios)),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


if __name__ == "__main__":
    main()
