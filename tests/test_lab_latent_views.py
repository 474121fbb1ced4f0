"""aecore.lab.latent's map figure as a viewer sees it: axis titles named after the projection, a robust
colour range, 3-D views that hold every point, the colour bar clear of the legend, one name per map."""

from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest

from aecore.errors import ConfigError
from aecore.lab import atlas as at
from aecore.lab import latent as lt
from aecore.maps import Projection, fit_projection


def codes_and_labels(n: int = 120, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centres = rng.normal(scale=4.0, size=(3, d))
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def made_up(method: str, dims: int, coords: np.ndarray) -> Projection:
    """A map as UMAP or t-SNE would return it (no need to run them for a figure)."""
    return Projection(method, dims, coords.astype(np.float32), np.arange(len(coords)), "computed")


def titles(fig) -> list[str]:
    if fig.data[0].type == "scatter3d":
        scene = fig.layout.scene
        return [scene.xaxis.title.text, scene.yaxis.title.text, scene.zaxis.title.text]
    return [fig.layout.xaxis.title.text, fig.layout.yaxis.title.text]


@pytest.mark.parametrize("method, dims, expected", [
    ("pca", 2, ["PC 1", "PC 2"]), ("pca", 3, ["PC 1", "PC 2", "PC 3"]),
    ("umap", 2, ["UMAP 1", "UMAP 2"]), ("umap", 3, ["UMAP 1", "UMAP 2", "UMAP 3"]),
    ("tsne", 2, ["t-SNE 1", "t-SNE 2"]), ("tsne", 3, ["t-SNE 1", "t-SNE 2", "t-SNE 3"]),
])
def test_axes_are_titled_after_the_projection_in_2d_and_3d(method, dims, expected):
    codes, labels = codes_and_labels()
    proj = (fit_projection(codes, "pca", dims) if method == "pca"
            else made_up(method, dims, codes[:, :dims] * 0.5))
    fig = lt.map_figure(proj, labels, ["a", "b", "c"], highlight=[3], code_dim=codes.shape[1])
    assert titles(fig) == expected
    assert expected[0] in fig.data[0].hovertemplate                # hover names the same axes
    assert "x %{x" not in fig.data[0].hovertemplate


def test_a_code_that_is_its_own_map_has_code_unit_axes():
    codes, labels = codes_and_labels(d=2)
    fig = lt.map_figure(fit_projection(codes, "code", 2), labels, ["a", "b", "c"], code_dim=2)
    assert titles(fig) == ["code unit 0", "code unit 1"]
    # PCA of a 2-D code is the code itself: the axes say so, and the padded third axis is no unit
    fig = lt.map_figure(fit_projection(codes, "pca", 3), labels, ["a", "b", "c"], code_dim=2)
    assert titles(fig) == ["code unit 0", "code unit 1", "(none: a 2-D code)"]
    codes3, _ = codes_and_labels(d=3)
    fig = lt.map_figure(fit_projection(codes3, "code", 3), labels, ["a", "b", "c"], code_dim=3)
    assert titles(fig) == ["code unit 0", "code unit 1", "code unit 2"]
    assert lt.axis_titles("pca", 2, None) == ["PC 1", "PC 2"]       # no code size given: a PCA is PCs


def test_colour_by_values_uses_the_2nd_to_98th_percentile_not_the_outliers():
    codes, labels = codes_and_labels(n=200)
    rng = np.random.default_rng(1)
    values = rng.uniform(0.01, 0.02, size=200).astype(np.float32)
    values[7] = 5.0                                                # one image the model cannot reconstruct
    fig = lt.map_figure(fit_projection(codes, "pca", 2), labels, ["a", "b", "c"], values=values, value_name="MSE")
    marker = fig.data[0].marker
    assert marker.cmin == pytest.approx(np.percentile(values, 2), rel=1e-5)
    assert marker.cmax == pytest.approx(np.percentile(values, 98), rel=1e-5)
    assert marker.cmax < 0.021                                    # the outlier does not stretch the scale
    np.testing.assert_array_equal(marker.color, values)            # the points keep their true values (hover)
    assert "MSE" in marker.colorbar.title.text and "2nd to 98th percentile" in marker.colorbar.title.text
    assert [lt.ordinal(p) for p in (1, 2, 3, 4, 11, 12, 13, 21, 98, 2.5)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "98th", "2.5th"]


def test_robust_range_edge_cases():
    assert lt.robust_range(np.full(50, 0.3)) == pytest.approx((-0.2, 0.8))        # flat: never low == high
    assert lt.robust_range(np.array([np.nan, np.inf])) == (0.0, 1.0)
    low, high = lt.robust_range(np.r_[np.zeros(99), 1.0])                        # percentiles coincide
    assert (low, high) == (0.0, 1.0)
    low, high = lt.robust_range(np.r_[np.arange(100.0), np.nan])                 # NaN ignored
    assert low == pytest.approx(1.98) and high == pytest.approx(97.02)


def test_3d_view_holds_every_point_and_the_own_image():
    codes, labels = codes_and_labels(n=300)
    coords = codes[:, :3].copy()
    coords[5] = [40.0, -35.0, 22.0]                                # a far-off cluster of one
    proj = made_up("umap", 3, coords)
    own = np.array([-50.0, 0.0, 60.0])
    fig = lt.map_figure(proj, labels, ["a", "b", "c"], highlight=[5], own=own)
    scene = fig.layout.scene
    everything = np.vstack([coords, own[None]])
    for i, axis in enumerate((scene.xaxis, scene.yaxis, scene.zaxis)):
        lo, hi = axis.range
        assert lo < everything[:, i].min() and hi > everything[:, i].max()
        assert axis.autorange is False
    assert scene.aspectmode == "cube"
    eye = scene.camera.eye
    assert np.linalg.norm([eye.x, eye.y, eye.z]) > np.linalg.norm([1.25, 1.25, 1.25])   # farther than plotly's


def test_scene_ranges_pad_each_axis():
    ranges = lt.scene_ranges(np.array([[0.0, 5.0, 1.0], [10.0, 5.0, 3.0]]))
    assert ranges[0] == pytest.approx([-0.6, 10.6]) and ranges[1] == pytest.approx([4.0, 6.0])
    assert ranges[2] == pytest.approx([0.88, 3.12])


def test_colour_bar_stays_below_the_legend():
    """The legend sits above the plot (pages.common.chart); the colour bar stands on the plot's bottom,
    shorter than the plot, its title along its side: it cannot reach the 'selected' legend entry."""
    codes, labels = codes_and_labels()
    for dims in (2, 3):
        fig = lt.map_figure(fit_projection(codes, "pca", dims), labels, ["a", "b", "c"], highlight=[0],
                            values=np.arange(len(codes), dtype=np.float32), value_name="MSE")
        bar = fig.data[0].marker.colorbar
        assert bar.yanchor == "bottom" and bar.y == 0 and bar.len <= 0.9
        assert bar.title.side == "right"
        assert [t.name for t in fig.data][-1] == "selected"


def test_view_id_names_exactly_one_map():
    codes, _ = codes_and_labels()
    a = fit_projection(codes, "pca", 2)
    assert lt.view_id(a) == lt.view_id(fit_projection(codes, "pca", 2))          # same map, same name
    assert lt.view_id(a) != lt.view_id(fit_projection(codes, "pca", 3))
    assert lt.view_id(a) != lt.view_id(made_up("umap", 2, a.coords * 2))
    other_seed = made_up("umap", 2, a.coords + 1)
    assert lt.view_id(made_up("umap", 2, a.coords)) != lt.view_id(other_seed)
    subset = Projection("tsne", 2, a.coords[:50], np.arange(50), "computed")
    assert lt.view_id(subset) != lt.view_id(Projection("tsne", 2, a.coords[:50], np.arange(50) + 1, "computed"))


# --- issue 18: the embedding-projector tools ----------------------------------------------------------------
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_atlas_cell_i_holds_image_i_grey_and_colour():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(23, 1, 5, 7), dtype=np.uint8)
    atlas = at.build_atlas(grey)
    assert (atlas.n, atlas.cols, atlas.rows, atlas.cell_h, atlas.cell_w, atlas.channels) == (23, 5, 5, 5, 7, 1)
    np.testing.assert_array_equal(at.unpack(atlas.png, atlas), grey[:, 0])
    assert atlas.box(0) == (0, 0, 7, 5) and atlas.box(7) == (2 * 7, 1 * 5, 7, 5) and atlas.box(22) == (14, 20, 7, 5)
    picture, _ = at.pack(grey)
    for i in (0, 4, 5, 13, 22):                                     # row i // cols, column i % cols
        r, c = divmod(i, 5)
        np.testing.assert_array_equal(picture[r * 5:(r + 1) * 5, c * 7:(c + 1) * 7], grey[i, 0])
    assert not picture[20:25, 21:35].any()                          # the last row's empty cells are black
    colour = rng.integers(0, 256, size=(10, 3, 4, 4), dtype=np.uint8)
    atlas = at.build_atlas(colour, cols=3)
    assert (atlas.cols, atlas.rows, atlas.channels) == (3, 4, 3)
    np.testing.assert_array_equal(at.unpack(atlas.png, atlas), colour.transpose(0, 2, 3, 1))
    assert atlas.args()["key"] == atlas.key and len(atlas.key) == 16
    assert at.build_atlas(colour, cols=3).key == atlas.key != at.build_atlas(colour[::-1].copy(), cols=3).key


