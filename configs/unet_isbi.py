"""The U-Net paper's network and recipe on ISBI 2012 EM membranes.

Valid (unpadded) convolutions with overlap-tile input (572x572 tiles -> 388x388 outputs, mirrored
borders), the border weight map (w0 = 10, sigma = 5 px), elastic deformation on a 3x3 grid
(10 px standard deviation), dropout at the end of the contracting path, SGD with momentum 0.99
and one large tile per step. Slices 0-19 train, 20-23 evaluate. ISBI data: research and
non-commercial use only (see the data's README).

    python -m jaxseg.train --config configs/unet_isbi.py --workdir workdirs/unet_isbi \
        --config.manual_dir=../shared/data/isbi2012
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "unet"
    config.model_kwargs = {"padding": "VALID", "depth": 4, "base_features": 64, "dropout_rate": 0.5}
    config.dataset = "isbi2012"
    config.input_size = (572, 572)  # The paper's tile: 388x388 output.
    config.eval_size = (512, 512)  # Whole slices (input 700 -> output 516, cropped by the labels).
    config.batch_size = 1  # The paper: large tiles, batch of one, high momentum.
    config.eval_batch_size = 1
    config.num_train_steps = 20_000
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.optimizer = "sgd"
    config.momentum = 0.99
    config.learning_rate = 0.01
    config.weight_decay = 0.0
    config.schedule = "constant"
    config.warmup_steps = 0
    config.grad_clip_norm = 0.0
    config.border_weights.enabled = True
    config.border_weights.foreground = 1  # Cells (label 1) are objects; membranes separate them.
    config.augment = {
        "flip_h_prob": 0.5,
        "flip_v_prob": 0.5,
        "rot90_prob": 0.75,
        "elastic_prob": 1.0,
        "elastic_grid": 3,
        "elastic_std": 10.0,
        "brightness_prob": 0.5,
        "brightness_max_delta": 0.1,
    }
    return config
