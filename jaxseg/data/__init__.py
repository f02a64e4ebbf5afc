"""Datasets (TFDS builders), their specs, and the grain input pipeline.

Importing this package registers jaxseg's builders with TFDS: ``synthetic_shapes`` (the embedded
default), ``isbi2012``, ``camvid``, ``voc2012_segmentation``, ``ade20k`` and
``segmentation_folder``.
"""

from jaxseg.data.ade20k import Ade20k
from jaxseg.data.builders import Camvid, Isbi2012, SegmentationFolder, Voc2012Segmentation
from jaxseg.data.pipeline import (
    DecodedSource,
    EvalLoader,
    create_eval_loader,
    create_loader,
    eval_batches,
    get_builder,
    num_eval_batches,
)
from jaxseg.data.specs import IGNORE_INDEX, SPECS, DatasetSpec, get_spec
from jaxseg.data.synthetic import SyntheticShapes

__all__ = [
    "IGNORE_INDEX",
    "SPECS",
    "Ade20k",
    "Camvid",
    "DatasetSpec",
    "DecodedSource",
    "EvalLoader",
    "Isbi2012",
    "SegmentationFolder",
    "SyntheticShapes",
    "Voc2012Segmentation",
    "create_eval_loader",
    "create_loader",
    "eval_batches",
    "get_builder",
    "get_spec",
    "num_eval_batches",
]
