"""Command line: evaluate a trained run on a dataset split (``jaxseg.evaluation`` does the work).

    python -m jaxseg.evaluate --workdir workdirs/unet [--split validation] [--tta flips]

Whole images go through the same tiling as ``jaxseg.predict``; the metrics JSON goes to
``--output`` (default ``<workdir>/eval_<split>.json``). Exit status 2 when the run or the data
cannot be loaded.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by jaxseg.train.")
_SPLIT = flags.DEFINE_string(
    "split", None, "TFDS split, slices allowed (default: the split training evaluated on)."
)
_LATEST = flags.DEFINE_bool("latest", False, "Use the latest checkpoint, not the best.")
_TTA = flags.DEFINE_enum(
    "tta", "none", ["none", "flips", "rotations", "dihedral"], "Test-time augmentation."
)
_TILE_SIZE = flags.DEFINE_integer(
    "tile_size", None, "Input tile size (default: jaxseg.inference.for_model's)."
)
_TILE_BATCH_SIZE = flags.DEFINE_integer("tile_batch_size", 8, "Tiles per device call.")
_OUTPUT = flags.DEFINE_string("output", None, "Metrics JSON (default <workdir>/eval_<split>.json).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the config's).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Raw data folder (default: the config's).")


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxseg import checkpoint, compile_cache, evaluation  # After flag parsing (jax flags).

    compile_cache.enable()

    logging.set_verbosity(logging.ERROR)  # Orbax logs read-only checkpoint access.
    try:
        run = checkpoint.load_trained(_WORKDIR.value, best=not _LATEST.value)
        split = _SPLIT.value or evaluation.default_split(run)
        print(f"{run.workdir}: {run.checkpoint} checkpoint, step {run.step}; split {split}")
        result = evaluation.evaluate_split(
            run,
            split,
            tta=None if _TTA.value == "none" else _TTA.value,
            tile_size=_TILE_SIZE.value,
            tile_batch_size=_TILE_BATCH_SIZE.value,
            data_dir=_DATA_DIR.value,
            manual_dir=_MANUAL_DIR.value,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    output = _OUTPUT.value or evaluation.default_output(run.workdir, split)
    evaluation.write_json(result, output)
    shown = {k: result[k] for k in ("mean_iou", "pixel_accuracy")}
    shown.update({k: result["isbi"][k] for k in ("v_rand", "v_info")} if "isbi" in result else {})
    summary = " ".join(f"{k} {_number(v)}" for k, v in shown.items())
    print(f"{result['num_images']} images: {summary} -> {output}")
    return 0


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
