"""Reading image files as they are: TIFF with ``tifffile`` (every page, 16-bit, float, any
number of samples per pixel, planar or interleaved), everything else with Pillow; pixels keep
their type (``jaxseg.data.pixels``). A file can hold several images (the slices of a stack) or
one image's channels as pages (``open_images``); ``read_one`` takes a dataset's one image.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import numpy as np
import tifffile
from PIL import Image

from jaxseg.data import files
from jaxseg.data.pixels import Refused, fit_channels, storable

TIFF_EXTENSIONS = (".tif", ".tiff")


def _pil_page(image: Image.Image, path) -> np.ndarray:
    """One loaded Pillow frame as ``[H, W, C]`` in its own type (palettes expanded to RGB(A))."""
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "F") and not image.mode.startswith("I"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV.
    array = np.asarray(image)
    if image.mode == "I":  # Pillow's 32-bit mode, also used for 16-bit PNGs.
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise Refused(f"image file {os.fspath(path)!r} has 32-bit integer pixels")
        array = array.astype(np.uint16)
    array = storable(array, path)
    return array[..., None] if array.ndim == 2 else array


def _check_tiff_page(page, path, max_pixels) -> None:
    """A page jaxseg can take (``YX``, ``YXS`` or planar ``SYX``), within ``max_pixels``."""
    axes, shape = page.axes, page.shape
    if axes not in ("YX", "YXS", "SYX"):
        raise Refused(f"image file {os.fspath(path)!r}: unsupported TIFF page layout {axes}")
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    if max_pixels and height * width > max_pixels:
        raise Refused(
            f"image file {os.fspath(path)!r} is {width}x{height} = {width * height:,} pixels, over "
            f"the limit of {max_pixels:,} (a decompression-bomb guard; raise it on purpose, e.g. "
            "jaxseg.predict --max_image_pixels, 0 = no limit)"
        )


def _tiff_array(page, path) -> np.ndarray:
    """A checked TIFF page decoded as ``[H, W, C]``: planar samples moved last, and an extra
    sample the file tags as alpha dropped (any other extra sample is data: RGB + NIR)."""
    array = storable(page.asarray(), path)
    if page.axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    elif page.axes == "YX":
        array = array[..., None]
    alpha = [i for i, kind in enumerate(getattr(page, "extrasamples", ()) or ()) if kind in (1, 2)]
    if alpha and array.ndim == 3:  # Extra samples follow the colour ones.
        keep = array.shape[-1] - len(getattr(page, "extrasamples", ()))
        array = array[..., :keep]
    return array


def _tiff_pages(path, max_pixels) -> tuple[int, Iterator[np.ndarray]] | None:
    """``(pages, iterator)`` of a TIFF by ``tifffile``; ``None`` where tifffile cannot read it
    (Pillow gets a second try)."""
    try:
        tif = tifffile.TiffFile(os.fspath(path))
    except Exception:  # noqa: BLE001 (tifffile raises many types)
        return None
    try:
        first_page, count = tif.pages[0], len(tif.pages)
        _check_tiff_page(first_page, path, max_pixels)
        first = _tiff_array(first_page, path)
    except Refused:
        tif.close()
        raise
    except Exception:  # noqa: BLE001 (e.g. a compression that needs imagecodecs)
        tif.close()
        return None

    def pages() -> Iterator[np.ndarray]:
        nonlocal first
        with tif:  # Closed when the pages are read, or the iterator is closed.
            page, first = first, None
            yield page
            for index in range(1, count):
                _check_tiff_page(tif.pages[index], path, max_pixels)
                try:
                    page = _tiff_array(tif.pages[index], path)
                except Exception as e:  # noqa: BLE001
                    raise ValueError(f"cannot read page {index} of {os.fspath(path)!r}: {e}") from e
                yield page

    if count == 1:
        tif.close()
    return count, pages()


def _refuse_16bit_colour_png(path) -> None:
    """Pillow reads only 8 bits of a 16-bit RGB(A) or gray + alpha PNG: refused rather than cut
    short."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return  # Pillow names the file.
    if (
        head[:8] == b"\x89PNG\r\n\x1a\n"
        and len(head) == 26
        and head[24] == 16
        and head[25] in (2, 4, 6)  # RGB, gray + alpha, RGBA.
    ):
        raise Refused(f"image file {os.fspath(path)!r} is a 16-bit colour PNG, which Pillow reads "
                      "as 8 bits: save it as TIFF to keep its 16 bits")  # fmt: skip


