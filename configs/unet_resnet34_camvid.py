"""U-Net on an ImageNet ResNet-34 encoder (segmentation_models_pytorch's ``Unet('resnet34')``) on
CamVid at half resolution (11 classes, void ignored): the baseline most researchers try first.

The encoder starts from torchvision's ImageNet ResNet-34 (``hf-hub:timm/resnet34.tv_in1k``, so
ImageNet mean/std input normalisation); the decoder and the head start fresh. Offline, see
``configs/fcn32s.py`` for the two ways to provide the weights. CamVid (SegNet preparation):
research and non-commercial use only (see the data's README).

    python -m jaxseg.train --config configs/unet_resnet34_camvid.py \
        --workdir workdirs/unet_resnet34_camvid --config.manual_dir=../shared/data/camvid
"""

from configs import unet_camvid


def get_config():
    config = unet_camvid.get_config()
    config.model = "encoder_unet"
    config.model_kwargs = {"encoder_name": "resnet34"}
    config.init_from = "hf-hub:timm/resnet34.tv_in1k"  # ImageNet encoder; decoder and head fresh.
    config.normalization = "imagenet"  # What the encoder's weights were trained on.
    config.input_size = (160, 224)  # Random crops of the 180x240 frames, multiples of 32.
    config.eval_size = (192, 256)  # Whole (resized) frames, padded to multiples of 32.
    config.lr_multipliers = (("encoder", 0.1),)  # The pretrained encoder moves slower.
    return config
