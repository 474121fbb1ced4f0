"""The Reconstructions page through AppTest, on the tiny zoo: selections, PCA row, metrics, own image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from aecore.data import load_dataset
from aecore.evaluate import per_image_mse
from aecore.models import build_model
from aecore.pca import PCA
from aecore.store import load_pretrained, save_model
from tests.helpers import ok, open_app, png_of_a_digit


def page(query: dict | None = None) -> AppTest:
    return open_app("reconstructions.py", query, timeout=120)


def grid_caption(at: AppTest) -> str:
    return at.get("image")[0].captions[0]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_page_opens_on_the_model_that_beats_pca_most(tiny_zoo):
    from aecore.lab import catalog

    entries = catalog.entries("mnist")
    best = max((e for e in entries if e.pca_gain is not None), key=lambda e: e.pca_gain)
    at = page()
    ok(at)
    assert at.selectbox(key="model").value == best.ref == catalog.showcase(entries).ref


def test_default_view_shows_metrics_grid_pca_and_errors(tiny_zoo):
    at = page({"model": "mnist/ae-d2"})
    ok(at)
    assert at.selectbox(key="model").value == "mnist/ae-d2"
    measured = json.loads((tiny_zoo / "mnist" / "ae-d2" / "metrics.json").read_text())
    assert metric(at, "Test MSE") == f"{measured['mse']:.5f}"
    assert metric(at, "PSNR") == f"{measured['psnr']:.2f} dB"
    caption = grid_caption(at)
    assert "originals · ae-d2 · PCA with 2 components" in caption and "10 random test images (seed 0)" in caption
    # the per-image numbers are the model's and PCA's errors on exactly those images
    data = load_dataset("mnist", "test")
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:10]
    x = data.as_float(index).view(-1, 1, 28, 28)
    model = load_pretrained("mnist/ae-d2", root=tiny_zoo, device="cpu").model
    assert metric(at, "MSE of ae-d2") == f"{float(per_image_mse(model.reconstruct(x), x).mean()):.5f}"
    pca = PCA.fit(load_dataset("mnist", "train").as_float(), 2)
    assert metric(at, "MSE of PCA-2") == f"{float(per_image_mse(pca.reconstruct(x), x).mean()):.5f}"
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in chart["data"]] == ["ae-d2", "PCA-2"] and len(chart["data"][0]["x"]) == 10
    assert len(at.get("download_button")) == 1


def test_selection_modes_projector_and_link(tiny_zoo):
    at = page()
    at.radio(key="pick").set_value("class").run()
    at.selectbox(key="klass").set_value(3).run()
    ok(at)
    assert "of class 3 (seed 0)" in grid_caption(at)
    at.number_input(key="seed").set_value(5).run()
    assert "seed 5" in grid_caption(at)
    at.radio(key="pick").set_value("index").run()
    at.number_input(key="start").set_value(100).run()
    at.slider(key="count").set_value(5).run()
    ok(at)
    assert "test images 100 to 104" in grid_caption(at)
    at.toggle(key="projector").set_value(True).run()
    ok(at)
    assert len(at.get("image")) == 1
    assert {k: at.query_params[k] for k in ("pick", "start", "count", "projector")} == {
        "pick": "index", "start": "100", "count": "5", "projector": "1"}
    # the link reopens the same view
    again = page({"pick": "index", "start": "5", "count": "3", "model": "mnist/vae-d2"})
    ok(again)
    assert again.selectbox(key="model").value == "mnist/vae-d2"
    assert "test images 5 to 7" in grid_caption(again)


def test_unet_gets_no_pca_row(tiny_zoo):
    at = page({"model": "mnist/unet-denoise"})
    ok(at)
    assert "PCA" not in grid_caption(at)
    assert any("No PCA row" in c.value and "skip" in c.value for c in at.caption)
    assert not [m for m in at.metric if m.label.startswith("MSE of PCA")]


def test_model_that_does_not_fit_the_images_gets_a_message(tiny_zoo):
    home = Path(os.environ["AECORE_HOME"])
    model = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": 2})
    save_model(model, home / "models" / "small-one", dataset="mnist")
    at = page({"model": "user:small-one"})
    assert not at.exception
    assert at.selectbox(key="model").value == "user:small-one"
    assert "takes inputs of shape [1, 8, 8]" in at.error[0].value
    assert not at.get("image")


def test_dataset_without_models_is_not_offered(tiny_zoo):
    """digits has no model: a model page does not offer it, and a link naming it opens the first
    dataset that has one."""
    at = page({"dataset": "digits"})
    assert not at.exception
    assert "digits" not in at.selectbox(key="dataset").options
    assert at.selectbox(key="dataset").value == "mnist"


def test_own_image_upload_draw_and_refusal(tiny_zoo):
    at = page()
    at.file_uploader(key="rc_upload").set_value(("digit.png", png_of_a_digit(), "image/png")).run()
    ok(at)
    assert any("Converted for the model" in c.value and "inverted" in c.value for c in at.caption)
    assert len(at.get("image")) == 2 and len(at.get("download_button")) == 2
    at.file_uploader(key="rc_upload").set_value(("photo.png", b"\x89PNG but not really", "image/png")).run()
    assert not at.exception
    assert "Cannot use this image" in at.error[0].value and "not an image" in at.error[0].value
    at.radio(key="own").set_value("draw").run()
    ok(at)
    assert any("Draw in white" in c.value for c in at.caption)      # the canvas renders; nothing drawn yet
