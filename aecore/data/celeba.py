"""CelebA's aligned faces (img_align_celeba/ or its .zip, list_eval_partition.txt), optionally
labelled by one of the 40 attributes. Downloaded through torchvision when Google Drive allows it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aecore.errors import DataError

from . import cache
from . import download as dl
from .base import ImageData
from .folder import decode_listed, missing_member
from .images import tree_files
from .options import int_option
from .registry import register_dataset

log = logging.getLogger("aecore.data")

PARTITION = {"train": "0", "test": "2"}


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
    names = sorted(n for n, p in partition.items() if p == PARTITION[split])[:limit]
    if attr and not (base / "list_attr_celeba.txt").is_file():
        raise DataError(f"celeba: the attr option needs {base / 'list_attr_celeba.txt'}")
    labels_by_name = _read_attr(base / "list_attr_celeba.txt", attr) if attr else {}
    classes = [f"not {attr}", attr] if attr else []

    if image_dir.is_dir():
        source = image_dir
        stamp = (image_dir.stat().st_mtime_ns, len(partition))
        readers = {n: (image_dir / n).read_bytes for n in names}
    else:
        source = image_zip
        stamp = cache.file_stamp(image_zip)
        members = {k.rsplit("/", 1)[-1]: r for k, r in tree_files(image_zip).items()}
        readers = {n: members.get(n, missing_member(n)) for n in names}

    return decode_listed("celeba", split, wanted=[(n, labels_by_name.get(n, -1)) for n in names],
                         readers=readers, classes=classes, source=source, size=size,
                         key_parts=[stamp, *cache.file_stamp(partition_file), limit, attr],
                         how=f"centre square resized to {size}x{size}")
