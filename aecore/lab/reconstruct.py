"""Originals beside a model's reconstructions and PCA's with as many components as the model's code.

PCA is the baseline every autoencoder must beat: with k components it is the best *linear* k-D code
(a linear autoencoder can only match it), so the gap between the two rows is what the nonlinearity
buys. Errors are MSE per pixel per image, on the model's raw output against the clean [0, 1] image,
exactly as `aecore.evaluate` measures the test metrics shown beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from aecore.errors import ConfigError, DataError
from aecore.evaluate import per_image_mse
from aecore.pca import PCA
from aecore.viz import image_grid, label_column

MODES = ("random", "class", "index")


# --- which images ----------------------------------------------------------------------------------
def select_indices(labels: Tensor, count: int, mode: str = "random", *, seed: int = 0,
                   klass: int | None = None, start: int = 0) -> Tensor:
    """(count,) int64 test-split indices: seeded random, seeded random within one class, or a
    contiguous run from `start`. Fewer than `count` only when the class or split is smaller."""
    n = int(labels.shape[0])
    if count < 1:
        raise ConfigError(f"pick at least one image, got {count}")
    if n == 0:
        raise DataError("the split has no images")
    generator = torch.Generator().manual_seed(int(seed))
    if mode == "random":
        return torch.randperm(n, generator=generator)[:count]
    if mode == "class":
        if klass is None:
            raise ConfigError("pick a class")
        pool = torch.nonzero(labels.cpu() == int(klass)).flatten()
        if pool.numel() == 0:
            raise DataError(f"class {klass} has no images in this split")
        return pool[torch.randperm(pool.numel(), generator=generator)[:count]]
    if mode == "index":
        if not 0 <= start < n:
            raise ConfigError(f"index {start} is outside the split (0 to {n - 1})")
        return torch.arange(start, min(start + count, n))
    raise ConfigError(f"unknown selection {mode!r}; use one of {', '.join(MODES)}")


# --- reconstructions -------------------------------------------------------------------------------
@torch.no_grad()
def reconstruct(model: nn.Module, x: Tensor, *, batch_size: int = 500) -> Tensor:
    """(B, *input_shape) float images -> the model's deterministic reconstructions, float on the CPU."""
    model.eval()
    shape = tuple(model.config.input_shape)
    if x.shape[0] == 0:
        raise DataError("no images to reconstruct")
    if tuple(x.shape[1:]) != shape and x[0].numel() != math.prod(shape):
        raise DataError(f"the model takes inputs of shape {list(shape)}, these images are {list(x.shape[1:])}")
    device = model.device
    out = [model.reconstruct(x[i:i + batch_size].to(device).reshape(-1, *shape)).float().cpu()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).reshape(x.shape)


def pca_components(model: nn.Module, input_numel: int, n_train: int) -> tuple[int | None, str]:
    """k for the PCA baseline (the model's code size, capped by what PCA can have) and a note; None
    and the reason when the comparison does not apply (as the model declares, `no_pca_baseline`)."""
    unfair = getattr(model, "no_pca_baseline", None)
    if unfair:
        return None, unfair
    k = getattr(model.config, "latent_dim", None)
    if not k:
        return None, "this model has no fixed-size code to match"
    cap = min(input_numel, n_train - 1)
    if k > cap:
        return cap, (f"the code has {k} units but PCA has at most {cap} components here "
                     f"(with {cap} it reconstructs exactly what lies in the data's span)")
    return int(k), f"PCA with {k} components, as many as the model's code"


@dataclass
class Comparison:
    original: Tensor               # (B, C, H, W) float in [0, 1]
    recon: Tensor                  # (B, C, H, W) the model's output
    mse: Tensor                    # (B,) model MSE per pixel
    pca: Tensor | None = None      # (B, C, H, W) PCA reconstruction
    pca_mse: Tensor | None = None  # (B,)


