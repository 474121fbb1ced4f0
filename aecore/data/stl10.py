"""STL-10's labelled splits from the official binary files (stl10_binary/{train,test}_{X,y}.bin)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from aecore.errors import DataError

from . import download as dl
from .base import ImageData
from .options import int_option
from .registry import register_dataset

log = logging.getLogger("aecore.data")

CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
TGZ_MD5 = "91f7769df0f17e558f3565bffb0c7dfb"
PIXELS = 3 * 96 * 96


def resize_batch(images: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """uint8 (N,C,H,W) -> uint8 (N,C,size,size), antialiased bilinear (matches PIL's BILINEAR)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        batch = images[start:start + chunk].float()
        resized = torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear", antialias=True,
                                                  align_corners=False)
        out[start:start + chunk] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def read_stl10(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """<folder>/{split}_X.bin (N x 3 x 96 x 96, column-major) + {split}_y.bin (labels 1..10)."""
    xp, yp = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for p in (xp, yp):
        if not p.is_file():
            raise DataError(f"stl10: {p} is missing")
    x = np.fromfile(xp, dtype=np.uint8)
    if x.size == 0 or x.size % PIXELS:
        raise DataError(f"{xp}: {x.size} bytes is not a whole number of 96x96x3 STL-10 images")
    y = np.fromfile(yp, dtype=np.uint8).astype(np.int64)
    n = x.size // PIXELS
    if y.size != n:
        raise DataError(f"{xp} holds {n} images but {yp} holds {y.size} labels")
    if y.min() < 1 or y.max() > 10:
        raise DataError(f"{yp}: labels must be 1..10")
    x = x.reshape(n, 3, 96, 96).transpose(0, 1, 3, 2)   # stored column-major, like torchvision reads it
    classes = list(CLASSES)
    names = folder / "class_names.txt"
    if names.is_file():
        lines = [ln.strip() for ln in names.read_text(errors="replace").splitlines() if ln.strip()]
        if len(lines) == 10:
            classes = lines
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y - 1), classes


@register_dataset(
    "stl10",
    description="STL-10 colour photos (5,000 train / 8,000 test, labelled), 96x96 resized to 64x64 RGB",
    input_shape=(3, 64, 64), num_classes=10,
    source="A. Coates, H. Lee, A. Ng, An Analysis of Single-Layer Networks in Unsupervised Feature "
           "Learning, AISTATS 2011 (images from ImageNet)",
    files="<data-dir>/stl10/stl10_binary/{train,test}_{X,y}.bin (+ class_names.txt), extracted from "
          "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (2.6 GB)",
    options={"size": 64},
)
def load_stl10(*, split: str, root: Path, download: bool, size: int) -> ImageData:
    """The labelled splits; images resized 96 -> size (default 64) with antialiased bilinear."""
    size = int_option("size", size, 8, 96, dataset="stl10")
    base = root / "stl10"
    candidates = [base / "stl10_binary", base, root / "stl10_binary"]
    folder = next((c for c in candidates if (c / f"{split}_X.bin").is_file()), None)
    if folder is None and download:
        try:
            dl.fetch([URL], base, filename="stl10_binary.tar.gz", md5=TGZ_MD5, extract=True)
            folder = next((c for c in candidates if (c / f"{split}_X.bin").is_file()), None)
        except DataError as e:
            log.warning("stl10: %s", e)
    if folder is None:
        raise DataError(f"stl10: no data found; put {split}_X.bin and {split}_y.bin (from {URL}, extracted) "
                        f"in {base / 'stl10_binary'}/" + ("" if download else f" ({dl.disabled_reason()})"))
    x, y, classes = read_stl10(folder, split)
    return ImageData(resize_batch(x, size), y, classes, "stl10", split,
                     f"{folder} (96x96 resized to {size}x{size})")