def test_atlas_shrinks_cells_to_fit_and_refuses_what_is_no_image():
    images = (np.arange(50, dtype=np.uint8)[:, None, None] * 5 * np.ones((1, 40, 40), np.uint8))   # image i: all 5i
    atlas = at.build_atlas(images, max_side=160)                    # 8 x 7 cells of 40 px would be 320 px
    assert atlas.cols * atlas.cell_w <= 160 and atlas.rows * atlas.cell_h <= 160 and atlas.cell_w == 20
    cells = at.unpack(atlas.png, atlas)
    assert [int(c.min()) for c in cells] == [int(c.max()) for c in cells] == [5 * i for i in range(50)]
    with pytest.raises(TypeError):
        at.build_atlas(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError):
        at.build_atlas(np.zeros((3, 2, 4, 4, 5), np.uint8))
    with pytest.raises(IndexError):
        at.build_atlas(np.zeros((3, 4, 4), np.uint8)).box(3)
    from aecore.data.base import ImageData
    import torch

    flat = ImageData(torch.zeros(4, 10, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), ["a"], "x", "test")
    assert lt.atlas_of(flat, (10,)) is None
    assert lt.atlas_of(flat, (1, 2, 5)).cell_h == 2


@pytest.mark.parametrize("text, kind, value", [
    ("7", "class", 7), (" 7 ", "class", 7), ("#123", "index", 123), ("# 12", "index", 12), ("123", "index", 123),
    ("#0", "index", 0), ("#9,999", "index", 9999), ("9999", "index", 9999), ("class 3", "class", 3),
    ("", "none", None), ("   ", "none", None), (None, "none", None),
    ("#10000", "unknown", None), ("10000", "unknown", None), ("#abc", "unknown", None), ("#", "unknown", None),
    ("zebra", "unknown", None), ("-3", "unknown", None), ("class 12", "unknown", None), ("7.5", "unknown", None),
])
def test_find_reads_a_class_or_a_test_image_in_mnist(text, kind, value):
    found = lt.find(text, MNIST_CLASSES, 10_000)
    assert (found.kind, found.value) == (kind, value)
    if kind == "unknown":
        assert found.message                                          # says what went wrong and what works


