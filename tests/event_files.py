"""TensorBoard event files read back without TensorFlow (TFRecords: length, CRC, data, CRC)."""

import glob
import io
import os
import struct

import numpy as np
from PIL import Image
from tensorboardX.proto import event_pb2


def tensorboard_events(logdir: str) -> list:
    """The ``Event``s of a run's TensorBoard files."""
    events = []
    for path in glob.glob(os.path.join(logdir, "events*")):
        with open(path, "rb") as f:
            raw = f.read()
        pos = 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos : pos + 8])
            events.append(event_pb2.Event.FromString(raw[pos + 12 : pos + 12 + length]))
            pos += 16 + length
    return events


def tensorboard_images(logdir: str) -> dict[tuple[str, int], np.ndarray]:
    """``{(tag, step): image}`` of the image summaries in a run's event files."""
    found = {}
    for event in tensorboard_events(logdir):
        for value in event.summary.value:
            if value.HasField("image"):
                encoded = value.image.encoded_image_string
                found[value.tag, event.step] = np.asarray(Image.open(io.BytesIO(encoded)))
    return found
