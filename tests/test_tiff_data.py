"""Images as they are: 16-bit gray and 5-channel float TIFFs (written here) go through preparation,
the loader and prediction without loss; a file of the wrong channel count is named."""

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from jaxseg import data, runs
from jaxseg.data import pixels, readers
from jaxseg.runs import image_files

CLASSES = ("a", "b", "c")
RNG = np.random.default_rng(0)


def gray16(size=(10, 14)):
    """uint16 with every pixel's low byte set and values that 8 bits cannot tell apart."""
    image = RNG.integers(0, 65536, size, dtype=np.uint16)
    image[0, :4] = (1, 256, 257, 65535)  # // 257 would make them 0, 0, 1, 255.
    return image


def float5(size=(10, 14)):
    image = RNG.standard_normal((*size, 5)).astype(np.float32) * 1000  # Far outside [0, 1].
    image[0, 0] = (1e-7, -3.5, 0.1, np.float32(1 / 3), 6.0e4)
    return image


def write_dataset(root, images, writer, n=3):
    """``images/img{i}.tif`` written by ``writer(path, image)`` + ``masks/img{i}.png``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, image in enumerate(images):
        writer(str(root / "images" / f"img{i}.tif"), image)
        mask = RNG.integers(0, 3, image.shape[:2], dtype=np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")


def prepared(tmp_path, channels):
    spec = data.get_spec("folder:mine", class_names=CLASSES, num_channels=channels)
    builder = data.get_builder(
        spec, data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "raw")
    )
    return spec, data.DecodedSource(builder.as_data_source("train"), spec)


def loaded(tmp_path, spec, size=(10, 14)):
    dirs = {"data_dir": str(tmp_path / "tfds"), "manual_dir": str(tmp_path / "raw")}
    ld = data.create_loader(spec, "train", batch_size=3, size=size, train=False, **dirs)
    (batch,) = list(ld)
    return batch["image"]


def save_gray16(path, image):
    tifffile.imwrite(path, image)


WRITERS = {
    "tifffile_default": lambda path, x: tifffile.imwrite(path, x),  # H pages of W x 5 + shape
    "interleaved": lambda path, x: tifffile.imwrite(
        path, x, photometric="minisblack", planarconfig="contig"
    ),
    "planar": lambda path, x: tifffile.imwrite(
        path, np.moveaxis(x, -1, 0), photometric="minisblack", planarconfig="separate"
    ),
    "page_per_channel": lambda path, x: tifffile.imwrite(path, np.moveaxis(x, -1, 0)),
}


def test_16bit_gray_tiff_round_trips_and_keeps_its_low_bits(tmp_path):
    images = [gray16() for _ in range(3)]
    write_dataset(tmp_path / "raw", images, save_gray16)
    spec, source = prepared(tmp_path, 1)
    for i, image in enumerate(images):
        stored = source[i]["image"]
        assert stored.dtype == np.uint16 and stored.shape == (10, 14, 1)
        np.testing.assert_array_equal(stored[..., 0], image)  # Exactly, low bits included.
    batch = loaded(tmp_path, spec)
    assert batch.dtype == np.float32 and batch.shape == (3, 10, 14, 1)
    expected = np.stack(images)[..., None].astype(np.float32) / np.float32(65535)
    np.testing.assert_array_equal(batch, expected)  # The dataset's scale: / 65535.
    back = np.rint(batch * 65535).astype(np.uint16)[..., 0]
    np.testing.assert_array_equal(back, np.stack(images))
    np.testing.assert_array_equal(back[:, 0, :4], [[1, 256, 257, 65535]] * 3)


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_5_channel_float_tiff_round_trips_as_it_is(tmp_path, layout):
    images = [float5() for _ in range(3)]
    write_dataset(tmp_path / "raw", images, WRITERS[layout])
    spec, source = prepared(tmp_path, 5)
    for i, image in enumerate(images):
        stored = source[i]["image"]
        assert stored.dtype == np.float32 and stored.shape == (10, 14, 5)
        np.testing.assert_array_equal(stored, image)
    np.testing.assert_array_equal(loaded(tmp_path, spec), np.stack(images))  # Float: as is.


def test_16bit_png_is_read_like_the_tiff(tmp_path):
    image = gray16()
    Image.fromarray(image).save(tmp_path / "deep.png")
    tifffile.imwrite(tmp_path / "deep.tif", image)
    for name in ("deep.png", "deep.tif"):
        read = readers.read_one(tmp_path / name, 1)
        assert read.dtype == np.uint16
        np.testing.assert_array_equal(read[..., 0], image)


def test_a_file_with_the_wrong_channel_count_is_named(tmp_path):
    images = [float5() for _ in range(3)]
    images[1] = images[1][..., :4]
    write_dataset(tmp_path / "raw", images, WRITERS["interleaved"])
    with pytest.raises(ValueError, match=r"img1\.tif' has 4 channel\(s\), but the dataset "
                       r"declares 5 \(config\.num_channels\)"):  # fmt: skip
        prepared(tmp_path, 5)


def test_a_multispectral_file_in_an_rgb_dataset_is_named(tmp_path):
    images = [float5()[..., :3] for _ in range(3)]
    images[2] = float5()[..., :4]  # A fourth channel of float data is not alpha: never dropped.
    write_dataset(tmp_path / "raw", images, WRITERS["interleaved"])
    with pytest.raises(
        ValueError, match=r"img2\.tif' has 4 channel\(s\), but the dataset declares 3"
    ):
        prepared(tmp_path, 3)


def test_gray_and_rgb_are_fitted_to_the_declared_channels(tmp_path):
    images = [gray16() for _ in range(3)]
    write_dataset(tmp_path / "raw", images, save_gray16)
    _, source = prepared(tmp_path, 3)
    np.testing.assert_array_equal(source[1]["image"], np.repeat(images[1][..., None], 3, -1))


def test_mixed_pixel_types_in_one_dataset_are_named(tmp_path):
    images = [gray16() for _ in range(3)]
    write_dataset(tmp_path / "raw", images, save_gray16)
    tifffile.imwrite(tmp_path / "raw" / "images" / "img2.tif", (images[2] // 257).astype(np.uint8))
    with pytest.raises(
        ValueError, match=r"img2\.tif' has uint8 pixels, but .*img0\.tif' has uint16"
    ):
        prepared(tmp_path, 1)


def test_unsupported_pixel_type_is_named(tmp_path):
    write_dataset(tmp_path / "raw", [gray16().astype(np.int32) for _ in range(3)], save_gray16)
    with pytest.raises(ValueError, match=r"img0\.tif' has pixels of type int32"):
        prepared(tmp_path, 1)


def test_resize_keeps_the_type():
    image = gray16((20, 30))[..., None]
    out = pixels.resize(image, (10, 15))
    assert out.dtype == np.uint16 and out.shape == (10, 15, 1)
    flat = np.full((20, 30, 5), 1234.5, np.float32)
    np.testing.assert_array_equal(pixels.resize(flat, (7, 9)), np.full((7, 9, 5), 1234.5))


# --- Prediction reads the same files and scales them as training did -------------------------


def recording_predictor(seen):
    def predictor(x):
        seen.append(x)
        return np.stack([x[..., 0], -x[..., 0]], -1).astype(np.float32)

    return predictor


@pytest.mark.parametrize("layout", ["tifffile_default", "planar", "page_per_channel"])
def test_predict_reads_5_channel_float_tiffs_as_training_does(tmp_path, layout):
    image = float5()
    WRITERS[layout](str(tmp_path / "x.tif"), image)
    (name, read), *rest = list(image_files.iter_input(str(tmp_path / "x.tif"), 5))
    assert name == "x" and not rest
    np.testing.assert_array_equal(read, image)
    seen = []
    runs.predict_image(recording_predictor(seen), read)
    np.testing.assert_array_equal(seen[0], image)  # Float: as it is.


@pytest.mark.parametrize("layout", ["interleaved", "planar"])
def test_predict_names_a_file_of_another_channel_count(tmp_path, layout):
    # (Single-channel pages are a stack of slices for a model of another channel count.)
    WRITERS[layout](str(tmp_path / "x.tif"), float5())
    with pytest.raises(ValueError, match=r"x\.tif' has 5 channel\(s\), but the model takes 3"):
        list(image_files.iter_input(str(tmp_path / "x.tif"), 3))


def test_predict_scales_16bit_by_65535_and_keeps_slices_of_a_stack(tmp_path):
    slices = [gray16() for _ in range(3)]
    tifffile.imwrite(tmp_path / "stack.tif", np.stack(slices), photometric="minisblack")
    read = list(image_files.iter_input(str(tmp_path / "stack.tif"), 1))
    assert [n for n, _ in read] == ["stack_p00", "stack_p01", "stack_p02"]
    seen = []
    for (_, page), want in zip(read, slices, strict=True):
        assert page.dtype == np.uint16
        runs.predict_image(recording_predictor(seen), page)
        np.testing.assert_array_equal(seen[-1][..., 0], want.astype(np.float32) / np.float32(65535))


def test_predict_writes_an_overlay_of_a_float_image(tmp_path):
    image = float5()
    paths = image_files.output_paths(str(tmp_path), "x", False)
    probabilities = np.zeros((10, 14, 2), np.float32)
    probabilities[..., 1] = 1
    image_files.write_prediction(paths, image, probabilities)
    assert (np.asarray(Image.open(paths[0])) == 1).all()
    overlay = np.asarray(Image.open(paths[1]))
    assert overlay.shape == (10, 14, 3) and overlay.dtype == np.uint8
    assert os.path.getsize(paths[1]) > 0


def test_pages_as_channels_or_slices(tmp_path):
    pages = [gray16() for _ in range(3)]
    tifffile.imwrite(tmp_path / "stack.tif", np.stack(pages), photometric="minisblack")
    tifffile.imwrite(tmp_path / "cyx.tif", np.stack(pages), imagej=True, metadata={"axes": "CYX"})
    rgb = np.stack(pages, -1)
    np.testing.assert_array_equal(readers.read_one(tmp_path / "stack.tif", 3), rgb)  # A dataset.
    slices = list(image_files.iter_input(str(tmp_path / "stack.tif"), 3))  # Prediction: slices,
    assert [n for n, _ in slices] == ["stack_p00", "stack_p01", "stack_p02"]
    np.testing.assert_array_equal(slices[1][1], np.repeat(pages[1][..., None], 3, -1))
    (name, image), *rest = list(image_files.iter_input(str(tmp_path / "cyx.tif"), 3))
    assert name == "cyx" and not rest  # ... unless the file names its pages channels.
    np.testing.assert_array_equal(image, rgb)


def test_predict_refuses_integer_images_for_a_float_run_and_floats_for_an_integer_one(tmp_path):
    from jaxseg.runs import image_files

    class FakeRun:
        spec = type("Spec", (), {"num_channels": 1})()
        config = type("Config", (), {"resize_to": ()})()

        def __init__(self, dtype):
            self.input_dtype = dtype

        def predictor(self, **_):
            return lambda x: np.zeros((*x.shape[:2], 2), np.float32)

    tifffile.imwrite(tmp_path / "eight.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((8, 8), np.float32))
    for dtype, written, refused in (("float32", "float", "eight"), ("uint16", "eight", "float")):
        report = image_files.predict_files(
            FakeRun(dtype), [str(tmp_path / "eight.tif"), str(tmp_path / "float.tif")],
            str(tmp_path / dtype), verbose=False,
        )  # fmt: skip
        assert [w.name for w in report.written] == [written]
        ((path, reason),) = report.failed
        assert path.endswith(f"{refused}.tif") and f"trained on {dtype} images" in reason


def test_a_16_bit_gray_alpha_png_is_refused_not_cut_to_8_bits(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    pixels = np.arange(2 * 3 * 2, dtype=">u2").reshape(2, 3, 2) * 1001  # Gray, alpha; 16 bits.
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 16, 4, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))  # fmt: skip
    (tmp_path / "la16.png").write_bytes(png)
    assert Image.open(tmp_path / "la16.png").mode in ("LA", "RGBA")  # Pillow's 8-bit reading.
    with pytest.raises(ValueError, match="la16.png' is a 16-bit colour PNG"):
        readers.read_one(tmp_path / "la16.png", 1)


def test_photometric_augmentation_is_refused_for_float_images(tmp_path):
    from trained_run import tiny_config

    from jaxseg import training

    config = tiny_config(input_dtype="float32", augment={"brightness_prob": 0.5})
    with pytest.raises(ValueError, match="float images are fed as stored: set their prob"):
        training.resolve(config)
    config.input_dtype = "uint16"
    training.resolve(config)


def test_a_tiffs_fourth_channel_is_data_unless_tagged_alpha(tmp_path):
    rgbx = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "nir.tif", rgbx, photometric="rgb", extrasamples=["unspecified"])
    tifffile.imwrite(tmp_path / "alpha.tif", rgbx, photometric="rgb", extrasamples=["unassalpha"])
    with pytest.raises(
        ValueError, match=r"nir\.tif' has 4 channel\(s\), but the dataset declares 3"
    ):
        readers.read_one(tmp_path / "nir.tif", 3)
    np.testing.assert_array_equal(readers.read_one(tmp_path / "nir.tif", 4), rgbx)
    np.testing.assert_array_equal(readers.read_one(tmp_path / "alpha.tif", 3), rgbx[..., :3])
