"""aecore.data: IDX parsing and verification, the bundled sample, folder/CIFAR/STL/CelebA/LFW loaders,
the decoded cache, patches, digits - on tiny fabricated files; the real data when ../shared/data exists.

Never touches the network: conftest sets AECORE_OFFLINE=1 and `_no_network` below makes any
socket connection fail the test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import socket
import struct
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecore import paths
from aecore.data import (
    ImageData,
    cifar,
    dataset_info,
    download,
    idx,
    images,
    list_datasets,
    load_dataset,
    mnist,
    split_off,
)
from aecore.data import cache as data_cache
from aecore.errors import DataError


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a data test tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def fresh_notices(monkeypatch):
    monkeypatch.setattr(mnist, "_NOTICED", set())


# ---------------------------------------------------------------------------------------------
# helpers: fabricated files in the real formats


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.tobytes()


def write(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tiny_idx_pair(folder: Path, prefix: str = "train", n: int = 3, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = np.arange(n, dtype=np.uint8) % 10
    suffix = ".gz" if gz else ""
    write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(x), gz=gz)
    write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(y), gz=gz)
    return x, y


def image_bytes(array: np.ndarray, fmt: str, **kw) -> bytes:
    """uint8 (H,W) -> L, (H,W,3) -> RGB, (H,W,4) -> RGBA, uint16 (H,W) -> I;16."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header declaring width x height pixels, with almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def cifar_tree(root: Path, per_class: int = 2, splits=("train", "test")) -> dict[str, np.ndarray]:
    """root/<split>/<class>/<k>.png (lossless, so pixels can be compared) for the 10 CIFAR classes."""
    pixels = {}
    for s, split in enumerate(splits):
        for c, name in enumerate(cifar.CLASSES):
            for k in range(per_class):
                a = rgb(32, 32, seed=1000 * s + 10 * c + k)
                write(root / split / name / f"{k:04d}.png", image_bytes(a, "PNG"))
                pixels[f"{split}/{name}/{k:04d}"] = a
    return pixels


def tar_gz(source: Path, target: Path, arcname: str) -> Path:
    with tarfile.open(target, "w:gz") as tf:
        tf.add(source, arcname=arcname)
    return target


# ---------------------------------------------------------------------------------------------
# IDX


def test_idx_parses_gzip_and_raw(tmp_path):
    for gz in (True, False):
        folder = tmp_path / f"gz{gz}"
        x, y = tiny_idx_pair(folder, "mine", n=4, gz=gz)   # nonstandard name: no checksum
        ext = ".gz" if gz else ""
        images, labels, how = idx.load_idx_pair(folder / f"mine-images-idx3-ubyte{ext}",
                                                folder / f"mine-labels-idx1-ubyte{ext}", dataset="mnist")
        assert images.shape == (4, 1, 28, 28) and images.dtype == torch.uint8
        assert labels.dtype == torch.int64 and labels.tolist() == y.tolist()
        assert np.array_equal(images[:, 0].numpy(), x)
        assert how.startswith("not verified")


