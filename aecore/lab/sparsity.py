"""How sparse a model's code is: activation histogram, population and lifetime sparsity, dead units,
top-activating images per unit; rank-ordered "anytime" reconstructions against PCA; and the
contractive AE's latent map coloured by the encoder's Jacobian norm.

Conventions. `codes` is (N, K): one row per test image (aecore.maps.codes_of). A unit is *off* for an
image when |h| <= threshold (threshold 0 = exactly zero, right for ReLU and TReLU codes; sigmoid
codes never reach 0, so they need a small threshold, 0.01 by default as in sparse_ae):
- population sparsity of an image: the fraction of units that are off for it, (N,);
- lifetime sparsity of a unit: its firing rate, the fraction of images it is on for, (K,);
  KL-penalised models also aim its *mean activation* q_j at the target rate p;
- a dead unit is off for every test image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from aecore.errors import ConfigError
from aecore.evaluate import per_image_mse
from aecore.models import RANKED_CODE, has_role, models_with
from aecore.models.sparse_ae import SIGMOID_OFF_THRESHOLD

SIGMOID_CODES = ("sigmoid",)


def code_activation(model: nn.Module) -> str:
    """The function that produces the code: 'relu', 'sigmoid', 'trelu', 'tanh', 'identity', ... as the
    model declares it (`AutoEncoder.code_activation`); 'identity' for a module that does not."""
    declared = getattr(model, "code_activation", None)
    return declared() if callable(declared) else "identity"


def default_threshold(model: nn.Module) -> float:
    """0 (exact zeros) unless the code is a sigmoid, which is never exactly 0."""
    return SIGMOID_OFF_THRESHOLD if code_activation(model) in SIGMOID_CODES else 0.0


def target_rate(model: nn.Module) -> float | None:
    """The KL penalty's target mean activation p, for KL sparse AEs; None otherwise (as the model
    declares it, `AutoEncoder.target_rate`)."""
    declared = getattr(model, "target_rate", None)
    rate = declared() if callable(declared) else None
    return None if rate is None else float(rate)


def _np(codes: Tensor | np.ndarray) -> np.ndarray:
    codes = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ConfigError(f"codes must be a non-empty (images, units) matrix, got shape {list(codes.shape)}")
    return codes.astype(np.float32, copy=False)


@dataclass
class Sparsity:
    threshold: float
    population: np.ndarray        # (N,) fraction of units off, per image
    lifetime: np.ndarray          # (K,) firing rate: fraction of images the unit is on for
    mean_activation: np.ndarray   # (K,) mean h_j over the images
    dead: np.ndarray              # unit ids that are off for every image

    @property
    def n_units(self) -> int:
        return int(self.lifetime.shape[0])


def sparsity(codes: Tensor | np.ndarray, threshold: float = 0.0) -> Sparsity:
    """Population and lifetime sparsity, mean activation and dead units of an (N, K) code matrix."""
    if not threshold >= 0:
        raise ConfigError(f"threshold = {threshold!r} must be >= 0")
    h = _np(codes)
    on = np.abs(h) > threshold                                          # (N, K)
    return Sparsity(threshold=float(threshold), population=1.0 - on.mean(1), lifetime=on.mean(0),
                    mean_activation=h.mean(0), dead=np.flatnonzero(~on.any(0)))


def top_activating(codes: Tensor | np.ndarray, unit: int, n: int = 16) -> np.ndarray:
    """Ids of the n images on which `unit` is most active, most active first (stable for ties)."""
    h = _np(codes)
    if not 0 <= unit < h.shape[1]:
        raise ConfigError(f"unit {unit} is out of range: the code has {h.shape[1]} units (0-{h.shape[1] - 1})")
    return np.argsort(-h[:, unit], kind="stable")[: max(0, n)]


# --- figures ---------------------------------------------------------------------------------------
def _layout(fig, title: str, x: str, y: str, height: int = 300):
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=height, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def activation_histogram(codes: Tensor | np.ndarray, threshold: float = 0.0, bins: int = 60, log: bool = True):
    """Histogram of every code value (binned here, so millions of values stay a small figure)."""
    import plotly.graph_objects as go

    h = _np(codes).ravel()
    counts, edges = np.histogram(h, bins=bins)
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_line_width=0))
    exact = int((h == 0).sum())
    title = f"All {h.size:,} code values" + (f" ({100 * exact / h.size:.1f} % exactly 0)" if exact else "")
    if threshold > 0:
        fig.add_vline(x=threshold, line_dash="dash", line_color="red", annotation_text="off threshold")
    fig.update_yaxes(type="log" if log else "linear")
    return _layout(fig, title, "activation", "count" + (" (log)" if log else ""))


def population_figure(stats: Sparsity, bins: int = 40):
    """Histogram over images of the fraction of units that are off."""
    import plotly.graph_objects as go

    counts, edges = np.histogram(stats.population, bins=bins, range=(0.0, 1.0))
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_line_width=0))
    return _layout(fig, f"Population sparsity: mean {stats.population.mean():.2f}",
                   "fraction of units off in an image", "images")


def lifetime_figure(stats: Sparsity, p: float | None = None):
    """Per unit: firing rate (bars, left axis) and mean activation (dots, right axis, its own scale:
    ReLU codes are not bounded by 1); the KL target p as a line on the activation axis."""
    from plotly.subplots import make_subplots

    units = np.arange(stats.n_units)
    colours = np.where(np.isin(units, stats.dead), "#ef553b", "#636efa")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=units, y=stats.lifetime, name="firing rate", marker_color=colours, secondary_y=False)
    fig.add_scatter(x=units, y=stats.mean_activation, mode="markers", name="mean activation",
                    marker=dict(color="#00cc96", size=6), secondary_y=True)
    if p is not None:
        fig.add_hline(y=p, line_dash="dash", line_color="black", annotation_text=f"target p = {p:g}", secondary_y=True)
    fig.update_yaxes(title_text="firing rate", range=[0, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="mean activation", rangemode="tozero", showgrid=False, secondary_y=True)
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, "Lifetime sparsity per unit (dead units in red)", "unit", "firing rate", 360)


# --- rank-ordered AE vs PCA --------------------------------------------------------------------------
def pca_components_for(model: nn.Module) -> int:
    """PCA components to fit for a model's k-slider: one per unit, at most the input size."""
    return int(min(model.config.latent_dim, int(torch.Size(model.config.input_shape).numel())))


