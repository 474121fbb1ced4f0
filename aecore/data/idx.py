"""IDX files (the MNIST / Fashion-MNIST format): strict parsing and content verification.

Format (LeCun): a 4-byte magic ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the body in C order. We accept type 0x08 (uint8) only: 0x00000801 = a label
vector, 0x00000803 = an image stack (N, H, W). Files may be gzip-compressed (detected by the gzip
magic bytes, not by the file name).

What is verified, and how (``verify_pair``):

- MNIST: SHA-256 of the *uncompressed* bytes of each of the four standard files. These equal the
  official files' content, so any copy of the official data passes, however it was compressed.
- Fashion-MNIST: three ways, any one suffices.
  1. SHA-256 of the uncompressed bytes of the class-sorted copy used for development
     (same images and split membership as the official files, different order);
  2. MD5 of the official ``.gz`` downloads (the values torchvision's ``FashionMNIST.resources``
     checks; a test asserts they are the same);
  3. for uncompressed official files (e.g. Kaggle's, or torchvision's ``raw/`` folder), whose
     SHA-256 we do not have: an order-independent fingerprint, SHA-256 of the sorted
     (label, 784 pixels) records of the pair, which equals the sorted copy's. It proves the pair
     holds exactly the official (image, label) multiset, in whatever order.
- Files with a standard name whose content matches none of these are refused with
  ``DataError("checksum mismatch for <path>: ...")``. Files with other names (a user's own IDX
  data via ``load_idx_pair``) are parsed and structurally checked only.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aecore.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
MAGIC_LABELS = 0x00000801   # uint8, 1 dim
MAGIC_IMAGES = 0x00000803   # uint8, 3 dims
MAX_IDX_BYTES = 1 << 31     # 2 GiB uncompressed: far above any real IDX image file
MAX_IDX_DIMS = 4            # labels 1, images 3 (4: colour stacks); numpy itself stops at 64

STANDARD_NAMES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)

# SHA-256 of the uncompressed bytes (from the reference data's README; MNIST's equal the official
# files'; Fashion-MNIST's are of the class-sorted copy).
KNOWN_SHA256: dict[str, dict[str, frozenset[str]]] = {
    "mnist": {
        "train-images-idx3-ubyte": frozenset({"ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"}),
        "train-labels-idx1-ubyte": frozenset({"65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"}),
        "t10k-images-idx3-ubyte": frozenset({"0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"}),
        "t10k-labels-idx1-ubyte": frozenset({"ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"}),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": frozenset({"b838dd78d571584731d26e5e1fb968ebcc8b82d37190ffe357c62514f95497b8"}),
        "train-labels-idx1-ubyte": frozenset({"fd6af4812a52c84a4ad586a467c1706b56203dda6d5903cfa980e66287cede39"}),
        "t10k-images-idx3-ubyte": frozenset({"1193d177037eea3385e3bd06acc16595de1e5b5639e3ec8ce8a088ca57da531b"}),
        "t10k-labels-idx1-ubyte": frozenset({"ebe12bc8de9440ef5b785b7c21fb67087b377cc851b65e009f278d22d099cdb2"}),
    },
}

# MD5 of the official .gz files, as in torchvision's MNIST/FashionMNIST.resources.
OFFICIAL_GZ_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# Order-independent fingerprint of an (images, labels) pair, see `pair_fingerprint`; computed from
# the class-sorted Fashion-MNIST copy, so it holds for the official files in their own order.
PAIR_FINGERPRINT: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "train": "56016b2341e99c383df5cc0ed736f4afb12a6c90855d9f3d69981b294a0159ad",
        "t10k": "b73438e78d64c9f337edad19c3eea888b49d646dbe27b46e4e3177218f3581e7",
    },
}


@dataclass
class IdxFile:
    """One parsed IDX file: the array and what we need to verify it."""

    path: str
    array: np.ndarray        # uint8, shape = declared dims
    sha256: str              # of the uncompressed bytes
    compressed: bool
    raw_md5: str | None = None  # MD5 of the file as stored, filled in lazily for .gz files

    @property
    def standard_name(self) -> str | None:
        return standard_name(self.path)


def standard_name(path: str | os.PathLike) -> str | None:
    """'train-images-idx3-ubyte' for '.../train-images-idx3-ubyte.gz' or Kaggle's 'train-images.idx3-ubyte'."""
    name = Path(path).name
    if name.endswith(".gz"):
        name = name[:-3]
    name = re.sub(r"\.(idx[13]-ubyte)$", r"-\1", name)
    return name if name in STANDARD_NAMES else None


def _header(data: bytes, source: str) -> tuple[int, tuple[int, ...], int]:
    """(magic, dims, header length) of an IDX byte string; DataError when it is not uint8 IDX."""
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: not an IDX file (bad magic number 0x{magic:08x})")
    if data[2] != 0x08:
        raise DataError(f"{source}: unsupported IDX element type 0x{data[2]:02x} "
                        "(only uint8, 0x08, is used by image data)")
    ndim = data[3]
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DataError(f"{source}: IDX file declares {ndim} dimensions; image data has 1 (labels) or 3 "
                        f"(images), at most {MAX_IDX_DIMS} are accepted")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, need {head})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return magic, dims, head


