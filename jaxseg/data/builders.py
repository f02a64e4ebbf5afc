"""TFDS builders for datasets read from the user's own copy (``manual_dir``).

Each is a ``tfds.core.GeneratorBasedBuilder`` prepared as ``array_record`` and read back with
``tfds.data_source`` (no TensorFlow). Every example is checked while preparing: a mask whose
size differs from its image, or a label value that is neither a class nor the ignore label,
stops preparation with an error naming the file; nothing is silently dropped.
"""

from __future__ import annotations

import glob
import inspect
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data import files, pixels, readers
from jaxseg.data.specs import INVALID, SPECS, DatasetSpec, folder_spec

Pair = tuple[str, str, str]  # (key, image path, mask path)


def features(num_channels: int, as_stored: bool = False) -> tfds.features.FeaturesDict:
    """``as_stored``: images of any type and channel count, lossless (``pixels.encode`` bytes);
    otherwise ``uint8`` PNG."""
    if as_stored:
        image = tfds.features.Tensor(shape=(), dtype=np.object_)
    else:
        image = tfds.features.Image(shape=(None, None, num_channels), encoding_format="png")
    return tfds.features.FeaturesDict(
        {
            "image": image,
            "segmentation_mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            "file_name": tfds.features.Text(),
        }
    )


def manual_root(dl_manager, dataset: str, expected: str) -> str:
    """The user's ``manual_dir``, or a clear error if it is not given, missing or empty."""
    try:
        root = os.fspath(dl_manager.manual_dir)
    except (AssertionError, ValueError) as e:  # TFDS raises a bare AssertionError.
        raise ValueError(
            f"dataset {dataset!r} needs manual_dir: a folder holding {expected}"
        ) from e
    if not os.path.isdir(root) or not os.listdir(root):
        raise ValueError(
            f"manual_dir {root!r} for dataset {dataset!r} is missing or empty; it must hold {expected}"
        )
    return root


def paired_files(image_dir: str, mask_dir: str, dataset: str) -> list[Pair]:
    """Pairs images and masks by file stem; an image without a mask (or vice versa) is an error."""
    for folder in (image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise ValueError(f"dataset {dataset!r}: folder {folder!r} does not exist")
    images, masks = files.list_images(image_dir), files.list_images(mask_dir)
    unpaired = sorted(set(images) ^ set(masks))
    if unpaired:
        raise ValueError(
            f"dataset {dataset!r}: {len(unpaired)} file(s) have no partner between {image_dir!r} "
            f"and {mask_dir!r}, e.g. {unpaired[:3]}"
        )
    if not images:
        raise ValueError(f"dataset {dataset!r}: no images in {image_dir!r}")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder defined in jaxseg. TFDS finds a builder's source through its package's
    resources, which fails for editable installs (``pip install -e``); the class's own file is
    the answer."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))


class ManualBuilder(LocalBuilder, skip_registration=True):
    """Shared reading and checking for builders of files in ``manual_dir``."""

    VERSION = tfds.core.Version("1.0.0")
    EXPECTED = ""  # What manual_dir must hold, for messages.
    AS_STORED = False  # Images kept in their own type and channel count (else uint8 PNG).
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Set manual_dir (config.manual_dir) to your copy of the data."

    @property
    def spec(self) -> DatasetSpec:
        return SPECS[self.name]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.spec.name}: {self.EXPECTED}. {self.spec.license_note}",
            features=features(self.spec.num_channels, self.AS_STORED),
            supervised_keys=("image", "segmentation_mask"),
            disable_shuffling=True,  # Examples stay in file / index order.
        )

    def _generate_examples(self, pairs: list[Pair]) -> Iterator[tuple[str, dict]]:
        valid = self.spec.label_lut() != INVALID
        for key, image_path, mask_path in pairs:
            image = self._read_image(image_path)
            mask = files.read_mask(mask_path)
            yield key, self._example(image, mask, f"{image_path} / {mask_path}", valid)

    def _read_image(self, path: str) -> np.ndarray:
        return files.read_image(path, self.spec.num_channels)

    def _example(self, image: np.ndarray, mask: np.ndarray, name: str, valid: np.ndarray) -> dict:
        files.check_example(image, mask, valid, name)
        return {
            "image": pixels.encode(image) if self.AS_STORED else files.encode_png(image),
            "segmentation_mask": files.encode_png(mask),
            "file_name": os.path.basename(name.split(" / ")[0]),
        }


