"""A config checked and resolved into what training needs: dataset, model, sizes, augmentation."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxseg import augment, data, models, parallel, summary
from jaxseg.data import pixels
from jaxseg.models.normalization import channel_statistics

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "polynomial")  # Each after a linear warm-up of warmup_steps.


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a config resolves to for training on a mesh of devices."""

    spec: data.DatasetSpec
    model: nn.Module
    input_size: tuple[int, int]  # Training crop fed to the model.
    eval_input_size: tuple[int, int]  # Evaluation input (eval_size plus the valid-padding margin).
    margin: int  # Mirror-extension so that labels line up with a valid-padding model's output.
    augment: augment.AugmentParams
    train_split: str
    eval_split: str
    host_batch_size: int  # This process's share of config.batch_size.
    host_eval_batch_size: int  # This process's share of config.eval_batch_size.


def _positive(config, *names):
    for name in names:
        value = config[name]
        values = value if isinstance(value, (tuple, list)) else (value,)
        if not values or any(not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"config.{name} must be a positive integer (or pair); got {value!r}")


def dataset_spec(config: ml_collections.ConfigDict) -> data.DatasetSpec:
    """The spec of the dataset a config names (``folder:`` datasets take the class names and
    ignore label from the config)."""
    folder = {"class_names": tuple(config.class_names), "ignore_label": config.ignore_label,
              "num_channels": config.get("num_channels", 3)}  # fmt: skip
    return data.get_spec(config.dataset, **(folder if config.dataset.startswith("folder:") else {}))


def resolve_model(config: ml_collections.ConfigDict) -> tuple[data.DatasetSpec, nn.Module]:
    """The dataset spec and the model a config names, its input normalisation included (all a
    trained run needs to be used).

    Raises:
      ValueError: an unknown dataset, model, model field, dtype or normalisation.
    """
    if config.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {config.dtype!r}; choose one of {tuple(DTYPES)}")
    spec = dataset_spec(config)
    if config.model_kwargs.get("aux_classifier"):
        raise ValueError(
            "model_kwargs.aux_classifier=True returns two outputs, which training, evaluation "
            "and prediction do not take; leave it off (a checkpoint's aux_classifier tensors "
            "are then not used)"
        )
    model = models.create(
        config.model, spec.num_classes, dtype=DTYPES[config.dtype], **config.model_kwargs.to_dict()
    )
    # Runs written before normalisation was a config field saw [0, 1] inputs.
    name, stats = config.get("normalization", "unit"), config.get("normalization_stats", ())
    if name == "statistics" and not stats:
        raise ValueError(
            "config.normalization='statistics' needs config.normalization_stats (means, stds); "
            "training computes them from the training split"
        )
    return spec, models.normalized(model, name, spec.num_channels, stats)


def complete_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` with what training derives from the data filled in (a copy; ``config`` itself
    is returned when nothing is missing): ``input_dtype``, the pixel type of the training images
    (folder datasets keep their files' type: one example is read; the other datasets decode to
    uint8), and for ``normalization='statistics'`` without ``normalization_stats`` the training
    split's per-channel statistics. The run's ``config.json`` records the result, so prediction
    and export scale and normalise as training did.

    Raises:
      ValueError: a ``config.input_dtype`` that is not the training images' type.
    """
    stats = config.get("normalization") == "statistics" and not config.normalization_stats
    folder = config.dataset.startswith("folder:")  # Stored as they are (dataset_spec).
    given = config.get("input_dtype") or ""
    if not stats and given and not folder:
        if given != "uint8":
            raise ValueError(f"config.input_dtype is {given!r}, but {config.dataset} is uint8")
        return config
    completed = ml_collections.ConfigDict(config.to_dict())
    completed.input_dtype = "uint8"
    if not (stats or folder):
        return completed
    spec = dataset_spec(config)
    builder = data.get_builder(spec, data_dir=config.data_dir, manual_dir=config.manual_dir)
    source = data.DecodedSource(
        builder.as_data_source(config.train_split or spec.train_split),
        spec,
        tuple(config.resize_to) or None,
    )
    if folder and len(source):
        completed.input_dtype = source[0]["image"].dtype.name  # One type per dataset.
    if given and given != completed.input_dtype:
        raise ValueError(
            f"config.input_dtype is {given!r}, but the training images of {spec.name} are "
            f"{completed.input_dtype} (leave it '': training fills it in)"
        )
    if stats:
        images = (pixels.to_unit(source[i]["image"]) for i in range(len(source)))
        mean, std = channel_statistics(images)
        completed.normalization_stats = (tuple(mean), tuple(std))
        print(f"normalization statistics of {spec.name}: mean {mean}, std {std}")
    return completed


def resolve(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Setup:
    """Checks a config for training on ``mesh`` (default: every device) and resolves it.

    Raises:
      ValueError: naming the first bad value (every config field is checked here, before a
        workdir is touched).
    """
    _positive(config, "batch_size", "eval_batch_size", "num_train_steps", "eval_every_steps")
    _positive(config, "checkpoint_every_steps", "log_every_steps", "input_size", "eval_size")
    _positive(config, "grad_accum_steps")
    if config.warmup_steps < 0:
        raise ValueError(f"config.warmup_steps must be >= 0; got {config.warmup_steps}")
    if len(config.resize_to) not in (0, 2):
        raise ValueError(f"config.resize_to must be () or (height, width); got {config.resize_to}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {OPTIMIZERS}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; choose one of {SCHEDULES}")
    if not config.learning_rate > 0:
        raise ValueError(f"config.learning_rate must be > 0; got {config.learning_rate}")
    if config.batch_size % config.grad_accum_steps:
        raise ValueError("config.batch_size must divide by config.grad_accum_steps")
    summary.check_loggers(config.get("loggers", summary.DEFAULT_LOGGERS))
    spec, model = resolve_model(config)
    if config.class_weights and len(config.class_weights) != spec.num_classes:
        raise ValueError(f"config.class_weights needs {spec.num_classes} values (one per class)")
    geometry = model.geometry()
    input_size = tuple(config.input_size)
    geometry.check_input(input_size)
    eval_input = tuple(config.eval_size)
    if geometry.valid_padding:  # Evaluation images are whole: the input covers them.
        eval_input = tuple(geometry.input_size_for_output(s) for s in eval_input)
    geometry.check_input(eval_input)
    aug = augment.AugmentParams.from_dict(config.augment.to_dict())
    photometric = [f"{op}_prob" for op in ("brightness", "contrast", "gamma", "noise")]
    if config.get("input_dtype") == "float32" and any(getattr(aug, p) for p in photometric):
        raise ValueError(
            "config.augment's brightness/contrast/gamma/noise work on [0, 1] pixels and clip to "
            "it; this dataset's float images are fed as stored: set their probabilities to 0"
        )
    mesh = mesh if mesh is not None else parallel.data_mesh()
    return Setup(
        spec=spec,
        model=model,
        input_size=input_size,
        eval_input_size=eval_input,
        margin=geometry.margin,
        augment=aug,
        train_split=config.train_split or spec.train_split,
        eval_split=config.eval_split or spec.eval_split,
        host_batch_size=parallel.check_batch_size(config.batch_size, mesh, "batch_size"),
        host_eval_batch_size=parallel.check_batch_size(
            config.eval_batch_size, mesh, "eval_batch_size"
        ),
    )
