"""U-Net ('same' padding, 16 base features, depth 3) on the embedded synthetic dataset.

The default job: no download, a few minutes on 2 CPU cores.

    python -m jaxseg.train --config configs/unet.py --workdir workdirs/unet
"""

from configs import base


def get_config():
    config = base.get_config()
    return config
