"""A prepared dataset follows its source: re-prepared when the files changed, never silently stale."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxseg import data
from jaxseg.data import preparation, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_pair(root, i, *, mask_value=None, seed=None):
    rng = np.random.default_rng(i if seed is None else seed)
    for sub, array in (
        ("images", rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)),
        ("masks", np.full((10, 14), i % 3 if mask_value is None else mask_value, np.uint8)),
    ):
        os.makedirs(root / sub, exist_ok=True)
        Image.fromarray(array).save(root / sub / f"img{i}.png")


def raw_folder(root, n=4):
    for i in range(n):
        write_pair(root, i)
    return root


def spec(**kwargs):
    return data.get_spec("folder:mine", class_names=("a", "b", "c"), **kwargs)


def prepared(tmp_path, raw, **kwargs):
    """``(number of train examples, labels of every example)`` after ``get_builder``."""
    s = spec(**kwargs)
    builder = data.get_builder(s, data_dir=str(tmp_path / "tfds"), manual_dir=str(raw))
    source = data.DecodedSource(builder.as_data_source("train"), s)
    return len(source), [source[i]["label"] for i in range(len(source))]


def version_folder(tmp_path):
    return tmp_path / "tfds" / "segmentation_folder" / "mine" / "1.0.0"


def tfds_says(line):
    """TFDS's own two lines around every preparation (the first one too)."""
    return line.startswith(("Downloading and preparing dataset", "Dataset segmentation_folder"))


def mtimes(folder):
    return {p: os.stat(folder / p).st_mtime_ns for p in os.listdir(folder)}


