"""Model families; importing this package registers every zoo model in timm."""

from . import swin
from ._registry import register_model, register_tiny_kwargs, tiny_kwargs

__all__ = ["register_model", "register_tiny_kwargs", "swin", "tiny_kwargs"]
