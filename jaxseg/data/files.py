"""Reading and checking image / mask files on the host (PIL and NumPy; no TensorFlow).

Every reader refuses an image of more than ``max_pixels`` pixels (default
``MAX_IMAGE_PIXELS``, the size at which Pillow itself refuses a file as a decompression bomb;
0 or None: no limit) with a ``ValueError`` naming the file and its size, as it does any file it
cannot read, so that a caller can skip that file and go on. Pillow's own check is off while
jaxseg reads (a lock guards the switch), so that a limit raised on purpose is the one that
holds.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Pillow's refusal threshold (2 * PIL.Image.MAX_IMAGE_PIXELS by default; about 13379 x 13379).
MAX_IMAGE_PIXELS = 178_956_970
_PILLOW_LIMIT = threading.Lock()


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Brings pixel data to uint8 by its type, never by its values, so every image of a dataset
    is scaled alike: integers wider than 8 bits are taken as 16-bit (divided by 257), floats as
    [0, 1] (times 255), booleans as 0 / 255. One temporary of the input's type at most."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        wide = array if array.itemsize >= 2 else array.astype(np.int16)  # int8 (257 fits)
        out = wide // 257  # Floor division in the input's own type; no 64-bit copy.
        if not (np.issubdtype(wide.dtype, np.unsignedinteger) and wide.itemsize <= 2):
            np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)
    out = array * 255.0  # One temporary, rounded and clipped in place.
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def label_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Class-index data as uint8; values above 255 are an error naming ``name``."""
    if array.max(initial=0) > 255 or array.min(initial=0) < 0:
        raise ValueError(f"mask {name!r} has values outside 0..255")
    return array.astype(np.uint8)


@contextlib.contextmanager
def _reading() -> Iterator[None]:
    """Pillow's decompression-bomb check off (``_check_size`` applies jaxseg's limit instead)."""
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_size(image: Image.Image, path, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise ValueError(
            f"image file {os.fspath(path)!r} is {width}x{height} = {width * height:,} pixels, over "
            f"the limit of {max_pixels:,} (a decompression-bomb guard; raise it on purpose, e.g. "
            "jaxseg.predict --max_image_pixels, 0 = no limit)"
        )


def _open(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Opens and decodes an image (its first frame); call inside ``_reading()``."""
    try:
        image = Image.open(path)
        _check_size(image, path, max_pixels)  # From the header, before decoding.
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image file {os.fspath(path)!r}: {e}") from e
    return image


def _seek(image: Image.Image, index: int, path, max_pixels: int | None) -> None:
    try:
        image.seek(index)
        _check_size(image, path, max_pixels)
        image.load()
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read page {index} of image file {os.fspath(path)!r}: {e}") from e


def read_image(
    path: str | os.PathLike, channels: int, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Reads an image as ``uint8 [H, W, channels]`` (1: grayscale, 3: RGB; alpha dropped)."""
    with _reading():
        return _frame_to_array(_open(path, max_pixels), channels)


def read_mask(path: str | os.PathLike, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Reads a class-index mask as ``uint8 [H, W]``: palette PNGs give their indices."""
    with _reading():
        image = _open(path, max_pixels)
        if image.mode not in ("P", "L", "1", "I;16", "I"):
            raise ValueError(
                f"mask file {os.fspath(path)!r} has mode {image.mode}; masks must be "
                "single-channel class indices (PNG 'L' or palette 'P')"
            )
        return label_to_uint8(np.asarray(image), os.fspath(path))


def read_tiff_pages(
    path: str | os.PathLike, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> Iterator[np.ndarray]:
    """Yields the pages of a multi-page TIFF as 2-D arrays."""
    with _reading():
        image = _open(path, max_pixels)
        frames = getattr(image, "n_frames", 1)
    for index in range(frames):
        with _reading():
            _seek(image, index, path, max_pixels)
            page = np.asarray(image)
        yield page


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


def image_files(folder: str | os.PathLike) -> list[str]:
    """The image files (``IMAGE_EXTENSIONS``) directly in ``folder``, in name order."""
    return [
        os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    ]


def list_images(folder: str | os.PathLike) -> dict[str, str]:
    """Maps file stem to path for the image files directly in ``folder``."""
    return {os.path.splitext(os.path.basename(path))[0]: path for path in image_files(folder)}


def open_image_pages(
    path: str | os.PathLike, channels: int, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> tuple[int, Iterator[np.ndarray]]:
    """``(number of pages, iterator)`` over the pages of an image file, decoded one at a time.

    Every page comes as ``uint8 [H, W, channels]``: one for PNG/JPEG and single-page TIFF
    (exactly ``read_image``), one per page for a multi-page TIFF, each converted by the same
    rules as ``read_image`` (16-bit and float pages through ``to_uint8``, colour to grayscale or
    back as ``channels`` asks, alpha dropped). The file is opened (and its first page decoded)
    here, so an unreadable file raises ``ValueError`` at once; a later page that cannot be read
    raises it from the iterator.
    """
    with _reading():
        image = _open(path, max_pixels)
        frames = getattr(image, "n_frames", 1)
        first = _frame_to_array(image, channels)
        if frames == 1:
            image.close()  # Only the array is kept.

    def pages() -> Iterator[np.ndarray]:
        nonlocal first
        page, first = first, None  # Held by the consumer only.
        yield page
        for index in range(1, frames):
            with _reading():
                _seek(image, index, path, max_pixels)
                page = _frame_to_array(image, channels)
            yield page

    return frames, pages()


def read_image_pages(
    path: str | os.PathLike, channels: int, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> list[np.ndarray]:
    """Every page of ``open_image_pages`` in a list."""
    return list(open_image_pages(path, channels, max_pixels=max_pixels)[1])


def _frame_to_array(image: Image.Image, channels: int) -> np.ndarray:
    """``read_image``'s conversion of one loaded PIL frame to ``uint8 [H, W, channels]``.

    Copies what it must only: 8-bit frames already in the wanted mode are not converted first,
    and the 16-bit and float conversion makes no 64-bit temporary.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = to_uint8(np.asarray(image))
        array = array[..., None] if array.ndim == 2 else array
        return np.repeat(array, channels, -1) if array.shape[-1] == 1 else array[..., :channels]
    mode = "L" if channels == 1 else "RGB"
    array = np.asarray(image if image.mode == mode else image.convert(mode))
    return array[..., None] if array.ndim == 2 else array


def resize(array: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    """Resizes ``[H, W]`` or ``[H, W, C]`` to ``size`` = ``(height, width)`` with PIL."""
    single = array.ndim == 3 and array.shape[-1] == 1
    out = np.asarray(
        Image.fromarray(array[..., 0] if single else array).resize(size[::-1], resample)
    )
    return out[..., None] if single else out
