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

FCN = {"base_features": 8, "fc_features": 128, "dropout_rate": 0.5}


def get_config():
    experiment = ml_collections.ConfigDict()
    base = unet_camvid.get_config()
    base.manual_dir = "../shared/data/camvid"  # Your copy of CamVid (SegNet's preparation).
    base.model = "fcn32s"
    base.model_kwargs = FCN
    base.resize_to = (90, 120)  # Quarter resolution: the CPU budget.
    base.input_size = (80, 112)  # Random crops.
    base.eval_size = (96, 128)  # Whole validation frames, padded.
    base.num_train_steps = 300
    base.eval_every_steps = 100
    base.checkpoint_every_steps = 150
    base.batch_size = 4
    base.loss = {"cross_entropy": 1.0, "dice": 0.0, "focal": 0.0}
    experiment.base = base  # Training config every run starts from (configs/unet_camvid.py).
    # (name, overrides of base): the output stride, i.e. which pooling layers' scores are fused.
    experiment.arms = (
        ("fcn32s", {}),
        ("fcn16s", {"model": "fcn16s"}),
        ("fcn8s", {"model": "fcn8s"}),
    )
    experiment.seeds = (
        0,
        1,
        2,
    )  # Each arm once per seed: initialisation, data order, augmentation.
    experiment.metrics = (
        "mean_iou",
        "pixel_accuracy",
        "mean_accuracy",
    )  # From training's last eval.
    experiment.evaluate = False  # True: score the last checkpoint with jaxseg.evaluate instead.
    experiment.num_prediction_images = 3  # Validation frames in the prediction grid.
    return experiment
