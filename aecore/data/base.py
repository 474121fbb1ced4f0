"""The one in-memory dataset type: uint8 images as one tensor, labels, class names; and the two
seeded splits every family uses (`split_off` for validation, `stratified_test_mask` for data
without an official test split).

Training moves `images` to the device once; batches are index slices of a permutation and are
converted to float in [0, 1] per batch (`as_float`). No per-item Python work on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor


@dataclass
class ImageData:
    images: Tensor        # uint8 (N, C, H, W); flat data is (N, D)
    labels: Tensor        # int64 (N,); -1 where unknown / unlabelled
    classes: list[str]    # class names, index = label
    name: str             # registry name, e.g. "mnist"
    split: str            # "train" | "test"
    source: str = ""      # where it came from, for the user: a path, "download", "bundled sample"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8:
            raise TypeError(f"ImageData.images must be uint8, got {self.images.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.images.shape[1:])

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def subset(self, index: Tensor | slice) -> "ImageData":
        return replace(self, images=self.images[index], labels=self.labels[index])

    def as_float(self, index: Tensor | slice | None = None) -> Tensor:
        """Images (all, or `index`) as float32 in [0, 1], on the data's device."""
        images = self.images if index is None else self.images[index]
        return images.float().div_(255.0)


def split_off(data: ImageData, fraction: float, *, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Seeded random split into (rest, held-out fraction), e.g. for a validation set."""
    n = len(data)
    n_held = int(round(n * fraction))
    if n_held <= 0:
        return data, data.subset(slice(0, 0))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).to(data.images.device)
    return data.subset(order[n_held:]), data.subset(order[:n_held])


def stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, stratified test split: within each label, a permutation from
    numpy's default_rng(seed) and its first round(fraction * count) members."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        is_test[rng.permutation(members)[: round(fraction * len(members))]] = True
    return is_test
