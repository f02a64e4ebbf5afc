"""The U-Net paper's pixel weight map, made on the host (NumPy/SciPy) by the input pipeline.

``border_weight_map(label)`` is the loader's ``weight_fn`` when ``config.border_weights`` is on;
the train step passes the map to the cross-entropy as ``pixel_weights``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["border_weight_map", "nearest_object_distances"]


def nearest_object_distances(
    objects: np.ndarray, *, max_distance: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every pixel to its nearest and second-nearest object.

    The distance from a pixel to an object is the Euclidean distance between pixel centres to
    the object's nearest pixel: 0 inside the object, 1 for a 4-neighbour of it. For a pixel
    outside every object that is the distance to the object's border.

    Runs one exact Euclidean distance transform per object, restricted to the object's
    bounding box grown by `max_distance`: distances up to `max_distance` are exact, larger
    ones are reported as `inf`. With `max_distance=None` every transform covers the whole
    image (exact everywhere, slower).

    Args:
      objects: `[height, width]` integer object ids, 0 = no object, ids need not be dense.
      max_distance: distance beyond which objects are not tracked.

    Returns:
      `(d1, d2)`: float64 `[height, width]` arrays, `d1 <= d2`; `inf` where fewer than one /
      two objects lie within `max_distance` (or exist).
    """
    objects = np.asarray(objects)
    if objects.ndim != 2:
        raise ValueError(f"objects must be 2-D [height, width], got shape {objects.shape}")
    d1 = np.full(objects.shape, np.inf)
    d2 = np.full(objects.shape, np.inf)
    height, width = objects.shape
    margin = None if max_distance is None else int(math.ceil(max_distance))
    for index, box in enumerate(ndimage.find_objects(objects)):
        if box is None:  # an id between 1 and max that does not occur
            continue
        object_id = index + 1
        if margin is None:
            window = (slice(0, height), slice(0, width))
        else:
            window = (
                slice(max(box[0].start - margin, 0), min(box[0].stop + margin, height)),
                slice(max(box[1].start - margin, 0), min(box[1].stop + margin, width)),
            )
        # Exact inside the window: the object lies wholly within it.
        distance = ndimage.distance_transform_edt(objects[window] != object_id)
        if max_distance is not None:
            distance[distance > max_distance] = np.inf
        near, second = d1[window], d2[window]
        d2[window] = np.minimum(second, np.maximum(near, distance))
        d1[window] = np.minimum(near, distance)
    return d1, d2


def border_weight_map(
    label: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    foreground: int | Sequence[int] = 1,
    class_balance: bool = True,
    ignore_label: int | None = None,
    connectivity: int = 4,
) -> np.ndarray:
    r"""The U-Net paper's pixel weight map (Ronneberger et al. 2015, eq. 2), on the host.

    `w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))` for background pixels and
    `w(x) = w_c(x)` for object pixels, where

    * objects are the connected components (`connectivity` 4 or 8) of each class in
      `foreground`, labelled class by class (touching objects of two classes stay two objects);
      for ISBI, cells (label 1) are objects and membrane (label 0) is background;
    * `d1`, `d2` are the distances from `x` to the border of the nearest and second-nearest
      object (`nearest_object_distances`: centre-to-centre distance to the nearest object
      pixel, 1 for a pixel touching an object);
    * `w_c(x) = N / (C * n_{y(x)})` with `n_k` the number of pixels of class `k` in this label,
      `N = sum_k n_k` and `C` the number of classes present (ignore pixels left out). Every
      present class then carries the same total weight `N / C`, and `w_c` averages 1 over the
      image. `class_balance=False` gives `w_c = 1`.

    The separation term is applied to background (non-object) pixels only. The paper forces
    the network to learn "the small separation borders between touching cells", i.e. the
    background gaps; its Fig. 3d shows the weight high in those gaps and not inside cells. An
    object pixel has `d1 = 0`, so applying the formula there would up-weight the rims of cells
    near a neighbour instead. With fewer than two objects, `d2 = inf` and the term is 0.
    Objects farther than `6 * sigma` are not tracked (`d2 > 6 sigma` bounds the term by
    `w0 * e^-18`, about `1.5e-7 * w0`), which keeps the cost to one small distance transform
    per object.

    Args:
      label: `[height, width]` integer class map (ISBI: 1 = cell, 0 = membrane).
      w0: weight of the separation term.
      sigma: width of the separation term, in pixels.
      foreground: class id(s) whose connected components are objects.
      class_balance: whether to include the class-frequency weight `w_c` (else 1).
      ignore_label: class id whose pixels get weight 0 and are left out of `w_c`.
      connectivity: 4 or 8, the connectivity of objects.

    Returns:
      float32 `[height, width]` weight map.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D [height, width], got shape {label.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    foreground = [foreground] if np.isscalar(foreground) else list(foreground)
    counted = np.ones(label.shape, bool) if ignore_label is None else label != ignore_label

    weights = np.ones(label.shape, np.float64)
    if class_balance:
        classes, counts = np.unique(label[counted], return_counts=True)
        for cls, count in zip(classes, counts):
            weights[label == cls] = counted.sum() / (len(classes) * count)

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    objects = np.zeros(label.shape, np.int32)
    num_objects = 0
    for cls in foreground:
        components, count = ndimage.label(label == cls, structure=structure)
        objects[components > 0] = components[components > 0] + num_objects
        num_objects += count

    if num_objects >= 2 and w0 != 0:
        d1, d2 = nearest_object_distances(objects, max_distance=6.0 * sigma)
        background = (objects == 0) & counted & np.isfinite(d2)
        total = d1[background] + d2[background]
        weights[background] += w0 * np.exp(-(total**2) / (2.0 * sigma**2))
    weights[~counted] = 0.0
    return weights.astype(np.float32)
