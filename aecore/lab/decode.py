"""Decode anywhere: a plane through code space that the decoder draws point by point.

- The plane. A model with a 2-D code is its own plane: (u, v) = (z₁, z₂). For a larger code the plane
  is a 2-D slice: the top two principal directions a₁, a₂ of the test codes (PCA, centred at their mean
  m). A code c sits on the plane at (u, v) = ((c - m)·a₁, (c - m)·a₂), and a point (u, v) maps back to
  the code  o + u·a₁ + v·a₂,  where o = m when the slice passes through the mean (then a point is
  m + u·a₁ + v·a₂) and, for a slice through a chosen code c, o = m + the part of (c - m) outside the
  PCA plane: the same plane shifted, so the dots keep their places and c's own (u, v) decodes c itself.
- The atlas. The decoder runs once, batched, on a regular GRID x GRID lattice over the plane's extent;
  the decodings are packed into one sprite sheet (a PNG). The page's browser component shows, under the
  pointer, the atlas cell of the nearest lattice point: a drawImage from the sheet, no round trip to
  the server, so it follows the pointer at the browser's frame rate. It works for every decoder (MLP,
  conv, hypernetwork). A clicked point is decoded exactly on the server (`decode_points`).
- One input of a VAE: the posterior mean μ, the standard deviation σ = exp(½ log σ²) per dimension,
  and a sample z = μ + σ·ε with ε from a seeded generator (`posterior_sample`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from aecore.errors import ConfigError, DataError
from aecore.pca import PCA
from aecore.viz import png_bytes, to_images

GRID = 48                    # atlas lattice points per side: 48 x 48 = 2,304 decodings in one batched pass
MIN_GRID, MAX_GRID = 2, 96
MAX_DOTS = 3000              # test codes drawn on the plane
EXTENT_PERCENTILES = (0.5, 99.5)   # the plane spans the codes' central 99 %, plus a margin
EXTENT_MARGIN = 0.12               # of the span, on each side
DECODE_BATCH = 576           # codes per forward pass when decoding the lattice (bounds a conv decoder's memory)


# --- the plane ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plane:
    """A plane through code space. `axes` (2, d) orthonormal rows, `mean` (d,): a code c sits at
    (c - mean) @ axes.T; a point (u, v) is the code origin + u·axes[0] + v·axes[1]."""

    kind: str                       # "code": the code itself is 2-D; "pca": a slice along the top two PCs
    mean: np.ndarray                # (d,)
    axes: np.ndarray                # (2, d)
    origin: np.ndarray              # (d,): the code at (u, v) = (0, 0)
    explained: tuple[float, float] = (1.0, 1.0)   # share of the codes' variance along each axis (pca)
    through: str = "mean"           # what the slice passes through: "mean" or "code"

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def to_plane(self, codes: np.ndarray | Tensor) -> np.ndarray:
        """(N, d) codes -> (N, 2) plane coordinates (float64)."""
        c = np.asarray(codes, dtype=np.float64).reshape(-1, self.dim)
        return (c - self.mean) @ self.axes.T

    def to_code(self, uv: np.ndarray | Sequence) -> np.ndarray:
        """(N, 2) plane coordinates -> (N, d) codes (float64)."""
        p = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        return self.origin + p @ self.axes

    def through_code(self, code: np.ndarray | Tensor) -> "Plane":
        """The same plane shifted along the directions off it, so that it passes through `code` (d,):
        the code's own (u, v) then maps back to the code itself. A code's own plane is returned as it is."""
        if self.kind == "code":
            return self
        point = np.asarray(code, dtype=np.float64).reshape(-1)
        if point.shape[0] != self.dim:
            raise ConfigError(f"the slice's point has {point.shape[0]} values, the code {self.dim}")
        offset = point - self.mean
        origin = self.mean + offset - (offset @ self.axes.T) @ self.axes
        return replace(self, origin=origin, through="code")

    def axis_titles(self) -> tuple[str, str]:
        if self.kind == "code":
            return "z₁", "z₂"
        return tuple(f"PC {k + 1} ({percent(self.explained[k])} of the variance)" for k in range(2))  # type: ignore


def percent(share: float) -> str:
    """0.153 -> '15 %', 0.004 -> '0.4 %', 0.00001 -> '< 0.1 %': a small share is not rounded to nothing."""
    p = 100 * float(share)
    return f"{p:.0f} %" if p >= 1 else f"{p:.1f} %" if p >= 0.1 else "< 0.1 %"


def code_plane(d: int = 2) -> Plane:
    """The plane of a 2-D code: (u, v) is the code itself."""
    if d != 2:
        raise ConfigError(f"the code's own plane needs a 2-D code; this one has {d} dimensions")
    zero = np.zeros(2)
    return Plane("code", zero, np.eye(2), zero, through="code")


def pca_plane(codes: np.ndarray | Tensor, through: np.ndarray | Tensor | None = None) -> Plane:
    """The slice of code space along the codes' top two principal directions, passing through their
    mean (`through` None) or through the code `through` (d,)."""
    c = torch.as_tensor(np.asarray(codes), dtype=torch.float64).reshape(len(codes), -1)
    if c.shape[1] < 2:
        raise ConfigError(f"a plane needs a code of at least 2 dimensions; this one has {c.shape[1]}")
    if not torch.isfinite(c).all():
        raise DataError("the codes hold values that are not finite (nan or inf): no plane through them")
    pca = PCA.fit(c, 2)
    mean = pca.mean.double().numpy()
    axes = pca.components.double().numpy()
    # eigh's vectors come out float32 via PCA: re-orthonormalise in float64 so the inverse is exact
    q, r = np.linalg.qr(axes.T)
    axes = (q * np.sign(np.diag(r))).T
    total = float(c.var(0, unbiased=True).sum())
    explained = tuple(float(v) / total if total > 0 else 0.0 for v in pca.explained_variance)
    plane = Plane("pca", mean, axes, mean.copy(), explained=explained)
    return plane if through is None else plane.through_code(through)


def plane_for(codes: np.ndarray | Tensor, through: np.ndarray | Tensor | None = None) -> Plane:
    """A 2-D code's own plane, else the PCA slice (through the mean, or through `through`)."""
    d = int(np.asarray(codes).reshape(len(codes), -1).shape[1])
    return code_plane() if d == 2 else pca_plane(codes, through)


