"""The app server's process stays free of libraries it does not need: torchvision (which imports
torch._dynamo and triton), scikit-learn and scipy, and triton without CUDA. Each costs the server memory
for as long as it runs (about 160, 100 and 75 MB, measured), so the few things the server used them for
are done here: an image grid, a PCA map, a normal quantile. These tests check that they give the same
answers, and that the libraries stay out."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from aecore.errors import ConfigError, DataError
from aecore.lab.vae import grid_axis
from aecore.maps import CodePCA, fit_projection, project, read_maps, write_maps
from aecore.viz import image_grid, tile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shape, nrow, padding, pad_value", [
    ((1, 1, 28, 28), 8, 2, 1.0),        # a lone image: unpadded
    ((5, 1, 28, 28), 3, 2, 1.0),        # a last row with empty cells
    ((16, 3, 32, 32), 8, 0, 0.5),
    ((9, 3, 7, 5), 4, 3, 0.0),          # not square
    ((2, 1, 4, 4), 8, 1, 1.0),          # fewer images than a row
])
def test_tile_lays_images_out_as_torchvision_make_grid(shape, nrow, padding, pad_value):
    from torchvision.utils import make_grid

    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    expected = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    assert torch.equal(tile(images, nrow=nrow, padding=padding, pad_value=pad_value), expected)


def test_tile_refuses_what_is_not_a_batch_of_images():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) batch of at least one image, got shape \(28, 28\)"):
        tile(torch.zeros(28, 28))
    with pytest.raises(ValueError, match=r"at least one image, got shape \(0, 1, 28, 28\)"):
        tile(torch.zeros(0, 1, 28, 28))


def test_image_grid_is_uint8_rgb_with_white_padding():
    grid = image_grid(torch.zeros(3, 784), nrow=2, padding=1)        # flat MNIST-sized codes -> 28x28
    assert grid.shape == (1 + 2 * 29, 1 + 2 * 29, 3) and grid.dtype == np.uint8
    assert grid[0].min() == 255 and grid[1, 1].max() == 0 and grid[-2, -2].min() == 255   # empty 4th cell


@pytest.mark.parametrize("n, d, dims", [(2000, 32, 2), (300, 64, 3), (7, 4, 2), (1000, 3, 2)])
def test_code_pca_gives_scikit_learns_axes_and_signs(n, d, dims):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(n)
    codes = (rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d)).astype(np.float32)
    ours, theirs = CodePCA(codes, dims), PCA(n_components=dims).fit(codes)
    np.testing.assert_allclose(ours.components, theirs.components_, atol=1e-4)
    np.testing.assert_allclose(ours.transform(codes), theirs.transform(codes), atol=2e-3, rtol=1e-4)
    assert ours.transform(codes[0]).shape == (1, dims) and ours.transform(codes).dtype == np.float32
    np.testing.assert_allclose(project(codes, "pca", dims=dims), theirs.transform(codes), atol=2e-3, rtol=1e-4)
    fitted = fit_projection(codes, "pca", dims)
    np.testing.assert_allclose(fitted.coords, theirs.transform(codes), atol=2e-3, rtol=1e-4)


def test_code_pca_refuses_what_it_cannot_map_with_one_line():
    with pytest.raises(ConfigError, match="PCA of 2-dimensional codes cannot keep 3 components"):
        CodePCA(np.zeros((10, 2), np.float32), 3)
    with pytest.raises(DataError, match="PCA needs at least 2 codes, got 0"):
        CodePCA(np.zeros((0, 8), np.float32), 2)
    diverged = np.ones((50, 8), np.float32)
    diverged[3, 2] = np.nan
    with pytest.raises(DataError, match="the codes contain NaN or infinite values: PCA cannot map them"):
        project(diverged, "pca")


def test_a_diverged_models_codes_write_no_maps_and_raise_nothing(tmp_path):
    codes = torch.ones(20, 8)
    codes[0, 0] = float("inf")
    assert write_maps(tmp_path, codes, torch.zeros(20, dtype=torch.long), methods=("pca",)) == {}
    assert read_maps(tmp_path) == {}
    fine = write_maps(tmp_path, torch.randn(20, 8, generator=torch.Generator().manual_seed(0)),
                      torch.zeros(20, dtype=torch.long), methods=("pca",))
    assert fine["pca"].shape == (20, 2) and set(read_maps(tmp_path)) == {"pca", "labels"}


def test_quantile_grid_axis_is_the_normal_distributions_quantiles():
    from scipy.stats import norm

    for n in (2, 7, 40):
        np.testing.assert_allclose(grid_axis(n, "quantile"), norm.ppf((np.arange(n) + 0.5) / n), rtol=1e-12)
    axis = grid_axis(5, "quantile")
    assert axis[2] == 0.0 and axis[0] == pytest.approx(-statistics.NormalDist().inv_cdf(0.9))


def test_the_server_side_modules_never_import_torchvision_scikit_learn_scipy_or_triton(tmp_path):
    """Every module the app server imports, in a fresh process, and the calls that used those
    libraries (image grid, PCA map, quantile axis) or imported them (an optimizer step): none of them
    loads; triton only where CUDA could use it."""
    script = textwrap.dedent("""
        import importlib, json, pkgutil, sys
        import numpy as np, torch
        import aecore, aecore.lab, pages.common
        for module in pkgutil.iter_modules(aecore.lab.__path__):
            importlib.import_module("aecore.lab." + module.name)
        for name in ("aecore.viz", "aecore.maps", "aecore.store", "aecore.train", "aecore.zoo", "aecore.pipeline"):
            importlib.import_module(name)
        from aecore.lab.vae import grid_axis
        from aecore.maps import fit_projection, project
        from aecore.viz import image_grid
        codes = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
        image_grid(torch.rand(4, 1, 28, 28)); fit_projection(codes, "pca", 2); project(codes, "pca")
        grid_axis(9, "quantile")
        from types import SimpleNamespace
        from aecore.lab.jobs import _warm_imports
        _warm_imports(SimpleNamespace(semi_baselines=False))                        # a Train-page job's start
        layer = torch.nn.Linear(4, 4); opt = torch.optim.Adam(layer.parameters())   # a Train-page job's step:
        layer(torch.ones(2, 4)).sum().backward(); opt.step()                        # imports torch._dynamo
        heavy = ("torchvision", "triton", "sklearn", "scipy", "umap", "numba")
        print(json.dumps(dict(loaded=[name for name in heavy if name in sys.modules],
                              dynamo="torch._dynamo" in sys.modules, cuda=torch.cuda.is_available())))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["dynamo"]                                  # (so triton was asked for, and refused)
    assert out["loaded"] == ([] if not out["cuda"] else [m for m in out["loaded"] if m == "triton"])


