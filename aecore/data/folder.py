"""folder:PATH - your own images, as an ImageFolder tree or a .tar/.tar.gz/.zip of one - and what
the image-file datasets (folder:, CelebA, LFW) share: decoding a list of files once and caching
the uint8 result, the note on skipped files, and reading members out of archives.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from aecore.errors import DataError

from . import cache
from .base import ImageData, stratified_test_mask
from .images import Item, class_items, decode_items, describe_skips, is_archive, scan_folder, tree_files
from .options import bool_option, float_option, int_option
from .registry import register_dataset

log = logging.getLogger("aecore.data")


def decode_cached(name: str, key_parts: list[Any], items_fn: Callable[[], tuple[list[Item], list[str]]], *,
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


def skip_note(count: int, examples: list[tuple[str, str]]) -> str:
    """What went into ImageData.source about skipped files; the cache keeps only 20 examples of `count`."""
    if not count:
        return ""
    note = describe_skips(examples)
    if count > len(examples):
        note = f"{count} unreadable files skipped, e.g. " + ", ".join(f"{n} ({w})" for n, w in examples[:5])
    return note


def decode_listed(name: str, split: str, *, wanted: list[tuple[str, int]], readers: dict[str, Callable[[], bytes]],
                  classes: list[str], source: Path, key_parts: list[Any], size: int, crop: float = 1.0,
                  how: str) -> ImageData:
    """ImageData of a dataset's listed files (CelebA, LFW): `wanted` (name, label) read by `readers`,
    decoded once and cached (key: split, source, key_parts), skipped files noted after `how` in
    .source, an empty split refused."""
    def items() -> tuple[list[Item], list[str]]:
        return [Item(rel, readers[rel], label) for rel, label in wanted], classes

    x, y, classes, count, examples = decode_cached(name, [split, source.resolve(), *key_parts], items,
                                                   size=size, crop=crop)
    note = skip_note(count, examples)
    if len(x) == 0:
        raise DataError(f"{name}: no readable {split} images in {source} ({note or 'none listed'})")
    return ImageData(x, y, classes, name, split, f"{source} ({how})" + (f"; {note}" if note else ""))


def strip_wrapper(files: dict[str, Any]) -> dict[str, Any]:
    """Archives often wrap the tree in one top folder ('pics/<class>/x.png'): drop it."""
    while files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) != 1 or any(name.count("/") < 2 for name in files):
            break
        top = tops.pop() + "/"
        files = {name[len(top):]: r for name, r in files.items()}
    return files


def missing_member(name: str) -> Callable[[], bytes]:
    """A reader for a listed file the archive lacks: decode_items counts it as skipped, like a bad file."""
    def read() -> bytes:
        raise OSError(f"{name} is not in the archive")
    return read


# ---------------------------------------------------------------------------------------------
# the folder:PATH dataset


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
        files = strip_wrapper(tree_files(base))
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

    x, y, classes, count, examples = decode_cached("folder", key_parts, items, size=size,
                                                    grayscale=grayscale, min_cache=500)
    notes = [skip_note(count + len(skipped_folders), skipped_folders + examples)]
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
