"""The built-in datasets. Each loader returns an ImageData: uint8 (N,C,H,W), int64 labels, classes.

Resolution for mnist / fashion-mnist: the data directory (`<data-dir>/<dataset>/` or torchvision's
`<data-dir>/MNIST/raw/`), then a torchvision download (when allowed and reachable), then the
bundled 10,000-image test split. A test-split request takes the bundled copy before downloading:
it is the official test split, byte for byte (checked by SHA-256 like any other copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from aecore import paths
from aecore.errors import DataError

from . import cache, cifar
from . import download as dl
from .base import ImageData
from .idx import load_idx_pair
from .images import Item, class_items, decode_items, describe_skips, is_archive, scan_folder, tree_files
from .registry import bool_option, float_option, int_option, register_dataset

log = logging.getLogger("aecore.data")

_NOTICED: set[str] = set()   # datasets whose "bundled sample only" notice was logged this process


def _notice_once(key: str, message: str, *args: Any) -> None:
    if key not in _NOTICED:
        _NOTICED.add(key)
        log.warning(message, *args)


# ---------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
_PREFIX = {"train": "train", "test": "t10k"}


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


# ---------------------------------------------------------------------------------------------
# CIFAR-10 and its patches


def _load_cifar(split: str, root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    base = root / "cifar10"
    got = cifar.load_from_dir(base, split)
    if got is not None:
        return got
    failure = dl.disabled_reason()
    if download:
        try:
            dl.fetch([cifar.URL], base, filename="cifar-10-python.tar.gz", md5=cifar.TGZ_MD5, extract=True)
            got = cifar.load_from_dir(base, split)
            if got is not None:
                return got
            failure = "the download did not produce the expected files"
        except DataError as e:
            failure = str(e)
    raise DataError(f"cifar10: no data found ({failure}); {cifar.FILES_HELP.format(dir=f'{base}/')}")


@register_dataset(
    "cifar10",
    description="CIFAR-10 tiny colour photos, 32x32 RGB, 10 classes (50,000 train / 10,000 test)",
    input_shape=(3, 32, 32), num_classes=10,
    source="A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, tech. report, 2009",
    files=cifar.FILES_HELP.format(dir="<data-dir>/cifar10/"),
)
def load_cifar10(*, split: str, root: Path, download: bool) -> ImageData:
    x, y, source = _load_cifar(split, root, download)
    return ImageData(x, y, list(cifar.CLASSES), "cifar10", split, source)


@register_dataset(
    "cifar10-patches",
    description="random 7x7 RGB patches of CIFAR-10 images, labelled by their image's class",
    input_shape=(3, 7, 7), num_classes=10,
    source="cut from CIFAR-10 (Krizhevsky, 2009); a seeded uniform choice of image and position",
    files=cifar.FILES_HELP.format(dir="<data-dir>/cifar10/"),
    options={"count": None, "seed": 0},
)
def load_cifar10_patches(*, split: str, root: Path, download: bool, count: int | None, seed: int) -> ImageData:
    """count defaults to 100,000 (train) / 20,000 (test); seed picks the patches reproducibly."""
    if count is None:
        count = 100_000 if split == "train" else 20_000
    count = int_option("count", count, 1, 10_000_000, dataset="cifar10-patches")
    seed = int_option("seed", seed, 0, 2**63 - 1, dataset="cifar10-patches")
    x, y, source = _load_cifar(split, root, download)
    px, py = cifar.extract_patches(x, y, count=count, size=7, seed=seed)
    return ImageData(px, py, list(cifar.CLASSES), "cifar10-patches", split,
                     f"{count} random 7x7 patches (seed {seed}) of {source}")


# ---------------------------------------------------------------------------------------------
# scikit-learn's digits


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


def stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, stratified test split: within each label, a permutation from
    numpy's default_rng(seed) and its first round(fraction * count) members."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        is_test[rng.permutation(members)[: round(fraction * len(members))]] = True
    return is_test


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


# ---------------------------------------------------------------------------------------------
# STL-10 (binary files)

STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
STL_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL_TGZ_MD5 = "91f7769df0f17e558f3565bffb0c7dfb"
STL_PIXELS = 3 * 96 * 96


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
    if x.size == 0 or x.size % STL_PIXELS:
        raise DataError(f"{xp}: {x.size} bytes is not a whole number of 96x96x3 STL-10 images")
    y = np.fromfile(yp, dtype=np.uint8).astype(np.int64)
    n = x.size // STL_PIXELS
    if y.size != n:
        raise DataError(f"{xp} holds {n} images but {yp} holds {y.size} labels")
    if y.min() < 1 or y.max() > 10:
        raise DataError(f"{yp}: labels must be 1..10")
    x = x.reshape(n, 3, 96, 96).transpose(0, 1, 3, 2)   # stored column-major, like torchvision reads it
    classes = list(STL_CLASSES)
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
            dl.fetch([STL_URL], base, filename="stl10_binary.tar.gz", md5=STL_TGZ_MD5, extract=True)
            folder = next((c for c in candidates if (c / f"{split}_X.bin").is_file()), None)
        except DataError as e:
            log.warning("stl10: %s", e)
    if folder is None:
        raise DataError(f"stl10: no data found; put {split}_X.bin and {split}_y.bin (from {STL_URL}, extracted) "
                        f"in {base / 'stl10_binary'}/" + ("" if download else f" ({dl.disabled_reason()})"))
    x, y, classes = read_stl10(folder, split)
    return ImageData(resize_batch(x, size), y, classes, "stl10", split,
                     f"{folder} (96x96 resized to {size}x{size})")


# ---------------------------------------------------------------------------------------------
# image-file datasets: shared decode + cache


def _decode_cached(name: str, key_parts: list[Any], items_fn: Callable[[], tuple[list[Item], list[str]]], *,
                   size: int, grayscale: bool = False, crop: float = 1.0, min_cache: int = 0,
                   ) -> tuple[torch.Tensor, torch.Tensor, list[str], int, list[tuple[str, str]]]:
    """(images, labels, classes, skip count, skip examples), decoded once and cached when large."""
    def build() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        items, classes = items_fn()
        decoded = decode_items(items, size=size, grayscale=grayscale, crop=crop)
        return ({"images": torch.from_numpy(decoded.images), "labels": torch.from_numpy(decoded.labels)},
                {"classes": json.dumps(classes), "skipped": json.dumps([len(decoded.skipped), decoded.skipped[:20]])})

    key = cache.source_key(name, *key_parts, size, grayscale, crop)
    path = cache.cache_path(name, key)
    hit = cache.load(path)
    if hit is not None:
        tensors, meta = hit
    else:
        tensors, meta = build()
        if len(tensors["images"]) + json.loads(meta["skipped"])[0] >= min_cache:
            cache.save(path, tensors, meta)
    count, examples = json.loads(meta["skipped"])
    return tensors["images"], tensors["labels"], json.loads(meta["classes"]), count, [tuple(e) for e in examples]


def _skip_note(count: int, examples: list[tuple[str, str]]) -> str:
    if not count:
        return ""
    note = describe_skips(examples)
    if count > len(examples):
        note = f"{count} unreadable files skipped, e.g. " + ", ".join(f"{n} ({w})" for n, w in examples[:5])
    return note


# ---------------------------------------------------------------------------------------------
# folder:PATH


def _strip_wrapper(files: dict[str, Any]) -> dict[str, Any]:
    """Archives often wrap the tree in one top folder ('pics/<class>/x.png'): drop it."""
    while files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) != 1 or any(name.count("/") < 2 for name in files):
            break
        top = tops.pop() + "/"
        files = {name[len(top):]: r for name, r in files.items()}
    return files


@register_dataset(
    "folder",
    description="your own images: an ImageFolder tree PATH/<class>/<image> (or PATH/train/<class>/..., "
                "PATH/test/<class>/...; or a .tar.gz/.zip of one)",
    input_shape=(3, 32, 32), num_classes=None,
    source="your files",
    files="PATH/<class>/<image>.png|jpg|... ; with PATH/train/ and PATH/test/ the splits come from those",
    options={"size": 32, "grayscale": False, "test_fraction": 0.1, "seed": 0},
)
def load_folder(*, split: str, root: Path, download: bool, path: str, size: int, grayscale: bool,
                test_fraction: float, seed: int) -> ImageData:
    """Every image under PATH/<class>/, converted to RGB (or L) and centre-cropped/resized to size.

    With PATH/train/ and PATH/test/ those are the splits. Otherwise the tree is split here:
    stratified and seeded (`stratified_test_mask`), test_fraction of each class (rounded) is the
    test split; test_fraction=0 makes the whole tree the train split. Unreadable files are
    skipped; their count is in ImageData.source and logged. Which files are read, and which links
    are followed, is in aecore.data.images' docstring: regular files inside PATH only.
    """
    size = int_option("size", size, 4, 1024, dataset="folder")
    grayscale = bool_option("grayscale", grayscale, dataset="folder")
    seed = int_option("seed", seed, 0, 2**32 - 1, dataset="folder")
    if test_fraction != 0:
        test_fraction = float_option("test_fraction", test_fraction, 0.0, 0.9, dataset="folder")
    base = Path(path).expanduser()
    if not base.exists():
        raise DataError(f"folder: {base} does not exist")
    if not (base.is_dir() or is_archive(base)):
        raise DataError(f"folder: {base} is not a folder or a .tar/.tar.gz/.zip archive")

    skipped_folders: list[tuple[str, str]] = []     # links to folders, folders that cannot be listed
    if base.is_dir():
        listing, skipped_folders = scan_folder(base)
        files: dict[str, Any] = {rel: f.read_bytes for rel, f in listing.items()}
        stamp = hashlib.sha256(repr(sorted((rel, f.rel, f.problem, f.stat().st_size, f.stat().st_mtime_ns)
                                           for rel, f in listing.items())).encode()).hexdigest()
        key_parts: list[Any] = ["dir", base.resolve(), stamp]
    else:
        files = _strip_wrapper(tree_files(base))
        key_parts = ["archive", *cache.file_stamp(base)]

    tops = {name.split("/", 1)[0] for name in files if "/" in name}
    has_splits = {"train", "test"} <= tops
    where = base
    class_names = None
    if has_splits:
        def part(s: str) -> dict[str, Any]:
            return {name[len(s) + 1:]: r for name, r in files.items() if name.startswith(s + "/")}
        # one class list for both splits, so a class missing from one split cannot shift the labels
        class_names = sorted(set(class_items(part("train"))[1]) | set(class_items(part("test"))[1]))
        files = part(split)
        skipped_folders = [(name[len(split) + 1:], why) for name, why in skipped_folders
                           if name.startswith(split + "/")]
        where = base / split
        key_parts += [split, "classes of both splits"]
    elif split == "test" and not test_fraction:
        raise DataError(f"folder: {base} has no train/ and test/ subfolders and test_fraction=0, so it has "
                        f"no test split")

    def items() -> tuple[list[Item], list[str]]:
        found, classes = class_items(files, classes=class_names)
        if not found:
            raise DataError(f"folder: no image files under {where} (expected {where}/<class>/<image>.png|jpg|...)")
        return found, classes

    x, y, classes, count, examples = _decode_cached("folder", key_parts, items, size=size,
                                                    grayscale=grayscale, min_cache=500)
    notes = [_skip_note(count + len(skipped_folders), skipped_folders + examples)]
    folders = {name.split("/", 1)[0] for name in files if "/" in name}
    if where.is_dir():   # (links to folders are not followed, and already named in the skip note)
        folders |= {d.name for d in where.iterdir()
                    if not d.name.startswith(".") and not d.is_symlink() and d.is_dir()}
    if empty := sorted(folders - set(classes)):
        notes.append(f"left out {len(empty)} folder(s) without image files: {', '.join(empty[:5])}")
    if len(x) and (bare := [c for c, n in zip(classes, torch.bincount(y, minlength=len(classes)).tolist()) if not n]):
        notes.append(f"no readable image in class(es) {', '.join(bare[:5])}" + (f" of the {split} split" if has_splits else "")
                     + " (kept in the class list, so the labels stay the same)")
    note = "; ".join(n for n in notes if n)
    if note:
        log.warning("folder %s: %s", where, note)
    if len(x) == 0:
        raise DataError(f"folder: none of the image files under {where} could be read ({note})")
    classes = [base.name if c == "." else c for c in classes]
    how = ""
    if not has_splits and test_fraction:
        is_test = torch.from_numpy(stratified_test_mask(y.numpy(), test_fraction, seed))
        keep = is_test if split == "test" else ~is_test
        if not keep.any():
            raise DataError(f"folder: {where} has too few images for a {split} split with test_fraction="
                            f"{test_fraction} ({len(x)} readable images)")
        x, y = x[keep], y[keep]
        how = f" ({split} part of a stratified split, test_fraction={test_fraction}, seed={seed})"
    source = f"folder {where}: {len(x)} images, {len(classes)} classes{how}" + (f"; {note}" if note else "")
    return ImageData(x, y, classes, "folder", split, source)


# ---------------------------------------------------------------------------------------------
# CelebA

CELEBA_PARTITION = {"train": "0", "test": "2"}


def _read_partition(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    if not out:
        raise DataError(f"{path}: no '<image> <partition>' lines")
    return out


def _read_attr(path: Path, attr: str) -> dict[str, int]:
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: not a CelebA attribute file")
    names = lines[1].split()
    if attr not in names:
        raise DataError(f"celeba: unknown attribute {attr!r}; one of {', '.join(names)}")
    column = names.index(attr) + 1
    out = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == len(names) + 1:
            out[parts[0]] = 1 if parts[column] == "1" else 0
    return out


@register_dataset(
    "celeba",
    description="CelebA aligned celebrity faces (162,770 train / 19,962 test), centre 178x178 resized to 64x64 RGB",
    input_shape=(3, 64, 64), num_classes=None,
    source="Z. Liu, P. Luo, X. Wang, X. Tang, Deep Learning Face Attributes in the Wild, ICCV 2015; "
           "non-commercial research use only (CelebA agreement)",
    files="<data-dir>/celeba/img_align_celeba/ (or img_align_celeba.zip) + <data-dir>/celeba/list_eval_partition.txt "
          "(+ list_attr_celeba.txt for the attr option), from the CelebA site / Google Drive",
    options={"size": 64, "limit": None, "attr": None},
)
def load_celeba(*, split: str, root: Path, download: bool, size: int, limit: int | None, attr: str | None) -> ImageData:
    """Aligned images, centre square crop (178x178 of 178x218), resized to size. Partition 0 is
    train, 2 is test (1, validation, is not used). Unlabelled (-1) unless attr names one of the
    40 attributes (labels 0 = not attr, 1 = attr). limit keeps the first N of the split."""
    size = int_option("size", size, 8, 178, dataset="celeba")
    if limit is not None:
        limit = int_option("limit", limit, 1, dataset="celeba")
    base = root / "celeba"
    partition_file = base / "list_eval_partition.txt"
    image_dir, image_zip = base / "img_align_celeba", base / "img_align_celeba.zip"

    def present() -> bool:
        return partition_file.is_file() and (image_dir.is_dir() or image_zip.is_file())

    if not present() and download and dl.reachable("https://drive.google.com"):
        try:
            import torchvision.datasets as tvd

            tvd.CelebA(str(root), split="all", target_type=[], download=True)
        except Exception as e:  # gdown missing, Drive quota, checksum: say so and fall through
            log.warning("celeba: download failed (%s)", e)
    if not present():
        missing = [str(p) for p in (partition_file,) if not p.is_file()]
        if not (image_dir.is_dir() or image_zip.is_file()):
            missing.append(f"{image_dir}/ (the aligned JPEGs) or {image_zip}")
        raise DataError("celeba: missing " + " and ".join(missing) + ". Get img_align_celeba.zip and "
                        "list_eval_partition.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
                        f"(Google Drive) and put them in {base}/")
    partition = _read_partition(partition_file)
    names = sorted(n for n, p in partition.items() if p == CELEBA_PARTITION[split])[:limit]
    if attr and not (base / "list_attr_celeba.txt").is_file():
        raise DataError(f"celeba: the attr option needs {base / 'list_attr_celeba.txt'}")
    labels_by_name = _read_attr(base / "list_attr_celeba.txt", attr) if attr else {}
    classes = [f"not {attr}", attr] if attr else []

    if image_dir.is_dir():
        source = image_dir
        stamp = (image_dir.stat().st_mtime_ns, len(partition))
        reader = {n: (image_dir / n).read_bytes for n in names}
    else:
        source = image_zip
        stamp = cache.file_stamp(image_zip)
        members = {k.rsplit("/", 1)[-1]: r for k, r in tree_files(image_zip).items()}
        reader = {n: members.get(n, _missing(n)) for n in names}

    def items() -> tuple[list[Item], list[str]]:
        return [Item(n, reader[n], labels_by_name.get(n, -1)) for n in names], classes

    x, y, classes, count, examples = _decode_cached(
        "celeba", [split, source.resolve(), stamp, *cache.file_stamp(partition_file), limit, attr], items, size=size)
    note = _skip_note(count, examples)
    if len(x) == 0:
        raise DataError(f"celeba: no readable {split} images in {source} ({note or 'none listed'})")
    return ImageData(x, y, classes, "celeba", split,
                     f"{source} (centre square resized to {size}x{size})" + (f"; {note}" if note else ""))


def _missing(name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise OSError(f"{name} is not in the archive")
    return read


# ---------------------------------------------------------------------------------------------
# LFW

LFW_IMAGE_SETS = {"funneled": ("lfw_funneled", "lfw-funneled.tgz"), "original": ("lfw", "lfw.tgz"),
                  "deepfunneled": ("lfw-deepfunneled", "lfw-deepfunneled.tgz")}
LFW_SPLIT_FILES = {"train": "peopleDevTrain", "test": "peopleDevTest"}


def _read_people(path: Path) -> list[tuple[str, int]]:
    """peopleDevTrain.txt ('4038' then 'Name<TAB>count' lines) or Kaggle's .csv ('name,images')."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        parts = [p.strip() for p in (line.split(",") if path.suffix == ".csv" else line.split("\t"))]
        if len(parts) == 2 and parts[1].isdigit() and parts[0] and parts[0] != "name":
            out.append((parts[0], int(parts[1])))
    if not out:
        raise DataError(f"{path}: no '<name> <count>' lines")
    return out