def test_kept_out_packages_look_not_installed_and_the_rest_imports_as_before(tmp_path):
    script = textwrap.dedent("""
        import json, sys
        import json.decoder
        from aecore.lab.footprint import keep_out, kept_out
        already = keep_out({"json", "wave"})              # json is imported already: it stays
        try:
            import wave
            outcome = "imported"
        except ModuleNotFoundError as err:
            outcome = str(err)
        again = keep_out({"wave"})                        # refused already: no second finder
        import csv                                        # anything else imports as before
        print(json.dumps(dict(already=already, outcome=outcome, kept=sorted(kept_out()), again=again,
                              finders=sum(type(f).__name__ == "KeptOut" for f in sys.meta_path))))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == dict(
        already=["json"], outcome="No module named 'wave' (kept out of this aecore process)",
        kept=["json", "wave"], again=[], finders=1)


def _resident_kb(wanted) -> int:
    """Resident kB of this process's mappings whose path `wanted` accepts (/proc/self/smaps)."""
    total, counting = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):        # a mapping's header line
                counting = len(fields) >= 6 and wanted(fields[5])
            elif counting and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def _kernel_pages_out() -> bool:
    """Linux 5.4 or later: madvise knows MADV_PAGEOUT."""
    import platform

    if not sys.platform.startswith("linux"):
        return False
    major, minor = (int(part) for part in platform.release().split(".")[:2])
    return (major, minor) >= (5, 4)


needs_pageout = pytest.mark.skipif(not _kernel_pages_out(), reason="needs Linux 5.4+ (MADV_PAGEOUT)")


@needs_pageout
def test_page_out_hands_a_files_pages_back_and_they_read_back_the_same(tmp_path):
    import mmap

    from aecore.lab.footprint import page_out

    path = tmp_path / "pages.bin"
    data = np.random.default_rng(0).integers(0, 256, size=16 << 20, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())                        # clean pages: the kernel reclaims those at once
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        view = memoryview(mapped)
        assert sum(view[i] for i in range(0, len(data), 4096)) >= 0        # every page read in
        before = _resident_kb(lambda p: p == str(path))
        taken = page_out(lambda p: p == str(path))
        after = _resident_kb(lambda p: p == str(path))
        assert taken == 1 and before >= 15 * 1024 and after < before / 4, (before, after)
        assert view.tobytes() == data                                     # read back from the file
        view.release()
    assert page_out(lambda p: False) == 0


@needs_pageout
def test_a_server_without_cuda_hands_back_the_pages_of_torchs_cuda_libraries(tmp_path):
    """torch's CUDA wheel loads its CUDA libraries without a GPU too; their pages go, torch still trains."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: its libraries are the server's to use")
    script = textwrap.dedent("""
        import json, torch
        from aecore.lab.serving import is_gpu_library, page_out_gpu_libraries
        from tests.test_server_footprint import _resident_kb
        before = _resident_kb(is_gpu_library)
        taken = page_out_gpu_libraries()
        after = _resident_kb(is_gpu_library)
        layer = torch.nn.Linear(64, 64); opt = torch.optim.Adam(layer.parameters(), fused=True)
        layer(torch.ones(8, 64)).square().sum().backward(); opt.step()
        trained = bool(torch.isfinite(layer.weight).all())
        print(json.dumps(dict(before=before, after=after, taken=taken, trained=trained)))
    """)
    from aecore.lab.serving import page_out_gpu_libraries

    page_out_gpu_libraries()        # this process maps the same files: the kernel only reclaims unshared pages
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["before"] == 0:
        pytest.skip("this torch is a CPU build: no CUDA libraries are loaded")
    assert out["taken"] > 0 and out["trained"] and out["after"] < out["before"] / 3, out
