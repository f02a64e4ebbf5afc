"""The input pipeline: TFDS ``array_record`` data read by grain, decoded and cropped on the host.

``create_loader`` returns a ``grain.DataLoader`` whose batches are dicts of NumPy arrays:
``image`` float32 ``[b, h, w, c]`` (``pixels.to_unit``: 8- and 16-bit in [0, 1], float as
stored), ``label`` int32 ``[b, h, w]`` with class ids and ``IGNORE_INDEX`` (-1) for ignored or
padded pixels, optionally ``weight`` float32 ``[b, h, w]`` (a per-pixel loss weight map), and
for evaluation ``valid`` bool ``[b]`` (False for padding examples). Its iterator's state can
be saved and restored (``get_state`` / ``set_state``, or
``grain.checkpoint.CheckpointSave`` through Orbax).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Iterator

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from jaxseg.data import files, pixels, preparation
from jaxseg.data.builders import SegmentationFolder, SegmentationFolderConfig
from jaxseg.data.specs import INVALID, DatasetSpec
from jaxseg.data.transforms import PadToSize, RandomCrop, ToFloat, pad_batch, padding_like

WeightFn = Callable[[np.ndarray], np.ndarray]


def get_builder(spec: DatasetSpec, *, data_dir: str | None = None, manual_dir: str | None = None):
    """The TFDS builder of ``spec``, prepared as ``array_record``: prepared once, then reused
    while its source is unchanged, re-prepared when it changed (``preparation.prepare``)."""
    if spec.tfds_name.startswith("segmentation_folder/"):
        config = SegmentationFolderConfig(
            name=spec.name,
            class_names=spec.class_names,
            ignore_label=spec.ignore_label,
            num_channels=spec.num_channels,
        )
        builder = SegmentationFolder(config=config, data_dir=data_dir, file_format="array_record")
    else:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir, file_format="array_record")
    return preparation.prepare(builder, spec, manual_dir)


@dataclasses.dataclass
class DecodedSource(grain.sources.RandomAccessDataSource):
    """A TFDS data source decoded to ``image`` ``[H, W, C]`` (uint8; folder datasets: as stored,
    uint16 or float32 too) and ``label`` int32 ``[H, W]``.

    Stored label values go through the spec's lookup table; a value that maps to no class and is
    not the ignore label raises an error naming the file. With ``resize_to`` images are resized
    bilinearly and labels by nearest neighbour. With ``weight_fn`` a per-pixel weight map is
    computed from the label and cached per example (it depends on the label only).
    """

    source: object
    spec: DatasetSpec
    resize_to: tuple[int, int] | None = None
    weight_fn: WeightFn | None = None

    def __post_init__(self):
        self._lut = self.spec.label_lut()
        self._weight_cache: dict[int, np.ndarray] = {}  # Per process: grain workers pickle this.

    def __len__(self) -> int:
        return len(self.source)

    def _weights(self, index: int, label: np.ndarray) -> np.ndarray:
        if index not in self._weight_cache:
            self._weight_cache[index] = np.asarray(self.weight_fn(label), np.float32)
        return self._weight_cache[index]

    def _label(self, record: dict, index: int, image_shape: tuple[int, int]) -> np.ndarray:
        raw = np.asarray(record[self.spec.mask_key])
        raw = raw[..., 0] if raw.ndim == 3 else raw
        label = self._lut[raw]
        if (label == INVALID).any():
            bad = np.unique(raw[label == INVALID]).tolist()
            raise ValueError(
                f"{self.spec.name} example {index} ({_file_name(record)}): label value(s) {bad} are "
                "neither a class nor the ignore label"
            )
        if label.shape != image_shape:
            raise ValueError(
                f"{self.spec.name} example {index} ({_file_name(record)}): mask size "
                f"{label.shape} differs from image size {image_shape}"
            )
        return (
            label if self.resize_to is None else files.resize(label, self.resize_to, Image.NEAREST)
        )

    def __getitem__(self, index: int) -> dict:
        record = self.source[index]
        image = record[self.spec.image_key]  # Bytes: stored as it is (``pixels.encode``).
        image = pixels.decode(image) if isinstance(image, bytes) else np.asarray(image)
        image = image[..., None] if image.ndim == 2 else image
        label = self._label(record, index, image.shape[:2])
        if self.resize_to is not None:
            image = pixels.resize(image, self.resize_to)
        example = {"image": image, "label": label}
        if self.weight_fn is not None:
            example["weight"] = self._weights(index, example["label"])
        return example


def _file_name(record: dict) -> str:
    name = record.get("file_name", record.get("image_id", b"?"))
    return name.decode() if isinstance(name, bytes) else str(name)


def create_loader(
    spec: DatasetSpec,
    split: str,
    *,
    batch_size: int,
    size: tuple[int, int],
    train: bool,
    seed: int = 0,
    margin: int = 0,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    resize_to: tuple[int, int] | None = None,
    weight_fn: WeightFn | None = None,
    worker_count: int = 0,
    num_epochs: int | None = None,
) -> grain.DataLoader:
    """A grain loader over this host's share of ``split``.

    Args:
      spec: the dataset.
      split: a TFDS split, slices allowed (``'train[:20]'``).
      batch_size: examples per batch on this host (the global batch / process count).
      size: ``(height, width)`` of the model input every example is cropped or padded to.
      train: shuffle (seeded), repeat, random-crop and drop the last partial batch; otherwise
        visit each example once in order, pad to ``size`` and mark padding examples invalid.
      seed: shuffle and crop seed; the same seed gives the same batches.
      margin: mirror-extension of the image on every side (``(input - output) / 2`` of a
        valid-padding U-Net), so that labels line up with the centre of the model output.
      data_dir, manual_dir: TFDS data folder and the user's raw data (manual datasets).
      resize_to: resize every example to ``(height, width)`` first.
      weight_fn: per-pixel weight map from a label, e.g. ``weight_map.border_weight_map``.
      worker_count: grain worker processes (0: in this process).
      num_epochs: passes over the data for training (``None``: forever).
    """
    return _loader(**locals())[0]


def _loader(
    *,
    spec,
    split,
    batch_size,
    size,
    train,
    seed,
    margin,
    data_dir,
    manual_dir,
    resize_to,
    weight_fn,
    worker_count,
    num_epochs,
) -> tuple[grain.DataLoader, int]:
    """``create_loader``'s loader and the number of examples in the whole split."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if min(size) < 1 or margin < 0:
        raise ValueError(f"bad input size {size} or margin {margin}")
    if worker_count and not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags (a notebook never parses them).
    builder = get_builder(spec, data_dir=data_dir, manual_dir=manual_dir)
    split_name, splits = split.split("[")[0], builder.info.splits
    if len(splits) and split_name not in splits:  # (Mocked catalog datasets list no splits.)
        raise ValueError(
            f"{spec.name} has no split {split_name!r} (it has {sorted(builder.info.splits)}); "
            "set config.train_split / config.eval_split, e.g. 'train[:90%]' and 'train[90%:]'"
        )
    source = builder.as_data_source(split)
    decoded = DecodedSource(source, spec, resize_to, weight_fn)
    if len(decoded) == 0:
        raise ValueError(f"split {split!r} of {spec.name} is empty")
    sampler = grain.samplers.IndexSampler(
        num_records=len(decoded),
        shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=train),
        shuffle=train,
        num_epochs=num_epochs if train else 1,
        seed=seed,
    )
    if train:
        ops = [
            RandomCrop(tuple(size), margin),
            ToFloat(),
            grain.transforms.Batch(batch_size, drop_remainder=True),
        ]
    else:
        ops = [
            PadToSize(tuple(size), margin),
            ToFloat(),
            grain.transforms.Batch(
                batch_size, drop_remainder=False, batch_fn=functools.partial(pad_batch, batch_size)
            ),
        ]
    loader = grain.DataLoader(
        data_source=decoded,
        sampler=sampler,
        operations=ops,
        worker_count=worker_count,
        read_options=grain.ReadOptions(
            num_threads=max(1, min(8, os.cpu_count() or 1)), prefetch_buffer_size=2 * batch_size
        ),
    )
    return loader, len(decoded)


