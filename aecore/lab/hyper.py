"""Hypernetwork views for hyper-ae and hyper-semi: embedding, generated weights, parameter counts, explorer.

Both models hold a `ChunkedHyperNetwork`: an embedding E (C, e), one code per chunk of K numbers,
and one shared linear generator e -> K. All primary weights are cut out of the generated (C, K)
matrix (see aecore/models/hyper_ae.py). Regenerating every weight from another embedding is one
(C, e) @ (e, K) product, so the explorer can do it on every slider move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from aecore.errors import ConfigError
from aecore.evaluate import per_image_mse
from aecore.lab.inside import rows_as_images
from aecore.models import HYPERNETWORK, models_with
from aecore.models.hyper_ae import ChunkedHyperNetwork

MODES = ("interpolate", "direction")
RANDOM_SEED_OFFSET = 7919


def is_hyper(model: nn.Module) -> bool:
    return isinstance(getattr(model, "hyper", None), ChunkedHyperNetwork)


def _check(model: nn.Module) -> ChunkedHyperNetwork:
    if not is_hyper(model):
        raise ConfigError(f"{getattr(model, 'registry_name', type(model).__name__)} has no hypernetwork; "
                          f"pick a {' or '.join(models_with(HYPERNETWORK))} model")
    return model.hyper


# --- structure -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One generated primary tensor and the chunks (rows of E) that produce it."""

    name: str
    shape: tuple[int, ...]
    first_chunk: int
    n_chunks: int


def blocks(model: nn.Module) -> list[Block]:
    """The generated tensors in flat-vector order, with their chunk ranges in the embedding."""
    hyper = _check(model)
    return [Block(name, tuple(shape), start // hyper.chunk_size, math.ceil(math.prod(shape) / hyper.chunk_size))
            for (name, shape, _), start in zip(hyper.specs, hyper.offsets)]


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable numbers of the hypernetwork (embedding + generator), the primary numbers it
    generates, and any ordinary trainable parameters outside it (hyper-semi: batch norm, classifier)."""
    hyper = _check(model)
    hyper_count = hyper.parameter_count()
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"embedding": hyper.embedding.numel(),
            "generator": hyper.generator.weight.numel() + hyper.generator.bias.numel(),
            "hypernetwork": hyper_count,
            "primary": int(model.primary_parameter_count()),
            "other": total - hyper_count}


def counts_figure(counts: dict[str, int], twin: int | None = None):
    """Bar chart: numbers trained vs numbers generated (and the vanilla twin's trained numbers)."""
    import plotly.graph_objects as go

    names = ["embedding", "generator", "primary (generated)"]
    values = [counts["embedding"], counts["generator"], counts["primary"]]
    colours = ["#636efa", "#636efa", "#ef553b"]
    if counts["other"]:
        names.insert(2, "other trainable")
        values.insert(2, counts["other"])
        colours.insert(2, "#00cc96")
    if twin is not None:
        names.append("vanilla twin (trained)")
        values.append(twin)
        colours.append("#ab63fa")
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colours, text=[f"{v:,}" for v in values],
                           textposition="outside"))
    fig.update_layout(yaxis_title="numbers", height=320, margin=dict(l=10, r=10, t=30, b=10),
                      title="Trained (blue) vs generated (red)")
    return fig


