"""Predicting image files with a trained run and writing masks, overlays and probabilities.

The library behind ``python -m jaxseg.predict``; a notebook can call the same functions::

    from jaxseg import runs

    trained = runs.load_trained("workdirs/unet")
    report = runs.predict_files(trained, ["photos/"], "preds/", probabilities=True)

Inputs are files, or folders whose image files (``files.IMAGE_EXTENSIONS``: PNG, JPEG, TIFF,
BMP) directly inside are taken in name order; sub-folders are not entered. Images are read as
folder datasets read them (``jaxseg.data.readers``: TIFF by ``tifffile``, the rest by Pillow):
8-bit, 16-bit and float pixels keep their type and reach the model scaled as in training
(``pixels.to_unit``: uint8 / 255, uint16 / 65535, float as it is). Gray and RGB are converted
to the model's channel count and 8-bit alpha is dropped; any other channel count must be the
model's. Each page of a multi-page TIFF is its own image, named ``<stem>_pNN``, unless the
pages are one image's channels (``readers.open_images``). For each image with name ``<name>``
the output folder gets:

* ``<name>.png``: the class-index mask, 8-bit grayscale ('L'), pixel value = class id (16-bit
  for more than 256 classes);
* ``<name>_overlay.png``: the image with the class colours of ``jaxseg.visualize`` blended in;
* with ``probabilities=True``, ``<name>_probabilities.npy``: ``[H, W, num_classes]`` class
  probabilities (float32, or float16 to halve the size), after test-time augmentation.

An input that cannot be read, that is larger than ``max_image_pixels`` (a decompression-bomb
guard, Pillow's limit by default; raise it on purpose for a large scan), or whose outputs would
overwrite an input or an earlier output, is reported and skipped; the others still run.

Memory for a large image: the decoded image, the float32 ``[H, W, num_classes]`` scores
and the mask; tiles are converted to float one batch at a time, and the mask and overlay are
made in bands of rows. The pages of a multi-page TIFF are decoded one at a time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from jaxseg import inference, resize, visualize
from jaxseg.data import files, pixels, readers
from jaxseg.runs.loading import Trained

PROBABILITY_DTYPES = ("float32", "float16")
_BAND = 256  # Rows per band when making masks and overlays of large images.


@dataclasses.dataclass(frozen=True)
class Written:
    """One predicted image: its name, where it came from, its size and the files written."""

    name: str
    source: str
    shape: tuple[int, int]
    paths: tuple[str, ...]


@dataclasses.dataclass
class Report:
    """What ``predict_files`` did: images written and inputs that failed (path, reason)."""

    written: list[Written] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def expand_inputs(paths: Sequence[str]) -> list[str]:
    """Files as given, folders replaced by the image files directly in them (name order).

    Paths that do not exist are kept, so that reading them reports them by name.
    """
    expanded = []
    for path in paths:
        expanded += files.image_files(path) if os.path.isdir(path) else [path]
    return expanded


def iter_input(
    path: str, channels: int, *, max_pixels: int | None = files.MAX_IMAGE_PIXELS
) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, [H, W, channels])`` for each image in a file (uint8, uint16 or float32, as
    stored), decoded one at a time.

    Raises:
      ValueError: the file does not exist, cannot be read as an image or is larger than
        ``max_pixels`` (0 or None: no limit); at once for the file or its first page, from the
        iterator for a later page.
    """
    if not os.path.isfile(path):
        raise ValueError(f"no such file {path!r}")
    count, pages = readers.open_images(path, channels, max_pixels=max_pixels)
    stem = os.path.splitext(os.path.basename(path))[0]
    width = max(2, len(str(count - 1)))
    names = [stem] if count == 1 else [f"{stem}_p{i:0{width}d}" for i in range(count)]
    name = f"image file {path!r}"
    alpha = not readers.is_tiff(path)  # A TIFF's alpha is dropped by its tag when read.
    return ((n, pixels.fit_channels(p, channels, name, alpha=alpha)) for n, p in zip(names, pages))


