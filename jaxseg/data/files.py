"""Reading and checking image / mask files on the host (PIL and NumPy; no TensorFlow)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Brings pixel data to uint8 by its type, never by its values, so every image of a dataset
    is scaled alike: integers wider than 8 bits are taken as 16-bit (divided by 257), floats as
    [0, 1] (times 255), booleans as 0 / 255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array.astype(np.int64) // 257, 0, 255).astype(np.uint8)
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def label_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Class-index data as uint8; values above 255 are an error naming ``name``."""
    if array.max(initial=0) > 255 or array.min(initial=0) < 0:
        raise ValueError(f"mask {name!r} has values outside 0..255")
    return array.astype(np.uint8)


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"cannot read image file {os.fspath(path)!r}: {e}") from e
    return image


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Reads an image as ``uint8 [H, W, channels]`` (1: grayscale, 3: RGB; alpha dropped)."""
    return _frame_to_array(_open(path), channels)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Reads a class-index mask as ``uint8 [H, W]``: palette PNGs give their indices."""
    image = _open(path)
    if image.mode not in ("P", "L", "1", "I;16", "I"):
        raise ValueError(
            f"mask file {os.fspath(path)!r} has mode {image.mode}; masks must be single-channel "
            "class indices (PNG 'L' or palette 'P')"
        )
    return label_to_uint8(np.asarray(image), os.fspath(path))


def read_tiff_pages(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yields the pages of a multi-page TIFF as 2-D arrays."""
    image = _open(path)
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        yield np.asarray(image)


def encode_png(array: np.ndarray) -> bytes:
    """Encodes ``uint8 [H, W]`` or ``[H, W, C]`` as PNG bytes."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def check_example(image: np.ndarray, mask: np.ndarray, valid_values: np.ndarray, name: str) -> None:
    """Raises ``ValueError`` naming ``name`` if the mask's size or values are wrong.

    Args:
      image: ``[H, W, C]``.
      mask: ``[H, W]`` raw stored values.
      valid_values: ``bool[256]``, which stored values are allowed.
      name: file name(s) for the message.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"{name}: mask size {mask.shape[:2]} differs from image size {image.shape[:2]}"
        )
    bad = np.unique(mask[~valid_values[mask]])
    if bad.size:
        raise ValueError(
            f"{name}: label value(s) {bad.tolist()} are neither a class nor the ignore label "
            f"(allowed: {np.flatnonzero(valid_values).tolist()})"
        )


def list_images(folder: str | os.PathLike) -> dict[str, str]:
    """Maps file stem to path for the image files directly in ``folder``."""
    return {
        os.path.splitext(f)[0]: os.path.join(folder, f)
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(IMAGE_EXTENSIONS)
    }


def read_image_pages(path: str | os.PathLike, channels: int) -> list[np.ndarray]:
    """Reads every page (frame) of an image file as ``uint8 [H, W, channels]``.

    One page for PNG/JPEG and single-page TIFF (exactly ``read_image``); one per page for a
    multi-page TIFF, each converted by the same rules as ``read_image`` (16-bit and float pages
    through ``to_uint8``, colour to grayscale or back as ``channels`` asks, alpha dropped).
    """
    image = _open(path)
    if getattr(image, "n_frames", 1) == 1:
        return [read_image(path, channels)]
    pages = []
    for index in range(image.n_frames):
        image.seek(index)
        pages.append(_frame_to_array(image, channels))
    return pages


def _frame_to_array(image: Image.Image, channels: int) -> np.ndarray:
    """``read_image``'s conversion of one loaded PIL frame to ``uint8 [H, W, channels]``."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = to_uint8(np.asarray(image))
        array = array[..., None] if array.ndim == 2 else array
        return np.repeat(array, channels, -1) if array.shape[-1] == 1 else array[..., :channels]
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[..., None] if array.ndim == 2 else array


def resize(array: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    """Resizes ``[H, W]`` or ``[H, W, C]`` to ``size`` = ``(height, width)`` with PIL."""
    single = array.ndim == 3 and array.shape[-1] == 1
    out = np.asarray(
        Image.fromarray(array[..., 0] if single else array).resize(size[::-1], resample)
    )
    return out[..., None] if single else out