@torch.no_grad()
def anytime_vs_pca(model: nn.Module, pca, x: Tensor, k: int) -> dict[str, Tensor]:
    """R_k from each image's top-k ranked units beside PCA with k components (capped at the PCA's
    size, which is exact once it spans the input): recon (B, *shape) and per-pixel MSE (B,) for each."""
    if not has_role(getattr(model, "registry_name", ""), RANKED_CODE):
        ranked = " or ".join(models_with(RANKED_CODE))
        raise ConfigError(f"anytime reconstructions need a ranked code: a {ranked} model")
    x = x.to(model.device)
    ranked = model.anytime_reconstruction(x, int(k)).cpu()
    pca_recon = pca.reconstruct(x.cpu(), max(1, min(int(k), pca.k))) if k > 0 else \
        pca.mean.view(1, -1).expand(x.shape[0], -1).clamp(0, 1).reshape(x.shape).cpu()
    x = x.cpu()
    return {"ranked": ranked, "pca": pca_recon, "ranked_mse": per_image_mse(ranked, x),
            "pca_mse": per_image_mse(pca_recon, x)}


@torch.no_grad()
def error_curves(model: nn.Module, pca, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-pixel MSE for k = 1..n_units: rank-ordered R_k (the model's progressive errors) and
    PCA with k components (k capped at the PCA's size)."""
    x = x.to(model.device)
    d = x[0].numel()
    ranked = (model.progressive_errors(x) / d).mean(0).cpu().numpy()                  # (n,)
    flat = x.reshape(x.shape[0], -1).cpu()
    codes = pca.encode(flat)                                                          # (B, pca.k)
    running = pca.mean.view(1, -1).expand_as(flat).clone()
    pca_err = []
    for k in range(1, model.n_units + 1):
        if k <= pca.k:
            running += codes[:, k - 1:k] @ pca.components[k - 1:k]
        pca_err.append(float((running.clamp(0, 1) - flat).pow(2).mean()))
    return ranked, np.asarray(pca_err)


def error_curve_figure(ranked: np.ndarray, pca_err: np.ndarray, k: int | None = None):
    import plotly.graph_objects as go

    ks = np.arange(1, len(ranked) + 1)
    fig = go.Figure()
    fig.add_scatter(x=ks, y=ranked, mode="lines", name="rank-ordered R_k")
    fig.add_scatter(x=ks, y=pca_err, mode="lines", name="PCA, k components")
    if k:
        fig.add_vline(x=k, line_dash="dot", line_color="grey")
    fig.update_yaxes(type="log")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, "Error against k", "k (units / components)", "MSE per pixel (log)", 320)


# --- contractive AE: latent map coloured by the Jacobian norm ------------------------------------------
@dataclass
class JacobianMap:
    xy: np.ndarray        # (n, 2)
    norm: np.ndarray      # (n,) ||dh/dx||_F per image
    labels: np.ndarray    # (n,)
    index: np.ndarray     # (n,) ids into the test split
    source: str           # where the 2-D coordinates come from


def subsample(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of min(n, n_total) ids, sorted."""
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed)))[: max(1, min(n, n_total))]
    return np.sort(order.numpy())


def jacobian_map(model: nn.Module, x: Tensor, codes: np.ndarray, labels: np.ndarray, *, n: int = 1000,
                 seed: int = 0, maps: dict[str, np.ndarray] | None = None) -> JacobianMap:
    """2-D map of the codes (the model's maps.npz PCA when it covers these images, else PCA of
    `codes`), for a seeded subsample of n images, with ||J||_F of the encoder at each of them."""
    from aecore.models.contractive_ae import jacobian_frobenius_sq
    from aecore.maps import project

    codes = _np(codes)
    if x.shape[0] != codes.shape[0]:
        raise ConfigError(f"{x.shape[0]} images but {codes.shape[0]} codes")
    index = subsample(len(codes), n, seed)
    stored = (maps or {}).get("pca")
    if stored is not None and len(stored) == len(codes):
        xy, source = np.asarray(stored, dtype=np.float32), "the model's maps.npz (PCA of its codes)"
    else:
        xy, source = project(codes, "pca"), "PCA of the codes, computed here"
    xs = x[torch.as_tensor(index)].to(model.device)
    norms = []
    for start in range(0, len(xs), 256):                      # bounded memory for autograd Jacobians
        norms.append(jacobian_frobenius_sq(model, xs[start:start + 256]).sqrt().cpu())
    return JacobianMap(xy=xy[index], norm=torch.cat(norms).numpy(), labels=np.asarray(labels)[index],
                       index=index, source=source)


def jacobian_figure(jm: JacobianMap, classes: list[str] | None = None):
    import plotly.graph_objects as go

    names = [classes[int(c)] if classes and 0 <= int(c) < len(classes) else str(int(c)) for c in jm.labels]
    fig = go.Figure(go.Scattergl(
        x=jm.xy[:, 0], y=jm.xy[:, 1], mode="markers",
        marker=dict(color=jm.norm, colorscale="Viridis", size=5, colorbar=dict(title="‖J‖_F")),
        customdata=np.stack([jm.index, jm.norm], 1), text=names,
        hovertemplate="image %{customdata[0]}: class %{text}<br>‖J‖_F = %{customdata[1]:.3f}<extra></extra>"))
    return _layout(fig, f"Latent map of {len(jm.norm):,} test images, coloured by the encoder's Jacobian norm",
                   "PC 1", "PC 2", 480)