def read_input(
    path: str, channels: int, *, max_pixels: int | None = files.MAX_IMAGE_PIXELS
) -> list[tuple[str, np.ndarray]]:
    """Every ``(name, page)`` of ``iter_input`` in a list."""
    return list(iter_input(path, channels, max_pixels=max_pixels))


def predict_image(
    predictor: inference.Predictor, image: np.ndarray, resize_to: tuple[int, int] | None = None
) -> np.ndarray:
    """Predicts an ``[H, W, C]`` image, scaled as in training (``pixels.to_unit``: uint8 / 255,
    uint16 / 65535, float32 as it is).

    ``predictor`` is a ``jaxseg.inference.Predictor``, or any callable taking the float32
    ``[H, W, C]`` scaled image and returning ``[H, W, K]`` scores.

    With ``resize_to`` (a run trained on resized images, ``config.resize_to``), the image is
    resized to it as in training (``pixels.resize``) and the scores are resized back (bilinear,
    ``jaxseg.resize.resize_scores``, on the host) to ``H x W``.

    Returns:
      float32 ``[H, W, num_classes]``: what the predictor outputs (probabilities by default).
    """
    image = np.asarray(image)
    if image.dtype not in pixels.SCALES:
        raise ValueError(f"predict_image takes uint8, uint16 or float32 images; got {image.dtype}")
    if resize_to and tuple(resize_to) != image.shape[:2]:
        scores = _scaled(predictor, pixels.resize(image, resize_to))
        return resize.resize_scores(scores, image.shape[:2])
    return _scaled(predictor, image)


def _scaled(predictor, image: np.ndarray) -> np.ndarray:
    """The predictor on ``pixels.to_unit(image)``: a ``Predictor`` scales tile by tile (no float
    copy of the image), any other callable gets the scaled image."""
    if isinstance(predictor, inference.Predictor):
        return predictor(image, divide_by=pixels.scale_of(image.dtype))
    return predictor(pixels.to_unit(image))


def _shown_range(image: np.ndarray) -> tuple[float, float]:
    """The pixel values an overlay shows as black and white: the type's range (uint8, uint16),
    or a float image's own min..max where it leaves [0, 1]."""
    if image.dtype != np.float32:
        return 0.0, pixels.scale_of(image.dtype)
    low, high = float(image.min(initial=0.0)), float(image.max(initial=1.0))
    return (0.0, 1.0) if low >= 0 and high <= 1 else (low, max(high, low + 1e-12))


def class_mask(probabilities: np.ndarray) -> np.ndarray:
    """``[H, W, K]`` scores -> ``[H, W]`` class ids (uint8, or uint16 beyond 256 classes)."""
    dtype = np.uint8 if probabilities.shape[-1] <= 256 else np.uint16
    mask = np.empty(probabilities.shape[:-1], dtype)
    for top in range(0, mask.shape[0], _BAND):  # In bands: no int64 [H, W] array.
        mask[top : top + _BAND] = np.argmax(probabilities[top : top + _BAND], axis=-1)
    return mask


def output_paths(output_dir: str, name: str, probabilities: bool) -> tuple[str, ...]:
    """The files written for an image called ``name``: mask, overlay (and probabilities)."""
    paths = [
        os.path.join(output_dir, f"{name}.png"),
        os.path.join(output_dir, f"{name}_overlay.png"),
    ]
    if probabilities:
        paths.append(os.path.join(output_dir, f"{name}_probabilities.npy"))
    return tuple(paths)


def write_prediction(
    paths: Sequence[str],
    image: np.ndarray,
    probabilities: np.ndarray,
    *,
    probabilities_dtype: str = "float32",
) -> None:
    """Writes the mask, the overlay and (given a third path) the probabilities of one image.

    Args:
      paths: from ``output_paths``.
      image: ``[H, W, C]``, the input (uint8, uint16 or float32; overlays show its first
        channel as gray, or its first three as RGB).
      probabilities: ``float32 [H, W, K]``.
      probabilities_dtype: ``'float32'`` or ``'float16'`` for the ``.npy`` file.
    """
    mask = class_mask(probabilities)
    Image.fromarray(mask).save(paths[0])
    shown = np.empty((*mask.shape, 3), np.uint8)
    (low, high), channels = _shown_range(image), (3 if image.shape[-1] >= 3 else 1)
    for top in range(0, mask.shape[0], _BAND):  # In bands: the float images stay small.
        band = slice(top, top + _BAND)
        unit = (image[band, :, :channels].astype(np.float32) - low) / (high - low)
        shown[band] = visualize.overlay(unit, mask[band], probabilities.shape[-1])
    Image.fromarray(shown).save(paths[1])
    if len(paths) > 2:
        np.save(paths[2], probabilities.astype(probabilities_dtype, copy=False))


