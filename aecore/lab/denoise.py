"""The class demo: corrupt clean images, let a denoising autoencoder undo it, and compare with a plain
autoencoder that never saw noise (Vincent et al. 2010: the DAE learns to map corrupted inputs back
to the data manifold; a plain AE mostly copies what it is given, noise included).

All corruption is seeded, so every row, every model and every level of the sweep sees exactly the
same noisy pixels. PSNR is per image against the clean image (aecore.evaluate.psnr).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from torch import Tensor, nn

from aecore.errors import AecoreError, ConfigError
from aecore.evaluate import MIN_MSE, psnr
from aecore.lab.catalog import USER_PREFIX, Entry, ref_path
from aecore.lab.reconstruct import reconstruct
from aecore.models import BASELINE, get_model_class, has_role
from aecore.noise import KINDS, Noise, make_generator, parse_noise
from aecore.store import CONFIG, read_config

LABELS = {"gaussian": "Gaussian (σ)", "masking": "Masking (ν)", "saltpepper": "Salt & pepper (ν)"}
SYMBOL = {"gaussian": "σ", "masking": "ν", "saltpepper": "ν"}
DEFAULT_LEVEL = {"gaussian": 0.5, "masking": 0.5, "saltpepper": 0.2}   # what the zoo's denoisers saw
MAX_LEVEL = {"gaussian": 1.0, "masking": 1.0, "saltpepper": 1.0}
SWEEP_LEVELS = {
    "gaussian": [round(0.1 * i, 2) for i in range(11)],                # σ 0 .. 1
    "masking": [round(0.1 * i, 2) for i in range(10)],                 # ν 0 .. 0.9
    "saltpepper": [round(0.05 * i, 2) for i in range(11)],             # ν 0 .. 0.5
}
IDENTICAL_PSNR = 10.0 * float(np.log10(1.0 / MIN_MSE))                 # what psnr() gives for x == y


# --- what each model is -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    """What the picker needs to know about a model without loading its weights."""

    noise: Noise | None          # the corruption it was trained on (None: clean training)
    latent_dim: int | None
    task: str | None             # the config's `task`, for models trained for several (U-Net: 'denoise', 'segment')


def entry_path(ref: str) -> Path:
    return ref_path(ref)


def training_noise(info: Mapping[str, Any]) -> Noise | None:
    """The noise in a config.json's recipe (None when trained on clean images or unreadable)."""
    recipe = info.get("recipe") or {}
    try:
        return parse_noise(recipe.get("noise")) if isinstance(recipe, dict) else None
    except AecoreError:
        return None


def facts_of(info: Mapping[str, Any]) -> Facts:
    config = info.get("config") or {}
    return Facts(noise=training_noise(info), latent_dim=config.get("latent_dim"), task=config.get("task"))


_facts: dict[tuple, Facts] = {}      # {(ref, folder, config.json mtime and size): Facts}, bounded below


def entry_facts(entries: Iterable[Entry]) -> dict[str, Facts]:
    """{ref: Facts} read from each model's config.json (broken folders are left out).

    Reading and validating every model's config file on each rerun was a good part of the denoise
    page's time (bench/README.md); a config is read again only when its file changes."""
    out = {}
    for entry in entries:
        try:
            path = entry_path(entry.ref)
            stat = (path / CONFIG).stat()
        except (AecoreError, OSError):
            continue
        key = (entry.ref, str(path), stat.st_mtime_ns, stat.st_size)
        facts = _facts.get(key)
        if facts is None:
            try:
                facts = facts_of(read_config(path))
            except AecoreError:
                continue
            if len(_facts) >= 512:
                _facts.clear()
            _facts[key] = facts
        out[entry.ref] = facts
    return out


def can_denoise(entry: Entry, facts: Facts | None) -> bool:
    """Every autoencoder maps an image to an image, except one whose config makes it output something
    else (a U-Net trained to segment), as the model declares (`non_image_output`)."""
    return facts is None or get_model_class(entry.model).non_image_output({"task": facts.task}) is None


def why_not(model: nn.Module) -> str | None:
    """None when the model's output is a denoised image; otherwise the reason for the user."""
    config = getattr(model, "config", None)
    instead = type(model).non_image_output(config.to_dict()) if config is not None else None
    if instead is None:
        return None
    return (f"{instead}, not a cleaned image. Pick a model whose output is an image: any autoencoder, or a U-Net "
            "trained to denoise.")


