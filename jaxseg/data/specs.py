"""One place for every dataset's facts: classes, ignore label, channels, splits, label mapping.

Everything else (builders, the loader, configs, the trainer, evaluation) asks ``get_spec(name)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

IGNORE_INDEX = -1  # The label the loader emits for ignored pixels, whatever the dataset stores.
INVALID = -2  # Marks stored label values that are errors in a lookup table (see ``label_lut``).


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the rest of jaxseg needs to know about a dataset.

    Attributes:
      name: the jaxseg dataset name used in configs.
      tfds_name: the TFDS builder name (``name/config`` for builder configs).
      class_names: one name per class; ``num_classes = len(class_names)``.
      ignore_label: label value excluded from losses and metrics (``None``: no such value).
      num_channels: image channels.
      train_split, eval_split: default splits for training and evaluation.
      raw_to_class: how stored label values map to class ids; values not listed are errors
        (builders with their own validation), or, with ``unlisted_to_ignore``, ignored.
      unlisted_to_ignore: map unlisted raw values to the ignore label (catalog datasets).
      needs_manual_dir: the builder reads the user's copy of the data from ``manual_dir``.
      license_note: terms of use, said wherever the data is used.
    """

    name: str
    tfds_name: str
    class_names: tuple[str, ...]
    ignore_label: int | None = None
    num_channels: int = 3
    train_split: str = "train"
    eval_split: str = "validation"
    raw_to_class: Mapping[int, int] | None = None
    unlisted_to_ignore: bool = False
    needs_manual_dir: bool = False
    license_note: str = ""
    image_key: str = "image"
    mask_key: str = "segmentation_mask"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_lut(self) -> np.ndarray:
        """``int32[256]``: stored label value -> class id, ``IGNORE_INDEX`` or ``INVALID``.

        Without ``raw_to_class``, values ``0..num_classes-1`` map to themselves. The ignore
        label (and, with ``unlisted_to_ignore``, every unlisted value) maps to ``IGNORE_INDEX``;
        everything else is ``INVALID``.
        """
        lut = np.full(256, INVALID, np.int32)
        mapping = self.raw_to_class
        if mapping is None:
            mapping = {c: c for c in range(self.num_classes)}
        for raw, cls in mapping.items():
            lut[raw] = cls
        if self.ignore_label is not None:
            if self.unlisted_to_ignore:
                lut[lut == INVALID] = IGNORE_INDEX
            lut[self.ignore_label] = IGNORE_INDEX
        return lut


_NON_COMMERCIAL = "research and non-commercial use only; cite the dataset's authors"

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree",
    "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "dining_table", "dog", "horse", "motorbike", "person", "potted_plant",
    "sheep", "sofa", "train", "tv_monitor",
)  # fmt: skip

# Cityscapes label id -> train id (the 19 evaluated classes); every other id is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# ADE20K SceneParsing (objectInfo150, in order; the first of each entry's synonyms). Stored label
# 0 is "other" (ignored); stored 1..150 are classes 0..149.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest_of_drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool_table", "pillow", "screen_door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee_table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen_island", "computer", "swivel_chair", "boat", "bar", "arcade_machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television_receiver", "airplane", "dirt_track", "apparel", "pole", "land", "bannister", "escalator",
    "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer_belt",
    "canopy", "washer", "plaything", "swimming_pool", "stool", "barrel", "basket", "waterfall",
    "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade_name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic_light", "tray", "ashcan", "fan", "pier",
    "crt_screen", "plate", "monitor", "bulletin_board", "shower", "radiator", "glass", "clock",
    "flag",
)  # fmt: skip

SYNTHETIC_CLASSES = ("background", "disc", "box", "triangle", "thin_line")

SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="synthetic_shapes",
            tfds_name="synthetic_shapes",
            class_names=SYNTHETIC_CLASSES,
        ),
        DatasetSpec(
            name="isbi2012",
            tfds_name="isbi2012",
            class_names=("membrane", "cell"),
            num_channels=1,
            train_split="train[:20]",  # The paper trained on all 30 slices; we hold 4 out.
            eval_split="train[20:]",
            raw_to_class={0: 0, 255: 1},
            needs_manual_dir=True,
            license_note="ISBI 2012 EM data (Cardona et al. 2010): " + _NON_COMMERCIAL,
        ),
        DatasetSpec(
            name="camvid",
            tfds_name="camvid",
            class_names=CAMVID_CLASSES,
            ignore_label=11,
            needs_manual_dir=True,
            license_note="CamVid (Brostow et al. 2008/2009), SegNet preparation: "
            + _NON_COMMERCIAL,
        ),
        DatasetSpec(
            name="voc2012_segmentation",
            tfds_name="voc2012_segmentation",
            class_names=VOC_CLASSES,
            ignore_label=255,
            needs_manual_dir=True,
            license_note="PASCAL VOC 2012: images are Flickr's, under their own terms; "
            + _NON_COMMERCIAL,
        ),
        DatasetSpec(
            name="oxford_iiit_pet",
            tfds_name="oxford_iiit_pet",
            class_names=("pet", "background", "border"),
            raw_to_class={1: 0, 2: 1, 3: 2},  # The trimap stores 1..3.
            ignore_label=255,  # Never in the real trimaps; anything but 1..3 is ignored.
            unlisted_to_ignore=True,
            eval_split="test",
            license_note="Oxford-IIIT Pet: CC BY-SA 4.0",
        ),
        DatasetSpec(
            name="cityscapes",
            tfds_name="cityscapes/semantic_segmentation",
            class_names=CITYSCAPES_CLASSES,
            ignore_label=255,
            raw_to_class=CITYSCAPES_TRAIN_IDS,
            unlisted_to_ignore=True,
            image_key="image_left",
            mask_key="segmentation_label",
            needs_manual_dir=True,
            license_note="Cityscapes: " + _NON_COMMERCIAL,
        ),
        # ADE20K from the user's copy of the official SceneParsing release, ADEChallengeData2016
        # (jaxseg/data/ade20k.py). Not TFDS's catalog scene_parse150, which cannot be made right:
        # its builder (TFDS 4.9.10) downloads ChallengeData2017/annotations_instance.tar, whose
        # red channel is the instance task's category id (100 object classes, no wall, sky or
        # floor), so these 150 classes cannot be recovered from it by any relabelling.
        DatasetSpec(
            name="ade20k",
            tfds_name="ade20k",
            class_names=ADE20K_CLASSES,
            ignore_label=0,  # "other": pixels of none of the 150 classes.
            raw_to_class={raw: raw - 1 for raw in range(1, 151)},  # 151..255 are errors.
            needs_manual_dir=True,
            license_note="ADE20K / MIT Scene Parsing (Zhou et al. 2017): research use; see the "
            "dataset's terms (groups.csail.mit.edu/vision/datasets/ADE20K); images keep their "
            "own licences",
        ),
    )
}


def folder_spec(
    name: str, class_names: tuple[str, ...], ignore_label: int | None = None, num_channels: int = 3
) -> DatasetSpec:
    """Spec of a user's folder dataset (``images/`` + ``masks/``), class names from the config."""
    if ignore_label is not None and not len(class_names) <= ignore_label <= 255:
        raise ValueError(
            f"ignore_label {ignore_label} must be a stored value that is not a class: "
            f"{len(class_names)}..255 (classes are 0..{len(class_names) - 1})"
        )
    return DatasetSpec(
        name=name,
        tfds_name=f"segmentation_folder/{name}",
        class_names=tuple(class_names),
        ignore_label=ignore_label,
        num_channels=num_channels,
        needs_manual_dir=True,
    )


def get_spec(name: str, **folder_kwargs) -> DatasetSpec:
    """The spec of a named dataset; ``folder:NAME`` builds a folder dataset's spec."""
    if name.startswith("folder:"):
        if not folder_kwargs.get("class_names"):
            raise ValueError(f"dataset {name!r} needs class_names in the config")
        return folder_spec(name.split(":", 1)[1], **folder_kwargs)
    if name not in SPECS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {sorted(SPECS)} or 'folder:NAME'"
        )
    return SPECS[name]