def extent(coords: np.ndarray, *, percentiles: tuple[float, float] = EXTENT_PERCENTILES,
           margin: float = EXTENT_MARGIN) -> tuple[float, float, float, float]:
    """(u0, u1, v0, v1): the plane's window over the codes' central range, with a margin; never empty."""
    p = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(1)]
    if not len(p):
        return (-1.0, 1.0, -1.0, 1.0)
    lo, hi = np.percentile(p, percentiles, axis=0)
    out = []
    for a, b in zip(lo, hi):
        span = max(float(b - a), 1e-6 * max(1.0, abs(float(a))), 1e-6)
        out += [float(a) - margin * span, float(b) + margin * span]
    return tuple(out)


# --- the lattice and its atlas -----------------------------------------------------------------------
def check_grid(n: int) -> int:
    if not MIN_GRID <= int(n) <= MAX_GRID:
        raise ConfigError(f"grid size = {n} must be between {MIN_GRID} and {MAX_GRID}")
    return int(n)


def grid_axes(window: Sequence[float], n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """(u values (n,) ascending, v values (n,) descending): column j is at u[j], row i at v[i] (the top
    row has the largest v, as a plot's y axis)."""
    n = check_grid(n)
    u0, u1, v0, v1 = (float(x) for x in window)
    return np.linspace(u0, u1, n), np.linspace(v1, v0, n)


def grid_points(window: Sequence[float], n: int = GRID) -> np.ndarray:
    """(n*n, 2) plane points of the lattice, row-major: point i*n + j is (u[j], v[i])."""
    u, v = grid_axes(window, n)
    vv, uu = np.meshgrid(v, u, indexing="ij")
    return np.stack([uu.reshape(-1), vv.reshape(-1)], axis=1)


def nearest_cell(window: Sequence[float], n: int, u: float, v: float) -> tuple[int, int]:
    """(row i, column j) of the lattice point nearest to (u, v), clamped to the lattice."""
    u0, u1, v0, v1 = (float(x) for x in window)
    j = round((float(u) - u0) / (u1 - u0) * (n - 1)) if u1 > u0 else 0
    i = round((v1 - float(v)) / (v1 - v0) * (n - 1)) if v1 > v0 else 0
    return min(max(int(i), 0), n - 1), min(max(int(j), 0), n - 1)


@torch.no_grad()
def decode_codes(model: nn.Module, codes: np.ndarray | Tensor, *, batch_size: int = DECODE_BATCH) -> Tensor:
    """(N, d) codes -> (N, C, H, W) decodings in [0, 1], float on the CPU."""
    model.eval()
    z = torch.as_tensor(np.asarray(codes), dtype=torch.float32).to(model.device)
    shape = tuple(model.config.input_shape)
    out = [model.decode(z[i:i + batch_size]).float().cpu().reshape(-1, *shape) for i in range(0, len(z), batch_size)]
    return to_images(torch.cat(out), shape)


def decode_points(model: nn.Module, plane: Plane, uv: np.ndarray | Sequence) -> Tensor:
    """(N, 2) plane points -> (N, C, H, W) exact decodings of their codes."""
    return decode_codes(model, plane.to_code(uv))


@dataclass(frozen=True)
class Atlas:
    """The lattice's decodings as one sprite sheet: `sheet` (n*H, n*W, C) uint8, cell (i, j) at rows
    i*H.. and columns j*W.., decoding grid point (u[j], v[i]) (`grid_points`' order)."""

    n: int
    window: tuple[float, float, float, float]
    sheet: np.ndarray
    tile: tuple[int, int, int]       # (H, W, C)
    key: str = field(default="")     # changes with the pixels: the browser re-reads the sheet only then

    def cell(self, i: int, j: int) -> np.ndarray:
        """(H, W, C) uint8 decoding of lattice point (i, j)."""
        h, w, _ = self.tile
        return self.sheet[i * h:(i + 1) * h, j * w:(j + 1) * w]

    def png(self) -> bytes:
        """The sheet as a PNG (grey for one channel, RGB for three)."""
        sheet = self.sheet[..., 0] if self.tile[2] == 1 else self.sheet[..., :3]
        return png_bytes(sheet)


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, C) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def atlas(model: nn.Module, plane: Plane, window: Sequence[float], n: int = GRID) -> Atlas:
    """Decode the n x n lattice over `window` in one batched pass and pack it as a sprite sheet."""
    images = to_uint8(decode_points(model, plane, grid_points(window, n)))          # (n*n, H, W, C)
    _, h, w, c = images.shape
    sheet = np.ascontiguousarray(images.reshape(n, n, h, w, c).transpose(0, 2, 1, 3, 4).reshape(n * h, n * w, c))
    key = hashlib.blake2b(sheet.tobytes(), digest_size=8).hexdigest()
    return Atlas(int(n), tuple(float(x) for x in window), sheet, (h, w, c), key)


