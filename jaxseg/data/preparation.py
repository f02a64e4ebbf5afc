"""Preparing a dataset once, and again whenever its source changed.

TFDS keys a prepared dataset by name, config and version only, so on its own it would reuse
data prepared from an older copy of the user's files. Each preparation therefore records what it
was made from in ``jaxseg_source.json`` inside the prepared version folder (it lives and dies
with the data):

- datasets read from ``manual_dir``: the resolved folder, and for every file under it the
  relative name, size and modification time (``stat`` only; see ``source_files``), plus the
  spec's channels, class count and ignore label (they decide what preparation keeps or rejects),
  and how images are stored (``as_stored`` for folder datasets: any type and channel count);
- ``synthetic_shapes``: a hash of its generator's code (``jaxseg/data/synthetic.py``).

On the next use the record is compared with the source as it is now. Any difference re-prepares
the data with one printed line naming it (``4 files added (...)``); data prepared without a
record (by an older jaxseg, or interrupted before the record was written) is re-prepared once. A
``manual_dir`` that is given but gone is an error naming the prepared copy. Catalog datasets
without ``manual_dir`` have no source to compare: TFDS's name and version are the whole story.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import uuid

import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from jaxseg.data import synthetic
from jaxseg.data.specs import DatasetSpec

RECORD_NAME = "jaxseg_source.json"
FORMAT = 1
# Files the operating system's file browsers write; no builder reads them.
IGNORED_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_STALE_PREFIX = "incomplete.jaxseg-stale-"  # TFDS ignores "incomplete.*" folders.


def source_files(root: str, exclude: str | None = None) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` for every file under ``root``.

    Symbolic links are followed (a folder of links to the real files is common), each folder
    once. ``exclude`` (a TFDS ``data_dir`` kept inside ``root``) is skipped. Only ``stat`` is
    read, never the contents: a folder of 10,000 images takes well under a second, where hashing
    VOC + SBD (2 GB) or Cityscapes (11 GB) would cost minutes on every run. Any real edit or copy
    changes a size or a modification time; only a change made while deliberately keeping both
    (``touch -r``) goes unnoticed.
    """
    found, seen = {}, set()
    exclude = os.path.realpath(exclude) if exclude else None
    for folder, dirs, _ in os.walk(root, followlinks=True):
        dirs.sort()  # A folder reachable twice (a link) is recorded under one stable path.
        status = os.stat(folder)
        if (status.st_dev, status.st_ino) in seen or os.path.realpath(folder) == exclude:
            dirs[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        prefix = os.path.relpath(folder, root).replace(os.sep, "/") + "/"
        prefix = "" if prefix == "./" else prefix
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name in IGNORED_FILES or entry.is_dir():
                    continue
                try:
                    status = entry.stat()
                except FileNotFoundError:  # A broken link: the builder cannot read it either.
                    status = entry.stat(follow_symlinks=False)
                found[prefix + entry.name] = [status.st_size, status.st_mtime_ns]
    return dict(sorted(found.items()))


def current_source(builder, spec: DatasetSpec, manual_dir: str | None) -> dict | None:
    """What ``builder`` would be prepared from now; ``None``: nothing to compare (catalog data,
    or a manual dataset used without ``manual_dir``)."""
    if isinstance(builder, synthetic.SyntheticShapes):
        code = inspect.getsource(synthetic) + repr((synthetic.SPLITS, synthetic.IMAGE_SIZE))
        return {"generator": hashlib.sha256(code.encode()).hexdigest()}
    if not (spec.needs_manual_dir and manual_dir):
        return None
    root = os.path.realpath(os.path.expanduser(manual_dir))
    return {
        "manual_dir": root,
        "num_channels": spec.num_channels,
        "num_classes": spec.num_classes,
        "ignore_label": spec.ignore_label,
        "images": "as_stored" if getattr(builder, "AS_STORED", False) else "uint8",
        "files": source_files(root, exclude=os.fspath(builder.data_dir_root)),
    }


def read_record(builder) -> dict | None:
    path = builder.data_path / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return record if record.get("format") == FORMAT else None


def write_record(builder, source: dict) -> None:
    record = {
        "format": FORMAT,
        "prepared_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "source": source,
    }
    tmp = builder.data_path / f"{RECORD_NAME}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(record, separators=(",", ":")))
    tmp.rename(builder.data_path / RECORD_NAME)


def describe_changes(recorded: dict | None, current: dict) -> str:
    """What differs between the recorded and the current source, in words (``''``: nothing)."""
    if recorded is None:
        return "no record of the source it was prepared from (an older jaxseg, or interrupted)"
    changes = []
    if recorded.get("generator") != current.get("generator"):
        changes.append("the generator's code (jaxseg/data/synthetic.py) changed")
    if recorded.get("manual_dir") != current.get("manual_dir"):
        was, now = recorded.get("manual_dir"), current.get("manual_dir")
        changes.append(f"manual_dir is {now} (was {was})")
    if recorded.get("images", "uint8") != current.get("images", "uint8"):
        changes.append(f"image storage {recorded.get('images', 'uint8')} -> {current['images']}")
    for key in ("num_channels", "num_classes", "ignore_label"):
        if recorded.get(key) != current.get(key):
            changes.append(f"{key} {recorded.get(key)} -> {current.get(key)}")
    old, new = recorded.get("files", {}), current.get("files", {})
    for count_of, names in (
        ("added", sorted(set(new) - set(old))),
        ("removed", sorted(set(old) - set(new))),
        ("changed", sorted(f for f in set(old) & set(new) if old[f] != new[f])),
    ):
        if names:
            shown = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
            changes.append(f"{len(names)} file{'s' * (len(names) > 1)} {count_of} ({shown})")
    return "; ".join(changes)


def _remove_prepared(builder) -> None:
    """Deletes ``builder``'s prepared version folder: first renamed aside (one atomic step, so an
    interrupted deletion never leaves a half-deleted folder that TFDS would take as prepared)."""
    path = builder.data_path
    if os.path.islink(os.fspath(path)):  # Not ours to delete: drop the link only.
        os.unlink(os.fspath(path))
        return
    stale = path.parent / f"{_STALE_PREFIX}{uuid.uuid4().hex}_{path.name}"
    path.rename(stale)
    stale.rmtree()


def _fresh(builder):
    """A new builder like ``builder``: one reads what is prepared when it is made."""
    return type(builder)(
        config=builder.builder_config,
        data_dir=os.fspath(builder.data_dir_root),
        file_format=builder.info.file_format,
    )


def _source_gone(builder, spec: DatasetSpec, manual_dir: str) -> ValueError:
    record = read_record(builder) or {}
    origin = record.get("source", {}).get("manual_dir", "an unknown folder")
    when = f" on {record['prepared_at']}" if "prepared_at" in record else ""
    return ValueError(
        f"manual_dir {manual_dir!r} for dataset {spec.name!r} is missing or empty, but the "
        f"dataset is prepared in {builder.data_dir!r} (from {origin}{when}); point manual_dir at "
        "the data again, or leave manual_dir unset (--config.manual_dir=) to use that prepared "
        "copy as it is"
    )


def check_and_prepare(builder, spec: DatasetSpec, manual_dir: str | None):
    """``builder``, prepared unless it is prepared from the source as it is now (this process
    only; see ``prepare`` for several processes). Returns the builder to read: a new one where
    stale data was removed (the old one holds the old data's splits)."""
    if manual_dir and spec.needs_manual_dir:
        manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
        if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
            if builder.is_prepared():
                raise _source_gone(builder, spec, manual_dir)
            raise ValueError(
                f"manual_dir {manual_dir!r} for dataset {spec.name!r} is missing or empty"
            )
    source = current_source(builder, spec, manual_dir)
    if builder.is_prepared():
        if source is None:
            return builder
        record = read_record(builder)
        changes = describe_changes(record and record.get("source"), source)
        if not changes:
            return builder
        print(f"Re-preparing {spec.name} in {builder.data_dir}: {changes}", flush=True)
        _remove_prepared(builder)
        builder = _fresh(builder)
    elif spec.needs_manual_dir and not manual_dir:
        raise ValueError(
            f"dataset {spec.name!r} is not prepared in {builder.data_dir!r}; set manual_dir "
            "(config.manual_dir) to your copy of the data"
        )
    if spec.license_note:
        print(f"Preparing {spec.name}: {spec.license_note}")
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
    )
    if source is not None and builder.is_prepared():  # (A mocked builder prepares nothing.)
        write_record(builder, source)
    return builder


