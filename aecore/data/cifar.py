"""CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech report, 2009):
the file forms below, and the datasets cifar10 and cifar10-patches (random 7x7 patches) on them.

Accepted forms, in `<data-dir>/cifar10/` (first found wins):

1. ``cifar-10-batches-py/`` - the official "python version" (what torchvision downloads). These
   are pickles; we read them with a restricted unpickler that can build dicts, lists, strings and
   numpy arrays and nothing else, so a tampered file cannot run code. The batch files' MD5s are
   the official ones (as in torchvision's CIFAR10.train_list/test_list) and are checked.
2. ``cifar-10-batches-bin/`` - the official binary version (1 label byte + 3072 pixel bytes per
   record); structure checked, no checksum.
3. ``train/<class>/*.jpg`` + ``test/<class>/*.jpg`` - an ImageFolder tree (any image format).
4. a ``.tar.gz`` / ``.tgz`` / ``.tar`` holding 1, 2 or 3, e.g. ``cifar-10-python.tar.gz`` or
   ``cifar10-jpeg.tar.gz``, read in memory without extracting.

Trees (3, 4) are decoded once and cached as uint8 (see aecore.data.cache); the class folders must
be the ten CIFAR-10 class names. Images of another size are resized to 32x32.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from aecore.errors import DataError

from . import cache
from . import download as dl
from .base import ImageData
from .images import Decoded, class_items, decode_items, describe_skips, dir_files, is_image_name, tar_files
from .options import int_option
from .registry import register_dataset

log = logging.getLogger("aecore.data")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_MD5 = {   # official python-version batches (torchvision CIFAR10.train_list / test_list / meta)
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SPLIT_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SPLIT_BIN = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
RECORD = 1 + 3 * 32 * 32

FILES_HELP = (
    "put one of these in {dir}: the folder cifar-10-batches-py/ (from "
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, or that .tar.gz itself), "
    "cifar-10-batches-bin/, an ImageFolder tree train/<class>/*.jpg + test/<class>/*.jpg, "
    "or such a tree as a .tar.gz (e.g. cifar10-jpeg.tar.gz)"
)


# ---------------------------------------------------------------------------------------------
# pickles, safely


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds plain containers and numpy arrays; refuses every other global (no code execution)."""

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed") from None


def safe_unpickle(data: bytes, source: str) -> Any:
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:
        raise DataError(f"{source}: not a CIFAR-10 python batch ({e})") from None


