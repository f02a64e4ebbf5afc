"""The tutorial's SimpleFCN (no skips) on the embedded synthetic dataset.

python -m jaxseg.train --config configs/simple_fcn.py --workdir workdirs/simple_fcn
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "simple_fcn"
    config.model_kwargs = {}
    return config
