"""Ablation: what the U-Net paper's ingredients add on ISBI 2012, three seeds each.

From the CPU recipe (configs/unet_isbi_cpu.py: same padding, elastic deformation, no border
weights), one change per arm: the paper's weight map on (class balancing plus the border term,
w0 = 10, sigma = 5 px), the elastic deformation off, or valid padding with overlap-tile input.
Slices 0-19 train; slices 20-23 are scored whole through tiled inference (jaxseg.evaluate): the
pixel error at threshold 0.5 (lower is better), V_rand and V_info (higher is better).

Budget (a 2-core CPU): a depth-3 U-Net (16 base features), batch 4, 400 steps of Adam (1e-3,
cosine); 'same' arms train on 128x128 crops, the valid arm on 220x220 tiles whose 132x132 centre
is predicted (about the same labelled area per step; 22.6 GFLOP a step against 13.5, as the runs
log it). 12 runs. ISBI data: research and non-commercial use only (see the data's README).

    python -m jaxseg.experiment --config experiments/isbi_ingredients.py \
        --config.base.manual_dir=../shared/data/isbi2012
"""

import ml_collections

from configs import unet_isbi_cpu


def get_config():
    experiment = ml_collections.ConfigDict()
    base = unet_isbi_cpu.get_config()
    base.manual_dir = "../shared/data/isbi2012"  # Your copy of the ISBI 2012 slices.
    base.model_kwargs = {"padding": "SAME", "depth": 3, "base_features": 16, "dropout_rate": 0.0}
    base.input_size = (128, 128)
    base.num_train_steps = 400
    base.eval_every_steps = 100
    base.checkpoint_every_steps = 200
    experiment.base = base  # Training config every run starts from (configs/unet_isbi_cpu.py).
    # (name, overrides of base): one ingredient changed per arm.
    experiment.arms = (
        ("recipe", {}),
        ("border_weights", {"border_weights": {"enabled": True}}),
        ("no_elastic", {"augment": {"elastic_prob": 0.0}}),
        ("valid_padding", {"model_kwargs": {"padding": "VALID"}, "input_size": (220, 220)}),
    )
    # Each arm once per seed: initialisation, data order, augmentation.
    experiment.seeds = (0, 1, 2)
    # Scored whole by jaxseg.evaluate: pixel error (1 - accuracy at 0.5), V_rand, V_info, and
    # the challenge's way, at the best threshold: V_rand and its pixel error (1 - best F-score).
    experiment.metrics = ("isbi.pixel_misclassification", "isbi.v_rand", "isbi.v_info",
                          "isbi_best.v_rand", "isbi_best.isbi_pixel_error", "mean_iou")  # fmt: skip
    experiment.evaluate = True
    experiment.num_prediction_images = 2  # Slices in the prediction grid.
    return experiment
