"""Sparsity page (AppTest, tiny zoo): sparsity measures, what KL sparsity is, the frontier with the selected
model on it, rank-ordered k-slider, contractive map."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import arr, open_and_select, open_app
from tests.test_lab_frontier import frontier_zoo


@pytest.fixture(scope="module")
def frontier_root(tiny_zoo_root, tmp_path_factory):
    return frontier_zoo(tiny_zoo_root, tmp_path_factory.mktemp("frontier"))[0]


@pytest.fixture
def with_frontier(frontier_root, monkeypatch):
    """The tiny zoo plus its mnist frontier (built once for this module)."""
    monkeypatch.setenv("AECORE_PRETRAINED", str(frontier_root))
    return frontier_root


def open_page(select: str | None = None, **query) -> AppTest:
    """Open the page (query = the URL's parameters), then pick `select` in the sidebar."""
    return open_and_select("sparsity.py", select, query, timeout=90)


def metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label.startswith(label))


def codes(model_id: str):
    from aecore.data import load_dataset
    from aecore.store import load_pretrained
    from aecore.maps import codes_of

    loaded = load_pretrained(model_id, device="cpu")
    return loaded.model, codes_of(loaded.model, load_dataset("mnist", "test"))


def test_l1_model_counts_exact_zeros_and_dead_units(tiny_zoo):
    at = open_page("mnist/sparse-ae-l1")
    _, h = codes("mnist/sparse-ae-l1")
    on = h > 0
    dead = int((~on.any(0)).sum())
    assert at.number_input(key="threshold").value == 0.0
    assert metric(at, "Dead units").value == f"{dead} of 32"
    assert metric(at, "Units off per image").value == f"{100 * (1 - on.float().mean()):.1f} %"
    assert len(at.get("plotly_chart")) == 3                 # histogram, population, lifetime; no frontier built
    assert any("No frontier has been built for mnist" in i.value for i in at.info)
    assert any("[Units page](units?dataset=mnist&model=mnist%2Fsparse-ae-l1)" in m.value for m in at.markdown)


def test_kl_model_uses_a_threshold_and_the_target_rate(tiny_zoo):
    at = open_page("mnist/sparse-ae-kl")
    assert at.number_input(key="threshold").value == 0.01
    mean = metric(at, "Mean activation (target p)")
    assert mean.delta == "p = 0.05"
    assert any("KL sparsity is a target mean, not zeros" in i.value and "p = 0.05" in i.value for i in at.info)
    _, h = codes("mnist/sparse-ae-kl")
    assert mean.value == f"{float(h.mean()):.3f}"
    before = metric(at, "Units off per image").value
    at.number_input(key="threshold").set_value(0.5).run()
    assert not at.exception and metric(at, "Units off per image").value != before
    assert metric(at, "Units off per image").value == f"{100 * float((h <= 0.5).float().mean()):.1f} %"
    at.selectbox(key="model").set_value("mnist/sparse-ae-l1").run()      # another model: its own default
    assert at.number_input(key="threshold").value == 0.0
    assert not any("KL sparsity" in i.value for i in at.info)


def test_dense_code_says_it_has_no_zero(tiny_zoo):
    at = open_page("mnist/ae-d8")
    assert any("no built-in zero" in c.value for c in at.caption)


def frontier_traces(at: AppTest) -> dict[str, dict]:
    chart = next(c for c in at.get("plotly_chart") if "Sparsity frontier" in c.proto.spec)
    return {t["name"]: t for t in json.loads(chart.proto.spec)["data"]}


def test_frontier_highlights_the_selected_shipped_model(with_frontier):
    at = open_page("mnist/sparse-ae-l1")
    assert len(at.get("plotly_chart")) == 4
    traces = frontier_traces(at)
    assert {"PCA, k components", "mnist/rank-ordered-ae: top-k ranked units R_k", "sparse-ae, penalty l1: sweep",
            "sparse-ae, penalty l1: shipped", "sparse-ae, penalty kl"} == set(traces)
    assert list(arr(traces["sparse-ae, penalty l1: shipped"]["marker"]["size"])) == [16]
    assert set(arr(traces["sparse-ae, penalty kl"]["marker"]["size"])) == {9}
    assert any("The selected model: drawn large" in c.value for c in at.caption)
    at.selectbox(key="model").set_value("mnist/rank-ordered-ae").run()     # its R_k curve is the one drawn large
    traces = frontier_traces(at)
    assert traces["mnist/rank-ordered-ae: top-k ranked units R_k"]["line"]["width"] == 4
    assert list(arr(traces["sparse-ae, penalty l1: shipped"]["marker"]["size"])) == [9]


def test_a_model_off_the_frontier_is_measured_now(with_frontier):
    at = open_page("mnist/ae-d8")
    star = frontier_traces(at)["ae-d8 (measured now)"]
    assert list(arr(star["x"])) == [8.0]                    # a dense 8-unit code: every image uses all 8
    from aecore.data import load_dataset
    from aecore.evaluate import per_image_mse
    model, _ = codes("mnist/ae-d8")
    x = load_dataset("mnist", "test").as_float()
    assert arr(star["y"])[0] == pytest.approx(float(per_image_mse(model.reconstruct(x), x).mean()), rel=1e-5)
    assert any("the star, measured now" in c.value for c in at.caption)
    at = open_page("mnist/unet-denoise")
    assert "unet-denoise (measured now)" not in frontier_traces(at)
    assert any("not on the chart" in c.value and "skip connections" in c.value for c in at.caption)


