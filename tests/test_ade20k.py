"""ADE20K (TFDS ``scene_parse150``) through ``tfds.testing.mock_data``: stored labels 1..150 become
classes 0..149, 0 is ignored, and a mask that does not fit its image is a clear error."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxseg import data
from jaxseg.data.specs import INVALID


def fake_source(values, mask_size=(20, 30), count=5):
    """``as_data_source`` for ``mock_data``: RGB annotations (as TFDS stores them) whose first
    channel holds ``values``; the other channels hold noise the loader must not read."""

    def as_data_source(builder, split):
        rng = np.random.default_rng(0)
        examples = []
        for i in range(count):
            annotation = rng.integers(0, 256, (*mask_size, 3), dtype=np.uint8)
            annotation[..., 0] = rng.choice(values, mask_size)
            image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            examples.append({"image": image, "annotation": annotation, "file_name": f"ade_{i}"})
        return examples

    return as_data_source


def load_labels(tmp_path, source_fn, split="train"):
    spec = data.get_spec("ade20k")
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=source_fn
    ):
        ld = data.create_loader(
            spec, split, batch_size=2, size=(20, 30), train=False, data_dir=str(tmp_path)
        )
        return np.concatenate([b["label"][b["valid"]] for b in ld])


def test_spec_has_150_named_classes_and_ignores_0():
    spec = data.get_spec("ade20k")
    assert spec.tfds_name == "scene_parse150" and spec.num_classes == 150
    assert len(set(spec.class_names)) == 150
    names = spec.class_names
    assert (names[0], names[1], names[12], names[149]) == ("wall", "building", "person", "flag")
    lut = spec.label_lut()
    assert lut[0] == data.IGNORE_INDEX
    np.testing.assert_array_equal(lut[1:151], np.arange(150))
    assert (lut[151:] == INVALID).all()  # Never stored by ADE20K: an error, not ignored.
    assert "research" in spec.license_note and spec.eval_split == "test"


@pytest.mark.parametrize("split", ["train", "test"])
def test_labels_are_remapped_and_0_is_ignored(tmp_path, split):
    values = [0, 1, 2, 13, 75, 150]
    fn = fake_source(values)
    labels = load_labels(tmp_path, fn, split)
    raw = np.stack([e["annotation"][..., 0] for e in fn(None, None)]).astype(np.int32)
    assert labels.shape == raw.shape and set(np.unique(raw)) == set(values)
    np.testing.assert_array_equal(labels[raw > 0], raw[raw > 0] - 1)
    assert (labels[raw == 0] == data.IGNORE_INDEX).all()
    assert labels.max() == 149 and (labels[raw == 1] == 0).all()


def test_mask_of_another_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"ade20k example 0 \(ade_0\): mask size \(20, 29\) "
                       r"differs from image size \(20, 30\)"):  # fmt: skip
        load_labels(tmp_path, fake_source([0, 5], mask_size=(20, 29)))


def test_label_beyond_150_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"label value\(s\) \[151\] are neither a class"):
        load_labels(tmp_path, fake_source([3, 151]))
