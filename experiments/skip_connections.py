"""Ablation: what do the U-Net's skip connections add? Concatenated (the paper), added (as FCN
fuses them), or none, on the embedded synthetic shapes, three seeds each.

Budget: 400 steps of batch 16 at 64x64 (U-Net, 16 base features, depth 3, same padding), about
two minutes a run on a 2-core CPU; 9 runs.

    python -m jaxseg.experiment --config experiments/skip_connections.py
"""

import ml_collections

from configs import base as base_config


def get_config():
    experiment = ml_collections.ConfigDict()
    base = base_config.get_config()
    base.num_train_steps = 400
    base.eval_every_steps = 100  # Four points on the learning curve.
    base.checkpoint_every_steps = 200
    experiment.base = base  # Training config every run starts from (configs/base.py).
    # (name, overrides of base): one arm per way of fusing the contracting path's features.
    experiment.arms = (
        ("concat", {"model_kwargs": {"skip": "concat"}}),
        ("add", {"model_kwargs": {"skip": "add"}}),
        ("none", {"model_kwargs": {"skip": "none"}}),
    )
    experiment.seeds = (
        0,
        1,
        2,
    )  # Each arm once per seed: initialisation, data order, augmentation.
    experiment.metrics = ("mean_iou", "pixel_accuracy")  # Tabled, from training's last evaluation.
    experiment.evaluate = False  # True: score the last checkpoint with jaxseg.evaluate instead.
    experiment.num_prediction_images = 4  # Validation images in the prediction grid.
    return experiment
