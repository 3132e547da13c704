"""Model families; importing this package registers every zoo model in timm."""

from . import affnet
from . import agent_cswin
from . import agent_deit
from . import agent_pvt
from . import agent_swin
from . import biformer
from . import cswin
from . import ffnet
from . import flatten_cswin
from . import flatten_pvt
from . import flatten_swin
from . import gfnet
from . import hornet
from . import lkca
from . import nat
from . import parcnet
from . import parcnetv2
from . import pvt
from . import replknet
from . import shvit
from . import slak
from . import spectformer
from . import svt
from . import swin
from . import unireplknet
from . import van
from ._registry import register_model, register_tiny_kwargs, register_variants, tiny_kwargs

__all__ = ["register_model", "register_tiny_kwargs", "register_variants", "tiny_kwargs"]