def test_find_by_class_name_in_fashion_and_clear_messages():
    find = lambda text: lt.find(text, FASHION, 10_000)               # noqa: E731
    assert (find("Shirt").kind, find("Shirt").value) == ("class", 6)  # exact beats the part of 'T-shirt/top'
    assert find("shirt").value == 6 and find("ANKLE BOOT").value == 9
    assert find("boot").value == 9 and find("sneak").value == 7       # a unique part of a name
    assert (find("3").kind, find("3").value) == ("class", 3)          # a class number while there is one ...
    assert "#3" in find("3").message and "Dress" in find("3").message
    assert (find("20").kind, find("20").value) == ("index", 20)       # ... and a test image's index above
    assert find("#3").value == 3 and find("#3").kind == "index"
    vague = find("o")
    assert vague.kind == "unknown" and "class names" in vague.message and "Pullover" in vague.message
    garbage = find("qwerty" * 100)
    assert garbage.kind == "unknown" and "T-shirt/top, Trouser" in garbage.message and "#9,999" in garbage.message
    assert len(garbage.message) < 300                                 # the text is cut, not echoed whole
    assert "#10,000" in lt.find("#10000", FASHION, 10_000).message
    assert lt.find("#5", FASHION, 5).kind == "unknown"                # the split's own size


