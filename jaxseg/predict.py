"""Command line: predict image files with a trained run (``jaxseg.runs.predict_files`` does the work).

    python -m jaxseg.predict --workdir workdirs/unet --input photos/ extra.tif --output preds/

Writes ``<name>.png`` (class ids), ``<name>_overlay.png`` and, with ``--probabilities``,
``<name>_probabilities.npy`` per image (per page of a multi-page TIFF: ``<stem>_pNN``). Folders
are read non-recursively. Images are read as folder datasets read them (``jaxseg.data.readers``:
PNG, JPEG, TIFF; 8-bit, 16-bit or float, scaled as in training; gray and RGB fitted to the
model's channels, any other channel count must be the model's). An image with more than
``--max_image_pixels`` pixels (Pillow's decompression-bomb limit by default; 0 = none) is named
and skipped like an unreadable file.
Exit status: 0 when every input was predicted, 1 when any input could not be read (each is
named on stderr; the others are still predicted), 2 when the run cannot be loaded or the
options do not fit the model (e.g. a tile size it cannot take).
"""

from __future__ import annotations

import sys

from absl import app, flags

from jaxseg import cli

_RUN = cli.define_run_flags()
_INPUT = flags.DEFINE_multi_string(
    "input", None, "Image files or folders; more may follow as plain arguments."
)
_OUTPUT = flags.DEFINE_string("output", None, "Folder for masks, overlays and probabilities.")
_PROBABILITIES = flags.DEFINE_bool(
    "probabilities", False, "Also write <name>_probabilities.npy, [H, W, num_classes]."
)
_PROBABILITIES_DTYPE = flags.DEFINE_enum(
    "probabilities_dtype", "float32", ["float32", "float16"], "dtype of the .npy files."
)
_MAX_IMAGE_PIXELS = flags.DEFINE_integer(
    "max_image_pixels",
    178_956_970,  # jaxseg.data.files.MAX_IMAGE_PIXELS (not imported before flag parsing).
    "Images (pages) with more pixels are named and skipped, a guard against decompression "
    "bombs; the default is Pillow's limit (about 13379x13379). Raise it on purpose for a large "
    "scan (e.g. 300000000 for 16k x 16k); 0 = no limit.",
    lower_bound=0,
)


def main(argv) -> int:
    from jaxseg import runs  # After flag parsing: jax reads its flags.

    inputs = list(_INPUT.value or []) + list(argv[1:])
    if not inputs:
        raise app.UsageError("give at least one --input file or folder")
    run = runs.load_trained(_RUN.workdir.value, best=_RUN.best)
    print(f"{run.workdir}: {run.checkpoint} checkpoint, step {run.step}")
    report = runs.predict_files(
        run,
        inputs,
        _OUTPUT.value,
        probabilities=_PROBABILITIES.value,
        probabilities_dtype=_PROBABILITIES_DTYPE.value,
        max_image_pixels=_MAX_IMAGE_PIXELS.value,
        **_RUN.tiling(),
    )
    print(f"predicted {len(report.written)} image(s) into {_OUTPUT.value}")
    if report.failed:  # Each is named on stderr as it fails; the others were predicted.
        names = ", ".join(path for path, _ in report.failed)
        print(f"error: {len(report.failed)} input(s) failed: {names}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Per-file errors are in the report; these are the run's or the options'.
    cli.run(main, required=["workdir", "output"], user_errors=(OSError, ValueError))
