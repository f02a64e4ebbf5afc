"""U-Net with batch norm ('same' padding) on CamVid at half resolution (11 classes, void ignored).

CamVid (SegNet preparation): research and non-commercial use only (see the data's README).

    python -m jaxseg.train --config configs/unet_camvid.py --workdir workdirs/unet_camvid \
        --config.manual_dir=../shared/data/camvid
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "unet"
    config.model_kwargs = {"padding": "SAME", "depth": 4, "base_features": 32, "batch_norm": True}
    config.dataset = "camvid"
    config.resize_to = (180, 240)  # Half of 360x480.
    config.input_size = (176, 240)  # Random crops, divisible by 2**depth.
    config.eval_size = (192, 240)  # Whole (resized) frames, padded.
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 6000
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.learning_rate = 1e-3
    config.loss = {"cross_entropy": 1.0, "dice": 0.5, "focal": 0.0}
    config.augment = {"flip_h_prob": 0.5, "scale_prob": 0.5, "scale_min": 0.8, "scale_max": 1.25,
                      "brightness_prob": 0.5, "brightness_max_delta": 0.1,
                      "contrast_prob": 0.5, "contrast_min": 0.8, "contrast_max": 1.2}  # fmt: skip
    return config
