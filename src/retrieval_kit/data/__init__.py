"""Data: robust image loading, image-list datasets, transforms from a backbone config, GLDv2 CSVs,
dataset cleaning (Places365 outdoor rule, minimum images per class) and the synthetic demo data.

Example:
    >>> import retrieval_kit as rk
    >>> cfg = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "image_size": 224, "resize_size": 256}
    >>> ds = rk.data.ImageListDataset(["a.jpg"], transform=rk.data.build_eval_transform(cfg))
"""

from __future__ import annotations

from retrieval_kit.data import cleaning
from retrieval_kit.data.cleaning import (
    load_places365_model,
    min_images_filter,
    outdoor_filter,
    outdoor_votes,
    places365_top_categories,
    read_places365_io,
    write_removed_csv,
)
from retrieval_kit.data.collate import collate_images
from retrieval_kit.data.failed_item import FailedItem
from retrieval_kit.data.gldv2 import (
    gldv2_image_path,
    gldv2_image_paths,
    read_folder_dataset,
    read_ids_csv,
    read_retrieval_solution_csv,
    read_solution_csv,
    read_train_clean_csv,
    read_train_csv,
    solution_dict,
    validate_image_id,
)
from retrieval_kit.data.image_batch import ImageBatch
from retrieval_kit.data.image_io import DEFAULT_MAX_PIXELS, load_image
from retrieval_kit.data.image_list_dataset import ImageListDataset
from retrieval_kit.data.image_load_error import ImageLoadError, ImageNotFoundError
from retrieval_kit.data.synthetic import SyntheticLandmarks, synthetic_landmarks
from retrieval_kit.data.transforms import (
    RESIZE_MODES,
    build_eval_transform,
    build_train_transform,
    long_side_shape,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "RESIZE_MODES",
    "FailedItem",
    "ImageBatch",
    "ImageListDataset",
    "ImageLoadError",
    "ImageNotFoundError",
    "SyntheticLandmarks",
    "build_eval_transform",
    "build_train_transform",
    "cleaning",
    "collate_images",
    "gldv2_image_path",
    "gldv2_image_paths",
    "load_image",
    "long_side_shape",
    "load_places365_model",
    "min_images_filter",
    "outdoor_filter",
    "outdoor_votes",
    "places365_top_categories",
    "read_places365_io",
    "read_folder_dataset",
    "read_ids_csv",
    "read_retrieval_solution_csv",
    "read_solution_csv",
    "read_train_clean_csv",
    "read_train_csv",
    "solution_dict",
    "synthetic_landmarks",
    "validate_image_id",
    "write_removed_csv",
]
