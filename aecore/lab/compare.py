"""Several models on the same inputs: one image grid (input, corrupted input, each model's output)
and one table (MSE, PSNR, code sparsity, parameters, code size).

Every model sees exactly the same seeded test images and, when noise is on, exactly the same
corrupted copies, so differences in the table come from the models alone. The table is measured
on `n_eval` images (the grid shows the first few of them), against the clean images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from aecore.data.base import ImageData
from aecore.errors import ConfigError
from aecore.evaluate import per_image_mse, population_sparsity, psnr
from aecore.noise import make_generator, parse_noise
from aecore.viz import image_grid

MAX_MODELS = 8
MAX_SHOWN = 32
MAX_EVAL = 2000
COLUMNS = ["model", "MSE", "PSNR (dB)", "code sparsity", "parameters", "code size", "target"]
NOT_APPLICABLE = "—"          # a cell that does not apply (the corrupted input has no code and no parameters)
MAX_LABEL = 40                # characters of a model's name drawn on the grid


def sample(data: ImageData, count: int, seed: int) -> Tensor:
    """(count, C, H, W) float in [0, 1]: a seeded choice of test images, the same for every model."""
    if count < 1:
        raise ConfigError(f"need at least one image, got {count}")
    count = min(count, len(data))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    return data.as_float(order)


def corrupt(clean: Tensor, noise: str | None, seed: int) -> Tensor | None:
    """The same corrupted copy for every model (seeded); None without noise."""
    parsed = parse_noise(noise)
    if parsed is None:
        return None
    return parsed(clean, generator=make_generator(seed, clean.device))


def _target(model: torch.nn.Module, clean: Tensor) -> tuple[Tensor, str]:
    """What the output is scored against: the clean image, or its foreground mask for a segmenter."""
    if getattr(model.config, "task", None) == "segment":
        return (clean > 0.5).any(dim=1, keepdim=True).float(), "foreground mask"
    return clean, "clean image"


@dataclass
class Result:
    label: str
    output: Tensor                       # (n_shown, C, H, W) on the CPU
    row: dict[str, object] = field(default_factory=dict)


@torch.no_grad()
def run_model(model: torch.nn.Module, label: str, clean: Tensor, noisy: Tensor | None, *,
              n_shown: int, batch_size: int = 500) -> Result:
    """One model's outputs on `noisy` (or `clean`) and its row of the table."""
    shape = tuple(model.config.input_shape)
    if math.prod(shape) != math.prod(clean.shape[1:]):
        raise ConfigError(f"{label} takes inputs of shape {list(shape)}, these images are {list(clean.shape[1:])}")
    model.eval()
    device = next(iter(model.parameters())).device
    x_all = clean if noisy is None else noisy
    target_all, target_kind = _target(model, clean.view(-1, *shape))
    mse_parts, psnr_parts, sparse_parts, outs = [], [], [], []
    code_size = None
    for start in range(0, x_all.shape[0], batch_size):
        x = x_all[start:start + batch_size].to(device).view(-1, *shape)
        target = target_all[start:start + batch_size].to(device)
        z = model.encode(x)
        z_flat = z.reshape(z.shape[0], -1)
        code_size = z_flat.shape[1]
        out = model.reconstruct(x).reshape(target.shape).float()
        mse_parts.append(per_image_mse(out, target).cpu())
        psnr_parts.append(psnr(out, target).cpu())
        sparse_parts.append(population_sparsity(z_flat).cpu())
        if start < n_shown:
            outs.append(out[: n_shown - start].cpu())
    row = {
        "model": label,
        "MSE": float(torch.cat(mse_parts).mean()),
        "PSNR (dB)": float(torch.cat(psnr_parts).mean()),
        "code sparsity": float(torch.cat(sparse_parts).mean()),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "code size": int(code_size or 0),
        "target": target_kind,
    }
    return Result(label=label, output=torch.cat(outs), row=row)


def input_row(clean: Tensor, noisy: Tensor) -> dict[str, object]:
    """The corrupted input itself as a row: what any model has to beat."""
    return {"model": "corrupted input (no model)", "MSE": float(per_image_mse(noisy, clean).mean()),
            "PSNR (dB)": float(psnr(noisy, clean).mean()), "code sparsity": None, "parameters": None,
            "code size": None, "target": "clean image"}


@dataclass
class Comparison:
    clean: Tensor                 # (n_shown, C, H, W)
    noisy: Tensor | None          # (n_shown, C, H, W) or None
    results: list[Result]
    rows: list[dict[str, object]]  # the table, input row first when there is noise
    n_eval: int


