"""Pictures for people: a fixed palette, coloured masks, overlays, and the evaluation panel
(rows of input / ground truth / prediction with a class legend; NumPy, Pillow for the text)."""

from __future__ import annotations

import numpy as np


def palette(num_classes: int) -> np.ndarray:
    """``uint8 [num_classes, 3]``: distinct colours, the same for a class in every run.

    Uses the bit-interleaving scheme of the PASCAL VOC palette, so class ``c`` of any dataset
    gets the colour VOC gives index ``c`` (0 is black).
    """
    colours = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        value, r, g, b = c, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[c] = (r, g, b)
    return colours


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[H, W]`` class ids -> ``uint8 [H, W, 3]``; ignored pixels (negative or >= K) are white."""
    colours = np.concatenate([palette(num_classes), [[255, 255, 255]]]).astype(np.uint8)
    index = np.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return colours[index]


def overlay(
    image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5
) -> np.ndarray:
    """Blends the coloured class map over an image: ``[H, W, C]`` uint8, or float in [0, 1]."""
    image = np.asarray(image)
    image = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    image = np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]
    blended = (1 - alpha) * image + alpha * colorize(labels, num_classes) / 255.0
    return np.clip(np.rint(blended * 255), 0, 255).astype(np.uint8)


# The evaluation panel: one row per example, labelled columns, a class legend.
COLUMNS = ("input", "ground truth", "prediction")
IGNORE_COLOURS = ((150, 150, 150), (210, 210, 210))  # Diagonal grey hatching of ignored pixels.
MIN_HEIGHT, MAX_HEIGHT = 256, 512  # Tiles are scaled (nearest neighbour) into this range.
FULL_LEGEND = 24  # Datasets with more classes list only the classes shown.
_PAD, _SWATCH = 8, 14


def display_image(image: np.ndarray) -> np.ndarray:
    """An input image as people see it: ``uint8 [H, W, 3]``.

    ``[H, W, C]`` uint8, uint16 or float in [0, 1] (other float ranges are stretched to their
    min..max); three or more channels show the first three as RGB, one or two the first as gray.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image / 255.0
    elif np.issubdtype(image.dtype, np.integer):
        image = image / float(np.iinfo(image.dtype).max)
    image = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)
    image = image.astype(np.float32)
    low, high = float(image.min(initial=0.0)), float(image.max(initial=1.0))
    if low < 0 or high > 1:  # Stretched from the image's own range.
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def class_colours(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[H, W]`` class ids -> ``uint8 [H, W, 3]`` opaque palette colours; ignored pixels
    (negative or >= K) in grey hatching, unlike any class colour."""
    yy, xx = np.indices(labels.shape)
    hatch = np.asarray(IGNORE_COLOURS, np.uint8)[((yy + xx) // 4) % 2]
    ignored = (labels < 0) | (labels >= num_classes)
    return np.where(ignored[..., None], hatch, palette(num_classes)[np.where(ignored, 0, labels)])


def display_size(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` scaled by a whole factor (up, or down) into [MIN_HEIGHT, MAX_HEIGHT]
    where one exists, so that every pixel stays a square block."""
    if height < MIN_HEIGHT:
        factor = -(-MIN_HEIGHT // height)
        return height * factor, width * factor
    factor = -(-height // MAX_HEIGHT)
    return -(-height // factor), -(-width // factor)


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[H, W, ...]`` -> ``[height, width, ...]`` by nearest neighbour (labels stay labels)."""
    rows = np.arange(height) * array.shape[0] // height
    cols = np.arange(width) * array.shape[1] // width
    return array[rows][:, cols]


def _font(size: int = 14):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font.
    except TypeError:
        return ImageFont.load_default()


def panel(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray | dict[str, np.ndarray],
    class_names: tuple[str, ...],
) -> np.ndarray:
    """The picture of a few predictions that a person can read: ``uint8 [height, width, 3]``.

    One row per example, columns "input", "ground truth" and "prediction" (classes in opaque
    palette colours, ignored pixels hatched grey), each tile scaled by ``display_size``, and a
    legend (colour swatch and class name) below the rows. Several models' predictions side by
    side: ``predictions`` as ``{column title: [n, H, W]}``.

    Args:
      images: ``[n, H, W, C]``, as ``display_image`` takes them.
      labels, predictions: int ``[n, H, W]`` class ids (negative: ignored).
      class_names: one name per class.
    """
    from PIL import Image, ImageDraw

    num_classes, font = len(class_names), _font()
    if not isinstance(predictions, dict):
        predictions = {COLUMNS[-1]: predictions}
    columns = (*COLUMNS[:-1], *predictions)
    n, height, width = np.shape(labels)
    tile_h, tile_w = display_size(height, width)

    def classes(label):
        return class_colours(resize_nearest(np.asarray(label), tile_h, tile_w), num_classes)

    tiles = [
        [resize_nearest(display_image(images[i]), tile_h, tile_w), classes(labels[i])]
        + [classes(predicted[i]) for predicted in predictions.values()]
        for i in range(n)
    ]
    entries = _legend_entries(labels, np.stack(list(predictions.values())), class_names)
    text_h = font.getbbox("Ag")[3]
    entry_w = _SWATCH + 2 * _PAD + max(int(font.getlength(name)) for _, name in entries)
    width = max(_PAD + len(columns) * (tile_w + _PAD), 2 * _PAD + entry_w)
    top = _PAD + text_h + _PAD  # The first row of tiles.
    legend_top = top + n * (tile_h + _PAD) + _PAD
    per_row = max(1, (width - _PAD) // entry_w)
    line_h = max(_SWATCH, text_h) + _PAD // 2
    height = legend_top + -(-len(entries) // per_row) * line_h + _PAD
    canvas = np.full((height, width, 3), 255, np.uint8)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            x, y = _PAD + j * (tile_w + _PAD), top + i * (tile_h + _PAD)
            canvas[y : y + tile_h, x : x + tile_w] = tile
    swatches = []
    for k, (label, name) in enumerate(entries):
        x = _PAD + (k % per_row) * entry_w
        y = legend_top + (k // per_row) * line_h
        swatch = class_colours(np.full((_SWATCH, _SWATCH), label), num_classes)
        canvas[y : y + _SWATCH, x : x + _SWATCH] = swatch
        swatches.append((x, y, name))
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for j, title in enumerate(columns):
        draw.text((_PAD + j * (tile_w + _PAD), _PAD), title, fill=(0, 0, 0), font=font)
    for x, y, name in swatches:
        draw.rectangle((x - 1, y - 1, x + _SWATCH, y + _SWATCH), outline=(96, 96, 96))
        draw.text((x + _SWATCH + _PAD // 2, y), name, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def _legend_entries(labels, predictions, class_names) -> list[tuple[int, str]]:
    """``(class id, name)`` of every class (only those shown, past FULL_LEGEND classes), and
    ``(-1, 'ignored')`` when ignored pixels are shown."""
    shown = np.unique(np.concatenate([np.ravel(labels), np.ravel(predictions)]))
    classes = range(len(class_names))
    if len(class_names) > FULL_LEGEND:
        classes = [c for c in classes if c in set(shown.tolist())]
    entries = [(c, class_names[c]) for c in classes]
    if ((shown < 0) | (shown >= len(class_names))).any():
        entries.append((-1, "ignored"))
    return entries
