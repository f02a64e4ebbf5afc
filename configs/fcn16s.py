"""FCN-16s on VGG16, PASCAL VOC 2012 segmentation: the FCN-32s recipe with the pool4 skip.

    python -m jaxseg.train --config configs/fcn16s.py --workdir workdirs/fcn16s \
        --config.manual_dir=/path/to/VOCdevkit
"""

from configs import fcn32s


def get_config():
    config = fcn32s.get_config()
    config.model = "fcn16s"
    return config