class Isbi2012(ManualBuilder):
    """ISBI 2012 EM membranes: labelled training slices (membrane = 0, cell = 1).

    ``manual_dir`` holds either the challenge's ``train-volume.tif`` + ``train-labels.tif``
    (multi-page TIFFs) or per-slice ``image_NN.png`` + ``label_NN.png``. The unlabelled test
    volume is not a split here: predict it with ``python -m jaxseg.predict``.
    """

    EXPECTED = "train-volume.tif + train-labels.tif, or image_NN.png + label_NN.png slices"

    def _split_generators(self, dl_manager):
        root = manual_root(dl_manager, self.name, self.EXPECTED)
        volume = os.path.join(root, "train-volume.tif")
        if os.path.exists(volume):
            return {"train": self._tiff_examples(volume, os.path.join(root, "train-labels.tif"))}
        images = sorted(glob.glob(os.path.join(root, "image_*.png")))
        if not images:
            raise ValueError(f"manual_dir {root!r} holds neither {self.EXPECTED}")
        pairs = []
        for image in images:
            label = os.path.join(root, "label_" + os.path.basename(image)[len("image_") :])
            if not os.path.exists(label):
                raise ValueError(f"ISBI slice {image!r} has no label file {label!r}")
            pairs.append((os.path.basename(image)[:-4], image, label))
        return {"train": self._generate_examples(pairs)}

    def _tiff_examples(self, volume: str, labels: str):
        if not os.path.exists(labels):
            raise ValueError(f"found {volume!r} but not its labels {labels!r}")
        valid = self.spec.label_lut() != INVALID
        images, masks = list(files.read_tiff_pages(volume)), list(files.read_tiff_pages(labels))
        if len(images) != len(masks):
            raise ValueError(f"{volume} has {len(images)} pages but {labels} has {len(masks)}")
        for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
            name = f"{volume} / {labels} page {index}"
            image = files.to_uint8(image)[..., None]
            yield (
                f"slice_{index:02d}",
                self._example(image, files.label_to_uint8(mask, name), name, valid),
            )


class Camvid(ManualBuilder):
    """CamVid in the SegNet layout: 11 classes at 360x480, label 11 (void) ignored."""

    EXPECTED = "train/ + trainannot/, val/ + valannot/ (and optionally test/ + testannot/)"

    def _split_generators(self, dl_manager):
        root = manual_root(dl_manager, self.name, self.EXPECTED)
        splits = {}
        for split, folder in (("train", "train"), ("validation", "val"), ("test", "test")):
            if os.path.isdir(os.path.join(root, folder)):
                pairs = paired_files(
                    os.path.join(root, folder), os.path.join(root, folder + "annot"), self.name
                )
                splits[split] = self._generate_examples(pairs)
        if "train" not in splits:
            raise ValueError(
                f"manual_dir {root!r} has no train/ folder; it must hold {self.EXPECTED}"
            )
        return splits


