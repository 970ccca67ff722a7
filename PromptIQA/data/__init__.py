"""Data side of PromptIQA: image pre-processing, dataset readers, splits, groups and caching."""
from .dataset_info import (
           DEFAULT_DATASET_INFO,
           DatasetEntry,
           SummaryRow,
           check_datasets,
           format_summary,
           load_dataset_info,
           summarize,
)
from .datasets import DATASET_NAMES, canonical_name, read_dataset, read_dataset_as
from .image import IMAGE_SIZE, ImageError, is_image_file, load_images, read_image, to_tensor
from .records import Record
from .split import split_records

__all__ = ["IMAGE_SIZE", "ImageError", "Record", "is_image_file", "load_images", "read_image", "to_tensor",
           "DATASET_NAMES", "DEFAULT_DATASET_INFO", "DatasetEntry", "SummaryRow", "canonical_name",
           "check_datasets", "format_summary", "load_dataset_info", "read_dataset", "read_dataset_as",
           "split_records", "summarize"]
