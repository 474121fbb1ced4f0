"""Bad inputs for folder:PATH: links, FIFOs, sockets, devices, huge and unreadable files.

Part of the bad-input corpus (tests/test_bad_inputs.py). The README promises that unreadable files
are skipped and counted: each row below puts two good images (a/good.png, b/good.png) beside bad
entries and checks the load finishes, with the good images, and that the note in `data.source`
counts the bad ones and names each with its reason. The link policy is in aecore.data.images.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from aecore.data import images, load_dataset
from aecore.errors import DataError

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def png(color=(200, 30, 60), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def load_within(spec: str, seconds: float = 20, **options):
    """load_dataset(spec, ...) in a thread that must finish within `seconds` (a FIFO opened for
    reading would block it forever): the dataset, or the exception it raised."""
    result: dict = {}

    def run() -> None:
        try:
            result["data"] = load_dataset(spec, **options)
        except BaseException as e:   # handed to the test
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"loading {spec} still runs after {seconds} s (blocked on a FIFO?)"
    if "error" in result:
        raise result["error"]
    return result["data"]


def good_folder(root: Path) -> Path:
    for cls, color in (("a", (250, 0, 0)), ("b", (0, 0, 250))):
        (root / cls).mkdir(parents=True)
        (root / cls / "good.png").write_bytes(png(color))
    return root


# --- the rows: each builds its bad entries and returns [(name, reason fragment)] it expects skipped


def dangling_link(root: Path, outside: Path) -> list[tuple[str, str]]:
    (root / "a" / "gone.png").symlink_to(root / "a" / "nowhere.png")
    return [("a/gone.png", "dangling link")]


def link_to_etc_passwd(root: Path, outside: Path) -> list[tuple[str, str]]:
    (root / "a" / "x.png").symlink_to("/etc/passwd")
    return [("a/x.png", "link leads outside the folder")]


def link_to_an_image_outside(root: Path, outside: Path) -> list[tuple[str, str]]:
    """A readable image outside the folder is still not read: the rule is where, not what."""
    (outside / "secret.png").write_bytes(png((1, 2, 3)))
    (root / "b" / "secret.png").symlink_to(outside / "secret.png")
    (root / "b" / "relative.png").symlink_to(os.path.relpath(outside / "secret.png", root / "b"))
    return [("b/relative.png", "link leads outside the folder"), ("b/secret.png", "link leads outside the folder")]


def link_to_dev_zero(root: Path, outside: Path) -> list[tuple[str, str]]:
    (root / "a" / "zero.png").symlink_to("/dev/zero")
    return [("a/zero.png", "link leads outside the folder")]


def fifo(root: Path, outside: Path) -> list[tuple[str, str]]:
    os.mkfifo(root / "a" / "pipe.png")
    return [("a/pipe.png", "a FIFO, not a regular file")]


def unix_socket(root: Path, outside: Path) -> list[tuple[str, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(root / "a")          # a relative name: AF_UNIX paths are limited to ~108 bytes
    try:
        sock.bind("s.png")
    finally:
        os.chdir(cwd)
        sock.close()              # the socket file stays
    return [("a/s.png", "a socket, not a regular file")]


def device_inside(root: Path, outside: Path) -> list[tuple[str, str]]:
    """/dev/zero's twin made inside the folder (root only): not a regular file, never opened."""
    try:
        os.mknod(root / "a" / "dev.png", stat.S_IFCHR | 0o644, os.makedev(1, 5))
    except (PermissionError, AttributeError):
        pytest.skip("making a device file needs root")
    return [("a/dev.png", "a device, not a regular file")]


def link_loop(root: Path, outside: Path) -> list[tuple[str, str]]:
    (root / "a" / "loop1.png").symlink_to("loop2.png")
    (root / "a" / "loop2.png").symlink_to("loop1.png")
    return [("a/loop1.png", "link loop"), ("a/loop2.png", "link loop")]


def class_folder_linked_outside(root: Path, outside: Path) -> list[tuple[str, str]]:
    (outside / "stolen").mkdir()
    (outside / "stolen" / "private.png").write_bytes(png((9, 9, 9)))
    (root / "c").symlink_to(outside / "stolen", target_is_directory=True)
    return [("c/", "link leads outside the folder")]


def folder_linked_inside(root: Path, outside: Path) -> list[tuple[str, str]]:
    """A link to a folder is never followed, even inside: no walk can loop or leave the folder."""
    (root / "c").symlink_to("a", target_is_directory=True)
    (root / "a" / "again").symlink_to("..", target_is_directory=True)     # a loop, were it followed
    return [("a/again/", "link to a folder, not followed"), ("c/", "link to a folder, not followed")]


