"""aecore.maps, aecore.lab.latent and aecore.lab.vae: projections, neighbours, placement on a map, selections,
background jobs, the UMAP warm-up switch; interpolation paths, prior samples, traversals, manifold grid."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

from aecore.data.base import ImageData
from aecore.errors import ConfigError, DataError
from aecore.evaluate import per_image_mse
from aecore.lab import latent as lt
from aecore.lab import projection_worker
from aecore.lab import vae as vl
from aecore.maps import (_TqdmProgress, attach_placement, codes_of, fit_projection, from_maps, nearest, project,
                         subsample)
from aecore.models import build_model

MNIST = (1, 28, 28)


def clustered_codes(n: int = 300, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, d))
    labels = rng.integers(0, 3, n)
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def tiny_data(n: int = 60, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *MNIST), generator=g, dtype=torch.uint8)
    return ImageData(images=images, labels=torch.arange(n) % 3, classes=["a", "b", "c"], name="t", split="test")


def tiny_model(name: str = "ae", **config):
    torch.manual_seed(0)
    base = {"ae": {"hidden": [16], "latent_dim": 4}, "vae": {"hidden": [16], "latent_dim": 2}}[name]
    return build_model(name, dict(base, input_shape=list(MNIST), **config)).eval()


# --- projections ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_pca_projection_shapes_and_exact_placement(dims):
    codes, _ = clustered_codes()
    proj = fit_projection(codes, "pca", dims)
    assert proj.coords.shape == (300, dims) and proj.coords.dtype == np.float32
    assert (proj.index == np.arange(300)).all() and proj.source == "computed"
    np.testing.assert_allclose(proj.place(codes[[7, 42]], codes), proj.coords[[7, 42]], atol=1e-4)
    # the same numbers as a model's maps.npz (aecore.maps.project) for the same codes
    np.testing.assert_allclose(np.abs(proj.coords), np.abs(project(codes, "pca", dims=dims)), atol=1e-4)


def test_code_axes_and_small_codes_are_their_own_map():
    codes, _ = clustered_codes(d=2)
    for method in ("code", "pca"):
        proj = fit_projection(codes, method, 3)
        np.testing.assert_array_equal(proj.coords, np.pad(codes, ((0, 0), (0, 1))))
        np.testing.assert_array_equal(proj.place(codes[:1], codes), proj.coords[:1])
    with pytest.raises(ConfigError, match="only up to 2"):
        fit_projection(clustered_codes(d=3)[0], "code", 2)


def test_tsne_on_a_subset_places_by_neighbours():
    codes, _ = clustered_codes(n=200)
    index = subsample(200, 80, seed=1)
    assert len(index) == 80 and (np.diff(index) > 0).all()
    np.testing.assert_array_equal(index, subsample(200, 80, seed=1))             # seeded
    reports = []
    proj = fit_projection(codes, "tsne", 2, index=index, seed=0, progress=lambda f, t: reports.append((f, t)))
    assert proj.coords.shape == (80, 2) and (proj.index == index).all()
    assert reports[0][0] is None and reports[-1][0] == 1.0
    # a code equal to a mapped test code lands on that code's map point
    row = 5
    np.testing.assert_allclose(proj.place(codes[index[row]][None], codes)[0], proj.coords[row], atol=1e-6)
    unmapped = int(np.setdiff1d(np.arange(200), index)[0])
    assert proj.position_of(int(index[row])) is not None and proj.position_of(unmapped) is None
    assert "nearest" in proj.placement


def test_projection_refuses_bad_requests():
    codes, _ = clustered_codes(n=50)
    with pytest.raises(ConfigError, match="unknown projection"):
        fit_projection(codes, "mds", 2)
    with pytest.raises(ConfigError, match="2-D or 3-D"):
        fit_projection(codes, "pca", 4)
    bad = codes.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_projection(bad, "pca", 2)
    with pytest.raises(DataError, match="at least 5"):
        fit_projection(codes[:3], "pca", 2)


# --- precomputed maps -------------------------------------------------------------------------------
def test_precomputed_maps_are_used_only_for_the_same_split():
    codes, labels = clustered_codes()
    maps = {"pca": project(codes, "pca"), "labels": labels.astype(np.int16)}
    proj, why = from_maps(maps, "pca", 2, labels)
    assert proj is not None and why == "" and proj.source == "precomputed"
    assert from_maps(maps, "umap", 2, labels) == (None, "maps.npz has no UMAP map")
    assert from_maps(maps, "pca", 3, labels)[1] == "maps.npz holds 2-D maps only"
    assert "300 points, this test split 299" in from_maps(maps, "pca", 2, labels[:-1])[1]
    shuffled = labels.copy()
    shuffled[[0, 1]] = (labels[0] + 1) % 3, (labels[1] + 1) % 3
    assert "labels differ" in from_maps(maps, "pca", 2, shuffled)[1]


def test_placement_on_a_precomputed_pca_map_is_the_pca_projection():
    codes, labels = clustered_codes()
    proj, _ = from_maps({"pca": project(codes, "pca"), "labels": labels}, "pca", 2, labels)
    proj = attach_placement(proj, codes)
    assert "affine" in proj.placement
    for i in (0, 17, 299):
        np.testing.assert_allclose(proj.place(codes[i], codes)[0], proj.coords[i], atol=1e-4)


def test_placement_on_a_precomputed_nonlinear_map_uses_neighbours():
    codes, labels = clustered_codes()
    coords = np.random.default_rng(3).normal(size=(300, 2)).astype(np.float32)   # any map: no formula from codes
    proj, _ = from_maps({"umap": coords, "labels": labels}, "umap", 2, labels)
    proj = attach_placement(proj, codes)
    assert "10 nearest test codes" in proj.placement
    np.testing.assert_array_equal(proj.place(codes[12], codes)[0], coords[12])         # exactly on its point
    # between two codes: a weighted mean, inside the box of the neighbours' positions
    mid = (codes[0] + codes[1]) / 2
    idx, _ = nearest(codes, mid, 10)
    pos = proj.place(mid, codes)[0]
    assert (pos >= coords[idx[0]].min(0) - 1e-6).all() and (pos <= coords[idx[0]].max(0) + 1e-6).all()


# --- neighbours ---------------------------------------------------------------------------------------
def test_nearest_neighbours_by_hand():
    codes = np.array([[0, 0], [1, 0], [0, 2], [5, 5], [-3, 0]], dtype=np.float32)
    idx, dist = nearest(codes, np.array([0.9, 0.0]), 3)
    assert idx.tolist() == [[1, 0, 2]]
    np.testing.assert_allclose(dist[0], [0.1, 0.9, math.hypot(0.9, 2)], rtol=1e-6)
    idx, _ = nearest(codes, codes[[1]], 2, exclude=[1])                              # itself left out
    assert idx.tolist() == [[0, 2]]
    # cosine looks at directions only: [5, 5] is closest to [1, 1]; [-3, 0] is farthest from [1, 0]
    idx, dist = nearest(codes[1:], np.array([[1.0, 1.0], [1.0, 0.0]]), 4, metric="cosine")
    assert idx[0, 0] == 2 and idx[1, -1] == 3 and dist[1, -1] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="unknown distance"):
        nearest(codes, codes[:1], 2, metric="manhattan")
    with pytest.raises(DataError, match="3 dimensions"):
        nearest(codes, np.zeros((1, 3)), 2)
    for bad in (np.nan, np.inf):                                  # a diverged model's code: one clear error
        with pytest.raises(DataError, match="not a finite number"):
            nearest(codes, np.array([bad, 1.0]), 2, metric="cosine")


def test_nearest_orders_near_parallel_codes_and_exact_ties_the_same_way_every_time():
    # Directions 1e-5 .. 1e-4 rad from the query: cosine distances 5e-11 .. 5e-9, which 1 - cos in
    # float32 rounds to a tie at 0 (a 2-D latent map has thousands such); the order must follow the angle.
    angles = np.array([4e-5, 1e-4, 1e-5, 2e-5, 3e-5])
    codes = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32) * np.float32(3.0)
    idx, dist = nearest(codes, np.array([1.0, 0.0]), 5, metric="cosine")
    assert idx.tolist() == [np.argsort(angles).tolist()] and np.all(np.diff(dist[0]) >= 0)
    twins = np.array([[1, 1], [2, 0], [1, 1], [0, 3], [1, 1]], dtype=np.float32)      # rows 0, 2, 4 equal
    for metric in ("euclidean", "cosine"):
        assert nearest(twins, np.array([1.0, 1.0]), 4, metric=metric)[0][0, :3].tolist() == [0, 2, 4]


def test_detail_of_a_test_image_and_of_an_own_image():
    data, model = tiny_data(), tiny_model()
    codes = codes_of(model, data).numpy()
    info = lt.detail(model, data, codes, index=4, k=5)
    assert info.index == 4 and info.image.shape == (1, *MNIST) and info.recon.shape == (1, *MNIST)
    assert 4 not in info.neighbours.tolist() and len(info.neighbours) == 5
    assert (np.diff(info.distances) >= 0).all()
    expected, _ = nearest(codes, codes[4], 5, exclude=[4])
    assert info.neighbours.tolist() == expected[0].tolist()
    torch.testing.assert_close(info.neighbour_images, data.as_float(torch.as_tensor(info.neighbours)).view(-1, *MNIST))
    assert info.mse == pytest.approx(float(per_image_mse(model.reconstruct(info.image), info.image)[0]))
    own = lt.detail(model, data, codes, x=data.as_float(slice(4, 5)).view(1, *MNIST), k=3)
    assert own.index is None and own.neighbours[0] == 4 and own.distances[0] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ConfigError, match="outside the test split"):
        lt.detail(model, data, codes, index=60)


def test_recon_errors_are_per_image_mse():
    data, model = tiny_data(), tiny_model()
    x = data.as_float().view(-1, *MNIST)
    np.testing.assert_allclose(lt.recon_errors(model, data, batch_size=7),
                               per_image_mse(model.reconstruct(x), x).numpy(), rtol=1e-5)


# --- selections, figures, exports -------------------------------------------------------------------
def test_selection_indices_read_the_test_index_from_customdata():
    selection = {"points": [{"curve_number": 2, "point_index": 0, "customdata": [17]},
                            {"curve_number": 0, "point_index": 3, "customdata": 5},
                            {"curve_number": 4, "point_index": 0, "customdata": [-1]},      # the own-image star
                            {"curve_number": 1, "point_index": 9, "customdata": [17]},
                            {"curve_number": 1, "point_index": 9}]}
    assert lt.selection_indices(selection) == [17, 5]
    assert lt.selection_indices(None) == [] and lt.selection_indices({"points": []}) == []


def test_selection_indices_take_any_json_the_browser_sends():
    """The event is the browser's JSON: odd shapes give no selection, not an exception; indices outside
    the map are dropped; a huge list is read only up to MAX_SELECTED_POINTS, in linear time."""
    for odd in ["x", 7, [], {"points": "zz"}, {"points": None}, {"points": [3, "a", None, [1]]},
                {"points": [{"customdata": v} for v in (float("nan"), float("inf"), 10**400, True, {"a": 1}, "../x")]}]:
        assert lt.selection_indices(odd, n_images=10_000) == [], odd
    assert lt.selection_indices({"points": [{"customdata": [9]}, {"customdata": [10]}]}, n_images=10) == [9]
    huge = {"points": [{"customdata": [i]} for i in range(3 * lt.MAX_SELECTED_POINTS)]}
    t0 = time.perf_counter()
    assert len(lt.selection_indices(huge)) == lt.MAX_SELECTED_POINTS
    assert time.perf_counter() - t0 < 5.0


def test_map_figure_traces():
    codes, labels = clustered_codes(n=90)
    proj = fit_projection(codes, "pca", 2)
    fig = lt.map_figure(proj, labels, ["a", "b", "c"], highlight=[4], own=np.array([0.5, 0.5]))
    names = [t.name for t in fig.data]
    assert names == ["a", "b", "c", "selected", "your image"]
    assert sum(len(t.x) for t in fig.data[:3]) == 90
    for t in fig.data[:3]:                                   # customdata = test index, at that index's position
        i = int(t.customdata[0])
        assert (t.x[0], t.y[0]) == (proj.coords[i, 0], proj.coords[i, 1]) and labels[i] == names.index(t.name)
    assert list(fig.data[3].customdata) == [4] and fig.data[4].customdata[0] == -1
    values = np.arange(90, dtype=np.float32)
    fig = lt.map_figure(fit_projection(codes, "pca", 3), labels, ["a", "b", "c"], values=values, value_name="MSE")
    assert len(fig.data) == 1 and fig.data[0].type == "scatter3d"
    np.testing.assert_array_equal(fig.data[0].marker.color, values)


def test_coords_csv():
    codes, labels = clustered_codes(n=20, d=3)
    proj = fit_projection(codes, "pca", 2)
    lines = lt.coords_csv(proj, labels, ["a", "b", "c"], codes).decode().splitlines()
    assert lines[0] == "index,label,class,pca_x,pca_y,z0,z1,z2" and len(lines) == 21
    first = lines[1].split(",")
    assert first[:3] == ["0", str(labels[0]), "abc"[labels[0]]]
    assert float(first[3]) == pytest.approx(proj.coords[0, 0], rel=1e-5)


# --- background jobs and UMAP -------------------------------------------------------------------------
def test_projection_jobs_run_once_per_key_and_report_progress():
    jobs = lt.ProjectionJobs(keep=2)
    gate = threading.Event()
    calls = []

    def work(progress):
        calls.append(1)
        progress(0.5, "half way")
        gate.wait(5)
        return "done"

    job = jobs.submit("a", work)
    assert jobs.submit("a", work) is job                     # the same key is not started twice
    for _ in range(100):
        if job.text == "half way":
            break
        time.sleep(0.01)
    assert job.fraction == 0.5 and not job.future.done()
    gate.set()
    assert job.future.result(5) == "done" and calls == [1]
    for key in "bcd":
        jobs.submit(key, lambda progress: key).future.result(5)
    assert jobs.get("a") is None and jobs.get("d") is not None    # finished results kept: the newest 2 (+ running)


def test_failed_jobs_are_retried():
    jobs = lt.ProjectionJobs()
    job = jobs.submit("k", lambda progress: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        job.future.result(5)
    assert jobs.submit("k", lambda progress: 7).future.result(5) == 7


def test_umap_warmup_runs_again_once_the_projection_process_has_exited(monkeypatch):
    class Worker:                                      # the projection process's handle, without a process
        warm_seconds = None

        def __init__(self):
            self.warms, self.current = 0, "not started"

        def warm(self):
            self.warms += 1
            self.current = "done"

        def state(self):
            return self.current

    worker = Worker()
    monkeypatch.setattr(projection_worker, "WORKER", worker)
    monkeypatch.setattr(lt, "_warmup", {"state": "not started", "seconds": None, "thread": None})
    assert lt.start_umap_warmup(force=True) is True
    lt._warmup["thread"].join(5)
    assert lt.start_umap_warmup(force=True) is False          # that process holds the compiled code
    worker.current = "not started"                             # it exited after its idle time
    assert lt.start_umap_warmup(force=True) is True
    lt._warmup["thread"].join(5)
    assert worker.warms == 2 and lt.umap_warmup_state()["state"] == "done"


@pytest.mark.parametrize("stored, method, tuned, staged, expected", [
    ({"pca": 1, "umap": 1}, "pca", False, False, False),     # a class on stored maps needs no UMAP process
    ({"pca": 1, "umap": 1}, "umap", False, False, False),
    ({"pca": 1, "umap": 1}, "umap", True, False, True),       # other neighbours: a new fit
    ({"pca": 1, "umap": 1}, "umap", False, True, True),       # its stages: a new fit
    ({"pca": 1, "umap": 1}, "tsne", True, False, False),      # t-SNE needs no numba
    ({"pca": 1}, "pca", False, False, True),                  # a model trained here: UMAP is a click away
    ({}, "pca", False, False, True),
])
def test_umap_is_compiled_only_where_a_umap_map_may_be_fitted(stored, method, tuned, staged, expected):
    assert lt.may_fit_umap(stored, method, tuned=tuned, staged=staged) is expected


def test_umap_progress_is_read_from_its_epoch_bar():
    seen = []
    writer = _TqdmProgress(lambda f, t: seen.append((f, t)), "UMAP")
    writer.write("\r")
    writer.write("\r50/200")
    assert seen == [(0.25, "UMAP (epoch 50 of 200)")]


def test_umap_warmup_starts_once_per_process(monkeypatch):
    monkeypatch.setattr(lt, "_warmup", {"state": "not started", "seconds": None, "thread": None})
    assert lt.start_umap_warmup() is False                    # never under pytest unless forced
    ran = []
    assert lt.start_umap_warmup(force=True, warm=lambda: ran.append(1)) is True
    assert lt.start_umap_warmup(force=True, warm=lambda: ran.append(1)) is False
    lt._warmup["thread"].join(5)
    assert ran == [1] and lt.umap_warmup_state()["state"] == "done"
    monkeypatch.setattr(lt, "_warmup", {"state": "not started", "seconds": None, "thread": None})
    lt.start_umap_warmup(force=True, warm=lambda: 1 / 0)
    lt._warmup["thread"].join(5)
    assert lt.umap_warmup_state()["state"].startswith("failed: division by zero")


# --- the VAE lab --------------------------------------------------------------------------------------
def test_is_generative():
    assert vl.is_generative(tiny_model("vae")) and not vl.is_generative(tiny_model("ae"))


@pytest.mark.parametrize("mode", vl.MODES)
def test_paths_start_and_end_at_the_two_codes(mode):
    a, b = torch.tensor([3.0, 0.0, 1.0]), torch.tensor([-1.0, 2.0, 0.5])
    z = vl.path_codes(a, b, 7, mode)
    assert z.shape == (7, 3)
    torch.testing.assert_close(z[0], a)
    torch.testing.assert_close(z[-1], b)


def test_slerp_keeps_the_norm_and_lerp_cuts_inside():
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])
    prof = vl.norm_profile(a, b, 5)
    np.testing.assert_allclose(prof["slerp"], 2.0, rtol=1e-5)
    assert prof["lerp"][2] == pytest.approx(math.sqrt(2))
    assert prof["typical"][0] == pytest.approx(math.sqrt(math.pi / 2))         # E‖z‖ for z ~ N(0, I_2)
    fig = vl.norm_profile_figure(prof, 2)                       # a plain dict plotly itself accepts
    import plotly.graph_objects as go

    checked = go.Figure(fig)
    assert [t.name for t in checked.data] == ["lerp", "slerp", "typical ‖z‖ under the prior (d = 2)"]
    assert list(checked.data[1].y) == pytest.approx(list(prof["slerp"])) and checked.layout.yaxis.rangemode == "tozero"
    with pytest.raises(ConfigError, match="not one of"):
        vl.path_codes(a, b, 5, "cubic")
    with pytest.raises(ConfigError, match="between 2 and 64"):
        vl.path_codes(a, b, 1)


def test_interpolation_matches_the_models_own():
    model, data = tiny_model("vae"), tiny_data()
    xa, xb = data.as_float(slice(0, 1)).view(1, *MNIST), data.as_float(slice(1, 2)).view(1, *MNIST)
    for mode in vl.MODES:
        images, z = vl.interpolation(model, xa, xb, 6, mode)
        assert images.shape == (6, *MNIST) and z.shape == (6, 2)
        torch.testing.assert_close(images, model.interpolate(xa, xb, 6, mode), rtol=1e-5, atol=1e-6)


def test_prior_samples_are_seeded_and_scaled_by_temperature():
    model = tiny_model("vae")
    a = vl.prior_samples(model, 8, seed=3)
    torch.testing.assert_close(a, vl.prior_samples(model, 8, seed=3))
    assert not torch.equal(a, vl.prior_samples(model, 8, seed=4))
    assert a.shape == (8, *MNIST)
    torch.testing.assert_close(vl.prior_codes(5, 2, seed=1, temperature=0.5), 0.5 * vl.prior_codes(5, 2, seed=1))
    torch.testing.assert_close(a, model.sample(8, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ConfigError, match="temperature"):
        vl.prior_codes(4, 2, temperature=0)


def test_traversal_rows_and_values():
    model, data = tiny_model("vae", latent_dim=3), tiny_data()
    x = data.as_float(slice(0, 1)).view(1, *MNIST)
    values = vl.traversal_values(2.0, 5)
    assert values.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    grid = vl.traversal(model, x, [2, 0], values)
    assert grid.shape == (10, *MNIST)
    torch.testing.assert_close(grid[:5], model.traverse(x, 2, values))
    with pytest.raises(ConfigError, match="dimension 3 does not exist"):
        vl.traversal(model, x, [3], values)
    assert vl.traversal_rows(np.array([0.1, 2.0, 0.0, 1.0]), limit=3) == [1, 3, 0]


def test_kl_per_dim_sums_to_the_models_kl():
    model, data = tiny_model("vae", latent_dim=3), tiny_data()
    kl = vl.kl_per_dim(model, data, batch_size=7)
    with torch.no_grad():
        mu, logvar = model.posterior(data.as_float().view(-1, *MNIST))
    assert kl.shape == (3,)
    assert float(kl.sum()) == pytest.approx(float(model.kl_divergence(mu, logvar).mean()), rel=1e-5)


def test_manifold_grid_shape_and_orientation():
    model = tiny_model("vae")
    even = vl.grid_axis(5, "even", 2.0)
    assert even.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    quant = vl.grid_axis(5, "quantile")
    np.testing.assert_allclose(quant, -quant[::-1], atol=1e-12)
    assert quant[2] == 0 and quant[-1] == pytest.approx(1.2815516)                  # Φ⁻¹(0.9)
    images = vl.manifold(model, even)
    assert images.shape == (25, *MNIST)
    z = vl.manifold_codes(even)
    assert z[0].tolist() == [-2.0, 2.0] and z[4].tolist() == [2.0, 2.0] and z[-1].tolist() == [2.0, -2.0]
    torch.testing.assert_close(images[0], model.decode(torch.tensor([[-2.0, 2.0]]))[0])
    with pytest.raises(ConfigError, match="needs a 2-D latent"):
        vl.manifold(tiny_model("vae", latent_dim=3), even)
    with pytest.raises(ConfigError, match="spacing"):
        vl.grid_axis(5, "log")


def test_codes_figure_and_csv():
    codes, labels = clustered_codes(n=30, d=2)
    fig = vl.codes_figure(codes, labels, ["a", "b", "c"], vl.grid_axis(5, "even", 2.0))
    assert [t.name for t in fig.data] == ["a", "b", "c"] and fig.layout.xaxis.range == (-2.5, 2.5)
    lines = vl.codes_csv(codes, labels, ["a", "b", "c"]).decode().splitlines()
    assert lines[0] == "index,label,class,mu_0,mu_1" and len(lines) == 31


def test_traversals_draw_at_most_max_drawn_rows_of_a_large_latent():
    """A visitor's VAE with a 1024-d latent and "all" dimensions: 64 rows, the most informative first, not
    1024 rows of full tiles (~155 MB a picture)."""
    d, cap = 1024, vl.MAX_DRAWN_ROWS
    kl = np.linspace(0.0, 2.0, d)                                   # z1023 the most informative
    informative = vl.informative_dims(kl)
    rows, wanted = vl.traversal_dims(kl, "informative")
    assert rows == informative[:cap] and rows[0] == d - 1 and wanted == len(informative) > cap
    rows, wanted = vl.traversal_dims(kl, "all")
    assert rows == list(range(d - 1, d - 1 - cap, -1)) and wanted == d
    assert vl.traversal_dims(np.zeros(d), "informative") == (list(range(cap)), d)    # collapsed: every dimension
    assert vl.traversal_dims(kl, "7") == ([7], 1)
    assert vl.traversal_dims(np.array([0.0, 1.5]), "all") == ([1, 0], 2)
    with pytest.raises(ConfigError, match="dimension 1024 does not exist"):
        vl.traversal_dims(kl, "1024")
    model, data = tiny_model("vae", latent_dim=d), tiny_data(n=2)
    x = data.as_float(slice(0, 1)).view(1, *MNIST)
    values = vl.traversal_values(3.0, 15)
    with pytest.raises(ConfigError, match="at most 64"):
        vl.traversal(model, x, vl.traversal_rows(kl, limit=None), values)          # never 1024 rows at once
    rows, _ = vl.traversal_dims(kl, "all")
    grid = vl.traversal_grid(vl.traversal(model, x, rows, values), rows, kl, scale=2, per_band=16)
    assert grid.shape[0] >= cap * 56 and grid.nbytes < 12 * 2**20                 # 64 rows of 56-px tiles
