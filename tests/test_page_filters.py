"""Filters page (AppTest, tiny zoo): filter grids for every kind of model, stacked-ae stage play-back."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import open_and_select, open_app


def open_page(select: str | None = None, **query) -> AppTest:
    """Open the page (query = the URL's parameters), then pick `select` in the sidebar."""
    return open_and_select("filters.py", select, query, timeout=60)


def captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


@pytest.mark.parametrize("model, grids", [
    ("mnist/ae-d8", ["64 of 64 (1×28×28 each)", "64 of 64 (1×28×28 each)"]),
    ("mnist/conv-ae-d8", ["4 of 4 (1×3×3 each)", "4 of 4 (1×3×3 each)"]),
    ("mnist/rank-ordered-ae", ["16 of 16 (1×28×28 each)"]),
    ("mnist/hyper-semi-100", ["4 of 4 (1×3×3 each)", "4 of 4 (1×3×3 each)"]),
    ("mnist/unet-denoise", ["4 of 4 (1×3×3 each)"]),          # skips: no single output layer to show
])
def test_filter_grids_per_family(tiny_zoo, model, grids):
    at = open_page(model)
    assert [c.split(", most active first")[0] for c in captions(at)] == grids
    assert len(at.get("download_button")) == len(grids)
    assert any("scaled on its own" in c.value for c in at.caption)
    assert any("Stage play-back is for `stacked-ae`" in c.value for c in at.caption)   # not a stacked AE


def test_a_ranked_code_shows_its_most_active_units_first(tiny_zoo):
    """The rank-ordered AE's paper lays its filters out by mean activation: the page's default for a ranked
    code, a toggle (in the URL) elsewhere when filters are one per code unit."""
    import numpy as np

    from aecore.lab.inside import most_active_first

    assert most_active_first(np.array([[0.0, 2.0, 1.0, 2.0], [0.0, 0.0, 1.0, 2.0]])).tolist() == [3, 1, 2, 0]
    at = open_page("mnist/rank-ordered-ae")
    assert at.toggle(key="by_activity").value is True
    assert "most active first (units " in captions(at)[0]
    at.toggle(key="by_activity").set_value(False).run()
    assert not at.exception and captions(at) == ["16 of 16 (1×28×28 each)"]
    assert at.query_params["by_activity"] == "0"
    assert open_page("mnist/ae-d8").get("toggle")[0].key != "by_activity"   # 64 hidden units, an 8-unit code


def test_slider_and_shared_scale_are_in_the_url(tiny_zoo):
    at = open_page("mnist/ae-d8")
    at.slider(key="n_filters").set_value(10).run()
    at.toggle(key="per_filter").set_value(False).run()
    assert not at.exception
    assert captions(at) == ["10 of 64 (1×28×28 each)"] * 2
    assert any("One shared scale" in c.value for c in at.caption)
    assert at.query_params["n_filters"] == "10" and at.query_params["per_filter"] == "0"
    # the link reopens the same view
    again = open_page(None, model="mnist/ae-d8", n_filters="10", per_filter="0")
    assert again.selectbox(key="model").value == "mnist/ae-d8"
    assert captions(again) == ["10 of 64 (1×28×28 each)"] * 2


def test_too_many_filters_from_the_url_falls_back(tiny_zoo):
    at = open_page(None, model="mnist/rank-ordered-ae", n_filters="999", by_activity="0")
    assert captions(at) == ["16 of 16 (1×28×28 each)"]


def test_stacked_ae_stage_play_back(tiny_zoo):
    at = open_page("mnist/stacked-ae")
    assert any("Tied weights" in i.value for i in at.info)
    assert at.select_slider(key="stage").options == ["layer1", "layer2", "finetune"]
    assert len(at.get("plotly_chart")) == 1                       # layer1's loss curve
    assert "First-layer filters after layer1" in captions(at)[-1]
    assert not at.metric                                          # no previous stage to compare with
    at.select_slider(key="stage").set_value("layer2").run()
    assert not at.exception
    assert at.metric[0].value == "0.0 %"                          # layer 1 frozen while layer 2 trains
    assert any("frozen" in m.value for m in at.markdown)
    at.select_slider(key="stage").set_value("finetune").run()
    assert float(at.metric[0].value.rstrip(" %")) > 0
    assert len(at.get("plotly_chart")) == 1 and len(at.get("download_button")) == 2


def test_a_dataset_without_models_is_not_offered(tiny_zoo):
    """digits has no model (nothing to show): the sidebar offers only datasets with a model."""
    at = open_app("filters.py")
    assert not at.exception
    assert at.selectbox(key="dataset").options == ["mnist"]


def test_a_model_switch_shows_the_new_models_default_count(tiny_zoo):
    """Issue 17: the count kept from a model with few filters (conv-ae-d8: 4 kernels) must not follow the
    visitor to a model with more (stacked-ae: 32 tied filters): each model opens at min(64, its filters),
    and a count the visitor chose on a model comes back with that model."""
    at = open_page("mnist/conv-ae-d8")
    assert at.slider(key="n_filters").value == 4 and at.slider(key="n_filters").max == 4
    at.selectbox(key="model").set_value("mnist/stacked-ae").run()
    assert not at.exception
    assert at.slider(key="n_filters").value == 32 and at.slider(key="n_filters").max == 32
    assert captions(at)[0] == "32 of 32 (1×28×28 each)"
    assert at.query_params["n_filters"] == "32"
    at.slider(key="n_filters").set_value(5).run()                       # the visitor's own count on this model
    at.selectbox(key="model").set_value("mnist/ae-d8").run()
    assert at.slider(key="n_filters").value == 64 and captions(at)[0] == "64 of 64 (1×28×28 each)"
    at.selectbox(key="model").set_value("mnist/stacked-ae").run()
    assert at.slider(key="n_filters").value == 5 and captions(at)[0] == "5 of 32 (1×28×28 each)"
    assert not at.exception


@pytest.mark.parametrize("projector, least", [("0", 56), ("1", 140)])
@pytest.mark.parametrize("model", ["mnist/ae-d8", "mnist/conv-ae-d8"])     # 28-px filters, 3x3 kernels
def test_filter_tiles_follow_the_projector_switch(tiny_zoo, media, model, projector, least):
    at = open_page(None, model=model, n_filters="1", projector=projector)
    images = at.get("image")
    assert images
    for image in images:                                  # one filter: the grid is one tile (+ a 1-px frame)
        width, height = media(image.value[0])
        assert height >= least and width == height
    if projector == "0":
        assert all(media(image.value[0])[1] < 140 for image in images)
