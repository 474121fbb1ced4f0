"""Latent maps of a model: the codes of a split, their 2-D/3-D projections, new codes placed on a
projection, nearest neighbours in code space, and the maps a model folder stores (maps.npz).

A map is a `Projection`: coordinates for (a subset of) the test split plus a way to place a new code
on it. How a new code is placed depends on what the map is:
- PCA computed here: the fitted projection itself (exact);
- PCA from a model's precomputed maps.npz: PCA is an affine function of the codes, so an affine
  least-squares fit of the stored coordinates on the codes recovers it (exact up to float error);
- UMAP computed in this process: the fitted reducer's `.transform` (UMAP's own out-of-sample embedding);
- UMAP from maps.npz or from the app's projection process (`aecore.lab.projection_worker`: a
  reducer cannot leave it), and t-SNE (which has no transform): the distance-weighted mean of the
  map positions of the k nearest test codes. An approximation, and the page says so.

maps.npz is written when a model is saved (`aecore.pipeline`: the zoo build and the app's training
jobs) with `project`, and read back by `read_maps`; `from_maps` turns one of its arrays into a
`Projection` when it belongs to the test split at hand.

torch is imported where it is used (codes, nearest neighbours), not with this module: the projection
process (`aecore.lab.projection_worker`) fits maps with it and stays free of torch's memory.
"""

from __future__ import annotations

import io
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from aecore.atomic import atomic_write
from aecore.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from aecore.data.base import ImageData

MAPS = "maps.npz"
METHODS = ("pca", "umap", "tsne", "code")
METHOD_LABELS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE", "code": "Code axes"}
METRICS = ("euclidean", "cosine")
PLACE_K = 10                     # neighbours averaged to place a new code on a map without a transform
Progress = Callable[[float | None, str], None]   # (fraction done or None, what is happening)


