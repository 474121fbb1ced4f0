"""Latent maps in the app: reconstruction errors and nearest neighbours of a clicked or uploaded
image, the map figure, its CSV export, slow projections in a background thread, the UMAP warm-up;
the embedding-projector tools: finding a class or an image by what the user types (`find`), UMAP and
t-SNE with the user's parameters and the stages of their optimisation (`fit_tuned`, `add_stages`), and
what the thumbnail view draws (`thumbnail_args`, over the sprite atlas of `aecore.lab.atlas`).

The numbers behind a map (codes, projections, placing a new code, maps.npz, nearest neighbours) are
`aecore.maps`; the names the Latent map page uses from there are imported here too, so the page
reaches a map through this one module.

UMAP and t-SNE are fitted in a separate process (`aecore.lab.projection_worker`; the fits themselves
are `aecore.lab.tuned`), so the server never imports umap, numba or pynndescent, and UMAP's numba
compile (about 30 s of CPU) never holds the server's GIL. `submit_fit` runs a map from a background
thread (`JOBS`) so a page can show the PCA map meanwhile and poll for the result;
`start_umap_warmup` has that process compile UMAP's code where a UMAP map may be fitted
(`may_fit_umap`). Maps fitted there place new codes by their nearest mapped codes, as stored maps do
(a UMAP reducer cannot leave its process).
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
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from aecore.data.base import ImageData
from aecore.errors import ConfigError, DataError
from aecore.evaluate import per_image_mse
from aecore.lab.atlas import Atlas, build_atlas
from aecore.lab import projection_worker
from aecore.maps import (METHOD_LABELS, METHODS, METRICS, PLACE_K, Progress, Projection,  # noqa: F401 - the page's
                         _TqdmProgress, attach_placement, fit_projection, from_maps, nearest, subsample)
from aecore.lab.tuned import (TSNE_PERPLEXITIES, TSNE_STAGES, UMAP_MIN_DISTS, UMAP_NEIGHBOURS,  # noqa: F401
                              UMAP_STAGE_FRACTIONS, Settled, Tuning, _mappable, _tsne_stages, _umap_stages,
                              _warm_umap, detached, fit_tuned, umap_epochs, umap_stage_epochs)

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


MAX_SELECTED_POINTS = 100_000     # above any map here (10,000 test images); a longer list is not a selection


def selection_indices(selection: Any, n_images: int | None = None) -> list[int]:
    """Test-image indices of the points in a st.plotly_chart selection (from each point's customdata,
    which map_figure sets to the test index), in selection order, without duplicates; only indices below
    `n_images` when given. The event comes from the browser: anything that is not a selection gives [],
    and at most MAX_SELECTED_POINTS points are read."""
    points = selection.get("points") if isinstance(selection, Mapping) else None
    if not isinstance(points, (list, tuple)):
        return []
    out: list[int] = []
    seen: set[int] = set()
    for point in points[:MAX_SELECTED_POINTS]:
        data = point.get("customdata") if isinstance(point, Mapping) else None
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if isinstance(data, bool) or not isinstance(data, (int, float, str)):
            continue                                   # e.g. the own-image marker: not a test image
        try:
            value = int(data)
        except (TypeError, ValueError, OverflowError):
            continue
        if 0 <= value and (n_images is None or value < n_images) and value not in seen:
            seen.add(value)
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
FADED = 0.08                       # opacity of the points outside a searched class


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
               title: str = "", height: int = 620, code_dim: int | None = None, emphasis: int | None = None) -> Any:
    """A plotly scatter of the map: one trace per class (legend toggles classes), or one trace coloured
    by `values` (N,) when given, its colour range the 2nd to 98th percentile (`robust_range`, named in
    the colour bar's title). Every point's customdata is its test index; hover shows index, class and
    position. `highlight`: test indices ringed; `own`: (dims,) position of the user's image (★);
    `emphasis`: a class whose points stand out while every other point fades (a search for a class).
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
                opacity = 0.75 if emphasis is None else (0.9 if k == emphasis else FADED)
                fig.add_trace(scatter(**xyz(rows), mode="markers", name=str(name), customdata=proj.index[rows],
                                      text=[str(name)] * rows.size, hovertemplate=hover + "<extra></extra>",
                                      marker=dict(size=size, color=colours[k], opacity=opacity)))
        rows = np.nonzero((labels < 0) | (labels >= len(classes)))[0]
        if rows.size:
            fig.add_trace(scatter(**xyz(rows), mode="markers", name="unlabelled", customdata=proj.index[rows],
                                  text=["unlabelled"] * rows.size, hovertemplate=hover + "<extra></extra>",
                                  marker=dict(size=size, color="#999999", opacity=0.6 if emphasis is None else FADED)))
    else:
        v = np.asarray(values, dtype=np.float32)[proj.index]
        cmin, cmax = robust_range(v)
        low, high = (ordinal(p) for p in ROBUST_PERCENTILES)
        names_of = [str(classes[c]) if 0 <= c < len(classes) else "unlabelled" for c in labels]
        # the colour bar stands on the bottom of the plot, its title along it: the legend (above the
        # plot, from chart()) and the colour bar never meet
        colorbar = dict(title=dict(text=f"{value_name} (colours: {low} to {high} percentile)", side="right"),
                        len=0.85, y=0.0, yanchor="bottom", thickness=16)
        texts = np.asarray([f"{n} · {value_name} {x:.4g}" for n, x in zip(names_of, v)], dtype=object)
        everything = np.arange(len(v))
        groups = ([(everything, 0.8)] if emphasis is None else     # a searched class drawn last, over the rest
                  [(everything[labels != emphasis], FADED), (everything[labels == emphasis], 0.9)])
        for k, (rows, opacity) in enumerate(groups):
            last = k == len(groups) - 1
            fig.add_trace(scatter(**xyz(rows), mode="markers", name=value_name, customdata=proj.index[rows],
                                  text=list(texts[rows]), hovertemplate=hover + "<extra></extra>", showlegend=False,
                                  marker=dict(size=size, color=v[rows], colorscale="Viridis", opacity=opacity,
                                              cmin=cmin, cmax=cmax, showscale=last,
                                              colorbar=colorbar if last else None)))
    for trace in mark_traces(proj, highlight=highlight, own=own, code_dim=code_dim):
        fig.add_trace(trace)
    points = proj.coords
    if own is not None:
        points = np.vstack([points, np.asarray(own, dtype=np.float32).reshape(-1)[None, :proj.dims]])
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


def mark_traces(proj: Projection, *, highlight: Sequence[int] = (), own: np.ndarray | None = None,
                code_dim: int | None = None) -> list[dict]:
    """One visitor's marks on a map, as plotly trace dicts: the test images `highlight` ringed, and `own`
    (dims,), the position of their own image, as a ★. Kept apart from the map's points so a page can
    draw them over a map built once for everyone (`map_figure` draws them the same way)."""
    three = proj.dims == 3
    kind = "scatter3d" if three else "scattergl"
    axes = ("x", "y", "z")[:proj.dims]
    names = axis_titles(proj.method, proj.dims, code_dim)
    hover = ("#%{customdata} · %{text}<br>" + ", ".join(f"{n} %{{{a}:.2f}}" for a, n in zip(axes, names))
             + "<extra></extra>")
    size = 2.5 if three else 5
    traces = []
    rows = np.asarray([r for i in highlight for r in np.nonzero(proj.index == int(i))[0]], dtype=np.int64)
    if rows.size:
        traces.append(dict(type=kind, **{a: proj.coords[rows, i].tolist() for i, a in enumerate(axes)},
                           mode="markers", name="selected", customdata=proj.index[rows].tolist(),
                           text=["selected"] * rows.size, hovertemplate=hover,
                           marker=dict(size=size * 3.2, color="rgba(0,0,0,0)", line=dict(color="black", width=2))))
    if own is not None:
        own = np.asarray(own, dtype=np.float32).reshape(-1)
        traces.append(dict(type=kind, **{a: [float(own[i])] for i, a in enumerate(axes)}, mode="markers",
                           name="your image", customdata=[-1], text=["your image"], hovertemplate=hover,
                           marker=dict(size=18 if not three else 9, symbol="diamond" if three else "star",
                                       color="black", line=dict(color="white", width=1.5))))
    return traces


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


# --- search: a class or a test image, by what the user types --------------------------------------------
MAX_FIND = 100     # characters of a search read; longer is no class name or index


@dataclass(frozen=True)
class Found:
    """What a search names: nothing ('none'), a class ('class', value = its number), a test image
    ('index', value = its index), or nothing it could ('unknown'). `message` says it in words: which
    class, or why nothing matched and what the box takes."""

    kind: str
    value: int | None = None
    message: str = ""


def find(text: Any, classes: Sequence[str], n_images: int) -> Found:
    """Read a search box: '#123' is test image 123; a class name (any case, or a unique part of one:
    'boot' for 'Ankle boot') or 'class 3' is that class; a bare number is the class with that number
    when there is one (MNIST's '7') and otherwise the test image with that index ('123'). Anything
    else is 'unknown', with a message that says what the box takes."""
    s = " ".join(str(text if text is not None else "").split())[:MAX_FIND]
    names = [str(c) for c in classes]
    last = n_images - 1
    if not s:
        return Found("none")
    if s.startswith("#"):
        return _image(s[1:].strip().replace(",", ""), s, n_images)
    folded = s.casefold()
    exact = [k for k, name in enumerate(names) if name.casefold() == folded]
    if exact:
        return Found("class", exact[0], f"class {names[exact[0]]}")
    words = folded.split()
    if len(words) == 2 and words[0] in ("class", "label") and words[1].isdigit():
        k = int(words[1])
        if k < len(names):
            return Found("class", k, f"class {k} ({names[k]})")
        return Found("unknown", message=f"There is no class {k}: the classes are numbered 0 to {len(names) - 1}.")
    if folded.replace(",", "").isdigit():
        number = int(folded.replace(",", ""))
        if number < len(names):
            return Found("class", number, f"class {number} ({names[number]}); for test image {number}, "
                                          f"type #{number}")
        return _image(str(number), s, n_images)
    parts = [k for k, name in enumerate(names) if folded in name.casefold()]
    if len(parts) == 1:
        return Found("class", parts[0], f"class {names[parts[0]]}")
    if len(parts) > 1:
        return Found("unknown", message=f"'{s}' is part of {len(parts)} class names ("
                                        + ", ".join(names[k] for k in parts[:6]) + "): type more of one.")
    examples = f" ({', '.join(names[:2])}, …)" if len(names) > 1 else ""
    numbers = f", a class number (0 to {len(names) - 1})" if names else ""
    return Found("unknown", message=f"Nothing matches '{s}': type a class name{examples}{numbers}, or a test "
                                    f"image's index (#0 to #{last:,}).")


def _image(number: str, said: str, n_images: int) -> Found:
    try:
        i = int(number)
    except ValueError:
        return Found("unknown", message=f"'{said}' names no test image: after # comes an index, #0 to "
                                        f"#{n_images - 1:,}.")
    if not 0 <= i < n_images:
        return Found("unknown", message=f"There is no test image #{i:,}: the test split's images are #0 to "
                                        f"#{n_images - 1:,}.")
    return Found("index", i, f"test image #{i:,}")


# --- the stages of a map's layout, as an animation ----------------------------------------------------
def add_stages(fig: Any, proj: Projection, stages: Sequence[tuple[str, np.ndarray]], *,
               duration_ms: int = 700) -> Any:
    """Give a `map_figure` of `proj` one animation frame per stage (the same traces, each point where it
    was at that stage, each stage's own axis ranges), a stage slider that starts on the map itself (the
    last stage) and a play button that runs through them all. `stages` (label, (M, dims)) follow
    proj.index's order; a label says how far the optimisation got ('25 epochs', '400 iterations'). The
    user's own image (★) stays put."""
    import plotly.graph_objects as go

    if not stages:
        return fig
    row_of = {int(i): r for r, i in enumerate(proj.index)}
    axes = ("x", "y", "z")[:proj.dims]
    three = proj.dims == 3

    def frame_data(coords: np.ndarray) -> list[dict]:
        out = []
        for trace in fig.data:
            ids = np.asarray(trace.customdata if trace.customdata is not None else [], dtype=np.int64).reshape(-1)
            if ids.size == 0 or (ids < 0).any():
                out.append({"type": trace.type, **{a: getattr(trace, a) for a in axes}})   # the ★ stays put
                continue
            rows = np.asarray([row_of[int(i)] for i in ids])
            out.append({"type": trace.type, **{a: coords[rows, j] for j, a in enumerate(axes)}})
        return out

    def ranges(coords: np.ndarray) -> dict:
        r = scene_ranges(coords[np.isfinite(coords).all(axis=1)] if len(coords) else coords)
        if three:
            return {"scene": {f"{a}axis": {"range": rng, "autorange": False} for a, rng in zip(axes, r)}}
        return {f"{a}axis": {"range": rng, "autorange": False} for a, rng in zip(axes, r)}

    labels = [label for label, _ in stages]
    fig.frames = [go.Frame(data=frame_data(coords), name=label, layout=ranges(coords)) for label, coords in stages]
    fig.update_layout(ranges(stages[-1][1]))
    step = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    fig.update_layout(
        sliders=[dict(active=len(labels) - 1, x=0.11, len=0.84, y=0, yanchor="top", pad=dict(t=50, b=0),
                      currentvalue=dict(prefix="After ", font=dict(size=14)),
                      steps=[dict(method="animate", label=label, args=[[label], step]) for label in labels])],
        updatemenus=[dict(type="buttons", showactive=False, x=0.0, y=0, xanchor="left", yanchor="top",
                          pad=dict(t=50, r=10), buttons=[dict(
                              label="▶ Play", method="animate",
                              args=[None, dict(mode="immediate", fromcurrent=False, transition=dict(duration=0),
                                               frame=dict(duration=duration_ms, redraw=True))])])],
        margin=dict(b=120))
    return fig


# --- the thumbnail view ------------------------------------------------------------------------------------
THUMB_SIZES = (8, 12, 16, 24, 32, 48)     # px of a thumbnail before zooming in, the choices the page offers


def atlas_of(data: ImageData, input_shape: Sequence[int]) -> Atlas | None:
    """The sprite atlas of a whole split (cell i = image i), or None when its images are no pictures
    (a flat vector that the model's input shape does not make (C, H, W) with C 1 or 3)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        return None
    images = data.images.cpu().numpy().reshape(len(data), *shape)
    return build_atlas(images)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """'#1f77b4' or 'rgb(31, 119, 180)' -> (31, 119, 180)."""
    c = colour.strip()
    if c.startswith("#"):
        return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)
    r, g, b = (int(float(v)) for v in c[c.index("(") + 1:c.index(")")].split(",")[:3])
    return r, g, b


def point_colours(labels: np.ndarray, n_classes: int, values: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) uint8 colours as the map draws its points: the class colours (grey when unlabelled), or
    Viridis over `values`' robust range (`robust_range`), as the plotly map's colour bar."""
    labels = np.asarray(labels)
    if values is None:
        palette = np.array([hex_rgb(c) for c in class_colours(max(1, n_classes))] + [(153, 153, 153)], dtype=np.uint8)
        return palette[np.where((labels >= 0) & (labels < n_classes), labels, len(palette) - 1)]
    from plotly.colors import sequential

    stops = np.array([hex_rgb(c) for c in sequential.Viridis], dtype=np.float64)        # (S, 3)
    low, high = robust_range(values)
    t = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    t = np.where(np.isfinite(t), t, 0.0)
    at = np.linspace(0.0, 1.0, len(stops))
    return np.stack([np.interp(t, at, stops[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def thumbnail_args(proj: Projection, labels: np.ndarray, classes: Sequence[str], atlas: Atlas, *,
                   values: np.ndarray | None = None, value_name: str = "", selected: int | None = None,
                   emphasis: int | None = None, own: np.ndarray | None = None, height: int = 660,
                   size: int = 16, held: str | None = None) -> dict[str, Any]:
    """What the thumbnail view (a canvas in the browser) needs to draw a 2-D map: the points' positions
    (float32), test indices (= atlas cells, int32), classes (int16) and colours (RGB bytes) as raw bytes,
    the atlas (PNG bytes, left out when `held`, the key of the atlas the browser says it holds, is
    `atlas.key`) and its geometry, and plain values for the rest. The browser draws test image i from
    cell i."""
    if proj.dims != 2:
        raise ConfigError("thumbnails are drawn on 2-D maps")
    labels = np.asarray(labels)
    if len(labels) != atlas.n:
        raise DataError(f"the atlas holds {atlas.n:,} images, the split {len(labels):,}")
    point_labels = labels[proj.index]
    colours = point_colours(labels, len(classes), values)[proj.index]
    legend = ([[str(name), "#%02x%02x%02x" % hex_rgb(c)] for name, c in zip(classes, class_colours(len(classes)))]
              if values is None else [])
    args: dict[str, Any] = dict(
        geom=atlas.args(), view=view_id(proj), n_points=int(len(proj.index)),
        xy=np.ascontiguousarray(proj.coords[:, :2], dtype="<f4").tobytes(),
        index=np.ascontiguousarray(proj.index, dtype="<i4").tobytes(),
        labels=np.ascontiguousarray(point_labels, dtype="<i2").tobytes(),
        colours=np.ascontiguousarray(colours, dtype=np.uint8).tobytes(),
        colour_key=hashlib.blake2b(colours.tobytes(), digest_size=6).hexdigest(),
        classes=[str(c) for c in classes], legend=legend, value_name=str(value_name),
        selected=int(selected) if selected is not None else -1,
        emphasis=int(emphasis) if emphasis is not None else -1,
        own=[float(own[0]), float(own[1])] if own is not None else None,
        height=int(height), size=int(size), have=held)
    if values is not None:
        args["values"] = np.ascontiguousarray(np.asarray(values)[proj.index], dtype="<f4").tobytes()
    if held != atlas.key:
        args["atlas"] = atlas.png
    return args


def thumbnail_click(value: Any) -> tuple[str | None, int | None]:
    """(click id, test index) of a click the thumbnail view reported, or (None, None): its value is
    {'have': atlas key, 'click': id, 'index': i}, and carries no click until one happens."""
    if not isinstance(value, Mapping):
        return None, None
    click, index = value.get("click"), value.get("index")
    if not isinstance(click, str) or not click or isinstance(index, bool):
        return None, None
    try:
        return click, int(index)
    except (TypeError, ValueError):
        return None, None


def atlas_held(value: Any) -> str | None:
    """The atlas key the browser reports it holds (so the atlas need not be sent again)."""
    have = value.get("have") if isinstance(value, Mapping) else None
    return have if isinstance(have, str) else None


# --- background projections ------------------------------------------------------------------------
ProjectionError = projection_worker.ProjectionError


class ServerBusy(ProjectionError):
    """Too many maps wait already: this one is not queued (the page says so and shows another map)."""


@dataclass
class Job:
    future: Future
    started: float
    fraction: float | None = None
    text: str = "queued"
    owners: set = field(default_factory=set)           # who waits for it (opaque strings; None: someone unnamed)
    ended: float | None = None                         # time.monotonic() when it finished running

    def report(self, fraction: float | None, text: str) -> None:
        self.fraction, self.text = fraction, text

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def waiting(self) -> bool:
        """Queued: not started yet, not cancelled."""
        return not self.future.running() and not self.future.done()

    @property
    def failed(self) -> bool:
        future = self.future
        return future.done() and not future.cancelled() and future.exception() is not None


class ProjectionJobs:
    """Slow projections in one background worker thread, keyed by what they depend on; finished
    results stay as a small cache (oldest dropped first).

    One thread serves the whole server, so the queue is bounded: at most `max_waiting` jobs wait
    (a request beyond that raises `ServerBusy`), and each `owner` (an opaque string: the page passes
    one per browser session) has at most one waiting job: a new request of theirs cancels their
    older one while it still waits (unless someone else waits for it too). A failed job stays failed
    for `retry_after` seconds (the page shows the failure) before its key may run again, so a map
    that fails is not recomputed on every rerun of every page that asks for it."""

    def __init__(self, keep: int = 12, *, max_waiting: int = 8, retry_after: float = 0.0):
        self.keep = keep
        self.max_waiting = max_waiting
        self.retry_after = retry_after
        self._jobs: dict[Hashable, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aecore-map")

    def submit(self, key: Hashable, fn: Callable[[Progress], Any], *, owner: str | None = None) -> Job:
        """Start fn(progress) for `key` unless it is waiting, running or done (a failure younger than
        `retry_after` counts as done); returns its job. Raises ServerBusy when `max_waiting` jobs wait
        already (`owner`'s own waiting job, which this request replaces, not counted)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not self._spent(job):
                self._claim(job, owner)
                return job
            mine = self._waiting_of(owner)
            waiting = [j for j in self._jobs.values() if j.waiting and j is not mine]
            if mine is not None and mine.owners != {owner}:
                waiting.append(mine)                      # others wait for it too: it stays
            if len(waiting) >= self.max_waiting:
                running = sum(1 for j in self._jobs.values() if j.future.running())
                raise ServerBusy(f"the server is busy with {len(waiting) + running} maps ({len(waiting)} waiting); "
                                 "try again in a moment")
            job = Job(future=Future(), started=time.perf_counter())
            self._claim(job, owner)

            def run() -> Projection:
                job.started = time.perf_counter()
                job.report(None, "starting")
                try:
                    return fn(job.report)
                finally:
                    job.ended = time.monotonic()          # before the future is done: a failure's age is known

            job.future = self._pool.submit(run)
            self._jobs[key] = job
            done = [k for k, j in self._jobs.items() if j.future.done()]
            for old in done[: max(0, len(done) - self.keep)]:
                del self._jobs[old]
            return job

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def waiting(self) -> int:
        """How many jobs wait for the worker thread."""
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.waiting)

    def retry_in(self, job: Job) -> float:
        """Seconds until a failed job's key may run again (0: now, or it did not fail)."""
        if not job.failed or job.ended is None:
            return 0.0
        return max(0.0, job.ended + self.retry_after - time.monotonic())

    # -- under the lock -------------------------------------------------------------------------------
    def _spent(self, job: Job) -> bool:
        """A job that a new request runs again: cancelled, or failed longer than `retry_after` ago."""
        future = job.future
        if not future.done():
            return False
        if future.cancelled():
            return True
        return future.exception() is not None and self.retry_in(job) <= 0

    def _waiting_of(self, owner: str | None) -> Job | None:
        if owner is None:
            return None
        return next((j for j in self._jobs.values() if owner in j.owners and j.waiting), None)

    def _claim(self, job: Job, owner: str | None) -> None:
        """`owner` waits for `job` now, and no longer for the job they waited for before: that one is
        cancelled while it waits and nobody else waits for it. An unnamed requester (None) waits for
        good: a job they asked for is never cancelled."""
        if owner is None:
            job.owners.add(None)
            return
        mine = self._waiting_of(owner)
        if mine is not None and mine is not job:
            mine.owners.discard(owner)
            if not mine.owners and mine.future.cancel():
                for key, j in list(self._jobs.items()):
                    if j is mine:
                        del self._jobs[key]
        job.owners.add(owner)


JOBS = ProjectionJobs(max_waiting=8, retry_after=60.0)   # the server's one queue of maps
IN_WORKER = ("umap", "tsne")   # fitted in the projection process; PCA and the code's axes are instant here


def fit_in_worker(codes: np.ndarray, method: str, dims: int = 2, *, seed: int = 0, index: np.ndarray | None = None,
                  tuning: Tuning = Tuning(), stages: bool = False, progress: Progress | None = None) -> Settled:
    """`fit_tuned` in the projection process, blocking: the same map, except that it places new codes by
    their nearest mapped codes, as stored maps do (a UMAP reducer's transform stays in that process).
    The codes travel as float32 numpy, the index as int64 (a tensor would have the child import torch)."""
    codes = np.asarray(codes.detach().cpu() if isinstance(codes, Tensor) else codes, dtype=np.float32)
    index = None if index is None else np.asarray(index, dtype=np.int64)
    return projection_worker.WORKER.fit(codes=codes, method=method, dims=dims, seed=seed, index=index,
                                        tuning=tuning, stages=stages, progress=progress)


def submit_fit(key: Hashable, codes: np.ndarray, method: str, dims: int = 2, *, seed: int = 0,
               index: np.ndarray | None = None, tuning: Tuning = Tuning(), stages: bool = False,
               owner: str | None = None) -> Job:
    """The map for `key` in the background (`JOBS.submit`; a key already waiting, running or done gives
    its job): UMAP and t-SNE in the projection process (`fit_in_worker`), other methods here
    (`fit_tuned`). The job's result is a `Settled`. `owner` (an opaque string, one per session): their
    new request replaces their older one that still waits. Raises ServerBusy when the queue is full."""
    def fit(progress: Progress) -> Settled:
        run = fit_in_worker if method in IN_WORKER else fit_tuned
        return run(codes, method, dims, seed=seed, index=index, tuning=tuning, stages=stages, progress=progress)

    return JOBS.submit(key, fit, owner=owner)


# --- UMAP warm-up ------------------------------------------------------------------------------------
_warmup_lock = threading.Lock()
_warmup: dict[str, Any] = {"state": "not started", "seconds": None, "thread": None}


def start_umap_warmup(*, force: bool = False, warm: Callable[[], None] | None = None) -> bool:
    """Have UMAP's numba code compiled before a UMAP map is asked for; True when this call started it.
    The projection process compiles it (`ProjectionWorker.warm`): a daemon thread here only waits for its
    answer. Once per projection process: again only after that process has exited (idle) and its
    compiled code with it. `warm`, a callable, runs in that thread instead, once per process (tests).

    Called where a UMAP map may be fitted (a model without a stored one), not at the server's start:
    the process holds about 0.5 GB while it lives, which a class that only opens stored maps never needs.
    Skipped under pytest (tests do not ask for UMAP) and when AECORE_UMAP_WARMUP=0, unless forced.
    """
    if not force and (os.environ.get("AECORE_UMAP_WARMUP", "1") == "0" or "pytest" in sys.modules):
        return False
    with _warmup_lock:
        thread = _warmup["thread"]
        if thread is not None and (thread.is_alive() or warm is not None or not _warmup.get("worker")
                                   or projection_worker.WORKER.state() != "not started"):
            return False

        def run() -> None:
            t0 = time.perf_counter()
            _warmup["state"] = "running"
            try:
                (warm or projection_worker.WORKER.warm)()
                _warmup["state"] = "done"
            except Exception as err:  # a warm-up failure only costs the first user the compile time
                log.warning("UMAP warm-up failed: %s", err)
                _warmup["state"] = f"failed: {err}"
            _warmup["seconds"] = time.perf_counter() - t0

        thread = threading.Thread(target=run, name="aecore-umap-warmup", daemon=True)
        _warmup["thread"] = thread
        _warmup["state"] = "running"
        _warmup["worker"] = warm is None
        thread.start()
        return True


def may_fit_umap(stored_maps: Mapping[str, Any], method: str, *, tuned: bool, staged: bool) -> bool:
    """Whether a UMAP map may be fitted for this view of a model: it has no stored one, or this one is
    tuned or staged (the page then has the projection process compile UMAP meanwhile)."""
    return "umap" not in stored_maps or (method == "umap" and (tuned or staged))


def umap_warmup_state() -> dict[str, Any]:
    """{'state': 'not started' | 'running' | 'done' | 'failed: ...', 'seconds': float | None}: the
    projection process's (`ProjectionWorker.state`: 'not started' again once that process has exited
    for idleness, 'running' while a UMAP map compiles there), or the `warm` callable's."""
    if _warmup.get("worker", True):
        worker = projection_worker.WORKER
        return {"state": worker.state(), "seconds": worker.warm_seconds}
    return {"state": _warmup["state"], "seconds": _warmup["seconds"]}