def compare(model: nn.Module, x: Tensor, pca: PCA | None = None) -> Comparison:
    """Reconstruct `x` (B, C, H, W) with the model (and PCA), with per-image errors."""
    x = x.float().cpu()
    recon = reconstruct(model, x)
    out = Comparison(original=x, recon=recon, mse=per_image_mse(recon, x))
    if pca is not None:
        if pca.mean.numel() != x[0].numel():
            raise DataError(f"the PCA was fitted on inputs of {pca.mean.numel()} values, these have {x[0].numel()}")
        out.pca = pca.reconstruct(x)
        out.pca_mse = per_image_mse(out.pca, x)
    return out


# --- pictures --------------------------------------------------------------------------------------
def comparison_grid(rows: Sequence[Tensor], *, per_band: int = 16, scale: int = 2, gap: int = 8,
                    row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Rows of equally many images (each (B, C, H, W)) -> one (H, W, 3) uint8 picture.

    Row r, column i is rows[r][i]. More than `per_band` columns wrap into bands stacked top to
    bottom (each band repeats every row), so projector mode can show big images without scrolling
    sideways. With `row_labels` (one per row) each band has the rows' names written at its left."""
    if not rows:
        raise ConfigError("nothing to show")
    count = rows[0].shape[0]
    if any(r.shape[0] != count for r in rows):
        raise ConfigError("every row needs the same number of images")
    bands = []
    for begin in range(0, count, per_band):
        band = torch.cat([r[begin:begin + per_band].detach().float().cpu() for r in rows])
        width = min(per_band, count - begin)
        picture = image_grid(band, nrow=width, scale=scale)
        if row_labels:
            if len(row_labels) != len(rows):
                raise ConfigError(f"{len(row_labels)} row labels for {len(rows)} rows")
            names = label_column(list(row_labels), picture.shape[0])
            picture = np.concatenate([names, picture], axis=1)
        bands.append(picture)
    full_width = max(b.shape[1] for b in bands)
    pieces = []
    for i, band in enumerate(bands):
        if band.shape[1] < full_width:
            band = np.pad(band, ((0, 0), (0, full_width - band.shape[1]), (0, 0)), constant_values=255)
        if i:
            pieces.append(np.full((gap * scale, full_width, 3), 255, dtype=np.uint8))
        pieces.append(band)
    return np.concatenate(pieces)


def error_figure(cmp: Comparison, names: Sequence[str], *, model_name: str = "model", pca_name: str = "PCA"):
    """Grouped bars: MSE per image, the model beside PCA."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_bar(x=list(names), y=cmp.mse.tolist(), name=model_name)
    if cmp.pca_mse is not None:
        fig.add_bar(x=list(names), y=cmp.pca_mse.tolist(), name=pca_name)
    fig.update_layout(barmode="group", height=280, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis_title="MSE per pixel", xaxis_title="image", xaxis_type="category",
                      title="Error per image", legend=dict(orientation="h", y=1.15, x=1, xanchor="right"))
    return fig


# --- metrics.json ----------------------------------------------------------------------------------
@dataclass
class Card:
    label: str
    value: str
    help: str = ""
    delta: str | None = None
    delta_color: str = "normal"


KNOWN: dict[str, tuple[str, str, str]] = {          # key: (label, format, help)
    "mse": ("Test MSE", ".5f", "mean squared error per pixel on the test split (lower is better)"),
    "psnr": ("PSNR", ".2f dB", "10·log10(1/MSE) per image, averaged (higher is better)"),
    "pca_mse": ("PCA MSE", ".5f", "PCA with as many components as the code, fitted on the training split"),
    "noisy_psnr": ("Noisy input PSNR", ".2f dB", "PSNR of the corrupted inputs themselves"),
    "psnr_gain": ("Denoising gain", "+.2f dB", "PSNR of the output minus PSNR of the noisy input"),
    "nll": ("NLL", ".2f nats", "importance-sampled negative log-likelihood, binarised test split"),
    "elbo": ("ELBO", ".2f nats", "evidence lower bound per image"),
    "kl": ("KL", ".2f nats", "KL(q(z|x) ‖ p(z)) per image"),
    "accuracy": ("Accuracy", "%", "classifier accuracy on the test split"),
    "scratch_cnn_accuracy": ("Same CNN, labels only", "%", "the same network trained on the labelled images alone"),
    "pca_logreg_accuracy": ("PCA + logistic regression", "%", "50 PCA components, classifier on the labelled images"),
    "iou": ("Mask IoU", ".3f", "intersection over union of the predicted foreground mask"),
    "population_sparsity": ("Units off per image", "%", "fraction of code units that are zero"),
    "mean_activation": ("Mean activation", ".4f", "mean code unit activation"),
    "l0": ("Active units per image (L0)", ".1f", "code units that are not zero, mean over images"),
    "dead_units_train": ("Dead units", "%", "units that fired on none of the last training images the model counts"),
    "units_below_0.05": ("Activations below 0.05", "%", "code values under 0.05: off in all but name"),
    "jacobian_norm": ("‖J‖_F", ".3f", "Frobenius norm of the encoder's Jacobian, mean over images"),
    "max_principal_angle_deg": ("Max angle to PCA", ".2f°", "largest principal angle between the decoder's "
                                "span and PCA's subspace"),
    "mean_principal_angle_deg": ("Mean angle to PCA", ".2f°", "mean principal angle to PCA's subspace"),
    "generalisation_gap": ("Generalisation gap", ".5f", "test loss minus training loss"),
    "parameters": ("Parameters", ",d", "trainable and frozen values in the model"),
}
SKIP = {"n", "split", "dataset", "noise", "training", "pca_components", "nll_samples", "nll_data",
        "scratch_cnn_steps", "pca_logreg_components", "train_loss", "test_loss"}


def _fmt(value: float, fmt: str) -> str:
    if fmt == "%":
        return f"{100 * value:.1f} %"
    if fmt == ",d":
        return f"{int(value):,}"
    spec, _, unit = fmt.partition(" ")
    if spec.endswith("°"):
        return f"{value:{spec[:-1]}}°"
    return f"{value:{spec}}" + (f" {unit}" if unit else "")


def metric_cards(metrics: dict[str, Any]) -> list[Card]:
    """The numbers of a metrics.json worth a card, known ones first with units and explanations;
    any other number the model reported follows under its own name."""
    cards: list[Card] = []
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    for key, (label, fmt, help) in KNOWN.items():
        value = metrics.get(key)
        if not number(value):
            continue
        card = Card(label, _fmt(value, fmt), help)
        if key == "mse" and number(metrics.get("pca_mse")):
            card.delta = f"{value - metrics['pca_mse']:+.5f} vs PCA"
            card.delta_color = "inverse"                     # lower than PCA is good: green
        if key == "pca_mse" and metrics.get("pca_components"):
            card.label = f"PCA MSE ({metrics['pca_components']} comp.)"
        if key in ("noisy_psnr", "psnr_gain") and metrics.get("noise"):
            card.help += f" (noise {metrics['noise']})"
        cards.append(card)
    ranked = sorted((int(key[7:]), key) for key, value in metrics.items()
                    if key.startswith("mse_top") and key[7:].isdigit() and number(value))
    for k, key in ranked:                       # a ranked code's anytime errors, in order of k
        cards.append(Card(f"MSE, top {k} units", f"{metrics[key]:.5f}", "reconstruction from the k most active units"))
    shown = {key for _, key in ranked}
    for key, value in metrics.items():
        if key not in KNOWN and key not in SKIP and key not in shown and number(value):
            cards.append(Card(key.replace("_", " "), f"{value:.4g}"))
    return cards


def metrics_scope(metrics: dict[str, Any]) -> str:
    """'10,000 test images of mnist, inputs corrupted with gaussian:0.5' — what the cards measured."""
    parts = []
    if metrics.get("n"):
        parts.append(f"{int(metrics['n']):,} {metrics.get('split', 'test')} images"
                     + (f" of {metrics['dataset']}" if metrics.get("dataset") else ""))
    if metrics.get("noise"):
        parts.append(f"inputs corrupted with {metrics['noise']}")
    return ", ".join(parts)
