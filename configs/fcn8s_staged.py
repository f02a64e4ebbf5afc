"""FCN-8s, staged as in the FCN paper: initialised from a trained FCN-16s run
(``configs/fcn16s_staged.py``), the new pool3 skip zero, the learning rate another 100x lower.

    python -m jaxseg.train --config configs/fcn8s_staged.py --workdir workdirs/fcn8s_staged \
        --config.manual_dir=/path/to/VOCdevkit --config.init_from=workdirs/fcn16s_staged
"""

from configs import fcn16s_staged


def get_config():
    config = fcn16s_staged.get_config()
    config.model = "fcn8s"
    config.init_from = "workdirs/fcn16s_staged"  # The FCN-16s run's workdir.
    config.learning_rate = fcn16s_staged.get_config().learning_rate / 100
    return config
