"""Exporting a trained run as one serialized ``jax.export`` function (``export_run``), the
library behind ``python -m jaxseg.export``.

The exported function is the whole inference path: ``[batch, height, width, channels]`` images
of the pixel type the run was trained on (``Trained.input_dtype``: uint8, uint16 or float32) ->
float32 scaled as in training (``jaxseg.data.pixels.scale_of``: uint8 / 255, uint16 / 65535,
float as it is) -> the model -> ``{'probabilities': float32 [batch, height, width,
num_classes], 'classes': int32 [batch, height, width]}``, outputs the size of the input. The
trained variables are baked in as constants, so the file is self-contained (about the size of
the parameters) and ``jaxseg.serving.load_exported`` runs it with jax and numpy only. The batch
dimension is always symbolic.

A run trained on resized images (``config.resize_to``) is served as ``jaxseg.predict`` serves
it: the images are resized to ``resize_to`` inside the function as training's
``pixels.resize`` does (bilinear, antialiased: 8-bit gray or RGB in uint8 as Pillow does it,
``jaxseg.resize.resize_uint8``; other images in float32, integers rounded back), the model sees
that size (mirror-extended to a size it takes, as below) and the probabilities are resized back
to the input's size (bilinear); the classes are their argmax. Height and width are then any
sizes, symbolic unless given. Without ``resize_to``, height and width are

* fixed (``height``/``width`` given): any size; the image is mirror-extended inside the function
  to a size the model takes (a valid-padding U-Net's margin on every side plus the rest at the
  bottom/right; a 'SAME' model's next multiple of its size factor) and the output cropped back
  (for a valid-padding U-Net: the prediction overlap-tile inference stitches, to round-off);
* symbolic (not given): for models whose output has the input's size ('SAME' U-Nets, simple
  models, FCN), any multiple of the model's size factor (``2**depth`` for a U-Net). A
  valid-padding U-Net needs a fixed size.

Next to the file goes a JSON sidecar (``sidecar_path``): class names, input dtype and value
range (null for float), channels and size, ``resize_to`` (null when the model sees the input's
own size), the dataset's ignore label (a stored label value; predictions never take it), the
run and checkpoint step. Exports target the current jax backend unless ``platforms`` names
others (``('cpu', 'cuda')`` lowers for both; no device of that kind is needed to export). A
TensorFlow SavedModel is not written: TensorFlow is not a dependency (``jax2tf`` could wrap the
same function where it is installed).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import resize, tiling
from jaxseg.data import pixels
from jaxseg.models import normalization
from jaxseg.runs.loading import Trained, load_trained
from jaxseg.serving import sidecar_path

FORMAT = "jaxseg.export"
VERSION = 1
PLATFORMS = {"cpu", "cuda", "rocm", "tpu"}  # What jax.export lowers for.


def _padded_size(model, size: int) -> tuple[int, int]:
    """``(model input size, margin)`` covering an image axis of ``size`` pixels."""
    geometry = model.geometry()
    return geometry.input_size_for_output(size), geometry.margin


def _resized(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``[B, H, W, C]`` resized to ``size`` in their own type, as ``pixels.resize`` in training:
    8-bit gray or RGB with Pillow's uint8 arithmetic, the others in float32 (``resize_scores``:
    the same filter), uint8 and uint16 rounded back."""
    if images.dtype == jnp.uint8 and images.shape[-1] in (1, 3):
        return resize.resize_uint8(images, size)
    out = resize.resize_scores(images.astype(jnp.float32), size, jnp)
    if images.dtype == jnp.float32:
        return out
    info = jnp.iinfo(images.dtype)
    return jnp.clip(jnp.round(out), info.min, info.max).astype(images.dtype)


def _serving_function(trained: Trained, height: int | None, width: int | None):
    """``[B, H, W, C]`` images of ``trained.input_dtype`` -> ``{'probabilities', 'classes'}``,
    with the variables closed over."""
    model, variables = trained.model, trained.variables
    scale = pixels.scale_of(trained.input_dtype)
    resize_to = tuple(trained.config.resize_to) or None
    size = resize_to or (None if height is None else (height, width))  # What the model sees.
    gather = None
    if size is not None:
        (ph, margin), (pw, _) = _padded_size(model, size[0]), _padded_size(model, size[1])
        rows = tiling.mirror(np.arange(ph) - margin, size[0])
        cols = tiling.mirror(np.arange(pw) - margin, size[1])
        if (ph, pw) != size:
            gather = (rows.astype(np.int32), cols.astype(np.int32))

    def serve(images: jax.Array) -> dict[str, jax.Array]:
        x = images if resize_to is None else _resized(images, resize_to)
        x = x.astype(jnp.float32) / jnp.float32(scale)  # As pixels.to_unit.
        if gather is not None:  # Mirror-extend with constant indices, as inference does.
            x = jnp.take(jnp.take(x, gather[0], axis=1), gather[1], axis=2)
        logits = model.apply(variables, x, train=False).astype(jnp.float32)
        if size is not None:
            logits = logits[:, : size[0], : size[1]]
        probabilities = jax.nn.softmax(logits, axis=-1)
        if resize_to is not None:  # Scores back to the input's size, as jaxseg.predict.
            probabilities = resize.resize_scores(probabilities, images.shape[1:3], jnp)
        return {
            "probabilities": probabilities,
            "classes": jnp.argmax(probabilities, axis=-1).astype(jnp.int32),
        }

    return serve


