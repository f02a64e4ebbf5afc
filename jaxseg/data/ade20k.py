"""ADE20K SceneParsing (MIT Scene Parsing Benchmark, 150 classes) from the user's copy of the
official release ``ADEChallengeData2016`` (``ADEChallengeData2016.zip``).

Not TFDS's catalog ``scene_parse150``: its builder (TFDS 4.9) downloads the 2017 instance
annotations, whose red channel is the instance task's category id, not these 150 classes (see the
``ade20k`` spec).

``manual_dir`` is the ``ADEChallengeData2016`` folder or the folder holding it::

    ADEChallengeData2016/images/training/ADE_train_00000001.jpg        (20,210 images: train)
    ADEChallengeData2016/annotations/training/ADE_train_00000001.png
    ADEChallengeData2016/images/validation/ADE_val_00000001.jpg        (2,000 images: validation)
    ADEChallengeData2016/annotations/validation/ADE_val_00000001.png

Annotations are single-channel 8-bit PNGs: 0 is "other" (ignored), 1..150 the classes (the
spec maps them to 0..149). Every image needs its annotation and every annotation its image, of
the same size, with values 0..150 only; anything else stops preparation with an error naming
the file. RGB JPEGs are stored as the release's own bytes (no second lossy encoding, and about
1 GB prepared where PNG would take about ten times that); the few others (grayscale, CMYK) are
converted to RGB and stored as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg.data import files
from jaxseg.data.builders import ManualBuilder, Pair, manual_root
from jaxseg.data.specs import INVALID

RELEASE = "ADEChallengeData2016"
# (split, the release's folder name, its number of images).
SPLITS = (("train", "training", 20_210), ("validation", "validation", 2_000))


def release_root(manual_dir: str) -> str:
    """The ``ADEChallengeData2016`` folder: ``manual_dir`` itself or its child of that name."""
    for candidate in (manual_dir, os.path.join(manual_dir, RELEASE)):
        if all(os.path.isdir(os.path.join(candidate, d)) for d in ("images", "annotations")):
            return candidate
    raise ValueError(
        f"manual_dir {manual_dir!r} for dataset 'ade20k' is neither the {RELEASE} folder nor "
        f"holds one: expected {Ade20k.EXPECTED}"
    )


def split_pairs(root: str, folder: str) -> list[Pair]:
    """``(stem, image, annotation)`` of ``images/<folder>`` and ``annotations/<folder>``, by stem;
    an image without its ``.png`` annotation, or an annotation without its image, is an error."""
    image_dir = os.path.join(root, "images", folder)
    mask_dir = os.path.join(root, "annotations", folder)
    for d in (image_dir, mask_dir):
        if not os.path.isdir(d):
            raise ValueError(f"ADE20K folder {d!r} does not exist; {RELEASE} holds {folder}/ in "
                             "both images/ and annotations/")  # fmt: skip
    images, masks = files.list_images(image_dir), files.list_images(mask_dir)
    for stem, image in images.items():
        mask = os.path.join(mask_dir, stem + ".png")
        if not os.path.isfile(mask):
            raise ValueError(f"ADE20K image {image!r} has no annotation {mask!r}")
    for stem, mask in masks.items():
        if stem not in images:
            raise ValueError(f"ADE20K annotation {mask!r} has no image {stem}.jpg in {image_dir!r}")
    if not images:
        raise ValueError(f"ADE20K folder {image_dir!r} holds no images")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


class Ade20k(ManualBuilder):
    """ADE20K SceneParsing from ``ADEChallengeData2016``: ``train`` and ``validation``."""

    EXPECTED = (
        f"{RELEASE}/images/{{training,validation}}/*.jpg + "
        f"{RELEASE}/annotations/{{training,validation}}/*.png"
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {RELEASE}.zip (sceneparsing.csail.mit.edu), unzip it and set manual_dir "
        f"(config.manual_dir) to the {RELEASE} folder or the folder holding it."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {
                # JPEG (the release's bytes) or PNG: each decodes by its own header.
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),  # PNG
                "file_name": tfds.features.Text(),
            }
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"ade20k: {self.EXPECTED}. {self.spec.license_note}",
            features=features,
            supervised_keys=("image", "segmentation_mask"),
            disable_shuffling=True,  # Examples stay in file name order.
        )

    def _split_generators(self, dl_manager):
        root = release_root(manual_root(dl_manager, self.name, self.EXPECTED))
        splits = {}
        for split, folder, official in SPLITS:
            pairs = split_pairs(root, folder)
            if len(pairs) != official:
                print(f"ade20k {split}: {len(pairs):,} images in {root} (the release has "
                      f"{official:,})", flush=True)  # fmt: skip
            splits[split] = self._generate_examples(pairs)
        return splits

    def _generate_examples(self, pairs: list[Pair]) -> Iterator[tuple[str, dict]]:
        valid = self.spec.label_lut() != INVALID
        for key, image_path, mask_path in pairs:
            image = self._read_image(image_path)  # Decoded in full: a damaged file is named.
            mask = files.read_mask(mask_path)
            files.check_example(image, mask, valid, f"{image_path} / {mask_path}")
            example = {
                "image": _stored_image(image_path, image),
                "segmentation_mask": files.encode_png(mask),
                "file_name": os.path.basename(image_path),
            }
            yield key, example


def _stored_image(path: str, image: np.ndarray) -> bytes:
    """An RGB JPEG's own bytes; any other image (grayscale, CMYK) as PNG of its RGB pixels."""
    with Image.open(path) as header:
        if header.format == "JPEG" and header.mode == "RGB":
            with open(path, "rb") as f:
                return f.read()
    return files.encode_png(image)
