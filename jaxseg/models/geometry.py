"""What a model accepts and returns, in one place: every model's ``geometry()`` answers it.

Training (crop and evaluation sizes, the valid-padding margin), inference (tiling mode, tile
alignment, default tile) and export (the padded input for an image size) ask a model's
``Geometry`` instead of knowing model classes. A new model declares its ``geometry()`` and the
rest of jaxseg works with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jaxseg.models.sizes import (
    check_divisible,
    check_unet_input,
    unet_input_size_for_output,
    unet_output_size,
)

DEFAULT_TILE = 256  # Output pixels per tile (per axis) when the user names no tile size.


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The spatial contract of a model.

    Attributes:
      name: the model, for error messages.
      size_multiple: input height and width must be multiples of this (1: any size).
      alignment: tiles start on multiples of this, so that each meets the pooling grid in the
        phase the whole image does (``2**depth`` for a U-Net, 32 for VGG16's five poolings).
      valid_depth: ``None`` when the output has the input's size; the depth of a
        valid-padding (unpadded) U-Net, whose output is smaller than its input, otherwise.
    """

    name: str
    size_multiple: int = 1
    alignment: int = 1
    valid_depth: int | None = None

    @property
    def valid_padding(self) -> bool:
        """Whether the output is smaller than the input (unpadded convolutions)."""
        return self.valid_depth is not None

    @property
    def tiling(self) -> str:
        """How to predict large images: ``'overlap_tile'`` (valid padding, the U-Net paper's
        Fig. 2) or ``'sliding_window'`` (Gaussian-blended overlapping windows)."""
        return "overlap_tile" if self.valid_padding else "sliding_window"

    def check_input(self, spatial: Sequence[int]) -> None:
        """Raises a ``ValueError`` naming the nearest valid sizes if the model cannot take
        an input of ``spatial`` ``(height, width)``."""
        if self.valid_padding:
            check_unet_input(spatial, self.valid_depth, "VALID")
        else:
            check_divisible(self.name, spatial, self.size_multiple)

    def output_size(self, size: int) -> int | None:
        """Output size for an input size along one axis, or ``None`` if the model refuses it."""
        if self.valid_padding:
            return unet_output_size(size, self.valid_depth)
        return size if size > 0 and size % self.size_multiple == 0 else None

    def input_size_for_output(self, size: int) -> int:
        """The smallest input size whose output covers ``size`` pixels along one axis."""
        if self.valid_padding:
            return unet_input_size_for_output(size, self.valid_depth)
        return -(-size // self.size_multiple) * self.size_multiple

    @property
    def margin(self) -> int:
        """Pixels lost on each side between input and output (92 for the paper's U-Net)."""
        if not self.valid_padding:
            return 0
        size = self.input_size_for_output(1)
        return (size - self.output_size(size)) // 2

    @property
    def default_tile(self) -> int:
        """Input tile size for large-image prediction when none is named: the input of a
        256-pixel output tile."""
        return self.input_size_for_output(DEFAULT_TILE)
