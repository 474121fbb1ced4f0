"""Rank ordered autoencoder: Bertens (2016), "Rank Ordered Autoencoders", arXiv:1605.01749.

One tied weight matrix W (D x n_units), no biases:

    a   = x W / D                     pre-activation, (B, n_units); dividing by n_in = D keeps a O(1)
    h   = TReLU(a) = clip(a, 0, 1)    the code z
    r   = units sorted by activation, descending, per example (r_1 = most active)
    R_k = clip(sum_{i<=k} W[:, r_i] h_{r_i}, 0, 1)  partial ("anytime") reconstruction, k = 1..n_units
    loss = mean over k of ||R_k - target||^2, summed over components, averaged over the batch

The most active units must reconstruct the input on their own, so the model learns to reconstruct
with as few active units as it can: sparsity without a sparsity hyperparameter. R_{n_units} (all
units) is the ordinary reconstruction `recon`. Two training rules (`rule` in the config):

"reference" (the default): the author's update rule, as his public code applies it
(github.com/paulbertens/rank-ordered-autoencoder, RankOrderedAutoencoder.py). It is not the gradient
of any loss, so the model updates its own weights (`update_step`) and the trainer's optimiser is not
used. One example at a time, with u = unit j's rank and E_j = target - R_u (the error of j's own
partial reconstruction; the output clip is applied but not differentiated):
    e_j  = E_j . W_j / D                      the unit's error, kept only where sign(e_j) != sign(a_j)
                                              (it moves a_j toward 0) and clipped to at most |a_j| in
                                              size: the encoder path only ever shrinks |a_j|
    G_j  = E_j h_j + x e_j                    column j's update (x the input)
    W_j += lr * G_j * min(1, norm_limit / ||G_j||)      lr 1, norm_limit 0.1 in the reference
with W ~ N(0, 2 / (D + n_units)) at the start. The rank is by a (the reference sorts a, so units
saturated at h = 1 are ordered by a; the views sort h, ties by unit index). Units with a_j <= 0
share one E = target - R_all, so their updates are one rank-1 update: an example costs two
matrix-vector products, a rank-1 update and the cumulative sums of its m active units (trained
models keep about half their units barely on, 0 < h < 0.05: m was 89 of 169 on CIFAR-10 patches).
Left out: the reference trainer's learning-rate decay (x 0.9 after an epoch that lowers the error by
less than 1 %); its inputs are pixel / 256, aecore's pixel / 255.

"gradient": Adam on the loss above, the reading of the paper aecore shipped first (config.json
files written before `rule` existed mean it). Where the paper leaves room:
- TReLU's derivative. The paper pushes saturated units with high error back into the linear
  range. We implement it as a gate on the incoming gradient g = dL/dh (descent convention: the
  update is -lr * g): inside [0, 1] g passes unchanged (derivative 1); for a < 0 g passes only
  if the step would INCREASE a (g < 0); for a > 1 only if it would DECREASE a (g > 0); any
  other saturated case gets zero. There is no separate "high error" threshold: any error that
  points back into range counts.
- The clip of R_k uses the same TReLU, not a plain clamp: one truncated-linear unit type for
  hidden and output layer, as in the paper's single-layer set-up. With a plain clamp an output
  stuck below 0 or above 1 would get no gradient at all; with TReLU it is pulled back whenever
  the target lies inside the range (always, for data in [0, 1]).
- Loss: the MEAN over k (not the sum), so its scale is that of one summed-squared-error
  reconstruction loss and does not grow with the number of units.
- Ties (many h are exactly 0) are ordered by unit index (stable sort). Tied units contribute
  nothing to the forward pass, but a unit with h = 0 still receives gradient from every R_k from
  its position on, so the tie order slightly changes which dead unit is revived first.
Both rules report the same loss (the reference rule measures it before each example's update).

Memory and time (gradient rule and the views): R_k for all k is a (B, n_units, D) tensor: gather
each example's ranked columns of W, scale by h, cumulative-sum over the rank axis (O(B n D), as in
the paper). We do this in chunks of ranks, carrying the running sum; when the whole tensor would
exceed `CHUNK_ELEMENTS` floats and gradients are needed, each chunk runs under
`torch.utils.checkpoint`, so the backward pass recomputes it instead of storing it (MNIST,
D=784, 256 units, B=128 is 25.7M floats per copy, and autograd would keep several copies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from aecore.config import ModelConfig, check_range
from aecore.errors import ConfigError
from aecore.models.base import RANKED_CODE, AutoEncoder, ModelOutput, flatten, unflatten
from aecore.models.registry import register_model

# Largest (B, k_chunk, D) block built at once (float elements, 16 MiB in fp32).
CHUNK_ELEMENTS = 1 << 22
# Anytime sizes k whose reconstruction error R_k evaluation reports (eval_metrics).
EVAL_TOP_K = (1, 5, 10, 25)


class TReLU(torch.autograd.Function):
    """clip(a, 0, 1) whose gradient pushes saturated units back into the linear range.

    backward: grad_in = grad_out where 0 <= a <= 1, or a < 0 and grad_out < 0 (descent raises a),
    or a > 1 and grad_out > 0 (descent lowers a); 0 elsewhere.
    """

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        ctx.save_for_backward(a)
        return a.clamp(0.0, 1.0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        inside = (a >= 0) & (a <= 1)
        push_up = (a < 0) & (grad_out < 0)
        push_down = (a > 1) & (grad_out > 0)
        return grad_out * (inside | push_up | push_down).to(grad_out.dtype)


def trelu(a: Tensor) -> Tensor:
    return TReLU.apply(a)


def rank_order(h: Tensor) -> Tensor:
    """(B, n) activations -> (B, n) unit ids sorted by activation, descending; ties keep unit order."""
    return torch.sort(h, dim=1, descending=True, stable=True).indices


def ranked_contributions(h: Tensor, weight: Tensor, order: Tensor) -> Tensor:
    """(B, K, D): row j is unit order[:, j]'s term W[:, r_j] h_{r_j} of the reconstruction."""
    h_sorted = h.gather(1, order)                                             # (B, K)
    return h_sorted[..., None] * weight.t()[order]                            # (B, K, D)


