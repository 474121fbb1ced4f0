"""Shared test helpers: tiny structured datasets (no files, no network), and opening an app page with
AppTest (query parameters, model choice, no exception or error shown), plotly arrays, a drawn digit."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from aecore.data.base import ImageData

ROOT = Path(__file__).resolve().parents[1]


def blobs(n: int = 96, shape: tuple[int, ...] = (1, 8, 8), classes: int = 3, seed: int = 0) -> ImageData:
    """n uint8 images: one smooth random prototype per class plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, *shape, generator=g)
    labels = torch.arange(n) % classes
    x = protos[labels] + 0.1 * torch.randn(n, *shape, generator=g)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageData(images=images, labels=labels, classes=[f"c{i}" for i in range(classes)],
                     name="blobs", split="train", source="test fixture")


# --- app pages through AppTest ---------------------------------------------------------------------
def no_native_bf16(monkeypatch) -> None:
    """Make this CPU look like one without AVX512-BF16 or AMX, whatever it has (bf16 is then refused)."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)


def open_app(page: str, query: dict | None = None, timeout: float = 60) -> AppTest:
    """Run pages/<page> once, opened with `query` as the URL's parameters."""
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=timeout)
    at.query_params.update(query or {})
    return at.run()


def ok(at: AppTest) -> None:
    """The page raised nothing and shows no error."""
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def open_and_select(page: str, select: str | None, query: dict, timeout: float = 60) -> AppTest:
    """Open the page (query = the URL's parameters), then pick `select` in the sidebar; nothing failed."""
    at = open_app(page, query, timeout)
    if select is not None:
        at.selectbox(key="model").set_value(select).run()
    ok(at)
    return at


def arr(value) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value)


def png_of_a_digit() -> bytes:
    """A hand-drawn-looking 0 (dark ring on white, 90 x 120) as PNG bytes, for the own-image inputs."""
    image = Image.new("L", (90, 120), 255)
    ImageDraw.Draw(image).ellipse((20, 20, 70, 100), outline=0, width=10)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_fashion_model(name: str = "fashion-plain") -> str:
    """A small plain AE saved as the user's own model trained on fashion-mnist (the tiny zoo has only
    mnist): gives the sidebar a dataset whose models do not fit a specialised page. Returns its ref."""
    import os

    from aecore.models import build_model
    from aecore.store import save_model

    model = build_model("ae", {"input_shape": [1, 28, 28], "hidden": [8], "latent_dim": 2})
    save_model(model, Path(os.environ["AECORE_HOME"]) / "models" / name, dataset="fashion-mnist")
    return f"user:{name}"
