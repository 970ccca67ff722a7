"""Data side of PromptIQA: image pre-processing, dataset readers, splits, groups and caching."""
from .image import IMAGE_SIZE, ImageError, is_image_file, load_images, read_image, to_tensor
from .records import Record

__all__ = ["IMAGE_SIZE", "ImageError", "Record", "is_image_file", "load_images", "read_image", "to_tensor"]