def parse_idx(data: bytes, *, source: str = "<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Parse uncompressed IDX bytes into a uint8 array; DataError on bad magic or length."""
    magic, dims, head = _header(data, source)
    if expect_magic is not None and magic != expect_magic:
        what = "labels (0x00000801)" if expect_magic == MAGIC_LABELS else "images (0x00000803)"
        raise DataError(f"{source}: wrong magic number 0x{magic:08x}, expected {what}")
    body = math.prod(dims)      # Python ints: 3 x 2**32 cannot overflow into a plausible size
    if len(data) - head < body:
        raise DataError(f"{source}: truncated: header declares {'x'.join(map(str, dims))} = {body} bytes "
                        f"of data, file has {len(data) - head}")
    if len(data) - head > body:
        raise DataError(f"{source}: {len(data) - head - body} unexpected extra bytes after the declared "
                        f"{'x'.join(map(str, dims))} data")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _read_bytes(path: Path) -> tuple[bytes, bool]:
    """Whole file, gunzipped if it is gzip; DataError (naming the file) on a bad gzip stream."""
    try:
        with open(path, "rb") as f:
            start = f.read(2)
            if start != GZIP_MAGIC:
                f.seek(0, os.SEEK_END)
                if f.tell() > MAX_IDX_BYTES:
                    raise DataError(f"{path}: file too large for an IDX file ({f.tell()} bytes)")
                f.seek(0)
                return f.read(), False
            f.seek(0)
            with gzip.GzipFile(fileobj=f) as gz:
                data = gz.read(MAX_IDX_BYTES + 1)   # bounded: a gzip bomb cannot exhaust memory
            if len(data) > MAX_IDX_BYTES:
                raise DataError(f"{path}: decompresses to more than {MAX_IDX_BYTES} bytes; not an IDX file")
            return data, True
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None


def read_idx(path: str | os.PathLike, *, expect_magic: int | None = None) -> IdxFile:
    """Read and parse one IDX file (gzip or raw); no checksum (see `verify_pair`)."""
    path = Path(path)
    data, compressed = _read_bytes(path)
    array = parse_idx(data, source=str(path), expect_magic=expect_magic)
    return IdxFile(str(path), array, hashlib.sha256(data).hexdigest(), compressed)


def pair_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the (label, pixels) records sorted bytewise: the same for any order of the pairs."""
    n = images.shape[0]
    rows = np.concatenate([labels.reshape(n, 1).astype(np.uint8), images.reshape(n, -1)], axis=1)
    rows = np.ascontiguousarray(rows)
    records = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    return hashlib.sha256(np.sort(records).tobytes()).hexdigest()


def _md5_file(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_pair(dataset: str, images: IdxFile, labels: IdxFile) -> str:
    """Check both files against the known content of `dataset`; return how they were verified.

    Returns "SHA-256 verified", "MD5 verified (official .gz)", "verified (same records as the
    official files, different order)" or "not verified (nonstandard file names)".
    """
    known = KNOWN_SHA256.get(dataset, {})
    md5s = OFFICIAL_GZ_MD5.get(dataset, {})
    names = [f.standard_name for f in (images, labels)]
    if not any(name in known for name in names):
        return "not verified (nonstandard file names)"
    how = set()
    failed: list[IdxFile] = []
    for f, name in zip((images, labels), names, strict=True):
        if name not in known:
            continue
        if f.sha256 in known[name]:
            how.add("SHA-256 verified")
        elif f.compressed and name in md5s and _md5_file(f.path) == md5s[name]:
            how.add("MD5 verified (official .gz)")
        else:
            failed.append(f)
    if failed:
        split = (names[0] or names[1] or "").split("-")[0]
        fingerprint = PAIR_FINGERPRINT.get(dataset, {}).get(split)
        if fingerprint and names[0] and names[1] and pair_fingerprint(images.array, labels.array) == fingerprint:
            return "verified (same records as the official files, different order)"
        f = failed[0]
        name = f.standard_name
        expected = ", ".join(sorted(known[name]))
        raise DataError(
            f"checksum mismatch for {f.path}: SHA-256 of the uncompressed content is {f.sha256}, "
            f"expected {expected} (the known {dataset} file {name}). The file is corrupt, truncated "
            f"or a different dataset; delete it (and its neighbours) and let aecore download the "
            f"data again, or put the official files there.")
    return " + ".join(sorted(how))


def to_tensors(images: IdxFile, labels: IdxFile) -> tuple[Tensor, Tensor]:
    """(N,1,H,W) uint8 images and (N,) int64 labels, after the structural checks."""
    if images.array.ndim != 3:
        raise DataError(f"{images.path}: expected a 3-D image file (N, H, W), got {images.array.ndim}-D")
    if labels.array.ndim != 1:
        raise DataError(f"{labels.path}: expected a 1-D label file, got {labels.array.ndim}-D")
    n_img, n_lab = images.array.shape[0], labels.array.shape[0]
    if n_img != n_lab:
        raise DataError(f"{images.path} holds {n_img} images but {labels.path} holds {n_lab} labels")
    # copy: np.frombuffer arrays are read-only views on the file bytes
    x = torch.from_numpy(images.array.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.array.astype(np.int64))
    return x, y


def load_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike, *,
                  dataset: str | None = None) -> tuple[Tensor, Tensor, str]:
    """Images (N,1,H,W) uint8, labels (N,) int64 and a verification note, from two IDX files.

    With `dataset` ("mnist" / "fashion-mnist"), standard file names are checked against the known
    content (see module docstring); without it, only the structure is checked.
    """
    images = read_idx(images_path, expect_magic=MAGIC_IMAGES)
    labels = read_idx(labels_path, expect_magic=MAGIC_LABELS)
    x, y = to_tensors(images, labels)
    how = verify_pair(dataset, images, labels) if dataset else "not verified"
    return x, y, how
