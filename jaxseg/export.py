"""Command line: export a trained run as one serialized ``jax.export`` function
(``jaxseg.runs.export_run`` does the work; its module doc says what the function does), or as
an ONNX model (``--format onnx``: ``jaxseg.runs.export_run_onnx``, through ``jax2onnx``).

    python -m jaxseg.export --workdir workdirs/unet --output exports/unet.jax
    python -m jaxseg.export --workdir workdirs/unet_isbi --output exports/isbi.jax \\
        --height 512 --width 512
    python -m jaxseg.export --format onnx --workdir workdirs/unet --output exports/unet.onnx

Next to the file goes a JSON sidecar (class names, input dtype, channels and size,
``resize_to``, the run and checkpoint step); ``jaxseg.serving.load_exported`` runs a jax export
with jax and numpy only, ``onnxruntime`` an ONNX one. Exit status 2 when the run cannot be
loaded, the options do not fit the model, or ``--format onnx`` lacks ``jax2onnx``.
"""

from __future__ import annotations

from absl import app, flags

from jaxseg import cli

_RUN = cli.define_run_flags(tiling=False)
_FORMAT = flags.DEFINE_enum(
    "format", "jax", ["jax", "onnx"], "jax: a jax.export file; onnx: an ONNX model (jax2onnx)."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Exported model file; the JSON sidecar goes beside it."
)
_HEIGHT = flags.DEFINE_integer("height", None, "Fixed input height (with --width).")
_WIDTH = flags.DEFINE_integer("width", None, "Fixed input width (with --height).")
_PLATFORMS = flags.DEFINE_list(
    "platforms", None, "Platforms to lower for, e.g. cpu,cuda (default: the current backend)."
)


def main(argv) -> int:
    cli.no_arguments(argv)
    from jaxseg import runs  # After flag parsing: jax reads its flags.
    from jaxseg.serving import sidecar_path

    common = dict(best=_RUN.best, height=_HEIGHT.value, width=_WIDTH.value)
    if _FORMAT.value == "onnx":
        if _PLATFORMS.value:
            raise app.UsageError("--platforms applies to --format jax only")
        metadata = runs.export_run_onnx(_RUN.workdir.value, _OUTPUT.value, **common)
    else:
        metadata = runs.export_run(
            _RUN.workdir.value, _OUTPUT.value, platforms=_PLATFORMS.value, **common
        )
    size = metadata["input"]
    if size["height"] is None:
        m = size["size_multiple"]
        hw = "h, w" if m == 1 else f"{m}*h, {m}*w"
        shape = f"[batch, {hw}, {size['channels']}]"
    else:
        shape = f"[batch, {size['height']}, {size['width']}, {size['channels']}]"
    resized = metadata["resize_to"]
    resized = f", resized to {resized[0]}x{resized[1]} inside" if resized else ""
    target = (
        f"ONNX opset {metadata['opset']}"
        if _FORMAT.value == "onnx"
        else ",".join(metadata["platforms"])
    )
    print(
        f"exported step {metadata['step']} ({metadata['checkpoint']}) for {size['dtype']} {shape}"
        f"{resized} on {target} -> {_OUTPUT.value} (+ {sidecar_path(_OUTPUT.value)})"
    )
    return 0


if __name__ == "__main__":
    cli.run(main, required=["workdir", "output"], user_errors=(OSError, ValueError))
