"""Pixels as they are: 8-bit, 16-bit or float, any channel count, stored and scaled without loss.

Pixels keep their type, within three: ``uint8``, ``uint16`` and ``float32`` (float16 and
float64 become float32; other types are refused, naming the file). The type decides the one
scale every image of it gets on its way to a model (``to_unit``): uint8 / 255, uint16 / 65535,
float as it is. A dataset holds one type (its builder checks), so each dataset has one scale,
and prediction applies the same. Files are read by ``jaxseg.data.readers``.
"""

from __future__ import annotations

import io
import os
import zlib

import numpy as np
from PIL import Image

from jaxseg.data import files

SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}


class Refused(ValueError):
    """A file jaxseg will not read (its pixel type, page layout or size), named in the message."""


def scale_of(dtype) -> float:
    """What pixels of ``dtype`` are divided by on the way to a model."""
    return SCALES[np.dtype(dtype)]


def to_unit(image: np.ndarray) -> np.ndarray:
    """float32 pixels: uint8 / 255 (to [0, 1]), uint16 / 65535 (to [0, 1]), float32 as it is."""
    return np.asarray(image).astype(np.float32) / np.float32(scale_of(image.dtype))


def storable(array: np.ndarray, name) -> np.ndarray:
    """``array`` in one of the kept types (``SCALES``); other types are an error naming ``name``."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "u" and array.itemsize <= 2:
        return array.astype(array.dtype.newbyteorder("="), copy=False)  # Big-endian 16-bit too.
    raise Refused(
        f"image file {os.fspath(name)!r} has pixels of type {array.dtype}; jaxseg reads uint8, "
        "uint16 and float images (convert it to one of them)"
    )


def encode(array: np.ndarray) -> bytes:
    """Lossless bytes of an array of any type and shape (``.npy``, zlib-compressed)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return zlib.compress(buffer.getvalue(), 6)


def decode(data: bytes) -> np.ndarray:
    """The array ``encode`` stored (or a PNG's, as folder datasets were stored before)."""
    if data.startswith(b"\x89PNG"):
        return np.asarray(Image.open(io.BytesIO(data)))
    return np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)


def fit_channels(
    image: np.ndarray, channels: int, name: str, wanted: str = "", *, alpha: bool = True
) -> np.ndarray:
    """``image [H, W, C]`` with ``channels`` channels: gray repeated to RGB, RGB to gray (ITU-R
    601 luma, as Pillow), alpha of 8-bit LA / RGBA dropped when ``alpha`` (Pillow's images;
    a TIFF's alpha is dropped by its tag when read, so there a fourth channel is data, as in
    16-bit and float images). Any other mismatch is an error naming ``name`` (``wanted`` says
    what asked for ``channels``)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if alpha and have in (2, 4) and channels == have - 1 and image.dtype == np.uint8:
        return image[..., :channels]  # Alpha dropped.
    if have == 1 and channels == 3:
        return np.repeat(image, 3, -1)
    if have in (3, 4) and channels == 1 and (have == 3 or (alpha and image.dtype == np.uint8)):
        if image.dtype == np.uint8:
            return np.asarray(Image.fromarray(image[..., :3]).convert("L"))[..., None]
        luma = image.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
        if image.dtype == np.uint16:
            luma = np.clip(np.rint(luma), 0, 65535)
        return luma.astype(image.dtype)[..., None]
    wanted = wanted or f"the model takes {channels}"
    raise ValueError(
        f"{name} has {have} channel(s), but {wanted}: convert the file, or use a model (dataset) "
        f"of {have} channels"
    )


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, C]`` resized bilinearly to ``size`` = ``(height, width)`` in its own type:
    uint8 gray or RGB as ``files.resize``, others channel by channel in float32 (integers
    rounded back)."""
    if image.dtype == np.uint8 and image.shape[-1] in (1, 3):  # (Pillow's RGBA weighs by alpha.)
        return files.resize(image, size, Image.BILINEAR)
    out = np.stack(
        [
            np.asarray(Image.fromarray(image[..., c].astype(np.float32)).resize(
                size[::-1], Image.BILINEAR))
            for c in range(image.shape[-1])
        ],
        -1,
    )  # fmt: skip
    if image.dtype == np.float32:
        return out
    info = np.iinfo(image.dtype)
    return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