# --- the decoder and the posterior -------------------------------------------------------------------
def code_size(model: nn.Module) -> int | None:
    d = getattr(getattr(model, "config", None), "latent_dim", None)
    return int(d) if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None


def decoder_problem(model: nn.Module) -> str | None:
    """Why this page cannot decode points of the model's code space, said for a user; None when it can:
    it needs a flat code (latent_dim) and a `decode` that turns (1, d) codes into one input-shaped image."""
    d = code_size(model)
    if d is None:
        return "it has no flat code (no code size to pick points from)"
    if d < 2:
        return "its code has a single dimension: there is no plane to move over"
    try:
        with torch.no_grad():
            out = model.eval().decode(torch.zeros(1, d, device=model.device))
    except NotImplementedError:
        return "it has no decoder: nothing turns a code back into an image"
    except (RuntimeError, ValueError, TypeError) as err:
        return f"its decoder does not take codes of {d} values ({type(err).__name__})"
    want = math.prod(tuple(model.config.input_shape))
    if not isinstance(out, Tensor) or out.numel() != want:
        return "its decoder does not output an image of the input's size"
    return None


def has_posterior(model: nn.Module) -> bool:
    """Whether the encoder gives a distribution q(z|x) (mean and log-variance), as a VAE's does."""
    return callable(getattr(model, "posterior", None))


@dataclass(frozen=True)
class Posterior:
    """One input's q(z|x): mean `mu`, standard deviation `sigma` and a seeded sample `z`, each (d,)."""

    mu: np.ndarray
    sigma: np.ndarray
    z: np.ndarray
    seed: int


