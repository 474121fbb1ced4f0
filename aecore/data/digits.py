"""scikit-learn's 8x8 digits: a dataset that needs no files and no network (1,797 images).

Split here, stratified and seeded (`stratified_test_mask`), since the data has no official split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import ImageData, stratified_test_mask
from .options import float_option, int_option
from .registry import register_dataset


@register_dataset(
    "digits",
    description="scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set), 1,797 images",
    input_shape=(1, 8, 8), num_classes=10,
    source="E. Alpaydin, C. Kaynak, Optical Recognition of Handwritten Digits, UCI ML repository; "
           "bundled with scikit-learn (BSD)",
    files="nothing to download: ships with scikit-learn",
    options={"seed": 0, "test_fraction": 0.2},
)
def load_digits(*, split: str, root: Path, download: bool, seed: int, test_fraction: float) -> ImageData:
    """Values 0..16 scaled to 0..255 (round(v * 255 / 16)). Split, stratified and seeded: within
    each class a permutation from numpy's default_rng(seed), its first round(test_fraction * n)
    images are test; both splits keep the original order. Default: 1,438 train / 359 test."""
    seed = int_option("seed", seed, 0, 2**32 - 1, dataset="digits")
    test_fraction = float_option("test_fraction", test_fraction, 0.0, 0.9, dataset="digits")
    pixels, labels = _sklearn_digits()
    images = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    is_test = stratified_test_mask(labels, test_fraction, seed)
    keep = is_test if split == "test" else ~is_test
    return ImageData(torch.from_numpy(images[keep]), torch.from_numpy(labels[keep]), [str(i) for i in range(10)],
                     "digits", split, f"scikit-learn's digits, stratified split (test_fraction={test_fraction}, "
                     f"seed={seed})")


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 64) float pixel values 0..16 and int64 labels: scikit-learn's digits.csv.gz read
    directly (importing sklearn.datasets takes seconds), else through load_digits."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            if table.shape == (1797, 65):
                return table[:, :64], table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return bunch.data, bunch.target.astype(np.int64)
