"""Latent maps: the test split's codes projected to 2-D or 3-D, nearest neighbours in code space, and
new images placed on a map.

A map is a `Projection`: coordinates for (a subset of) the test split plus a way to place a new code
on it. How a new code is placed depends on what the map is:
- PCA computed here: the fitted projection itself (exact);
- PCA from a model's precomputed maps.npz: PCA is an affine function of the codes, so an affine
  least-squares fit of the stored coordinates on the codes recovers it (exact up to float error);
- UMAP computed here: the fitted reducer's `.transform` (UMAP's own out-of-sample embedding);
- UMAP from maps.npz and t-SNE (which has no transform): the distance-weighted mean of the map
  positions of the k nearest test codes. An approximation, and the page says so.

UMAP's first call in a process JIT-compiles numba code (about a minute on a small CPU), so the app
warms it up in a daemon thread at start (`start_umap_warmup`). Slow projections run in a background
thread (`JOBS`) so a page can show the PCA map meanwhile and poll for the result.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from aecore.data.base import ImageData
from aecore.errors import ConfigError, DataError
from aecore.evaluate import per_image_mse
from aecore.lab.serving import freeze_long_lived

log = logging.getLogger("aecore")

METHODS = ("pca", "umap", "tsne", "code")
METHOD_LABELS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE", "code": "Code axes"}
METRICS = ("euclidean", "cosine")
TSNE_DEFAULT, TSNE_MAX = 2000, 5000
PLACE_K = 10                     # neighbours averaged to place a new code on a map without a transform
Progress = Callable[[float | None, str], None]   # (fraction done or None, what is happening)


# --- maps --------------------------------------------------------------------------------------------
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

    PCA of a code with <= dims dimensions is the code itself (padded), as in the zoo's maps.npz.
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
        from sklearn.decomposition import PCA as SkPCA

        pca = SkPCA(n_components=dims, random_state=seed).fit(x)
        coords = pca.transform(x).astype(np.float32)
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
        # (measured here: 2,000 points 51 s with the default threads, 13 s with one)
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


# --- codes, errors, neighbours --------------------------------------------------------------------
@torch.no_grad()
def recon_errors(model: nn.Module, data: ImageData, *, batch_size: int = 1000) -> np.ndarray:
    """(N,) per-image MSE of the model's deterministic reconstruction on the whole split."""
    model.eval()
    shape, device = tuple(model.config.input_shape), model.device
    out = []
    for start in range(0, len(data), batch_size):
        x = data.as_float(slice(start, min(start + batch_size, len(data)))).to(device).view(-1, *shape)
        out.append(per_image_mse(model.reconstruct(x).float().reshape(x.shape), x).cpu())
    return torch.cat(out).numpy()


