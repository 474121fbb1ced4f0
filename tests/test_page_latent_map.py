"""The Latent map page through AppTest, on the tiny zoo: projections, 3-D, recolouring, the selected
image's neighbours, t-SNE in the background, own images and refusals."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import torch
import pytest
from streamlit.testing.v1 import AppTest

from aecore.data import load_dataset
from aecore.lab import latent as lt
from aecore.store import load_pretrained
from aecore.maps import codes_of
from tests.helpers import arr, ok, open_app, png_of_a_digit


def page(query: dict | None = None) -> AppTest:
    """The page on the tiny zoo's 2-D AE unless the query names a model (which one a fresh visitor
    gets is the catalog's showcase choice, not this page's)."""
    return open_app("latent_map.py", {"model": "mnist/ae-d2", **(query or {})}, timeout=180)


def spec(at: AppTest) -> dict:
    charts = [c for c in at.get("plotly_chart") if "lm_chart" in str(c.proto.id)]
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def traces(at: AppTest) -> list[dict]:
    return spec(at)["data"]


def map_points(at: AppTest) -> dict[int, np.ndarray]:
    """test index -> map position, over the class/value traces (not the ring or the star)."""
    out = {}
    for t in traces(at):
        if t.get("name") in ("selected", "your image"):
            continue
        axes = [arr(t[a]) for a in ("x", "y", "z") if a in t]
        for row, i in enumerate(arr(t["customdata"])):
            out[int(i)] = np.array([a[row] for a in axes])
    return out


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def tiny_codes(tiny_zoo, model_id: str) -> np.ndarray:
    model = load_pretrained(model_id, root=tiny_zoo, device="cpu").model
    return codes_of(model, load_dataset("mnist", "test")).numpy()


def assert_nearest(listed: str, codes: np.ndarray, query: np.ndarray, k: int, *, exclude: int | None = None) -> None:
    """The caption's image numbers are k nearest codes by cosine distance, closest first. Checked by
    distance, not by number: a 2-D code space holds near-ties that a last bit of the codes may reorder."""
    shown = [int(i) for i in re.findall(r"#(\d+) \(", listed)]
    assert len(shown) == len(set(shown)) == k and exclude not in shown
    unit = codes.astype(np.float64) / np.linalg.norm(codes.astype(np.float64), axis=1, keepdims=True)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    dist = 1.0 - unit @ (q / np.linalg.norm(q))
    if exclude is not None:
        dist[exclude] = np.inf
    mine, best = dist[shown], np.sort(dist)[:k]
    assert np.all(np.diff(mine) >= -1e-9) and np.allclose(mine, best, rtol=0, atol=1e-9), (shown, mine, best)
    printed = [float(v) for v in re.findall(r"#\d+ \([^)]*, ([0-9.]+)\)", listed)]
    np.testing.assert_allclose(printed, mine, rtol=0, atol=6e-4)                  # as printed, 3 decimals


def test_default_map_pca_of_every_test_image_coloured_by_class(tiny_zoo):
    at = page()
    ok(at)
    assert at.selectbox(key="model").value == "mnist/ae-d2" and at.radio(key="lm_method").value == "pca"
    # (the tiny zoo's maps.npz hold PCA only: a model without a UMAP map opens on PCA)
    data = traces(at)
    classes = [t["name"] for t in data if t["name"] not in ("selected",)]
    assert classes == [str(c) for c in range(10)] and data[-1]["name"] == "selected"
    points = map_points(at)
    assert len(points) == 10_000
    # a 2-D code is its own PCA map; the tiny zoo's maps.npz (500 points) is not this split, and says so
    codes = tiny_codes(tiny_zoo, "mnist/ae-d2")
    np.testing.assert_allclose(points[123], codes[123], rtol=1e-5)
    assert "computed here" in captions(at) and "maps.npz has 500 points, this test split 10,000" in captions(at)
    # the selected image (index 0) with its reconstruction and 8 neighbours
    assert "Test image #0 (7)" in captions(at)
    images = at.get("image")
    assert len(images) >= 2
    assert len(at.get("download_button")) >= 2                    # CSV + PNG strip


def test_a_model_without_a_stored_umap_map_has_umap_compiled_meanwhile(tiny_zoo, monkeypatch):
    calls = []
    monkeypatch.setattr(lt, "start_umap_warmup", lambda **kw: calls.append(kw) or True)
    ok(page())                                 # the tiny zoo's maps.npz hold PCA only
    assert calls == [{}]


def test_switch_method_dimensions_and_recolour(tiny_zoo):
    at = page()
    at.selectbox(key="model").set_value("mnist/ae-d8").run()
    at.radio(key="lm_dims").set_value(3).run()
    ok(at)
    data = traces(at)
    assert data[0]["type"] == "scatter3d" and "z" in data[0]
    points = map_points(at)
    codes = tiny_codes(tiny_zoo, "mnist/ae-d8")
    expected = lt.fit_projection(codes, "pca", 3).coords
    np.testing.assert_allclose(points[42], expected[42], rtol=1e-4, atol=1e-4)
    # recolour by a code unit: one trace whose colours are that unit's values
    at.selectbox(key="lm_color").set_value("unit").run()
    at.number_input(key="lm_unit").set_value(5).run()
    ok(at)
    t = traces(at)[0]
    np.testing.assert_allclose(arr(t["marker"]["color"]), codes[:, 5], rtol=1e-5)
    # recolour by reconstruction error: the per-image MSE of every test image
    at.selectbox(key="lm_color").set_value("error").run()
    ok(at)
    colours = arr(traces(at)[0]["marker"]["color"])
    model = load_pretrained("mnist/ae-d8", root=tiny_zoo, device="cpu").model
    np.testing.assert_allclose(colours, lt.recon_errors(model, load_dataset("mnist", "test")), rtol=1e-5)
    assert "per-image MSE" in captions(at)
    # the code's own axes are offered only when the code fits the map
    assert "code" not in at.radio(key="lm_method").options


def test_code_axes_and_link_state(tiny_zoo):
    at = page({"lm_method": "code", "lm_dims": "2", "lm_index": "77"})
    ok(at)
    assert at.radio(key="lm_method").value == "code"
    assert "Test image #77" in captions(at)
    ring = next(t for t in traces(at) if t["name"] == "selected")
    assert arr(ring["customdata"]).tolist() == [77]
    assert at.query_params["lm_index"] in ("77", ["77"])
    # a URL with nonsense falls back to defaults instead of failing
    at = page({"lm_method": "mds", "lm_dims": "7", "lm_index": "999999", "lm_unit": "-3"})
    ok(at)
    assert at.radio(key="lm_method").value == "pca" and at.radio(key="lm_dims").value == 2
    assert at.number_input(key="lm_index").value == 9_999


def test_selected_image_neighbours_follow_index_k_and_distance(tiny_zoo):
    at = page()
    at.number_input(key="lm_index").set_value(5).run()
    at.slider(key="lm_k").set_value(4).run()
    at.radio(key="lm_metric").set_value("cosine").run()
    ok(at)
    codes = tiny_codes(tiny_zoo, "mnist/ae-d2")
    listed = next(c.value for c in at.caption if "nearest test images" in c.value)
    assert_nearest(listed, codes, codes[5], 4, exclude=5)
    assert "Its 4 nearest test images" in captions(at) and "cosine distance" in captions(at)


def test_tsne_runs_in_the_background_with_the_pca_map_meanwhile(tiny_zoo):
    at = page({"lm_method": "tsne", "lm_tsne_n": "500"})        # straight from a link: one t-SNE job
    ok(at)
    assert at.radio(key="lm_method").value == "tsne" and at.slider(key="lm_tsne_n").value == 500
    version_jobs = [k for k in list(lt.JOBS._jobs) if k[3] == "tsne" and k[6] == 500]
    assert version_jobs
    job = lt.JOBS.get(version_jobs[-1])
    if not job.future.done():                          # usually: the map shown meanwhile is PCA's, all points
        assert any("in the background" in i.value for i in at.info)
        assert len(map_points(at)) == 10_000
    job.future.result(120)
    at.run()
    ok(at)
    points = map_points(at)
    assert len(points) == 500
    assert "seeded random subset of 500 of the 10,000" in captions(at)
    np.testing.assert_array_equal(sorted(points), lt.subsample(10_000, 500, 0))


def test_own_image_is_placed_on_the_map_and_bad_files_refused(tiny_zoo):
    at = page()
    at.file_uploader(key="lm_upload").set_value(("digit.png", png_of_a_digit(), "image/png")).run()
    ok(at)
    star = next(t for t in traces(at) if t["name"] == "your image")
    assert "placed with the fitted PCA projection" in captions(at) or "at its own code" in captions(at)
    # a 2-D code is its own map: the star sits at the image's code
    from aecore.lab.inputs import image_from_upload

    model = load_pretrained("mnist/ae-d2", root=tiny_zoo, device="cpu").model
    x, _ = image_from_upload(png_of_a_digit(), (1, 28, 28))
    with torch.no_grad():
        code = model.encode(x).numpy()[0]
    np.testing.assert_allclose([arr(star["x"])[0], arr(star["y"])[0]], code, rtol=1e-4, atol=1e-5)
    at.file_uploader(key="lm_upload").set_value(("photo.png", b"\x89PNG but not really", "image/png")).run()
    assert not at.exception
    assert any("Cannot use this image" in e.value for e in at.error)
    assert not any(t["name"] == "your image" for t in traces(at))


# --- issue 17: what a viewer sees ---------------------------------------------------------------------
def test_map_spans_the_main_column_with_titled_axes(tiny_zoo):
    at = page()
    ok(at)
    layout = spec(at)["layout"]
    assert 600 <= layout["height"] <= 700
    # in no column: the chart gets the main column's full width
    assert at.columns and not any("lm_chart" in str(c.proto.id) for col in at.columns for c in col.get("plotly_chart"))
    assert "width" not in layout                                       # the chart stretches to the column
    # a 2-D code is its own PCA map: the axes are its units
    assert (layout["xaxis"]["title"]["text"], layout["yaxis"]["title"]["text"]) == ("code unit 0", "code unit 1")
    at.selectbox(key="model").set_value("mnist/ae-d8").run()
    at.radio(key="lm_dims").set_value(3).run()
    ok(at)
    scene = spec(at)["layout"]["scene"]
    assert [scene[a]["title"]["text"] for a in ("xaxis", "yaxis", "zaxis")] == ["PC 1", "PC 2", "PC 3"]
    assert scene["aspectmode"] == "cube"
    points = np.array(list(map_points(at).values()))
    for i, a in enumerate(("xaxis", "yaxis", "zaxis")):                 # every point inside the view
        lo, hi = scene[a]["range"]
        assert lo < points[:, i].min() and points[:, i].max() < hi


def test_error_colours_span_the_2nd_to_98th_percentile(tiny_zoo):
    at = page({"model": "mnist/ae-d8", "lm_color": "error"})
    ok(at)
    t = traces(at)[0]
    errors = arr(t["marker"]["color"])
    assert t["marker"]["cmin"] == pytest.approx(np.percentile(errors, 2), rel=1e-4)
    assert t["marker"]["cmax"] == pytest.approx(np.percentile(errors, 98), rel=1e-4)
    assert t["marker"]["cmax"] < errors.max()
    assert "MSE (colours: 2nd to 98th percentile)" == t["marker"]["colorbar"]["title"]["text"]
    assert "2nd to 98th percentile" in captions(at)


def test_a_box_selection_is_dropped_when_the_projection_changes(tiny_zoo):
    at = page({"model": "mnist/ae-d8"})
    ok(at)
    view = at.session_state["lm_view"]
    at.session_state["lm_picked"] = {"view": view, "points": [3, 1, 4, 15, 9]}     # as the chart's callback stores it
    at.run()
    ok(at)
    assert any(h.value == "5 points selected" for h in at.subheader)
    assert at.session_state["lm_view"] == view                        # same map, same selection
    at.radio(key="lm_dims").set_value(3).run()                         # another projection: the box means nothing
    ok(at)
    assert at.session_state["lm_view"] != view
    assert not any("points selected" in h.value for h in at.subheader)
    assert "lm_picked" not in at.session_state
    at.radio(key="lm_dims").set_value(2).run()                         # and it does not come back
    assert not any("points selected" in h.value for h in at.subheader)
    # a selection stored under a map that is no longer shown is dropped as well
    at.session_state["lm_picked"] = {"view": "umap-2d-10000-000000000000", "points": [1, 2]}
    at.run()
    assert not any("points selected" in h.value for h in at.subheader)


@pytest.mark.parametrize("projector, least", [("0", 56), ("1", 140)])
def test_image_tiles_follow_the_projector_switch(tiny_zoo, media, projector, least):
    at = page({"projector": projector})
    view = at.session_state["lm_view"]
    at.session_state["lm_picked"] = {"view": view, "points": list(range(12))}
    at.run()
    ok(at)
    images = at.get("image")
    assert len(images) == 3                                # selected + reconstruction, neighbours, selection
    # a 28-px MNIST image: the pair is 2 tiles across, the neighbours row at least 1, the selection grid too
    pair_w, pair_h = media(images[0].value[0])
    assert pair_h >= least and pair_w >= 2 * least
    for image in images[1:]:
        width, height = media(image.value[0])
        assert height >= least
    assert all(not any(image.captions) for image in images)   # names go in captions beside, never under a tile
    if projector == "0":
        assert media(images[0].value[0])[1] < 140


# --- issue 18: thumbnails, search, tuned projections and their stages ---------------------------------------
def thumbs(at: AppTest):
    found = [c for c in at.get("component_instance") if c.proto.component_name.endswith("latent_thumbs")]
    return found[0] if found else None


def test_search_selects_an_image_and_highlights_a_class(tiny_zoo):
    at = page({"model": "mnist/ae-d8"})
    at.text_input(key="lm_find").set_value("#123").run()
    ok(at)
    assert at.number_input(key="lm_index").value == 123
    ring = next(t for t in traces(at) if t["name"] == "selected")
    assert arr(ring["customdata"]).tolist() == [123]
    assert "Found test image #123 (6): ringed on the map" in captions(at) and "Test image #123 (6)" in captions(at)
    at.number_input(key="lm_index").set_value(5).run()                # a later choice wins over the search
    ok(at)
    assert at.number_input(key="lm_index").value == 5
    at.text_input(key="lm_find").set_value("7").run()                 # a class: it stands out, the rest fades
    ok(at)
    opacity = {t["name"]: t["marker"]["opacity"] for t in traces(at) if t["name"] != "selected"}
    assert opacity["7"] == 0.9 and {v for k, v in opacity.items() if k != "7"} == {lt.FADED}
    assert "Highlighting class 7: 1,028 test images, 1,028 of them on this map" in captions(at)
    assert at.number_input(key="lm_index").value == 5
    at.text_input(key="lm_find").set_value("zebra").run()             # garbage: a clear message, never an error
    assert not at.exception and not at.error
    assert "Nothing matches 'zebra'" in at.warning[0].value and "#9,999" in at.warning[0].value
    at.text_input(key="lm_find").set_value("#12345").run()
    assert not at.exception and "There is no test image #12,345" in at.warning[0].value


def test_search_from_a_link(tiny_zoo):
    at = page({"lm_find": "#321"})
    ok(at)
    assert at.number_input(key="lm_index").value == 321 and at.text_input(key="lm_find").value == "#321"
    at = page({"lm_find": "x" * 5000})                                # a link may say anything
    assert not at.exception and len(at.text_input(key="lm_find").value) == lt.MAX_FIND


@pytest.fixture
def fake_fits(monkeypatch):
    """lt.fit_tuned (and the worker process's fit) replaced by a quick stand-in that records its arguments
    (UMAP on 10,000 codes takes a minute): each call returns the codes' first two axes, with three
    made-up stages when asked for."""
    calls = []

    def fit_tuned(codes, method, dims=2, *, seed=0, index=None, tuning=lt.Tuning(), stages=False, progress=None):
        calls.append(dict(method=method, dims=dims, seed=seed, tuning=tuning, stages=stages))
        index = np.arange(len(codes)) if index is None else index
        coords = np.asarray(codes[index, :dims], dtype=np.float32) * (1 + tuning.n_neighbors / 100)
        proj = lt.Projection(method, dims, coords, index, "computed", 0.01)
        shown = [(f"stage {k}", coords * (k + 1) / 3) for k in range(3)] if stages else []
        return lt.Settled(proj, shown, tuning.describe(method, len(index)))

    monkeypatch.setattr(lt, "fit_tuned", fit_tuned)
    monkeypatch.setattr(lt, "fit_in_worker", fit_tuned)          # the page's UMAP / t-SNE go to the worker
    return calls


def _finish(at: AppTest, calls: list, count: int) -> None:
    """Wait for the background job(s) the page submitted, then run it again: the map is the result."""
    for key in list(lt.JOBS._jobs):
        lt.JOBS.get(key).future.result(60)
    at.run()
    ok(at)
    assert len(calls) == count


def test_umap_sliders_reach_the_projection_and_stages_animate(tiny_zoo, fake_fits):
    at = page({"model": "mnist/ae-d8", "lm_method": "umap", "lm_seed": "77"})
    ok(at)
    assert at.select_slider(key="lm_nn").value == 15 and at.select_slider(key="lm_md").value == 0.1
    at.select_slider(key="lm_nn").set_value(50).run()
    at.select_slider(key="lm_md").set_value(0.5).run()
    _finish(at, fake_fits, 3)                          # one job per setting: (15, 0.1) at first, (50, 0.1), (50, 0.5)
    last = fake_fits[-1]
    assert (last["method"], last["seed"], last["tuning"].n_neighbors, last["tuning"].min_dist) == ("umap", 77, 50, 0.5)
    assert "UMAP (n_neighbors 50, min_dist 0.5) of the 8-D codes computed here" in captions(at)
    assert at.query_params["lm_nn"] in ("50", ["50"]) and at.query_params["lm_md"] in ("0.5", ["0.5"])
    points = map_points(at)
    codes = tiny_codes(tiny_zoo, "mnist/ae-d8")
    np.testing.assert_allclose(points[9], codes[9, :2] * 1.5, rtol=1e-5)
    assert "frames" not in spec(at) or not spec(at)["frames"]
    at.toggle(key="lm_stages").set_value(True).run()
    _finish(at, fake_fits, 4)
    assert fake_fits[-1]["stages"] is True
    figure = spec(at)
    assert [f["name"] for f in figure["frames"]] == ["stage 0", "stage 1", "stage 2"]
    assert figure["layout"]["sliders"][0]["active"] == 2
    assert figure["layout"]["updatemenus"][0]["buttons"][0]["label"] == "▶ Play"
    assert "▶ Play runs through 3 stages of the UMAP layout" in captions(at)
    again = page({"model": "mnist/ae-d8", "lm_method": "umap", "lm_seed": "77", "lm_nn": "50", "lm_md": "0.5"})
    ok(again)                                                          # a setting seen before: cached, no new run
    assert len(fake_fits) == 4 and "UMAP (n_neighbors 50, min_dist 0.5)" in captions(again)


def test_tsne_perplexity_slider_reaches_the_projection(tiny_zoo, fake_fits):
    at = page({"model": "mnist/ae-d8", "lm_method": "tsne", "lm_tsne_n": "500", "lm_seed": "78"})
    ok(at)
    at.select_slider(key="lm_perp").set_value(5).run()
    _finish(at, fake_fits, 2)                                          # perplexity 30 at first, then 5
    assert fake_fits[-1]["tuning"].perplexity == 5.0 and fake_fits[-1]["method"] == "tsne"
    assert "t-SNE (perplexity 5) of the 8-D codes" in captions(at) and len(map_points(at)) == 500
    keys = [k for k in lt.JOBS._jobs if k[3] == "tsne" and k[5] == 78]    # cached per model and parameters
    assert sorted(k[7:] for k in keys) == [(("tsne", 5.0), False), (("tsne", 30.0), False)]


def test_thumbnail_toggle_draws_the_component_instead_of_the_plotly_map(tiny_zoo):
    at = page({"model": "mnist/ae-d8"})
    at.toggle(key="lm_images").set_value(True).run()
    ok(at)
    view = thumbs(at)
    assert view is not None
    assert not [c for c in at.get("plotly_chart") if "lm_chart" in str(c.proto.id)]
    args = json.loads(view.proto.json_args)
    assert args["n_points"] == 10_000 and args["geom"]["n"] == 10_000 and args["geom"]["cols"] == 100
    assert args["selected"] == 0 and args["emphasis"] == -1 and args["size"] == 16 and args["classes"][7] == "7"
    sent = {s.key: s.bytes for s in view.proto.special_args}
    assert {"atlas", "xy", "index", "labels", "colours"} <= set(sent) and sent["atlas"][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(sent["xy"]) == 10_000 * 2 * 4 and len(sent["index"]) == 10_000 * 4
    assert "10,000 thumbnails cut from one 2,800 × 2,800 px picture" in captions(at)
    assert at.query_params["lm_images"] in ("1", ["1"])
    # a search and a recolouring reach the view; the image size slider too
    at.text_input(key="lm_find").set_value("3").run()
    at.selectbox(key="lm_color").set_value("error").run()
    at.select_slider(key="lm_size").set_value(32).run()
    ok(at)
    args = json.loads(thumbs(at).proto.json_args)
    assert args["emphasis"] == 3 and args["value_name"] == "MSE" and args["size"] == 32 and args["legend"] == []
    assert "values" in {s.key for s in thumbs(at).proto.special_args}
    # 3-D: no thumbnails, the plotly map (the toggle waits, greyed out)
    at.radio(key="lm_dims").set_value(3).run()
    ok(at)
    assert thumbs(at) is None and at.toggle(key="lm_images").disabled
    assert spec(at)["data"][0]["type"] == "scatter3d"


# --- review: the own image in the map's fragment, the bounded queue of maps ------------------------------------
def map_fragment_run(at: AppTest) -> AppTest:
    """Run only the map's fragment, as the browser does after a change of a widget in it (AppTest itself
    reruns the whole page): the elements outside it are not drawn again, so they are not in the tree."""
    import functools

    from streamlit.testing.v1 import local_script_runner

    def names(fn) -> set[str]:
        return {getattr(c.cell_contents, "__name__", "") for c in (fn.__closure__ or ()) if c.cell_contents}

    ids = [fid for fid, fn in at._fragment_storage._fragments.items() if "_map_view" in names(fn)]
    assert len(ids) == 1
    original = local_script_runner.RerunData
    local_script_runner.RerunData = functools.partial(original, fragment_id_queue=ids)
    try:
        return at.run()
    finally:
        local_script_runner.RerunData = original


def test_own_image_neighbours_follow_k_and_distance_in_a_map_only_rerun(tiny_zoo):
    at = page()
    at.file_uploader(key="lm_upload").set_value(("digit.png", png_of_a_digit(), "image/png")).run()
    ok(at)
    assert any("Your image, on the map" in c.value for c in at.caption)
    at.radio(key="lm_metric").set_value("cosine")
    at.slider(key="lm_k").set_value(3)
    map_fragment_run(at)
    ok(at)
    assert not at.get("selectbox")                                   # the sidebar was not drawn again: a fragment run
    texts = [c.value for c in at.caption]
    mine = texts.index(next(t for t in texts if t.startswith("Your image, on the map")))
    listed = texts[mine + 1]                                         # its neighbours, in the caption beside it
    assert listed.startswith("Its 3 nearest test images") and "cosine distance" in listed
    from aecore.lab.inputs import image_from_upload

    model = load_pretrained("mnist/ae-d2", root=tiny_zoo, device="cpu").model
    x, _ = image_from_upload(png_of_a_digit(), (1, 28, 28))
    with torch.no_grad():
        code = model.encode(x).numpy()
    assert_nearest(listed, tiny_codes(tiny_zoo, "mnist/ae-d2"), code, 3)


@pytest.fixture
def gated_fits(monkeypatch):
    """A fresh queue of maps (JOBS) whose fits wait for `gate` (and fail when `fail` holds an exception)."""
    import threading

    state = dict(gate=threading.Event(), calls=[], fail=None, jobs=lt.ProjectionJobs(max_waiting=8, retry_after=60))

    def fit(codes, method, dims=2, *, seed=0, index=None, tuning=lt.Tuning(), stages=False, progress=None):
        state["calls"].append(seed)
        state["gate"].wait(30)
        if state["fail"] is not None:
            raise state["fail"]
        index = np.arange(len(codes)) if index is None else index
        return lt.Settled(lt.Projection(method, dims, np.asarray(codes[index, :dims], np.float32), index, "computed"))

    monkeypatch.setattr(lt, "fit_in_worker", fit)
    monkeypatch.setattr(lt, "JOBS", state["jobs"])
    yield state
    state["gate"].set()


def test_one_session_queues_one_map_at_a_time(tiny_zoo, gated_fits):
    jobs = gated_fits["jobs"]
    at = page({"model": "mnist/ae-d8", "lm_method": "tsne", "lm_tsne_n": "500", "lm_seed": "1"})
    ok(at)
    for _ in range(500):                                             # seed 1's map has started (it runs on)
        if any(j.future.running() for j in jobs._jobs.values()):
            break
        time.sleep(0.01)
    for seed in (2, 3, 4, 5):                                        # '+' held on the seed
        at.number_input(key="lm_seed").set_value(seed).run()
        ok(at)
    running = [j for j in jobs._jobs.values() if j.future.running()]
    assert len(running) == 1 and jobs.waiting() == 1                 # seed 1 runs, seed 5 waits; 2 to 4 cancelled
    assert sorted(k[5] for k in jobs._jobs) == [1, 5]
    assert any("in the background" in i.value for i in at.info)
    gated_fits["gate"].set()
    for job in list(jobs._jobs.values()):
        job.future.result(30)
    assert gated_fits["calls"] == [1, 5]
    at.run()
    ok(at)
    assert len(map_points(at)) == 500


def test_a_full_queue_says_so_and_shows_the_meanwhile_map(tiny_zoo, gated_fits, monkeypatch):
    monkeypatch.setattr(gated_fits["jobs"], "max_waiting", 0)        # every slot taken by other sessions
    at = page({"model": "mnist/ae-d8", "lm_method": "tsne", "lm_tsne_n": "500"})
    ok(at)
    busy = [w.value for w in at.warning]
    assert busy and "The t-SNE map is not computed: the server is busy with 0 maps" in busy[0]
    assert "try again in a moment" in busy[0] and "PCA map of the same codes is shown meanwhile" in busy[0]
    assert len(map_points(at)) == 10_000 and not gated_fits["calls"]


def test_a_failed_map_is_shown_and_not_recomputed_on_every_rerun(tiny_zoo, gated_fits):
    from aecore.lab.projection_worker import ProjectionError

    gated_fits["fail"] = ProjectionError("the t-SNE map took longer than 600 s, the projection process's time limit")
    gated_fits["gate"].set()
    at = page({"model": "mnist/ae-d8", "lm_method": "tsne", "lm_tsne_n": "500"})
    for job in list(gated_fits["jobs"]._jobs.values()):
        with pytest.raises(ProjectionError):
            job.future.result(30)
    for _ in range(3):
        at.run()
        assert not at.exception
        shown = " ".join(e.value for e in at.error)
        assert "The t-SNE map could not be computed: the t-SNE map took longer than 600 s" in shown
        assert "This map can be asked for again in" in shown
    assert len(gated_fits["calls"]) == 1
