"""FCN-8s on VGG16, PASCAL VOC 2012 segmentation (21 classes, 255 ignored).

The FCN paper's recipe, with the loss averaged over pixels instead of summed: SGD with momentum
0.9, weight decay 5e-4, a polynomial learning-rate decay, random 320x320 crops and whole-image
evaluation padded to 512x512. VOC data: see its own terms (research use).

    python -m jaxseg.train --config configs/fcn8s.py --workdir workdirs/fcn8s \
        --config.manual_dir=/path/to/VOCdevkit
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "fcn8s"
    config.model_kwargs = {}
    config.dataset = "voc2012_segmentation"
    config.input_size = (320, 320)
    config.eval_size = (512, 512)
    config.batch_size = 16
    config.eval_batch_size = 8
    config.num_train_steps = 40_000
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 2000
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.learning_rate = 0.01
    config.weight_decay = 5e-4
    config.schedule = "polynomial"
    config.warmup_steps = 0
    config.augment = {"flip_h_prob": 0.5, "scale_prob": 1.0, "scale_min": 0.75, "scale_max": 1.5,
                      "out_of_bounds": "ignore"}  # fmt: skip
    return config
