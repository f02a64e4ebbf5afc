"""Command line: predict image files with a trained run (``jaxseg.prediction`` does the work).

    python -m jaxseg.predict --workdir workdirs/unet --input photos/ extra.tif --output preds/

Writes ``<name>.png`` (class ids), ``<name>_overlay.png`` and, with ``--probabilities``,
``<name>_probabilities.npy`` per image (per page of a multi-page TIFF: ``<stem>_pNN``). Folders
are read non-recursively. An image with more than ``--max_image_pixels`` pixels (Pillow's
decompression-bomb limit by default; 0 = none) is named and skipped like an unreadable file.
Exit status: 0 when every input was predicted, 1 when any input could not be read (each is
named on stderr; the others are still predicted), 2 when the run cannot be loaded or the
options do not fit the model (e.g. a tile size it cannot take).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by jaxseg.train.")
_INPUT = flags.DEFINE_multi_string(
    "input", None, "Image files or folders; more may follow as plain arguments."
)
_OUTPUT = flags.DEFINE_string("output", None, "Folder for masks, overlays and probabilities.")
_LATEST = flags.DEFINE_bool("latest", False, "Use the latest checkpoint, not the best.")
_PROBABILITIES = flags.DEFINE_bool(
    "probabilities", False, "Also write <name>_probabilities.npy, [H, W, num_classes]."
)
_PROBABILITIES_DTYPE = flags.DEFINE_enum(
    "probabilities_dtype", "float32", ["float32", "float16"], "dtype of the .npy files."
)
_TTA = flags.DEFINE_enum(
    "tta", "none", ["none", "flips", "rotations", "dihedral"], "Test-time augmentation."
)
_TILE_SIZE = flags.DEFINE_integer(
    "tile_size", None, "Input tile size (default: jaxseg.inference.for_model's)."
)
_TILE_BATCH_SIZE = flags.DEFINE_integer("tile_batch_size", 8, "Tiles per device call.")
_MAX_IMAGE_PIXELS = flags.DEFINE_integer(
    "max_image_pixels",
    178_956_970,  # jaxseg.data.files.MAX_IMAGE_PIXELS (not imported before flag parsing).
    "Images (pages) with more pixels are named and skipped, a guard against decompression "
    "bombs; the default is Pillow's limit (about 13379x13379). Raise it on purpose for a large "
    "scan (e.g. 300000000 for 16k x 16k); 0 = no limit.",
    lower_bound=0,
)


def main(argv) -> int:
    from jaxseg import checkpoint, compile_cache, prediction  # After flag parsing (jax flags).

    compile_cache.enable()

    logging.set_verbosity(logging.ERROR)  # Orbax logs read-only checkpoint access.
    inputs = list(_INPUT.value or []) + list(argv[1:])
    if not inputs:
        raise app.UsageError("give at least one --input file or folder")
    try:
        run = checkpoint.load_trained(_WORKDIR.value, best=not _LATEST.value)
        print(f"{run.workdir}: {run.checkpoint} checkpoint, step {run.step}")
        report = prediction.predict_files(
            run,
            inputs,
            _OUTPUT.value,
            tta=None if _TTA.value == "none" else _TTA.value,
            tile_size=_TILE_SIZE.value,
            tile_batch_size=_TILE_BATCH_SIZE.value,
            probabilities=_PROBABILITIES.value,
            probabilities_dtype=_PROBABILITIES_DTYPE.value,
            max_image_pixels=_MAX_IMAGE_PIXELS.value,
        )
    except (FileNotFoundError, ValueError) as e:  # Per-file errors are in the report instead.
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"predicted {len(report.written)} image(s) into {_OUTPUT.value}")
    if report.failed:
        names = ", ".join(path for path, _ in report.failed)
        print(f"error: {len(report.failed)} input(s) failed: {names}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "output"])
    app.run(main)
