"""The VAE lab: what a generative autoencoder's latent space looks like from the decoder's side.

- Interpolation between two images' posterior means, straight (lerp) or along the great circle
  (slerp, White 2016). In d dimensions a prior sample has norm ≈ √d, while the midpoint of a lerp
  between two such codes is shorter (about √(d/2) for orthogonal ends): it passes through a region the
  prior rarely visits, which is why slerp often decodes to cleaner in-between images.
- Samples from the prior z ~ N(0, τ²I) (τ = 1 is the model's prior; τ < 1 "temperature" trades variety
  for typicality), shown as decoder means.
- Traversals: one coordinate of an image's code swept over a range, the others fixed. Dimensions
  whose average KL(q(z_j|x) ‖ p(z_j)) is ≈ 0 are unused by the encoder (posterior collapse): sweeping
  them changes nothing, so they are ordered by KL, and by default only the informative ones (mean KL
  above INFORMATIVE_KL nats) are drawn, each row labelled with its dimension and KL.
- The manifold grid of a 2-D latent (Kingma & Welling 2014, fig. 4): decodings of a regular grid of
  z, evenly spaced in z or at the prior's quantiles, beside the test images' posterior means.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from aecore.data.base import ImageData
from aecore.errors import ConfigError, DataError
from aecore.models.vae import slerp

MODES = ("lerp", "slerp")
SPACINGS = ("even", "quantile")
MAX_TRAVERSAL_ROWS = 16
MAX_DRAWN_ROWS = 64         # rows one traversal picture draws at most, whatever the latent's size (1024 rows of full
                            # tiles made a 155 MB picture)
INFORMATIVE_KL = 0.02       # nats: a dimension whose mean KL over the test split is at most this carries no information


def is_generative(model: nn.Module) -> bool:
    """Whether the model has a prior to sample from and the VAE views (sample/interpolate/traverse)."""
    return all(callable(getattr(model, name, None)) for name in ("sample", "interpolate", "traverse", "posterior"))


def _batch(model: nn.Module, x: Tensor) -> Tensor:
    shape = tuple(model.config.input_shape)
    if tuple(x.shape) == shape:
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != shape:
        raise DataError(f"the model takes images of shape {list(shape)}, not {list(x.shape[1:])}")
    return x.to(model.device)


@torch.no_grad()
def decode(model: nn.Module, z: Tensor, *, batch_size: int = 512) -> Tensor:
    """(B, d) codes -> (B, *input_shape) decoder means, float on the CPU."""
    model.eval()
    z = z.to(model.device, torch.float32)
    return torch.cat([model.decode(z[i:i + batch_size]).float().cpu() for i in range(0, len(z), batch_size)])


@torch.no_grad()
def posterior_mean(model: nn.Module, x: Tensor) -> Tensor:
    """(B, *input_shape) or one image -> (B, d) posterior means on the CPU."""
    model.eval()
    return model.encode(_batch(model, x)).float().cpu()


# --- interpolation ----------------------------------------------------------------------------------
def path_codes(a: Tensor, b: Tensor, steps: int, mode: str = "lerp") -> Tensor:
    """(d,), (d,) -> (steps, d) codes from a to b inclusive, straight or spherical."""
    if mode not in MODES:
        raise ConfigError(f"interpolation {mode!r} is not one of {', '.join(MODES)}")
    if not 2 <= int(steps) <= 64:
        raise ConfigError(f"steps = {steps} must be between 2 and 64")
    a, b = a.reshape(-1).float(), b.reshape(-1).float()
    t = torch.linspace(0, 1, int(steps)).unsqueeze(1)                   # (steps, 1)
    return slerp(a, b, t) if mode == "slerp" else torch.lerp(a, b, t)


def interpolation(model: nn.Module, x_a: Tensor, x_b: Tensor, steps: int, mode: str = "lerp") -> tuple[Tensor, Tensor]:
    """Decodings along the path between two images' posterior means: (images (steps, *shape), codes (steps, d))."""
    za, zb = posterior_mean(model, x_a)[0], posterior_mean(model, x_b)[0]
    z = path_codes(za, zb, steps, mode)
    return decode(model, z), z


