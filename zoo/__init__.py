"""zoo: modern vision backbones registered in timm as ``zoo_<family>_<variant>``.

``import zoo`` registers every model, after which ``timm.create_model("zoo_swin_tiny")`` works.
"""

from . import models

__version__ = "0.1.0"
__all__ = ["models"]
