"""Where a run's numbers and pictures go: ``metrics.jsonl``, ``config.json`` and the evaluation
panels (``panels/*.png``) in its workdir, and the same to each logger of ``config.loggers``:
TensorBoard (tensorboardX, no TensorFlow needed) and Weights & Biases (the ``wandb`` extra).

Only process 0 writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from typing import Any

import jax
import numpy as np

from jaxseg.errors import UserError

CONFIG_FILE = "config.json"  # The resolved config of a run, in its workdir.
PANEL_DIR = "panels"  # <workdir>/panels/<split>_step_<N>.png: the panel of each evaluation.
DEFAULT_LOGGERS = ("tensorboard",)


def jsonable(value: Any) -> Any:
    """``value`` as JSON takes it: arrays as lists, NumPy scalars as Python ones, and NaN or
    infinity as ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


class TensorBoardLogger:
    """Event files in ``<workdir>/tensorboard``; the config as a text panel."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter as EventWriter

        self._events = EventWriter(os.path.join(workdir, "tensorboard"))

    def config(self, values: dict) -> None:
        text = json.dumps(values, indent=2, sort_keys=True)
        self._events.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self._events.add_scalar(tag, value, step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self._events.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        self._events.flush()

    def close(self) -> None:
        self._events.close()


class WandbLogger:
    """A Weights & Biases run. The standard ``WANDB_*`` variables hold (``WANDB_MODE=offline``
    writes local run files, ``wandb sync`` uploads them later); unset, the project is 'jaxseg',
    the run is named after the workdir and its files go to ``<workdir>/wandb``."""

    def __init__(self, workdir: str):
        wandb = _import_wandb()
        try:
            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "jaxseg",
                name=os.environ.get("WANDB_NAME") or os.path.basename(os.path.abspath(workdir)),
                dir=os.environ.get("WANDB_DIR") or workdir,
            )
        except wandb.Error as e:
            raise UserError(
                f"W&B could not start a run ({' '.join(str(e).split())}); run `wandb login`, "
                "or set WANDB_MODE=offline"
            ) from e
        self._image = wandb.Image

    def config(self, values: dict) -> None:
        self._run.config.update(values, allow_val_change=True)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        self._run.log({tag: self._image(image)}, step=step)

    def flush(self) -> None:
        pass  # The W&B service writes as it goes.

    def close(self) -> None:
        self._run.finish()


LOGGERS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}  # config.loggers names.
_PACKAGES = {"wandb": "wandb"}  # Loggers from an optional extra: their package.


def _import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise UserError(_missing("wandb")) from e
    return wandb


def _missing(name: str) -> str:
    return (
        f"config.loggers names {name!r}, but the {_PACKAGES[name]} package is not installed: "
        f"pip install 'jaxseg[{name}]'"
    )


def check_loggers(names) -> tuple[str, ...]:
    """``names`` (``config.loggers``) checked: known, and their packages installed (not
    imported).

    Raises:
      ValueError: not a tuple of names, or an unknown one.
      UserError: a logger whose package is not installed, naming the extra to install.
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"config.loggers must be a tuple of names, e.g. ('tensorboard', 'wandb'); got {names!r}"
        )
    for name in names:
        if name not in LOGGERS:
            raise ValueError(
                f"unknown logger {name!r} in config.loggers; choose from {tuple(LOGGERS)}"
            )
        if name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name]) is None:
            raise UserError(_missing(name))
    return tuple(dict.fromkeys(names))


class SummaryWriter:
    """Writes the scalars, config and panels of one run directory to its files and loggers."""

    def __init__(self, workdir: str, loggers=DEFAULT_LOGGERS):
        self.enabled = jax.process_index() == 0
        self._workdir = workdir
        self._loggers = []
        if self.enabled:
            names = check_loggers(loggers)
            os.makedirs(workdir, exist_ok=True)
            try:
                for name in names:
                    self._loggers.append(LOGGERS[name](workdir))
            except BaseException:
                self.close()  # Those already started.
                raise

    def write_config(self, workdir: str, config) -> None:
        """``config.json`` in ``workdir``, and the same values to every logger."""
        if self.enabled:
            text = config.to_json_best_effort(indent=2, sort_keys=True)
            with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
                f.write(text)
            for logger in self._loggers:
                logger.config(json.loads(text))

    def scalars(self, step: int, split: str, values: dict) -> None:
        """Appends ``{"step", "split", "time", **values}`` to metrics.jsonl; numbers to every
        logger as ``split/name`` (lists of numbers as ``split/name/i``)."""
        if not self.enabled:
            return
        values = jsonable(values)
        with open(os.path.join(self._workdir, "metrics.jsonl"), "a") as f:
            f.write(
                json.dumps({"step": step, "split": split, "time": time.time(), **values}) + "\n"
            )
        numbers = {}
        for name, value in values.items():
            if isinstance(value, (int, float)):
                numbers[f"{split}/{name}"] = value
            elif isinstance(value, list) and all(
                isinstance(v, (int, float, type(None))) for v in value
            ):
                numbers.update(
                    {f"{split}/{name}/{i}": v for i, v in enumerate(value) if v is not None}
                )
        for logger in self._loggers:
            logger.scalars(step, numbers)

    def panel(self, step: int, split: str, image: np.ndarray) -> None:
        """A ``uint8 [H, W, 3]`` picture: ``panels/<split>_step_<step>.png`` in the workdir, and
        ``<split>/input_truth_prediction`` in every logger."""
        if not self.enabled:
            return
        from PIL import Image

        os.makedirs(os.path.join(self._workdir, PANEL_DIR), exist_ok=True)
        Image.fromarray(image).save(panel_path(self._workdir, split, step))
        for logger in self._loggers:
            logger.image(step, f"{split}/input_truth_prediction", image)

    def flush(self) -> None:
        for logger in self._loggers:
            logger.flush()

    def close(self) -> None:
        for logger in self._loggers:
            logger.close()


def panel_path(workdir: str, split: str, step: int) -> str:
    """Where ``SummaryWriter.panel`` saves the picture of ``split`` at ``step``."""
    return os.path.join(workdir, PANEL_DIR, f"{split}_step_{step}.png")


def read_metrics(workdir: str) -> list[dict]:
    """The records of a run's ``metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