def embedding_figure(model: nn.Module, chunk: int, embedding: Tensor | None = None):
    """Bar chart of one chunk's embedding vector E[chunk] (e,)."""
    import plotly.graph_objects as go

    hyper = _check(model)
    e = (hyper.embedding if embedding is None else embedding).detach().float().cpu()
    if not 0 <= chunk < e.shape[0]:
        raise ConfigError(f"chunk {chunk} is out of range: the embedding has {e.shape[0]} chunks")
    block = next(b for b in blocks(model) if b.first_chunk <= chunk < b.first_chunk + b.n_chunks)
    fig = go.Figure(go.Bar(x=list(range(e.shape[1])), y=e[chunk].numpy()))
    fig.update_layout(title=f"E[{chunk}]: chunk {chunk - block.first_chunk} of {block.name}",
                      xaxis_title="embedding coordinate", yaxis_title="value", height=300,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def embedding_heatmap(model: nn.Module):
    """Heat map of the whole embedding E (C, e); hover names the tensor each row generates."""
    import plotly.graph_objects as go

    hyper = _check(model)
    e = hyper.embedding.detach().float().cpu().numpy()
    owner = np.empty(e.shape[0], dtype=object)
    for b in blocks(model):
        owner[b.first_chunk:b.first_chunk + b.n_chunks] = b.name
    custom = np.repeat(owner[:, None], e.shape[1], axis=1)
    fig = go.Figure(go.Heatmap(z=e, colorscale="RdBu", zmid=0, customdata=custom,
                               hovertemplate="chunk %{y} (%{customdata})<br>coordinate %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"Embedding E: {e.shape[0]} chunks × {e.shape[1]} coordinates",
                      xaxis_title="coordinate", yaxis_title="chunk", yaxis_autorange="reversed",
                      height=min(600, 200 + 2 * e.shape[0]), margin=dict(l=10, r=10, t=40, b=10))
    return fig


# --- generated weights as pictures -------------------------------------------------------------
@dataclass
class LayerView:
    name: str
    shape: tuple[int, ...]
    kind: str                 # "filters": images (N, C, H, W); "heatmap": a 2-D matrix
    data: Tensor


def layer_views(model: nn.Module, weights: dict[str, Tensor] | None = None) -> list[LayerView]:
    """Every generated weight tensor (biases left out): tensors with one side equal to the input size
    become images (rows, or columns for the last decoder layer), conv kernels stay images, the
    rest (hidden-to-hidden, fully connected) are heat maps."""
    _check(model)
    weights = model.generated_weights() if weights is None else weights
    shape = tuple(int(s) for s in model.config.input_shape)
    numel = math.prod(shape)
    out = []
    for name, w in weights.items():
        if not name.endswith(".weight"):
            continue
        w = w.detach().float().cpu()
        if w.dim() == 4:
            kind, data = ("filters", w) if w.shape[1] == shape[0] else ("heatmap", w.flatten(1))
        elif w.shape[1] == numel:
            kind, data = "filters", rows_as_images(w, shape)             # (out, D): one filter per row
        elif w.shape[0] == numel:
            kind, data = "filters", rows_as_images(w.t(), shape)         # (D, in): one template per column
        else:
            kind, data = "heatmap", w
        out.append(LayerView(name, tuple(w.shape), kind, data))
    return out


def heatmap_figure(view: LayerView, max_side: int = 512):
    """Plotly heat map of a 2-D weight matrix (subsampled to at most max_side per axis)."""
    import plotly.graph_objects as go

    m = view.data
    step_r, step_c = max(1, math.ceil(m.shape[0] / max_side)), max(1, math.ceil(m.shape[1] / max_side))
    m = m[::step_r, ::step_c]
    note = "" if step_r == step_c == 1 else f" (every {step_r}th row, {step_c}th column)"
    fig = go.Figure(go.Heatmap(z=m.numpy(), colorscale="RdBu", zmid=0))
    fig.update_layout(title=f"{view.name} {list(view.shape)}{note}", xaxis_title="input", yaxis_title="output",
                      yaxis_autorange="reversed", height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig


# --- the embedding explorer ----------------------------------------------------------------------
def random_embedding(model: nn.Module, seed: int) -> Tensor:
    """A seeded Gaussian embedding with the trained one's shape and Frobenius norm.

    The seed is offset: models are initialised with torch.manual_seed(seed) and the embedding is
    their first random draw, so seed 0 unshifted would give back the init direction, not a random one."""
    e = _check(model).embedding.detach()
    r = torch.randn(e.shape, generator=torch.Generator().manual_seed(RANDOM_SEED_OFFSET + int(seed))).to(e)
    return r * (e.norm() / r.norm().clamp_min(1e-12))


def mix(trained: Tensor, other: Tensor, t: float, mode: str) -> Tensor:
    """'interpolate': (1 - t) E + t R, t in [0, 1]; 'direction': E + t R (R already scaled), t in [-2, 2]."""
    if trained.shape != other.shape:
        raise ConfigError(f"embeddings do not fit: {list(trained.shape)} vs {list(other.shape)}")
    if mode == "interpolate":
        return torch.lerp(trained, other.to(trained), float(t))
    if mode == "direction":
        return trained + float(t) * other.to(trained)
    raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")


def other_embedding(model: nn.Module, other: nn.Module) -> Tensor:
    """Another hyper model's trained embedding, if it fits this model's generator."""
    mine, theirs = _check(model).embedding, getattr(getattr(other, "hyper", None), "embedding", None)
    if theirs is None:
        raise ConfigError(f"{getattr(other, 'registry_name', 'that model')} has no hypernetwork embedding")
    if theirs.shape != mine.shape:
        raise ConfigError(f"its embedding is {list(theirs.shape)}, this model's generator takes {list(mine.shape)}")
    return theirs.detach().to(mine)


@torch.no_grad()
def reconstruct_with(model: nn.Module, embedding: Tensor, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Regenerate every primary weight from `embedding` and reconstruct x: (recon like x, weights)."""
    hyper = _check(model)
    embedding = embedding.to(hyper.embedding)
    x = x.to(hyper.embedding.device)
    weights = model.generated_weights(embedding)
    if callable(getattr(model, "with_embedding", None)):     # hyper-ae: a stand-alone primary MLP
        recon = model.with_embedding(embedding)(x)
    else:   # hyper-semi: its own conv encoder/decoder run on the given weights, batch norm in eval mode
        with model._eval_mode():
            recon = torch.sigmoid(model._decode_logits(weights, model._encode(weights, x)))
    return recon.view_as(x), weights


@dataclass
class Explored:
    embedding: Tensor        # (C, e) the mixed embedding
    recon: Tensor            # (B, *input_shape)
    mse: Tensor              # (B,) per-pixel MSE against x
    weights: dict[str, Tensor]
    distance: float          # ||e - E|| / ||E||


def explore(model: nn.Module, x: Tensor, *, t: float, mode: str = "interpolate", other: Tensor | None = None,
            seed: int = 0) -> Explored:
    """Mix the trained embedding with `other` (default: a seeded random one of the same norm) at t,
    regenerate the weights and reconstruct x. t = 0 gives the model's own weights."""
    trained = _check(model).embedding.detach()
    other = random_embedding(model, seed) if other is None else other
    e = mix(trained, other, t, mode)
    recon, weights = reconstruct_with(model, e, x)
    mse = per_image_mse(recon.float().cpu(), x.float().cpu())
    distance = float((e - trained).norm() / trained.norm().clamp_min(1e-12))
    return Explored(e, recon.cpu(), mse, weights, distance)