def export_model(
    trained: Trained,
    *,
    height: int | None = None,
    width: int | None = None,
    platforms: Sequence[str] | None = None,
) -> tuple[jax.export.Exported, dict[str, Any]]:
    """Exports a trained model's inference function (see the module doc).

    Args:
      trained: from ``jaxseg.runs.load_trained``.
      height, width: a fixed input size (both or neither); neither: symbolic, for models whose
        output has the input's size, and for any model of a run trained with ``resize_to``.
      platforms: jax platforms to lower for (``'cpu'``, ``'cuda'``, ``'rocm'``, ``'tpu'``);
        ``None``: the current backend.

    Returns:
      ``(exported, metadata)``: the ``jax.export.Exported`` and the sidecar's contents.

    Raises:
      ValueError: one of height/width without the other, a non-positive size, or symbolic
        sizes for a model that needs a fixed one.
    """
    unknown = sorted(set(platforms or ()) - PLATFORMS)
    if unknown:
        raise ValueError(f"unknown platform(s) {unknown}; choose from {sorted(PLATFORMS)}")
    check_size(height, width)
    channels, multiple = trained.spec.num_channels, None
    if height is None:
        geometry = trained.model.geometry()  # FCN: ceil-mode pooling is static at 32s.
        multiple = symbolic_multiple(trained, math.lcm(geometry.size_multiple, geometry.alignment))
        hw = "h, w" if multiple == 1 else f"{multiple}*h, {multiple}*w"
        shape = jax.export.symbolic_shape(f"b, {hw}, {channels}")
    else:
        (batch,) = jax.export.symbolic_shape("b")
        shape = (batch, height, width, channels)
    function = jax.jit(_serving_function(trained, height, width))
    try:
        exported = jax.export.export(function, platforms=platforms)(
            jax.ShapeDtypeStruct(shape, np.dtype(trained.input_dtype))
        )
    except Exception as e:  # Symbolic shapes reach model code that needs concrete sizes.
        if height is not None:
            raise
        raise ValueError(
            f"model {trained.config.model!r} cannot be exported with a symbolic height and "
            f"width ({type(e).__name__}: {str(e)[:120]}...); give a fixed height and width"
        ) from e
    metadata = describe(trained, height, width, multiple)
    metadata["platforms"] = list(exported.platforms)
    return exported, metadata


def symbolic_multiple(trained: Trained, multiple: int) -> int:
    """What a symbolic height and width are multiples of: ``multiple``, or 1 for a run trained
    with ``resize_to`` (any input size: the model sees ``resize_to``).

    Raises:
      ValueError: a valid-padding U-Net without ``resize_to`` (fixed sizes only).
    """
    if tuple(trained.config.resize_to):
        return 1
    if trained.model.geometry().valid_padding:
        raise ValueError(
            "a valid-padding U-Net's output is smaller than its input: export it for a fixed "
            "size (height and width), which is mirror-extended inside the function"
        )
    return multiple


def check_size(height: int | None, width: int | None) -> None:
    """Raises ``ValueError`` unless both sizes are given (and positive) or neither."""
    if (height is None) != (width is None):
        raise ValueError("give both height and width, or neither (symbolic size)")
    if height is not None and (height < 1 or width < 1):
        raise ValueError(f"height and width must be positive; got {height}, {width}")


def describe(
    trained: Trained, height: int | None, width: int | None, multiple: int | None
) -> dict[str, Any]:
    """The sidecar's contents for an export of ``trained`` (``multiple``: of a symbolic size)."""
    spec, config = trained.spec, trained.config
    channels = spec.num_channels
    resize_to = tuple(config.resize_to) or None
    dtype = trained.input_dtype
    return {
        "format": FORMAT,
        "version": VERSION,
        "input": {
            "dtype": dtype,  # What the run was trained on (Trained.input_dtype).
            "layout": "NHWC",
            "channels": channels,
            "height": height,
            "width": width,
            "size_multiple": None if height is not None else multiple,
            # The type's range, divided by its top inside; float (null): taken as it is.
            "value_range": None if dtype == "float32" else [0, int(pixels.scale_of(dtype))],
        },
        "resize_to": None if resize_to is None else list(resize_to),
        "normalization": normalization.describe(
            config.get("normalization", "unit"), channels, config.get("normalization_stats", ())
        ),  # Applied inside the function (the model's first step), after the scaling.
        "outputs": {
            "probabilities": "float32 [batch, height, width, num_classes]: softmax",
            "classes": "int32 [batch, height, width]: argmax class ids",
        },
        "class_names": list(spec.class_names),
        "num_classes": spec.num_classes,
        "ignore_label": spec.ignore_label,
        "dataset": spec.name,
        "model": config.model,
        "model_kwargs": config.model_kwargs.to_dict(),
        "workdir": trained.workdir,
        "step": trained.step,
        "checkpoint": trained.checkpoint,
        "jax_version": jax.__version__,
    }


def save_exported(path: str, exported: jax.export.Exported, metadata: dict[str, Any]) -> str:
    """Writes the serialized export to ``path`` and the metadata beside it; returns the sidecar."""
    sidecar_path(path)  # Refuses a .json path before anything is written.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(exported.serialize())
    return write_sidecar(path, metadata)


def write_sidecar(path: str, metadata: dict[str, Any]) -> str:
    """Writes ``metadata`` (and the model file's name) as the JSON sidecar of ``path``."""
    sidecar = sidecar_path(path)
    with open(sidecar, "w") as f:
        json.dump({**metadata, "file": os.path.basename(path)}, f, indent=2)
        f.write("\n")
    return sidecar


def export_run(
    workdir: str,
    output: str,
    *,
    best: bool = True,
    height: int | None = None,
    width: int | None = None,
    platforms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Loads a run's best (or latest) checkpoint, exports it to ``output``; returns the metadata."""
    sidecar_path(output)  # Refuse a .json output before the work.
    exported, metadata = export_model(
        load_trained(workdir, best=best), height=height, width=width, platforms=platforms
    )
    save_exported(output, exported, metadata)
    return metadata