def test_tuning_keys_defaults_and_words():
    t = lt.Tuning()
    assert t.is_default("umap") and t.is_default("tsne") and t.is_default("pca")
    assert lt.Tuning(min_dist=0.5).is_default("tsne") and not lt.Tuning(min_dist=0.5).is_default("umap")
    assert lt.Tuning(perplexity=5).key("tsne") == ("tsne", 5.0) and lt.Tuning(n_neighbors=30).key("umap")[1] == 30
    assert lt.Tuning(n_neighbors=50, min_dist=0.25).describe("umap") == "n_neighbors 50, min_dist 0.25"
    assert lt.Tuning(n_neighbors=50).describe("umap", 20) == "n_neighbors 19, min_dist 0.1"    # clamped to the points
    assert lt.Tuning(perplexity=100).describe("tsne", 61) == "perplexity 20"
    assert t.n_neighbors in lt.UMAP_NEIGHBOURS and t.min_dist in lt.UMAP_MIN_DISTS
    assert t.perplexity in lt.TSNE_PERPLEXITIES
    assert lt.umap_stage_epochs(200) == [1, 10, 25, 50, 100, 200] and lt.umap_epochs(10_000) == 200
    assert lt.umap_stage_epochs(500)[0] == 1 and lt.umap_stage_epochs(500)[-1] == 500


class SpyTSNE:
    """sklearn's TSNE as far as fit_tuned uses it, recording what it was given."""

    calls: list[dict] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        SpyTSNE.calls.append(kwargs)

    def fit_transform(self, x):
        rng = np.random.default_rng(self.kwargs.get("max_iter", 1000))
        return rng.normal(size=(len(x), self.kwargs["n_components"]))


