"""Where a run's numbers and pictures go: ``metrics.jsonl``, ``config.json`` and TensorBoard.

Only process 0 writes. TensorBoard event files come from tensorboardX (no TensorFlow needed).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

CONFIG_FILE = "config.json"  # The resolved config of a run, in its workdir.


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


class SummaryWriter:
    """Writes scalars and images for one run directory."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self._jsonl = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter as TensorBoardWriter

            os.makedirs(workdir, exist_ok=True)
            self._tb = TensorBoardWriter(os.path.join(workdir, "tensorboard"))

    def write_config(self, workdir: str, config) -> None:
        if self.enabled:
            with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
                f.write(config.to_json_best_effort(indent=2, sort_keys=True))

    def scalars(self, step: int, split: str, values: dict) -> None:
        """Appends ``{"step", "split", "time", **values}`` to metrics.jsonl; numbers to TensorBoard."""
        if not self.enabled:
            return
        values = jsonable(values)
        with open(self._jsonl, "a") as f:
            f.write(
                json.dumps({"step": step, "split": split, "time": time.time(), **values}) + "\n"
            )
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self._tb.add_scalar(f"{split}/{name}", value, step)
            elif (
                isinstance(value, list)
                and value
                and all(isinstance(v, (int, float, type(None))) for v in value)
            ):
                for i, v in enumerate(value):
                    if v is not None:
                        self._tb.add_scalar(f"{split}/{name}/{i}", v, step)

    def images(self, step: int, name: str, images: np.ndarray) -> None:
        """``uint8 [n, H, W, 3]`` images under ``name``."""
        if self.enabled and len(images):
            self._tb.add_images(name, np.asarray(images), step, dataformats="NHWC")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of a run's ``metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
