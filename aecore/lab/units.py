"""One code unit at a time, as interpretability dashboards (Neuronpedia, SAELens) show the features
of language-model SAEs, here for images: the test images that turn the unit on most, how strongly it
fires, what it reads (encoder filter) and writes (decoder atom), how often it is on, what the test
MSE loses when it is zeroed, and which units write nearly the same atom.

Everything a unit's view reads is computed once per model and test split (`prepare`: the codes, each
image's reconstruction error, the atoms), so one unit costs a sort, a histogram, K dot products and
the ablation's decode of the images where the unit is not zero (at most `ABLATION_LIMIT` of them;
beyond that a seeded sample estimates the change, and says so).

Atoms, by what the model has: a tied weight (the same row reads and writes), the decoder's only
linear layer (the code goes straight into it: its column is exactly what the unit adds to the
output's pre-activation), or, for deeper decoders, the unit's effect at the mean code: decode(z̄ +
σ_j e_j) - decode(z̄), σ_j its standard deviation over the test split (the decoder is not linear, so
this is one local reading of it, and the view says so).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from aecore.data.base import ImageData
from aecore.errors import ConfigError
from aecore.lab import inside
from aecore.lab.sparsity import default_threshold, top_activating

ABLATION_LIMIT = 2000     # images decoded per ablation at most; more are sampled (0.05 s for a 784x256 decoder)
ABLATION_SECONDS = 0.4    # a slower decoder gets a smaller sample, so that any unit's view takes under 1 s
ABLATION_STEP = 250       # sample sizes are multiples of this (the same on a machine whatever its load)
BATCH = 1000
N_TOP = 16
N_SIMILAR = 5

ATOM_TIED = "tied weight: the same row reads the input and writes the output"
ATOM_LINEAR = "decoder column: what the unit adds to the output, per unit of activation (before the output function)"
ATOM_EFFECT = ("the unit's effect at the mean code: decode(mean code + one standard deviation of this unit) "
               "minus decode(mean code); the decoder is not linear, so this is one local reading of it")


@dataclass
class UnitBasis:
    """What every unit's view reads, computed once per model and test split (`prepare`)."""

    codes: np.ndarray             # (N, K) float32
    threshold: float              # a unit is on for an image when |h| > threshold
    sse: np.ndarray | None        # (N,) summed squared error of decode(code) per image; None: no ablation
    atoms: np.ndarray             # (K, D) float32, the decoder atoms
    atom_kind: str                # how the atoms were read (ATOM_*)
    filters: Tensor | None        # (K, C, H, W) encoder filters, None when the code is deeper than one layer
    input_shape: tuple[int, ...]
    no_ablation: str = ""         # why zeroing a unit says nothing about the reconstruction, when it does not
    ablation_limit: int = ABLATION_LIMIT   # images decoded per ablation (`prepare` sizes it to the decoder's speed)

    @property
    def n_images(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.codes.shape[1])

    @property
    def mse(self) -> float | None:
        """Test MSE per pixel of the reconstructions from the codes (the ablation's reference)."""
        return None if self.sse is None else float(self.sse.sum() / (self.n_images * self.atoms.shape[1]))


@dataclass
class Ablation:
    delta: float                  # change of the test MSE per pixel when the unit is set to 0
    stderr: float                 # standard error of `delta` when it was estimated from a sample, else 0
    changed: int                  # test images where the unit is not 0 (the only ones it changes)
    used: int                     # of them, how many were decoded

    @property
    def exact(self) -> bool:
        return self.used == self.changed


@dataclass
class UnitView:
    unit: int
    top: np.ndarray               # (n,) test image ids, most active first
    top_values: np.ndarray        # (n,) the unit's activation on them
    active_values: np.ndarray     # the unit's activations where it is on (|h| > threshold)
    firing_rate: float            # fraction of test images where it is on
    mean_activation: float        # over all test images
    ablation: Ablation | None     # None when the model's reconstruction does not go through its code alone
    similar: np.ndarray           # (m,) unit ids, most similar decoder atom first
    similar_cos: np.ndarray       # (m,) their cosine with this unit's atom, descending


NOT_THROUGH_CODE = ("its reconstruction does not go through the code alone (skip connections carry the image past "
                    "it)")


