"""Command line: evaluate a trained run on a dataset split (``jaxseg.runs.evaluate_split`` does the
work).

    python -m jaxseg.evaluate --workdir workdirs/unet [--split validation] [--tta flips]

Whole images go through the same tiling as ``jaxseg.predict``; the metrics JSON goes to
``--output`` (default ``<workdir>/eval_<split>.json``). Exit status 2 when the run or the data
cannot be loaded.
"""

from __future__ import annotations

from absl import flags

from jaxseg import cli

_RUN = cli.define_run_flags()
_SPLIT = flags.DEFINE_string(
    "split", None, "TFDS split, slices allowed (default: the split training evaluated on)."
)
_OUTPUT = flags.DEFINE_string("output", None, "Metrics JSON (default <workdir>/eval_<split>.json).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data folder (default: the config's).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Raw data folder (default: the config's).")


def main(argv) -> int:
    cli.no_arguments(argv)
    from jaxseg import runs  # After flag parsing: jax reads its flags.

    run = runs.load_trained(_RUN.workdir.value, best=_RUN.best)
    split = _SPLIT.value or runs.default_split(run)
    print(f"{run.workdir}: {run.checkpoint} checkpoint, step {run.step}; split {split}")
    result = runs.evaluate_split(
        run, split, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value, **_RUN.tiling()
    )
    output = _OUTPUT.value or runs.default_output(run.workdir, split)
    runs.write_json(result, output)
    shown = {k: result[k] for k in ("mean_iou", "pixel_accuracy")}
    shown.update({k: result["isbi"][k] for k in ("v_rand", "v_info")} if "isbi" in result else {})
    summary = " ".join(f"{k} {_number(v)}" for k, v in shown.items())
    print(f"{result['num_images']} images: {summary} -> {output}")
    return 0


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    cli.run(main, required=["workdir"], user_errors=(OSError, ValueError))
