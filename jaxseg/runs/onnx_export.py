"""Exporting a trained run as an ONNX model (``export_onnx``, ``export_run_onnx``), the library
behind ``python -m jaxseg.export --format onnx``.

The graph is the jax export's inference function (``jaxseg.runs.exporting``, whose module doc
says what it does), converted by ``jax2onnx``: one input ``images`` (``[batch, height, width,
channels]`` of the pixel type the run was trained on: uint8, uint16 or float32, scaled inside as
in training), two outputs ``probabilities`` (``float32 [batch, height, width, num_classes]``)
and ``classes`` (``int32 [batch, height, width]``), the trained variables as initializers.
``onnxruntime`` (or any runtime of the opset) runs it; jax is not needed there. The batch
dimension is always symbolic. Height and width are

* fixed (``height``/``width`` given): any size, mirror-extended inside as in the jax export;
  the only choice for a valid-padding U-Net;
* symbolic (not given): multiples of the model's size factor *and* of its pooling alignment
  (a 'SAME' U-Net of depth d: ``2**d``; FCN: 32, where the jax export takes any size). jax2onnx
  lowers paddings only when they are constants, and an FCN's ceil-mode pooling pads by
  ``height mod 2`` at each level; on multiples of 32 every padding is a constant. jax2onnx also
  cannot take an input dimension written ``4*h``, so the function is converted on
  ``[batch, h, 4, w, 4, channels]`` blocks and a ``Reshape`` from ``images`` is put in front:
  a size that is not a multiple fails there, in the runtime ("cannot be reshaped"). A run
  trained with ``resize_to`` needs a fixed size (jax2onnx 0.17 cannot convert its resize on
  symbolic sizes: the error says so).

Measured (jax2onnx 0.17.1, onnxruntime 1.32, opset 23, 2 CPU cores): the paper-sized 'SAME'
U-Net (31M parameters) converts in about 10 s to a 124 MB file, FCN-8s (134M) in about 14 s to
537 MB; onnxruntime's probabilities equal the jax function's to 3e-7.

The same JSON sidecar as the jax export goes beside the file as ``<file>.onnx.json`` (so a jax
export of the same name keeps its own), with ``"format": "onnx"``, the opset and the converter's
version instead of the jax platforms. Models with parameters over 1 GiB
keep them in ``<output>.data`` beside the file (ONNX's external data; protobuf stops at 2 GiB);
smaller ones are one file. ``jax2onnx`` and ``onnx`` are optional (``pip install
'jaxseg[onnx]'``): imported only here, only when asked for.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxseg.errors import UserError
from jaxseg.runs import exporting
from jaxseg.runs.loading import Trained, load_trained
from jaxseg.serving import sidecar_path

FORMAT = "onnx"
INPUT, OUTPUTS = "images", ("probabilities", "classes")
INSTALL = "pip install 'jaxseg[onnx]'"
EXTERNAL_DATA_BYTES = 2**30  # Protobuf stops at 2 GiB: larger models keep weights beside.


def _import_onnx():
    """``(jax2onnx, onnx)``, or a one-line ``UserError`` naming the install command."""
    try:
        import jax2onnx
        import onnx
    except ImportError as e:
        raise UserError(f"ONNX export needs jax2onnx and onnx ({e}); {INSTALL}") from e
    return jax2onnx, onnx


def onnx_multiple(trained: Trained) -> int:
    """What a symbolic height and width must be multiples of in an ONNX export (see above)."""
    geometry = trained.model.geometry()
    return exporting.symbolic_multiple(
        trained, math.lcm(geometry.size_multiple, geometry.alignment)
    )


def _fresh_gather_folding() -> None:
    """Lets jax2onnx's gather plugin fold constant indices in every conversion, not only the
    process's first: jax2onnx 0.17 registers its constant folders on the first conversion's
    context behind a module-level flag, so a later conversion (a second export in one process)
    lowers constant indices as dynamic ones and fails on symbolic sizes."""
    try:
        from jax2onnx.plugins.jax.lax import gather
    except ImportError:  # Another layout: another version, without this flag.
        return
    if hasattr(gather, "_CONST_HANDLERS_REGISTERED"):
        gather._CONST_HANDLERS_REGISTERED = False


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences onnx_ir's per-value 'type is not known' warnings while converting."""
    logger = logging.getLogger("onnx_ir")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(
    trained: Trained,
    *,
    height: int | None = None,
    width: int | None = None,
    opset: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Converts a trained model's inference function to ONNX (see the module doc).

    Args:
      trained: from ``jaxseg.runs.load_trained``.
      height, width: a fixed input size (both or neither); neither: symbolic multiples of
        ``onnx_multiple(trained)``.
      opset: the ONNX opset (``None``: jax2onnx's default, 23 in jax2onnx 0.17; 17 works too;
        13 does not: jax2onnx's shape arithmetic needs ``Shape`` with ``start``, opset 15).

    Returns:
      ``(model, metadata)``: the ``onnx.ModelProto`` and the sidecar's contents.

    Raises:
      UserError: jax2onnx or onnx is not installed.
      ValueError: one of height/width without the other, a non-positive size, symbolic sizes
        for a model that needs fixed ones, or a model jax2onnx cannot convert symbolically.
    """
    jax2onnx, onnx = _import_onnx()
    exporting.check_size(height, width)
    channels, multiple = trained.spec.num_channels, None
    serve = exporting._serving_function(trained, height, width)
    if height is None:
        multiple = onnx_multiple(trained)
        shape = f"b, h, {multiple}, w, {multiple}, {channels}"
    else:
        shape = f"b, {height}, 1, {width}, 1, {channels}"

    def blocks(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``serve`` on ``[b, h, m, w, m, c]`` blocks of ``[b, h*m, w*m, c]`` images."""
        b, h, m, w, _, c = x.shape
        out = serve(x.reshape(b, h * m, w * m, c))
        return out["probabilities"], out["classes"]

    dtype = np.dtype(trained.input_dtype)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(shape), dtype)
    kwargs = {} if opset is None else {"opset": opset}
    try:
        _fresh_gather_folding()
        with _quiet():
            model = jax2onnx.to_onnx(
                blocks, [spec], model_name="jaxseg", input_names=["blocks"],
                output_names=list(OUTPUTS), **kwargs,
            )  # fmt: skip
    except Exception as e:  # A symbolic size that reaches code needing a concrete one.
        if height is not None:
            raise
        raise ValueError(
            f"jax2onnx cannot convert model {trained.config.model!r} with a symbolic height and "
            f"width ({type(e).__name__}: {str(e)[:300]}); give a fixed height and width"
        ) from e
    element = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    _images_input(onnx, model, multiple or 1, channels, height, width, element)
    metadata = exporting.describe(trained, height, width, multiple)
    metadata.update(
        format=FORMAT,
        opset=max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        jax2onnx_version=importlib.metadata.version("jax2onnx"),
        onnx_version=onnx.__version__,
    )
    return model, metadata


def _images_input(onnx, model, multiple: int, channels: int, height, width, element) -> None:
    """Replaces the graph's ``blocks`` input with ``images`` (of ONNX element type ``element``)
    and a ``Reshape`` to blocks: ``[b, H, W, c] -> [b, H/m, m, W/m, m, c]``; names the symbolic
    dimensions."""
    helper, graph = onnx.helper, model.graph
    scaled = "" if multiple == 1 else f"{multiple}*"
    names = {"b": "batch", f"{scaled}h": "height", f"{scaled}w": "width"}
    height, width = height or "height", width or "width"
    int64 = onnx.TensorProto.INT64
    graph.initializer.extend([
        helper.make_tensor("images_block", int64, [1], [multiple]),
        helper.make_tensor("images_width_axis", int64, [1], [2]),
        helper.make_tensor("images_head", int64, [3], [0, -1, multiple]),
        helper.make_tensor("images_tail", int64, [2], [multiple, channels]),
    ])  # fmt: skip
    front = [
        helper.make_node("Shape", [INPUT], ["images_shape"]),
        helper.make_node("Gather", ["images_shape", "images_width_axis"], ["images_width"]),
        helper.make_node("Div", ["images_width", "images_block"], ["images_columns"]),
        helper.make_node(
            "Concat", ["images_head", "images_columns", "images_tail"], ["images_blocks"], axis=0
        ),
        helper.make_node("Reshape", [INPUT, "images_blocks"], ["blocks"]),
    ]
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info(INPUT, element, ["batch", height, width, channels])
    )
    for output in graph.output:
        for dim in output.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = names.get(dim.dim_param, dim.dim_param)


def save_onnx(path: str, model, metadata: dict[str, Any]) -> str:
    """Writes the model to ``path`` (checked by ``onnx.checker``) and the metadata beside it;
    returns the sidecar's path."""
    _, onnx = _import_onnx()
    sidecar_path(path)  # Refuses a .json path before anything is written.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    external = weights >= EXTERNAL_DATA_BYTES
    onnx.save_model(
        model, path, save_as_external_data=external, location=os.path.basename(path) + ".data"
    )
    onnx.checker.check_model(path)
    return exporting.write_sidecar(path, metadata)


def export_run_onnx(
    workdir: str,
    output: str,
    *,
    best: bool = True,
    height: int | None = None,
    width: int | None = None,
    opset: int | None = None,
) -> dict[str, Any]:
    """Loads a run's best (or latest) checkpoint, exports it to ONNX at ``output``; returns the
    metadata."""
    sidecar_path(output)  # Refuse a .json output before the work.
    _import_onnx()  # Before loading the run.
    model, metadata = export_onnx(
        load_trained(workdir, best=best), height=height, width=width, opset=opset
    )
    save_onnx(output, model, metadata)
    return metadata
