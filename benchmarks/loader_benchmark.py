"""Input-pipeline throughput: images per second out of jaxseg's grain loader, on the host.

    python benchmarks/loader_benchmark.py [--batches 50] [--workers 0 2]

Measures the embedded synthetic dataset (64x64 training crops), ISBI 2012 (572x572 crops of
mirror-extended 512x512 slices, with and without the border weight map) and CamVid (360x480,
352x480 crops) when ../shared/data holds them. Writes benchmarks/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax

from jaxseg import data
from jaxseg.data import weight_map

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")


def measure(loader, batches: int) -> float:
    iterator = iter(loader)
    first = next(iterator)  # Start-up (worker processes, first reads) is not counted.
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * first["image"].shape[0] / (time.perf_counter() - start)


def cases(tfds_dir: str):
    yield "synthetic_shapes 64x64", dict(spec=data.get_spec("synthetic_shapes"), size=(64, 64), batch_size=16,
                                          data_dir=tfds_dir)  # fmt: skip
    if os.path.isdir(os.path.join(SHARED, "isbi2012")):
        isbi = dict(spec=data.get_spec("isbi2012"), size=(572, 572), margin=92, batch_size=4, data_dir=tfds_dir,
                    manual_dir=os.path.join(SHARED, "isbi2012"))  # fmt: skip
        yield "isbi2012 572x572", isbi
        yield (
            "isbi2012 572x572 + border weights",
            {**isbi, "weight_fn": weight_map.border_weight_map},
        )
    if os.path.isdir(os.path.join(SHARED, "camvid")):
        yield "camvid 352x480", dict(spec=data.get_spec("camvid"), size=(352, 480), batch_size=8, data_dir=tfds_dir,
                                     manual_dir=os.path.join(SHARED, "camvid"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--output", default=os.path.join(ROOT, "benchmarks", "results", "loader.json")
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tfds_dir:
        for name, kwargs in cases(tfds_dir):
            data.get_builder(
                kwargs["spec"], data_dir=tfds_dir, manual_dir=kwargs.get("manual_dir")
            )  # Prepare.
            for workers in args.workers:
                loader = data.create_loader(
                    split=kwargs["spec"].train_split,
                    train=True,
                    seed=0,
                    worker_count=workers,
                    **kwargs,
                )
                rate = measure(loader, args.batches)
                results.append(
                    {"case": name, "workers": workers, "images_per_second": round(rate, 1)}
                )
                print(f"{name:40s} workers={workers}  {rate:8.1f} images/s")
    record = {
        "benchmark": "loader",
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "jax": jax.__version__,
        },  # fmt: skip
        "batches": args.batches,
        "results": results,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
