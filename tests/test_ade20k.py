"""ADE20K from a tiny fake ``ADEChallengeData2016`` written here (JPEG images, 8-bit PNG
annotations): stored labels 1..150 become classes 0..149, 0 is ignored, ``manual_dir`` may be the
release folder or its parent, a file without its partner or a label above 150 is an error naming
the file, and a U-Net trains on it for 2 steps."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from trained_run import tiny_config

from jaxseg import data, summary, training
from jaxseg.data.specs import INVALID

RELEASE = "ADEChallengeData2016"
VALUES = (0, 1, 2, 13, 75, 150)  # Stored values: "other", then classes 0, 1, 12, 74, 149.
SIZE = (40, 48)
GRAY = "ADE_train_00000002"  # A grayscale JPEG (the release has a few): stored as RGB PNG.


def stem(folder: str, i: int) -> str:
    return f"ADE_{'train' if folder == 'training' else 'val'}_{i:08d}"


def write_release(parent, counts=(("training", 3), ("validation", 2)), size=SIZE):
    """``parent/ADEChallengeData2016`` with ``images/<split>/*.jpg`` + ``annotations/<split>/*.png``
    (every value of ``VALUES`` in every annotation); returns the release folder."""
    root = parent / RELEASE
    rng = np.random.default_rng(0)
    for folder, count in counts:
        os.makedirs(root / "images" / folder)
        os.makedirs(root / "annotations" / folder)
        for i in range(1, count + 1):
            name = stem(folder, i)
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            picture = Image.fromarray(image[..., 0] if name == GRAY else image)
            picture.save(root / "images" / folder / f"{name}.jpg", quality=90)
            mask = rng.choice(VALUES, size).astype(np.uint8)
            mask.flat[: len(VALUES)] = VALUES
            Image.fromarray(mask, "L").save(root / "annotations" / folder / f"{name}.png")
    return root


def prepare(tmp_path, manual_dir):
    return data.get_builder(
        data.get_spec("ade20k"), data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir)
    )


def test_spec_has_150_named_classes_and_ignores_0():
    spec = data.get_spec("ade20k")
    assert spec.tfds_name == "ade20k" and spec.needs_manual_dir and spec.num_classes == 150
    assert len(set(spec.class_names)) == 150
    names = spec.class_names
    assert (names[0], names[1], names[12], names[149]) == ("wall", "building", "person", "flag")
    lut = spec.label_lut()
    assert lut[0] == data.IGNORE_INDEX
    np.testing.assert_array_equal(lut[1:151], np.arange(150))
    assert (lut[151:] == INVALID).all()  # Never stored by ADE20K: an error, not ignored.
    assert "research" in spec.license_note
    assert (spec.train_split, spec.eval_split) == ("train", "validation")


@pytest.mark.parametrize("form", ["release", "parent"])
def test_labels_are_remapped_0_is_ignored_and_images_kept(tmp_path, form):
    root = write_release(tmp_path / "raw")
    builder = prepare(tmp_path, root if form == "release" else tmp_path / "raw")
    splits = builder.info.splits
    assert (splits["train"].num_examples, splits["validation"].num_examples) == (3, 2)
    spec = data.get_spec("ade20k")
    for split, folder in (("train", "training"), ("validation", "validation")):
        source = data.DecodedSource(builder.as_data_source(split), spec)
        undecoded = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
        for i in range(len(source)):
            name = stem(folder, i + 1)
            raw = np.asarray(Image.open(root / "annotations" / folder / f"{name}.png"))
            label = source[i]["label"]
            assert label.shape == SIZE and set(np.unique(raw)) == set(VALUES)
            np.testing.assert_array_equal(label[raw > 0], raw[raw > 0].astype(np.int32) - 1)
            assert (label[raw == 0] == data.IGNORE_INDEX).all() and label.max() == 149
            jpeg = root / "images" / folder / f"{name}.jpg"
            image = np.asarray(Image.open(jpeg).convert("RGB"))
            np.testing.assert_array_equal(source[i]["image"], image)
            stored = undecoded[i]["image"]
            if name == GRAY:  # Converted once, losslessly.
                assert stored.startswith(b"\x89PNG") and (image == image[..., :1]).all()
            else:  # The release's own bytes: no second JPEG encoding.
                assert stored == jpeg.read_bytes()


@pytest.mark.parametrize(
    "remove, match",
    [
        (
            "annotations/training/ADE_train_00000002.png",
            r"ADE20K image '[^']*images/training/ADE_train_00000002\.jpg' has no annotation "
            r"'[^']*annotations/training/ADE_train_00000002\.png'",
        ),
        (
            "images/validation/ADE_val_00000001.jpg",
            r"ADE20K annotation '[^']*annotations/validation/ADE_val_00000001\.png' has no image",
        ),
    ],
)
def test_a_file_without_its_partner_is_named(tmp_path, remove, match):
    root = write_release(tmp_path / "raw")
    os.remove(root / remove)
    with pytest.raises(ValueError, match=match):
        prepare(tmp_path, root)


def test_a_label_above_150_is_named(tmp_path):
    root = write_release(tmp_path / "raw")
    path = root / "annotations" / "training" / "ADE_train_00000003.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[5, 7] = 151
    Image.fromarray(mask, "L").save(path)
    with pytest.raises(
        ValueError, match=r"ADE_train_00000003\.png: label value\(s\) \[151\] are neither a class"
    ):
        prepare(tmp_path, tmp_path / "raw")


def test_an_annotation_of_another_size_is_named(tmp_path):
    root = write_release(tmp_path / "raw")
    path = root / "annotations" / "validation" / "ADE_val_00000002.png"
    Image.fromarray(np.ones((40, 47), np.uint8), "L").save(path)
    with pytest.raises(
        ValueError, match=r"ADE_val_00000002\.png: mask size \(40, 47\) differs from image size"
    ):
        prepare(tmp_path, root)


def test_a_folder_without_the_release_is_a_clear_error(tmp_path):
    (tmp_path / "raw" / "ADE20K_2021_17_01").mkdir(parents=True)  # The full ADE20K: not this.
    with pytest.raises(ValueError, match=r"neither the ADEChallengeData2016 folder nor holds one"):
        prepare(tmp_path, tmp_path / "raw")


def test_a_unet_trains_on_it_for_2_steps(tmp_path):
    root = write_release(tmp_path / "raw")
    config = tiny_config(
        dataset="ade20k",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=str(root),
        eval_split="validation",
        eval_size=SIZE,  # Whole images.
        num_train_steps=2,
        eval_every_steps=2,
        checkpoint_every_steps=2,
        log_every_steps=1,
    )
    final = training.train_and_evaluate(config, str(tmp_path / "run"))
    records = summary.read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
    assert len(final["per_class_iou"]) == 150
    annotations = root / "annotations" / "validation"
    counted = sum(
        int((np.asarray(Image.open(annotations / n)) > 0).sum()) for n in os.listdir(annotations)
    )
    assert final["num_pixels"] == counted  # Every pixel of both images but the "other" ones.
