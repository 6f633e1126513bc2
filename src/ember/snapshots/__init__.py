"""Snapshot storage: filesystem layers on local disk.

Imports nothing from wire, control or api.
"""

from .layers import Layer, LayerError, LayerStore

__all__ = ["Layer", "LayerError", "LayerStore"]
