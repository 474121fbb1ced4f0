"""Image files to one uint8 tensor: safe decoding, folder / tar / zip trees, skip accounting.

One preprocessing for every image-file dataset (folder:, CIFAR-10 JPEG trees, CelebA, LFW):
EXIF orientation applied; converted to RGB (transparency composited on white) or L (16-bit and
float images rescaled to 0..255, not clipped); an optional centre crop; then a centre square crop
and a resize of the square to size x size with antialiased bilinear filtering (what
torchvision's Resize + CenterCrop do). Files that cannot be decoded (truncated, not an image,
empty, more pixels than PIL's decompression-bomb limit) are skipped and counted, never raised.

Decoding is the slow part of loading (60,000 CIFAR JPEGs): JPEGs that already have the target
size go through torchvision's libjpeg-turbo decoder (same pixels as PIL, about twice as fast),
the rest through PIL, in threads when there are many (PIL releases the GIL while decoding).

Files in a folder (folder:PATH, CIFAR-10 JPEG trees) are read only when they are regular files,
each up to MAX_FILE_BYTES (64 MiB); FIFOs, sockets and devices are never opened, so a `pipe.png`
cannot hang a load nor a link to /dev/zero fill memory. PATH itself may be a link (you named it).
Below it, a link to a file is followed only when its real target lies inside PATH (the resolved
path below the resolved PATH) and is a regular file; links to folders are never followed, wherever
they point, so a load never walks out of PATH nor round a loop (put the folder itself there
instead). Links leading outside the folder, dangling links, link loops, links to folders, and
files that cannot be read (no permission, over the size limit, gone or replaced by the time they
are read) are skipped and counted, with the reason, in the dataset's note; never raised. Reads go
down from PATH one name at a time without following any link, so a file or folder swapped for a
link while the load runs is skipped, not read through. In a .zip or .tar a link member is only
bytes in the archive: never followed (zip links are skipped and counted, tar links not listed).
"""

from __future__ import annotations

import errno
import functools
import gzip
import io
import logging
import math
import os
import stat
import tarfile
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from aecore.errors import DataError

log = logging.getLogger("aecore.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_ARCHIVE_BYTES = 4 << 30   # a tar we would unpack into memory (zips are read member by member)
MAX_FILE_BYTES = 64 << 20     # one image file, in a folder or an archive; larger ones are skipped
MAX_PIXELS = 89_478_485       # PIL's default decompression-bomb threshold (Image.MAX_IMAGE_PIXELS)
# The decoders PIL may use on untrusted bytes. PIL picks a decoder by content, not by name, so without
# this list a '.png' holding PostScript would go to the EPS plugin, which runs Ghostscript on it.
SAFE_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "DIB", "TIFF", "WEBP", "ICO", "PPM", "TGA")


def open_image(fp):
    """PIL's Image.open restricted to SAFE_FORMATS (those this PIL build has)."""
    from PIL import Image

    Image.init()
    return Image.open(fp, formats=[f for f in SAFE_FORMATS if f in Image.OPEN])


class BadImage(Exception):
    """One file could not be decoded; the message says why (for the skip report)."""


@dataclass
class Item:
    """One image to decode: a display name (for the skip report) and how to get its bytes."""

    name: str
    read: Callable[[], bytes]
    label: int = -1


@dataclass
class Decoded:
    images: np.ndarray                    # uint8 (N, C, size, size), only the good ones
    labels: np.ndarray                    # int64 (N,)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


# ---------------------------------------------------------------------------------------------
# one image