def sample_eps(d: int, seed: int) -> Tensor:
    """(d,) ε ~ N(0, I) from a CPU generator: the same seed gives the same ε on any device."""
    return torch.randn(int(d), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


@torch.no_grad()
def posterior_sample(model: nn.Module, x: Tensor, *, seed: int = 0) -> Posterior:
    """μ, σ and z = μ + σ·ε (ε seeded) of one image x (*input_shape) or (1, *input_shape)."""
    if not has_posterior(model):
        raise ConfigError("this model's encoder gives a code, not a distribution: it has no μ and σ")
    shape = tuple(model.config.input_shape)
    x = x.reshape(1, *shape).float().to(model.device)
    model.eval()
    mu, logvar = model.posterior(x)
    mu = mu[0].double().cpu()
    sigma = (0.5 * logvar[0].double().cpu()).exp()
    z = mu + sigma * sample_eps(mu.numel(), seed)
    return Posterior(mu.numpy(), sigma.numpy(), z.numpy(), int(seed))


@torch.no_grad()
def code_of(model: nn.Module, x: Tensor) -> np.ndarray:
    """(d,) code of one image (a VAE's: its posterior mean)."""
    shape = tuple(model.config.input_shape)
    model.eval()
    return model.encode(x.reshape(1, *shape).float().to(model.device)).reshape(-1).double().cpu().numpy()


# --- what the browser component gets -----------------------------------------------------------------
def dot_sample(n_codes: int, limit: int = MAX_DOTS, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `limit` of n_codes test codes (seeded)."""
    if n_codes <= limit:
        return np.arange(n_codes)
    return np.sort(np.random.default_rng(seed).choice(n_codes, size=limit, replace=False))


def dots(plane: Plane, codes: np.ndarray, labels: np.ndarray, *, limit: int = MAX_DOTS, seed: int = 0) -> dict[str, list]:
    """The test codes drawn on the plane: {'u', 'v', 'label', 'index'} lists (a sample of at most `limit`)."""
    index = dot_sample(len(codes), limit, seed=seed)
    uv = plane.to_plane(np.asarray(codes)[index])
    return {"u": np.round(uv[:, 0], 5).tolist(), "v": np.round(uv[:, 1], 5).tolist(),
            "label": np.asarray(labels)[index].astype(int).tolist(), "index": index.astype(int).tolist()}


def marker(plane: Plane, code: np.ndarray, name: str, colour: str, symbol: str = "circle") -> dict[str, Any]:
    """A point of code space marked on the plane (its projection): {'u', 'v', 'name', 'colour', 'symbol'}."""
    u, v = plane.to_plane(np.asarray(code).reshape(1, -1))[0]
    return {"u": round(float(u), 5), "v": round(float(v), 5), "name": str(name), "colour": colour, "symbol": symbol}


def component_args(plane: Plane, sheet: Atlas, dot_lists: dict[str, list], classes: Sequence[str],
                   colours: Sequence[str], markers: Sequence[dict] = (), *, backdrop: bool = False,
                   scale: int = 8) -> dict[str, Any]:
    """The browser component's JSON arguments (the sheet's PNG travels beside them as bytes)."""
    h, w, c = sheet.tile
    titles = plane.axis_titles()
    return {"n": sheet.n, "window": list(sheet.window), "tile": [h, w, c], "atlas_key": sheet.key,
            "dots": dot_lists, "classes": [str(k) for k in classes], "colours": list(colours),
            "markers": list(markers), "x_title": titles[0], "y_title": titles[1], "backdrop": bool(backdrop),
            "scale": int(scale)}


def posterior_figure(post: Posterior, *, height: int = 300, max_dims: int = 64) -> Any:
    """μ of each dimension as a bar with σ as its error bar, and the sampled z as a marker (the first
    `max_dims` dimensions)."""
    import plotly.graph_objects as go

    d = min(len(post.mu), max_dims)
    names = [f"z{j}" for j in range(d)]
    fig = go.Figure()
    fig.add_bar(x=names, y=post.mu[:d], name="μ ± σ", marker_color="#4c78a8",
                error_y=dict(type="data", array=post.sigma[:d], visible=True, color="#333"),
                customdata=post.sigma[:d], hovertemplate="%{x}: μ %{y:.3f}, σ %{customdata:.3f}<extra></extra>")
    fig.add_scatter(x=names, y=post.z[:d], mode="markers", name=f"z = μ + σ·ε (seed {post.seed})",
                    marker=dict(symbol="x", size=11, color="#ff4b4b", line=dict(width=1, color="#ff4b4b")),
                    hovertemplate="%{x}: z %{y:.3f}<extra></extra>")
    fig.add_hline(y=0, line_color="grey", line_width=1)
    more = f" (first {d} of {len(post.mu)})" if d < len(post.mu) else ""
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title=f"q(z|x) per dimension{more}",
                      showlegend=True, bargap=0.35)
    fig.update_xaxes(categoryorder="array", categoryarray=names)
    return fig