def open_pages(
    path: str | os.PathLike, *, max_pixels: int | None = files.MAX_IMAGE_PIXELS
) -> tuple[int, Iterator[np.ndarray]]:
    """``(number of pages, iterator)`` over an image file's pages as stored: ``[H, W, C]``
    uint8, uint16 or float32, decoded one at a time. An unreadable file (or first page) raises
    ``ValueError`` naming it at once; a later page, from the iterator."""
    if os.fspath(path).lower().endswith(TIFF_EXTENSIONS):
        found = _tiff_pages(path, max_pixels)
        if found is not None:
            return found
    _refuse_16bit_colour_png(path)
    with files._reading():
        image = files._open(path, max_pixels)
        count = getattr(image, "n_frames", 1)
        first = _pil_page(image, path)

    def pages() -> Iterator[np.ndarray]:
        nonlocal first
        page, first = first, None
        yield page
        for index in range(1, count):
            with files._reading():
                files._seek(image, index, path, max_pixels)
                page = _pil_page(image, path)
            yield page

    return count, pages()


def _shaped_stack(path, count: int, page: np.ndarray, channels: int) -> np.ndarray | None:
    """The ``[H, W, channels]`` array that ``tifffile.imwrite`` stored as ``H`` pages of
    ``W x channels`` (its default for a channel count other than 3 or 4), or ``None``."""
    if not os.fspath(path).lower().endswith(TIFF_EXTENSIONS) or page.shape[-1] != 1:
        return None
    with tifffile.TiffFile(os.fspath(path)) as tif:
        series = tif.series[0]
        if tif.is_shaped and series.shape == (count, *page.shape[:2]) and page.shape[1] == channels:
            return storable(series.asarray(), path)
    return None


def _channel_axis(path) -> bool:
    """Whether a TIFF's metadata (ImageJ, OME) names its pages channels (a ``C`` axis)."""
    if not os.fspath(path).lower().endswith(TIFF_EXTENSIONS):
        return False
    with tifffile.TiffFile(os.fspath(path)) as tif:
        return "C" in tif.series[0].axes


def open_images(
    path: str | os.PathLike,
    channels: int,
    *,
    max_pixels: int | None = files.MAX_IMAGE_PIXELS,
    single: bool = False,
) -> tuple[int, Iterator[np.ndarray]]:
    """``(count, iterator)`` over the images in a file for a model of ``channels`` channels.

    Each page is an image (a multi-page TIFF of slices), except where the pages are one image's
    channels: ``channels`` single-channel pages of one size when the file holds one image
    (``single``, as in datasets), when the model's channels are neither 1 nor 3, or when the
    TIFF's metadata says so (ImageJ / OME ``C`` axis); or an ``[H, W, channels]`` array that
    ``tifffile.imwrite`` stored as ``H`` pages. A stack of 3 gray pages is thus 3 slices for an
    RGB model in prediction. Images come as stored (``open_pages``); their channel count is the
    caller's to check or fit.
    """
    count, pages = open_pages(path, max_pixels=max_pixels)
    if count == 1 or channels == 1:
        return count, pages
    first = next(pages)
    channel_pages = single or channels != 3 or _channel_axis(path)
    if first.shape[-1] == 1 and count == channels and channel_pages:
        stack = [first, *pages]
        if len({(p.shape, p.dtype) for p in stack}) > 1:
            raise ValueError(f"image file {os.fspath(path)!r}: its pages differ in size or type")
        return 1, iter([np.concatenate(stack, -1)])
    shaped = _shaped_stack(path, count, first, channels)
    if shaped is not None:
        pages.close()
        if max_pixels and shaped.shape[0] * shaped.shape[1] > max_pixels:
            raise Refused(f"image file {os.fspath(path)!r} is over the limit of {max_pixels:,}")
        return 1, iter([shaped])
    return count, itertools.chain([first], pages)


def read_one(
    path: str | os.PathLike, channels: int, *, max_pixels: int | None = files.MAX_IMAGE_PIXELS
) -> np.ndarray:
    """A file that holds one image (see ``open_images``) as ``[H, W, channels]`` in its own type,
    fitted like ``fit_channels`` (gray and RGB converted, 8-bit alpha dropped).

    Raises:
      ValueError: naming the file, when it holds several images or another channel count.
    """
    count, images = open_images(path, channels, max_pixels=max_pixels, single=True)
    image = next(images)
    if count > 1:
        images.close()
        raise ValueError(
            f"image file {os.fspath(path)!r} holds {count} pages of {image.shape[-1]} channel(s); "
            f"a dataset takes one image per file (pages as channels: {channels} pages, as "
            "config.num_channels declares)"
        )
    declared = f"the dataset declares {channels} (config.num_channels)"
    alpha = not is_tiff(path)  # A TIFF's alpha is dropped by its tag when read.
    return fit_channels(image, channels, f"image file {os.fspath(path)!r}", declared, alpha=alpha)


def is_tiff(path) -> bool:
    return os.fspath(path).lower().endswith(TIFF_EXTENSIONS)