def _to_mode(im, mode: str):
    """PIL image in `mode` ("RGB" or "L"), treating alpha, palettes and high bit depths sensibly."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        if im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0                                    # 16-bit range -> 8-bit
        elif im.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0                                    # float images in [0, 1]
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im if im.mode == mode else im.convert(mode)


def decode_image(data: bytes, *, size: int, grayscale: bool = False, crop: float = 1.0) -> np.ndarray:
    """Bytes of one image file -> uint8 (C, size, size); BadImage when it cannot be decoded.

    crop: keep the centre crop*min(w, h) square before resizing (1.0 = the largest centre square).
    """
    from PIL import Image, ImageOps

    if not data:
        raise BadImage("empty file")
    mode = "L" if grayscale else "RGB"
    try:
        im = open_image(io.BytesIO(data))
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise BadImage(f"{w}x{h} pixels is over the decompression-bomb limit ({MAX_PIXELS})")
        if w < 1 or h < 1:
            raise BadImage(f"image has size {w}x{h}")
        side = crop * min(w, h)
        if im.format == "JPEG":   # decode at 1/2, 1/4 or 1/8 scale when that still covers `size`
            im.draft(mode, (math.ceil(w * size / side), math.ceil(h * size / side)))
        im.load()
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:   # a broken EXIF block is not a broken image
            pass
        im = _to_mode(im, mode)
        w, h = im.size
        side = max(1, round(crop * min(w, h)))
        left, top = (w - side) // 2, (h - side) // 2
        if (w, h) != (side, side):
            im = im.crop((left, top, left + side, top + side))
        if side != size:
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not a recognised image format") from None
    except Exception as e:  # truncated data, broken headers, codec errors: all mean "skip this file"
        raise BadImage(f"{type(e).__name__}: {e}") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a baseline/progressive JPEG's SOF header, else None."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            i += 2
            continue
        if marker in (0xC0, 0xC1, 0xC2):
            if i + 10 > n:
                return None
            return (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8], data[i + 9]
        if 0xC3 <= marker <= 0xCF or marker == 0xD9 or marker == 0xDA:
            return None   # lossless / arithmetic / no frame before the scan: leave it to PIL
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


@functools.lru_cache(maxsize=1)
def _fast_jpeg_decoder() -> Callable[[bytes], np.ndarray] | None:
    """libjpeg-turbo through torchvision's image op (its Python wrapper costs more than decoding a
    32x32 JPEG, and warns on every call), checked once on a tiny JPEG; None: PIL does everything."""
    try:
        import torch
        import torchvision.io  # noqa: F401  (loads the image extension that registers torch.ops.image)
        from PIL import Image

        op = torch.ops.image.decode_jpeg
        rgb_mode = torchvision.io.ImageReadMode.RGB.value

        def decode(data: bytes) -> np.ndarray:
            return op(torch.frombuffer(bytearray(data), dtype=torch.uint8), rgb_mode, True).numpy()

        probe = io.BytesIO()
        Image.new("RGB", (2, 2), (200, 30, 60)).save(probe, "JPEG")
        if decode(probe.getvalue()).shape != (3, 2, 2):
            return None
        return decode
    except Exception:  # torchvision missing, built without image support, or its op changed
        return None


# ---------------------------------------------------------------------------------------------
# many images


def decode_items(items: list[Item], *, size: int, grayscale: bool = False, crop: float = 1.0,
                 threads: int | None = None) -> Decoded:
    """Decode `items` into one array, skipping (and listing) the ones that fail."""
    channels = 1 if grayscale else 3
    out = np.empty((len(items), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(items), dtype=bool)
    reasons: list[str | None] = [None] * len(items)
    fast = None if grayscale or crop != 1.0 else _fast_jpeg_decoder()

    def work(index: int) -> None:
        item = items[index]
        try:
            data = item.read()
        except OSError as e:
            reasons[index] = f"unreadable: {e.strerror or e}"
            return
        except Exception as e:   # whatever else reading raises: this file is skipped, the load goes on
            reasons[index] = f"unreadable: {type(e).__name__}: {e}"
            return
        try:
            if fast is not None and data[-32:].rstrip(b"\0\r\n ").endswith(b"\xff\xd9") \
                    and _jpeg_frame(data) == (size, size, 3):
                try:
                    out[index] = fast(data)
                    ok[index] = True
                    return
                except Exception:  # anything libjpeg-turbo refuses gets PIL's verdict instead
                    pass
            out[index] = decode_image(data, size=size, grayscale=grayscale, crop=crop)
            ok[index] = True
        except BadImage as e:
            reasons[index] = str(e)

    from PIL import Image

    with warnings.catch_warnings():
        # we check the pixel count ourselves and skip the file; no warning spam per file
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message=".*[Cc]orrupt JPEG.*")
        n_threads = threads if threads is not None else min(8, os.cpu_count() or 1)
        # threads pay off when decoding dominates (PIL, larger images), not for libjpeg-turbo on 32x32
        if n_threads > 1 and len(items) >= 256 and (fast is None or size > 64):
            chunks = [range(i, min(i + 128, len(items))) for i in range(0, len(items), 128)]
            with ThreadPoolExecutor(n_threads) as pool:   # (its map ignores chunksize: chunk by hand)
                list(pool.map(lambda chunk: [work(i) for i in chunk], chunks))
        else:
            for i in range(len(items)):
                work(i)
    labels = np.array([it.label for it in items], dtype=np.int64)
    skipped = [(items[i].name, reasons[i] or "unknown error") for i in np.flatnonzero(~ok)]
    return Decoded(out[ok], labels[ok], skipped)


def describe_skips(skipped: list[tuple[str, str]], limit: int = 5) -> str:
    """'3 unreadable files skipped: a.png (not a recognised image format), ...'"""
    if not skipped:
        return ""
    shown = ", ".join(f"{name} ({why})" for name, why in skipped[:limit])
    more = f", and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"{len(skipped)} unreadable file{'s' if len(skipped) != 1 else ''} skipped: {shown}{more}"


# ---------------------------------------------------------------------------------------------
# trees: a directory, a tar(.gz) archive or a zip archive, all as {relative path: reader}


def is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


# Every open of a file we were handed: never blocks (a FIFO would wait for a writer forever), never
# takes a terminal as controlling terminal; what it opened is checked with fstat before any read.
_OPEN = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
         | getattr(os, "O_BINARY", 0))
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# Walk down from the root by directory descriptors (POSIX); elsewhere by path, O_NOFOLLOW on the last name.
_BY_FD = bool(_NOFOLLOW and _DIRECTORY) and os.open in os.supports_dir_fd and os.scandir in os.supports_fd


def _kind(mode: int) -> str:
    """What a non-regular file is, for the skip report."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a link"
    return "a special file"


