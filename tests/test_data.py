"""Datasets and the grain loader: builders on real and written files, label maps, loader state."""

import functools
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg import data
from jaxseg.data import synthetic, transforms
from jaxseg.data.specs import INVALID

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data not present")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    data.get_builder(data.get_spec("synthetic_shapes"), data_dir=d)
    return d


def loader(name, split, data_dir, **kwargs):
    kwargs = {"batch_size": 4, "size": (32, 32), "train": True, "seed": 0, **kwargs}
    return data.create_loader(data.get_spec(name), split, data_dir=data_dir, **kwargs)


def save(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path)


# --- The embedded synthetic dataset -------------------------------------------------------


def test_synthetic_is_deterministic_and_has_every_class():
    image, mask = synthetic.make_example(1, 7)
    image2, mask2 = synthetic.make_example(1, 7)
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(mask, mask2)
    assert not np.array_equal(image, synthetic.make_example(1, 8)[0])
    masks = np.stack([synthetic.make_example(1, i)[1] for i in range(40)])
    fractions = np.bincount(masks.ravel(), minlength=5) / masks.size
    assert set(np.unique(masks)) == {0, 1, 2, 3, 4}
    assert 0.5 < fractions[0] < 0.95 and fractions[4] > 0.005  # Thin lines present.


def test_synthetic_prepared_split_sizes_and_values(synthetic_dir):
    builder = data.get_builder(data.get_spec("synthetic_shapes"), data_dir=synthetic_dir)
    source = data.DecodedSource(
        builder.as_data_source("validation"), data.get_spec("synthetic_shapes")
    )
    assert len(source) == 100
    example = source[3]
    image, mask = synthetic.make_example(2, 3)
    np.testing.assert_array_equal(example["image"], image)
    np.testing.assert_array_equal(example["label"], mask)


# --- The loader -----------------------------------------------------------------------------


def test_loader_is_deterministic_and_resumes_from_saved_state(synthetic_dir):
    first = iter(loader("synthetic_shapes", "train", synthetic_dir, seed=3))
    for _ in range(3):
        next(first)
    state = first.get_state()
    expected = [next(first) for _ in range(2)]

    resumed = iter(loader("synthetic_shapes", "train", synthetic_dir, seed=3))
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])

    fresh = iter(loader("synthetic_shapes", "train", synthetic_dir, seed=3))
    np.testing.assert_array_equal(
        next(fresh)["image"],
        next(iter(loader("synthetic_shapes", "train", synthetic_dir, seed=3)))["image"],
    )
    other = next(iter(loader("synthetic_shapes", "train", synthetic_dir, seed=4)))
    assert not np.array_equal(next(fresh)["image"], other["image"])


def test_train_batches_have_the_promised_format(synthetic_dir):
    batch = next(iter(loader("synthetic_shapes", "train", synthetic_dir, size=(40, 24))))
    assert batch["image"].shape == (4, 40, 24, 3) and batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["label"].shape == (4, 40, 24) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"])) <= {0, 1, 2, 3, 4}


def test_eval_visits_every_example_exactly_once(synthetic_dir):
    spec = data.get_spec("synthetic_shapes")
    ev = data.create_loader(
        spec, "validation", batch_size=32, size=(96, 96), train=False, data_dir=synthetic_dir
    )
    batches = list(data.eval_batches(ev, data.num_eval_batches(100, 32)))
    assert len(batches) == 4
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.sum() == 100 and not valid[100:].any()
    labels = np.concatenate([b["label"] for b in batches])[valid]
    expected = np.stack([synthetic.make_example(2, i)[1] for i in range(100)])
    np.testing.assert_array_equal(labels, expected)  # In order, each once.
    assert (np.concatenate([b["label"] for b in batches])[~valid] == data.IGNORE_INDEX).all()
    # A host whose share ran out is topped up with all-invalid batches.
    extra = list(data.eval_batches(ev, 6))
    assert len(extra) == 6 and not extra[-1]["valid"].any()


def test_margin_mirror_extends_the_image_and_ignores_padded_labels():
    image = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6, 1)
    label = (np.arange(5 * 6).reshape(5, 6) % 3).astype(np.int32)
    out = transforms.pad_example({"image": image, "label": label}, size=(12, 12), margin=2)
    assert out["image"].shape == (12, 12, 1) and out["label"].shape == (12, 12)
    np.testing.assert_array_equal(out["image"][2:7, 2:8, 0], image[..., 0])
    np.testing.assert_array_equal(out["label"][2:7, 2:8], label)
    np.testing.assert_array_equal(out["image"][:2, 2:8, 0], image[2:0:-1, :, 0])  # Mirrored rows.
    assert (
        (out["label"][:2] == -1).all()
        and (out["label"][7:] == -1).all()
        and (out["label"][:, 8:] == -1).all()
    )