def test_tsne_parameters_and_stages_reach_the_estimator(monkeypatch):
    import sklearn.manifold

    monkeypatch.setattr(sklearn.manifold, "TSNE", SpyTSNE)
    SpyTSNE.calls = []
    codes, _ = codes_and_labels(n=90)
    reports = []
    settled = lt.fit_tuned(codes, "tsne", 2, seed=4, tuning=lt.Tuning(perplexity=10, min_dist=0.9), stages=True,
                           progress=lambda f, text: reports.append((f, text)))
    assert [c["max_iter"] for c in SpyTSNE.calls] == list(lt.TSNE_STAGES)
    assert {c["perplexity"] for c in SpyTSNE.calls} == {10.0} and {c["random_state"] for c in SpyTSNE.calls} == {4}
    assert [label for label, _ in settled.stages] == [f"{n:,} iterations" for n in lt.TSNE_STAGES]
    assert all(c.shape == (90, 2) and c.dtype == np.float32 for _, c in settled.stages)
    np.testing.assert_array_equal(settled.stages[-1][1], settled.proj.coords)
    assert settled.params == "perplexity 10" and settled.proj.transform is None and "t-SNE" in settled.proj.placement
    assert reports[-1][0] == 1.0 and any("stage 3 of 5" in text for _, text in reports)
    # a perplexity too large for the points is cut to a third of them; without stages, one run of 1,000 iterations
    SpyTSNE.calls = []
    settled = lt.fit_tuned(codes, "tsne", 3, tuning=lt.Tuning(perplexity=100), index=np.arange(31))
    assert [c["max_iter"] for c in SpyTSNE.calls] == [1000] and SpyTSNE.calls[0]["perplexity"] == 10.0
    assert settled.stages == [] and settled.proj.coords.shape == (31, 3)
    # the default parameters without stages: fit_projection's own map
    SpyTSNE.calls = []
    lt.fit_tuned(codes, "tsne", 2, index=np.arange(40))
    assert len(SpyTSNE.calls) == 1 and "max_iter" not in SpyTSNE.calls[0]


def test_tsne_stages_are_the_start_of_the_full_run():
    codes, _ = codes_and_labels(n=80)
    settled = lt.fit_tuned(codes, "tsne", 2, seed=1, tuning=lt.Tuning(perplexity=20), stages=True)
    assert len(settled.stages) == len(lt.TSNE_STAGES)
    single = lt.fit_tuned(codes, "tsne", 2, seed=1, tuning=lt.Tuning(perplexity=20))
    np.testing.assert_allclose(settled.proj.coords, single.proj.coords, rtol=1e-5, atol=1e-5)
    assert not np.allclose(settled.stages[0][1], settled.stages[-1][1])   # the layout moved


def fake_umap_module(calls: list) -> types.ModuleType:
    """umap as far as fit_tuned uses it (import umap is slow: numba), recording the reducer's arguments."""

    class UMAP:
        def __init__(self, **kwargs):
            self.kwargs, self.n_epochs = kwargs, kwargs["n_epochs"]
            calls.append(self)

        def fit_transform(self, x):
            epochs = self.n_epochs if isinstance(self.n_epochs, list) else None
            if epochs is not None:      # umap-learn: a snapshot after each listed epoch below the last, then the end
                self.embedding_list_ = [np.full((len(x), self.kwargs["n_components"]), e, np.float32)
                                        for e in epochs[:-1]] + [np.zeros((len(x), self.kwargs["n_components"]))]
            return np.zeros((len(x), self.kwargs["n_components"]), np.float32)

        def transform(self, x):
            assert isinstance(self.n_epochs, int)
            return np.ones((len(x), self.kwargs["n_components"]), np.float32)

    return types.SimpleNamespace(UMAP=UMAP)


def test_umap_parameters_and_stages_reach_the_estimator(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "umap", fake_umap_module(calls))
    codes, _ = codes_and_labels(n=60)
    settled = lt.fit_tuned(codes, "umap", 2, seed=3, tuning=lt.Tuning(n_neighbors=30, min_dist=0.5, perplexity=5),
                           stages=True)
    kwargs = calls[0].kwargs
    assert ((kwargs["n_neighbors"], kwargs["min_dist"], kwargs["random_state"], kwargs["n_components"])
            == (30, 0.5, 3, 2))
    after = lt.umap_stage_epochs(500)
    assert kwargs["n_epochs"] == [a - 1 for a in after[:-1]] + [500]
    assert [label for label, _ in settled.stages] == [f"{a:,} epoch{'s' if a > 1 else ''}" for a in after]
    assert settled.stages[1][1][0, 0] == after[1] - 1 and settled.stages[-1][1] is settled.proj.coords
    assert settled.proj.place(codes[:2], codes).tolist() == [[1.0, 1.0], [1.0, 1.0]]   # transform after a list
    assert settled.params == "n_neighbors 30, min_dist 0.5"
    calls.clear()
    settled = lt.fit_tuned(codes, "umap", 3, tuning=lt.Tuning(n_neighbors=200), index=np.arange(25))
    assert calls[0].kwargs["n_neighbors"] == 24 and calls[0].kwargs["n_epochs"] == 500 and settled.stages == []
    with pytest.raises(ConfigError):
        lt.fit_tuned(codes, "umap", 4, tuning=lt.Tuning(n_neighbors=5))


