"""Units page (AppTest, tiny zoo): one unit's dashboard, its deep link, jumping to a look-alike unit."""

import json

import numpy as np
import pytest

from tests.helpers import arr, open_and_select, open_app, save_fashion_model


def open_page(select: str | None = None, **query):
    return open_and_select("units.py", select, query, timeout=90)


def metric(at, label: str):
    return next(m for m in at.metric if m.label.startswith(label))


def codes(model_id: str) -> np.ndarray:
    from aecore.data import load_dataset
    from aecore.maps import codes_of
    from aecore.store import load_pretrained

    return codes_of(load_pretrained(model_id, device="cpu").model, load_dataset("mnist", "test")).numpy()


def test_l1_unit_dashboard_matches_the_codes(tiny_zoo):
    at = open_page(None, model="mnist/sparse-ae-l1", unit="3")
    h = codes("mnist/sparse-ae-l1")[:, 3]
    assert at.slider(key="unit").value == 3
    assert metric(at, "Firing rate").value == f"{100 * (h > 0).mean():.1f} %"
    assert metric(at, "Strongest activation").value == f"{h.max():.3f}"
    images = at.get("image")
    assert "16 test images on which unit 3 is most active" in images[0].captions[0]
    assert "Encoder filter" in images[1].captions[0] and "Decoder atom" in images[2].captions[0]
    assert "most similar first" in images[3].captions[0]
    hist = at.get("plotly_chart")[0]
    bars = json.loads(hist.proto.spec)["data"][0]
    assert int(arr(bars["y"]).sum()) == int((h > 0).sum())
    assert any("changes the test MSE per pixel" in m.value for m in at.markdown)
    assert not at.caption or not any("KL sparsity" in c.value for c in at.caption)


def test_unit_is_in_the_link_and_a_similar_unit_is_one_click_away(tiny_zoo):
    at = open_page("mnist/sparse-ae-l1")
    assert at.slider(key="unit").value == 0 and at.query_params["unit"] == "0"
    target = next(b for b in at.button if b.label.startswith("Go to unit"))
    other = int(target.label.rsplit(" ", 1)[1])
    target.click().run()
    assert not at.exception and at.slider(key="unit").value == other
    assert at.query_params["unit"] == str(other)
    at.slider(key="unit").set_value(31).run()
    assert not at.exception and "unit 31 is most active" in at.get("image")[0].captions[0]


def test_kl_unit_says_what_kl_sparsity_is(tiny_zoo):
    at = open_page("mnist/sparse-ae-kl")
    assert metric(at, "Mean activation").delta == "target p = 0.05"
    assert any("mean** activation over the images to be p = 0.05" in c.value for c in at.caption)


@pytest.mark.parametrize("model", ["mnist/ae-d8", "mnist/rank-ordered-ae", "mnist/vae-d2"])
def test_other_flat_codes_get_a_dashboard(tiny_zoo, model):
    at = open_page(model)
    assert len(at.get("plotly_chart")) == 1 and len(at.get("image")) >= 3


def test_deep_link_out_of_range_is_clamped(tiny_zoo):
    at = open_page(None, model="mnist/sparse-ae-l1", unit="999")
    assert at.slider(key="unit").value == 31


def test_unet_gets_no_ablation(tiny_zoo):
    at = open_page("mnist/unet-denoise")
    assert any("No ablation" in c.value and "skip connections" in c.value for c in at.caption)


def test_only_datasets_with_a_model_are_offered(tiny_zoo):
    at = open_app("units.py")
    assert "digits" not in at.selectbox(key="dataset").options        # no model was trained on it
    ref = save_fashion_model()
    at = open_app("units.py", {"dataset": "fashion-mnist"})
    assert not at.exception and at.selectbox(key="model").value == ref


