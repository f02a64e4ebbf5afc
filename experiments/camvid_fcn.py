"""FCN-32s, FCN-16s and FCN-8s on CamVid: what the finer skips add, three seeds each.

From random weights (pretrained VGG16 weights are the FCN paper's start, but this budget has no
download; see configs/fcn8s.py for the ImageNet start). Budget (a 2-core CPU): a narrow VGG16
(8 base features, fc6/fc7 of 128), CamVid at quarter resolution (90x120), random 80x112 crops
(padded by 100 pixels as in the paper), batch 4, 300 steps of AdamW (1e-3, cosine); scored on
the 101 validation frames. 9 runs. CamVid: research and non-commercial use only.

    python -m jaxseg.experiment --config experiments/camvid_fcn.py \
        --config.base.manual_dir=../shared/data/camvid
"""

import ml_collections

from configs import unet_camvid
from experiments.camvid_losses import quarter_resolution

FCN = {"base_features": 8, "fc_features": 128, "dropout_rate": 0.5}


def get_config():
    experiment = ml_collections.ConfigDict()
    base = quarter_resolution(unet_camvid.get_config())
    base.model = "fcn32s"
    base.model_kwargs = FCN
    base.batch_size = 4
    experiment.base = base  # Training config every run starts from (configs/unet_camvid.py).
    # (name, overrides of base): the output stride, i.e. which pooling layers' scores are fused.
    experiment.arms = (
        ("fcn32s", {}),
        ("fcn16s", {"model": "fcn16s"}),
        ("fcn8s", {"model": "fcn8s"}),
    )
    # Each arm once per seed: initialisation, data order, augmentation.
    experiment.seeds = (0, 1, 2)
    experiment.metrics = ("mean_iou", "pixel_accuracy", "mean_accuracy")  # Training's last eval.
    experiment.evaluate = False  # True: score the last checkpoint with jaxseg.evaluate instead.
    experiment.num_prediction_images = 3  # Validation frames in the prediction grid.
    return experiment
