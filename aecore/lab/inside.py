"""Inside a model: what its first layer looks for and what its last layer paints, as images.

`filters(model)` is the one entry point the Filters page calls for any model: a dict of named
(N, C, H, W) tensors (raw weights, one image per unit or kernel), or a string saying why the view
does not apply. A unit's incoming weights are reshaped to the input image, so a fully connected
first layer shows what each unit responds to; a decoder's last layer shows the template each code
unit adds to the output. Conv models show their kernels. `normalise` scales each filter on its own
for display (grey = 0), because units differ in overall scale far more than in shape.

`stage_playback` replays a stacked-ae's greedy layer-wise training: per stage, the first-layer
filters at its end (the model's `stage_filters` buffer) and that stage's loss curve from
metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    import numpy as np

FilterSet = dict[str, Tensor]

ENCODER = "encoder filters (first layer)"
DECODER = "decoder templates (last layer)"
TIED = "filters = decoder templates (tied weights)"
ENCODER_KERNELS = "encoder kernels (first conv)"
DECODER_KERNELS = "decoder kernels (last transposed conv)"


def rows_as_images(rows: Tensor, input_shape: tuple[int, ...]) -> Tensor:
    """(N, D) weight rows -> (N, C, H, W): each row laid out like one input (flat inputs: (N, 1, 1, D))."""
    rows = rows.detach().float().cpu()
    if len(input_shape) == 3:
        return rows.reshape(rows.shape[0], *input_shape)
    return rows.reshape(rows.shape[0], 1, 1, -1)


def normalise(f: Tensor) -> Tensor:
    """(N, C, H, W) -> same, each filter scaled on its own to [0, 1] with 0 at mid-grey:
    0.5 + 0.5 * w / max|w|, so black = its most negative weight or white = its most positive."""
    peak = f.detach().flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (f.dim() - 1)))
    return (0.5 + 0.5 * f.detach() / peak).clamp(0, 1)


def _first(module: nn.Module, kind: type | tuple[type, ...], **match: int) -> nn.Module | None:
    for m in module.modules():
        if isinstance(m, kind) and all(getattr(m, k) == v for k, v in match.items()):
            return m
    return None


def _last(module: nn.Module, kind: type | tuple[type, ...], **match: int) -> nn.Module | None:
    found = None
    for m in module.modules():
        if isinstance(m, kind) and all(getattr(m, k) == v for k, v in match.items()):
            found = m
    return found


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    return tuple(int(s) for s in model.config.input_shape)


@torch.no_grad()
def _mlp_primary(weights: dict[str, Tensor], shape: tuple[int, ...]) -> FilterSet:
    """hyper-ae and its vanilla twin: "encoder.0.weight" (h, D) rows, last decoder weight (D, h) columns."""
    last = max(int(name.split(".")[1]) for name in weights if name.startswith("decoder.") and name.endswith(".weight"))
    return {ENCODER: rows_as_images(weights["encoder.0.weight"], shape),
            DECODER: rows_as_images(weights[f"decoder.{last}.weight"].t(), shape)}


@torch.no_grad()
def _conv_generated(weights: dict[str, Tensor]) -> FilterSet:
    """hyper-semi: generated conv kernels (C_out, C, 3, 3) and last deconv kernels (C_in, C, 3, 3)."""
    last = max(int(name.split(".")[2]) for name in weights if name.startswith("decoder.deconv.") and name.endswith(".weight"))
    return {ENCODER_KERNELS: weights["encoder.conv.0.weight"].detach().float().cpu(),
            DECODER_KERNELS: weights[f"decoder.deconv.{last}.weight"].detach().float().cpu()}


@torch.no_grad()
def filters(model: nn.Module) -> FilterSet | str:
    """Named (N, C, H, W) weight images of a model's input and output layers, or why there are none.

    By what the model has: a tied weight (`tied_weight`: stacked-ae, rank-ordered-ae), shown once;
    primary MLP weights (`primary_weights`: hyper-ae and its twin), generated or ordinary; generated
    conv weights (`generated_weights`: hyper-semi). Otherwise MLP models (ae, sparse-ae, vae, ...):
    rows of the first Linear reading the input, columns of the last Linear writing it; conv models
    (conv-ae, conv-vae): first conv's kernels, and the last transposed conv's where the output comes
    straight from it; a U-Net (no `encoder`): the first convolution over the input's channels.
    """
    name = getattr(model, "registry_name", "")
    shape = _input_shape(model)
    numel = int(torch.Size(shape).numel())
    tied = model.tied_weight() if callable(getattr(model, "tied_weight", None)) else None
    if tied is not None:
        return {TIED: rows_as_images(tied, shape)}                                   # (units, D)
    if callable(getattr(model, "primary_weights", None)):
        return _mlp_primary(model.primary_weights(), shape)
    if callable(getattr(model, "generated_weights", None)):
        return _conv_generated(model.generated_weights())
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    out: FilterSet = {}
    if isinstance(encoder, nn.Module):
        first = _first(encoder, (nn.Linear, nn.Conv2d))            # the layer the input meets first
        if isinstance(first, nn.Linear) and first.in_features == numel:
            out[ENCODER] = rows_as_images(first.weight, shape)                        # (h0, D)
        elif isinstance(first, nn.Conv2d) and len(shape) == 3 and first.in_channels == shape[0]:
            out[ENCODER_KERNELS] = first.weight.detach().float().cpu()               # (C_out, C, k, k)
    if isinstance(decoder, nn.Module):
        last = _last(decoder, (nn.Linear, nn.ConvTranspose2d))     # the layer that writes the output
        if isinstance(last, nn.Linear) and last.out_features == numel:
            out[DECODER] = rows_as_images(last.weight.t(), shape)                     # (D, h) -> (h, D)
        elif isinstance(last, nn.ConvTranspose2d) and len(shape) == 3 and last.out_channels == shape[0]:
            out[DECODER_KERNELS] = last.weight.detach().float().cpu()                # (C_in, C, k, k)
    if out:
        return out
    first = _first(model, nn.Linear, in_features=numel)
    if first is not None:
        return {ENCODER: rows_as_images(first.weight, shape)}
    first = _first(model, nn.Conv2d, in_channels=shape[0]) if len(shape) == 3 else None   # in module order
    if first is not None:
        return {ENCODER_KERNELS: first.weight.detach().float().cpu()}
    return (f"{name or type(model).__name__} has no layer that reads the input directly "
            "(no Linear with the input's size, no convolution over its channels), so there are no filters to show")


def most_active_first(codes: "np.ndarray") -> "np.ndarray":
    """Unit indices by mean activation over the codes (N, K), largest first, ties in unit order: how
    Bertens (2016) lays out a rank-ordered AE's filters, the common ones first."""
    import numpy as np

    return np.argsort(-np.asarray(codes, dtype=np.float64).mean(0), kind="stable")


