"""Latent maps in the app: reconstruction errors and nearest neighbours of a clicked or uploaded
image, the map figure, its CSV export, slow projections in a background thread, the UMAP warm-up.

The numbers behind a map (codes, projections, placing a new code, maps.npz, nearest neighbours) are
`aecore.maps`; the names the Latent map page uses from there are imported here too, so the page
reaches a map through this one module.

UMAP's first call in a process JIT-compiles numba code (about a minute on a small CPU), so the app
warms it up in a daemon thread at start (`start_umap_warmup`). Slow projections run in a background
thread (`JOBS`) so a page can show the PCA map meanwhile and poll for the result.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from aecore.data.base import ImageData
from aecore.errors import ConfigError
from aecore.evaluate import per_image_mse
from aecore.lab.serving import freeze_long_lived
from aecore.maps import (METHOD_LABELS, METHODS, METRICS, Progress, Projection,  # noqa: F401 - the page's
                         attach_placement, fit_projection, from_maps, nearest, subsample)

log = logging.getLogger("aecore")

TSNE_DEFAULT, TSNE_MAX = 2000, 5000   # points of a t-SNE map the page offers (t-SNE is slow)


# --- reconstruction errors, one image up close ---------------------------------------------------
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


def view_id(proj: Projection) -> str:
    """A short name of exactly this map (method, dimensions, its points and their positions): a
    selection made on one map means nothing on another, so the page drops it when this changes."""
    digest = hashlib.blake2b(np.ascontiguousarray(proj.coords).tobytes(), digest_size=6)
    digest.update(np.ascontiguousarray(proj.index).tobytes())
    return f"{proj.method}-{proj.dims}d-{len(proj.index)}-{digest.hexdigest()}"


# --- figures and exports -----------------------------------------------------------------------------
def class_colours(n: int) -> list[str]:
    from plotly.colors import qualitative

    palette = qualitative.D3 if n <= 10 else qualitative.Alphabet
    return [palette[i % len(palette)] for i in range(n)]


AXIS_PREFIX = {"pca": "PC", "umap": "UMAP", "tsne": "t-SNE"}
ROBUST_PERCENTILES = (2.0, 98.0)   # colour range of a map coloured by values: outliers do not wash it out
RANGE_MARGIN = 0.06                # 3-D axis ranges: the data's extent plus this fraction on each side
CAMERA_EYE = dict(x=1.4, y=1.4, z=1.05)   # a 3-D view that shows the whole cube, not one corner of it


def ordinal(p: float) -> str:
    """2 -> '2nd', 98 -> '98th', 2.5 -> '2.5th'."""
    if float(p) != int(p):
        return f"{p:g}th"
    n = int(p)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def axis_titles(method: str, dims: int, code_dim: int | None = None) -> list[str]:
    """The map's axis titles: "PC 1", "UMAP 2", "t-SNE 3", or "code unit 0" when the axes are the
    code's own (method 'code', or PCA of a code with no more than `dims` units, which is the code
    itself). Code units count from 0, as the page's unit picker does; an axis a short code pads with
    zeros says so."""
    if method == "code" or (method == "pca" and code_dim is not None and code_dim <= dims):
        units = dims if code_dim is None else code_dim
        return [f"code unit {i}" if i < units else f"(none: a {units}-D code)" for i in range(dims)]
    prefix = AXIS_PREFIX.get(method, str(method))
    return [f"{prefix} {i + 1}" for i in range(dims)]


def robust_range(values: np.ndarray, percentiles: tuple[float, float] = ROBUST_PERCENTILES) -> tuple[float, float]:
    """(low, high) colour limits: the given percentiles of the finite values, so that a few extreme
    values (an image the model cannot reconstruct at all) do not squeeze every other colour into one
    end of the scale. Falls back to the full range when the percentiles coincide; never low == high."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    low, high = (float(p) for p in np.percentile(v, percentiles))
    if high <= low:
        low, high = float(v.min()), float(v.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return low, high


def scene_ranges(points: np.ndarray, margin: float = RANGE_MARGIN) -> list[list[float]]:
    """[[lo, hi]] per axis of `points` (M, dims) with `margin` of each axis's extent added on both sides
    (1 for a flat axis), so that no point sits on the edge of a 3-D view."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    out = []
    for column in points.T:
        column = column[np.isfinite(column)]
        lo, hi = (float(column.min()), float(column.max())) if column.size else (0.0, 0.0)
        pad = (hi - lo) * margin if hi > lo else 1.0
        out.append([lo - pad, hi + pad])
    return out


def map_figure(proj: Projection, labels: np.ndarray, classes: Sequence[str], *, values: np.ndarray | None = None,
               value_name: str = "", highlight: Sequence[int] = (), own: np.ndarray | None = None,
               title: str = "", height: int = 620, code_dim: int | None = None) -> Any:
    """A plotly scatter of the map: one trace per class (legend toggles classes), or one trace coloured
    by `values` (N,) when given, its colour range the 2nd to 98th percentile (`robust_range`, named in
    the colour bar's title). Every point's customdata is its test index; hover shows index, class and
    position. `highlight`: test indices ringed; `own`: (dims,) position of the user's image (★).
    Axes are titled after the projection (`axis_titles`; `code_dim`, the code's size, tells a PCA that
    is the code itself). A 3-D map gets axis ranges that hold every point, a cube and a camera that
    shows all of it."""
    import plotly.graph_objects as go

    three = proj.dims == 3
    scatter = go.Scatter3d if three else go.Scattergl
    labels = np.asarray(labels)[proj.index]
    size = 2.5 if three else 5
    axes = ("x", "y", "z")[:proj.dims]
    names = axis_titles(proj.method, proj.dims, code_dim)
    hover = ("#%{customdata} · %{text}<br>" + ", ".join(f"{n} %{{{a}:.2f}}" for a, n in zip(axes, names)))

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
        cmin, cmax = robust_range(v)
        low, high = (ordinal(p) for p in ROBUST_PERCENTILES)
        names_of = [str(classes[c]) if 0 <= c < len(classes) else "unlabelled" for c in labels]
        # the colour bar stands on the bottom of the plot, its title along it: the legend (above the
        # plot, from chart()) and the colour bar never meet
        colorbar = dict(title=dict(text=f"{value_name} (colours: {low} to {high} percentile)", side="right"),
                        len=0.85, y=0.0, yanchor="bottom", thickness=16)
        fig.add_trace(scatter(**xyz(np.arange(len(v))), mode="markers", name=value_name, customdata=proj.index,
                              text=[f"{n} · {value_name} {x:.4g}" for n, x in zip(names_of, v)],
                              hovertemplate=hover + "<extra></extra>", showlegend=False,
                              marker=dict(size=size, color=v, colorscale="Viridis", opacity=0.8, cmin=cmin,
                                          cmax=cmax, colorbar=colorbar)))
    rows = np.asarray([r for i in highlight for r in np.nonzero(proj.index == int(i))[0]], dtype=np.int64)
    if rows.size:
        fig.add_trace(scatter(**xyz(rows), mode="markers", name="selected", customdata=proj.index[rows],
                              text=["selected"] * rows.size, hovertemplate=hover + "<extra></extra>",
                              marker=dict(size=size * 3.2, color="rgba(0,0,0,0)",
                                          line=dict(color="black", width=2))))
    points = proj.coords
    if own is not None:
        own = np.asarray(own, dtype=np.float32).reshape(-1)
        fig.add_trace(scatter(**{a: [float(own[i])] for i, a in enumerate(axes)}, mode="markers", name="your image",
                              customdata=[-1], text=["your image"], hovertemplate=hover + "<extra></extra>",
                              marker=dict(size=18 if not three else 9, symbol="diamond" if three else "star",
                                          color="black", line=dict(color="white", width=1.5))))
        points = np.vstack([points, own[None, :proj.dims]])
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40 if title else 30, b=10), title=title or None,
                      legend=dict(itemsizing="constant"))
    if three:
        ranges = scene_ranges(points)
        fig.update_layout(scene=dict(
            **{f"{a}axis": dict(title=dict(text=n), range=r, autorange=False) for a, n, r in zip(axes, names, ranges)},
            aspectmode="cube", camera=dict(eye=CAMERA_EYE, center=dict(x=0, y=0, z=0)),
            domain=dict(x=[0.0, 1.0], y=[0.0, 1.0])))
    else:
        fig.update_layout(xaxis_title=names[0], yaxis_title=names[1])
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