@pytest.mark.slow
def test_real_umap_stages_end_on_the_map_of_as_many_epochs():
    codes, _ = codes_and_labels(n=150, d=5)
    tuning = lt.Tuning(n_neighbors=10, min_dist=0.25)
    settled = lt.fit_tuned(codes, "umap", 2, seed=0, tuning=tuning, stages=True)
    assert [c.shape for _, c in settled.stages] == [(150, 2)] * len(lt.umap_stage_epochs(500))
    assert not np.allclose(settled.stages[0][1], settled.stages[-1][1])
    single = lt.fit_tuned(codes, "umap", 2, seed=0, tuning=tuning)
    np.testing.assert_allclose(settled.proj.coords, single.proj.coords, atol=1e-4)
    assert settled.proj.place(codes[:3], codes).shape == (3, 2)


def test_add_stages_gives_frames_a_slider_and_a_play_button():
    codes, labels = codes_and_labels(n=60)
    final = codes[:, :2] * 3
    proj = made_up("tsne", 2, final)
    stages = [("250 iterations", codes[:, :2] * 0.1), ("500 iterations", codes[:, 2:4]), ("1,000 (the map)", final)]
    fig = lt.map_figure(proj, labels, ["a", "b", "c"], highlight=[7], own=np.array([0.5, 0.5]))
    fig = lt.add_stages(fig, proj, stages)
    assert [f.name for f in fig.frames] == [label for label, _ in stages]
    for frame, (_, coords) in zip(fig.frames, stages):
        assert len(frame.data) == len(fig.data)
        for trace, moved in zip(fig.data, frame.data):
            ids = np.asarray(trace.customdata)
            if ids.min() >= 0:                                        # a class trace or the ring: where it was
                np.testing.assert_allclose(moved.x, coords[ids, 0], rtol=1e-6)
                np.testing.assert_allclose(moved.y, coords[ids, 1], rtol=1e-6)
            else:                                                     # the ★ stays put
                assert list(moved.x) == [0.5]
        lo, hi = frame.layout.xaxis.range
        assert lo < coords[:, 0].min() and hi > coords[:, 0].max()
    slider = fig.layout.sliders[0]
    assert slider.active == 2 and [s.label for s in slider.steps] == [label for label, _ in stages]
    assert fig.layout.updatemenus[0].buttons[0].label == "▶ Play"
    three = made_up("umap", 3, codes[:, :3])
    fig3 = lt.add_stages(lt.map_figure(three, labels, ["a", "b", "c"]), three,
                         [("a", codes[:, :3]), ("b", codes[:, 3:6])])
    assert fig3.frames[0].layout.scene.xaxis.range is not None and len(fig3.frames[1].data[0].z) > 0
    assert lt.add_stages(fig, proj, []) is fig


def test_a_searched_class_stands_out_and_the_rest_fades():
    codes, labels = codes_and_labels(n=90)
    proj = fit_projection(codes, "pca", 2)
    fig = lt.map_figure(proj, labels, ["a", "b", "c"], emphasis=1)
    assert [t.marker.opacity for t in fig.data] == [lt.FADED, 0.9, lt.FADED]
    values = np.arange(90, dtype=np.float32)
    fig = lt.map_figure(proj, labels, ["a", "b", "c"], values=values, value_name="MSE", emphasis=2, highlight=[4])
    rest, searched, ring = fig.data
    assert rest.marker.opacity == lt.FADED and searched.marker.opacity == 0.9 and ring.name == "selected"
    assert sorted([*rest.customdata, *searched.customdata]) == list(range(90))
    assert set(labels[np.asarray(searched.customdata)]) == {2}
    assert searched.marker.showscale and not rest.marker.showscale                # one colour bar
    assert rest.marker.cmin == searched.marker.cmin and rest.marker.cmax == searched.marker.cmax


