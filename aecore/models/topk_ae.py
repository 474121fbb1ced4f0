"""k-sparse autoencoder: a one-layer autoencoder whose code keeps only its k largest units.

References: Makhzani & Frey (2013), "k-Sparse Autoencoders", arXiv:1312.5663; in the form of Gao et
al. (2024), "Scaling and evaluating sparse autoencoders", arXiv:2406.04093 (code:
github.com/openai/sparse_autoencoder); batch top-k from Bussmann, Leask & Nanda (2024), "BatchTopK
Sparse Autoencoders", arXiv:2412.06410.

    a     = W_enc (x - b_pre) + b_enc              pre-activations, (B, n)
    z     = ReLU(TopK_k(a))                        the k largest a_j of each example, the rest 0: the code
    x_hat = W_dec z + b_pre                        linear output (may leave [0, 1], as in the paper)
    e     = x - x_hat                              the residual, a fixed target (no gradient)
    e_hat = W_dec ReLU(TopK_kaux(a on dead units)) the dead units' best guess at the residual
    loss  = ||x - x_hat||^2 + alpha ||e - e_hat||^2    summed over components, averaged over the batch

No penalty: k sets the sparsity exactly, so there is no L1 shrinkage to trade against the error.
What keeps every unit learning (Gao et al. sec. 2.4 and A.1):
- W_enc starts as W_dec transposed, so each unit first reads the direction it writes;
- b_pre starts at the geometric median of the first training batch (Weiszfeld iterations), so the
  units see centred inputs; a unit anti-aligned with the data mean would otherwise never fire;
- AuxK: a unit is dead when it has not fired for `dead_after` training examples (a counter per unit,
  `since_fired`, a buffer); the top-`aux_k` pre-activations of the dead units alone are trained to
  reconstruct the residual, weighted by `aux_alpha` (paper: 1/32), so they get gradient although
  the main loss never reaches them. Only dead units' rows of W_enc and b_enc and columns of W_dec
  receive that gradient (and b_pre, through the shared encoder input).

Decoder atoms (columns of W_dec) have unit norm by parametrisation: the stored parameter V is
divided by its column norms in every use (`torch.nn.utils.parametrize`). The references renormalise
after each optimiser step and project the gradient onto the sphere's tangent; differentiating
through V / ||V|| applies that projection itself, and the trainer has no post-step hook a model
could use, so the constraint lives entirely in this file and holds at every moment, not only
between steps. Why unit norm: top-k ranks units by a_j, which measures a unit's share of the
reconstruction only when every atom has the same length.

Where we follow one reference among several: the AuxK loss is the paper's ||e - e_hat||^2 on the
loss's own scale (EleutherAI/sae divides both terms by the same variance, which keeps this ratio);
openai/sparse_autoencoder divides the aux term by the residual's batch variance instead. The dead
test is "no example made the unit non-zero", and `aux_k` defaults to half the input size (Gao et
al. app. B.1), at most `latent_dim`.

Batch top-k (`batch_topk`): a training batch keeps its k*B largest activations, wherever they fall,
so an example may use more or fewer than k units. At evaluation a per-batch rule would make an
image's code depend on its batch-mates, so (as Bussmann et al.) a unit is on when a_j > theta, a
buffer holding the running mean (then an EMA, rate 0.01) of the smallest activation each training
batch kept; before any training theta = 0 (plain ReLU).

State changed in `forward` (training batches only: train mode with gradients on): `since_fired`,
`theta`, `steps` and the one-time b_pre init; each DDP process would change them from its own shard,
so the model reports `loss_is_example_mean() = False` and the trainer keeps it to one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from aecore.config import ModelConfig, check_range
from aecore.models.base import SPARSE_CODE, AutoEncoder, ModelOutput, flatten, unflatten
from aecore.models.registry import register_model

THETA_RATE = 0.01            # batch top-k: EMA rate of the eval threshold after the first 1 / rate batches
MEDIAN_ITERATIONS = 20       # Weiszfeld steps for b_pre's geometric-median init
_EPS = 1e-8


@dataclass
class TopKAEConfig(ModelConfig):
    """One layer each way: D -> latent_dim units (k of them on) -> D."""

    latent_dim: int = 256
    k: int = 25                          # units kept per example (on average, with batch_topk)
    batch_topk: bool = False             # keep the k * B largest activations of a training batch
    aux_k: int | None = None             # dead units the AuxK loss uses; None = min(D // 2, latent_dim)
    aux_alpha: float = 1 / 32            # weight of the AuxK loss; 0 = no revival
    dead_after: int = 10_000             # training examples without firing after which a unit is dead

    def validate(self) -> None:
        super().validate()
        check_range("k (at most latent_dim)", self.k, 1, self.latent_dim)
        if self.aux_k is not None:
            check_range("aux_k (at most latent_dim)", self.aux_k, 1, self.latent_dim)
        check_range("aux_alpha", self.aux_alpha, 0.0, 1e3)
        check_range("dead_after", self.dead_after, 1, 10**15)

    @property
    def effective_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.input_numel // 2, self.latent_dim))


class UnitNormColumns(nn.Module):
    """Parametrisation: W = V / ||V||, column by column (each column of a (D, n) decoder is an atom)."""

    def forward(self, v: Tensor) -> Tensor:
        return v / v.norm(dim=0, keepdim=True).clamp_min(_EPS)


def keep_top_k(a: Tensor, k: int) -> Tensor:
    """(B, n) -> (B, n): each row's k largest entries, ReLU'd; the rest exactly 0."""
    top = a.topk(k, dim=1)
    return torch.zeros_like(a).scatter(1, top.indices, top.values.relu())


def keep_batch_top_k(a: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(B, n) -> ((B, n) the batch's k * B largest entries, ReLU'd, the rest 0; the smallest kept
    positive value, inf when none is positive)."""
    top = a.flatten().topk(k * a.shape[0])
    values = top.values.relu()
    z = torch.zeros_like(a).flatten().scatter(0, top.indices, values).view_as(a)
    smallest = values.detach().masked_fill(values.detach() <= 0, float("inf")).min()
    return z, smallest


