"""aecore.lab.decode: the plane (a 2-D code's own, or a PCA slice and its inverse), the lattice and its
atlas, a VAE's μ, σ and seeded z, and what the browser component gets."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from aecore.errors import ConfigError
from aecore.lab import decode as dc
from aecore.models import build_model
from aecore.models.base import AutoEncoder


def _codes(n: int = 300, d: int = 6, seed: int = 0) -> np.ndarray:
    """Codes with distinct variances per direction (a well-defined top-2 PCA), off the origin."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d) + rng.normal(size=d)


def _ae(latent_dim: int = 2, shape=(1, 8, 8)):
    return build_model("ae", {"input_shape": list(shape), "hidden": [16], "latent_dim": latent_dim}).eval()


# --- the plane ------------------------------------------------------------------------------------------
def test_a_two_d_code_is_its_own_plane():
    codes = _codes(d=2)
    plane = dc.plane_for(codes)
    assert plane.kind == "code"
    np.testing.assert_array_equal(plane.to_plane(codes), codes)
    np.testing.assert_array_equal(plane.to_code(codes), codes)
    assert plane.through_code(codes[3]) is plane           # nothing to shift: the plane is the whole space
    assert plane.axis_titles() == ("z₁", "z₂")


def test_the_pca_slice_through_the_mean_maps_a_code_to_its_shadow_on_the_plane():
    codes = _codes()
    plane = dc.plane_for(codes)
    assert plane.kind == "pca" and plane.through == "mean"
    np.testing.assert_allclose(plane.axes @ plane.axes.T, np.eye(2), atol=1e-12)       # orthonormal
    np.testing.assert_allclose(plane.mean, codes.mean(0), atol=1e-6)
    # the axes are the top two principal directions (up to sign)
    _, _, vt = np.linalg.svd(codes - codes.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(plane.axes @ vt[:2].T), np.eye(2), atol=1e-5)
    # (u, v) -> mean + u·a1 + v·a2: a code comes back as its projection onto the PCA plane
    c = codes[7]
    back = plane.to_code(plane.to_plane(c))[0]
    shadow = plane.mean + (c - plane.mean) @ plane.axes.T @ plane.axes
    np.testing.assert_allclose(back, shadow, atol=1e-10)
    np.testing.assert_allclose(plane.to_code([[0.0, 0.0]])[0], plane.mean, atol=1e-12)
    assert np.linalg.norm(back - c) > 0.1                    # the off-plane part is gone: d = 6


def test_the_pca_slice_through_a_code_gives_that_code_back_exactly():
    codes = _codes()
    c = codes[11]
    base = dc.plane_for(codes)
    plane = base.through_code(c)
    assert plane.through == "code"
    uv = plane.to_plane(c)
    np.testing.assert_allclose(plane.to_code(uv)[0], c, atol=1e-10)
    np.testing.assert_allclose(dc.pca_plane(codes, c).to_code(uv)[0], c, atol=1e-10)
    # the dots keep their places: only the plane's offset off the PCA plane changed
    np.testing.assert_array_equal(plane.to_plane(codes), base.to_plane(codes))
    # every point of the shifted plane differs from the mean-plane's by the same off-plane vector
    grid = dc.grid_points(dc.extent(base.to_plane(codes)), 4)
    diff = plane.to_code(grid) - base.to_code(grid)
    np.testing.assert_allclose(diff, np.broadcast_to(diff[0], diff.shape), atol=1e-10)
    np.testing.assert_allclose(diff[0] @ plane.axes.T, 0.0, atol=1e-10)


def test_a_plane_needs_two_dimensions_and_finite_codes():
    with pytest.raises(ConfigError):
        dc.pca_plane(np.zeros((10, 1)))
    bad = _codes()
    bad[0, 0] = np.nan
    with pytest.raises(Exception, match="not finite"):
        dc.pca_plane(bad)
    with pytest.raises(ConfigError):
        dc.plane_for(_codes()).through_code(np.zeros(3))


def test_the_window_covers_the_codes_with_a_margin():
    coords = _codes(n=4000, d=2)
    u0, u1, v0, v1 = dc.extent(coords)
    inside = (coords[:, 0] >= u0) & (coords[:, 0] <= u1) & (coords[:, 1] >= v0) & (coords[:, 1] <= v1)
    assert inside.mean() > 0.98                       # the central 99 % and a margin: a few outliers may stick out
    lo, hi = np.percentile(coords, [0.5, 99.5], axis=0)
    assert u0 < lo[0] and u1 > hi[0] and v0 < lo[1] and v1 > hi[1]
    assert dc.extent(np.zeros((5, 2)))[1] > dc.extent(np.zeros((5, 2)))[0]        # never empty
    assert dc.extent(np.empty((0, 2))) == (-1.0, 1.0, -1.0, 1.0)


# --- the lattice and the atlas -----------------------------------------------------------------------------
def test_the_lattice_is_row_major_with_the_largest_v_on_top():
    window = (-1.0, 3.0, -2.0, 2.0)
    points = dc.grid_points(window, 5)
    assert points.shape == (25, 2)
    np.testing.assert_allclose(points[0], [-1.0, 2.0])      # top left
    np.testing.assert_allclose(points[4], [3.0, 2.0])       # top right
    np.testing.assert_allclose(points[-1], [3.0, -2.0])     # bottom right
    with pytest.raises(ConfigError):
        dc.grid_points(window, 1)