def test_eval_image_larger_than_eval_size_is_an_error(synthetic_dir):
    ev = loader("synthetic_shapes", "validation", synthetic_dir, train=False, size=(64, 64))
    with pytest.raises(ValueError, match=r"does not fit the evaluation input size \(64, 64\)"):
        next(iter(ev))


# --- ISBI 2012 ------------------------------------------------------------------------------


@needs_shared
def test_isbi2012_from_shared_pngs(tmp_path):
    spec = data.get_spec("isbi2012")
    builder = data.get_builder(
        spec, data_dir=str(tmp_path), manual_dir=os.path.join(SHARED, "isbi2012")
    )
    source = data.DecodedSource(builder.as_data_source("train"), spec)
    assert len(source) == 24
    labels = np.stack([source[i]["label"] for i in range(24)])
    assert labels.shape == (24, 512, 512) and set(np.unique(labels)) == {0, 1}
    # The data README: membrane (label 0) fraction over the 24 slices is 0.2254.
    assert abs((labels == 0).mean() - 0.2254) < 5e-4
    assert source[0]["image"].shape == (512, 512, 1)


def test_isbi2012_from_multipage_tiffs(tmp_path):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)) for _ in range(3)]
    labels = [
        Image.fromarray((rng.random((16, 16)) > 0.3).astype(np.uint8) * 255) for _ in range(3)
    ]
    manual = tmp_path / "raw"
    manual.mkdir()
    images[0].save(manual / "train-volume.tif", save_all=True, append_images=images[1:])
    labels[0].save(manual / "train-labels.tif", save_all=True, append_images=labels[1:])
    spec = data.get_spec("isbi2012")
    builder = data.get_builder(spec, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    source = data.DecodedSource(builder.as_data_source("train"), spec)
    assert len(source) == 3
    for i in range(3):
        np.testing.assert_array_equal(source[i]["image"][..., 0], np.asarray(images[i]))
        np.testing.assert_array_equal(source[i]["label"], np.asarray(labels[i]) // 255)


# --- CamVid ---------------------------------------------------------------------------------


@needs_shared
def test_camvid_from_a_subset_of_shared_files(tmp_path):
    manual = tmp_path / "camvid"
    for folder, count in (("train", 3), ("val", 2)):
        for sub in (folder, folder + "annot"):
            os.makedirs(manual / sub)
            for name in sorted(os.listdir(os.path.join(SHARED, "camvid", folder)))[:count]:
                os.symlink(os.path.join(SHARED, "camvid", sub, name), manual / sub / name)
    spec = data.get_spec("camvid")
    builder = data.get_builder(spec, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert set(builder.info.splits) == {"train", "validation"}
    source = data.DecodedSource(builder.as_data_source("train"), spec)
    raw = np.asarray(
        Image.open(manual / "trainannot" / sorted(os.listdir(manual / "trainannot"))[0])
    )
    label = source[0]["label"]
    assert label.shape == (360, 480) and source[0]["image"].shape == (360, 480, 3)
    np.testing.assert_array_equal(label[raw < 11], raw[raw < 11])
    assert (label[raw == 11] == data.IGNORE_INDEX).all() and (raw == 11).any()


# --- VOC 2012 and folder datasets, written by the test ---------------------------------------


def write_voc(root, stems_by_split, rng, bad=None):
    voc = root / "VOCdevkit" / "VOC2012"
    palette = [v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)]
    for split, stems in stems_by_split.items():
        os.makedirs(voc / "ImageSets" / "Segmentation", exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for stem in stems:
            save(
                str(voc / "JPEGImages" / f"{stem}.jpg"),
                rng.integers(0, 255, (12, 10, 3), dtype=np.uint8),
            )
            mask = rng.choice([0, 1, 15, 20, 255], size=(12, 10)).astype(np.uint8)
            if stem == bad:
                mask[0, 0] = 42
            m = Image.fromarray(mask, "P")
            m.putpalette(palette)
            os.makedirs(voc / "SegmentationClass", exist_ok=True)
            m.save(voc / "SegmentationClass" / f"{stem}.png")
    return voc


def test_voc2012_palette_masks_and_splits(tmp_path):
    rng = np.random.default_rng(1)
    voc = write_voc(tmp_path / "raw", {"train": ["a", "b", "c"], "val": ["d", "e"]}, rng)
    spec = data.get_spec("voc2012_segmentation")
    builder = data.get_builder(
        spec, data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw")
    )
    source = data.DecodedSource(builder.as_data_source("validation"), spec)
    assert len(source) == 2 and builder.info.splits["train"].num_examples == 3
    raw = np.asarray(Image.open(voc / "SegmentationClass" / "d.png"))
    label = source[0]["label"]
    np.testing.assert_array_equal(label[raw != 255], raw[raw != 255])  # Palette indices kept.
    assert (label[raw == 255] == data.IGNORE_INDEX).all()


def test_voc2012_label_out_of_range_names_the_file(tmp_path):
    write_voc(
        tmp_path / "raw", {"train": ["a", "b"], "val": ["c"]}, np.random.default_rng(2), bad="b"
    )
    with pytest.raises(ValueError, match=r"b\.png.*label value\(s\) \[42\]"):
        data.get_builder(
            data.get_spec("voc2012_segmentation"),
            data_dir=str(tmp_path / "tfds"),
            manual_dir=str(tmp_path / "raw"),
        )


def folder_dataset(root, n=4, size=(10, 14), mask_size=None, value=None):
    rng = np.random.default_rng(3)
    for i in range(n):
        save(str(root / "images" / f"img{i}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        mask = rng.integers(0, 3, mask_size or size, dtype=np.uint8)
        if value is not None and i == 2:
            mask[1, 1] = value
        save(str(root / "masks" / f"img{i}.png"), mask)


def folder_spec(**kwargs):
    return data.get_spec("folder:mine", class_names=("a", "b", "c"), **kwargs)


def test_folder_dataset_reads_users_files(tmp_path):
    folder_dataset(tmp_path / "raw", value=255)
    spec = folder_spec(ignore_label=255)
    ld = data.create_loader(
        spec,
        "train",
        batch_size=2,
        size=(10, 14),
        train=False,
        data_dir=str(tmp_path / "tfds"),
        manual_dir=str(tmp_path / "raw"),
    )
    labels = np.concatenate([b["label"] for b in ld])
    expected = np.stack(
        [np.asarray(Image.open(tmp_path / "raw" / "masks" / f"img{i}.png")) for i in range(4)]
    )
    np.testing.assert_array_equal(labels[expected != 255], expected[expected != 255])
    assert labels[2, 1, 1] == data.IGNORE_INDEX


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(value=7), r"img2\.png.*label value\(s\) \[7\]"),
        (
            dict(mask_size=(10, 13)),
            r"img0\.png.*mask size \(10, 13\) differs from image size \(10, 14\)",
        ),
    ],
)
def test_folder_dataset_bad_masks_name_the_file(tmp_path, kwargs, match):
    folder_dataset(tmp_path / "raw", **kwargs)
    with pytest.raises(ValueError, match=match):
        data.get_builder(
            folder_spec(), data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw")
        )


def test_manual_dir_missing_empty_or_unpaired(tmp_path):
    spec = folder_spec()
    with pytest.raises(ValueError, match="set manual_dir"):
        data.get_builder(spec, data_dir=str(tmp_path / "tfds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="missing or empty"):
        data.get_builder(spec, data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "empty"))
    folder_dataset(tmp_path / "raw")
    os.remove(tmp_path / "raw" / "masks" / "img1.png")
    with pytest.raises(ValueError, match=r"no partner.*img1"):
        data.get_builder(spec, data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw"))


def test_corrupt_image_file_is_named(tmp_path):
    folder_dataset(tmp_path / "raw")
    (tmp_path / "raw" / "images" / "img3.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*img3\.png"):
        data.get_builder(
            folder_spec(), data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw")
        )


# --- Catalog datasets (tfds.testing.mock_data) ------------------------------------------------


def fake_source(mask_key, image_key, raw_values):
    def as_data_source(builder, split):
        rng = np.random.default_rng(0)
        return [
            {image_key: rng.integers(0, 255, (20, 30, 3), dtype=np.uint8),
             mask_key: rng.choice(raw_values, (20, 30, 1)).astype(np.uint8), "file_name": b"x"}
            for _ in range(6)
        ]  # fmt: skip

    return as_data_source


def test_oxford_pets_trimap_maps_to_0_1_2(tmp_path):
    fn = fake_source("segmentation_mask", "image", [1, 2, 3])
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=fn):
        ld = loader("oxford_iiit_pet", "train", str(tmp_path), train=False, size=(20, 30))
        labels = np.concatenate([b["label"][b["valid"]] for b in ld])
    raw = np.concatenate([e["segmentation_mask"][..., 0] for e in fn(None, None)])
    np.testing.assert_array_equal(labels.reshape(-1), raw.reshape(-1).astype(np.int32) - 1)


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    lut = data.get_spec("cityscapes").label_lut()
    assert lut[7] == 0 and lut[26] == 13 and lut[33] == 18
    assert lut[0] == lut[6] == lut[255] == data.IGNORE_INDEX and (lut != INVALID).all()
    assert sorted(set(lut[lut >= 0])) == list(range(19))
    fn = fake_source("segmentation_label", "image_left", [0, 7, 8, 26, 33, 4])
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    (raw_dir / "leftImg8bit_trainvaltest.zip").write_bytes(b"")
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=fn):
        ld = loader(
            "cityscapes",
            "train",
            str(tmp_path),
            train=False,
            size=(20, 30),
            manual_dir=str(raw_dir),
        )
        labels = np.concatenate([b["label"][b["valid"]] for b in ld])
    raw = np.concatenate([e["segmentation_label"][..., 0] for e in fn(None, None)])
    np.testing.assert_array_equal(labels.reshape(-1), lut[raw.reshape(-1)])


def test_catalog_mock_data_with_mismatched_mask_is_a_clear_error(tmp_path):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=2):
        source = data.DecodedSource(
            data.get_builder(
                data.get_spec("oxford_iiit_pet"), data_dir=str(tmp_path)
            ).as_data_source("train"),
            data.get_spec("oxford_iiit_pet"),
        )
        with pytest.raises(ValueError, match="mask size .* differs from image size"):
            source[0]


def test_unknown_dataset_and_folder_without_classes():
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        data.get_spec("coco")
    with pytest.raises(ValueError, match="needs class_names"):
        data.get_spec("folder:x")


def test_weight_maps_follow_their_labels_and_worker_processes_work(synthetic_dir):
    from jaxseg.data import weight_map

    spec = data.get_spec("synthetic_shapes")
    weight_fn = functools.partial(weight_map.border_weight_map, foreground=(1, 2, 3, 4))
    ev = data.create_loader(spec, "validation", batch_size=4, size=(100, 100), margin=2, train=False,
                            data_dir=synthetic_dir, weight_fn=weight_fn)  # fmt: skip
    batch = next(iter(ev))
    for i in range(4):
        label = batch["label"][i, 2:98, 2:98]
        np.testing.assert_array_equal(batch["weight"][i, 2:98, 2:98], weight_fn(label))
        assert (batch["weight"][i, :2] == 0).all() and (
            batch["label"][i, :2] == data.IGNORE_INDEX
        ).all()
    # Two worker processes (the source, weight cache included, is pickled into them).
    train = loader("synthetic_shapes", "train", synthetic_dir, worker_count=2, weight_fn=weight_fn)
    batch = next(iter(train))
    assert batch["weight"].shape == batch["label"].shape == (4, 32, 32)
    assert (batch["weight"] > 0).all()


def test_resize_to_resizes_images_bilinearly_and_labels_by_nearest(synthetic_dir):
    spec = data.get_spec("synthetic_shapes")
    source = data.get_builder(spec, data_dir=synthetic_dir).as_data_source("validation")
    plain, resized = (
        data.DecodedSource(source, spec),
        data.DecodedSource(source, spec, resize_to=(48, 40)),
    )
    example, small = plain[0], resized[0]
    assert small["image"].shape == (48, 40, 3) and small["label"].shape == (48, 40)
    expected = np.asarray(
        Image.fromarray(example["label"].astype(np.uint8)).resize((40, 48), Image.NEAREST)
    )
    np.testing.assert_array_equal(small["label"], expected)
    assert set(np.unique(small["label"])) <= set(np.unique(example["label"]))


def test_folder_ignore_label_must_not_be_a_class():
    with pytest.raises(
        ValueError, match=r"ignore_label 1 must be a stored value that is not a class"
    ):
        data.get_spec("folder:x", class_names=("bg", "fg"), ignore_label=1)
    with pytest.raises(ValueError, match="ignore_label 300"):
        data.get_spec("folder:x", class_names=("bg", "fg"), ignore_label=300)


def test_missing_split_names_the_splits_that_exist(tmp_path):
    folder_dataset(tmp_path / "raw")
    with pytest.raises(ValueError, match=r"has no split 'validation' \(it has \['train'\]\)"):
        data.create_loader(folder_spec(), "validation", batch_size=2, size=(10, 14), train=False,
                           data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw"))  # fmt: skip


def test_isbi_tiffs_with_different_page_counts_are_an_error(tmp_path):
    manual = tmp_path / "raw"
    manual.mkdir()
    pages = [Image.fromarray(np.zeros((8, 8), np.uint8)) for _ in range(3)]
    pages[0].save(manual / "train-volume.tif", save_all=True, append_images=pages[1:])
    pages[0].save(manual / "train-labels.tif", save_all=True, append_images=pages[1:2])
    with pytest.raises(ValueError, match="has 3 pages but .*train-labels.tif has 2"):
        data.get_builder(
            data.get_spec("isbi2012"), data_dir=str(tmp_path / "tfds"), manual_dir=str(manual)
        )