def test_thumbnail_args_carry_positions_cells_and_colours_as_bytes():
    codes, labels = codes_and_labels(n=50)
    images = np.random.default_rng(0).integers(0, 256, size=(50, 1, 6, 6), dtype=np.uint8)
    atlas = at.build_atlas(images)
    proj = Projection("tsne", 2, codes[10:40, :2].copy(), np.arange(10, 40), "computed")      # a subset
    args = lt.thumbnail_args(proj, labels, ["a", "b", "c"], atlas, selected=12, emphasis=1, own=np.array([1.0, 2.0]),
                             size=24)
    np.testing.assert_array_equal(np.frombuffer(args["xy"], "<f4").reshape(-1, 2), proj.coords)
    np.testing.assert_array_equal(np.frombuffer(args["index"], "<i4"), np.arange(10, 40))
    np.testing.assert_array_equal(np.frombuffer(args["labels"], "<i2"), labels[10:40])
    rgb = np.frombuffer(args["colours"], np.uint8).reshape(-1, 3)
    palette = [lt.hex_rgb(c) for c in lt.class_colours(3)]
    assert [tuple(c) for c in rgb[:3]] == [palette[labels[i]] for i in (10, 11, 12)]
    assert args["atlas"] == atlas.png and args["geom"]["n"] == 50 and args["n_points"] == 30
    assert (args["selected"], args["emphasis"], args["own"], args["size"]) == (12, 1, [1.0, 2.0], 24)
    assert [name for name, _ in args["legend"]] == ["a", "b", "c"] and "values" not in args
    import json
    json.dumps({k: v for k, v in args.items() if not isinstance(v, bytes)})           # the rest is plain JSON
    held = lt.thumbnail_args(proj, labels, ["a", "b", "c"], atlas, held=atlas.key)
    assert "atlas" not in held and held["have"] == atlas.key and held["selected"] == -1 and held["own"] is None
    values = np.linspace(0.0, 1.0, 50).astype(np.float32)
    coloured = lt.thumbnail_args(proj, labels, ["a", "b", "c"], atlas, values=values, value_name="MSE")
    np.testing.assert_array_equal(np.frombuffer(coloured["values"], "<f4"), values[10:40])
    assert coloured["legend"] == [] and coloured["colour_key"] != args["colour_key"]
    with pytest.raises(ConfigError):
        lt.thumbnail_args(made_up("umap", 3, codes[:, :3]), labels, ["a", "b", "c"], atlas)


def test_point_colours_follow_the_map():
    from plotly.colors import sequential

    labels = np.array([0, 2, -1, 5])
    rgb = lt.point_colours(labels, 3)
    assert [tuple(c) for c in rgb] == [lt.hex_rgb(lt.class_colours(3)[0]), lt.hex_rgb(lt.class_colours(3)[2]),
                                       (153, 153, 153), (153, 153, 153)]
    values = np.r_[np.zeros(10), np.linspace(0, 1, 80), np.ones(10)]
    rgb = lt.point_colours(np.zeros(100, int), 1, values)
    assert tuple(rgb[0]) == lt.hex_rgb(sequential.Viridis[0]) and tuple(rgb[-1]) == lt.hex_rgb(sequential.Viridis[-1])
    assert lt.hex_rgb("rgb(31, 119, 180)") == (31, 119, 180) == lt.hex_rgb("#1f77b4")