def _chunk_sse(h: Tensor, weight: Tensor, target: Tensor, order: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    """For ranks in `order` (B, K), following earlier ranks that sum to `offset` (B, D): the summed
    squared error of each R_k against the target (B, K), and the new running sum (B, D)."""
    partial = offset[:, None, :] + ranked_contributions(h, weight, order).cumsum(dim=1)   # (B, K, D)
    sse = (trelu(partial) - target[:, None, :]).pow(2).sum(-1)
    return sse, partial[:, -1]


def progressive_sse(h: Tensor, weight: Tensor, target: Tensor) -> Tensor:
    """(B, n_units) summed squared error of R_1 .. R_n against `target` (B, D), chunked over k."""
    batch, n_units = h.shape
    order = rank_order(h.detach())
    chunk = max(1, CHUNK_ELEMENTS // (batch * weight.shape[0]))
    recompute = (chunk < n_units and torch.is_grad_enabled()
                 and (h.requires_grad or weight.requires_grad))
    offset = h.new_zeros(batch, weight.shape[0])
    pieces = []
    for start in range(0, n_units, chunk):
        part = order[:, start:start + chunk]
        if recompute:
            sse, offset = checkpoint(_chunk_sse, h, weight, target, part, offset, use_reentrant=False)
        else:
            sse, offset = _chunk_sse(h, weight, target, part, offset)
        pieces.append(sse)
    return torch.cat(pieces, dim=1)


def reference_update(weight_t: np.ndarray, x: np.ndarray, target: np.ndarray, *, lr: float,
                     norm_limit: float) -> tuple[float, np.ndarray, np.ndarray]:
    """The reference rule for one example (module docstring), applied in place to `weight_t`, W
    transposed: (n, D) float32, C order, so that a unit's weights are one contiguous row.

    x, target: (D,) float32. Returns what the example met before the update: the mean over k of
    ||R_k - target||^2, R_all (D,) and h (n,). Units with a <= 0 have h = 0, so their partial
    reconstruction is R_all and their updates x e_j form one rank-1 update; only the m active
    units need their own cumulative sums. numpy, not torch: one example is a few dozen small
    operations, where numpy's per-call cost is about a third of torch's on the CPU (the same rule in
    torch took 640 us per CIFAR-10 patch, this 260 us, measured on the 2-core development machine).
    """
    n, d = weight_t.shape
    a = weight_t @ x
    a /= d                                                                    # (n,)
    h = np.clip(a, 0.0, 1.0)
    active = np.flatnonzero(a > 0)
    active = active[np.argsort(-a[active], kind="stable")]                    # (m,) in rank order
    h_act = h[active]
    w_act = weight_t[active]                                                  # (m, D) a copy
    err = w_act * h_act[:, None]
    np.cumsum(err, axis=0, out=err)
    np.clip(err, 0.0, 1.0, out=err)                                           # (m, D) R_1 .. R_m
    recon = err[-1].copy() if len(active) else np.zeros_like(target)         # (D,) R_all
    rest = target - recon                                                     # (D,) E_j of inactive units
    np.subtract(target, err, out=err)                                         # (m, D) E_j of active ones
    sse = (float(np.einsum("md,md->", err, err)) + (n - len(active)) * float(rest @ rest)) / n
    e = weight_t @ rest
    e[active] = np.einsum("md,md->m", err, w_act)
    e /= d                                                                    # (n,) unit errors
    e[np.sign(e) == np.sign(a)] = 0.0                                         # only toward a = 0 ...
    np.maximum(e, -a, out=e, where=a > 0)                                     # ... and not past it
    np.minimum(e, -a, out=e, where=a < 0)
    err *= h_act[:, None]
    err += np.outer(e[active], x)                                             # (m, D) G_j, active units
    norm = np.sqrt(np.einsum("md,md->m", err, err))
    scale = np.full_like(norm, lr)
    over = norm > norm_limit
    scale[over] *= norm_limit / norm[over]
    err *= scale[:, None]
    x_norm = float(np.sqrt(x @ x))                                            # ||G_j|| = ||x|| |e_j| when h_j = 0
    if x_norm > 0:
        np.clip(e, -norm_limit / x_norm, norm_limit / x_norm, out=e)
    e[active] = 0.0
    e *= lr
    weight_t += np.outer(e, x)
    weight_t[active] += err
    return sse, recon, h


@dataclass
class RankOrderedAEConfig(ModelConfig):
    """`latent_dim` is the number of hidden units (169 in the paper's 7x7x3 CIFAR-10 patches); `rule`
    how it trains (module docstring). A config.json without `rule` predates it and means "gradient"."""

    latent_dim: int = 169
    rule: Literal["reference", "gradient"] = "reference"
    init_scale: float | None = None   # W ~ U(-init_scale, init_scale); None: the rule's own start
                                      # (reference N(0, 2 / (D + n)), gradient U(-1, 1))
    step_size: float = 1.0            # reference rule: its learning rate (the trainer's lr is Adam's)
    norm_limit: float = 0.1           # reference rule: largest L2 norm of one unit's weight update

    saved_defaults: ClassVar[dict[str, str]] = {"rule": "gradient"}

    def validate(self) -> None:
        super().validate()
        if self.init_scale is not None:
            check_range("init_scale", self.init_scale, 0.0, 100.0, lo_open=True)
        check_range("step_size", self.step_size, 0.0, 100.0, lo_open=True)
        check_range("norm_limit", self.norm_limit, 0.0, 100.0, lo_open=True)


@register_model("rank-ordered-ae",
                description="Rank ordered autoencoder (Bertens 2016): tied TReLU units, every partial "
                            "reconstruction from the top-k units is scored")
class RankOrderedAE(AutoEncoder):
    """Single tied layer whose units are ranked by activation; learns an anytime, sparse code."""

    config_class = RankOrderedAEConfig
    roles = frozenset({RANKED_CODE})
    # the reference rule, one example at a time: 100 units and one epoch of MNIST train in 25 s, with readable
    # R_10 digits and 44 % of units firing (the usual 32 units x 5 epochs takes longer and shows less)
    train_page_defaults = {"latent_dim": 100, "epochs": 1}

    def code_activation(self) -> str:
        return "trelu"

    def tied_weight(self) -> Tensor:
        return self.weight.t()                                                # (n, D)

    def __init__(self, *, config: RankOrderedAEConfig):
        super().__init__(config=config)
        d, n = config.input_numel, config.latent_dim
        if config.init_scale is None and config.rule == "reference":
            start = torch.randn(d, n) * math.sqrt(2.0 / (d + n))               # the reference code's
        else:
            scale = 1.0 if config.init_scale is None else config.init_scale
            start = torch.empty(d, n).uniform_(-scale, scale)
        self.weight = nn.Parameter(start)                                       # (D, n)

    @property
    def n_units(self) -> int:
        return self.config.latent_dim

    def preactivation(self, x: Tensor) -> Tensor:
        return flatten(x) @ self.weight / self.weight.shape[0]                # (B, n)

    def encode(self, x: Tensor) -> Tensor:
        return trelu(self.preactivation(x))

    def decode(self, z: Tensor) -> Tensor:
        return unflatten(trelu(z @ self.weight.t()), self.config.input_shape)

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        h = self.encode(x)
        sse = progressive_sse(h, self.weight, flatten(target))                 # (B, n)
        loss = sse.mean(dim=1).mean()
        return ModelOutput(loss=loss, recon=self.decode(h), z=h, parts={"recon": loss},
                           extras={"progressive_sse": sse.detach()})

    def updates_itself(self) -> bool:
        return self.config.rule == "reference"

    @torch.no_grad()
    def update_step(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        """The reference rule over the batch, one example after another (each meets the weights the
        one before left): the rule updates per example, so a batch is only how many go between
        read-outs. Loss, recon and code are each example's before its own update."""
        if not self.updates_itself():
            raise ConfigError(f"rank-ordered-ae with rule {self.config.rule!r} trains by gradient, not update_step")
        target = x if target is None else target
        cfg, weight = self.config, self.weight
        xs = flatten(x).detach().float().cpu().numpy()                         # (B, D)
        ts = xs if target is x else flatten(target).detach().float().cpu().numpy()
        weight_t = weight.detach().t().float().cpu().numpy().copy()            # (n, D), C order
        rows = [reference_update(weight_t, xs[b], ts[b], lr=cfg.step_size, norm_limit=cfg.norm_limit)
                for b in range(xs.shape[0])]
        weight.copy_(torch.from_numpy(weight_t).t())
        sse, recon, h = (np.stack(column) for column in zip(*rows))          # (B,), (B, D), (B, n)
        loss = torch.tensor(float(sse.mean()), device=weight.device)
        recon_t = torch.from_numpy(recon).to(weight.device)
        return ModelOutput(loss=loss, recon=unflatten(recon_t, cfg.input_shape),
                           z=torch.from_numpy(h).to(weight.device), parts={"recon": loss})

    @torch.no_grad()
    def anytime_reconstruction(self, x: Tensor, k: int) -> Tensor:
        """R_k: the reconstruction from each example's k most active units, (B, *input_shape)."""
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= self.n_units:
            raise ConfigError(f"k = {k!r} must be an integer in [0, {self.n_units}]")
        h = self.encode(x)
        top = rank_order(h)[:, :k]                                            # (B, k)
        partial = ranked_contributions(h, self.weight, top).sum(dim=1)        # (B, D)
        return unflatten(trelu(partial), self.config.input_shape)

    @torch.no_grad()
    def progressive_errors(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """(B, n_units): summed squared error of R_k for k = 1..n_units (the paper's error curve)."""
        target = x if target is None else target
        return progressive_sse(self.encode(x), self.weight, flatten(target))

    @torch.no_grad()
    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Per image: the fractions of units that are 0 and that are below 0.05 (the reference rule
        leaves many units barely on), and the MSE per pixel of R_k for the anytime sizes k of
        `EVAL_TOP_K` smaller than n_units (R_{n_units} is the model's `mse`)."""
        h = self.encode(x)                                                    # (B, n)
        mse = self.progressive_errors(x) / flatten(x).shape[1]                # (B, n)
        metrics = {"population_sparsity": (h == 0).to(x.dtype).mean(dim=1),
                   "units_below_0.05": (h < 0.05).to(x.dtype).mean(dim=1)}
        metrics.update({f"mse_top{k}": mse[:, k - 1] for k in EVAL_TOP_K if k < self.n_units})
        return metrics

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> RankOrderedAEConfig:
        return cls.config_class(input_shape=tuple(input_shape), latent_dim=8)