class Voc2012Segmentation(ManualBuilder):
    """PASCAL VOC 2012 segmentation: 21 classes, 255 (object borders) ignored.

    ``manual_dir`` holds ``VOCdevkit/VOC2012`` (or is that folder). Splits follow
    ``ImageSets/Segmentation``. If ``SegmentationClassAug/`` (the SBD-augmented masks as PNG)
    and ``ImageSets/Segmentation/train_aug.txt`` are present, a ``train_aug`` split is added.
    """

    EXPECTED = "VOCdevkit/VOC2012 with JPEGImages/, SegmentationClass/, ImageSets/Segmentation/"

    def _split_generators(self, dl_manager):
        root = manual_root(dl_manager, self.name, self.EXPECTED)
        for candidate in (
            os.path.join(root, "VOCdevkit", "VOC2012"),
            os.path.join(root, "VOC2012"),
            root,
        ):
            if os.path.isdir(os.path.join(candidate, "SegmentationClass")):
                root = candidate
                break
        else:
            raise ValueError(f"manual_dir {root!r} does not hold {self.EXPECTED}")
        lists = os.path.join(root, "ImageSets", "Segmentation")
        splits = {}
        for split, list_name, mask_folder in (
            ("train", "train", "SegmentationClass"),
            ("validation", "val", "SegmentationClass"),
            ("train_aug", "train_aug", "SegmentationClassAug"),
        ):
            list_file = os.path.join(lists, f"{list_name}.txt")
            if os.path.exists(list_file) and os.path.isdir(os.path.join(root, mask_folder)):
                with open(list_file) as f:
                    stems = [line.split()[0] for line in f if line.strip()]
                pairs = [
                    (
                        s,
                        os.path.join(root, "JPEGImages", f"{s}.jpg"),
                        os.path.join(root, mask_folder, f"{s}.png"),
                    )
                    for s in stems
                ]
                missing = [p for pair in pairs for p in pair[1:] if not os.path.exists(p)]
                if missing:
                    raise ValueError(
                        f"VOC split {split!r} lists files that do not exist, e.g. {missing[:3]}"
                    )
                splits[split] = self._generate_examples(pairs)
        if not splits:
            raise ValueError(f"no split lists in {lists!r}")
        return splits


class SegmentationFolderConfig(tfds.core.BuilderConfig):
    """A user's folder dataset: its name (the config name), class names and ignore label."""

    def __init__(self, *, class_names, ignore_label=None, num_channels=3, **kwargs):
        super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
        self.spec = folder_spec(self.name, tuple(class_names), ignore_label, num_channels)


class SegmentationFolder(ManualBuilder):
    """Users' own data: ``images/`` and ``masks/`` with matching file stems.

    Either one split (``manual_dir/images``, ``manual_dir/masks`` -> ``train``) or one folder per
    split (``manual_dir/train/images``, ``manual_dir/validation/masks``, ...). Images are kept as
    they are (``readers.read_one``): each file one image of the declared channel count (gray and
    RGB are converted, 8-bit alpha dropped), all of one pixel type (uint8, uint16 or float), which
    decides the dataset's scale.
    """

    EXPECTED = "images/ + masks/ (or <split>/images/ + <split>/masks/) with matching file stems"
    BUILDER_CONFIGS = []
    AS_STORED = True
    _first_image = None  # (dtype, path) of the first image read: every other must match.

    def _read_image(self, path: str) -> np.ndarray:
        image = readers.read_one(path, self.spec.num_channels)
        if self._first_image is None:
            self._first_image = (image.dtype, path)
        elif image.dtype != self._first_image[0]:
            raise ValueError(
                f"image file {path!r} has {image.dtype} pixels, but {self._first_image[1]!r} has "
                f"{self._first_image[0]}: one dataset holds one pixel type (it decides the scale: "
                "uint8 / 255, uint16 / 65535, float as it is)"
            )
        return image

    @property
    def spec(self) -> DatasetSpec:
        return self.builder_config.spec

    def _split_generators(self, dl_manager):
        root = manual_root(dl_manager, f"folder:{self.builder_config.name}", self.EXPECTED)
        if os.path.isdir(os.path.join(root, "images")):
            folders = {"train": root}
        else:
            folders = {
                d: os.path.join(root, d)
                for d in sorted(os.listdir(root))
                if os.path.isdir(os.path.join(root, d, "images"))
            }
        if not folders:
            raise ValueError(f"manual_dir {root!r} does not hold {self.EXPECTED}")
        return {
            split: self._generate_examples(
                paired_files(os.path.join(f, "images"), os.path.join(f, "masks"), self.spec.name)
            )
            for split, f in folders.items()
        }