def test_thumbnail_clicks_and_the_atlas_held_are_read_from_the_value():
    assert lt.thumbnail_click({"have": "k", "click": "abc", "index": 42}) == ("abc", 42)
    for value in (None, {}, {"have": "k", "click": None, "index": None}, {"click": "", "index": 3},
                  {"click": "x", "index": "seven"}, {"click": "x", "index": True}, "garbage", [1, 2]):
        assert lt.thumbnail_click(value) == (None, None)
    assert lt.atlas_held({"have": "k1"}) == "k1"
    assert lt.atlas_held({"have": None}) is None and lt.atlas_held(None) is None and lt.atlas_held({"have": 3}) is None


# --- the server's queue of maps ------------------------------------------------------------------------------
def _until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_queue_of_maps_is_bounded_and_holds_one_waiting_map_per_owner():
    jobs = lt.ProjectionJobs(max_waiting=3)
    gate, ran = threading.Event(), []

    def slow(name):
        def fit(progress):
            ran.append(name)
            gate.wait(10)
            return name
        return fit

    try:
        first = jobs.submit("first", slow("first"), owner="a")
        _until(first.future.running)
        # a student holds '+' on the seed: each new map replaces their older one that still waits
        seeds = [jobs.submit(("seed", s), slow(("seed", s)), owner="a") for s in range(50)]
        assert jobs.waiting() == 1 and all(j.future.cancelled() for j in seeds[:-1])
        assert jobs.get(("seed", 0)) is None and jobs.get(("seed", 49)) is seeds[-1]
        assert not first.future.cancelled()                                  # a running map runs on
        # a map another session waits for too stays when its first owner moves on
        assert jobs.submit(("seed", 49), slow("again"), owner="b") is seeds[-1]
        mine = jobs.submit("a-next", slow("a-next"), owner="a")
        assert not seeds[-1].future.cancelled() and jobs.waiting() == 2
        jobs.submit("c", slow("c"), owner="c")
        with pytest.raises(lt.ServerBusy, match=r"busy with 4 maps \(3 waiting\); try again in a moment"):
            jobs.submit("d", slow("d"), owner="d")
        with pytest.raises(lt.ProjectionError):                              # what the page catches
            jobs.submit("e", slow("e"))
        assert jobs.get("d") is None and jobs.waiting() == 3
        again = jobs.submit("c2", slow("c2"), owner="c")                     # an owner's replacement still fits
        assert jobs.get("c") is None and jobs.submit("a-next", slow("x"), owner="a") is mine
        assert jobs.submit("c2", slow("x")) is again                          # someone unnamed waits for it too:
        with pytest.raises(lt.ServerBusy):                                   # it stays, and counts
            jobs.submit("c3", slow("c3"), owner="c")
        assert not again.future.cancelled() and jobs.waiting() == 3
    finally:
        gate.set()
    assert again.future.result(10) == "c2" and mine.future.result(10) == "a-next"
    assert ran == ["first", ("seed", 49), "a-next", "c2"]
    assert lt.JOBS.max_waiting == 8                                          # the server's queue


def test_a_failed_map_waits_before_its_key_runs_again():
    jobs = lt.ProjectionJobs(retry_after=60.0)
    calls = []

    def boom(progress):
        calls.append(1)
        raise RuntimeError("no map today")

    job = jobs.submit("k", boom)
    with pytest.raises(RuntimeError):
        job.future.result(5)
    _until(lambda: job.ended is not None)
    assert jobs.submit("k", boom) is job and len(calls) == 1                 # every rerun shows the failure
    assert 55 < jobs.retry_in(job) <= 60 and job.failed
    job.ended -= 61                                                          # a minute later: it runs again
    assert jobs.retry_in(job) == 0
    again = jobs.submit("k", boom)
    assert again is not job
    with pytest.raises(RuntimeError):
        again.future.result(5)
    assert len(calls) == 2 and lt.JOBS.retry_after == 60.0
    done = jobs.submit("ok", lambda progress: 7)
    assert done.future.result(5) == 7 and jobs.retry_in(done) == 0 and not done.failed