@torch.no_grad()
def through_code(model: nn.Module, data: ImageData) -> str:
    """'' when the model's code is a flat list of units (B, K) that its reconstruction goes through
    (reconstruct(x) = decode(encode(x)), checked on two images of `data`); else why not."""
    model.eval()
    x = data.as_float(slice(0, 2)).to(model.device).view(-1, *model.config.input_shape)
    z = model.encode(x)
    if z.dim() != 2:
        return f"the code is a {z.dim() - 1}-D map per image, not a list of units"
    try:
        decoded = model.decode(z)
    except Exception as err:  # noqa: BLE001 - a decoder that cannot take its own code: no unit view, not a crash
        return f"the decoder does not take a code alone ({type(err).__name__})"
    if decoded.shape != x.shape or not torch.allclose(model.reconstruct(x), decoded, atol=1e-5):
        return NOT_THROUGH_CODE
    return ""


@torch.no_grad()
def prepare(model: nn.Module, data: ImageData, codes: np.ndarray | Tensor) -> UnitBasis:
    """The per-model part of every unit's view: `codes` (N, K) are the test split's (one row per image
    of `data`, as `aecore.maps.codes_of` gives them). ConfigError when the code is not a flat list of
    units (a U-Net's spatial map, ...)."""
    codes = np.ascontiguousarray(np.asarray(codes.cpu() if isinstance(codes, Tensor) else codes, dtype=np.float32))
    if codes.ndim != 2 or codes.shape[0] != len(data) or codes.shape[0] == 0:
        raise ConfigError(f"{codes.shape[0] if codes.ndim else 0} codes for {len(data)} images: not this test split's")
    why = through_code(model, data)
    if why and why != NOT_THROUGH_CODE:
        raise ConfigError(why)
    units = int(getattr(model.config, "latent_dim", codes.shape[1]))
    if units != codes.shape[1]:
        raise ConfigError(f"the model's code has {units} units, the codes given {codes.shape[1]}")
    shape = tuple(int(s) for s in model.config.input_shape)
    atoms, kind = decoder_atoms(model, codes)
    sse, limit = None, ABLATION_LIMIT
    if why:
        why += ", so zeroing a unit says little about the reconstruction"
    else:
        start = time.perf_counter()
        sse = np.concatenate([_sse(model, codes[s:s + BATCH], data.as_float(slice(s, s + BATCH)))
                              for s in range(0, len(data), BATCH)])
        per_image = (time.perf_counter() - start) / len(data)
        affordable = int(ABLATION_SECONDS / max(per_image, 1e-9)) // ABLATION_STEP * ABLATION_STEP
        limit = max(ABLATION_STEP, min(ABLATION_LIMIT, affordable))
    return UnitBasis(codes=codes, threshold=default_threshold(model), sse=sse, atoms=atoms, atom_kind=kind,
                     filters=inside.code_unit_filters(model), input_shape=shape, no_ablation=why,
                     ablation_limit=limit)


def _sse(model: nn.Module, codes: np.ndarray, x: Tensor) -> np.ndarray:
    """(B,) summed squared error of decode(codes) against the images x."""
    recon = model.decode(torch.from_numpy(codes).to(model.device)).float().cpu()
    return (recon.reshape(len(x), -1) - x.reshape(len(x), -1)).pow(2).sum(1).numpy()


@torch.no_grad()
def decoder_atoms(model: nn.Module, codes: np.ndarray) -> tuple[np.ndarray, str]:
    """(K, D) one atom per code unit, and how it was read (module docstring)."""
    k = codes.shape[1]
    found = inside.filters(model)
    if isinstance(found, dict):
        tied = found.get(inside.TIED)
        if tied is not None and tied.shape[0] == k:
            return tied.reshape(k, -1).numpy().astype(np.float32), ATOM_TIED
        written = found.get(inside.DECODER)
        decoder = getattr(model, "decoder", None)
        one_layer = isinstance(decoder, nn.Module) and sum(isinstance(m, nn.Linear) for m in decoder.modules()) == 1
        if written is not None and written.shape[0] == k and one_layer:
            return written.reshape(k, -1).numpy().astype(np.float32), ATOM_LINEAR
    mean = torch.from_numpy(codes.mean(0))
    step = torch.from_numpy(codes.std(0))
    step = torch.where(step > 0, step, step.max().clamp_min(1e-3))    # a unit constant on the test split
    z = mean.repeat(k + 1, 1)
    z[1:] += torch.diag(step)
    out = model.decode(z.to(model.device)).float().cpu().reshape(k + 1, -1)
    return (out[1:] - out[:1]).numpy(), ATOM_EFFECT


def _check_unit(basis: UnitBasis, unit: int) -> int:
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < basis.n_units:
        raise ConfigError(f"unit {unit!r} is out of range: the code has {basis.n_units} units (0-{basis.n_units - 1})")
    return int(unit)


