"""The tutorial's SimpleUNet (three poolings, concatenated skips) on the embedded synthetic dataset.

python -m jaxseg.train --config configs/simple_unet.py --workdir workdirs/simple_unet
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "simple_unet"
    config.model_kwargs = {}
    config.learning_rate = 1e-3
    return config
