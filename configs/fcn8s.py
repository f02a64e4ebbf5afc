"""FCN-8s on VGG16, PASCAL VOC 2012 segmentation: the FCN-32s recipe with the pool4 and pool3 skips.

    python -m jaxseg.train --config configs/fcn8s.py --workdir workdirs/fcn8s \
        --config.manual_dir=/path/to/VOCdevkit
"""

from configs import fcn32s


def get_config():
    config = fcn32s.get_config()
    config.model = "fcn8s"
    return config