def code_unit_filters(model: nn.Module) -> Tensor | None:
    """(K, C, H, W): each code unit's own input filter, when the code is one layer away from the input
    (one-layer sparse/contractive/plain AEs, linear-ae, rank-ordered-ae); None for deeper encoders."""
    found = filters(model)
    if isinstance(found, str):
        return None
    k = getattr(model.config, "latent_dim", None)
    for key in (TIED, ENCODER):
        f = found.get(key)
        if f is None or f.shape[0] != k:
            continue
        encoder = getattr(model, "encoder", None)
        if isinstance(encoder, nn.Module) and sum(isinstance(m, nn.Linear) for m in encoder.modules()) != 1:
            continue   # first layer has latent_dim units by coincidence, but more layers follow
        return f
    return None


# --- stacked-ae: greedy stages played back -------------------------------------------------------
@dataclass
class Stage:
    name: str                      # "layer1", ..., "finetune"
    filters: Tensor                # (h0, C, H, W) first-layer filters at the end of the stage
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    change: float | None = None    # ||W_s - W_prev|| / ||W_prev||, None for the first stage

    @property
    def what(self) -> str:
        if self.name == "finetune":
            return "all layers train end to end on the image reconstruction"
        k = int(self.name.removeprefix("layer"))
        if k == 1:
            return "layer 1 alone learns to reconstruct the image (tied decoder W₁ᵀ)"
        return (f"layer {k} alone learns to reconstruct layer {k - 1}'s code; the layers below are frozen, "
                "so the first-layer filters cannot change")


def stage_playback(model: nn.Module, metrics: dict[str, Any] | None = None) -> list[Stage]:
    """One Stage per finished greedy stage of a stacked-ae, with its loss rows from metrics.json."""
    history = ((metrics or {}).get("training") or {}).get("history") or []
    shape = _input_shape(model)
    stages: list[Stage] = []
    previous: Tensor | None = None
    for name, w in model.filter_history():
        w = w.detach().float().cpu()
        rows = [r for r in history if isinstance(r, dict) and r.get("stage") == name]
        change = None
        if previous is not None:
            change = float((w - previous).norm() / previous.norm().clamp_min(1e-12))
        stages.append(Stage(
            name=name, filters=rows_as_images(w, shape),
            epochs=[int(r.get("epoch", i + 1)) for i, r in enumerate(rows)],
            train_loss=[float((r.get("train") or {}).get("loss", float("nan"))) for r in rows],
            val_loss=[(r.get("val") or {}).get("loss") if r.get("val") else None for r in rows],
            change=change))
        previous = w
    return stages


def stage_loss_figure(stage: Stage):
    """Plotly line chart of one stage's loss per epoch (train, and validation when recorded)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(x=stage.epochs, y=stage.train_loss, mode="lines+markers", name="train")
    if any(v is not None for v in stage.val_loss):
        fig.add_scatter(x=stage.epochs, y=stage.val_loss, mode="lines+markers", name="validation")
    what = "image reconstruction loss" if stage.name in ("layer1", "finetune") else "loss reconstructing the code below"
    fig.update_layout(title=f"{stage.name}: {what}", xaxis_title="epoch in this stage", yaxis_title="loss",
                      height=300, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def filter_grid(f: Tensor, *, count: int | None = None, per_filter: bool = True, nrow: int | None = None,
                scale: int | None = None) -> "np.ndarray":
    """The first `count` filters (N, C, H, W) as one (H, W, 3) uint8 grid (torchvision make_grid),
    each scaled on its own (`per_filter`) or all on one shared scale; grey = 0 either way.
    Each weight is drawn as a `scale` x `scale` block (a page passes its tile size, larger on a
    projector); by default tiles of about 56 px, so a 3x3 kernel is visible."""
    import math

    from aecore.viz import image_grid

    f = f[: count or f.shape[0]].detach().float().cpu()
    if f.shape[1] not in (1, 3):                      # other channel counts: one grey tile per channel
        f = f.reshape(-1, 1, *f.shape[2:])
    shown = normalise(f) if per_filter else (0.5 + 0.5 * f / f.abs().max().clamp_min(1e-12)).clamp(0, 1)
    side = max(f.shape[2], f.shape[3])
    if scale is None:
        scale = max(1, 56 // side)                    # tiles of about 56 px: 28 px filters x2, 3x3 kernels x18
    scale = max(1, int(scale))
    n = f.shape[0]
    return image_grid(shown, nrow=nrow or (n if n <= 8 else min(16, math.ceil(math.sqrt(2 * n)))), padding=1, scale=scale,
                      pad_value=1.0)