def norm_profile(a: Tensor, b: Tensor, steps: int) -> dict[str, np.ndarray]:
    """‖z_t‖ along lerp and slerp paths, with t, and the prior's typical norm E‖z‖ for z ~ N(0, I_d)."""
    d = a.numel()
    typical = math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))   # mean of the chi distribution
    return {"t": np.linspace(0, 1, steps), "typical": np.full(steps, typical),
            **{m: path_codes(a, b, steps, m).norm(dim=1).numpy() for m in MODES}}


def norm_profile_figure(profile: dict[str, np.ndarray], latent_dim: int) -> dict:
    """`norm_profile` as a plotly figure dict (lerp solid, slerp dashed, the prior's typical norm dotted):
    a plain dict, drawn on every change of the interpolation, skips plotly's validation."""
    t = profile["t"].tolist()
    data = [dict(type="scatter", x=t, y=profile[m].tolist(), name=m, mode="lines+markers", line=dict(dash=dash))
            for m, dash in (("lerp", "solid"), ("slerp", "dash"))]
    data.append(dict(type="scatter", x=t, y=profile["typical"].tolist(), mode="lines",
                     name=f"typical ‖z‖ under the prior (d = {latent_dim})", line=dict(color="grey", dash="dot")))
    return {"data": data, "layout": dict(
        height=260, margin=dict(l=10, r=10, t=40, b=10), xaxis=dict(title=dict(text="t (A → B)")),
        yaxis=dict(title=dict(text="‖z‖"), rangemode="tozero"),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0.0))}


# --- prior samples ------------------------------------------------------------------------------------
def prior_codes(n: int, d: int, *, seed: int = 0, temperature: float = 1.0) -> Tensor:
    """(n, d) z ~ N(0, τ²I) from a CPU generator: the same seed gives the same codes on any device."""
    if not 1 <= int(n) <= 1024:
        raise ConfigError(f"count = {n} must be between 1 and 1024")
    if not 0.0 < float(temperature) <= 10.0:
        raise ConfigError(f"temperature = {temperature} must be in (0, 10]")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(int(n), int(d), generator=generator) * float(temperature)


def prior_samples(model: nn.Module, n: int, *, seed: int = 0, temperature: float = 1.0) -> Tensor:
    """(n, *input_shape) decoder means of seeded prior samples."""
    return decode(model, prior_codes(n, model.config.latent_dim, seed=seed, temperature=temperature))