def oversized(root: Path, outside: Path) -> list[tuple[str, str]]:
    (root / "b" / "huge.png").write_bytes(png(size=(300, 300)) + b"\0" * 4000)
    return [("b/huge.png", "over the 3000 bytes limit for one image file")]


def unreadable(root: Path, outside: Path) -> list[tuple[str, str]]:
    if AS_ROOT:
        pytest.skip("root reads a chmod 000 file anyway")
    (root / "a" / "locked.png").write_bytes(png())
    (root / "a" / "locked.png").chmod(0)
    return [("a/locked.png", "Permission denied")]


def unlistable_folder(root: Path, outside: Path) -> list[tuple[str, str]]:
    if AS_ROOT:
        pytest.skip("root lists a chmod 000 folder anyway")
    (root / "b" / "sub").mkdir()
    (root / "b" / "sub" / "x.png").write_bytes(png())
    (root / "b" / "sub").chmod(0)
    return [("b/sub/", "folder cannot be listed: Permission denied")]


BAD_ENTRIES = [
    pytest.param(dangling_link, id="folder-dangling-link"),
    pytest.param(link_to_etc_passwd, id="folder-link-to-etc-passwd"),
    pytest.param(link_to_an_image_outside, id="folder-link-to-an-image-outside"),
    pytest.param(link_to_dev_zero, id="folder-link-to-dev-zero"),
    pytest.param(fifo, id="folder-fifo-named-png"),
    pytest.param(unix_socket, id="folder-socket-named-png"),
    pytest.param(device_inside, id="folder-device-named-png"),
    pytest.param(link_loop, id="folder-link-loop"),
    pytest.param(class_folder_linked_outside, id="folder-class-folder-linked-outside"),
    pytest.param(folder_linked_inside, id="folder-folder-linked-inside"),
    pytest.param(oversized, id="folder-oversized-file"),
    pytest.param(unreadable, id="folder-unreadable-file"),
    pytest.param(unlistable_folder, id="folder-unlistable-subfolder"),
]


@pytest.mark.parametrize("make", BAD_ENTRIES)
def test_bad_entries_are_skipped_and_counted(tmp_path, monkeypatch, make):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 3000)    # the good images are ~100 bytes
    root, outside = good_folder(tmp_path / "pics"), tmp_path / "outside"
    outside.mkdir()
    expected = make(root, outside)
    data = load_within(f"folder:{root}", size=8, test_fraction=0)
    assert data.classes == ["a", "b"]                       # a link to a folder adds no class
    assert data.images.shape == (2, 3, 8, 8)
    assert sorted(int(px) for px in data.images[:, 0, 0, 0]) == [0, 250]   # the good ones, nothing else
    n = len(expected)
    assert f"{n} unreadable file{'s' if n != 1 else ''} skipped: " in data.source, data.source
    for name, why in expected:
        assert f"{name} (" in data.source and why in data.source, (name, why, data.source)
    assert "left out" not in data.source, data.source   # linked folders are in the skip note, not twice


def test_a_link_to_an_image_inside_the_folder_is_followed(tmp_path):
    root = good_folder(tmp_path / "pics")
    (root / "b" / "alias.png").symlink_to("../a/good.png")
    (root / "b" / "absolute.png").symlink_to(root / "a" / "good.png")
    (root / "b" / "roundabout.png").symlink_to(tmp_path / "elsewhere" / ".." / "pics" / "a" / "good.png")
    (tmp_path / "elsewhere").mkdir()
    data = load_within(f"folder:{root}", size=8, test_fraction=0)
    assert data.images.shape == (5, 3, 8, 8)
    assert data.labels.tolist() == [0, 1, 1, 1, 1]
    assert "skipped" not in data.source, data.source


def test_a_root_that_is_a_link_to_a_folder_is_fine(tmp_path):
    root = good_folder(tmp_path / "pics")
    (tmp_path / "mine").symlink_to(root, target_is_directory=True)
    (root / "b" / "alias.png").symlink_to(root / "a" / "good.png")     # inside the real root: followed
    data = load_within(f"folder:{tmp_path / 'mine'}", size=8, test_fraction=0)
    assert data.images.shape == (3, 3, 8, 8) and "skipped" not in data.source


def fifo_root(path: Path) -> None:
    os.mkfifo(path)


def fifo_named_zip(path: Path) -> None:
    os.mkfifo(path.with_suffix(".zip"))


def link_to_dev_zero_named_tar(path: Path) -> None:
    path.with_suffix(".tar").symlink_to("/dev/zero")