def nearest(codes: np.ndarray, query: np.ndarray, k: int, metric: str = "euclidean",
            exclude: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of `codes` (N, d) for each query (B, d): (indices (B, k), distances (B, k)),
    closest first. Cosine distance is 1 - cos; `exclude` (one row per query, or None) leaves out e.g.
    the query image itself."""
    if metric not in METRICS:
        raise ConfigError(f"unknown distance {metric!r}; use one of {', '.join(METRICS)}")
    c = torch.as_tensor(np.asarray(codes, dtype=np.float32))
    q = torch.as_tensor(np.atleast_2d(np.asarray(query, dtype=np.float32)))
    if q.shape[1] != c.shape[1]:
        raise DataError(f"query codes have {q.shape[1]} dimensions, the test codes {c.shape[1]}")
    if metric == "cosine":
        cn = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
        qn = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
        dist = (1.0 - qn @ cn.T).clamp_min(0.0)                               # (B, N)
    else:
        dist = torch.cdist(q.double(), c.double()).float()                    # (B, N), exact for ties
    if exclude is not None:
        for row, i in enumerate(exclude):
            if i is not None and 0 <= int(i) < dist.shape[1]:
                dist[row, int(i)] = float("inf")
    k = max(1, min(int(k), dist.shape[1] - (0 if exclude is None else 1)))
    values, idx = torch.topk(dist, k, dim=1, largest=False, sorted=True)
    return idx.numpy(), values.numpy()


@dataclass
class Detail:
    """One image looked at closely: itself, its reconstruction, its code and its nearest test codes."""

    index: int | None                      # test index, None for the user's own image
    image: Tensor                          # (1, *input_shape) float in [0, 1]
    recon: Tensor                          # (1, *input_shape)
    mse: float
    code: np.ndarray                       # (d,)
    neighbours: np.ndarray                 # (k,) test indices, closest first (the image itself left out)
    distances: np.ndarray                  # (k,)
    neighbour_images: Tensor               # (k, *input_shape)


@torch.no_grad()
def detail(model: nn.Module, data: ImageData, codes: np.ndarray, *, index: int | None = None,
           x: Tensor | None = None, k: int = 8, metric: str = "euclidean") -> Detail:
    """What the page shows for a clicked point (`index`) or the user's image (`x`, (1, *input_shape)):
    the image, its reconstruction and its k nearest neighbours among the test codes (N, d)."""
    model.eval()
    shape = tuple(model.config.input_shape)
    if (index is None) == (x is None):
        raise ConfigError("give either a test index or an image")
    if index is not None:
        if not 0 <= int(index) < len(data):
            raise ConfigError(f"index {index} is outside the test split (0 to {len(data) - 1})")
        index = int(index)
        x = data.as_float(slice(index, index + 1)).view(1, *shape)
        code = np.asarray(codes[index], dtype=np.float32)
    else:
        x = x.float().reshape(1, *shape)
        code = model.encode(x.to(model.device)).reshape(1, -1).float().cpu().numpy()[0]
    recon = model.reconstruct(x.to(model.device)).float().cpu().reshape(x.shape)
    idx, dist = nearest(codes, code[None], k, metric, exclude=[index] if index is not None else None)
    neighbours = data.as_float(torch.as_tensor(idx[0])).view(-1, *shape)
    return Detail(index, x, recon, float(per_image_mse(recon, x)[0]), code, idx[0], dist[0], neighbours)


def selection_indices(selection: Mapping[str, Any] | None) -> list[int]:
    """Test-image indices of the points in a st.plotly_chart selection (from each point's customdata,
    which map_figure sets to the test index), in selection order, without duplicates."""
    out: list[int] = []
    for point in (selection or {}).get("points", []) or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        try:
            value = int(data)
        except (TypeError, ValueError):
            continue                                   # e.g. the own-image marker: not a test image
        if value >= 0 and value not in out:
            out.append(value)
    return out


# --- figures and exports -----------------------------------------------------------------------------
def class_colours(n: int) -> list[str]:
    from plotly.colors import qualitative

    palette = qualitative.D3 if n <= 10 else qualitative.Alphabet
    return [palette[i % len(palette)] for i in range(n)]


def map_figure(proj: Projection, labels: np.ndarray, classes: Sequence[str], *, values: np.ndarray | None = None,
               value_name: str = "", highlight: Sequence[int] = (), own: np.ndarray | None = None,
               title: str = "", height: int = 620) -> Any:
    """A plotly scatter of the map: one trace per class (legend toggles classes), or one trace coloured
    by `values` (N,) when given. Every point's customdata is its test index; hover shows index, class
    and position. `highlight`: test indices ringed; `own`: (dims,) position of the user's image (★)."""
    import plotly.graph_objects as go

    three = proj.dims == 3
    scatter = go.Scatter3d if three else go.Scattergl
    labels = np.asarray(labels)[proj.index]
    size = 2.5 if three else 5
    axes = ("x", "y", "z")[:proj.dims]
    hover = ("#%{customdata} · %{text}<br>" + ", ".join(f"{a} %{{{a}:.2f}}" for a in axes))

    def xyz(rows: np.ndarray) -> dict[str, np.ndarray]:
        return {a: proj.coords[rows, i] for i, a in enumerate(axes)}

    fig = go.Figure()
    if values is None:
        colours = class_colours(len(classes))
        for k, name in enumerate(classes):
            rows = np.nonzero(labels == k)[0]
            if rows.size:
                fig.add_trace(scatter(**xyz(rows), mode="markers", name=str(name), customdata=proj.index[rows],
                                      text=[str(name)] * rows.size, hovertemplate=hover + "<extra></extra>",
                                      marker=dict(size=size, color=colours[k], opacity=0.75)))
        rows = np.nonzero((labels < 0) | (labels >= len(classes)))[0]
        if rows.size:
            fig.add_trace(scatter(**xyz(rows), mode="markers", name="unlabelled", customdata=proj.index[rows],
                                  text=["unlabelled"] * rows.size, hovertemplate=hover + "<extra></extra>",
                                  marker=dict(size=size, color="#999999", opacity=0.6)))
    else:
        v = np.asarray(values, dtype=np.float32)[proj.index]
        names = [str(classes[c]) if 0 <= c < len(classes) else "unlabelled" for c in labels]
        fig.add_trace(scatter(**xyz(np.arange(len(v))), mode="markers", name=value_name, customdata=proj.index,
                              text=[f"{n} · {value_name} {x:.4g}" for n, x in zip(names, v)],
                              hovertemplate=hover + "<extra></extra>", showlegend=False,
                              marker=dict(size=size, color=v, colorscale="Viridis", opacity=0.8,
                                          colorbar=dict(title=dict(text=value_name)))))
    rows = np.asarray([r for i in highlight for r in np.nonzero(proj.index == int(i))[0]], dtype=np.int64)
    if rows.size:
        fig.add_trace(scatter(**xyz(rows), mode="markers", name="selected", customdata=proj.index[rows],
                              text=["selected"] * rows.size, hovertemplate=hover + "<extra></extra>",
                              marker=dict(size=size * 3.2, color="rgba(0,0,0,0)",
                                          line=dict(color="black", width=2))))
    if own is not None:
        own = np.asarray(own, dtype=np.float32).reshape(-1)
        fig.add_trace(scatter(**{a: [float(own[i])] for i, a in enumerate(axes)}, mode="markers", name="your image",
                              customdata=[-1], text=["your image"], hovertemplate=hover + "<extra></extra>",
                              marker=dict(size=18 if not three else 9, symbol="diamond" if three else "star",
                                          color="black", line=dict(color="white", width=1.5))))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40 if title else 30, b=10), title=title or None,
                      legend=dict(itemsizing="constant"))
    return fig