def geometric_median(x: Tensor, iterations: int = MEDIAN_ITERATIONS) -> Tensor:
    """(B, D) -> (D,): the point minimising the summed distances to the rows (Weiszfeld's algorithm)."""
    m = x.mean(0)
    for _ in range(iterations):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(_EPS)                         # (B,)
        m = (w[:, None] * x).sum(0) / w.sum()
    return m


@register_model("topk-ae", description="k-sparse autoencoder (TopK code, AuxK dead-unit revival; Gao et al. 2024)")
class TopKAE(AutoEncoder):
    """One-layer autoencoder whose code keeps each example's k largest units (or the batch's k * B)."""

    config_class: ClassVar = TopKAEConfig
    roles = frozenset({SPARSE_CODE})

    def __init__(self, *, config: TopKAEConfig):
        super().__init__(config=config)
        d, n = config.input_numel, config.latent_dim
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.encoder = nn.Linear(d, n)                                         # weight (n, D), bias b_enc
        self.decoder = nn.Linear(n, d, bias=False)                             # weight (D, n): atoms as columns
        parametrize.register_parametrization(self.decoder, "weight", UnitNormColumns())
        with torch.no_grad():
            self.encoder.weight.copy_(self.decoder.weight.t())
            self.encoder.bias.zero_()
        self.register_buffer("since_fired", torch.zeros(n, dtype=torch.long))  # training examples since last on
        self.register_buffer("theta", torch.zeros(()))                        # batch top-k's eval threshold
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))       # training batches seen
        self._b_pre_checked = False

    # --- the code ---------------------------------------------------------------------------------
    def pre_activations(self, x: Tensor) -> Tensor:
        return self.encoder(flatten(x) - self.b_pre)                          # (B, n)

    def sparsify(self, a: Tensor, *, training: bool) -> tuple[Tensor, Tensor | None]:
        """Pre-activations (B, n) -> (the code (B, n), under batch top-k in training the smallest
        activation kept, else None)."""
        k = self.config.k
        if not self.config.batch_topk:
            return keep_top_k(a, k), None
        if not training:
            return a.relu() * (a > self.theta), None
        return keep_batch_top_k(a, k)

    def encode(self, x: Tensor) -> Tensor:
        return self.sparsify(self.pre_activations(x), training=self._training_batch())[0]  # (B, n)

    def decode(self, z: Tensor) -> Tensor:
        return unflatten(self.decoder(z) + self.b_pre, self.config.input_shape)           # linear output

    def code_activation(self) -> str:
        return "relu"                                                          # exact zeros for the units left out

    # --- training ---------------------------------------------------------------------------------
    def _training_batch(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def dead_units(self) -> Tensor:
        """(n,) bool: units that have not fired for `dead_after` training examples."""
        return self.since_fired >= self.config.dead_after

    @torch.no_grad()
    def _init_b_pre(self, x: Tensor) -> None:
        """b_pre = geometric median of the first training batch; once per model, never after a resume."""
        if self._b_pre_checked:
            return
        self._b_pre_checked = True
        if x.device.type != "meta" and int(self.steps) == 0:
            self.b_pre.copy_(geometric_median(flatten(x).float()).to(self.b_pre.dtype))

    @torch.no_grad()
    def _after_batch(self, z: Tensor, smallest: Tensor | None) -> None:
        """Count the examples since each unit last fired; move batch top-k's theta towards `smallest`
        (a running mean over the first 1 / THETA_RATE batches, then an EMA)."""
        if smallest is not None:
            rate = torch.clamp(1.0 / (self.steps + 1).float(), min=THETA_RATE)
            moved = self.theta + rate * (smallest - self.theta)
            self.theta.copy_(torch.where(torch.isfinite(smallest), moved, self.theta))
        fired = (z > 0).any(0)                                                 # (n,)
        self.since_fired.add_(z.shape[0]).masked_fill_(fired, 0)
        self.steps.add_(1)

    def aux_loss(self, a: Tensor, residual: Tensor) -> Tensor:
        """||e - e_hat||^2 (summed, batch mean): the top-aux_k dead pre-activations of `a` (B, n)
        reconstructing the residual e (B, D); exactly 0, without gradient, while no unit is dead."""
        dead = self.dead_units()
        k_aux = self.config.effective_aux_k
        z_aux = keep_top_k(a.masked_fill(~dead, float("-inf")), k_aux)        # (B, n): dead units only
        e_hat = self.decoder(z_aux)                                            # (B, D): no b_pre, e has none
        sse = (e_hat - residual).pow(2).sum() / max(a.shape[0], 1)
        return sse * dead.any().to(sse.dtype)

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        training = self._training_batch()
        if training:
            self._init_b_pre(x)
        a = self.pre_activations(x)                                            # (B, n)
        z, smallest = self.sparsify(a, training=training)                      # (B, n)
        if training:
            self._after_batch(z, smallest)
        out = self.decoder(z) + self.b_pre                                     # (B, D)
        t = flatten(target)
        parts = {"recon": (out - t).pow(2).sum() / max(x.shape[0], 1)}
        if self.config.aux_alpha > 0:
            parts["auxk"] = self.config.aux_alpha * self.aux_loss(a, (t - out).detach())
        loss = parts["recon"] if len(parts) == 1 else parts["recon"] + parts["auxk"]
        return ModelOutput(loss=loss, recon=unflatten(out, self.config.input_shape), z=z, parts=parts)

    def loss_is_example_mean(self) -> bool:
        """False: forward updates the dead-unit counters, theta and b_pre's init from the batch it sees,
        which under DDP would be each process's shard (and batch top-k ranks across the batch)."""
        return False

    # --- what evaluation reports ------------------------------------------------------------------
    @torch.no_grad()
    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Per image: fraction of units exactly 0, active units (L0); and, the same for every image, the
        fraction of units the training counters flag dead (dead on the test split: the Sparsity page)."""
        z = self.encode(x)                                                     # (B, n)
        off = (z == 0).to(x.dtype)
        dead = self.dead_units().to(x.dtype).mean().expand(z.shape[0])
        return {"population_sparsity": off.mean(1), "l0": (1 - off).sum(1), "dead_units_train": dead}

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> TopKAEConfig:
        return TopKAEConfig(input_shape=tuple(input_shape), latent_dim=16, k=4, dead_after=64)
