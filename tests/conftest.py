"""Shared fixtures: tiny deterministic data, the optional ../shared/data folder, one CPU thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny models: threads only add spin-wait overhead

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AECORE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real MNIST, Fashion-MNIST, CIFAR-10); tests using it skip cleanly without it."""
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"reference data not found at {SHARED_DATA} (see README: Data)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep user caches and model folders out of the real home directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("AECORE_HOME", str(home))
    monkeypatch.delenv("AECORE_DATA_DIR", raising=False)
    monkeypatch.setenv("AECORE_OFFLINE", "1")  # tests never try a download


@pytest.fixture(scope="session")
def tiny_zoo_root(tmp_path_factory) -> Path:
    """A pretrained/ folder of tiny models (see tests/tiny_zoo.py), built once per session."""
    from tests.tiny_zoo import build_tiny_zoo

    root = tmp_path_factory.mktemp("pretrained")
    build_tiny_zoo(root)
    return root


@pytest.fixture
def tiny_zoo(tiny_zoo_root, monkeypatch) -> Path:
    """Point aecore (and the app) at the tiny pretrained folder for this test."""
    monkeypatch.setenv("AECORE_PRETRAINED", str(tiny_zoo_root))
    return tiny_zoo_root


@pytest.fixture
def no_job_left_running():
    """Stop the training jobs a test left running (use it in modules that start jobs).

    A job thread still running when the interpreter exits would abort it."""
    from aecore.lab import jobs

    yield
    for job in jobs.active_jobs():
        job.stop()
        job.join(60)


@pytest.fixture
def media(monkeypatch):
    """(width, height) of an image a page shows, by its URL: AppTest's in-memory media store, kept after
    the run (for the projector's tile sizes)."""
    import io

    from PIL import Image
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import app_test

    stores = []

    class Kept(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Kept)
    return lambda url: Image.open(io.BytesIO(stores[-1].get_file(url.rsplit("/", 1)[-1]).content)).size
