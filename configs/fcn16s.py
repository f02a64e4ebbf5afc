"""FCN-16s on VGG16, PASCAL VOC 2012 segmentation: the FCN-32s recipe (from ImageNet VGG16) with
the pool4 skip, trained in one stage. ``configs/fcn16s_staged.py`` is the paper's staged recipe.

    python -m jaxseg.train --config configs/fcn16s.py --workdir workdirs/fcn16s \
        --config.manual_dir=/path/to/VOCdevkit
"""

from configs import fcn32s


def get_config():
    config = fcn32s.get_config()
    config.model = "fcn16s"
    return config
