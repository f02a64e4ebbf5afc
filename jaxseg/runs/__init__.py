"""What one does with a trained run: load it (``loading``), predict image files
(``image_files``), score a dataset split (``scoring``) and export it (``exporting``; ONNX:
``onnx_export``, which needs the optional ``jax2onnx`` only when called).

The libraries behind ``python -m jaxseg.predict``, ``jaxseg.evaluate`` and ``jaxseg.export``; a
notebook calls the same functions::

    from jaxseg import runs

    trained = runs.load_trained("workdirs/unet")
    report = runs.predict_files(trained, ["photos/"], "preds/")
    metrics = runs.evaluate_split(trained, "validation", tta="flips")
    runs.export_run("workdirs/unet", "exports/unet.jax")
    runs.export_run_onnx("workdirs/unet", "exports/unet.onnx")
"""

from jaxseg.runs.exporting import export_model, export_run, save_exported
from jaxseg.runs.image_files import Report, Written, predict_files, predict_image
from jaxseg.runs.loading import Trained, load_trained, read_config
from jaxseg.runs.onnx_export import export_onnx, export_run_onnx, save_onnx
from jaxseg.runs.scoring import default_output, default_split, evaluate_split, write_json

__all__ = [
    "Report",
    "Trained",
    "Written",
    "default_output",
    "default_split",
    "evaluate_split",
    "export_model",
    "export_onnx",
    "export_run",
    "export_run_onnx",
    "load_trained",
    "predict_files",
    "predict_image",
    "read_config",
    "save_exported",
    "save_onnx",
    "write_json",
]
