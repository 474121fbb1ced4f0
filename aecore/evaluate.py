"""Test-split metrics for any model: reconstruction MSE per pixel, PSNR, denoising gain, and the
model's own per-example metrics (`eval_metrics`), averaged over the split.

PSNR is computed per image, 10·log10(1 / MSE_i) for data in [0, 1], then averaged over images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from aecore.data.base import ImageData
from aecore.noise import Noise, make_generator, parse_noise

MIN_MSE = 1e-10


def per_image_mse(a: Tensor, b: Tensor) -> Tensor:
    """(B, ...) x (B, ...) -> (B,) mean squared error per image."""
    return (a - b).pow(2).reshape(a.shape[0], -1).mean(dim=1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """(B,) PSNR in dB for data in [0, 1]."""
    return 10.0 * torch.log10(1.0 / per_image_mse(a, b).clamp_min(MIN_MSE))


def population_sparsity(z: Tensor, threshold: float = 0.0) -> Tensor:
    """(B,) fraction of code units with |z| <= threshold in each example."""
    return (z.abs() <= threshold).float().reshape(z.shape[0], -1).mean(dim=1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ImageData, *, noise: str | Noise | None = None,
             batch_size: int = 500, seed: int = 0, limit: int | None = None) -> dict[str, Any]:
    """Average metrics over `data` (first `limit` images if given); corruption is seeded."""
    model.eval()
    device = next(iter(model.parameters())).device
    shape = tuple(model.config.input_shape)
    noise = parse_noise(noise) if isinstance(noise, str) or noise is None else noise
    generator = make_generator(seed, device) if noise else None
    n = len(data) if limit is None else min(limit, len(data))
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(name: str, values: Tensor) -> None:
        """NaN marks 'not applicable' (e.g. accuracy of an unlabelled image): left out of the mean."""
        known = values[~torch.isnan(values)].double()
        sums[name] = sums.get(name, 0.0) + float(known.sum())
        counts[name] = counts.get(name, 0) + int(known.numel())

    # a model's own metrics may sample (a VAE's one-sample ELBO): seeded, so `aecore eval` gives the
    # figures metrics.json holds, without touching the caller's random state
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            index = slice(start, min(start + batch_size, n))
            clean = data.as_float(index).to(device).view(-1, *shape)
            labels = data.labels[index].to(device)
            x = noise(clean, generator=generator) if noise else clean
            recon = model.reconstruct(x).view_as(clean)
            add("mse", per_image_mse(recon, clean))
            add("psnr", psnr(recon, clean))
            if noise:
                add("noisy_psnr", psnr(x, clean))
            for name, values in model.eval_metrics(x, labels).items():
                add(name, values.reshape(-1))
    metrics: dict[str, Any] = {k: (v / counts[k] if counts[k] else float("nan")) for k, v in sums.items()}
    if noise:
        metrics["psnr_gain"] = metrics["psnr"] - metrics["noisy_psnr"]
        metrics["noise"] = str(noise)
    metrics["n"] = n
    metrics["split"] = data.split
    metrics["dataset"] = data.name
    metrics["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}
