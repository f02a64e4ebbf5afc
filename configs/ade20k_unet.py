"""U-Net on an ImageNet ResNet-34 encoder on ADE20K (MIT Scene Parsing, 150 classes, stored label 0
"other" ignored), read from your copy of the official release ``ADEChallengeData2016`` (train:
20,210 images, validation: 2,000), every image resized to 256x256.

The encoder starts from torchvision's ImageNet ResNet-34 (``hf-hub:timm/resnet34.tv_in1k``, so
ImageNet mean/std input normalisation); the decoder and the head start fresh (offline, see
``configs/fcn32s.py`` for the two ways to provide the weights). Download and unzip
``ADEChallengeData2016.zip`` (about 1 GB, sceneparsing.csail.mit.edu); manual_dir is that folder
or the folder holding it. ADE20K: research use; see the dataset's terms (images keep their own
licences). Not TFDS's catalog ``scene_parse150``: see the ``ade20k`` spec in jaxseg/data/specs.py.

    python -m jaxseg.train --config configs/ade20k_unet.py --workdir workdirs/ade20k_unet \
        --config.manual_dir=/path/to/ADEChallengeData2016
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "encoder_unet"
    config.model_kwargs = {"encoder_name": "resnet34"}
    config.init_from = "hf-hub:timm/resnet34.tv_in1k"  # ImageNet encoder; decoder and head fresh.
    config.normalization = "imagenet"  # What the encoder's weights were trained on.
    config.lr_multipliers = (("encoder", 0.1),)  # The pretrained encoder moves slower.
    config.dataset = "ade20k"
    config.resize_to = (256, 256)  # Images vary in size (most about 512 on the short side).
    config.input_size = (256, 256)  # Multiples of 32 (the encoder's stride).
    config.eval_size = (256, 256)  # Whole (resized) validation images.
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_train_steps = 80_000  # About 63 epochs of the 20,210 training images.
    config.eval_every_steps = 4000
    config.checkpoint_every_steps = 4000
    config.log_every_steps = 100
    config.learning_rate = 1e-3
    config.schedule = "polynomial"  # Power 0.9, as in most ADE20K recipes.
    config.warmup_steps = 1000
    config.augment = {"flip_h_prob": 0.5, "scale_prob": 0.5, "scale_min": 0.75, "scale_max": 1.5,
                      "brightness_prob": 0.5, "brightness_max_delta": 0.1,
                      "contrast_prob": 0.5, "contrast_min": 0.8, "contrast_max": 1.2}  # fmt: skip
    return config