def _too_large(size: int, cap: int) -> str:
    limit = f"{cap >> 20} MiB" if cap >= 1 << 20 and not cap % (1 << 20) else f"{cap} bytes"
    return f"{size} bytes is over the {limit} limit for one image file"


def read_capped(fd: int, cap: int | None = None) -> bytes:
    """All bytes of the regular file open on `fd`, at most `cap` (default MAX_FILE_BYTES); OSError
    saying why when it is not a regular file or is larger than that."""
    cap = MAX_FILE_BYTES if cap is None else cap
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{_kind(st.st_mode)}, not a regular file")
    if st.st_size > cap:
        raise OSError(_too_large(st.st_size, cap))
    chunks, left = [], cap + 1          # the file may grow after fstat: read one byte past the cap
    while left > 0:
        chunk = os.read(fd, min(left, max(st.st_size + 1, 1 << 16)))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > cap:
        raise OSError(_too_large(len(data), cap))
    return data


def _open_below(root: str, rel: str, *, directory: bool = False) -> int:
    """Descriptor of root/rel, opened without following a link anywhere below root (each name opened
    relative to the folder before it, with O_NOFOLLOW): nothing outside root is ever opened, even if
    a file or folder was swapped for a link since the listing. rel "" is root itself."""
    parts = [p for p in rel.split("/") if p]
    if not _BY_FD:
        return os.open(os.path.join(root, *parts), _OPEN | _NOFOLLOW | (_DIRECTORY if directory else 0))
    fd = os.open(root, _OPEN | _DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = _OPEN | _NOFOLLOW | (_DIRECTORY if directory or not last else 0)
            try:
                next_fd = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.EMLINK) or (e.errno == errno.ENOTDIR and not last):
                    raise OSError(e.errno, "replaced by a link or a file since the folder was listed") from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


