"""Ablation: the loss on CamVid. Cross-entropy, class-weighted cross-entropy (median frequency
balancing over all training pixels), cross-entropy + Dice, and focal loss, three seeds each, on
the same U-Net.

Budget (a 2-core CPU): CamVid at quarter resolution (90x120), random 80x112 crops, batch 8,
300 steps of AdamW (1e-3, cosine) on a U-Net with batch norm (16 base features, depth 4);
scored on the 101 validation frames. 12 runs. CamVid: research and
non-commercial use only (see the data's README).

    python -m jaxseg.experiment --config experiments/camvid_losses.py \
        --config.base.manual_dir=../shared/data/camvid
"""

import ml_collections
import numpy as np

from configs import unet_camvid

# Pixel fraction of each class in the 367 training labels (the data's README; void left out).
TRAIN_FRACTIONS = (0.1685, 0.2326, 0.0098, 0.3166, 0.0449, 0.0972, 0.0117, 0.0113, 0.0587,
                   0.0064, 0.0029)  # fmt: skip


def median_frequency_weights(fractions) -> tuple[float, ...]:
    """Median frequency balancing: median(frequency) / frequency of each class, the frequency
    being the class's share of all training pixels. (SegNet counts a class's frequency over the
    images where it appears, which gives the rarest classes about half these weights: fence 2.0
    instead of 4.0, bicyclist 8.9 instead of 15.4.)"""
    fractions = np.asarray(fractions, np.float64)
    return tuple(float(w) for w in np.median(fractions) / fractions)


def quarter_resolution(base):
    """``base`` (a CamVid config) at this CPU budget: quarter resolution, 300 steps, plain
    cross-entropy. Shared with experiments/camvid_fcn.py."""
    base.manual_dir = "../shared/data/camvid"  # Your copy of CamVid (SegNet's preparation).
    base.resize_to = (90, 120)  # Quarter resolution: the CPU budget.
    base.input_size = (80, 112)  # Random crops, multiples of 2**depth.
    base.eval_size = (96, 128)  # Whole validation frames, padded.
    base.num_train_steps = 300
    base.eval_every_steps = 100
    base.checkpoint_every_steps = 150
    base.loss = {"cross_entropy": 1.0, "dice": 0.0, "focal": 0.0}
    return base


def get_config():
    experiment = ml_collections.ConfigDict()
    base = quarter_resolution(unet_camvid.get_config())
    base.model_kwargs = {"padding": "SAME", "depth": 4, "base_features": 16, "batch_norm": True}
    experiment.base = base  # Training config every run starts from (configs/unet_camvid.py).
    # (name, overrides of base): one arm per loss.
    experiment.arms = (
        ("cross_entropy", {}),
        ("weighted_ce", {"class_weights": median_frequency_weights(TRAIN_FRACTIONS)}),
        ("ce_dice", {"loss": {"dice": 1.0}}),
        ("focal", {"loss": {"cross_entropy": 0.0, "focal": 1.0}}),
    )
    # Each arm once per seed: initialisation, data order, augmentation.
    experiment.seeds = (0, 1, 2)
    experiment.metrics = ("mean_iou", "pixel_accuracy", "mean_accuracy")  # Training's last eval.
    experiment.evaluate = False  # True: score the last checkpoint with jaxseg.evaluate instead.
    experiment.num_prediction_images = 3  # Validation frames in the prediction grid.
    return experiment