@pytest.mark.parametrize("model", ["mnist/unet-denoise", "mnist/hyper-semi-100", "mnist/conv-ae-d8"])
def test_any_model_gets_its_sparsity(tiny_zoo, model):
    at = open_page(model)
    assert len(at.get("plotly_chart")) == 3 and len(at.get("image")) == 0


def test_rank_ordered_k_slider_against_pca(tiny_zoo):
    at = open_page("mnist/rank-ordered-ae")
    assert at.slider(key="k").value == 8
    assert any("Rows: 8 test images" in c for image in at.get("image") for c in image.captions)
    assert len(at.get("plotly_chart")) == 4                 # + the error-against-k curves (no frontier built)
    at.slider(key="k").set_value(16).run()                  # all units: the model's own reconstruction
    assert not at.exception
    model, _ = codes("mnist/rank-ordered-ae")
    from aecore.data import load_dataset
    x = load_dataset("mnist", "test").as_float(slice(0, 8))
    own = float((model.reconstruct(x) - x).pow(2).mean())
    assert float(metric(at, "Rank-ordered, top 16 units").value) == pytest.approx(own, abs=1e-5)
    at.slider(key="k").set_value(0).run()
    assert not at.exception and metric(at, "PCA, 0 components")


def test_contractive_map_coloured_by_jacobian(tiny_zoo):
    at = open_page("mnist/contractive-ae")
    assert at.number_input(key="threshold").value == 0.01
    assert at.slider(key="jac_n").value == 1000
    assert any("1,000 of 10,000 test images (seeded subsample" in c.value for c in at.caption)
    at.slider(key="jac_n").set_value(300).run()
    assert not at.exception
    assert any("300 of 10,000 test images" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 4


def test_bad_url_values_fall_back(tiny_zoo):
    at = open_page(None, model="mnist/sparse-ae-l1", threshold="abc")
    assert at.number_input(key="threshold").value == 0.0
    at = open_page(None, model="mnist/sparse-ae-kl", threshold="-1")
    assert at.number_input(key="threshold").value == 0.0
    at = open_page(None, model="no/such-model")
    assert at.selectbox(key="model").value.startswith("mnist/sparse-ae")   # the page's default instead


def test_page_starts_on_a_sparse_model(tiny_zoo):
    at = open_app("sparsity.py")
    assert not at.exception and at.selectbox(key="model").value.startswith("mnist/sparse-ae")


def test_a_dataset_without_models_is_not_offered(tiny_zoo):
    """digits has no model (nothing to show): the sidebar offers only datasets with a model."""
    at = open_app("sparsity.py")
    assert not at.exception
    assert at.selectbox(key="dataset").options == ["mnist"]



# --- issue 17: offline, a dataset whose files are missing; tiles for the projector -----------------------
@pytest.fixture(scope="module")
def patches_root(tiny_zoo_root, tmp_path_factory):
    """The tiny zoo plus an (untrained) rank-ordered AE for cifar10-patches, a dataset with no bundled copy."""
    import shutil

    from aecore.models import build_model, get_model_class
    from aecore.store import save_model, write_manifest

    root = tmp_path_factory.mktemp("patches") / "pretrained"
    shutil.copytree(tiny_zoo_root, root)
    name = "rank-ordered-ae"
    model = build_model(name, get_model_class(name).small_config((3, 7, 7)).to_dict())
    save_model(model, root / "cifar10-patches" / name, dataset="cifar10-patches", metrics={"mse": 0.01},
               notes="tiny test model (untrained)")
    write_manifest(root)
    return root


def test_missing_data_offline_is_a_plain_text_message(patches_root, tmp_path, monkeypatch):
    """Offline the cifar10-patches files are missing: one message that shows the data folder's path as the
    very characters it holds (no markdown read into it), and no traceback."""
    from pages.common import plain

    monkeypatch.setenv("AECORE_PRETRAINED", str(patches_root))
    data = tmp_path / "my_data__dir" / "*x*" / "[a](b)"                # markdown would eat these
    monkeypatch.setenv("AECORE_DATA_DIR", str(data))
    at = open_app("sparsity.py", {"dataset": "cifar10-patches"}, timeout=90)
    assert not at.exception
    assert at.selectbox(key="dataset").options == ["mnist", "cifar10-patches"]
    assert at.selectbox(key="dataset").value == "cifar10-patches"
    assert len(at.error) == 1
    message = at.error[0].value
    assert plain(str(data / "cifar10")) in message and str(data) not in message
    assert "https\u200b://" in message                                                    # a URL, never a link
    assert not at.get("plotly_chart") and not at.get("image")


@pytest.mark.parametrize("projector, least", [("0", 56), ("1", 140)])
def test_anytime_tiles_follow_the_projector_switch(tiny_zoo, media, projector, least):
    at = open_page(None, model="mnist/rank-ordered-ae", projector=projector)
    width, height = media(at.get("image")[0].value[0])
    assert height >= 3 * least and width >= 8 * least               # 3 rows of 8 tiles
    if projector == "0":
        assert height < 3 * 140