@torch.no_grad()
def ablate(model: nn.Module, basis: UnitBasis, data: ImageData, unit: int, *, limit: int | None = None,
           seed: int = 0) -> Ablation | None:
    """The change of the test MSE per pixel when `unit` is set to 0 in every image's code. Only the
    images where it is not 0 change; up to `limit` of them (default: the basis's) are decoded (all: exact), beyond that a
    seeded sample estimates the change (with its standard error). None when there is no reference
    reconstruction (`UnitBasis.no_ablation`)."""
    unit = _check_unit(basis, unit)
    if basis.sse is None:
        return None
    ids = np.flatnonzero(basis.codes[:, unit] != 0)
    limit = basis.ablation_limit if limit is None else max(1, int(limit))
    if len(ids) == 0:
        return Ablation(delta=0.0, stderr=0.0, changed=0, used=0)
    used = ids if len(ids) <= limit else np.sort(np.random.default_rng(seed).choice(ids, int(limit), replace=False))
    diff = []
    for s in range(0, len(used), BATCH):
        rows = used[s:s + BATCH]
        z = basis.codes[rows].copy()
        z[:, unit] = 0.0
        diff.append(_sse(model, z, data.as_float(torch.from_numpy(rows))) - basis.sse[rows])
    diff = np.concatenate(diff).astype(np.float64)
    scale = len(ids) / (basis.n_images * basis.atoms.shape[1])          # mean over changed -> MSE per pixel
    stderr = 0.0
    if len(used) < len(ids):
        stderr = float(diff.std(ddof=1) / math.sqrt(len(used)) * math.sqrt(1 - len(used) / len(ids)) * scale)
    return Ablation(delta=float(diff.mean() * scale), stderr=stderr, changed=len(ids), used=len(used))


def similar_atoms(atoms: np.ndarray, unit: int, n: int = N_SIMILAR) -> tuple[np.ndarray, np.ndarray]:
    """The n other units whose decoder atoms have the highest cosine with `unit`'s: (ids, cosines),
    highest first (ties by unit id). An all-zero atom has cosine 0 with every other."""
    norms = np.linalg.norm(atoms, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    cos = (atoms @ atoms[unit]) / (safe * safe[unit])
    cos[norms == 0] = 0.0
    if norms[unit] == 0:
        cos[:] = 0.0
    cos = np.clip(cos, -1.0, 1.0)
    others = np.delete(np.arange(len(atoms)), unit)
    order = others[np.argsort(-cos[others], kind="stable")][: max(0, n)]
    return order, cos[order]


def unit_view(model: nn.Module, basis: UnitBasis, data: ImageData, unit: int, *, n_top: int = N_TOP,
              n_similar: int = N_SIMILAR, limit: int | None = None) -> UnitView:
    """Everything the dashboard shows for one unit."""
    unit = _check_unit(basis, unit)
    h = basis.codes[:, unit]
    on = np.abs(h) > basis.threshold
    top = top_activating(basis.codes, unit, n_top)
    similar, cos = similar_atoms(basis.atoms, unit, n_similar)
    return UnitView(unit=unit, top=top, top_values=h[top], active_values=h[on], firing_rate=float(on.mean()),
                    mean_activation=float(h.mean()), ablation=ablate(model, basis, data, unit, limit=limit),
                    similar=similar, similar_cos=cos)


def atom_images(basis: UnitBasis, units) -> Tensor:
    """(n, C, H, W) the atoms of `units` laid out as images (for `inside.filter_grid`)."""
    rows = torch.from_numpy(basis.atoms[np.asarray(units, dtype=np.int64)])
    return inside.rows_as_images(rows, basis.input_shape)


# --- figure ---------------------------------------------------------------------------------------------
def activation_figure(view: UnitView, threshold: float, bins: int = 40):
    """Histogram of the unit's activations where it is on (the zeros, most of a sparse unit's values,
    would flatten the rest)."""
    import plotly.graph_objects as go

    values = view.active_values
    fig = go.Figure()
    if len(values):
        counts, edges = np.histogram(values, bins=bins)
        fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_line_width=0)
    on = "h ≠ 0" if threshold == 0 else f"|h| > {threshold:g}"
    fig.update_layout(title=f"Unit {view.unit}: its activation on the {len(values):,} test images where it is on ({on})"
                      if len(values) else f"Unit {view.unit} is never on ({on} on no test image)",
                      xaxis_title="activation", yaxis_title="test images", height=300,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig
