"""FCN-32s on VGG16, PASCAL VOC 2012 segmentation (21 classes, 255 ignored), from ImageNet.

The FCN paper's recipe, with the loss averaged over pixels instead of summed: the VGG16 trunk
starts from ImageNet classification weights (fc6/fc7 convolutionalised; torchvision's weights, so
ImageNet mean/std input normalisation), SGD with momentum 0.9, weight decay 5e-4, a polynomial
learning-rate decay, random 320x320 crops and whole-image evaluation padded to 512x512. VOC data:
see its own terms (research use).

The weights come from the Hugging Face hub (downloaded once into its cache). Offline, either
fill that cache (``hf download timm/vgg16.tv_in1k model.safetensors`` where there is network) or
save torchvision's ``vgg16(weights='IMAGENET1K_V1').state_dict()`` with safetensors and pass its
path as ``--config.init_from``; ``--config.init_from=''`` trains from scratch.

    python -m jaxseg.train --config configs/fcn32s.py --workdir workdirs/fcn32s \
        --config.manual_dir=/path/to/VOCdevkit
"""

from configs import base


def get_config():
    config = base.get_config()
    config.model = "fcn32s"
    # The paper's VGG16 widths (smaller ones make a tiny FCN for tests), fc6/fc7 dropout.
    config.model_kwargs = {"base_features": 64, "fc_features": 4096, "dropout_rate": 0.5}
    config.init_from = "hf-hub:timm/vgg16.tv_in1k"  # torchvision's ImageNet VGG16 (timm names).
    config.normalization = "imagenet"  # What those weights were trained on.
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