def test_idx_rejects_wrong_magic(tmp_path):
    labels = idx_bytes(np.arange(5))
    with pytest.raises(DataError, match=r"wrong magic number 0x00000801, expected images"):
        idx.parse_idx(labels, source="f", expect_magic=idx.MAGIC_IMAGES)
    with pytest.raises(DataError, match="not an IDX file"):
        idx.parse_idx(b"\x01\x02\x08\x01" + b"\0" * 8, source="f")
    with pytest.raises(DataError, match="unsupported IDX element type 0x0d"):
        idx.parse_idx(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\0" * 4, source="f")
    path = write(tmp_path / "x-images-idx3-ubyte", labels)
    with pytest.raises(DataError, match="x-images-idx3-ubyte: wrong magic"):
        idx.read_idx(path, expect_magic=idx.MAGIC_IMAGES)


def test_idx_rejects_count_mismatch(tmp_path):
    write(tmp_path / "a-images-idx3-ubyte", idx_bytes(np.zeros((3, 28, 28))))
    write(tmp_path / "a-labels-idx1-ubyte", idx_bytes(np.zeros(2)))
    with pytest.raises(DataError, match=r"holds 3 images but .*a-labels-idx1-ubyte holds 2 labels"):
        idx.load_idx_pair(tmp_path / "a-images-idx3-ubyte", tmp_path / "a-labels-idx1-ubyte")


def test_idx_rejects_truncated_extra_and_broken_gzip(tmp_path):
    good = idx_bytes(np.ones((2, 4, 4)))
    with pytest.raises(DataError, match=r"truncated: header declares 2x4x4 = 32 bytes of data, file has 31"):
        idx.parse_idx(good[:-1], source="f")
    with pytest.raises(DataError, match="3 unexpected extra bytes"):
        idx.parse_idx(good + b"abc", source="f")
    with pytest.raises(DataError, match="truncated IDX header"):
        idx.parse_idx(good[:9], source="f")
    broken = write(tmp_path / "b-images-idx3-ubyte.gz", gzip.compress(good)[:-12])
    with pytest.raises(DataError, match=r"b-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        idx.read_idx(broken)


def test_checksum_mismatch_refused_for_standard_names(tmp_path):
    tiny_idx_pair(tmp_path / "mnist", "train")
    with pytest.raises(DataError, match=r"checksum mismatch for .*mnist/train-images-idx3-ubyte\.gz: SHA-256"):
        load_dataset("mnist", "train", data_dir=tmp_path)
    # the same bytes under a Kaggle-style name are recognised as the standard file, too
    tiny_idx_pair(tmp_path / "fashion-mnist", "t10k", gz=False)
    folder = tmp_path / "fashion-mnist"
    os.rename(folder / "t10k-images-idx3-ubyte", folder / "t10k-images.idx3-ubyte")
    with pytest.raises(DataError, match=r"checksum mismatch for .*t10k-images\.idx3-ubyte"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


def test_half_present_idx_pair_names_the_missing_file(tmp_path):
    write(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", b"whatever")
    with pytest.raises(DataError, match=r"found train-images-idx3-ubyte.gz but no train-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


def test_official_md5s_match_torchvision():
    import torchvision.datasets as tvd

    for dataset, cls in (("mnist", tvd.MNIST), ("fashion-mnist", tvd.FashionMNIST)):
        assert {f"{name[:-3]}": md5 for name, md5 in cls.resources} == idx.OFFICIAL_GZ_MD5[dataset]
    assert {n: m for n, m in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list} == cifar.BATCH_MD5


def test_pair_fingerprint_ignores_order_but_not_pairing():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 50).astype(np.uint8)
    perm = rng.permutation(50)
    assert idx.pair_fingerprint(x, y) == idx.pair_fingerprint(x[perm], y[perm])
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 10
    assert idx.pair_fingerprint(x, y) != idx.pair_fingerprint(x, y2)


# ---------------------------------------------------------------------------------------------
# bundled sample, offline behaviour


def test_bundled_sample_offline_with_notice_once(tmp_path, caplog, fresh_notices, monkeypatch):
    monkeypatch.setattr(download, "reachable", lambda *a, **k: pytest.fail("probed the network while offline"))
    caplog.set_level(logging.WARNING, logger="aecore.data")
    for _ in range(2):
        data = load_dataset("mnist", "train", data_dir=tmp_path)
    assert isinstance(data, ImageData)
    assert data.split == "test" and data.source == "bundled sample (test split only)"
    assert data.images.shape == (10_000, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and sorted(data.labels.unique().tolist()) == list(range(10))
    assert data.classes == [str(i) for i in range(10)]
    notices = [r for r in caplog.records if "bundled sample" in r.getMessage()]
    assert len(notices) == 1 and "TEST split only" in notices[0].getMessage()
    assert "download disabled (AECORE_OFFLINE=1)" in notices[0].getMessage()

    fashion = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert fashion.images.shape == (10_000, 1, 28, 28) and fashion.classes[9] == "Ankle boot"
    assert torch.bincount(fashion.labels).tolist() == [1000] * 10
    assert (paths.SAMPLES_DIR / "fashion-mnist" / "LICENSE").is_file()


def test_bundled_sample_files_are_small_and_verified():
    total = sum(p.stat().st_size for p in paths.SAMPLES_DIR.glob("*/*"))
    assert total < 6.5e6
    _, _, how = idx.load_idx_pair(paths.SAMPLES_DIR / "mnist" / "t10k-images-idx3-ubyte.gz",
                                  paths.SAMPLES_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz", dataset="mnist")
    assert how == "SHA-256 verified"


def test_download_probe_fails_fast(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(5)
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(download, "_unreachable", {})
    start = time.monotonic()
    assert download.reachable("https://example.invalid/x", timeout=0.2) is False
    assert time.monotonic() - start < 1.5
    start = time.monotonic()   # remembered: no second wait
    assert download.reachable("https://example.invalid/y", timeout=0.2) is False
    assert time.monotonic() - start < 0.1


def test_download_when_unreachable_falls_back_to_bundled(tmp_path, monkeypatch, caplog, fresh_notices):
    monkeypatch.setenv("AECORE_OFFLINE", "0")
    monkeypatch.setattr(download, "reachable", lambda *a, **k: False)
    caplog.set_level(logging.WARNING, logger="aecore.data")
    data = load_dataset("mnist", "train", data_dir=tmp_path)
    assert data.split == "test" and len(data) == 10_000
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    assert download.want_download(None) is True and download.want_download(False) is False
    monkeypatch.setenv("AECORE_OFFLINE", "1")
    assert download.want_download(True) is False


@pytest.mark.shared_data
def test_download_lands_where_the_loader_looks(shared_data, tmp_path, monkeypatch):
    """A (simulated) torchvision download into <data-dir>/MNIST/raw/ is found and verified."""
    fetched = []

    def fake_fetch(urls, folder, *, filename, md5, extract=False):
        assert urls[0].endswith(filename) and len(md5) == 32
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes((shared_data / "mnist" / filename).read_bytes())
        fetched.append(filename)

    monkeypatch.setattr(download, "fetch", fake_fetch)
    offline = load_dataset("mnist", "train", data_dir=tmp_path, download=True)   # AECORE_OFFLINE=1 wins
    assert offline.split == "test" and not fetched
    monkeypatch.setenv("AECORE_OFFLINE", "0")
    data = load_dataset("mnist", "train", data_dir=tmp_path, download=True)
    assert len(data) == 60_000 and data.split == "train"
    assert data.source.startswith(str(tmp_path / "MNIST" / "raw")) and "SHA-256 verified" in data.source
    assert len(fetched) == 4


def test_cifar10_absent_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar10: no data found \(download disabled \(AECORE_OFFLINE=1\)\).*cifar10/.*"
                                        r"cifar-10-batches-py.*train/<class>"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_names_info_and_errors(tmp_path):
    names = list_datasets()
    assert {"mnist", "fashion-mnist", "cifar10", "cifar10-patches", "digits", "stl10", "celeba", "lfw"} <= set(names)
    for name in names:
        info = dataset_info(name)
        assert info["description"] and info["source"] and info["files"]
        assert isinstance(info["input_shape"], tuple)
    assert dataset_info("mnist")["input_shape"] == (1, 28, 28)
    assert dataset_info("folder:/somewhere")["options"] == {"size": 32, "grayscale": False, "test_fraction": 0.1,
                                                            "seed": 0}
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet'; known datasets: celeba, cifar10.*folder:PATH"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match=r"unknown split 'valid'"):
        load_dataset("digits", "valid")
    with pytest.raises(DataError, match=r"unknown option\(s\) size for dataset 'digits'"):
        load_dataset("digits", size=3)
    with pytest.raises(DataError, match="folder: needs a path"):
        load_dataset("folder:")
    assert load_dataset("FMNIST", "test", data_dir=tmp_path).name == "fashion-mnist"


# ---------------------------------------------------------------------------------------------
# folder:PATH


def make_messy_tree(root: Path) -> None:
    write(root / "cats" / "rgb_wide.png", image_bytes(rgb(30, 50), "PNG"))
    rgba = np.dstack([rgb(20, 20, 1), np.full((20, 20), 128, np.uint8)])
    write(root / "cats" / "alpha.png", image_bytes(rgba, "PNG"))
    write(root / "cats" / "palette.gif", image_bytes(rgb(12, 12, 2), "GIF"))
    write(root / "cats" / "sub" / "gray.jpg", image_bytes(np.ascontiguousarray(rgb(40, 40, 3)[..., 0]), "JPEG"))
    sixteen = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)
    write(root / "cats" / "deep.png", image_bytes(sixteen, "PNG"))
    write(root / "dogs" / "photo.jpg", image_bytes(rgb(64, 48, 4), "JPEG", quality=90))
    write(root / "dogs" / "exact.jpg", image_bytes(rgb(32, 32, 5), "JPEG", quality=90))
    # the bad ones
    write(root / "dogs" / "truncated.png", image_bytes(rgb(64, 64, 6), "PNG")[:3000])
    write(root / "dogs" / "text.png", b"this is not an image at all\n" * 10)
    write(root / "dogs" / "empty.jpg", b"")
    write(root / "dogs" / "bomb.png", png_bomb())
    # ignored: not image names, hidden, an empty class folder
    write(root / "dogs" / "notes.txt", b"hello")
    write(root / "cats" / ".DS_Store", b"\0\1")
    (root / "empty_class").mkdir()


def test_folder_loads_good_images_and_counts_skips(tmp_path, caplog):
    make_messy_tree(tmp_path / "tree")
    caplog.set_level(logging.WARNING, logger="aecore.data")
    data = load_dataset(f"folder:{tmp_path / 'tree'}", test_fraction=0)   # the whole tree
    assert data.images.shape == (7, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes == ["cats", "dogs"]
    assert torch.bincount(data.labels).tolist() == [5, 2]
    assert data.name == f"folder:{tmp_path / 'tree'}" and data.split == "train"
    assert "4 unreadable files skipped" in data.source
    for bad in ("truncated.png", "text.png", "empty.jpg", "bomb.png"):
        assert bad in data.source
    assert "decompression" in data.source and "empty file" in data.source
    assert any("4 unreadable files skipped" in r.getMessage() for r in caplog.records)

    gray = load_dataset(f"folder:{tmp_path / 'tree'}", size=16, grayscale=True, test_fraction=0)
    assert gray.images.shape == (7, 1, 16, 16)
    # 16-bit PNG (0..65535 ramp) is rescaled to 8 bits, not clipped to white
    deep = gray.images[gray.labels == 0][1, 0].float()   # cats sorted: alpha, deep, palette, rgb_wide, sub/gray
    assert 60 < deep.mean() < 200 and deep.min() < 40
    # alpha composited on white: a half-transparent image is brighter than its colours
    alpha = data.images[0].float().mean()
    assert alpha > torch.from_numpy(rgb(20, 20, 1)).float().mean()


def test_folder_jpeg_fast_path_matches_pil(tmp_path):
    a = rgb(32, 32, 7)
    data = image_bytes(a, "JPEG", quality=85)
    fast = images._fast_jpeg_decoder()
    slow = images.decode_image(data, size=32)
    assert slow.shape == (3, 32, 32)
    if fast is not None:
        assert np.array_equal(fast(data), slow)
    assert images._jpeg_frame(data) == (32, 32, 3)
    assert images._jpeg_frame(b"\x89PNG") is None


def test_folder_errors_and_splits(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    write(tmp_path / "empty" / "a" / "readme.txt", b"x")
    with pytest.raises(DataError, match="no image files under"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    write(tmp_path / "allbad" / "a" / "x.png", b"junk")
    with pytest.raises(DataError, match="none of the image files .* could be read"):
        load_dataset(f"folder:{tmp_path / 'allbad'}")
    write(tmp_path / "flat" / "one.png", image_bytes(rgb(8, 8), "PNG"))
    with pytest.raises(DataError, match="has no train/ and test/ subfolders and test_fraction=0"):
        load_dataset(f"folder:{tmp_path / 'flat'}", "test", test_fraction=0)
    with pytest.raises(DataError, match="too few images for a test split"):
        load_dataset(f"folder:{tmp_path / 'flat'}", "test")
    flat = load_dataset(f"folder:{tmp_path / 'flat'}", size=8)
    assert flat.classes == ["flat"] and flat.images.shape == (1, 3, 8, 8)
    with pytest.raises(DataError, match="option size=2 must be between 4 and 1024"):
        load_dataset(f"folder:{tmp_path / 'flat'}", size=2)

    for split, n in (("train", 3), ("test", 1)):
        for k in range(n):
            write(tmp_path / "split" / split / "c" / f"{k}.png", image_bytes(rgb(8, 8, k), "PNG"))
    assert len(load_dataset(f"folder:{tmp_path / 'split'}", "train")) == 3
    assert len(load_dataset(f"folder:{tmp_path / 'split'}", "test")) == 1
    archive = tar_gz(tmp_path / "split", tmp_path / "split.tar.gz", "wrapped")
    assert len(load_dataset(f"folder:{archive}", "test")) == 1


def test_folder_without_splits_is_split_stratified_and_seeded(tmp_path):
    for c in ("a", "b"):
        for k in range(10):
            write(tmp_path / "t" / c / f"{k:02d}.png", image_bytes(rgb(8, 8, 100 * (c == "b") + k), "PNG"))
    name = f"folder:{tmp_path / 't'}"
    train, test = load_dataset(name, size=8), load_dataset(name, "test", size=8)
    assert len(train) == 18 and len(test) == 2 and test.labels.tolist() == [0, 1]
    everything = load_dataset(name, size=8, test_fraction=0).images.flatten(1)
    train_rows = {tuple(r.tolist()) for r in train.images.flatten(1)}
    test_rows = {tuple(r.tolist()) for r in test.images.flatten(1)}
    assert not train_rows & test_rows and len(train_rows | test_rows) == len(everything)
    assert torch.equal(load_dataset(name, "test", size=8).images, test.images)
    assert "stratified split, test_fraction=0.1, seed=0" in test.source
    other = load_dataset(name, "test", size=8, test_fraction=0.3, seed=5)
    assert len(other) == 6


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_and_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert torch.bincount(test.labels).min() >= 35   # stratified: every class in the test split
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images)
    other = load_dataset("digits", "test", seed=1)
    assert not torch.equal(other.images, test.images)
    rest, held = split_off(train, 0.1)
    assert len(rest) + len(held) == 1438
    from aecore.data.digits import _sklearn_digits
    pixels, labels = _sklearn_digits()
    assert pixels.shape == (1797, 64) and pixels.max() == 16
    assert sorted(train.labels.tolist() + test.labels.tolist()) == sorted(labels.tolist())


# ---------------------------------------------------------------------------------------------
# STL-10, CelebA, LFW


def test_stl10_from_fabricated_binary_files(tmp_path):
    folder = tmp_path / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)   # (N,C,H,W)
    (folder / "train_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())  # column-major
    (folder / "train_y.bin").write_bytes(bytes([1, 5, 10]))
    native = load_dataset("stl10", data_dir=tmp_path, size=96)
    assert np.array_equal(native.images.numpy(), x)
    assert native.labels.tolist() == [0, 4, 9] and native.classes[2] == "car"
    small = load_dataset("stl10", data_dir=tmp_path)
    assert small.images.shape == (3, 3, 64, 64) and small.images.dtype == torch.uint8
    (folder / "train_y.bin").write_bytes(bytes([1, 5]))
    with pytest.raises(DataError, match="holds 3 images but .*train_y.bin holds 2 labels"):
        load_dataset("stl10", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"stl10: no data found; put test_X.bin and test_y.bin"):
        load_dataset("stl10", "test", data_dir=tmp_path)


def test_celeba_missing_and_fabricated(tmp_path):
    with pytest.raises(DataError, match=r"celeba: missing .*list_eval_partition.txt and .*img_align_celeba/"):
        load_dataset("celeba", data_dir=tmp_path)
    base = tmp_path / "celeba"
    for i in range(1, 5):
        write(base / "img_align_celeba" / f"{i:06d}.jpg", image_bytes(rgb(44, 36, i), "JPEG"))
    write(base / "list_eval_partition.txt", b"000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n")
    names = "5_o_Clock_Shadow Smiling"
    attrs = f"4\n{names}\n000001.jpg -1 1\n000002.jpg 1 -1\n000003.jpg -1 -1\n000004.jpg 1 1\n"
    write(base / "list_attr_celeba.txt", attrs.encode())
    train = load_dataset("celeba", data_dir=tmp_path, size=16)
    assert train.images.shape == (2, 3, 16, 16) and train.labels.tolist() == [-1, -1] and train.classes == []
    smiling = load_dataset("celeba", "test", data_dir=tmp_path, size=16, attr="Smiling")
    assert smiling.labels.tolist() == [1] and smiling.classes == ["not Smiling", "Smiling"]
    with pytest.raises(DataError, match="unknown attribute 'Grumpy'"):
        load_dataset("celeba", data_dir=tmp_path, attr="Grumpy")


def test_lfw_missing_and_fabricated(tmp_path):
    with pytest.raises(DataError, match=r"lfw: missing the lfw_funneled/ folder \(or lfw-funneled.tgz\) and "
                                        r"peopleDevTrain.txt .*no longer\s+download"):
        load_dataset("lfw", data_dir=tmp_path)
    base = tmp_path / "lfw" / "lfw-py"
    people = {"Ann_A": 2, "Bob_B": 1, "Cy_C": 1}
    for person, count in people.items():
        for k in range(1, count + 1):
            write(base / "lfw_funneled" / person / f"{person}_{k:04d}.jpg", image_bytes(rgb(50, 50, k), "JPEG"))
    write(base / "peopleDevTrain.txt", b"2\nAnn_A\t2\nBob_B\t1\n")
    write(base / "peopleDevTest.txt", b"1\nCy_C\t1\n")
    train = load_dataset("lfw", data_dir=tmp_path, size=16)
    assert train.images.shape == (3, 3, 16, 16) and train.labels.tolist() == [0, 0, 1]
    test = load_dataset("lfw", "test", data_dir=tmp_path, size=16)
    assert test.labels.tolist() == [2] and test.classes == ["Ann_A", "Bob_B", "Cy_C"]
    # the unextracted archive works as well
    tar_gz(base / "lfw_funneled", base / "lfw-funneled.tgz", "lfw_funneled")
    for p in sorted((base / "lfw_funneled").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (base / "lfw_funneled").rmdir()
    from_tgz = load_dataset("lfw", data_dir=tmp_path, size=16)
    assert torch.equal(from_tgz.images, train.images)


def test_celeba_from_zip(tmp_path):
    import zipfile

    base = tmp_path / "celeba"
    base.mkdir()
    with zipfile.ZipFile(base / "img_align_celeba.zip", "w") as zf:
        for i in (1, 2):
            zf.writestr(f"img_align_celeba/{i:06d}.jpg", image_bytes(rgb(30, 24, i), "JPEG"))
    write(base / "list_eval_partition.txt", b"000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n")
    data = load_dataset("celeba", data_dir=tmp_path, size=8)
    assert data.images.shape == (2, 3, 8, 8)
    assert "1 unreadable file skipped: 000003.jpg" in data.source


# ---------------------------------------------------------------------------------------------
# CIFAR-10 forms, the cache, patches


def test_cifar10_tree_and_cache(tmp_path, monkeypatch):
    pixels = cifar_tree(tmp_path / "cifar10")
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.images.shape == (20, 3, 32, 32) and data.classes == cifar.CLASSES
    assert data.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert np.array_equal(data.images[2].numpy().transpose(1, 2, 0), pixels["train/automobile/0000"])
    test = load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert len(test) == 20 and not torch.equal(test.images, data.images)
    assert len(list(data_cache.cache_dir().glob("cifar10-*.safetensors"))) == 2   # one per split folder
    monkeypatch.setattr(cifar, "decode_items", lambda *a, **k: pytest.fail("decoded again despite the cache"))
    again = load_dataset("cifar10", data_dir=tmp_path)
    assert torch.equal(again.images, data.images) and torch.equal(again.labels, data.labels)
    assert torch.equal(load_dataset("cifar10", "test", data_dir=tmp_path).images, test.images)


def test_cifar10_tar_gz_cache_hit_and_invalidation(tmp_path, monkeypatch, caplog):
    pixels = cifar_tree(tmp_path / "src", per_class=1)
    write(tmp_path / "src" / "train" / "cat" / "broken.jpg", b"\xff\xd8 not really")
    (tmp_path / "cifar10").mkdir()
    archive = tar_gz(tmp_path / "src", tmp_path / "cifar10" / "cifar10-jpeg.tar.gz", "cifar10-jpeg")
    caplog.set_level(logging.WARNING, logger="aecore.data")
    train = load_dataset("cifar10", data_dir=tmp_path)
    assert train.images.shape == (10, 3, 32, 32)
    assert np.array_equal(train.images[9].numpy().transpose(1, 2, 0), pixels["train/truck/0000"])
    assert "1 unreadable file skipped: cat/broken.jpg" in train.source
    decoded = []
    real_decode = cifar.decode_items
    monkeypatch.setattr(cifar, "decode_items", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    test = load_dataset("cifar10", "test", data_dir=tmp_path)    # both splits were cached at once
    assert len(test) == 10 and not decoded and "skipped" not in test.source
    assert "1 unreadable file skipped" in load_dataset("cifar10", data_dir=tmp_path).source
    assert not decoded
    os.utime(archive, ns=(time.time_ns(), time.time_ns() + 10**9))   # a changed source: decoded again
    load_dataset("cifar10", data_dir=tmp_path)
    assert decoded


def test_cache_survives_a_corrupt_cache_file(tmp_path, caplog):
    cifar_tree(tmp_path / "cifar10", per_class=1, splits=("train",))
    first = load_dataset("cifar10", data_dir=tmp_path)
    [entry] = data_cache.cache_dir().glob("cifar10-*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])
    caplog.set_level(logging.WARNING, logger="aecore.data")
    second = load_dataset("cifar10", data_dir=tmp_path)
    assert torch.equal(first.images, second.images)
    assert any("unreadable cache file" in r.getMessage() for r in caplog.records)
    assert not list(data_cache.cache_dir().glob("*.tmp"))


def test_cifar10_foreign_class_folders_refused(tmp_path):
    write(tmp_path / "cifar10" / "train" / "zebra" / "0.png", image_bytes(rgb(32, 32), "PNG"))
    with pytest.raises(DataError, match=r"class folders \['zebra'\] that are not CIFAR-10 classes"):
        load_dataset("cifar10", data_dir=tmp_path)


def fake_batch(n: int, seed: int, protocol: int) -> tuple[bytes, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 10, n)]
    return pickle.dumps({b"batch_label": b"fake", b"labels": y, b"data": x}, protocol=protocol), x, y


def test_cifar_pickles_parsed_safely(tmp_path):
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        data, x, y = fake_batch(4, protocol, protocol)
        images, labels = cifar.parse_python_batch(data, "batch")
        assert images.shape == (4, 3, 32, 32) and np.array_equal(images.reshape(4, -1), x)
        assert labels.tolist() == y

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with pytest.raises(DataError, match=r"refusing to load (posix|nt)\.system"):
        cifar.parse_python_batch(pickle.dumps({"data": Evil()}, protocol=2), "evil")
    assert not (tmp_path / "pwned").exists()

    # fabricated batches under the official names are refused by their MD5
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    for i, name in enumerate(cifar.SPLIT_BATCHES["train"]):
        write(folder / name, fake_batch(2, i, 2)[0])
    with pytest.raises(DataError, match=r"checksum mismatch for .*data_batch_1: MD5"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_python_batches_from_folder_and_archive(tmp_path, monkeypatch):
    """The official python-batch layout, with MD5s of fabricated batches standing in for the real ones."""
    folder = tmp_path / "src" / "cifar-10-batches-py"
    md5s, expected = {}, {}
    for i, name in enumerate(cifar.SPLIT_BATCHES["train"] + cifar.SPLIT_BATCHES["test"]):
        data, x, y = fake_batch(3, i, 2)
        write(folder / name, data)
        md5s[name] = hashlib.md5(data).hexdigest()
        expected[name] = (x, y)
    monkeypatch.setattr(cifar, "BATCH_MD5", md5s)
    (tmp_path / "a" / "cifar10").mkdir(parents=True)
    os.rename(folder, tmp_path / "a" / "cifar10" / "cifar-10-batches-py")
    train = load_dataset("cifar10", data_dir=tmp_path / "a")
    assert train.images.shape == (15, 3, 32, 32) and "MD5 verified" in train.source
    assert train.labels[:3].tolist() == expected["data_batch_1"][1]
    tar_gz(tmp_path / "a" / "cifar10" / "cifar-10-batches-py", tmp_path / "b.tgz", "cifar-10-batches-py")
    (tmp_path / "b" / "cifar10").mkdir(parents=True)
    os.rename(tmp_path / "b.tgz", tmp_path / "b" / "cifar10" / "cifar-10-python.tar.gz")
    test = load_dataset("cifar10", "test", data_dir=tmp_path / "b")
    assert np.array_equal(test.images.reshape(3, -1).numpy(), expected["test_batch"][0])


def test_tar_index_agrees_with_tarfile(tmp_path):
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            names = ["a/b.png", "d/" + "x" * 120 + ".png", "ü/é.jpg", "e/f.jpg"]
            if fmt == tarfile.USTAR_FORMAT:
                names[1] = "d/" + "y" * 90 + "/" + "x" * 60 + ".png"   # ustar: prefix + name
            for k, name in enumerate(names):
                info = tarfile.TarInfo(name)
                payload = bytes([k]) * (k * 300 + 1)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            link = tarfile.TarInfo("a/link.png")
            link.type, link.linkname = tarfile.SYMTYPE, "b.png"
            tf.addfile(link)
        data = buf.getvalue()
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            reference = {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isreg()}
        assert images.tar_index(data) == reference
    with pytest.raises(DataError, match="not a readable tar archive"):
        images.tar_index(b"garbage" * 100, "x.tar")


def test_cifar_binary_batches(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    rng = np.random.default_rng(0)
    records = rng.integers(0, 256, (3, cifar.RECORD), dtype=np.uint8)
    records[:, 0] = [3, 1, 4]
    write(folder / "test_batch.bin", records.tobytes())
    data = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert data.labels.tolist() == [3, 1, 4] and np.array_equal(data.images[1].numpy().ravel(), records[1, 1:])
    write(folder / "test_batch.bin", records.tobytes()[:-1])
    with pytest.raises(DataError, match="not a whole number of 3073-byte CIFAR-10 records"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_cifar10_patches(tmp_path):
    cifar_tree(tmp_path / "cifar10", per_class=1)
    source = load_dataset("cifar10", data_dir=tmp_path)
    a = load_dataset("cifar10-patches", data_dir=tmp_path, count=300, seed=3)
    b = load_dataset("cifar10-patches", data_dir=tmp_path, count=300, seed=3)
    c = load_dataset("cifar10-patches", data_dir=tmp_path, count=300, seed=4)
    assert a.images.shape == (300, 3, 7, 7) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.classes == cifar.CLASSES and set(a.labels.tolist()) <= set(range(10))
    # every patch is a 7x7 window of an image of its own class (one image per class here)
    windows = source.images.unfold(2, 7, 1).unfold(3, 7, 1)           # (10,3,26,26,7,7)
    for patch, label in zip(a.images[:20], a.labels[:20], strict=True):
        match = (windows[label] == patch[:, None, None]).all(0).all(-1).all(-1)
        assert match.any()
    assert len(load_dataset("cifar10-patches", "test", data_dir=tmp_path, count=5)) == 5


# ---------------------------------------------------------------------------------------------
# the real data (../shared/data), skipped without it


@pytest.mark.shared_data
def test_real_mnist_and_fashion_mnist(shared_data):
    for name, mean in (("mnist", 0.1307), ("fashion-mnist", 0.2860)):
        train = load_dataset(name, "train", data_dir=shared_data)
        test = load_dataset(name, "test", data_dir=shared_data)
        assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
        assert "SHA-256 verified" in train.source and "SHA-256 verified" in test.source
        assert abs(train.images.sum(dtype=torch.int64).item() / train.images.numel() / 255 - mean) < 1e-3
        assert torch.bincount(test.labels).min() >= 890


@pytest.mark.shared_data
def test_real_fashion_mnist_in_another_order_is_verified(shared_data, tmp_path):
    x = idx.read_idx(shared_data / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").array
    y = idx.read_idx(shared_data / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").array
    perm = np.random.default_rng(0).permutation(len(y))
    folder = tmp_path / "fashion-mnist"
    write(folder / "t10k-images-idx3-ubyte", idx_bytes(x[perm]))            # like the official raw files
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(y[perm]))
    data = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert "same records as the official files, different order" in data.source
    y2 = y[perm].copy()
    y2[0] = (y2[0] + 1) % 10
    write(folder / "t10k-labels-idx1-ubyte", idx_bytes(y2))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_cifar10_from_tar_gz(shared_data):
    start = time.monotonic()
    train = load_dataset("cifar10", "train", data_dir=shared_data)
    first = time.monotonic() - start
    assert train.images.shape == (50_000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    means = train.images.sum((0, 2, 3), dtype=torch.int64) / (50_000 * 32 * 32 * 255)
    assert torch.allclose(means.float(), torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.002)   # published
    start = time.monotonic()
    test = load_dataset("cifar10", "test", data_dir=shared_data)
    assert test.images.shape == (10_000, 3, 32, 32) and torch.bincount(test.labels).tolist() == [1000] * 10
    assert time.monotonic() - start < max(2.0, first / 5)   # served from the decoded cache