def coords_csv(proj: Projection, labels: np.ndarray, classes: Sequence[str], codes: np.ndarray | None = None) -> bytes:
    """CSV with one row per mapped test image: index, label, class, map coordinates (+ the full code)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    axes = ["x", "y", "z"][:proj.dims]
    code_cols = [f"z{j}" for j in range(codes.shape[1])] if codes is not None else []
    writer.writerow(["index", "label", "class", *[f"{proj.method}_{a}" for a in axes], *code_cols])
    labels = np.asarray(labels)
    for row, i in enumerate(proj.index):
        c = int(labels[i])
        name = classes[c] if 0 <= c < len(classes) else ""
        extra = [f"{v:.6g}" for v in codes[i]] if codes is not None else []
        writer.writerow([int(i), c, name, *[f"{v:.6g}" for v in proj.coords[row]], *extra])
    return buffer.getvalue().encode()


# --- background projections ------------------------------------------------------------------------
@dataclass
class Job:
    future: Future
    started: float
    fraction: float | None = None
    text: str = "queued"

    def report(self, fraction: float | None, text: str) -> None:
        self.fraction, self.text = fraction, text

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class ProjectionJobs:
    """Slow projections in one background worker thread, keyed by what they depend on; finished
    results stay as a small cache (oldest dropped first)."""

    def __init__(self, keep: int = 12):
        self.keep = keep
        self._jobs: dict[Hashable, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aecore-map")

    def submit(self, key: Hashable, fn: Callable[[Progress], Projection]) -> Job:
        """Start fn(progress) for `key` unless it is already running or done; returns its job."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not (job.future.done() and job.future.exception() is not None):
                return job
            job = Job(future=Future(), started=time.perf_counter())

            def run() -> Projection:
                job.started = time.perf_counter()
                job.report(None, "starting")
                return fn(job.report)

            job.future = self._pool.submit(run)
            self._jobs[key] = job
            done = [k for k, j in self._jobs.items() if j.future.done()]
            for old in done[: max(0, len(done) - self.keep)]:
                del self._jobs[old]
            return job

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)


JOBS = ProjectionJobs()


# --- UMAP warm-up ------------------------------------------------------------------------------------
_warmup_lock = threading.Lock()
_warmup: dict[str, Any] = {"state": "not started", "seconds": None, "thread": None}


def _warm_umap() -> None:
    """A tiny fit + transform that goes through the same numba code paths as a 10,000-point map
    (approximate nearest neighbours forced, seeded single-threaded layout, out-of-sample transform)."""
    import umap

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    reducer = umap.UMAP(n_components=2, n_neighbors=10, random_state=0, n_jobs=1, n_epochs=20,
                        force_approximation_algorithm=True)      # 3-D maps reuse the same compiled code
    reducer.fit(x)
    reducer.transform(x[:3])


def start_umap_warmup(*, force: bool = False, warm: Callable[[], None] | None = None) -> bool:
    """Compile UMAP in a daemon thread, once per process; True when this call started it.

    Skipped under pytest (tests do not ask for UMAP) and when AECORE_UMAP_WARMUP=0, unless forced.
    """
    if not force and (os.environ.get("AECORE_UMAP_WARMUP", "1") == "0" or "pytest" in sys.modules):
        return False
    with _warmup_lock:
        if _warmup["thread"] is not None:
            return False

        def run() -> None:
            t0 = time.perf_counter()
            _warmup["state"] = "running"
            try:
                (warm or _warm_umap)()
                _warmup["state"] = "done"
                freeze_long_lived()          # numba's compiled code: out of every later gc.collect's scan
            except Exception as err:  # a warm-up failure only costs the first user the compile time
                log.warning("UMAP warm-up failed: %s", err)
                _warmup["state"] = f"failed: {err}"
            _warmup["seconds"] = time.perf_counter() - t0

        thread = threading.Thread(target=run, name="aecore-umap-warmup", daemon=True)
        _warmup["thread"] = thread
        _warmup["state"] = "running"
        thread.start()
        return True


def umap_warmup_state() -> dict[str, Any]:
    """{'state': 'not started' | 'running' | 'done' | 'failed: ...', 'seconds': float | None}."""
    return {"state": _warmup["state"], "seconds": _warmup["seconds"]}
