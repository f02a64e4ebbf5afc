"""Which input sizes a model accepts, and what output size each gives.

The one place that decides valid input sizes: models call these checks on their static input
shape, and data pipelines and inference ask the same functions, so a wrong size becomes a clear
``ValueError`` naming the nearest valid sizes instead of an XLA shape error.
"""

from __future__ import annotations

from collections.abc import Sequence

_UNET_BLOCK_SHRINK = 4  # Two unpadded 3x3 convolutions lose 2 pixels each.


def _nearest(size: int, is_valid, limit: int = 1 << 16) -> tuple[int | None, int | None]:
    below = next((s for s in range(size - 1, 0, -1) if is_valid(s)), None)
    above = next((s for s in range(size + 1, size + limit) if is_valid(s)), None)
    return below, above


def _describe_nearest(size: int, is_valid) -> str:
    below, above = _nearest(size, is_valid)
    options = [str(s) for s in (below, above) if s is not None]
    return f"nearest valid sizes: {' or '.join(options)}" if options else "no valid size nearby"


def check_divisible(model: str, spatial: Sequence[int], factor: int) -> None:
    """Raises a ``ValueError`` unless every spatial size is a positive multiple of ``factor``."""
    for axis, size in zip(("height", "width"), spatial):
        if size <= 0 or size % factor:
            near = _describe_nearest(size, lambda s: s % factor == 0)
            raise ValueError(
                f"{model} needs height and width divisible by {factor}; got {axis} {size} ({near})"
            )


def unet_output_size(size: int, depth: int = 4) -> int | None:
    """Output size of a valid-padding U-Net for one spatial input size, or ``None`` if invalid.

    A size is valid when every feature map that is max-pooled has an even size and every
    convolution leaves at least one pixel. With ``depth=4`` (the paper's network) an input of
    572 gives 388.

    >>> unet_output_size(572)
    388
    >>> unet_output_size(573) is None
    True
    """
    s = size
    for _ in range(depth):
        s -= _UNET_BLOCK_SHRINK
        if s <= 0 or s % 2:
            return None
        s //= 2
    s -= _UNET_BLOCK_SHRINK  # Bottleneck block.
    for _ in range(depth):
        if s <= 0:
            return None
        s = 2 * s - _UNET_BLOCK_SHRINK
    return s if s > 0 else None


def valid_unet_input_sizes(depth: int = 4, max_size: int = 1024) -> list[int]:
    """All valid input sizes of a valid-padding U-Net up to ``max_size``.

    >>> valid_unet_input_sizes(4, 220)
    [188, 204, 220]
    """
    return [s for s in range(1, max_size + 1) if unet_output_size(s, depth) is not None]


def unet_input_size_for_output(output_size: int, depth: int = 4) -> int:
    """Smallest valid input size whose valid-padding U-Net output covers ``output_size`` pixels.

    >>> unet_input_size_for_output(388)
    572
    """
    size = 1
    while (out := unet_output_size(size, depth)) is None or out < output_size:
        size += 1
    return size


def check_unet_input(spatial: Sequence[int], depth: int, padding: str) -> None:
    """Raises a ``ValueError`` if a U-Net of this depth and padding cannot take this input."""
    if padding == "SAME":
        check_divisible(f"A 'SAME'-padded U-Net of depth {depth}", spatial, 2**depth)
        return
    for axis, size in zip(("height", "width"), spatial):
        if unet_output_size(size, depth) is None:
            near = _describe_nearest(size, lambda s: unet_output_size(s, depth) is not None)
            raise ValueError(
                f"A valid-padding U-Net of depth {depth} cannot take input {axis} {size}: each "
                f"pooled map must have an even size ({near}; see "
                f"jaxseg.models.valid_unet_input_sizes)"
            )
