"""Sparse autoencoder: an MLP autoencoder whose code pays for being active.

Two penalties, selected by `penalty`:

- "l1"  (e.g. Goodfellow, Bengio & Courville, *Deep Learning* 2016, sec. 14.2.1): ReLU code h,
        penalty lambda * sum_j |h_j| per example, averaged over the batch (loss part "l1").
- "kl"  (Ng, "Sparse autoencoder", CS294A lecture notes, 2011): sigmoid code h, average activation
        q_j = mean over the batch of h_j, penalty beta * sum_j KL(p || q_j) with
        KL(p || q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q))  (loss part "kl_sparsity").

How we read Ng's notes: q_j is estimated on the current minibatch (the notes average over the whole
training set, which needs a full pass per step); it is clamped to [1e-6, 1 - 1e-6] so log 0 never
happens. The notes' weight decay term is left to the optimiser and their squared error is replaced
by this project's convention: reconstruction loss summed over components, averaged over the batch
("bce" = cross-entropy against a sigmoid output, the default; "mse" = summed squared error).

Network and reconstruction loss are MLPAutoEncoder's (`aecore.models.ae`); the code function
follows the penalty (ReLU for l1, sigmoid for kl) and the output is always a sigmoid.

The code may be overcomplete (latent_dim > input size): the penalty, not the bottleneck, keeps it
from copying the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from aecore.config import check_range
from aecore.models.ae import MLPAutoEncoder, MLPConfig
from aecore.models.base import SPARSE_CODE, RegularizerWeight
from aecore.models.registry import register_model

# The penalties live on different scales (sum of activations vs. sum of KLs), so each has its own
# default weight; `weight = None` picks it.
DEFAULT_WEIGHTS = {"l1": 0.1, "kl": 3.0}
# A sigmoid unit never reaches exactly 0; below this it counts as "off" in population_sparsity.
SIGMOID_OFF_THRESHOLD = 0.01
_Q_EPS = 1e-6


@dataclass
class SparseAEConfig(MLPConfig):
    """MLP encoder D -> hidden... -> latent_dim code; decoder mirrors it."""

    latent_dim: int = 256
    hidden: tuple[int, ...] = ()            # () = the classic one-layer sparse autoencoder
    penalty: Literal["l1", "kl"] = "l1"
    weight: float | None = None             # lambda (l1) or beta (kl); None = DEFAULT_WEIGHTS[penalty]
    target_rate: float = 0.05               # p, the target mean activation (kl only)
    loss: Literal["mse", "bce"] = "bce"

    output: ClassVar[str] = "sigmoid"       # fixed: reconstructions in (0, 1), as the BCE default needs

    @property
    def code_activation(self) -> str:
        """ReLU codes for L1 (exact zeros), sigmoid codes for KL (q_j must lie in (0, 1))."""
        return "relu" if self.penalty == "l1" else "sigmoid"

    def validate(self) -> None:
        super().validate()
        if self.weight is not None:
            check_range("weight", self.weight, 0.0, 1e6)
        check_range("target_rate", self.target_rate, 0.0, 1.0, lo_open=True, hi_open=True)

    @property
    def effective_weight(self) -> float:
        return DEFAULT_WEIGHTS[self.penalty] if self.weight is None else self.weight


def l1_penalty(h: Tensor) -> Tensor:
    """sum_j |h_j| per example, averaged over the batch (unweighted). h: (B, K)."""
    return h.abs().sum(1).mean()


def kl_sparsity_penalty(h: Tensor, p: float) -> Tensor:
    """sum_j KL(p || q_j), q_j = batch mean of h_j (unweighted). h: (B, K) in (0, 1)."""
    q = h.mean(0).clamp(_Q_EPS, 1 - _Q_EPS)  # (K,)
    return (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).sum()


@register_model("sparse-ae", description="MLP autoencoder with an L1 or KL activation-sparsity penalty (Ng 2011)")
class SparseAE(MLPAutoEncoder):
    """MLP autoencoder whose code is pushed towards sparsity by an L1 or KL penalty."""

    config_class: ClassVar = SparseAEConfig
    roles = frozenset({SPARSE_CODE})
    regularizer_weight = RegularizerWeight(
        field="weight", about="sparsity penalty weight: λ for L1, β for KL (0.1 / 3 by default)",
        kind_field="penalty", kinds=tuple(DEFAULT_WEIGHTS.items()), kind_label="Sparsity penalty",
        kind_help="L1 on ReLU codes, or KL(p ‖ mean activation) on sigmoid codes")

    def target_rate(self) -> float | None:
        return self.config.target_rate if self.config.penalty == "kl" else None

    def penalty(self, h: Tensor) -> Tensor:
        """The weighted sparsity penalty for a batch of codes h (B, K)."""
        c = self.config
        raw = l1_penalty(h) if c.penalty == "l1" else kl_sparsity_penalty(h, c.target_rate)
        return c.effective_weight * raw

    def regularizers(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        name = "l1" if self.config.penalty == "l1" else "kl_sparsity"
        return {name: self.penalty(z)}

    def loss_is_example_mean(self) -> bool:
        return self.config.penalty == "l1"  # "kl" estimates q_j over the batch

    def off_units(self, h: Tensor) -> Tensor:
        """Boolean (B, K): which code units count as off (exactly 0 for ReLU, < 0.01 for sigmoid)."""
        return h == 0 if self.config.penalty == "l1" else h < SIGMOID_OFF_THRESHOLD

    @torch.no_grad()
    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        h = self.encode(x)
        return {
            "population_sparsity": self.off_units(h).float().mean(1),  # fraction of units off, per example
            "mean_activation": h.mean(1),
        }

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> SparseAEConfig:
        return SparseAEConfig(input_shape=tuple(input_shape), latent_dim=16)
