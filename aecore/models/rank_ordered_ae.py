"""Rank ordered autoencoder: Bertens (2016), "Rank Ordered Autoencoders", arXiv:1605.01749.

One tied weight matrix W (D x n_units), no biases:

    a   = x W / D                     pre-activation, (B, n_units); dividing by n_in = D keeps a O(1)
    h   = TReLU(a) = clip(a, 0, 1)    the code z
    r   = units sorted by h, descending, per example (r_1 = most active)
    R_k = TReLU(sum_{i<=k} W[:, r_i] h_{r_i})     partial ("anytime") reconstruction, k = 1..n_units
    loss = mean over k of ||R_k - target||^2, summed over components, averaged over the batch

Scoring every partial reconstruction makes the most active units do most of the work, so the
model learns to reconstruct with as few active units as it can: sparsity without a sparsity
hyperparameter. R_{n_units} (all units) is the ordinary reconstruction `recon`.

How we read the paper where it leaves room:
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

Memory and time: R_k for all k is a (B, n_units, D) tensor: gather each example's ranked
columns of W, scale by h, cumulative-sum over the rank axis (O(B n D), as in the paper). We do
this in chunks of ranks, carrying the running sum; when the whole tensor would exceed
`CHUNK_ELEMENTS` floats and gradients are needed, each chunk runs under
`torch.utils.checkpoint`, so the backward pass recomputes it instead of storing it (MNIST,
D=784, 256 units, B=128 is 25.7M floats per copy, and autograd would keep several copies).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class RankOrderedAEConfig(ModelConfig):
    """`latent_dim` is the number of hidden units (169 in the paper's 7x7x3 CIFAR-10 patches)."""

    latent_dim: int = 169
    init_scale: float = 1.0   # W ~ U(-init_scale, init_scale)

    def validate(self) -> None:
        super().validate()
        check_range("init_scale", self.init_scale, 0.0, 100.0, lo_open=True)


@register_model("rank-ordered-ae",
                description="Rank ordered autoencoder (Bertens 2016): tied TReLU units, every partial "
                            "reconstruction from the top-k units is scored")
class RankOrderedAE(AutoEncoder):
    """Single tied layer whose units are ranked by activation; learns an anytime, sparse code."""

    config_class = RankOrderedAEConfig
    roles = frozenset({RANKED_CODE})

    def code_activation(self) -> str:
        return "trelu"

    def tied_weight(self) -> Tensor:
        return self.weight.t()                                                # (n, D)

    def __init__(self, *, config: RankOrderedAEConfig):
        super().__init__(config=config)
        d, n = config.input_numel, config.latent_dim
        self.weight = nn.Parameter(torch.empty(d, n).uniform_(-config.init_scale, config.init_scale))

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
        h = self.encode(x)
        return {"population_sparsity": (h == 0).to(x.dtype).mean(dim=1)}

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> RankOrderedAEConfig:
        return cls.config_class(input_shape=tuple(input_shape), latent_dim=8)