def parse_python_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (N,3,32,32) uint8, (N,) int64."""
    obj = safe_unpickle(data, source)
    if not isinstance(obj, dict):
        raise DataError(f"{source}: not a CIFAR-10 python batch (a {type(obj).__name__}, expected a dict)")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    x, y = obj.get("data"), obj.get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{source}: 'data' must be a uint8 array of shape (N, 3072)")
    try:
        y = np.asarray(y, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: 'labels' is not a list of integers") from None
    if y.shape != (x.shape[0],):
        raise DataError(f"{source}: {x.shape[0]} images but {y.size} labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{source}: labels outside 0..9")
    return x.reshape(-1, 3, 32, 32), y


def parse_bin_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch (records of label byte + 3072 pixels) -> (N,3,32,32) uint8, (N,) int64."""
    if not data or len(data) % RECORD:
        raise DataError(f"{source}: {len(data)} bytes is not a whole number of {RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    y = records[:, 0].astype(np.int64)
    if y.max() > 9:
        raise DataError(f"{source}: labels outside 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), y


# The two official versions: folder name, batch files per split, parser, whether the official MD5s apply.
_VERSIONS = (("cifar-10-batches-py", SPLIT_BATCHES, parse_python_batch, True),
             ("cifar-10-batches-bin", SPLIT_BIN, parse_bin_batch, False))


def _batches(read: dict[str, Callable[[], bytes]], names: list[str], parse, source: str, md5: bool):
    xs, ys = [], []
    for name in names:
        data = read[name]()
        if md5 and name in BATCH_MD5:
            got = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if got != BATCH_MD5[name]:
                raise DataError(f"checksum mismatch for {source}/{name}: MD5 {got}, expected {BATCH_MD5[name]} "
                                f"(the official CIFAR-10 python batch); the file is corrupt or not CIFAR-10")
        x, y = parse(data, f"{source}/{name}")
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


# ---------------------------------------------------------------------------------------------
# the forms, as readers over a {relative path: reader} view of a folder or an archive


def _find_prefix(files: dict[str, Any], marker: str) -> str | None:
    """'' or 'some/dir/' such that prefix + marker is in files."""
    for name in files:
        if name == marker or name.endswith("/" + marker):
            return name[: len(name) - len(marker)]
    return None


def _tree_split_items(files: dict[str, Callable[[], bytes]], split: str, source: str):
    """Items of '<...>/<split>/<class>/<image>' with CIFAR's class order; DataError on foreign classes."""
    sub: dict[str, Callable[[], bytes]] = {}
    for name, reader in files.items():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] == split and is_image_name(name):
            sub[f"{parts[-2]}/{parts[-1]}"] = reader
    found = sorted({name.split("/")[0] for name in sub})
    unknown = [c for c in found if c not in CLASSES]
    if unknown:
        raise DataError(f"{source}: {split}/ has class folders {unknown} that are not CIFAR-10 classes "
                        f"({', '.join(CLASSES)}); load other trees with 'folder:PATH'")
    items, _ = class_items(sub, classes=CLASSES)
    return items


def _has_tree(files: dict[str, Any]) -> bool:
    return any(len(p := name.split("/")) >= 3 and p[-3] in ("train", "test") and p[-2] in CLASSES
               for name in files)


def _decode_tree(files, splits: list[str], source: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    tensors: dict[str, Tensor] = {}
    skipped: dict[str, list] = {}
    for split in splits:
        items = _tree_split_items(files, split, source)
        decoded: Decoded = decode_items(items, size=32)
        tensors[f"{split}/images"] = torch.from_numpy(decoded.images)
        tensors[f"{split}/labels"] = torch.from_numpy(decoded.labels)
        skipped[split] = [len(decoded.skipped), decoded.skipped[:20]]
    return tensors, {"classes": json.dumps(CLASSES), "skipped": json.dumps(skipped)}


def _split_of(tensors: dict[str, Tensor], meta: dict[str, str], split: str) -> tuple[Tensor, Tensor, str]:
    """(images, labels, skip note) of one split from cached tensors + metadata."""
    count, examples = json.loads(meta.get("skipped", "{}")).get(split, [0, []])
    note = describe_skips([tuple(e) for e in examples]) if count else ""
    if count > len(examples):
        note = f"{count} unreadable files skipped (e.g. {', '.join(e[0] for e in examples[:5])})"
    return tensors[f"{split}/images"], tensors[f"{split}/labels"], note


def _from_cached_tree(key: str, build, split: str, source: str) -> tuple[Tensor, Tensor, str]:
    tensors, meta, hit = cache.cached("cifar10", key, build, keys=[f"{split}/images", f"{split}/labels"])
    x, y, note = _split_of(tensors, meta, split)
    if note and not hit:
        log.warning("cifar10 %s: %s", source, note)
    return x, y, note


def load_from_dir(base: Path, split: str) -> tuple[Tensor, Tensor, str] | None:
    """(images, labels, source) from the first CIFAR-10 form found in `base`, else None."""
    python, binary = _VERSIONS
    # (torchvision's CIFAR10(root=<data-dir>) puts the python version next to base, not in it)
    for place, (name, split_files, parse, md5) in ((base, python), (base.parent, python), (base, binary)):
        folder = place / name
        if (folder / split_files[split][0]).is_file():
            files = {p.name: p.read_bytes for p in folder.iterdir() if p.is_file()}
            return _read_version(files, split_files[split], parse, md5, where=str(folder), shown=str(folder))
    if (base / split).is_dir():
        tree = base / split
        listing = dir_files(tree)
        stamp = sorted((rel, p.stat().st_size, p.stat().st_mtime_ns) for rel, p in listing.items())
        key = cache.source_key("cifar10-tree", tree.resolve(), hashlib.sha256(repr(stamp).encode()).hexdigest(), 32)
        files = {f"{split}/{rel}": p.read_bytes for rel, p in listing.items()}
        x, y, note = _from_cached_tree(key, lambda: _decode_tree(files, [split], str(base)), split, str(tree))
        return x, y, f"{tree}" + (f"; {note}" if note else "")
    if base.is_dir():
        archives = sorted(p for p in base.iterdir()
                          if p.is_file() and p.name.lower().endswith((".tar.gz", ".tgz", ".tar")))
        archives.sort(key=lambda p: p.name not in ("cifar-10-python.tar.gz", "cifar10-jpeg.tar.gz"))
        for archive in archives:
            got = load_from_archive(archive, split)
            if got is not None:
                return got
    return None


def load_from_archive(archive: Path, split: str) -> tuple[Tensor, Tensor, str] | None:
    key = cache.source_key("cifar10-archive", *cache.file_stamp(archive), 32)
    hit = cache.load(cache.cache_path("cifar10", key), [f"{split}/images", f"{split}/labels"])
    if hit is not None:   # a decoded tree from this very archive: no need to even open it
        x, y, note = _split_of(*hit, split)
        return x, y, f"{archive}" + (f"; {note}" if note else "")
    files = tar_files(archive)
    for name, split_files, parse, md5 in _VERSIONS:
        prefix = _find_prefix(files, f"{name}/{split_files[split][0]}")
        if prefix is not None:
            folder = f"{prefix}{name}/"
            sub = {n[len(folder):]: r for n, r in files.items() if n.startswith(folder)}
            return _read_version(sub, split_files[split], parse, md5, where=f"{archive}:{folder}", shown=str(archive))
    if _has_tree(files):
        def build():
            log.info("decoding the CIFAR-10 images in %s once (cached afterwards)", archive)
            return _decode_tree(files, ["train", "test"], str(archive))

        x, y, note = _from_cached_tree(key, build, split, str(archive))
        if len(x) == 0:
            raise DataError(f"{archive} has no {split}/<class>/ images")
        return x, y, f"{archive}" + (f"; {note}" if note else "")
    return None


def _read_version(files: dict[str, Callable[[], bytes]], names: list[str], parse, md5: bool, *, where: str,
                  shown: str) -> tuple[Tensor, Tensor, str]:
    """(images, labels, source) of one split of an official version; `where` names its folder in errors."""
    missing = [n for n in names if n not in files]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)} (the CIFAR-10 batches are incomplete)")
    x, y = _batches(files, names, parse, where.rstrip("/"), md5=md5)
    return x, y, f"{shown} (MD5 verified)" if md5 else shown


