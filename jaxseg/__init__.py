"""jaxseg: semantic segmentation in JAX. FCN and U-Net as Flax linen modules."""

from jaxseg import models
from jaxseg.models import create as create_model

__version__ = "0.1.0"

__all__ = ["create_model", "models"]