def _record_digest(builder) -> np.ndarray:
    """``int32[4]``: a digest of the prepared copy's record; zeros when it has none."""
    try:
        text = (builder.data_path / RECORD_NAME).read_bytes()
    except FileNotFoundError:
        return np.zeros(4, np.int32)
    return np.frombuffer(hashlib.sha256(text).digest()[:16], np.int32).copy()


def prepare(builder, spec: DatasetSpec, manual_dir: str | None):
    """``builder`` made ready to read, prepared from its current source (``check_and_prepare``).

    With several processes, process 0 checks and (re-)prepares first (``data_dir`` may be
    shared), then tells the others which prepared copy it vouched for. A process that finds that
    very copy (a shared ``data_dir``) uses it, even where its own view of ``manual_dir`` differs
    (another mount point), and never deletes it under the others; a process that finds another
    copy (a ``data_dir`` of its host's own) checks and prepares it itself.
    """
    if jax.process_count() == 1:
        return check_and_prepare(builder, spec, manual_dir)
    if jax.process_index() == 0:
        try:
            builder = check_and_prepare(builder, spec, manual_dir)
        except Exception:
            # Tell the others, then stop.
            multihost_utils.broadcast_one_to_all(np.ones(5, np.int32))
            raise
        multihost_utils.broadcast_one_to_all(
            np.concatenate([[0], _record_digest(builder)]).astype(np.int32)
        )
        return builder
    message = multihost_utils.broadcast_one_to_all(np.zeros(5, np.int32))
    if message[0]:
        raise ValueError(f"process 0 could not prepare dataset {spec.name!r}: see its error")
    builder = _fresh(builder)  # Made before process 0 (re-)prepared: it may hold the old splits.
    if message[1:].any() and np.array_equal(_record_digest(builder), message[1:]):
        return builder  # The very copy process 0 checked (a shared data_dir).
    return check_and_prepare(builder, spec, manual_dir)
