"""Datasets by name: ``load_dataset("mnist", "train")``, ``load_dataset("folder:~/pics", size=64)``.

Each dataset family's module (mnist, cifar, digits, stl10, folder, celeba, lfw) registers its
loaders with `register_dataset` when imported; aecore.data's __init__ imports them all, so this
module imports none of them (no import cycle). `load_dataset` checks the name, split and
options, resolves the data directory (explicit > $AECORE_DATA_DIR > aecore.paths default) and
whether downloading is allowed (download=None: unless AECORE_OFFLINE=1), then calls the loader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aecore import paths
from aecore.errors import DataError

from .base import ImageData
from .download import want_download

SPLITS = ("train", "test")
FOLDER_PREFIX = "folder:"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    input_shape: tuple[int, ...]          # with default options
    num_classes: int | None               # None: depends on the files (folder, lfw) or unlabelled
    source: str                           # origin, licence / terms, citation
    files: str                            # where to put the files by hand (shown when missing)
    loader: Callable[..., ImageData]      # loader(*, split, root, download, **options)
    options: dict[str, Any] = field(default_factory=dict)   # name -> default
    bundled: str = ""                     # what ships inside the package, if anything


_REGISTRY: dict[str, DatasetSpec] = {}
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "cifar-10": "cifar10", "cifar_10": "cifar10", "stl-10": "stl10", "cifar10_patches": "cifar10-patches"}


def register_dataset(name: str, *, description: str, input_shape: tuple[int, ...], source: str, files: str,
                     num_classes: int | None = None, options: dict[str, Any] | None = None, bundled: str = ""):
    """Decorator registering loader(*, split, root, download, **options) -> ImageData under `name`."""
    def wrap(loader: Callable[..., ImageData]) -> Callable[..., ImageData]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        _REGISTRY[name] = DatasetSpec(name, description, tuple(input_shape), num_classes, source, files, loader,
                                      dict(options or {}), bundled)
        return loader
    return wrap


def list_datasets() -> list[str]:
    """Registered names (the folder loader is the 'folder:PATH' pattern, not listed)."""
    return sorted(n for n in _REGISTRY if n != "folder")


def _lookup(name: str) -> tuple[DatasetSpec, str | None]:
    """(spec, folder path or None) for a name; DataError listing the known names."""
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {type(name).__name__}")
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX):].strip()
        if not path:
            raise DataError("folder: needs a path, e.g. 'folder:/home/me/pictures'")
        return _REGISTRY["folder"], path
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _REGISTRY or key == "folder":
        known = ", ".join(list_datasets())
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}, or 'folder:PATH' for an "
                        f"ImageFolder tree PATH/<class>/<image>")
    return _REGISTRY[key], None


def dataset_info(name: str) -> dict[str, Any]:
    """What the app shows about a dataset: description, input shape, classes, source/licence, files."""
    spec, path = _lookup(name)
    return {
        "name": name if path is not None else spec.name,
        "description": spec.description,
        "input_shape": spec.input_shape,
        "num_classes": spec.num_classes,
        "source": spec.source,
        "files": spec.files,
        "options": dict(spec.options),
        "bundled": spec.bundled,
        "splits": list(SPLITS),
    }


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 download: bool | None = None, **options: Any) -> ImageData:
    """Load a dataset split as uint8 images (N,C,H,W), int64 labels and class names.

    data_dir: where `<data-dir>/<dataset>/` lives (default $AECORE_DATA_DIR, else aecore.paths).
    download: True / False, or None = download if needed; AECORE_OFFLINE=1 forbids it in any case.
    options: dataset-specific (see dataset_info(name)["options"]); unknown ones are an error.
    """
    spec, path = _lookup(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; use one of {', '.join(SPLITS)}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "none"
        raise DataError(f"unknown option(s) {', '.join(unknown)} for dataset {spec.name!r}; allowed: {allowed}")
    merged = {**spec.options, **options}
    root = Path(paths.data_dir(data_dir))
    kwargs: dict[str, Any] = {"split": split, "root": root, "download": want_download(download), **merged}
    if path is not None:
        kwargs["path"] = path
    data = spec.loader(**kwargs)
    if path is not None:
        data.name = name
    return data

