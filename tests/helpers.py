"""Tiny structured datasets for fast tests (no files, no network)."""

from __future__ import annotations

import torch

from aecore.data.base import ImageData


def blobs(n: int = 96, shape: tuple[int, ...] = (1, 8, 8), classes: int = 3, seed: int = 0) -> ImageData:
    """n uint8 images: one smooth random prototype per class plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, *shape, generator=g)
    labels = torch.arange(n) % classes
    x = protos[labels] + 0.1 * torch.randn(n, *shape, generator=g)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageData(images=images, labels=labels, classes=[f"c{i}" for i in range(classes)],
                     name="blobs", split="train", source="test fixture")
