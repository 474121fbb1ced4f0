"""aecore.lab.latent's map figure as a viewer sees it: axis titles named after the projection, a robust
colour range, 3-D views that hold every point, the colour bar clear of the legend, one name per map."""

from __future__ import annotations

import numpy as np
import pytest

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
