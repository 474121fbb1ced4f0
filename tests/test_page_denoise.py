"""The Corrupt & denoise page through AppTest, on the tiny zoo: noise controls, default denoiser, the
plain-AE contrast, PSNR numbers, the sweep, own images and models that cannot denoise."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from aecore.data import load_dataset
from aecore.lab import denoise as dn
from aecore.lab.reconstruct import select_indices
from aecore.models import build_model
from aecore.noise import Noise
from aecore.store import load_pretrained, save_model
from tests.helpers import ok, open_app


def page(query: dict | None = None) -> AppTest:
    return open_app("denoise.py", query, timeout=120)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def sweep_traces(at: AppTest) -> list[dict]:
    return json.loads(at.get("plotly_chart")[0].proto.spec)["data"]


def sweep_names(at: AppTest) -> list[str]:
    """The sweep's curves (the slider's mark, a dotted line named 'slider', left out)."""
    return [t["name"] for t in sweep_traces(at) if t["name"] != "slider"]


def test_opens_on_the_gaussian_denoiser_with_plain_ae_contrast(tiny_zoo):
    at = page()
    ok(at)
    assert at.selectbox(key="model").value == "mnist/dae-gaussian"
    assert at.query_params["noise"] == "gaussian:0.5"
    shown = metrics(at)
    assert list(shown) == ["Corrupted", "Denoised by dae-gaussian", "Plain AE (ae-d8)"]
    # the numbers are PSNRs of exactly these seeded images and noise
    data = load_dataset("mnist", "test")
    clean = data.as_float(select_indices(data.labels, 8, "random", seed=0)).view(-1, 1, 28, 28)
    load = lambda ref: load_pretrained(ref, root=tiny_zoo, device="cpu").model  # noqa: E731
    want = dn.demo(load("mnist/dae-gaussian"), clean, Noise("gaussian", 0.5), seed=0, plain=load("mnist/ae-d8"))
    assert shown["Corrupted"] == f"{float(want.psnr['corrupted'].mean()):.2f} dB"
    assert shown["Denoised by dae-gaussian"] == f"{float(want.psnr['denoised'].mean()):.2f} dB"
    assert shown["Plain AE (ae-d8)"] == f"{float(want.psnr['plain'].mean()):.2f} dB"
    caption = at.get("image")[0].captions[0]
    assert caption == "Rows: clean · corrupted (gaussian:0.5) · denoised by dae-gaussian · plain AE ae-d8"
    assert sweep_names(at) == [dn.NOISY, "dae-gaussian", "ae-d8"]
    mark = next(t for t in sweep_traces(at) if t["name"] == "slider")
    assert mark["x"] == [0.5, 0.5] and mark["line"]["dash"] == "dot"      # the slider's level on the plot
    at.slider(key="dn_level_gaussian").set_value(0.3).run()
    mark = next(t for t in sweep_traces(at) if t["name"] == "slider")
    assert mark["x"] == [0.3, 0.3] and sweep_names(at) == [dn.NOISY, "dae-gaussian", "ae-d8"]
    at.slider(key="dn_level_gaussian").set_value(0.5).run()
    assert len(at.dataframe[0].value) == 8
    assert len(at.get("download_button")) == 1


def test_noise_kind_and_level(tiny_zoo):
    at = page()
    at.radio(key="dn_kind").set_value("masking").run()
    ok(at)
    assert at.query_params["noise"] == "masking:0.5"
    assert at.selectbox(key="model").value == "mnist/dae-gaussian"      # no masking denoiser in the tiny zoo
    assert any("not masking" in c.value for c in at.caption)
    at.slider(key="dn_level_masking").set_value(0.0).run()
    ok(at)
    assert metrics(at)["Corrupted"] == "∞ (identical)"                  # nothing masked: the clean images
    at.radio(key="dn_kind").set_value("saltpepper").run()
    ok(at)
    assert at.query_params["noise"] == "saltpepper:0.2"                 # its own default level
    assert "corrupted (saltpepper:0.2)" in at.get("image")[0].captions[0]
    assert sweep_names(at)[0] == dn.NOISY


def test_changing_the_noise_kind_picks_a_matching_denoiser(tiny_zoo):
    at = page()
    at.selectbox(key="model").set_value("mnist/ae-d2").run()
    at.radio(key="dn_kind").set_value("masking").run()
    assert at.selectbox(key="model").value == "mnist/ae-d2"              # nothing better for masking
    assert any("trained on clean images only" in c.value for c in at.caption)
    at.radio(key="dn_kind").set_value("gaussian").run()
    ok(at)
    assert at.selectbox(key="model").value == "mnist/dae-gaussian"


def test_link_reopens_the_view(tiny_zoo):
    at = page({"noise": "saltpepper:0.3", "seed": "4", "count": "3", "model": "mnist/ae-d2"})
    ok(at)
    assert at.radio(key="dn_kind").value == "saltpepper"
    assert at.slider(key="dn_level_saltpepper").value == 0.3
    assert at.selectbox(key="model").value == "mnist/ae-d2"
    assert "corrupted (saltpepper:0.3)" in at.get("image")[0].captions[0]
    assert len(at.dataframe[0].value) == 3
    bad = page({"noise": "boiling:9"})                                   # a broken link falls back
    ok(bad)
    assert bad.query_params["noise"] == "gaussian:0.5"


def test_the_plain_ae_itself_and_the_sweep_selection(tiny_zoo):
    at = page({"model": "mnist/ae-d8"})
    ok(at)
    assert list(metrics(at)) == ["Corrupted", "Denoised by ae-d8"]
    assert any("is itself the plain AE" in c.value for c in at.caption)
    at.multiselect(key="dn_sweep").set_value(["mnist/unet-denoise", "mnist/vae-d2"]).run()
    ok(at)
    assert sweep_names(at) == [dn.NOISY, "ae-d8", "unet-denoise", "vae-d2"]


def test_a_segmenting_unet_gets_a_message_not_a_traceback(tiny_zoo):
    home = Path(os.environ["AECORE_HOME"])
    seg = build_model("unet", {"input_shape": [1, 28, 28], "base_channels": 4, "depth": 2, "latent_dim": 8,
                               "task": "segment"})
    save_model(seg, home / "models" / "seg", dataset="mnist")
    at = page({"model": "user:seg"})
    assert not at.exception
    assert at.selectbox(key="model").value == "user:seg"
    assert "segment" in at.info[0].value and not at.get("image")
    # and it is not offered in another model's sweep
    other = page()
    assert "user:seg" not in other.multiselect(key="dn_sweep").options


def test_own_image_draw_upload_and_refusals(tiny_zoo):
    at = page()
    ok(at)
    assert any("Draw a digit" in c.value for c in at.caption)          # the canvas renders, empty
    at.radio(key="own").set_value("upload").run()
    image = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(image).line((32, 5, 32, 43), fill="black", width=6)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    at.file_uploader(key="dn_upload").set_value(("seven.jpg", buffer.getvalue(), "image/jpeg")).run()
    ok(at)
    assert any("Converted for the model: JPEG 64×48" in c.value for c in at.caption)
    assert len(at.get("image")) == 2 and len(at.metric) == 6
    assert at.get("image")[1].captions[0].startswith("Left to right: clean · corrupted (gaussian:0.5)")
    at.file_uploader(key="dn_upload").set_value(("empty.png", b"", "image/png")).run()
    assert not at.exception
    assert at.error and "the file is empty" in at.error[0].value
    from tests.test_lab_explore import png_declaring
    at.file_uploader(key="dn_upload").set_value(("bomb.png", png_declaring(60_000, 60_000), "image/png")).run()
    assert not at.exception
    assert "megapixels" in at.error[0].value and len(at.get("image")) == 1