def predict_files(
    trained: Trained,
    inputs: Sequence[str],
    output_dir: str,
    *,
    tta: bool | str | None = None,
    tile_size: int | tuple[int, int] | None = None,
    tile_batch_size: int = 8,
    probabilities: bool = False,
    probabilities_dtype: str = "float32",
    max_image_pixels: int | None = files.MAX_IMAGE_PIXELS,
    verbose: bool = True,
) -> Report:
    """Predicts image files and folders with one ``Predictor`` (compiled tile batches reused).

    Args:
      trained: from ``jaxseg.runs.load_trained``.
      inputs: image files and folders (see the module doc).
      output_dir: created if missing.
      tta: test-time augmentation: ``None``, ``'flips'``, ``'rotations'``, ``'dihedral'``.
      tile_size: input tile (window) size; ``None``: ``jaxseg.inference.for_model``'s default.
      tile_batch_size: tiles per device call (device memory grows with it, not image size).
      probabilities: also write ``<name>_probabilities.npy``.
      probabilities_dtype: ``'float32'`` or ``'float16'``.
      max_image_pixels: an image (page) with more pixels is reported and skipped; 0 or
        ``None``: no limit. The default is Pillow's decompression-bomb limit.
      verbose: print a line per image to stdout and failures to stderr as they happen.

    Returns:
      A ``Report``; ``report.ok`` is False when any input failed.
    """
    if probabilities_dtype not in PROBABILITY_DTYPES:
        raise ValueError(f"probabilities_dtype must be one of {PROBABILITY_DTYPES}")
    predictor = trained.predictor(tile_size=tile_size, tta=tta, tile_batch_size=tile_batch_size)
    os.makedirs(output_dir, exist_ok=True)
    sources = expand_inputs(inputs)
    protected = {os.path.abspath(p) for p in sources}  # Never overwrite an input.
    report, used = Report(), {}

    def fail(path: str, reason: str) -> None:
        report.failed.append((path, reason))
        if verbose:
            print(f"error: {path}: {reason}", file=sys.stderr)

    def pages_of(source: str) -> Iterator[tuple[str, np.ndarray]]:
        """The pages of a file; a file or page that cannot be read is reported, the rest go on."""
        try:
            pages = iter_input(source, trained.spec.num_channels, max_pixels=max_image_pixels)
            while True:
                try:
                    page = next(pages)
                except StopIteration:
                    return
                yield page
        except (OSError, ValueError) as e:
            fail(source, str(e))

    for source in sources:
        for name, image in pages_of(source):
            paths = output_paths(output_dir, name, probabilities)
            clash = next((p for p in paths if os.path.abspath(p) in protected), None)
            if name in used:
                fail(source, f"output name {name!r} is already taken by {used[name]!r}; rename it")
                continue
            if clash:
                fail(source, f"its output {clash!r} would overwrite an input or an earlier output")
                continue
            # 8- and 16-bit pixels both reach the model on [0, 1]; float ones as stored.
            if (image.dtype == np.float32) != (trained.input_dtype == "float32"):
                fail(source, f"{name} has {image.dtype} pixels, but the run was trained on "
                             f"{trained.input_dtype} images: convert it to {trained.input_dtype}")  # fmt: skip
                continue
            used[name] = source
            protected.update(os.path.abspath(p) for p in paths)
            result = predict_image(predictor, image, tuple(trained.config.resize_to) or None)
            write_prediction(paths, image, result, probabilities_dtype=probabilities_dtype)
            report.written.append(Written(name, source, image.shape[:2], paths))
            if verbose:
                print(f"{source}: {name} {image.shape[0]}x{image.shape[1]} -> {paths[0]}")
    return report