@pytest.mark.parametrize("make, name", [
    pytest.param(fifo_root, "f", id="folder-root-is-a-fifo"),
    pytest.param(fifo_named_zip, "f.zip", id="folder-root-is-a-fifo-named-zip"),
    pytest.param(link_to_dev_zero_named_tar, "f.tar", id="folder-root-is-dev-zero-named-tar"),
])
def test_a_root_that_is_not_a_folder_nor_a_regular_archive_is_refused(tmp_path, make, name):
    make(tmp_path / "f")
    with pytest.raises(DataError) as info:
        load_within(f"folder:{tmp_path / name}", size=8, test_fraction=0)
    assert "not a folder or a .tar/.tar.gz/.zip archive" in str(info.value)


def test_archive_readers_refuse_a_fifo_without_blocking(tmp_path):
    """The same check inside the readers, for a file swapped for a FIFO after the check above."""
    os.mkfifo(tmp_path / "swapped.zip")
    os.mkfifo(tmp_path / "swapped.tar")
    for reader, name in ((images.zip_files, "swapped.zip"), (images.tar_files, "swapped.tar")):
        with pytest.raises(DataError, match="a FIFO"):
            reader(tmp_path / name)


def test_a_link_member_of_a_zip_is_never_followed(tmp_path):
    """A zip member marked as a symlink is bytes in the archive (here the path /etc/passwd): it is
    neither followed nor decoded, and is skipped and counted."""
    path = tmp_path / "pics.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pics/a/good.png", png((250, 0, 0)))
        zf.writestr("pics/b/good.png", png((0, 0, 250)))
        link = zipfile.ZipInfo("pics/a/evil.png")
        link.create_system = 3                                    # Unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    data = load_within(f"folder:{path}", size=8, test_fraction=0)
    assert data.images.shape == (2, 3, 8, 8)
    assert "1 unreadable file skipped: a/evil.png (unreadable: a link inside the archive, not followed)" in data.source


def test_oversized_zip_member_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 3000)
    path = tmp_path / "pics.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/good.png", png((250, 0, 0)))
        zf.writestr("b/good.png", png((0, 0, 250)))
        zf.writestr("b/huge.png", png(size=(300, 300)) + b"\0" * 4000)
    data = load_within(f"folder:{path}", size=8, test_fraction=0)
    assert data.images.shape == (2, 3, 8, 8)
    assert "b/huge.png (unreadable: " in data.source and "over the 3000 bytes limit" in data.source


# --- changes between the listing and the read ---------------------------------------------------


def removed(root: Path, outside: Path) -> str:
    (root / "a" / "good.png").unlink()
    return "No such file or directory"


def swapped_for_a_link(root: Path, outside: Path) -> str:
    (root / "a" / "good.png").unlink()
    (root / "a" / "good.png").symlink_to("/etc/passwd")
    return "replaced by a link"


def folder_swapped_for_a_link(root: Path, outside: Path) -> str:
    (outside / "a").mkdir()
    (outside / "a" / "good.png").write_bytes(b"private, outside the folder")
    (root / "a" / "good.png").unlink()
    (root / "a").rmdir()
    (root / "a").symlink_to(outside / "a", target_is_directory=True)
    return "replaced by a link"


def swapped_for_a_fifo(root: Path, outside: Path) -> str:
    (root / "a" / "good.png").unlink()
    os.mkfifo(root / "a" / "good.png")
    return "a FIFO, not a regular file"


@pytest.mark.parametrize("change", [
    pytest.param(removed, id="folder-file-removed-after-listing"),
    pytest.param(swapped_for_a_link, id="folder-file-swapped-for-a-link-after-listing"),
    pytest.param(folder_swapped_for_a_link, id="folder-folder-swapped-for-a-link-after-listing"),
    pytest.param(swapped_for_a_fifo, id="folder-file-swapped-for-a-fifo-after-listing"),
])
def test_changes_after_the_listing_are_skipped_and_counted(tmp_path, change):
    root, outside = good_folder(tmp_path / "pics"), tmp_path / "outside"
    outside.mkdir()
    files, skipped_folders = images.scan_folder(root)
    assert sorted(files) == ["a/good.png", "b/good.png"] and not skipped_folders
    why = change(root, outside)
    items, _ = images.class_items({rel: f.read_bytes for rel, f in files.items()})
    done: list = []
    thread = threading.Thread(target=lambda: done.append(images.decode_items(items, size=8)), daemon=True)
    thread.start()
    thread.join(20)
    assert done, "reading blocked"
    decoded = done[0]
    assert len(decoded.images) == 1
    assert len(decoded.skipped) == 1 and decoded.skipped[0][0] == "a/good.png" and why in decoded.skipped[0][1], \
        decoded.skipped