def compare(models: Mapping[str, torch.nn.Module], data: ImageData, *, n_shown: int = 8, n_eval: int = 500,
            seed: int = 0, noise: str | None = None) -> Comparison:
    """Run every model on the same seeded images (and the same corruption)."""
    if not models:
        raise ConfigError("choose at least one model to compare")
    if len(models) > MAX_MODELS:
        raise ConfigError(f"at most {MAX_MODELS} models side by side, got {len(models)}")
    if not 1 <= n_shown <= MAX_SHOWN:
        raise ConfigError(f"images shown must be between 1 and {MAX_SHOWN}, got {n_shown}")
    n_eval = max(n_shown, min(n_eval, MAX_EVAL))
    clean = sample(data, n_eval, seed)
    noisy = corrupt(clean, noise, seed + 1)
    results = [run_model(m, label, clean, noisy, n_shown=n_shown) for label, m in models.items()]
    rows = ([input_row(clean, noisy)] if noisy is not None else []) + [r.row for r in results]
    return Comparison(clean=clean[:n_shown], noisy=None if noisy is None else noisy[:n_shown],
                      results=results, rows=rows, n_eval=clean.shape[0])


def grid_rows(comparison: Comparison) -> list[tuple[str, Tensor]]:
    """[(row label, (n, C, H, W) images)]: input, corrupted input (if any), then each model."""
    rows = [("input", comparison.clean)]
    if comparison.noisy is not None:
        rows.append(("corrupted input", comparison.noisy))
    for r in comparison.results:
        out = r.output
        if out.shape[1] != comparison.clean.shape[1]:     # a 1-channel mask beside RGB inputs
            out = out.expand(-1, comparison.clean.shape[1], -1, -1)
        rows.append((r.label, out))
    return rows


def full_grid(comparison: Comparison, *, scale: int = 2) -> np.ndarray:
    """(H, W, 3) uint8: all rows of `grid_rows` stacked, one image per column (for the PNG download)."""
    rows = grid_rows(comparison)
    n = comparison.clean.shape[0]
    stacked = torch.cat([images.float().clamp(0, 1) for _, images in rows])
    return image_grid(stacked, nrow=n, scale=scale)


def labelled_grid(comparison: Comparison, *, scale: int = 2, per_band: int = 16) -> np.ndarray:
    """(H, W, 3) uint8: the rows of `grid_rows`, each named on the picture (input, corrupted input, each
    model), more than `per_band` images wrapping into bands."""
    from aecore.lab.reconstruct import comparison_grid

    rows = grid_rows(comparison)
    labels = [label if len(label) <= MAX_LABEL else label[:MAX_LABEL - 1] + "…" for label, _ in rows]
    return comparison_grid([images.float().clamp(0, 1) for _, images in rows], per_band=per_band, scale=scale,
                           row_labels=labels)


def human_count(n: int) -> str:
    """A count in three significant digits: 950 -> '950', 12_345 -> '12.3 k', 241_234 -> '241 k',
    1_081_000 -> '1.08 M'."""
    n = int(n)
    if abs(n) < 1000:
        return str(n)
    for unit, size in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        value = float(f"{n / size:.3g}")
        if abs(value) < 1000 or unit == "T":
            decimals = max(0, 2 - int(math.floor(math.log10(abs(value)))))
            return f"{value:.{decimals}f} {unit}"
    raise AssertionError("unreachable")


def display_rows(rows: list[dict[str, object]]) -> tuple[list[dict[str, object]], list[str]]:
    """The table as shown: MSE (5 significant digits) and PSNR (2 decimals) as numbers, code sparsity
    as a percentage, parameters human-readable ('241 k', '1.08 M'), NOT_APPLICABLE where a value does
    not apply (never 'None'); the target column only when some output is not scored against the clean
    image. Returns (rows, the columns left out)."""
    left_out = ["target"] if all(r.get("target") == "clean image" for r in rows) else []
    shown = []
    for row in rows:
        out: dict[str, object] = {}
        for column in COLUMNS:
            if column in left_out:
                continue
            value = row.get(column)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out[column] = NOT_APPLICABLE
            elif column == "MSE":
                out[column] = float(f"{value:.5g}")
            elif column == "PSNR (dB)":
                out[column] = round(float(value), 2)                  # inf: an exact copy
            elif column == "code sparsity":
                out[column] = f"{100 * float(value):.1f} %"
            elif column == "parameters":
                out[column] = human_count(int(value))
            elif column == "code size":
                out[column] = f"{int(value):,}"
            else:
                out[column] = value
        shown.append(out)
    return shown, left_out