@dataclasses.dataclass(frozen=True)
class EvalLoader:
    """One pass over an evaluation split: iterating yields exactly ``num_batches`` batches on
    every host (``eval_batches``), however the split divides among them."""

    loader: grain.DataLoader
    num_examples: int  # In the whole split (all hosts).
    batch_size: int  # Per host.

    @property
    def num_batches(self) -> int:
        return num_eval_batches(self.num_examples, self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        return eval_batches(self.loader, self.num_batches)


def create_eval_loader(
    spec: DatasetSpec,
    split: str,
    *,
    batch_size: int,
    size: tuple[int, int],
    margin: int = 0,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    resize_to: tuple[int, int] | None = None,
) -> EvalLoader:
    """``create_loader(..., train=False)`` as an ``EvalLoader``.

    Raises:
      ValueError: the split has fewer examples than there are processes (each needs one).
    """
    loader, num_examples = _loader(
        spec=spec,
        split=split,
        batch_size=batch_size,
        size=size,
        train=False,
        seed=0,
        margin=margin,
        data_dir=data_dir,
        manual_dir=manual_dir,
        resize_to=resize_to,
        weight_fn=None,
        worker_count=0,
        num_epochs=None,
    )
    if num_examples < jax.process_count():
        raise ValueError(
            f"evaluation split {split!r} has {num_examples} examples, fewer than the "
            f"{jax.process_count()} processes: every host needs at least one"
        )
    return EvalLoader(loader, num_examples, batch_size)


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    """Evaluation batches per host: the same on every host (the largest shard decides)."""
    return math.ceil(math.ceil(num_examples / jax.process_count()) / batch_size)


def eval_batches(loader: grain.DataLoader, num_batches: int) -> Iterator[dict]:
    """Yields exactly ``num_batches`` batches, topping up with all-invalid ones, so that every
    host runs the same number of evaluation steps even when the split does not divide evenly."""
    last = None
    count = 0
    for batch in loader:
        last = batch
        count += 1
        yield batch
    if last is None and num_batches:
        raise ValueError("this host's share of the evaluation split is empty")
    for _ in range(num_batches - count):
        yield {k: padding_like(k, v, v.shape[0]) for k, v in last.items()}