# --- codes and the stored maps ----------------------------------------------------------------------
def codes_of(model: torch.nn.Module, data: ImageData, batch_size: int = 1000) -> torch.Tensor:
    """(N, d) codes of every image (VAEs: the posterior mean)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            x = data.as_float(slice(start, min(start + batch_size, len(data)))).to(device)
            out.append(model.encode(x.view(-1, *model.config.input_shape)).reshape(x.shape[0], -1).float().cpu())
    return torch.cat(out)


class CodePCA:
    """PCA of codes in numpy: scikit-learn's `PCA(n_components=dims)` (same axes, same signs: each
    component's largest entry positive), fitted from the (d, d) covariance in float64.

    Why not scikit-learn's: importing it in the app server brings scipy and pandas' pyarrow, about
    100 MB of the server's memory for one eigendecomposition; and not `aecore.pca.PCA`, whose torch
    the projection process never imports."""

    def __init__(self, codes: np.ndarray, dims: int):
        x = np.asarray(codes, dtype=np.float64)                          # (N, d)
        if not 1 <= dims <= x.shape[1]:
            raise ConfigError(f"PCA of {x.shape[1]}-dimensional codes cannot keep {dims} components")
        if len(x) < 2:
            raise DataError(f"PCA needs at least 2 codes, got {len(x)}")
        if not np.isfinite(x).all():
            raise DataError("the codes contain NaN or infinite values: PCA cannot map them")
        self.mean = x.mean(0)                                            # (d,)
        centred = x - self.mean
        _, vectors = np.linalg.eigh(centred.T @ centred)                 # ascending eigenvalues
        components = vectors[:, ::-1][:, :dims].T.copy()                 # (dims, d), largest variance first
        largest = np.abs(components).argmax(1)
        components *= np.sign(components[np.arange(dims), largest])[:, None]
        self.components = components

    def transform(self, codes: np.ndarray) -> np.ndarray:
        """(N, d) or (d,) codes -> (N, dims) float32 coordinates."""
        x = np.atleast_2d(np.asarray(codes, dtype=np.float64))
        return ((x - self.mean) @ self.components.T).astype(np.float32)


def project(codes: np.ndarray, method: str, *, dims: int = 2, seed: int = 0) -> np.ndarray:
    """(N, d) -> (N, dims) with 'pca', 'umap' or 'tsne' (seeded): the maps that maps.npz stores.
    `fit_projection` gives the same PCA; its UMAP runs fewer epochs on a large split, to stay interactive."""
    codes = np.asarray(codes, dtype=np.float32)
    if codes.shape[1] <= dims and method != "umap":
        return np.pad(codes, ((0, 0), (0, dims - codes.shape[1])))
    if method == "pca":
        return CodePCA(codes, dims).transform(codes)
    if method == "umap":
        import umap
        return umap.UMAP(n_components=dims, random_state=seed, n_jobs=1).fit_transform(codes).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(n_components=dims, random_state=seed, init="pca").fit_transform(codes).astype(np.float32)
    raise ConfigError(f"unknown projection {method!r}; choose pca, umap or tsne")


def write_maps(path: Path, codes: torch.Tensor, labels: torch.Tensor,
               methods: tuple[str, ...] = ("pca", "umap")) -> dict[str, np.ndarray]:
    """maps.npz: one (N, 2) array per method (pca, umap), 'labels' (N,) int16; atomic. Coordinates are
    stored as float16 (plenty for a scatter plot; half the size of the zoo's maps) and read as float32.
    Codes with NaN or infinite values (a diverged model's) make no maps: nothing is written, {} comes
    back, and the Latent map page says why when it is opened; the model itself is saved all the same."""
    x = codes.numpy()
    if not np.isfinite(x).all():
        return {}
    maps = {m: project(x, m) for m in methods}
    maps["labels"] = labels.numpy().astype(np.int16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in maps.items()})
    atomic_write(path / MAPS, buffer.getvalue())
    return maps


def read_maps(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a model folder's maps.npz ({} when it has none); never unpickles."""
    file = Path(path) / MAPS
    if not file.is_file():
        return {}
    with np.load(file, allow_pickle=False) as npz:
        return {k: npz[k].astype(np.float32) if npz[k].dtype.kind == "f" else npz[k] for k in npz.files}


# --- projections and placement -------------------------------------------------------------------
@dataclass
class Projection:
    """Map coordinates of test images `index` (M,) -> `coords` (M, dims), and how to place new codes."""

    method: str
    dims: int
    coords: np.ndarray                     # (M, dims) float32
    index: np.ndarray                      # (M,) int64: row i is test image index[i]
    source: str                            # "precomputed" (maps.npz) or "computed"
    seconds: float = 0.0
    transform: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    placement: str = ""                    # how new codes are placed, in words for a caption

    def place(self, new_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(B, d) new codes -> (B, dims) map positions. `codes` (N, d) are the whole test split's."""
        new_codes = np.atleast_2d(np.asarray(new_codes, dtype=np.float32))
        if new_codes.shape[1] != codes.shape[1]:
            raise DataError(f"the new code has {new_codes.shape[1]} dimensions, the map's codes {codes.shape[1]}")
        if self.transform is not None:
            return np.asarray(self.transform(new_codes), dtype=np.float32).reshape(len(new_codes), self.dims)
        return knn_place(new_codes, codes[self.index], self.coords)

    def position_of(self, test_index: int) -> np.ndarray | None:
        """(dims,) map position of test image `test_index`, or None when it is not on this map."""
        rows = np.nonzero(self.index == int(test_index))[0]
        return self.coords[rows[0]] if rows.size else None


def _pad(codes: np.ndarray, dims: int) -> np.ndarray:
    """A code with no more than `dims` dimensions is its own map (zeros for the missing axes)."""
    return np.pad(codes, ((0, 0), (0, dims - codes.shape[1]))).astype(np.float32)


def from_maps(maps: Mapping[str, np.ndarray], method: str, dims: int,
              labels: np.ndarray | Tensor) -> tuple[Projection | None, str]:
    """The precomputed map of `method` when maps.npz has it for exactly this test split, else
    (None, why not). maps.npz holds 2-D maps of the full test split in order; its labels must match."""
    if method not in maps:
        return None, f"maps.npz has no {METHOD_LABELS.get(method, method)} map"
    if dims != 2:
        return None, "maps.npz holds 2-D maps only"
    coords = np.asarray(maps[method], dtype=np.float32)
    labels = np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2:
        return None, f"maps.npz's {method} array has shape {list(coords.shape)}, not (N, 2)"
    if coords.shape[0] != labels.shape[0]:
        return None, (f"maps.npz has {coords.shape[0]:,} points, this test split {labels.shape[0]:,} images "
                      "(a different split)")
    if "labels" in maps and not np.array_equal(np.asarray(maps["labels"]).astype(np.int64), labels.astype(np.int64)):
        return None, "maps.npz's labels differ from this test split's (another copy or order of the data)"
    if not np.isfinite(coords).all():
        return None, "maps.npz has non-finite coordinates"
    return Projection(method, 2, coords, np.arange(coords.shape[0]), "precomputed"), ""


def attach_placement(proj: Projection, codes: np.ndarray) -> Projection:
    """Give a precomputed map its way of placing new codes (see the module docstring)."""
    if proj.transform is not None or proj.placement:
        return proj
    if proj.method in ("pca", "code"):
        transform, residual = affine_fit(codes[proj.index], proj.coords)
        if residual < 1e-3:
            proj.transform = transform
            proj.placement = ("the stored PCA map recovered as an affine function of the codes "
                              f"(relative residual {residual:.1e})")
            return proj
    proj.placement = (f"at the distance-weighted mean map position of its {PLACE_K} nearest test codes "
                      f"(the precomputed {METHOD_LABELS.get(proj.method, proj.method)} map has no transform here)")
    return proj


def affine_fit(x: np.ndarray, y: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """Least-squares y ≈ [x, 1] W; returns the map and the residual RMS relative to y's spread."""
    x64 = np.hstack([x.astype(np.float64), np.ones((x.shape[0], 1))])        # (N, d+1)
    w, *_ = np.linalg.lstsq(x64, y.astype(np.float64), rcond=None)           # (d+1, dims)
    residual = float(np.sqrt(np.mean((x64 @ w - y) ** 2)) / (np.std(y) + 1e-12))

    def transform(new: np.ndarray) -> np.ndarray:
        new = np.atleast_2d(new).astype(np.float64)
        return (np.hstack([new, np.ones((new.shape[0], 1))]) @ w).astype(np.float32)

    return transform, residual


def knn_place(new_codes: np.ndarray, codes: np.ndarray, coords: np.ndarray, k: int = PLACE_K) -> np.ndarray:
    """(B, d) -> (B, dims): weights 1/distance over the k nearest of `codes` (M, d) at `coords` (M, dims);
    a new code equal to a test code lands exactly on that code's map position."""
    idx, dist = nearest(codes, new_codes, min(k, len(codes)))
    out = np.empty((len(new_codes), coords.shape[1]), dtype=np.float32)
    for row in range(len(new_codes)):
        d, i = dist[row], idx[row]
        exact = d <= 1e-6 * (1.0 + float(np.abs(codes).max(initial=0.0)))
        if exact.any():
            out[row] = coords[i[exact]].mean(0)
        else:
            w = 1.0 / d
            out[row] = (coords[i] * w[:, None]).sum(0) / w.sum()
    return out


def subsample(n_total: int, n: int, seed: int) -> np.ndarray:
    """Sorted seeded random subset of range(n_total) of size min(n, n_total)."""
    if n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(int(seed))
    return np.sort(rng.choice(n_total, size=int(n), replace=False))


def fit_projection(codes: np.ndarray, method: str, dims: int = 2, *, seed: int = 0,
                   index: np.ndarray | None = None, progress: Progress | None = None) -> Projection:
    """Project codes[index] (all when None) with PCA, UMAP, t-SNE or the raw code axes (seeded).

    PCA of a code with <= dims dimensions is the code itself (padded), as in maps.npz (`project`).
    UMAP reports its epoch progress through `progress`; t-SNE reports only that it is running.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
    if dims not in (2, 3):
        raise ConfigError(f"maps are 2-D or 3-D, not {dims}-D")
    codes = np.asarray(codes, dtype=np.float32)
    index = np.arange(len(codes)) if index is None else np.asarray(index, dtype=np.int64)
    x = codes[index]
    if len(x) < 5:
        raise DataError(f"a map needs at least 5 codes, got {len(x)}")
    if not np.isfinite(x).all():
        raise DataError("the model's codes contain NaN or infinite values; it cannot be mapped")
    t0 = time.perf_counter()
    name = METHOD_LABELS[method]
    transform, placement = None, ""
    if method == "code" or (method == "pca" and x.shape[1] <= dims):
        if x.shape[1] > dims:
            raise ConfigError(f"the code has {x.shape[1]} dimensions: code axes make a map only up to {dims}")
        coords = _pad(x, dims)
        transform = lambda new: _pad(np.atleast_2d(new).astype(np.float32), dims)   # noqa: E731
        placement = "at its own code (the map's axes are the code's)"
    elif method == "pca":
        pca = CodePCA(x, dims)
        coords = pca.transform(x)
        transform, placement = pca.transform, "with the fitted PCA projection (exact)"
    elif method == "umap":
        import umap

        if progress:
            progress(None, "UMAP: finding nearest neighbours and the initial layout")
        writer = _TqdmProgress(progress, "UMAP: optimising the layout") if progress else None
        # 200 epochs, UMAP's own choice above 10,000 points (it takes 500 below): the layout epochs are
        # most of the time, and 200 keep a 10,000-point map interactive on a small CPU
        reducer = umap.UMAP(n_components=dims, random_state=seed, n_jobs=1, n_neighbors=min(15, len(x) - 1),
                            n_epochs=200 if len(x) > 2000 else None,
                            tqdm_kwds={"disable": writer is None, "file": writer, "bar_format": "{n}/{total}",
                                       "mininterval": 0.25})
        coords = reducer.fit_transform(x).astype(np.float32)
        transform, placement = reducer.transform, "with the fitted UMAP reducer's transform"
    else:
        from sklearn.manifold import TSNE

        if progress:
            progress(None, f"t-SNE of {len(x):,} codes")
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, (len(x) - 1) / 3))
        # one OpenMP thread: on a busy small CPU, sklearn's Barnes-Hut threads spin against each other
        # (several times slower than one thread: bench/README.md)
        with threadpool_limits(limits=1, user_api="openmp"):
            coords = TSNE(n_components=dims, random_state=seed, init="pca",
                          perplexity=perplexity).fit_transform(x)
        coords = coords.astype(np.float32)
    proj = Projection(method, dims, coords, index, "computed", time.perf_counter() - t0, transform,
                      placement or f"at the distance-weighted mean map position of its {PLACE_K} nearest "
                                   f"mapped codes ({name} has no transform for new points)")
    if progress:
        progress(1.0, f"{name} done")
    return proj


class _TqdmProgress(io.TextIOBase):
    """A file for UMAP's tqdm bar (bar_format '{n}/{total}') that forwards the fraction of epochs done."""

    _pattern = re.compile(r"(\d+)/(\d+)")

    def __init__(self, progress: Progress, text: str):
        super().__init__()
        self.progress, self.text = progress, text

    def write(self, s: str) -> int:
        found = self._pattern.findall(s)
        if found:
            n, total = (int(v) for v in found[-1])
            if total:
                self.progress(n / total, f"{self.text} (epoch {n} of {total})")
        return len(s)

    def flush(self) -> None:
        pass


# --- nearest neighbours ------------------------------------------------------------------------------
# The app's shared codes are read-only arrays and `nearest` only reads them. One filter for the process,
# set at import: warnings.catch_warnings() per call swaps the global filter list, which sessions running
# `nearest` in threads at once would restore out of order.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def nearest(codes: np.ndarray, query: np.ndarray, k: int, metric: str = "euclidean",
            exclude: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of `codes` (N, d) for each query (B, d): (indices (B, k), distances (B, k)),
    closest first. Cosine distance is 1 - cos; `exclude` (one row per query, or None) leaves out e.g.
    the query image itself."""
    import torch

    if metric not in METRICS:
        raise ConfigError(f"unknown distance {metric!r}; use one of {', '.join(METRICS)}")
    c = torch.as_tensor(np.asarray(codes, dtype=np.float32))   # read-only shared codes: no warning (above)
    q = torch.as_tensor(np.atleast_2d(np.asarray(query, dtype=np.float32)))
    if q.shape[1] != c.shape[1]:
        raise DataError(f"query codes have {q.shape[1]} dimensions, the test codes {c.shape[1]}")
    if not bool(torch.isfinite(q).all()):
        raise DataError("the query code is not a finite number (NaN or infinite): the model's encoder "
                        "gave no usable code for this image, so it has no nearest neighbours")
    # float64 for both: in float32, 1 - cos of near-parallel codes (a 2-D latent has thousands) rounds
    # to a few values near 0, and which of those ties came first changed with the CPU's code path.
    c, q = c.double(), q.double()
    if metric == "cosine":
        cn = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
        qn = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
        dist = (1.0 - qn @ cn.T).clamp_min(0.0)                               # (B, N)
    else:
        dist = torch.cdist(q, c)                                              # (B, N)
    if exclude is not None:
        for row, i in enumerate(exclude):
            if i is not None and 0 <= int(i) < dist.shape[1]:
                dist[row, int(i)] = float("inf")
    k = max(1, min(int(k), dist.shape[1] - (0 if exclude is None else 1)))
    values, idx = torch.topk(dist, k, dim=1, largest=False, sorted=False)
    idx, order = idx.sort(dim=1)                        # then by distance, stably: of equals, lower index first
    values, order = values.gather(1, order).sort(dim=1, stable=True)
    return idx.gather(1, order).numpy(), values.float().numpy()