# --- traversals -------------------------------------------------------------------------------------
@torch.no_grad()
def kl_per_dim(model: nn.Module, data: ImageData, *, limit: int | None = 2000, batch_size: int = 500) -> np.ndarray:
    """(d,) average KL(q(z_j|x) ‖ N(0, 1)) per latent dimension over the first `limit` images (None:
    all of them), in nats."""
    model.eval()
    shape = tuple(model.config.input_shape)
    n = len(data) if limit is None else min(limit, len(data))
    total = torch.zeros(model.config.latent_dim, dtype=torch.float64)
    for start in range(0, n, batch_size):
        x = data.as_float(slice(start, min(start + batch_size, n))).to(model.device).view(-1, *shape)
        mu, logvar = model.posterior(x)
        total += (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(0).double().cpu()
    return (total / max(n, 1)).numpy()


def traversal_values(span: float, steps: int) -> Tensor:
    """(steps,) evenly spaced values in [-span, span]."""
    if not 0.0 < float(span) <= 10.0:
        raise ConfigError(f"range = {span} must be in (0, 10]")
    if not 2 <= int(steps) <= 32:
        raise ConfigError(f"steps = {steps} must be between 2 and 32")
    return torch.linspace(-float(span), float(span), int(steps))


def traversal(model: nn.Module, x: Tensor, dims: Sequence[int], values: Tensor) -> Tensor:
    """Decodings of x's posterior mean with coordinate j set to each value, one row per j in `dims`:
    (len(dims) * len(values), *input_shape), row-major."""
    d = model.config.latent_dim
    if not dims:
        raise ConfigError("pick at least one latent dimension")
    bad = [j for j in dims if not 0 <= int(j) < d]
    if bad:
        raise ConfigError(f"dimension {bad[0]} does not exist: the latent has dimensions 0 to {d - 1}")
    if len(dims) > MAX_DRAWN_ROWS:
        raise ConfigError(f"{len(dims)} dimensions is too many to sweep at once: at most {MAX_DRAWN_ROWS}")
    x = _batch(model, x)[:1]
    return torch.cat([model.traverse(x, int(j), values.to(model.device)).float().cpu() for j in dims])


def traversal_rows(kl: np.ndarray, limit: int | None = MAX_TRAVERSAL_ROWS) -> list[int]:
    """Latent dimensions ordered by average KL (most used first), at most `limit` (None: all)."""
    return [int(j) for j in np.argsort(-np.asarray(kl), kind="stable")[:limit]]


def informative_dims(kl: np.ndarray, threshold: float = INFORMATIVE_KL) -> list[int]:
    """The dimensions whose mean KL is above `threshold` nats, most informative first."""
    kl = np.asarray(kl, dtype=float)
    return [j for j in traversal_rows(kl, limit=None) if kl[j] > threshold]


def traversal_dims(kl: np.ndarray, choice: str, limit: int = MAX_DRAWN_ROWS) -> tuple[list[int], int]:
    """The dimensions a traversal draws for `choice`, most informative first, at most `limit` of them; and
    how many `choice` names before that cap. `choice` is "informative" (mean KL above INFORMATIVE_KL; every
    dimension when none is: a collapsed posterior), "all", or one dimension's number."""
    kl = np.asarray(kl, dtype=float)
    if choice == "informative":
        wanted = informative_dims(kl) or traversal_rows(kl, limit=None)
    elif choice == "all":
        wanted = traversal_rows(kl, limit=None)
    else:
        try:
            j = int(choice)
        except (TypeError, ValueError):
            raise ConfigError(f"{choice!r} is not informative, all or a dimension's number") from None
        if not 0 <= j < len(kl):
            raise ConfigError(f"dimension {j} does not exist: the latent has dimensions 0 to {len(kl) - 1}")
        wanted = [j]
    return wanted[:max(1, int(limit))], len(wanted)


def dim_label(j: int, kl: np.ndarray) -> str:
    """A traversal row's name, drawn on the picture: 'z7 · 2.31 nats'."""
    return f"z{j} · {float(np.asarray(kl)[j]):.2f} nats"


def traversal_grid(images: Tensor, dims: Sequence[int], kl: np.ndarray, *, scale: int = 2,
                   per_band: int = 16) -> np.ndarray:
    """`traversal`'s images -> one (H, W, 3) uint8 picture, one row per dimension in `dims`, each row
    named on the picture by its dimension and mean KL (`dim_label`); longer sweeps wrap into bands of
    `per_band` columns."""
    from aecore.lab.reconstruct import comparison_grid

    if not dims or len(images) % len(dims):
        raise ConfigError(f"{len(images)} images do not make {len(dims)} equal rows")
    rows = list(images.split(len(images) // len(dims)))
    return comparison_grid(rows, per_band=per_band, scale=scale, row_labels=[dim_label(int(j), kl) for j in dims])


def kl_figure(kl: np.ndarray, threshold: float = INFORMATIVE_KL, *, height: int = 330) -> Any:
    """Bars of each dimension's mean KL (nats): informative ones (above `threshold`, the dashed line)
    in colour, the others grey, the same split the traversals use."""
    import plotly.graph_objects as go

    kl = np.asarray(kl, dtype=float)
    names = [f"z{j}" for j in range(len(kl))]
    informative = kl > threshold
    fig = go.Figure()
    for keep, colour, name in ((True, "#4c78a8", f"informative (> {threshold:g} nats)"),
                               (False, "#bab0ac", "≈ no information")):
        index = np.nonzero(informative == keep)[0]
        if index.size:
            fig.add_bar(x=[names[j] for j in index], y=kl[index], name=name, marker_color=colour,
                        hovertemplate="%{x}: %{y:.3f} nats<extra></extra>")
    fig.add_hline(y=threshold, line_dash="dash", line_color="grey", line_width=1)
    fig.update_xaxes(categoryorder="array", categoryarray=names)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title="KL per dimension (nats)",
                      barmode="overlay", showlegend=True,
                      legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.25, yanchor="top"))
    return fig


# --- the 2-D manifold -------------------------------------------------------------------------------
def grid_axis(n: int, spacing: str = "even", span: float = 3.0) -> np.ndarray:
    """(n,) ascending values: evenly spaced in [-span, span], or the prior's quantiles Φ⁻¹((i + ½)/n)."""
    if not 2 <= int(n) <= 40:
        raise ConfigError(f"grid size = {n} must be between 2 and 40")
    if spacing == "even":
        if not 0.0 < float(span) <= 10.0:
            raise ConfigError(f"range = {span} must be in (0, 10]")
        return np.linspace(-float(span), float(span), int(n))
    if spacing == "quantile":
        quantile = statistics.NormalDist().inv_cdf                  # not scipy's norm.ppf: scipy.stats costs
        return np.array([quantile((i + 0.5) / int(n)) for i in range(int(n))])   # the server ~65 MB to import
    raise ConfigError(f"spacing {spacing!r} is not one of {', '.join(SPACINGS)}")


def manifold_codes(axis: np.ndarray) -> Tensor:
    """(n*n, 2) codes of the grid, row-major as drawn: row r has z₂ = axis[n-1-r] (top = largest, like a
    plot's y axis), column c has z₁ = axis[c]."""
    axis_t = torch.as_tensor(np.asarray(axis), dtype=torch.float32)
    z2, z1 = torch.meshgrid(axis_t.flip(0), axis_t, indexing="ij")       # (n, n) each
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


def manifold(model: nn.Module, axis: np.ndarray) -> Tensor:
    """(n*n, *input_shape) decodings of the grid (see manifold_codes); needs a 2-D latent."""
    d = model.config.latent_dim
    if d != 2:
        raise ConfigError(f"the manifold grid needs a 2-D latent; this model's has {d} dimensions")
    return decode(model, manifold_codes(axis))


def codes_figure(codes: np.ndarray, labels: np.ndarray, classes: Sequence[str], axis: np.ndarray, *,
                 height: int = 520) -> Any:
    """Test posterior means (N, 2) coloured by class, over the grid's range, with the grid's extent boxed."""
    import plotly.graph_objects as go

    from aecore.lab.latent import class_colours

    colours = class_colours(len(classes))
    labels = np.asarray(labels)
    fig = go.Figure()
    for k, name in enumerate(classes):
        rows = np.nonzero(labels == k)[0]
        if rows.size:
            fig.add_trace(go.Scattergl(x=codes[rows, 0], y=codes[rows, 1], mode="markers", name=str(name),
                                       customdata=rows, marker=dict(size=4, color=colours[k], opacity=0.6),
                                       hovertemplate="#%{customdata} · " + str(name)
                                                     + "<br>z₁ %{x:.2f}, z₂ %{y:.2f}<extra></extra>"))
    step = float(axis[1] - axis[0]) if len(axis) > 1 else 1.0
    lo, hi = float(axis[0]) - step / 2, float(axis[-1]) + step / 2
    fig.add_shape(type="rect", x0=lo, x1=hi, y0=lo, y1=hi, line=dict(color="black", dash="dot"))
    fig.update_xaxes(range=[lo, hi], title="z₁")
    fig.update_yaxes(range=[lo, hi], title="z₂", scaleanchor="x", scaleratio=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), legend=dict(itemsizing="constant"))
    return fig


def codes_csv(codes: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> bytes:
    """CSV of the test split's posterior means: index, label, class, mu_0..mu_{d-1}."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["index", "label", "class", *[f"mu_{j}" for j in range(codes.shape[1])]])
    for i, (row, c) in enumerate(zip(codes, np.asarray(labels))):
        writer.writerow([i, int(c), classes[int(c)] if 0 <= int(c) < len(classes) else "",
                         *[f"{v:.6g}" for v in row]])
    return buffer.getvalue().encode()
