"""Prediction of images of any size, tile by tile, with memory bounded by the tile batch.

Two tiling modes, laid out by ``jaxseg.tiling`` (its doc says where tiles go, and why):
``'overlap_tile'`` for valid-padding models (U-Net paper, Fig. 2), whose output tiles partition
the mirror-extended image, so that the stitch equals predicting the whole mirror-padded image at
once; ``'sliding_window'`` for 'SAME' models, whose overlapping windows are blended with a
Gaussian weight (as nnU-Net).

Tiles are gathered with mirrored indices (no padded copy), batched, sharded over
``Mesh(devices, ('data',))`` by one ``jax.jit`` and stitched on the host into a float32
``[H, W, K]`` array: device memory depends on the tile batch only. Test-time augmentation runs
the pipeline on each dihedral transform of the image and adds the result into the same
transform of the output (a NumPy view), mapping it back; it averages in the output space
(probabilities by default, as nnU-Net).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxseg import xla_options
from jaxseg.tiling import Axis, mirror, overlap_tile_axis, sliding_axis
from jaxseg.tiling import unet_tile_size as unet_tile_size  # Re-exported.

MODES = ("overlap_tile", "sliding_window")
OUTPUTS = ("probabilities", "logits")
Transform = tuple[int, bool]  # (quarter turns counter-clockwise, flip left-right first)
DIHEDRAL: tuple[Transform, ...] = tuple((k, f) for f in (False, True) for k in range(4))
TTA_PRESETS: dict[str, tuple[Transform, ...]] = {
    "dihedral": DIHEDRAL,
    "rotations": tuple((k, False) for k in range(4)),  # As the U-Net paper on ISBI 2012.
    "flips": ((0, False), (0, True), (2, True), (2, False)),  # None, left-right, up-down, both.
}


def _transform(x: np.ndarray, t: Transform) -> np.ndarray:
    """A dihedral transform of the first two axes, as a view."""
    return np.rot90(x[:, ::-1] if t[1] else x, t[0])


class Predictor:
    """Predicts ``[H, W, C]`` images of any size tile by tile; reuse it to reuse compilation.

    Args:
      apply_fn: ``images [B, h, w, C] -> logits [B, h', w', K]``, or, given ``variables``,
        ``(variables, images) -> logits`` (e.g. ``model.apply``). Arrays it closes over are
        compiled in as constants: pass large ones as ``variables``.
      mode: ``'overlap_tile'`` (``h' = h - 2 * margin``) or ``'sliding_window'`` (``h' = h``).
      tile_size: input tile (window) size, int or ``(height, width)``, valid for the model.
      tile_batch_size: tiles per device call; rounded up to a multiple of the device count.
      overlap: for ``sliding_window``, the fraction in ``[0, 1)`` of a window its next shares.
      alignment: tiles start at multiples of this; the model's downsampling factor
        (``2**depth`` for a U-Net) makes every tile see the pooling grid in the same phase.
      size_multiple: for ``sliding_window``, the sizes the model takes are multiples of this:
        an image side shorter than the window gets a window of that side rounded up to it
        (the whole-image prediction) instead of a full, mirror-filled window. ``None``: windows
        always have ``tile_size`` (for models that take that size only).
      tta: test-time augmentation: ``None``, ``True`` (all 8 dihedral transforms), a
        ``TTA_PRESETS`` name, or a sequence of ``(quarter_turns, flip)`` pairs.
      output: ``'probabilities'`` (softmax, blended and averaged) or ``'logits'`` (blended and
        averaged as logits).
      devices: devices to shard each tile batch over (default: ``jax.devices()``).
      variables: optional pytree for ``apply_fn``, replicated on the devices once.

    Raises:
      ValueError: for a bad mode, output, overlap, batch size, tta or tile size.
    """

    def __init__(
        self,
        apply_fn: Callable[..., jax.Array],
        *,
        mode: str,
        tile_size: int | Sequence[int],
        tile_batch_size: int = 8,
        overlap: float = 0.5,
        alignment: int = 1,
        size_multiple: int | None = None,
        tta: bool | str | Sequence[Transform] | None = None,
        output: str = "probabilities",
        devices: Sequence[jax.Device] | None = None,
        variables=None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1); got {overlap}")
        positive = [("tile_batch_size", tile_batch_size), ("alignment", alignment)]
        if size_multiple is not None:
            positive.append(("size_multiple", size_multiple))
        for name, value in positive:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        self.mode, self.output, self.overlap, self.alignment = mode, output, overlap, alignment
        self.size_multiple = size_multiple
        self.tile_size = _pair(tile_size)
        self.tta = _parse_tta(tta)
        self.devices = list(devices) if devices is not None else jax.devices()
        self.tile_batch_size = -(-tile_batch_size // len(self.devices)) * len(self.devices)
        mesh = Mesh(np.asarray(self.devices), ("data",))
        self._sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
        self._variables = jax.device_put(variables, replicated)
        self._out_tiles: dict[int, tuple[int, int, int]] = {}

        def tile_fn(variables, x: jax.Array) -> jax.Array:
            logits = apply_fn(x) if variables is None else apply_fn(variables, x)
            logits = logits.astype(jnp.float32)
            return jax.nn.softmax(logits, axis=-1) if output == "probabilities" else logits

        self._tile_fn = tile_fn
        shardings = dict(in_shardings=(replicated, self._sharding), out_shardings=self._sharding)
        options = xla_options.compiler_options(self.devices[0].platform)  # CPU: 2x faster.
        self._fn = jax.jit(tile_fn, **shardings, compiler_options=options)

    def output_tile_shape(self, channels: int) -> tuple[int, int, int]:
        """``(h', w', K)``: the model's output for one input tile of ``channels`` channels."""
        if channels not in self._out_tiles:
            (th, tw), mode = self.tile_size, self.mode
            x = jax.ShapeDtypeStruct((1, th, tw, channels), jnp.float32)
            _, oh, ow, k = jax.eval_shape(self._tile_fn, self._variables, x).shape
            shape = f"tile {th}x{tw} gives output {oh}x{ow}"
            if mode == "sliding_window" and (oh, ow) != (th, tw):
                raise ValueError(f"sliding_window needs a 'SAME' model; {shape}: use overlap_tile")
            if mode == "overlap_tile" and ((th - oh) % 2 or (tw - ow) % 2 or oh > th or ow > tw):
                raise ValueError(f"overlap_tile needs an output smaller by even margins; {shape}")
            if min(oh, ow) < self.alignment:
                raise ValueError(f"{shape}, smaller than alignment {self.alignment}")
            self._out_tiles[channels] = (oh, ow, k)
        return self._out_tiles[channels]

    def tile_grid(self, shape: Sequence[int]) -> tuple[int, int]:
        """Tile rows and columns for an image of shape ``[H, W, C]`` (per TTA transform)."""
        (oh, ow, _), (th, tw) = self.output_tile_shape(shape[2]), self.tile_size
        return len(self._axis(shape[0], th, oh).spans), len(self._axis(shape[1], tw, ow).spans)

    def __call__(self, image: np.ndarray, *, divide_by: float | None = None) -> np.ndarray:
        """Predicts one image.

        Args:
          image: ``[height, width, channels]``, any real dtype (given to the model as float32).
          divide_by: divide the pixels by this on the way to the model (``255.0`` for uint8
            images), tile by tile, so that no float copy of a large image is ever made.

        Returns:
          float32 ``[height, width, num_classes]`` probabilities or logits.
        """
        image = np.asarray(image)
        if image.ndim != 3 or min(image.shape) < 1:
            raise ValueError(f"image must be [height, width, channels]; got shape {image.shape}")
        oh, ow, k = self.output_tile_shape(image.shape[-1])
        out = np.zeros((*image.shape[:2], k), np.float32)
        for t in self.tta:
            self._predict_into(_transform(image, t), _transform(out, t), (oh, ow), divide_by)
        if len(self.tta) > 1:
            out /= len(self.tta)
        return out

    def _axis(self, size: int, tile: int, out: int) -> Axis:
        if self.mode == "overlap_tile":
            return overlap_tile_axis(size, tile, out, self.alignment)
        step = int(tile * (1 - self.overlap)) // self.alignment * self.alignment
        return sliding_axis(size, tile, max(step, self.alignment), self.alignment,
                            self.size_multiple)  # fmt: skip

    def _predict_into(
        self, image: np.ndarray, out: np.ndarray, out_tile: tuple[int, int], divide_by=None
    ):
        """Adds the prediction of ``image [H, W, C]`` into ``out [H, W, K]`` (may be a view)."""
        (h, w, c), (th, tw) = image.shape, self.tile_size
        ay, ax = self._axis(h, th, out_tile[0]), self._axis(w, tw, out_tile[1])
        th, tw = ay.tile, ax.tile  # Sliding windows shrink on a side shorter than a window.
        rows = [mirror(np.arange(s, s + th), h) for s in ay.starts]
        cols = [mirror(np.arange(s, s + tw), w) for s in ax.starts]
        tiles = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
        n_dev = len(self.devices)
        batch = min(self.tile_batch_size, -(-len(tiles) // n_dev) * n_dev)
        pending = None
        for first in range(0, len(tiles), batch):
            chunk = tiles[first : first + batch]
            x = np.zeros((batch, th, tw, c), np.float32)  # Zero tiles pad the last batch.
            for n, (i, j) in enumerate(chunk):
                x[n] = image[np.ix_(rows[i], cols[j])]
            if divide_by is not None:
                x /= np.float32(divide_by)  # As dividing the whole image, tile by tile.
            # Dispatch is asynchronous: the previous batch is stitched while this one runs.
            y = self._fn(self._variables, jax.device_put(x, self._sharding))
            if pending is not None:
                _stitch(out, *pending, ay, ax)
            pending = (chunk, y)
        _stitch(out, *pending, ay, ax)


def _stitch(out: np.ndarray, chunk, y: jax.Array, ay: Axis, ax: Axis) -> None:
    y = np.asarray(y)
    for n, (i, j) in enumerate(chunk):
        (y0, y1), (x0, x1) = ay.spans[i], ax.spans[j]
        pred = y[n, : y1 - y0, : x1 - x0]
        if ay.weights is not None:
            pred = pred * (ay.weights[i][:, None, None] * ax.weights[j][None, :, None])
        out[y0:y1, x0:x1] += pred


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ValueError(f"tile_size must be a positive int or (height, width); got {size!r}")
    return pair


def _parse_tta(tta) -> tuple[Transform, ...]:
    if tta is None or tta is False:
        return ((0, False),)
    if tta is True:
        return DIHEDRAL
    if isinstance(tta, str):
        if tta not in TTA_PRESETS:
            raise ValueError(f"tta must be None, True, one of {sorted(TTA_PRESETS)} or pairs")
        return TTA_PRESETS[tta]
    transforms = tuple((int(k) % 4, bool(f)) for k, f in tta)
    if not transforms or len(set(transforms)) != len(transforms):
        raise ValueError(f"tta needs distinct (quarter_turns, flip) pairs; got {tta!r}")
    return transforms


def predict(apply_fn: Callable[..., jax.Array], image: np.ndarray, **kwargs) -> np.ndarray:
    """Predicts one ``[H, W, C]`` image: ``Predictor(apply_fn, **kwargs)(image)``.

    Returns:
      float32 ``[H, W, num_classes]`` probabilities or logits.
    """
    return Predictor(apply_fn, **kwargs)(image)


def for_model(
    model: nn.Module, variables, *, tile_size: int | Sequence[int] | None = None, **kwargs
) -> Predictor:
    """A ``Predictor`` for a jaxseg model, with the mode, alignment and tile size it needs.

    Valid-padding U-Nets get overlap-tile (default tile: the input of a 256-pixel output tile),
    the others sliding windows (default 256, a multiple of every model's size factor) that
    shrink to an image side shorter than a window, rounded up to the size factor (one compiled
    shape per such size).

    Args:
      model: a jaxseg model (any module with a ``geometry()`` method).
      variables: its variables (``{'params': ...}``, and ``batch_stats`` if any).
      tile_size: input tile (window) size, int or ``(height, width)``; checked against the model.
      **kwargs: other ``Predictor`` arguments (``tile_batch_size``, ``overlap``, ``tta``, ...).

    Raises:
      ValueError: a tile size the model cannot take (naming the nearest valid sizes).
    """
    if not callable(getattr(type(model), "geometry", None)):
        raise ValueError(
            f"no tiling known for {type(model).__name__}: it has no geometry() method "
            "(jaxseg.models.geometry); use Predictor with a mode"
        )
    geometry = model.geometry()  # What the model takes: jaxseg.models.geometry.
    tile = _pair(geometry.default_tile if tile_size is None else tile_size)
    geometry.check_input(tile)
    kwargs.update(
        mode=geometry.tiling, tile_size=tile, alignment=geometry.alignment, variables=variables
    )
    if not geometry.valid_padding:
        kwargs.setdefault("size_multiple", geometry.size_multiple)
    return Predictor(model.apply, **kwargs)
