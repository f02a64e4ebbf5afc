"""Throughput of jitted `jaxseg.augment.augment_batch` against SciPy, one image at a time.

Two settings, each with random flips and rotation: the U-Net paper elastic deformation (3x3
coarse grid, std 10 px, bicubic upsampling) and Simard's (uniform field, Gaussian blur, scaled).
The SciPy reference does the same work per image: a displacement field (``ndimage.zoom`` order 3
of the coarse grid, or ``gaussian_filter`` of the uniform field), the affine grid, then
``map_coordinates`` (order 1 per channel for the image, order 0 for the mask, mode 'mirror').

    python benchmarks/augment_benchmark.py [--batch 16 --size 512 --channels 3]

Writes benchmarks/results/augment.json and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.ndimage as ndi

from jaxseg.augment import AugmentParams, augment_batch

RESULTS = pathlib.Path(__file__).parent / "results" / "augment.json"


def settings(args) -> dict[str, AugmentParams]:
    common = dict(flip_h_prob=0.5, flip_v_prob=0.5, rotate_prob=1.0, rotate_max_degrees=15.0)
    return {
        "paper_elastic": AugmentParams(
            **common, elastic_prob=1.0, elastic_grid=3, elastic_std=10.0
        ),
        "simard_elastic": AugmentParams(
            **common, simard_prob=1.0, simard_alpha=args.alpha, simard_sigma=args.sigma
        ),
    }


def time_jax(params, images, masks, repeats):
    fn = jax.jit(augment_batch, static_argnames="params")
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.key(0), images, masks, params))
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(jax.random.key(i + 1), images, masks, params))
        times.append(time.perf_counter() - start)
    return compile_s, times


def scipy_coords(rng, shape, params: AugmentParams):
    """SciPy/NumPy sampling coordinates [2, H, W]: flips, rotation about the centre, elastic."""
    h, w = shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])[:, None, None]
    grid = np.mgrid[:h, :w].astype(np.float64) - centre
    flip = np.where(rng.random(2) < [params.flip_v_prob, params.flip_h_prob], -1.0, 1.0)
    theta = np.deg2rad(rng.uniform(-params.rotate_max_degrees, params.rotate_max_degrees))
    c, s = np.cos(theta), np.sin(theta)
    coords = np.einsum("ij,jhw->ihw", np.diag(flip) @ np.array([[c, s], [-s, c]]), grid) + centre
    if params.elastic_prob:
        g = params.elastic_grid
        coarse = rng.normal(0.0, params.elastic_std, (2, g, g))
        coords += ndi.zoom(coarse, (1, h / g, w / g), order=3, mode="nearest", grid_mode=True)
    if params.simard_prob:
        u = rng.uniform(-1.0, 1.0, (2, h, w))
        alpha, sigma = params.simard_alpha, params.simard_sigma
        coords += np.stack([alpha * ndi.gaussian_filter(f, sigma) for f in u])
    return coords


def scipy_resample(image, mask, coords):
    """Bilinear image (per channel) and nearest mask, mode 'mirror'."""
    channels = [
        ndi.map_coordinates(x, coords, order=1, mode="mirror") for x in np.moveaxis(image, -1, 0)
    ]
    return np.stack(channels, -1), ndi.map_coordinates(mask, coords, order=0, mode="mirror")


def time_scipy(params, images, masks, repeats):
    """Seconds per batch, in total and in the resample alone."""
    rng = np.random.default_rng(0)
    scipy_resample(images[0], masks[0], scipy_coords(rng, masks[0].shape, params))  # warm-up
    totals, resamples = [], []
    for _ in range(repeats):
        resample_s, start = 0.0, time.perf_counter()
        for image, mask in zip(images, masks):
            coords = scipy_coords(rng, mask.shape, params)
            resample_start = time.perf_counter()
            scipy_resample(image, mask, coords)
            resample_s += time.perf_counter() - resample_start
        totals.append(time.perf_counter() - start)
        resamples.append(resample_s)
    return totals, resamples


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="timed jitted calls")
    parser.add_argument("--scipy-repeats", type=int, default=2, help="timed SciPy batches")
    parser.add_argument("--alpha", type=float, default=100.0, help="Simard alpha (px)")
    parser.add_argument("--sigma", type=float, default=10.0, help="Simard sigma (px)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size)
    images_np = rng.random((*shape, args.channels), dtype=np.float32)
    masks_np = rng.integers(0, 21, shape, dtype=np.int32)
    images, masks = jnp.asarray(images_np), jnp.asarray(masks_np)

    load_before = os.getloadavg()  # other processes on the machine skew the timings
    rows = []
    for name, params in settings(args).items():
        compile_s, jax_times = time_jax(params, images, masks, args.repeats)
        scipy_times, scipy_resample_times = time_scipy(
            params, images_np, masks_np, args.scipy_repeats
        )
        jax_s, scipy_s = float(np.median(jax_times)), float(np.median(scipy_times))
        rows.append(
            dict(
                setting=name,
                params=dataclasses.asdict(params),
                jax_compile_s=compile_s,
                jax_batch_s_median=jax_s,
                jax_batch_s_all=jax_times,
                jax_images_per_s=args.batch / jax_s,
                scipy_batch_s_median=scipy_s,
                scipy_batch_s_all=scipy_times,
                scipy_resample_only_batch_s_median=float(np.median(scipy_resample_times)),
                scipy_images_per_s=args.batch / scipy_s,
                speedup=scipy_s / jax_s,
            )
        )

    result = dict(
        benchmark="augment_batch vs scipy.ndimage per image",
        timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        batch=args.batch,
        size=args.size,
        channels=args.channels,
        machine=dict(
            processor=platform.processor(),
            platform=platform.platform(),
            python=platform.python_version(),
            cpu_count=os.cpu_count(),
            jax_devices=[str(d) for d in jax.devices()],
            jax=jax.__version__,
            numpy=np.__version__,
            scipy=scipy.__version__,
            load_average_1_5_15_min=load_before,
        ),
        note="JAX uses all cores through XLA; SciPy runs one image at a time on one core.",
        results=rows,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"batch {args.batch} x {args.size} x {args.size} x {args.channels}, {jax.devices()}")
    header = ("setting", "jax ms/batch", "img/s", "scipy ms/batch", "img/s", "speedup")
    print("{:<16}{:>14}{:>9}{:>16}{:>9}{:>9}{:>28}".format(*header, "scipy resample only ms"))
    for r in rows:
        jax_ms, scipy_ms = 1e3 * r["jax_batch_s_median"], 1e3 * r["scipy_batch_s_median"]
        print(
            f"{r['setting']:<16}{jax_ms:>14.1f}{r['jax_images_per_s']:>9.1f}"
            f"{scipy_ms:>16.1f}{r['scipy_images_per_s']:>9.1f}{r['speedup']:>8.1f}x"
            f"{1e3 * r['scipy_resample_only_batch_s_median']:>28.1f}"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
