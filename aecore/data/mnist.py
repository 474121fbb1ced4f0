"""MNIST and Fashion-MNIST: the IDX files (parsed and verified by aecore.data.idx) as datasets.

Resolution: the data directory (`<data-dir>/<dataset>/` or torchvision's `<data-dir>/MNIST/raw/`),
then a torchvision download (when allowed and reachable), then the bundled 10,000-image test
split. A test-split request takes the bundled copy before downloading: it is the official test
split, byte for byte (checked by SHA-256 like any other copy).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from aecore import paths
from aecore.errors import DataError

from . import download as dl
from .base import ImageData
from .idx import load_idx_pair
from .registry import register_dataset

log = logging.getLogger("aecore.data")

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
_PREFIX = {"train": "train", "test": "t10k"}

_NOTICED: set[str] = set()   # datasets whose "bundled sample only" notice was logged this process


def _notice_once(key: str, message: str, *args: Any) -> None:
    if key not in _NOTICED:
        _NOTICED.add(key)
        log.warning(message, *args)


def _idx_files(folder: Path, prefix: str) -> tuple[Path | None, Path | None]:
    def first(kind: str) -> Path | None:
        for stem in (f"{prefix}-{kind}", f"{prefix}-{kind}".replace("-idx", ".idx")):
            for suffix in ("", ".gz"):
                if (p := folder / (stem + suffix)).is_file():
                    return p
        return None

    return first("images-idx3-ubyte"), first("labels-idx1-ubyte")


def _idx_loader(dataset: str, tv_name: str, classes: list[str]) -> Callable[..., ImageData]:
    def load(*, split: str, root: Path, download: bool) -> ImageData:
        prefix = _PREFIX[split]
        folders = [root / dataset, root / tv_name / "raw", root / tv_name]

        def from_folders() -> ImageData | None:
            for folder in folders:
                images, labels = _idx_files(folder, prefix)
                if images and labels:
                    x, y, how = load_idx_pair(images, labels, dataset=dataset)
                    return ImageData(x, y, list(classes), dataset, split, f"{folder} ({how})")
                if images or labels:
                    have, need = (images, "labels") if images else (labels, "images")
                    raise DataError(f"{folder}: found {have.name} but no {prefix}-{need}-idx"
                                    f"{'3' if need == 'images' else '1'}-ubyte[.gz] next to it")
            return None

        def bundled() -> ImageData | None:
            folder = paths.SAMPLES_DIR / dataset
            images, labels = _idx_files(folder, "t10k")
            if not (images and labels):
                return None
            x, y, _ = load_idx_pair(images, labels, dataset=dataset)   # verified like any other copy
            return ImageData(x, y, list(classes), dataset, "test", "bundled sample (test split only)")

        if (data := from_folders()) is not None:
            return data
        if split == "test" and (data := bundled()) is not None:
            log.info("%s: using the bundled copy of the official test split", dataset)
            return data
        failure = dl.disabled_reason()
        if download:
            try:
                _download_idx(tv_name, root / tv_name / "raw")
                if (data := from_folders()) is not None:
                    return data
                failure = "the download did not produce the expected files"
            except DataError as e:
                failure = str(e)
                log.warning("%s: %s", dataset, e)
        if (data := bundled()) is not None:
            _notice_once(dataset, "%s: no data in %s and %s; using the bundled sample, which is the "
                         "10,000-image TEST split only (returned for split=%r). Put the four IDX files in "
                         "%s for the 60,000-image train split.", dataset, root, failure, split, root / dataset)
            return data
        raise DataError(f"{dataset}: no data found. Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                        f"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in {root / dataset}/ "
                        f"({failure}; the bundled sample is missing from this installation)")

    return load


def _download_idx(tv_name: str, folder: Path) -> None:
    import torchvision.datasets as tvd

    cls = getattr(tvd, tv_name)
    for filename, md5 in cls.resources:
        if not (folder / filename).is_file():
            dl.fetch([m + filename for m in cls.mirrors], folder, filename=filename, md5=md5)


register_dataset(
    "mnist",
    description="MNIST handwritten digits, 28x28 grayscale, 10 classes (60,000 train / 10,000 test)",
    input_shape=(1, 28, 28), num_classes=10,
    source="Y. LeCun, C. Cortes, C. Burges, The MNIST database of handwritten digits; CC BY-SA 3.0",
    files="<data-dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (or torchvision's <data-dir>/MNIST/raw/)",
    bundled="the 10,000-image test split (gzip IDX, 1.6 MB)",
)(_idx_loader("mnist", "MNIST", MNIST_CLASSES))

register_dataset(
    "fashion-mnist",
    description="Fashion-MNIST clothing images, 28x28 grayscale, 10 classes (60,000 train / 10,000 test)",
    input_shape=(1, 28, 28), num_classes=10,
    source="H. Xiao, K. Rasul, R. Vollgraf, Fashion-MNIST (2017), Zalando Research; MIT licence",
    files="<data-dir>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] "
          "(or torchvision's <data-dir>/FashionMNIST/raw/)",
    bundled="the 10,000-image test split, sorted by class (gzip IDX, 4.3 MB) + LICENSE",
)(_idx_loader("fashion-mnist", "FashionMNIST", FASHION_CLASSES))
