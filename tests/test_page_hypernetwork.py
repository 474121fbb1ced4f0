"""Hypernetwork page (AppTest, tiny zoo): counts, embedding, generated weights beside the twin, explorer."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import open_and_select, save_fashion_model


def open_page(select: str | None = None, **query) -> AppTest:
    """Open the page (query = the URL's parameters), then pick `select` in the sidebar."""
    return open_and_select("hypernetwork.py", select, query, timeout=60)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label))


def own_mse(model_id: str) -> float:
    """The model's own MSE per pixel on the explorer's 8 images, computed here."""
    from aecore.data import load_dataset
    from aecore.store import load_pretrained

    model = load_pretrained(model_id, device="cpu").model
    x = load_dataset("mnist", "test").as_float(slice(0, 8))
    return float((model.reconstruct(x) - x).pow(2).mean())


def test_only_hypernetwork_models_are_offered(tiny_zoo):
    save_fashion_model()                    # fashion-mnist then has a model, but no hypernetwork
    at = open_page()
    assert at.selectbox(key="model").options == ["hyper-ae", "hyper-semi-100"]
    at.selectbox(key="dataset").set_value("fashion-mnist").run()
    assert not at.exception and any("No model for fashion-mnist" in i.value for i in at.info)


def test_hyper_ae_counts_embedding_and_twin(tiny_zoo):
    from aecore.store import load_pretrained

    at = open_page("mnist/hyper-ae")
    model = load_pretrained("mnist/hyper-ae", device="cpu").model
    assert metric(at, "Hypernetwork (trained)") == f"{model.num_parameters():,}"
    assert metric(at, "Primary weights (generated)") == f"{model.primary_parameter_count():,}"
    assert metric(at, "Vanilla twin (trained)") == f"{model.primary_parameter_count():,}"
    assert not at.info                                                      # the twin was found
    captions = [c for image in at.get("image") for c in image.captions]
    for who in ("generated", "vanilla twin"):                              # side by side
        assert f"{who}: encoder.0.weight [32, 784]" in captions
        assert f"{who}: decoder.1.weight [784, 32]" in captions
    charts = len(at.get("plotly_chart"))
    assert charts >= 7        # counts, embedding bar, heat map, 2 x 2 middle-layer heat maps
    at.slider(key="chunk").set_value(5).run()
    assert not at.exception and at.query_params["chunk"] == "5"
    at.selectbox(key="tensor").set_value("encoder.1.weight").run()        # one chunk: no chunk slider
    assert not at.exception and not [s for s in at.slider if s.key == "chunk"]


def test_explorer_regenerates_weights_live(tiny_zoo):
    at = open_page("mnist/hyper-ae")
    assert float(metric(at, "MSE per pixel")) == pytest.approx(own_mse("mnist/hyper-ae"), abs=1e-5)   # t = 0
    assert metric(at, "Distance from E") == "0 %"
    at.slider(key="t").set_value(1.0).run()
    assert not at.exception
    assert float(metric(at, "MSE per pixel")) > own_mse("mnist/hyper-ae")
    assert metric(at, "Distance from E") != "0 %"
    assert any("regenerated weights" in c for image in at.get("image") for c in image.captions)
    at.segmented_control(key="mode").set_value("direction").run()
    at.slider(key="t").set_value(-1.5).run()
    assert not at.exception and metric(at, "Distance from E") == "150 %"
    assert at.slider(key="t").min == -2.0 and at.slider(key="t").max == 2.0
    at.number_input(key="seed").set_value(7).run()
    assert not at.exception and at.query_params["seed"] == "7"


def test_explorer_state_comes_from_the_url(tiny_zoo):
    at = open_page(None, model="mnist/hyper-ae", mode="interpolate", t="5.0")   # out of range: clamped
    assert at.slider(key="t").value == 1.0
    at = open_page(None, model="mnist/hyper-ae", mode="sideways", seed="-5", t="x")   # nonsense: defaults
    assert at.segmented_control(key="mode").value == "interpolate"
    assert at.number_input(key="seed").value == 0 and at.slider(key="t").value == 0.0


def test_hyper_semi_has_no_mlp_twin(tiny_zoo):
    at = open_page("mnist/hyper-semi-100")
    assert any("no like-for-like twin" in i.value for i in at.info)
    assert metric(at, "Other trained parameters") != "0"
    captions = [c for image in at.get("image") for c in image.captions]
    assert "generated: encoder.conv.0.weight [4, 1, 3, 3]" in captions
    assert float(metric(at, "MSE per pixel")) == pytest.approx(own_mse("mnist/hyper-semi-100"), abs=1e-5)
    at.slider(key="t").set_value(0.5).run()
    assert not at.exception and float(metric(at, "MSE per pixel")) != pytest.approx(own_mse("mnist/hyper-semi-100"))


def test_missing_twin_is_named(tiny_zoo_root, tmp_path, monkeypatch):
    """A zoo without hyper-ae-vanilla: the page says so instead of comparing."""
    import shutil

    from aecore.store import write_manifest

    root = tmp_path / "pretrained"
    shutil.copytree(tiny_zoo_root / "mnist" / "hyper-ae", root / "mnist" / "hyper-ae")
    write_manifest(root)
    monkeypatch.setenv("AECORE_PRETRAINED", str(root))
    at = open_page("mnist/hyper-ae")
    assert any("No vanilla twin (`mnist/hyper-ae-vanilla`)" in i.value for i in at.info)
    assert not [c for image in at.get("image") for c in image.captions if c.startswith("vanilla twin")]