def test_the_nearest_cell_is_the_nearest_lattice_point():
    window, n = (-1.0, 3.0, -2.0, 2.0), 7
    points = dc.grid_points(window, n)
    rng = np.random.default_rng(1)
    for u, v in rng.uniform([-1.5, -2.5], [3.5, 2.5], size=(200, 2)):
        i, j = dc.nearest_cell(window, n, u, v)
        clamped = np.clip([u, v], [-1.0, -2.0], [3.0, 2.0])
        assert np.argmin(((points - clamped) ** 2).sum(1)) == i * n + j


@pytest.mark.parametrize("name, config, latent", [
    ("ae", {"hidden": [16]}, 2),
    ("ae", {"hidden": [16]}, 5),
    ("conv-ae", {"channels": [4, 8]}, 3),
])
def test_each_atlas_cell_is_the_decoding_of_its_lattice_point(name, config, latent):
    model = build_model(name, {"input_shape": [1, 8, 8], "latent_dim": latent, **config}).eval()
    codes = _codes(d=latent)
    plane = dc.plane_for(codes, codes[0] if latent > 2 else None)
    window, n = dc.extent(plane.to_plane(codes)), 6
    sheet = dc.atlas(model, plane, window, n)
    assert sheet.sheet.shape == (n * 8, n * 8, 1) and sheet.sheet.dtype == np.uint8
    assert sheet.tile == (8, 8, 1) and sheet.n == n and len(sheet.key) == 16
    points = dc.grid_points(window, n)
    for i, j in [(0, 0), (0, n - 1), (n - 1, 0), (2, 3), (n - 1, n - 1)]:
        one = dc.to_uint8(dc.decode_points(model, plane, points[i * n + j][None]))[0]
        np.testing.assert_array_equal(sheet.cell(i, j), one)
    # decoded in one batched pass or one by one: the same pictures
    with torch.no_grad():
        direct = model.decode(torch.as_tensor(plane.to_code(points), dtype=torch.float32)).clamp(0, 1)
    np.testing.assert_array_equal(sheet.cell(1, 2)[..., 0], (direct[1 * n + 2, 0] * 255).round().to(torch.uint8).numpy())
    # the PNG the browser gets holds the same pixels
    png = Image.open(io.BytesIO(sheet.png()))
    np.testing.assert_array_equal(np.asarray(png), sheet.sheet[..., 0])


def test_an_rgb_atlas_is_an_rgb_png():
    model = build_model("ae", {"input_shape": [3, 4, 4], "hidden": [8], "latent_dim": 2}).eval()
    sheet = dc.atlas(model, dc.code_plane(), (-1, 1, -1, 1), 3)
    assert sheet.sheet.shape == (12, 12, 3)
    assert Image.open(io.BytesIO(sheet.png())).mode == "RGB"


# --- the decoder and the posterior -----------------------------------------------------------------------
def test_a_model_without_a_decoder_is_named_as_such(monkeypatch):
    model = _ae()
    assert dc.decoder_problem(model) is None
    monkeypatch.setattr(type(model), "decode", AutoEncoder.decode)
    assert "no decoder" in dc.decoder_problem(model)


def test_a_vae_gives_mu_sigma_and_a_seeded_z():
    model = build_model("vae", {"input_shape": [1, 8, 8], "hidden": [16], "latent_dim": 3}).eval()
    x = torch.rand(1, 8, 8)
    post = dc.posterior_sample(model, x, seed=5)
    assert post.mu.shape == post.sigma.shape == post.z.shape == (3,)
    assert (post.sigma > 0).all()
    np.testing.assert_allclose(post.mu, model.encode(x[None]).double()[0].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(post.z, post.mu + post.sigma * dc.sample_eps(3, 5).numpy(), atol=1e-12)
    again = dc.posterior_sample(model, x, seed=5)
    np.testing.assert_array_equal(again.z, post.z)                       # same seed, same z
    other = dc.posterior_sample(model, x, seed=6)
    np.testing.assert_array_equal(other.mu, post.mu)
    assert not np.allclose(other.z, post.z)                              # new seed, new z
    np.testing.assert_allclose(dc.code_of(model, x), post.mu, atol=1e-6)  # a VAE's code is its μ
    fig = dc.posterior_figure(post)
    assert [t.type for t in fig.data] == ["bar", "scatter"]
    np.testing.assert_allclose(fig.data[0].error_y.array, post.sigma)


def test_a_plain_autoencoder_has_no_posterior():
    model = _ae()
    assert not dc.has_posterior(model)
    with pytest.raises(ConfigError):
        dc.posterior_sample(model, torch.rand(1, 8, 8))


# --- what the component gets ---------------------------------------------------------------------------------
def test_the_component_arguments_are_json_and_mark_codes_where_they_sit():
    codes = _codes(n=5000, d=4)
    labels = np.arange(5000) % 3
    plane = dc.plane_for(codes)
    dots = dc.dots(plane, codes, labels)
    assert len(dots["u"]) == dc.MAX_DOTS and dots["index"] == sorted(dots["index"])
    k = dots["index"][10]
    np.testing.assert_allclose([dots["u"][10], dots["v"][10]], plane.to_plane(codes[k])[0], atol=1e-5)
    assert dots["label"][10] == labels[k]
    mark = dc.marker(plane, codes[k], "μ", "#000")
    assert (mark["u"], mark["v"]) == (dots["u"][10], dots["v"][10])
    sheet = dc.atlas(_ae(4), plane, dc.extent(plane.to_plane(codes)), 4)
    args = dc.component_args(plane, sheet, dots, ["a", "b", "c"], ["#1", "#2", "#3"], [mark])
    assert json.loads(json.dumps(args))["n"] == 4
    assert args["tile"] == [8, 8, 1] and args["atlas_key"] == sheet.key and args["x_title"].startswith("PC 1")