# ---------------------------------------------------------------------------------------------
# patches


def extract_patches(images: Tensor, labels: Tensor, *, count: int, size: int = 7, seed: int = 0,
                    chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """`count` random size x size patches (uniform image, uniform position), labelled by their image."""
    n, c, h, w = images.shape
    if n == 0:
        raise DataError("no images to cut patches from")
    if size > h or size > w:
        raise DataError(f"patch size {size} is larger than the {h}x{w} images")
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(0, n, (count,), generator=g)
    top = torch.randint(0, h - size + 1, (count,), generator=g)
    left = torch.randint(0, w - size + 1, (count,), generator=g)
    offsets = torch.arange(size)
    out = torch.empty((count, c, size, size), dtype=torch.uint8)
    channel = torch.arange(c)[None, :, None, None]
    for start in range(0, count, chunk):
        sl = slice(start, start + chunk)
        rows = (top[sl, None] + offsets)[:, None, :, None]     # (B,1,size,1)
        cols = (left[sl, None] + offsets)[:, None, None, :]    # (B,1,1,size)
        out[sl] = images[which[sl, None, None, None], channel, rows, cols]
    return out, labels[which]


# ---------------------------------------------------------------------------------------------
# the datasets: cifar10 and cifar10-patches


def _load_cifar(split: str, root: Path, download: bool) -> tuple[Tensor, Tensor, str]:
    base = root / "cifar10"
    got = load_from_dir(base, split)
    if got is not None:
        return got
    failure = dl.disabled_reason()
    if download:
        try:
            dl.fetch([URL], base, filename="cifar-10-python.tar.gz", md5=TGZ_MD5, extract=True)
            got = load_from_dir(base, split)
            if got is not None:
                return got
            failure = "the download did not produce the expected files"
        except DataError as e:
            failure = str(e)
    raise DataError(f"cifar10: no data found ({failure}); {FILES_HELP.format(dir=f'{base}/')}")


@register_dataset(
    "cifar10",
    description="CIFAR-10 tiny colour photos, 32x32 RGB, 10 classes (50,000 train / 10,000 test)",
    input_shape=(3, 32, 32), num_classes=10,
    source="A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images, tech. report, 2009",
    files=FILES_HELP.format(dir="<data-dir>/cifar10/"),
)
def load_cifar10(*, split: str, root: Path, download: bool) -> ImageData:
    x, y, source = _load_cifar(split, root, download)
    return ImageData(x, y, list(CLASSES), "cifar10", split, source)


@register_dataset(
    "cifar10-patches",
    description="random 7x7 RGB patches of CIFAR-10 images, labelled by their image's class",
    input_shape=(3, 7, 7), num_classes=10,
    source="cut from CIFAR-10 (Krizhevsky, 2009); a seeded uniform choice of image and position",
    files=FILES_HELP.format(dir="<data-dir>/cifar10/"),
    options={"count": None, "seed": 0},
)
def load_cifar10_patches(*, split: str, root: Path, download: bool, count: int | None, seed: int) -> ImageData:
    """count defaults to 100,000 (train) / 20,000 (test); seed picks the patches reproducibly."""
    if count is None:
        count = 100_000 if split == "train" else 20_000
    count = int_option("count", count, 1, 10_000_000, dataset="cifar10-patches")
    seed = int_option("seed", seed, 0, 2**63 - 1, dataset="cifar10-patches")
    x, y, source = _load_cifar(split, root, download)
    px, py = extract_patches(x, y, count=count, size=7, seed=seed)
    return ImageData(px, py, list(CLASSES), "cifar10-patches", split,
                     f"{count} random 7x7 patches (seed {seed}) of {source}")
