"""Command line: ``python -m jaxseg.experiment --config experiments/NAME.py [--config.KEY=VALUE]``.

Trains every arm of an experiment once per seed, each run in its own kept workdir
(``workdirs/experiments/NAME/<arm>/seed_<seed>``), then writes the report:
``experiments/results/NAME.json``, ``NAME.md`` (mean ± standard deviation over seeds) and the
pictures (``runs.experiment_report``). Finished runs are skipped and an interrupted one resumes,
so the same command after a kill finishes the job; a workdir holding a run of another config
(the experiment changed) is refused. ``--arms`` picks arms; ``--processes N`` trains N runs at
once in separate processes (each uses every device it sees: on a CPU host, or with one
accelerator per process set through CUDA_VISIBLE_DEVICES / TPU_VISIBLE_CHIPS); ``--report_only``
writes the report from the runs there are. Any field can be overridden: ``--config.seeds='(0,1)'``,
``--config.base.num_train_steps=100`` (with another ``--workdir``: finished runs are not redone).

Exit status: 0 when every run finished, or when a SIGTERM or Ctrl-C stopped the job (it says
"stopped"; the same command resumes); 1 when some runs failed (each named on stderr, the report
written from the others); 2 for a user error (a bad flag or experiment field).
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from jaxseg import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Folder of the runs (default: workdirs/experiments/<experiment name>)."
)
_RESULTS = flags.DEFINE_string(
    "results_dir", os.path.join("experiments", "results"), "Where the report is written."
)
_ARMS = flags.DEFINE_list("arms", [], "Train only these arms (default: all).")
_PROCESSES = flags.DEFINE_integer("processes", 1, "Runs trained at once, one process each.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write the report without training.")


def main(argv) -> int:
    cli.no_arguments(argv)
    from jaxseg import errors
    from jaxseg.runs import experiment_report, experiment_runner, experiments

    experiment = _CONFIG.value
    name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    if _PROCESSES.value < 1:
        raise errors.UserError(f"--processes must be at least 1; got {_PROCESSES.value}")
    with errors.as_user_errors(ValueError):
        experiments.check(experiment)
        experiments.runs(experiment, _ARMS.value)  # Unknown --arms named before any training.
    root = _WORKDIR.value or os.path.join("workdirs", "experiments", name)
    failures = []
    if not _REPORT_ONLY.value:
        failures = experiment_runner.run_all(
            experiment, root, arms=_ARMS.value, processes=_PROCESSES.value
        )
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    command = " ".join(["python -m jaxseg.experiment", *sys.argv[1:]])
    with errors.as_user_errors(ValueError):  # No finished run for --report_only, a bad metric.
        if _REPORT_ONLY.value or any(experiments.results(experiment, root).values()):
            paths = experiment_report.write_report(
                name, experiment, root, _RESULTS.value, command=command
            )
            print("report: " + ", ".join(sorted(paths.values())))
        else:
            print("no run finished yet: no report written")
    return 1 if failures else 0


if __name__ == "__main__":
    cli.run(main, required=["config"])