def _short(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def preferred_model(entries: list[Entry], facts: Mapping[str, Facts], kind: str) -> str | None:
    """The denoiser to show first for this noise kind: a pretrained plain autoencoder (BASELINE role)
    trained on that kind, else any model trained on it (pretrained first), else None. Chosen by role,
    not by a name prefix."""
    matching = [e for e in entries if facts.get(e.ref) and facts[e.ref].noise and facts[e.ref].noise.kind == kind
                and can_denoise(e, facts.get(e.ref))]
    if not matching:
        return None
    rank = lambda e: (e.ref.startswith(USER_PREFIX), not has_role(e.model, BASELINE))  # noqa: E731
    return min(matching, key=rank).ref


def plain_ae(entries: list[Entry], facts: Mapping[str, Facts], *, code_size: int | None) -> Entry | None:
    """The contrast: a pretrained baseline autoencoder (BASELINE role) trained without noise, the one whose
    code size is nearest (by ratio) to `code_size`, the denoiser's, so the two squeeze the image alike;
    the largest code when `code_size` is unknown. Ties go to the smaller code (the stricter baseline)."""
    plain = [e for e in entries if not e.ref.startswith(USER_PREFIX) and has_role(e.model, BASELINE)
             and e.ref in facts and facts[e.ref].noise is None]
    if not plain:
        return None

    def rank(e: Entry) -> tuple:
        size = facts[e.ref].latent_dim or 0
        if size <= 0:
            return (True, 0.0, 0, e.ref)                       # unknown code size: last
        distance = abs(math.log(size / code_size)) if code_size and code_size > 0 else -size
        return (False, distance, size, e.ref)
    return min(plain, key=rank)


# --- the demo ---------------------------------------------------------------------------------------
def make_noise(kind: str, level: float) -> Noise:
    if kind not in KINDS:
        raise ConfigError(f"unknown noise {kind!r}; use one of {', '.join(KINDS)}")
    return Noise(kind, float(level))


def corrupt(clean: Tensor, noise: Noise, seed: int) -> Tensor:
    """Seeded corruption on the CPU: the same seed gives the same noisy pixels for any model."""
    return noise(clean.float().cpu(), generator=make_generator(seed, "cpu"))


@dataclass
class Demo:
    clean: Tensor                              # (B, C, H, W)
    noisy: Tensor
    denoised: Tensor
    plain: Tensor | None = None
    psnr: dict[str, Tensor] = field(default_factory=dict)   # row -> (B,) dB: 'corrupted', 'denoised', 'plain'

    def rows(self) -> list[Tensor]:
        return [self.clean, self.noisy, self.denoised] + ([self.plain] if self.plain is not None else [])


def demo(model: nn.Module, clean: Tensor, noise: Noise, *, seed: int = 0, plain: nn.Module | None = None) -> Demo:
    """Corrupt `clean` (B, C, H, W), denoise it with `model` (and the plain AE), PSNR of every row."""
    clean = clean.float().cpu()
    noisy = corrupt(clean, noise, seed)
    out = Demo(clean=clean, noisy=noisy, denoised=reconstruct(model, noisy))
    out.psnr = {"corrupted": psnr(noisy, clean), "denoised": psnr(out.denoised, clean)}
    if plain is not None:
        out.plain = reconstruct(plain, noisy)
        out.psnr["plain"] = psnr(out.plain, clean)
    return out


def fmt_psnr(value: float) -> str:
    return "∞ (identical)" if value >= IDENTICAL_PSNR - 1e-3 else f"{value:.2f} dB"


# --- the sweep --------------------------------------------------------------------------------------
NOISY = "noisy input (no model)"


def sweep(models: Mapping[str, nn.Module], clean: Tensor, kind: str, *, levels: list[float] | None = None,
          seed: int = 0) -> dict[str, Any]:
    """Mean PSNR against the noise level for every model, on the same images and the same noisy
    pixels at each level. {'kind', 'levels', 'psnr': {name: [dB per level]}}, the noisy input first."""
    levels = list(SWEEP_LEVELS[kind] if levels is None else levels)
    if not levels:
        raise ConfigError("the sweep needs at least one noise level")
    clean = clean.float().cpu()
    curves: dict[str, list[float]] = {NOISY: []}
    curves.update({name: [] for name in models})
    for level in levels:
        noisy = corrupt(clean, make_noise(kind, level), seed)
        curves[NOISY].append(float(psnr(noisy, clean).mean()))
        for name, model in models.items():
            curves[name].append(float(psnr(reconstruct(model, noisy), clean).mean()))
    return {"kind": kind, "levels": levels, "psnr": curves, "images": int(clean.shape[0]), "seed": seed}


def sweep_figure(result: Mapping[str, Any], *, current: float | None = None):
    """Plotly lines: PSNR (dB) against the level; the noisy input dashed; the slider's level marked."""
    import plotly.graph_objects as go

    kind = result["kind"]
    fig = go.Figure()
    for name, values in result["psnr"].items():
        shown = [None if v >= IDENTICAL_PSNR - 1e-3 else v for v in values]   # identical: infinite, left out
        fig.add_scatter(x=result["levels"], y=shown, mode="lines+markers", name=name,
                        line=dict(dash="dash", color="grey") if name == NOISY else None,
                        hovertemplate=f"{name}<br>{SYMBOL[kind]} = %{{x}}<br>%{{y:.2f}} dB<extra></extra>")
    if current is not None:
        fig.add_trace(level_marker(result, current))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10),
                      title=f"PSNR against {LABELS[kind]} on {result['images']} test images (seed {result['seed']})",
                      xaxis_title=f"{LABELS[kind]}", yaxis_title="PSNR (dB, higher is better)",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def level_marker(result: Mapping[str, Any], current: float) -> dict:
    """The slider's level on `sweep_figure`'s plot: a dotted vertical line across the curves' PSNR range,
    as a plotly trace dict, so a page can draw it over a sweep figure built once for every visitor."""
    values = [v for curve in result["psnr"].values() for v in curve if v is not None and v < IDENTICAL_PSNR - 1e-3]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    return dict(type="scatter", x=[current, current], y=[low, high], mode="lines+text", name="slider",
                text=["", "slider"], textposition="top center", showlegend=False, hoverinfo="skip",
                line=dict(dash="dot", color="black", width=1))


def noise_from_url(text: str | None) -> Noise:
    """A noise spec from the page's link, falling back to the default when absent or invalid."""
    try:
        noise = parse_noise(text) if text else None
    except AecoreError:
        noise = None
    if noise is None or noise.level > MAX_LEVEL[noise.kind]:
        return Noise("gaussian", DEFAULT_LEVEL["gaussian"])
    return noise
