"""FCN-16s, staged as in the FCN paper: initialised from a trained FCN-32s run.

The trunk and ``score_fr`` come from the FCN-32s run's best checkpoint (matched by name); the new
``score_pool4`` starts at zero and ``upscore2`` at bilinear interpolation, so training starts
from FCN-32s's predictions. The learning rate is the FCN-32s one divided by 100, as the authors
lowered it for each stage.

    python -m jaxseg.train --config configs/fcn32s.py --workdir workdirs/fcn32s \
        --config.manual_dir=/path/to/VOCdevkit
    python -m jaxseg.train --config configs/fcn16s_staged.py --workdir workdirs/fcn16s_staged \
        --config.manual_dir=/path/to/VOCdevkit --config.init_from=workdirs/fcn32s
"""

from configs import fcn32s


def get_config():
    config = fcn32s.get_config()
    config.model = "fcn16s"
    config.init_from = "workdirs/fcn32s"  # The FCN-32s run's workdir.
    config.learning_rate = fcn32s.get_config().learning_rate / 100
    return config
