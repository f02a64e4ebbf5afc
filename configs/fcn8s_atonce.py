"""FCN-8s "at-once": the authors' one-stage FCN-8s from ImageNet VGG16.

pool4 and pool3 are scaled by fixed factors 0.01 and 0.0001 before their zero-initialised score
layers, so the deep prediction leads early in training and the skips grow in as their score
layers learn (the authors' ``scale_pool4``/``scale_pool3``, which are not learned).

    python -m jaxseg.train --config configs/fcn8s_atonce.py --workdir workdirs/fcn8s_atonce \
        --config.manual_dir=/path/to/VOCdevkit
"""

from configs import fcn32s


def get_config():
    config = fcn32s.get_config()
    config.model = "fcn8s"
    config.model_kwargs = {**config.model_kwargs, "skip_scales": (0.01, 0.0001)}  # pool4, pool3.
    return config