@register_dataset(
    "lfw",
    description="Labeled Faces in the Wild people (dev train / dev test), centre 150x150 of 250x250 "
                "resized to 64x64 RGB",
    input_shape=(3, 64, 64), num_classes=None,
    source="G. B. Huang et al., Labeled Faces in the Wild, UMass Amherst tech. report 07-49, 2007; "
           "research use",
    files="<data-dir>/lfw/ (torchvision's lfw-py/ layout also works): lfw_funneled/<name>/<name>_0001.jpg "
          "(or lfw-funneled.tgz) + peopleDevTrain.txt and peopleDevTest.txt",
    options={"size": 64, "image_set": "funneled", "crop": 0.6},
)
def load_lfw(*, split: str, root: Path, download: bool, size: int, image_set: str, crop: float) -> ImageData:
    """People listed in peopleDevTrain/peopleDevTest (disjoint identities); label = identity among
    all names in the two lists (sorted). crop=0.6 keeps the centre 150x150 (the face) of 250x250."""
    size = int_option("size", size, 8, 250, dataset="lfw")
    crop = float_option("crop", crop, 0.0, 1.0, dataset="lfw")
    if image_set not in LFW_IMAGE_SETS:
        raise DataError(f"lfw: image_set must be one of {', '.join(LFW_IMAGE_SETS)}, got {image_set!r}")
    folder_name, tgz_name = LFW_IMAGE_SETS[image_set]
    bases = [root / "lfw" / "lfw-py", root / "lfw", root / "lfw-py"]

    def find(names: list[str], want_dir: bool) -> Path | None:
        for b in bases:
            for n in names:
                p = b / n
                if (p.is_dir() if want_dir else p.is_file()):
                    return p
        return None

    split_file = find([LFW_SPLIT_FILES[split] + ".txt", LFW_SPLIT_FILES[split] + ".csv"], want_dir=False)
    image_dir = find([f"{folder_name}/{folder_name}", folder_name], want_dir=True)
    archive = None if image_dir else find([tgz_name], want_dir=False)
    if split_file is None or (image_dir is None and archive is None):
        missing = []
        if image_dir is None and archive is None:
            missing.append(f"the {folder_name}/ folder (or {tgz_name})")
        if split_file is None:
            missing.append(f"{LFW_SPLIT_FILES[split]}.txt")
        raise DataError(f"lfw: missing {' and '.join(missing)} in {root / 'lfw'}/. torchvision can no longer "
                        "download LFW; get the files from http://vis-www.cs.umass.edu/lfw/ or a mirror "
                        "(e.g. Kaggle 'jessicali9530/lfw-dataset') and put them there")
    people = _read_people(split_file)
    all_names = {n for n, _ in people}
    for other in LFW_SPLIT_FILES.values():
        for suffix in (".txt", ".csv"):
            if (p := split_file.parent / (other + suffix)).is_file():
                all_names |= {n for n, _ in _read_people(p)}
                break
    classes = sorted(all_names)
    index = {n: i for i, n in enumerate(classes)}
    wanted = [(f"{n}/{n}_{k:04d}.jpg", index[n]) for n, count in people for k in range(1, count + 1)]

    if image_dir is not None:
        source: Path = image_dir
        stamp: Any = image_dir.stat().st_mtime_ns
        readers: dict[str, Callable[[], bytes]] = {rel: (image_dir / rel).read_bytes for rel, _ in wanted}
    else:
        source = archive
        stamp = cache.file_stamp(archive)
        members = _strip_wrapper(tree_files(archive))
        readers = {rel: members.get(rel, _missing(rel)) for rel, _ in wanted}

    def items() -> tuple[list[Item], list[str]]:
        return [Item(rel, readers[rel], label) for rel, label in wanted], classes

    x, y, classes, count, examples = _decode_cached(
        "lfw", [split, source.resolve(), stamp, *cache.file_stamp(split_file)], items, size=size, crop=crop)
    note = _skip_note(count, examples)
    if len(x) == 0:
        raise DataError(f"lfw: no readable {split} images in {source} ({note})")
    return ImageData(x, y, classes, "lfw", split,
                     f"{source} (centre {crop:g} crop resized to {size}x{size})" + (f"; {note}" if note else ""))
