"""Base images: recipes, mmdebstrap builds and the on-disk image cache.

Imports nothing from wire, control or api.
"""

from .build import ImageBuildError
from .recipe import ImageRecipe
from .store import ImageInfo, ImageStore

__all__ = ["ImageBuildError", "ImageInfo", "ImageRecipe", "ImageStore"]
