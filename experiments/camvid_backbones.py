"""U-Net-ResNet34 (``encoder_unet``, from scratch) against the paper-style U-Net on CamVid.

Both start from ``configs/unet_camvid.py``'s recipe (half resolution, Adam 1e-3, cosine, CE +
0.5 Dice, the same augmentation and crops of 160x224) and train the same number of steps;
``unet_resnet34_camvid`` trains from random weights here (``init_from=''``, no encoder learning
rate multiplier), since this machine cannot download ImageNet weights: the comparison is of the
architectures, not of pretraining. Also timed: loading each backbone's weights from a
``.safetensors`` file (seeded random weights of the real shapes, made with PyTorch from the test
extra) into the model's variables.
Writes ``experiments/results/camvid_backbones.json``; the workdirs stay under ``--workdir``.

CamVid (SegNet preparation): research and non-commercial use only (see the data's README).

    python experiments/camvid_backbones.py --steps 300 --manual-dir ../shared/data/camvid
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import safetensors.numpy  # noqa: E402

from configs import unet_camvid, unet_resnet34_camvid  # noqa: E402
from jaxseg import models  # noqa: E402
from jaxseg.models import pretrained  # noqa: E402

ARMS = {"unet": unet_camvid.get_config, "unet_resnet34": unet_resnet34_camvid.get_config}
# Backbone -> (model, model fields, weight shapes as torchvision names them).
BACKBONES = {"vgg16 (fcn32s)": ("fcn32s", {}), "resnet34 (encoder_unet)": (
    "encoder_unet", {"encoder_name": "resnet34"})}  # fmt: skip


def train_arm(name: str, args) -> dict:
    config = _arm_config(name, args)
    config.num_train_steps = args.steps
    config.eval_every_steps = config.checkpoint_every_steps = args.steps
    config.log_every_steps = 25
    config.warmup_steps = min(config.warmup_steps, args.steps // 10)
    from jaxseg import training

    workdir = os.path.join(args.workdir, name)
    start = time.perf_counter()
    final = training.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    speeds = [r["images_per_second"] for r in rows if r["split"] == "train"]
    return {
        "model": config.model,
        "model_kwargs": config.model_kwargs.to_dict(),
        "parameters": int(sum(np.size(p) for p in jax.tree.leaves(_abstract(config)))),
        "steps": args.steps,
        "batch_size": config.batch_size,
        "mean_iou": round(final["mean_iou"], 4),
        "pixel_accuracy": round(final["pixel_accuracy"], 4),
        "per_class_iou": [round(v, 4) for v in final.get("per_class_iou", [])],
        # Median over log steps after the first (which includes compiling).
        "train_images_per_s_median": round(float(np.median(speeds[1:] or speeds)), 2),
        "wall_s": round(wall, 1),
    }


def alternating_speed(args, rounds: int = 3, steps: int = 5) -> dict:
    """Training images/s of each arm's jitted step on the same random batch, the arms timed in
    turn for ``rounds`` rounds (so machine load touches both alike), as the train-step
    benchmark does; the training runs' own images/s are in ``arms``."""
    from jaxseg import training, xla_options

    fns = {}
    for name in args.arms:
        config = _arm_config(name, args)
        setup = training.resolve(config)
        state = training.create_train_state(config, setup, training.create_optimizer(config)[0])
        step = jax.jit(functools.partial(training.train_step, config=config, aug=setup.augment),
                       compiler_options=xla_options.compiler_options())  # fmt: skip
        rng = np.random.default_rng(0)
        batch = {
            "image": rng.random((config.batch_size, *config.input_size, 3), np.float32),
            "label": rng.integers(0, 11, (config.batch_size, *config.input_size), np.int32),
        }
        state, _ = step(state, batch)  # Compile and warm up.
        jax.block_until_ready(state)
        fns[name] = (step, state, batch, config.batch_size)
    speeds = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (step, state, batch, size) in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                state, _ = step(state, batch)
            jax.block_until_ready(state)
            speeds[name].append(round(size * steps / (time.perf_counter() - start), 2))
    return {"rounds": rounds, "steps_per_timing": steps, "images_per_s": speeds}


def _arm_config(name: str, args):
    config = ARMS[name]()
    config.init_from, config.lr_multipliers = "", ()
    config.input_size = (160, 224)
    config.eval_size = (192, 256)
    config.manual_dir = args.manual_dir
    config.data_dir = args.data_dir
    config.seed = args.seed
    return config


def _abstract(config):
    model = models.create(config.model, 11, **config.model_kwargs)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return shapes["params"]


def torchvision_state(label: str) -> dict[str, np.ndarray]:
    """Seeded random torchvision weights of the real shapes, from the tests' plain-PyTorch
    references (PyTorch, from the test extra, makes the file; jaxseg reads it without)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch_backbone_reference as backbone_ref
    import torch_vgg_reference as vgg_ref

    if label.startswith("vgg16"):
        model = vgg_ref.make(vgg_ref.TorchvisionVGG16, seed=0)
        return {k: v.numpy() for k, v in model.state_dict().items()}
    encoder = backbone_ref.randomize(backbone_ref.ResNet(34), seed=0)
    return {k: v.numpy() for k, v in backbone_ref.classification_state(encoder).items()}


def time_backbone_loads(tmp: str) -> dict:
    """Seconds to read a torchvision-layout ``.safetensors`` and convert it into the variables."""
    out = {}
    for label, (model_name, kwargs) in BACKBONES.items():
        model = models.create(model_name, 11, **kwargs)
        variables = jax.tree.map(
            lambda s: np.zeros(s.shape, s.dtype),
            jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3))),
        )
        path = os.path.join(tmp, f"{model_name}.safetensors")
        safetensors.numpy.save_file(torchvision_state(label), path)
        start = time.perf_counter()
        _, report = pretrained.load_pretrained(model_name, dict(variables), path)
        seconds = time.perf_counter() - start
        out[label] = {"seconds": round(seconds, 2), "tensors": len(report["loaded"]),
                      "file_mib": round(os.path.getsize(path) / 2**20, 1)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument(
        "--manual-dir", default=os.path.join(ROOT, "..", "shared", "data", "camvid")
    )
    parser.add_argument("--data-dir", default=None, help="TFDS folder (prepared data)")
    parser.add_argument(
        "--speed-only", action="store_true", help="time the steps only; keep --out's training runs"
    )
    parser.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "camvid_backbones"))
    parser.add_argument("--out", default=os.path.join(ROOT, "experiments", "results",
                                                      "camvid_backbones.json"))  # fmt: skip
    args = parser.parse_args()
    result = {"experiment": "camvid_backbones", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]},
              "arms": {}}  # fmt: skip
    if args.speed_only and os.path.exists(args.out):
        with open(args.out) as f:
            result = {**json.load(f), "speed_timestamp": result["timestamp"]}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result["backbone_load"] = time_backbone_loads(tmp)
        print(json.dumps(result["backbone_load"], indent=1))
        for name in args.arms:
            result["arms"][name] = train_arm(name, args)
            print(name, json.dumps(result["arms"][name]))
    load_before = round(os.getloadavg()[0], 2)
    speed = alternating_speed(args)
    result["train_speed_alternating"] = {**speed, "load_average_1m_before_after": [
        load_before, round(os.getloadavg()[0], 2)]}  # fmt: skip
    print(json.dumps(result["train_speed_alternating"]))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
