"""FCN-8s on VGG16, PASCAL VOC 2012 segmentation: the FCN-32s recipe (from ImageNet VGG16) with
the pool4 and pool3 skips, trained in one stage without skip scaling. The paper's recipes:
``configs/fcn8s_staged.py`` (from an FCN-16s run) and ``configs/fcn8s_atonce.py``.

    python -m jaxseg.train --config configs/fcn8s.py --workdir workdirs/fcn8s \
        --config.manual_dir=/path/to/VOCdevkit
"""

from configs import fcn32s


def get_config():
    config = fcn32s.get_config()
    config.model = "fcn8s"
    return config