def test_files_added_to_manual_dir_are_seen_and_said_in_one_line(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    assert prepared(tmp_path, raw)[0] == 4
    capsys.readouterr()
    for i in range(4, 8):
        write_pair(raw, i)
    assert prepared(tmp_path, raw)[0] == 8
    lines = [line for line in capsys.readouterr().out.splitlines() if not tfds_says(line)]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Re-preparing mine in ")
    assert "8 files added (images/img4.png, images/img5.png, ...)" in lines[0]


def test_a_mask_changed_in_place_is_re_prepared(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    assert prepared(tmp_path, raw)[1][2].max() == 2
    mask = raw / "masks" / "img2.png"
    before = os.stat(mask)
    Image.fromarray(np.full((10, 14), 1, np.uint8)).save(mask)  # Same name and size: new content
    os.utime(mask, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert os.stat(mask).st_size == before.st_size
    labels = prepared(tmp_path, raw)[1]
    assert (labels[2] == 1).all()
    assert "1 file changed (masks/img2.png)" in capsys.readouterr().out


def test_manual_dir_pointed_at_another_copy_is_re_prepared(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    assert (prepared(tmp_path, raw)[1][0] == 0).all()
    same = tmp_path / "same"
    shutil.copytree(raw, same)  # Names, sizes and mtimes kept: only the folder differs.
    capsys.readouterr()
    prepared(tmp_path, same)
    said = [line for line in capsys.readouterr().out.splitlines() if not tfds_says(line)]
    assert said == [
        f"Re-preparing mine in {version_folder(tmp_path)}: manual_dir is {same} (was {raw})"
    ]
    fixed = tmp_path / "fixed"  # Another copy, with one mask fixed.
    shutil.copytree(raw, fixed)
    Image.fromarray(np.full((10, 14), 2, np.uint8)).save(fixed / "masks" / "img0.png")
    assert (prepared(tmp_path, fixed)[1][0] == 2).all()
    assert "1 file changed (masks/img0.png)" in capsys.readouterr().out


def test_source_gone_is_a_clear_error_and_the_prepared_copy_stays_usable(tmp_path):
    raw = raw_folder(tmp_path / "raw")
    prepared(tmp_path, raw)
    shutil.rmtree(raw)
    with pytest.raises(ValueError) as error:
        prepared(tmp_path, raw)
    message = str(error.value)
    assert f"manual_dir {str(raw)!r} for dataset 'mine' is missing or empty" in message
    assert f"prepared in {str(version_folder(tmp_path))!r} (from {raw} on " in message
    assert "point manual_dir at the data again, or leave manual_dir unset" in message
    # Left unset: the prepared copy, as the message says.
    builder = data.get_builder(spec(), data_dir=str(tmp_path / "tfds"))
    assert len(builder.as_data_source("train")) == 4


def test_unchanged_source_is_recorded_and_not_re_prepared(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    data_dir = raw / "tfds"  # A data_dir inside manual_dir is not part of the source.
    s = spec()
    data.get_builder(s, data_dir=str(data_dir), manual_dir=str(raw))
    folder = data_dir / "segmentation_folder" / "mine" / "1.0.0"
    record = json.loads((folder / preparation.RECORD_NAME).read_text())
    assert record["source"]["manual_dir"] == str(raw)
    assert sorted(record["source"]["files"]) == sorted(
        f"{sub}/img{i}.png" for sub in ("images", "masks") for i in range(4)
    )
    stamps = mtimes(folder)
    inode = os.stat(folder).st_ino
    capsys.readouterr()
    for _ in range(2):
        data.get_builder(s, data_dir=str(data_dir), manual_dir=str(raw))
    assert capsys.readouterr().out == ""
    assert mtimes(folder) == stamps
    assert os.stat(folder).st_ino == inode


def test_data_prepared_without_a_record_is_re_prepared_once(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    prepared(tmp_path, raw)
    os.remove(version_folder(tmp_path) / preparation.RECORD_NAME)  # As an older jaxseg left it.
    capsys.readouterr()
    prepared(tmp_path, raw)
    assert "no record of the source it was prepared from" in capsys.readouterr().out
    prepared(tmp_path, raw)
    assert capsys.readouterr().out == ""
    assert not [p for p in os.listdir(version_folder(tmp_path).parent) if p != "1.0.0"]


def test_changed_channels_re_prepare_a_folder_dataset(tmp_path, capsys):
    raw = raw_folder(tmp_path / "raw")
    prepared(tmp_path, raw)
    s = spec(num_channels=1)
    builder = data.get_builder(s, data_dir=str(tmp_path / "tfds"), manual_dir=str(raw))
    assert data.DecodedSource(builder.as_data_source("train"), s)[0]["image"].shape == (10, 14, 1)
    assert "num_channels 3 -> 1" in capsys.readouterr().out


def test_synthetic_data_follows_its_generator(tmp_path, monkeypatch, capsys):
    name = data.get_spec("synthetic_shapes")
    monkeypatch.setattr(synthetic, "SPLITS", {"train": (3, 1), "validation": (2, 2)})
    builder = data.get_builder(name, data_dir=str(tmp_path))
    assert len(builder.as_data_source("validation")) == 2
    monkeypatch.setattr(synthetic, "SPLITS", {"train": (3, 1), "validation": (5, 2)})
    capsys.readouterr()
    builder = data.get_builder(name, data_dir=str(tmp_path))
    assert len(builder.as_data_source("validation")) == 5
    assert "the generator's code (jaxseg/data/synthetic.py) changed" in capsys.readouterr().out


def test_catalog_datasets_have_no_source_to_compare():
    builder = object()
    assert preparation.current_source(builder, data.get_spec("oxford_iiit_pet"), "/x") is None
    assert preparation.current_source(builder, spec(), None) is None  # No manual_dir given.


# --- Several processes ----------------------------------------------------------------------


class FakeProcesses:
    """This process as process ``index`` of two; ``broadcast_one_to_all`` returns ``sent``."""

    def __init__(self, monkeypatch, index, sent=None):
        self.sent = sent
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda: index)
        monkeypatch.setattr(preparation.multihost_utils, "broadcast_one_to_all", self.broadcast)

    def broadcast(self, x):
        self.sent = x if self.sent is None else self.sent
        return self.sent


def test_other_processes_keep_the_copy_process_0_checked(tmp_path, monkeypatch, capsys):
    raw = raw_folder(tmp_path / "raw")
    process0 = FakeProcesses(monkeypatch, 0)
    assert prepared(tmp_path, raw)[0] == 4
    stamps = mtimes(version_folder(tmp_path))
    # Process 1 sees the same files under another path (another mount point of the same disk):
    # it keeps the shared copy process 0 checked, rather than deleting it under the others.
    FakeProcesses(monkeypatch, 1, sent=process0.sent)
    other_view = tmp_path / "mount"
    shutil.copytree(raw, other_view)
    capsys.readouterr()
    assert prepared(tmp_path, other_view)[0] == 4
    assert capsys.readouterr().out == ""
    assert mtimes(version_folder(tmp_path)) == stamps


def test_another_process_re_prepares_its_own_stale_copy(tmp_path, monkeypatch):
    raw = raw_folder(tmp_path / "raw")
    own = tmp_path / "host1"
    data.get_builder(spec(), data_dir=str(own / "tfds"), manual_dir=str(raw))  # Earlier, 4 files.
    for i in range(4, 6):
        write_pair(raw, i)
    process0 = FakeProcesses(monkeypatch, 0)
    assert prepared(tmp_path, raw)[0] == 6
    FakeProcesses(monkeypatch, 1, sent=process0.sent)
    assert prepared(own, raw)[0] == 6  # Its own data_dir: checked and re-prepared here.


def test_process_0_failing_stops_the_others(tmp_path, monkeypatch):
    FakeProcesses(monkeypatch, 1, sent=np.ones(5, np.int32))
    with pytest.raises(ValueError, match="process 0 could not prepare dataset 'mine'"):
        prepared(tmp_path, raw_folder(tmp_path / "raw"))


TWO_PROCESSES = """
import sys, jax
jax.distributed.initialize("127.0.0.1:%(port)d", num_processes=2, process_id=int(sys.argv[1]))
from jaxseg import data
spec = data.get_spec("folder:mine", class_names=("a", "b", "c"))
builder = data.get_builder(spec, data_dir=%(data_dir)r, manual_dir=%(raw)r)
print("examples", len(builder.as_data_source("train")))
"""


def test_two_processes_see_the_data_process_0_re_prepared(tmp_path):
    import socket

    raw = raw_folder(tmp_path / "raw")
    prepared(tmp_path, raw)
    for i in range(4, 8):
        write_pair(raw, i)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = TWO_PROCESSES % dict(port=port, data_dir=str(tmp_path / "tfds"), raw=str(raw))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
        assert "examples 8" in out, out[-3000:]
    assert outputs[0].count("Re-preparing mine") == 1
    assert "Re-preparing" not in outputs[1]