class LocalFile:
    """One entry of a folder listing (`scan_folder`). read_bytes() reads it by the rules in the module
    docstring, or raises OSError saying why it is skipped; stat() is what the listing saw, no new
    system call (for cache stamps). The two names are Path's, so code written for a listing of Paths
    keeps working."""

    __slots__ = ("root", "rel", "problem", "_stat")

    def __init__(self, root: str, rel: str, st: os.stat_result, problem: str | None = None):
        self.root = root          # the resolved root folder
        self.rel = rel            # what to open below it: the file itself, or a followed link's target
        self.problem = problem    # why it is skipped, or None
        self._stat = st

    def stat(self) -> os.stat_result:
        return self._stat

    def read_bytes(self) -> bytes:
        if self.problem:
            raise OSError(self.problem)
        fd = _open_below(self.root, self.rel)
        try:
            return read_capped(fd)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"LocalFile({self.root!r}, {self.rel!r}" + (f", problem={self.problem!r})" if self.problem else ")")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _list_dir(root: str, rel: str) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of the entries of root/rel, sorted by name; entries gone meanwhile left out."""
    def entries(it) -> list[tuple[str, os.stat_result]]:
        out = []
        for entry in it:   # (stat while the listing is open: with a descriptor, it is relative to it)
            try:
                out.append((entry.name, entry.stat(follow_symlinks=False)))
            except OSError:
                pass
        return sorted(out, key=lambda e: e[0])

    if not _BY_FD:
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            return entries(it)
    fd = _open_below(root, rel, directory=True)
    try:
        with os.scandir(fd) as it:
            return entries(it)
    finally:
        os.close(fd)


def scan_folder(root: Path) -> tuple[dict[str, LocalFile], list[tuple[str, str]]]:
    """(files, skipped folders) of the tree under root (a link to a folder is fine as root).

    files: relative POSIX path -> LocalFile for every non-hidden entry that is not a folder: regular
    files, links followed to a regular file inside root, and, with .problem set (reading them raises
    OSError(problem), which decode_items counts): links out of root, dangling links, link loops,
    FIFOs, sockets, devices. Skipped folders: ('<rel>/', why) for links to folders (never followed)
    and folders that cannot be listed. Hidden names (".x") are left out, as before.
    """
    real_root = os.path.realpath(root)
    files: dict[str, LocalFile] = {}
    folders: list[tuple[str, str]] = []
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = _list_dir(real_root, rel_dir)
        except OSError as e:
            if not rel_dir:
                raise DataError(f"{root}: cannot list the folder ({e.strerror or e})") from None
            folders.append((f"{rel_dir}/", f"folder cannot be listed: {e.strerror or e}"))
            continue
        for name, st in reversed(entries):     # (reversed: the stack pops folders in name order)
            if name.startswith("."):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if stat.S_ISDIR(st.st_mode):
                pending.append(rel)
            elif stat.S_ISREG(st.st_mode):
                files[rel] = LocalFile(real_root, rel, st)
            elif stat.S_ISLNK(st.st_mode):
                _add_link(real_root, rel, st, files, folders)
            else:
                files[rel] = LocalFile(real_root, rel, st, f"{_kind(st.st_mode)}, not a regular file")
    return files, sorted(folders)


def _add_link(real_root: str, rel: str, st: os.stat_result, files: dict[str, LocalFile],
              folders: list[tuple[str, str]]) -> None:
    """Apply the link policy to the link at real_root/rel (see the module docstring)."""
    path = os.path.join(real_root, *rel.split("/"))
    try:
        target = os.path.realpath(path, strict=True)
    except OSError as e:
        if e.errno == errno.ELOOP:
            files[rel] = LocalFile(real_root, rel, st, "link loop")
        elif isinstance(e, FileNotFoundError):
            files[rel] = LocalFile(real_root, rel, st, "dangling link")
        else:
            files[rel] = LocalFile(real_root, rel, st, f"link cannot be followed: {e.strerror or e}")
        return
    try:
        target_st = os.stat(target, follow_symlinks=False)   # a real path: no link left to follow
    except OSError as e:
        files[rel] = LocalFile(real_root, rel, st, f"link cannot be followed: {e.strerror or e}")
        return
    if stat.S_ISDIR(target_st.st_mode):
        why = "link to a folder, not followed" if _inside(target, real_root) else "link leads outside the folder"
        folders.append((f"{rel}/", why))
    elif not _inside(target, real_root):
        files[rel] = LocalFile(real_root, rel, st, "link leads outside the folder")
    elif stat.S_ISREG(target_st.st_mode):
        files[rel] = LocalFile(real_root, Path(os.path.relpath(target, real_root)).as_posix(), target_st)
    else:
        files[rel] = LocalFile(real_root, rel, st, f"link to {_kind(target_st.st_mode)}, not a regular file")


def dir_files(root: Path) -> dict[str, LocalFile]:
    """Relative POSIX path -> LocalFile for every non-hidden file under root (`scan_folder` without
    its list of skipped folders): .read_bytes() reads one safely or raises OSError saying why not."""
    return scan_folder(root)[0]


def open_regular(path: Path) -> int:
    """Descriptor of `path` (links followed: the user named it) when it is a regular file; DataError
    otherwise, without ever blocking on a FIFO or reading a device."""
    try:
        mode = os.stat(path).st_mode      # (a device is not even opened, unless swapped in just now)
        if not stat.S_ISREG(mode):
            raise DataError(f"{path}: {_kind(mode)}, not a folder or a .tar/.tar.gz/.zip archive")
        fd = os.open(path, _OPEN)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{path}: {_kind(mode)}, not a folder or a .tar/.tar.gz/.zip archive")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_archive_bytes(path: Path) -> bytes:
    """A .tar / .tar.gz file's (uncompressed) bytes, bounded so a gzip bomb cannot fill memory."""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                f.seek(0)
                data = f.read(MAX_ARCHIVE_BYTES + 1)
            else:
                f.seek(0)
                with gzip.GzipFile(fileobj=f) as gz:
                    data = gz.read(MAX_ARCHIVE_BYTES + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip archive ({e})") from None
    if len(data) > MAX_ARCHIVE_BYTES:
        raise DataError(f"{path}: unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; extract it and use the folder")
    return data


def _octal(field_bytes: bytes) -> int:
    if field_bytes[:1] and field_bytes[0] & 0x80:           # GNU base-256 for huge sizes
        return int.from_bytes(field_bytes[1:], "big")
    text = field_bytes.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def tar_index(data: bytes, source: str = "archive") -> dict[str, tuple[int, int]]:
    """Member path -> (offset, size) of every regular file in an in-memory tar.

    A direct header walk: tarfile's per-member Python work adds up over CIFAR's 60,000 members
    (bench/README.md). Handles ustar, GNU long names and pax paths; anything else goes to tarfile.
    """
    if len(data) < 512 or data[257:262] != b"ustar":
        return _tar_index_slow(data, source)
    index: dict[str, tuple[int, int]] = {}
    pos, n = 0, len(data)
    long_name: str | None = None
    try:
        while pos + 512 <= n:
            header = data[pos:pos + 512]
            if header[:1] == b"\0" and not header.strip(b"\0"):
                break
            if header[257:262] != b"ustar":
                return _tar_index_slow(data, source)
            size = _octal(header[124:136])
            kind = header[156:157]
            start = pos + 512
            pos = start + (size + 511) // 512 * 512
            if start + size > n:
                raise DataError(f"{source}: truncated tar archive")
            if kind == b"L":
                long_name = data[start:start + size].split(b"\0", 1)[0].decode("utf-8", "replace")
                continue
            if kind == b"x":
                for record in data[start:start + size].decode("utf-8", "replace").split("\n"):
                    key_value = record.split(" ", 1)[-1]
                    if key_value.startswith("path="):
                        long_name = key_value[5:]
                continue
            if kind in (b"g", b"K"):
                continue
            name = long_name
            long_name = None
            if name is None:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
                if prefix and header[257:263] == b"ustar\0":
                    name = f"{prefix}/{name}"
            if kind in (b"0", b"\0", b"7"):
                index[_clean(name)] = (start, size)
    except ValueError:
        return _tar_index_slow(data, source)
    return index


def _tar_index_slow(data: bytes, source: str) -> dict[str, tuple[int, int]]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            return {_clean(m.name): (m.offset_data, m.size) for m in tf.getmembers() if m.isreg()}
    except tarfile.TarError as e:
        raise DataError(f"{source}: not a readable tar archive ({e})") from None


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def tar_files(path: Path) -> dict[str, Callable[[], bytes]]:
    """Relative path -> reader for every regular file of a .tar / .tar.gz (read into memory once)."""
    data = read_archive_bytes(path)
    index = tar_index(data, str(path))
    view = memoryview(data)

    def reader(start: int, size: int) -> Callable[[], bytes]:
        def read() -> bytes:
            if size > MAX_FILE_BYTES:
                raise OSError(_too_large(size, MAX_FILE_BYTES))
            return bytes(view[start:start + size])
        return read

    return {name: reader(start, size) for name, (start, size) in index.items()}


def zip_files(path: Path) -> dict[str, Callable[[], bytes]]:
    """Relative path -> reader for the files of a zip archive (members read on demand)."""
    f = os.fdopen(open_regular(path), "rb")
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        f.close()
        raise DataError(f"{path}: not a readable zip archive ({e})") from None

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            if stat.S_ISLNK(info.external_attr >> 16):   # its bytes are a path: never followed, never decoded
                raise OSError("a link inside the archive, not followed")
            if info.file_size > MAX_FILE_BYTES:   # (the reader stops at file_size, whatever the data holds)
                raise OSError(_too_large(info.file_size, MAX_FILE_BYTES))
            try:
                return archive.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise OSError(str(e)) from None
        return read

    return {_clean(info.filename): reader(info) for info in archive.infolist() if not info.is_dir()}


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar", ".tar.gz", ".tgz", ".zip"))


def tree_files(path: Path) -> dict[str, Callable[[], bytes]]:
    """Files of a directory, tar(.gz) or zip, as relative POSIX path -> reader."""
    if path.is_dir():
        return {rel: p.read_bytes for rel, p in dir_files(path).items()}
    if path.name.lower().endswith(".zip"):
        return zip_files(path)
    if is_archive(path):
        return tar_files(path)
    raise DataError(f"{path}: not a folder or a .tar/.tar.gz/.zip archive")


def class_items(files: dict[str, Callable[[], bytes]], *, classes: list[str] | None = None,
                ) -> tuple[list[Item], list[str]]:
    """ImageFolder layout: '<class>/<...>/<image>' -> items labelled by sorted class name.

    Images directly at the top level form one class named "." (a flat folder of images).
    Class folders without a single image file are left out of the class list.
    """
    by_class: dict[str, list[str]] = {}
    for rel in sorted(files):
        if not is_image_name(rel):
            continue
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):
            continue
        by_class.setdefault(parts[0] if len(parts) > 1 else ".", []).append(rel)
    if classes is None:
        classes = sorted(by_class)
    index = {c: i for i, c in enumerate(classes)}
    items = [Item(rel, files[rel], index[c]) for c in classes for rel in by_class.get(c, [])]
    return items, classes
