"""Defaults every config starts from; the other files in configs/ override a few fields.

python -m jaxseg.train --config configs/base.py --workdir /tmp/jaxseg_base
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Model: a name from jaxseg.models.MODELS and the fields to override on it.
    config.model = "unet"
    config.model_kwargs = ml_collections.ConfigDict(
        {"padding": "SAME", "base_features": 16, "depth": 3}
    )
    config.dtype = "float32"  # Compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
    # Input normalisation (jaxseg.models.normalization): 'unit' ([0, 1]), 'imagenet', 'caffe'
    # (BGR, mean subtracted on 0-255) or 'statistics' (normalization_stats, or the train split's).
    config.normalization = "unit"
    config.normalization_stats = ()  # ((mean, ...), (std, ...)) per channel, as the model sees
    # pixels before normalising: uint8 / 255, uint16 / 65535, float as stored.

    # Data: a name from jaxseg.data.SPECS, or 'folder:NAME' for your own images/ + masks/.
    config.dataset = "synthetic_shapes"
    # TFDS data folder (None: TFDS's default, ~/tensorflow_datasets).
    config.data_dir = placeholder(str)
    config.manual_dir = placeholder(str)  # Your copy of the raw data, for datasets that need one.
    config.class_names = ()  # Folder datasets only: one name per class.
    config.ignore_label = placeholder(int)  # Folder datasets only: stored label value to ignore.
    config.num_channels = 3  # Folder datasets only: image channels, checked against every file.
    # Pixel type the model is trained on ('uint8', 'uint16' or 'float32'): leave '', training
    # records the data's (folder datasets: as stored; the others uint8); export takes it as input.
    config.input_dtype = ""
    config.train_split = ""  # '' = the dataset's default training split.
    config.eval_split = ""  # '' = the dataset's default evaluation split.
    config.input_size = (64, 64)  # (height, width) of training crops fed to the model.
    config.eval_size = (96, 96)  # (height, width) evaluation images are padded to (whole images).
    config.resize_to = ()  # (height, width) to resize every example to first; () = keep.
    config.data_workers = 0  # grain worker processes (0 = read in the training process).

    # Training length and cadence, all in steps.
    config.batch_size = 16  # Global batch, split over all devices and hosts.
    config.eval_batch_size = 32  # Global evaluation batch.
    config.num_train_steps = 1200
    config.eval_every_steps = 400
    config.checkpoint_every_steps = 400
    config.log_every_steps = 50
    config.seed = 0

    # Start: '' (random), pretrained weights (a .safetensors/.npz/.pth file or 'hf-hub:ORG/NAME',
    # read by jaxseg.models.pretrained), or another run's workdir (fine-tuning: matched by name).
    config.init_from = ""
    config.init_exclude = ()  # Glob patterns of parameters to keep fresh, e.g. ('score_*',).
    config.frozen = ()  # Glob patterns of parameters not trained (their batch-norm stats too).
    config.lr_multipliers = ()  # ((pattern, factor), ...), e.g. (('encoder', 0.1),).

    # Optimizer and schedule.
    config.optimizer = "adamw"  # 'sgd', 'adam' or 'adamw'.
    config.learning_rate = 3e-3  # Peak learning rate.
    config.momentum = 0.9  # SGD momentum.
    config.nesterov = False  # SGD only.
    config.weight_decay = 1e-4  # AdamW: decoupled decay; SGD and Adam: L2 on the gradient.
    config.schedule = "cosine"  # 'constant', 'cosine' or 'polynomial' decay after the warm-up.
    config.warmup_steps = 50  # Linear warm-up from 0 before any schedule (0 = none).
    config.polynomial_power = 0.9  # 'polynomial' schedule exponent.
    config.grad_clip_norm = 1.0  # Clip the global gradient norm; 0 = off.
    config.grad_accum_steps = 1  # Micro-batches per update; batch_size must divide by it.

    # Loss: weights of the named losses, and the U-Net paper's border weight map.
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0, "dice": 0.0, "focal": 0.0})
    config.class_weights = ()  # One weight per class for cross-entropy; () = equal.
    config.border_weights = ml_collections.ConfigDict(
        {"enabled": False, "w0": 10.0, "sigma": 5.0, "foreground": 1}
    )

    # On-device augmentation: fields of jaxseg.augment.AugmentParams (unset ones stay off).
    config.augment = ml_collections.ConfigDict({"flip_h_prob": 0.5, "flip_v_prob": 0.5})

    # Logging: images written to TensorBoard at each evaluation.
    config.num_log_images = 4
    config.loggers = ("tensorboard",)  # Add 'wandb' for W&B (pip install 'jaxseg[wandb]').
    return config
