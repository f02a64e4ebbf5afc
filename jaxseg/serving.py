"""Running a model exported by ``jaxseg.export``, with jax and numpy only.

This module imports neither Flax nor jaxseg's training code (``import jaxseg`` loads its
submodules lazily), so a serving process needs only ``jax`` (with ``flatbuffers``) and
``numpy``::

    from jaxseg.serving import load_exported

    model = load_exported("exports/unet.jax")    # reads exports/unet.json beside it
    out = model(images)                            # [batch, height, width, channels]
    out["classes"]                                 # int32 [batch, height, width]
    out["probabilities"]                           # float32 [batch, height, width, classes]
    model.metadata["class_names"]
    model.metadata["input"]["dtype"]               # 'uint8', 'uint16' or 'float32'

The artifact is the serialized ``jax.export.Exported`` of the whole inference function, the
trained variables baked in as constants; the JSON sidecar says what it expects and returns.
Images have the pixel type the run was trained on (the sidecar's ``input.dtype``: uint8 0-255,
uint16 0-65535, or float32 as training saw it) and are scaled inside as in training.
For a run trained on resized images the function resizes inside (the sidecar's ``resize_to``):
give it images at their own size, as to ``jaxseg.predict``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from jaxseg import xla_options


def sidecar_path(path: str) -> str:
    """The JSON sidecar of an exported model file: the same path with suffix ``.json``
    (``model.jax`` -> ``model.json``), or ``.json`` added to an ONNX file (``model.onnx.json``),
    so that both exports of a run can sit side by side."""
    root, ext = os.path.splitext(path)
    if ext == ".json":
        raise ValueError(f"an exported model file cannot end in .json: {path!r}")
    return path + ".json" if ext == ".onnx" else root + ".json"


class ExportedModel:
    """A deserialized export: call it on ``[batch, height, width, channels]`` images of its
    ``input_dtype``.

    Attributes:
      exported: the ``jax.export.Exported``.
      metadata: the sidecar's contents (class names, input geometry, run, ...); empty if the
        sidecar is missing, in which case inputs are checked by jax alone.
    """

    def __init__(self, exported: jax.export.Exported, metadata: dict[str, Any]):
        self.exported = exported
        self.metadata = metadata
        # Compiled once per input shape (on CPU with XLA's own convolutions: 2x faster).
        self._call = jax.jit(exported.call, compiler_options=xla_options.compiler_options())

    @property
    def class_names(self) -> list[str] | None:
        return self.metadata.get("class_names")

    @property
    def input_dtype(self) -> np.dtype:
        """The pixel type it takes: the sidecar's ``input.dtype`` (without a sidecar, the
        exported function's)."""
        dtype = self.metadata.get("input", {}).get("dtype")
        return np.dtype(dtype or self.exported.in_avals[0].dtype)

    def check(self, images: np.ndarray) -> None:
        """Raises ``ValueError`` when ``images`` do not fit the exported function."""
        want, dtype = self.metadata.get("input", {}), self.input_dtype
        if images.dtype != dtype:
            low_high = want.get("value_range") or ()
            shown = f"{dtype.name} ({low_high[0]}-{low_high[1]})" if low_high else dtype.name
            raise ValueError(
                f"images must be {shown}, the pixel type the model was trained on; got "
                f"{images.dtype} (convert or rescale them first)"
            )
        if images.ndim != 4:
            raise ValueError(f"images must be [batch, height, width, channels]; got {images.shape}")
        _, height, width, channels = images.shape
        if want.get("channels") not in (None, channels):
            raise ValueError(f"the model takes {want['channels']} channel(s); got {channels}")
        for axis, size in (("height", height), ("width", width)):
            fixed, multiple = want.get(axis), want.get("size_multiple") or 1
            if fixed is not None and size != fixed:
                raise ValueError(f"this export takes {axis} {fixed} only; got {size}")
            if fixed is None and (size < 1 or size % multiple):
                raise ValueError(
                    f"this export takes {axis} a positive multiple of {multiple}; got {size}"
                )

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``{'probabilities': float32 [B, H, W, K], 'classes': int32 [B, H, W]}``."""
        images = np.asarray(images)
        self.check(images)
        return {name: np.asarray(value) for name, value in self._call(images).items()}


def load_exported(path: str) -> ExportedModel:
    """Deserializes an exported model file (and its JSON sidecar, if present).

    Raises:
      FileNotFoundError: no such file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no exported model {path!r}")
    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    metadata = {}
    if os.path.isfile(sidecar_path(path)):
        with open(sidecar_path(path)) as f:
            metadata = json.load(f)
    return ExportedModel(exported, metadata)
