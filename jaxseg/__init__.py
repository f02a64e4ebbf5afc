"""jaxseg: semantic segmentation in JAX. FCN and U-Net as Flax linen modules.

Submodules load on first use (PEP 562), so ``import jaxseg.serving`` to run an exported model
pulls in jax and numpy only, not Flax or the training code.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["create_model", "models"]


def __getattr__(name: str):
    if name == "models":
        return importlib.import_module("jaxseg.models")
    if name == "create_model":
        return importlib.import_module("jaxseg.models").create
    raise AttributeError(f"module 'jaxseg' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
