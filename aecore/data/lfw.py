"""Labeled Faces in the Wild: people of the dev train / dev test lists, labelled by identity, from
the image folder or its .tgz (torchvision can no longer download it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from aecore.errors import DataError

from . import cache
from .base import ImageData
from .folder import decode_listed, missing_member, strip_wrapper
from .images import tree_files
from .options import float_option, int_option
from .registry import register_dataset

IMAGE_SETS = {"funneled": ("lfw_funneled", "lfw-funneled.tgz"), "original": ("lfw", "lfw.tgz"),
                  "deepfunneled": ("lfw-deepfunneled", "lfw-deepfunneled.tgz")}
SPLIT_FILES = {"train": "peopleDevTrain", "test": "peopleDevTest"}


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
    if image_set not in IMAGE_SETS:
        raise DataError(f"lfw: image_set must be one of {', '.join(IMAGE_SETS)}, got {image_set!r}")
    folder_name, tgz_name = IMAGE_SETS[image_set]
    bases = [root / "lfw" / "lfw-py", root / "lfw", root / "lfw-py"]

    def find(names: list[str], want_dir: bool) -> Path | None:
        for b in bases:
            for n in names:
                p = b / n
                if (p.is_dir() if want_dir else p.is_file()):
                    return p
        return None

    split_file = find([SPLIT_FILES[split] + ".txt", SPLIT_FILES[split] + ".csv"], want_dir=False)
    image_dir = find([f"{folder_name}/{folder_name}", folder_name], want_dir=True)
    archive = None if image_dir else find([tgz_name], want_dir=False)
    if split_file is None or (image_dir is None and archive is None):
        missing = []
        if image_dir is None and archive is None:
            missing.append(f"the {folder_name}/ folder (or {tgz_name})")
        if split_file is None:
            missing.append(f"{SPLIT_FILES[split]}.txt")
        raise DataError(f"lfw: missing {' and '.join(missing)} in {root / 'lfw'}/. torchvision can no longer "
                        "download LFW; get the files from http://vis-www.cs.umass.edu/lfw/ or a mirror "
                        "(e.g. Kaggle 'jessicali9530/lfw-dataset') and put them there")
    people = _read_people(split_file)
    all_names = {n for n, _ in people}
    for other in SPLIT_FILES.values():
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
        members = strip_wrapper(tree_files(archive))
        readers = {rel: members.get(rel, missing_member(rel)) for rel, _ in wanted}

    return decode_listed("lfw", split, wanted=wanted, readers=readers, classes=classes, source=source,
                         key_parts=[stamp, *cache.file_stamp(split_file)], size=size, crop=crop,
                         how=f"centre {crop:g} crop resized to {size}x{size}")
