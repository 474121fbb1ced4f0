"""The VAE lab page through AppTest, on the tiny zoo: a non-VAE model gets a message; vae-d2 gets the
interpolation strip, prior samples, traversals and the manifold grid with the test codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest


from aecore.data import load_dataset
from aecore.lab import vae as vl
from aecore.store import load_pretrained
from aecore.maps import codes_of
from tests.helpers import arr, ok, open_app, png_of_a_digit

WIDE = 128          # a visitor's VAE with a latent wider than vl.MAX_DRAWN_ROWS


def page(query: dict | None = None) -> AppTest:
    return open_app("vae_lab.py", query, timeout=120)


def image_with(at: AppTest, text: str):
    return next(i for i in at.get("image") if any(text in (c or "") for c in i.captions))


def test_page_starts_on_a_vae(tiny_zoo):
    at = page()
    ok(at)
    assert at.selectbox(key="model").value == "mnist/vae-d2" and at.tabs


def test_a_model_without_a_prior_gets_a_message(tiny_zoo):
    at = page({"model": "mnist/ae-d8"})
    ok(at)
    assert at.selectbox(key="model").value == "mnist/ae-d8"
    message = " ".join(i.value for i in at.info)
    assert "ae-d8" in message and "no prior to sample from" in message and "vae-d2" in message
    assert not at.get("image") and not at.tabs


def test_vae_d2_shows_strip_samples_traversals_and_manifold(tiny_zoo):
    at = page({"model": "mnist/vae-d2"})
    ok(at)
    assert [t.label for t in at.tabs] == ["Interpolation", "Samples from the prior", "Traversals", "2-D manifold"]
    assert "slerp: decodings of 10 codes from #0 (left) to #1 (right)" in " ".join(
        c for i in at.get("image") for c in i.captions)
    assert "32 samples z ~ N(0, 1²·I) (seed 0)" in image_with(at, "samples z ~").captions[0]
    assert "Rows: z" in image_with(at, "one row per dimension").captions[0]
    assert "Decoded 15×15 grid" in image_with(at, "Decoded").captions[0]
    charts = {str(c.proto.id): json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    codes_chart = next(spec for cid, spec in charts.items() if "vl_codes" in cid)
    xs = {int(i): x for t in codes_chart["data"] for i, x in zip(arr(t["customdata"]), arr(t["x"]))}
    assert len(xs) == 10_000                                   # every test image's posterior mean
    model = load_pretrained("mnist/vae-d2", root=tiny_zoo, device="cpu").model
    mu = codes_of(model, load_dataset("mnist", "test")).numpy()
    np.testing.assert_allclose([xs[0], xs[9_999]], mu[[0, 9_999], 0], rtol=1e-5)
    assert len(at.get("download_button")) == 5                  # 4 PNGs + the posterior means CSV


def test_vae_lab_settings_change_the_pictures(tiny_zoo):
    at = page({"model": "mnist/vae-d2"})
    at.radio(key="vl_mode").set_value("lerp").run()
    at.slider(key="vl_steps").set_value(5).run()
    at.number_input(key="vl_b_index").set_value(7).run()
    ok(at)
    caption = image_with(at, "decodings of").captions[0]
    assert caption.startswith("lerp: decodings of 5 codes from #0 (left) to #7 (right)")
    at.number_input(key="vl_seed").set_value(3).run()
    at.slider(key="vl_count").set_value(8).run()
    at.slider(key="vl_temp").set_value(0.5).run()
    ok(at)
    assert "8 samples z ~ N(0, 0.5²·I) (seed 3)" in image_with(at, "samples z ~").captions[0]
    at.selectbox(key="vl_t_dim").set_value("1").run()
    ok(at)
    assert "Rows: z1 (" in image_with(at, "one row per dimension").captions[0]
    assert "Shown:" not in image_with(at, "one row per dimension").captions[0]
    at.radio(key="vl_spacing").set_value("even").run()
    at.slider(key="vl_grid_n").set_value(6).run()
    ok(at)
    assert "Decoded 6×6 grid, z₁ from -3.00 (left) to 3.00 (right)" in image_with(at, "Decoded").captions[0]
    assert at.query_params["vl_grid_n"] in ("6", ["6"])


def test_own_image_as_an_end_and_bad_inputs(tiny_zoo):
    at = page({"model": "mnist/vae-d2", "vl_a_src": "upload"})
    ok(at)
    assert any("Upload or draw an image" in i.value for i in at.info)
    at.file_uploader(key="vl_a_upload").set_value(("digit.png", png_of_a_digit(), "image/png")).run()
    ok(at)
    assert "from your image (left) to #1 (right)" in image_with(at, "decodings of").captions[0]
    at.file_uploader(key="vl_a_upload").set_value(("x.png", b"not an image", "image/png")).run()
    assert not at.exception and any("Cannot use this image" in e.value for e in at.error)


@pytest.fixture
def one_dead_dimension(monkeypatch):
    """vae-d2 with z0 carrying no information (KL 0) and z1 1.5 nats; every traversal grid drawn is recorded."""
    st.cache_data.clear()                                     # no KL cached from another test
    monkeypatch.setattr(vl, "kl_per_dim", lambda model, data, **kw: np.array([0.0, 1.5]))
    drawn = type("Drawn", (list,), {})()
    drawn.scales = []
    original = vl.traversal_grid

    def spy(images, dims, kl, **kw):
        drawn.append([vl.dim_label(j, kl) for j in dims])
        drawn.scales.append(kw["scale"])
        return original(images, dims, kl, **kw)

    monkeypatch.setattr(vl, "traversal_grid", spy)
    st.cache_resource.clear()                                 # no traversal picture shared from another test
    yield drawn
    st.cache_data.clear()
    st.cache_resource.clear()


def test_traversals_show_the_informative_dimensions_named_with_their_kl(tiny_zoo, one_dead_dimension):
    at = page({"model": "mnist/vae-d2"})
    ok(at)
    assert at.selectbox(key="vl_t_dim").value == "informative"
    assert one_dead_dimension[-1] == ["z1 · 1.50 nats"]          # the dead z0 is left out, the row says its KL
    caption = image_with(at, "one row per dimension").captions[0]
    assert "Rows: z1 (" in caption and "z0 (" not in caption
    assert f"mean KL above {vl.INFORMATIVE_KL:g} nats" in caption and "the other 1 carry no information" in caption
    kl_chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "vl_kl" in c.proto.id)
    bars = {t["name"]: t["x"] for t in kl_chart["data"]}
    assert bars == {f"informative (> {vl.INFORMATIVE_KL:g} nats)": ["z1"], "≈ no information": ["z0"]}
    assert "1 of 2 dimensions carry ≈ no information" in " ".join(c.value for c in at.caption)
    at.selectbox(key="vl_t_dim").set_value("all").run()           # the control to show them all
    ok(at)
    assert one_dead_dimension[-1] == ["z1 · 1.50 nats", "z0 · 0.00 nats"]
    assert "Shown: all 2 dimensions" in image_with(at, "one row per dimension").captions[0]
    assert at.query_params["vl_t_dim"] in ("all", ["all"])


def test_a_collapsed_posterior_shows_every_dimension(tiny_zoo, monkeypatch):
    st.cache_data.clear()
    monkeypatch.setattr(vl, "kl_per_dim", lambda model, data, **kw: np.zeros(2))
    try:
        at = page({"model": "mnist/vae-d2"})
        ok(at)
        assert any("No dimension of vae-d2 has a mean KL above" in i.value for i in at.info)
        assert "Rows: z0 (" in image_with(at, "one row per dimension").captions[0]
    finally:
        st.cache_data.clear()


def test_projector_mode_gives_big_tiles(tiny_zoo, one_dead_dimension):
    at = page({"model": "mnist/vae-d2"})
    ok(at)
    assert 28 * one_dead_dimension.scales[-1] == 56                # about 56 px tiles on a screen
    at = page({"model": "mnist/vae-d2", "projector": "1"})
    ok(at)
    assert 28 * one_dead_dimension.scales[-1] >= 140               # at least 140 px on a projector


@pytest.fixture(scope="module")
def wide_zoo_root(tmp_path_factory) -> Path:
    """A pretrained/ folder holding one VAE with a 128-d latent, trained for one epoch on 200 images."""
    from aecore.pipeline import initial_model, recipe_record, save_trained
    from aecore.store import write_manifest
    from aecore.train import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("wide")
    data = load_dataset("mnist", "test")
    model = initial_model("vae", {"hidden": [16], "latent_dim": WIDE, "input_shape": list(data.input_shape)}, seed=0)
    recipe = TrainConfig(epochs=1, batch_size=100, lr=2e-3)
    result = Trainer(model, data.subset(slice(0, 200)), config=recipe, device="cpu").fit()
    save_trained(model, root / "mnist" / f"vae-d{WIDE}", result=result, metrics={}, dataset="mnist",
                 classes=data.classes, recipe=recipe_record(recipe, val_fraction=0.0), notes="wide test VAE")
    write_manifest(root)
    return root


@pytest.fixture
def wide_vae(wide_zoo_root, monkeypatch, one_dead_dimension):
    """The wide VAE with every dimension informative, z127 the most (KL 0.5 + j/100); grids drawn are recorded."""
    monkeypatch.setenv("AECORE_PRETRAINED", str(wide_zoo_root))
    monkeypatch.setattr(vl, "kl_per_dim", lambda model, data, **kw: 0.5 + np.arange(WIDE) / 100)
    return one_dead_dimension


def test_traversals_of_a_wide_latent_draw_at_most_max_drawn_rows(wide_vae):
    cap = vl.MAX_DRAWN_ROWS
    at = page({"model": f"mnist/vae-d{WIDE}"})
    ok(at)
    most_used = [f"z{j} · {0.5 + j / 100:.2f} nats" for j in range(WIDE - 1, WIDE - 1 - cap, -1)]
    assert wide_vae[-1] == most_used                                  # 64 rows, the most informative first
    caption = image_with(at, "one row per dimension").captions[0]
    assert f"Shown: the {cap} most informative of the {WIDE} informative dimensions" in caption
    assert f"at most {cap} rows" in caption and f"z{WIDE - 1} (" in caption and f"z{WIDE - 1 - cap} (" not in caption
    at.selectbox(key="vl_t_dim").set_value("all").run()
    ok(at)
    assert wide_vae[-1] == most_used
    caption = image_with(at, "one row per dimension").captions[0]
    assert f"Shown: the {cap} most used of all {WIDE} dimensions" in caption and f"at most {cap} rows" in caption
    at.selectbox(key="vl_t_dim").set_value("3").run()                  # any other dimension, one at a time
    ok(at)
    assert wide_vae[-1] == ["z3 · 0.53 nats"]


def test_traversal_pictures_are_shared_read_only(tiny_zoo, one_dead_dimension, monkeypatch):
    """One picture for every session at these settings (st.cache_resource), which nobody can write to."""
    import pages.common as common

    shown = []
    original = common.st.image

    def spy(image, *args, **kwargs):
        shown.append(image)
        return original(image, *args, **kwargs)

    monkeypatch.setattr(common.st, "image", spy)
    for _ in range(2):
        ok(page({"model": "mnist/vae-d2"}))
    assert len(one_dead_dimension) == 1                                # drawn once, then shared
    pictures = [s for s in shown if isinstance(s, np.ndarray) and not s.flags.writeable]
    assert len(pictures) == 2 and pictures[0] is pictures[1]


def test_cached_figures_are_specs_left_unchanged_by_each_draw(tiny_zoo, monkeypatch):
    """The KL bars and the test codes are cached for every session as plotly dicts (`chart_spec`): a visitor's
    draw, projector on or off, lays out its own copy and never the shared one."""
    import plotly.utils

    import pages.common as common

    st.cache_resource.clear()
    passed = []
    original = common.chart

    def spy(fig, **kwargs):
        passed.append((kwargs.get("key"), fig, json.dumps(fig, cls=plotly.utils.PlotlyJSONEncoder, sort_keys=True)
                       if isinstance(fig, dict) else None))
        return original(fig, **kwargs)

    monkeypatch.setattr(common, "chart", spy)
    try:
        plain_run = page({"model": "mnist/vae-d2"})
        ok(plain_run)
        first = {key: (fig, frozen) for key, fig, frozen in passed if key in ("vl_kl", "vl_codes")}
        assert set(first) == {"vl_kl", "vl_codes"}
        assert all(isinstance(fig, dict) for fig, _ in first.values())     # not a plotly Figure every session shares
        passed.clear()
        projector_run = page({"model": "mnist/vae-d2", "projector": "1"})
        ok(projector_run)
        second = {key: fig for key, fig, _ in passed if key in first}
        for key, (fig, frozen) in first.items():
            assert second[key] is fig                                       # the same cached spec ...
            assert json.dumps(fig, cls=plotly.utils.PlotlyJSONEncoder, sort_keys=True) == frozen   # ... unchanged
        fonts = [{json.loads(c.proto.spec)["layout"].get("font", {}).get("size")
                  for c in run.get("plotly_chart") if "vl_kl" in c.proto.id or "vl_codes" in c.proto.id}
                 for run in (plain_run, projector_run)]
        assert fonts == [{None}, {common.PROJECTOR_CHART_FONT}]
    finally:
        st.cache_resource.clear()


@pytest.mark.parametrize("with_a_2d_vae", [False, True])
def test_a_wide_vae_points_to_the_models_that_declare_a_2d_latent(wide_zoo_root, tiny_zoo_root, tmp_path,
                                                                   monkeypatch, with_a_2d_vae):
    """The manifold tab of a VAE without a 2-D latent names the ones whose metrics declare a 2-D code, or
    says to train one when there is none."""
    import shutil

    from aecore.store import write_manifest

    root = tmp_path / "zoo"
    shutil.copytree(wide_zoo_root / "mnist" / f"vae-d{WIDE}", root / "mnist" / f"vae-d{WIDE}")
    if with_a_2d_vae:
        shutil.copytree(tiny_zoo_root / "mnist" / "vae-d2", root / "mnist" / "vae-d2")
    write_manifest(root)
    monkeypatch.setenv("AECORE_PRETRAINED", str(root))
    at = page({"model": f"mnist/vae-d{WIDE}"})
    ok(at)
    message = " ".join(i.value for i in at.info)
    assert "The manifold grid needs a 2-D latent space" in message
    if with_a_2d_vae:
        assert "Generative models for mnist with a 2-D latent:" in message and "vae-d2" in message
    else:
        assert "No generative model for mnist has one" in message and "vae-d2" not in message
