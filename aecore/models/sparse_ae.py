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

L1 as Conerly et al. train it (T. Conerly et al., "Update on how we train SAEs", Circuits Updates -
April 2024, transformer-circuits.pub/2024/april-update/index.html#training-saes). With a free
decoder the plain L1 penalty is cheap to game: shrink the code by c, grow the decoder columns by c,
and the reconstruction stays while the penalty falls by c; units that fall silent early get no
gradient and never come back. Three config fields, each off by default (the plain L1 above, which
every config.json written before them means):

- `l1_decoder_norm`: penalty lambda * sum_j |h_j| * ||W_dec[:, j]||_2 per example, batch mean, where
  W_dec[:, j] is unit j's column in the decoder's first layer (its atom); rescaling no longer pays.
  No unit-norm constraint on the columns (Conerly et al. drop Bricken et al. 2023's).
- `init_decoder_norm`: the atoms start in random directions with this length (Conerly et al.: 0.05
  to 1), the encoder's code layer as their transpose, b_enc = 0.
- `weight_warmup_steps`: lambda rises linearly from 0 to its value over the first training steps
  (theirs: the first 5 %); `steps`, a buffer, counts training batches (train mode, gradients on).

Where we depart from them: they start b_dec at 0. Our output is a sigmoid scored by cross-entropy,
and b_dec = 0 outputs 0.5 for every pixel: the first Adam steps then push down every unit whose atom
carries that error, and on MNIST 69 of 256 units never fired again (lambda 0.2, lr 1e-3). With
`init_decoder_norm` set, b_dec starts (for `hidden = ()`) at the logit of the first training batch's
mean image, clamped to [1e-3, 1 - 1e-3], set once by the first training forward (not after a
resume): a silent code outputs the mean image, and no unit died in that run. Their inputs are
rescaled to E||x|| = sqrt(D) and their loss is squared error; ours keep pixels in [0, 1] and this
project's cross-entropy, which only moves lambda's scale. Their linear lr decay over the last 20 %,
gradient clipping and Adam settings are the trainer's recipe options (the zoo uses its cosine
schedule). Forward changes state with these options (b_dec's init, the counter), so the trainer
keeps such a model to one process (`loss_is_example_mean`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from aecore.config import check_range
from aecore.errors import ConfigError
from aecore.models.ae import MLPAutoEncoder, MLPConfig
from aecore.models.base import SPARSE_CODE, ModelOutput, RegularizerWeight, flatten
from aecore.models.registry import register_model

# The penalties live on different scales (sum of activations vs. sum of KLs), so each has its own
# default weight; `weight = None` picks it.
DEFAULT_WEIGHTS = {"l1": 0.1, "kl": 3.0}
# A sigmoid unit never reaches exactly 0; below this it counts as "off" in population_sparsity.
SIGMOID_OFF_THRESHOLD = 0.01
_Q_EPS = 1e-6
_NORM_EPS = 1e-12
B_DEC_CLAMP = 1e-3                  # the mean image is clamped to [1e-3, 1 - 1e-3] before its logit


@dataclass
class SparseAEConfig(MLPConfig):
    """MLP encoder D -> hidden... -> latent_dim code; decoder mirrors it."""

    latent_dim: int = 256
    hidden: tuple[int, ...] = ()            # () = the classic one-layer sparse autoencoder
    penalty: Literal["l1", "kl"] = "l1"
    weight: float | None = None             # lambda (l1) or beta (kl); None = DEFAULT_WEIGHTS[penalty]
    target_rate: float = 0.05               # p, the target mean activation (kl only)
    loss: Literal["mse", "bce"] = "bce"
    # Conerly et al. 2024 (module docstring); the defaults are the plain L1 penalty every config.json
    # written before these fields meant, so old files load and evaluate unchanged
    l1_decoder_norm: bool = False           # l1: each unit's |h_j| weighted by its decoder column's norm
    init_decoder_norm: float | None = None  # decoder columns start at this norm, encoder = their transpose,
                                            # b_dec = logit of the first training batch's mean image
    weight_warmup_steps: int = 0            # the weight rises linearly from 0 over these training steps

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
        if self.l1_decoder_norm and self.penalty != "l1":
            raise ConfigError("l1_decoder_norm = true needs penalty = 'l1' (it weights the L1 penalty)")
        if self.init_decoder_norm is not None:
            check_range("init_decoder_norm", self.init_decoder_norm, 0.0, 1e3, lo_open=True)
        check_range("weight_warmup_steps", self.weight_warmup_steps, 0, 10**12)

    @property
    def effective_weight(self) -> float:
        return DEFAULT_WEIGHTS[self.penalty] if self.weight is None else self.weight


def l1_penalty(h: Tensor) -> Tensor:
    """sum_j |h_j| per example, averaged over the batch (unweighted). h: (B, K)."""
    return h.abs().sum(1).mean()


def decoder_norm_l1_penalty(h: Tensor, decoder_weight: Tensor) -> Tensor:
    """sum_j |h_j| * ||W_dec[:, j]||_2 per example, averaged over the batch (unweighted; Conerly et al.
    2024). h: (B, K); decoder_weight: (D', K), column j the atom of unit j."""
    return (h.abs() * decoder_weight.norm(dim=0)).sum(1).mean()


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

    def __init__(self, *, config: SparseAEConfig):
        super().__init__(config=config)
        if config.init_decoder_norm is not None:
            self._init_from_decoder(config.init_decoder_norm)
        if config.init_decoder_norm is not None or config.weight_warmup_steps > 0:
            # training batches seen: the warm-up's clock, and whether b_dec still awaits its data init
            # (saved with the weights, so a resumed run neither restarts the warm-up nor re-inits b_dec)
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._b_dec_checked = False

    # --- Conerly et al.'s initialisation ------------------------------------------------------------
    def atoms_layer(self) -> nn.Linear:
        """The decoder's first linear layer: its column j is what code unit j writes (its atom)."""
        return self.decoder[0]

    @torch.no_grad()
    def _init_from_decoder(self, norm: float) -> None:
        """Atoms in random directions with length `norm`, the encoder's code layer their transpose, b_enc 0."""
        dec, enc = self.atoms_layer(), self.encoder[-2]                        # weights (D', K), (K, D')
        atoms = torch.randn_like(dec.weight)
        dec.weight.copy_(norm * atoms / atoms.norm(dim=0, keepdim=True).clamp_min(_NORM_EPS))
        enc.weight.copy_(dec.weight.t())
        enc.bias.zero_()

    @torch.no_grad()
    def _init_decoder_bias(self, target: Tensor) -> None:
        """With `hidden = ()`: b_dec = logit of the first training batch's mean image, so the first output
        is the mean image; with hidden layers 0. Once per model, never after a resume."""
        if self._b_dec_checked:
            return
        self._b_dec_checked = True
        if target.device.type == "meta" or int(self.steps) != 0:
            return
        bias = self.atoms_layer().bias
        if self.config.hidden:
            bias.zero_()
            return
        mean = flatten(target).float().mean(0).clamp(B_DEC_CLAMP, 1 - B_DEC_CLAMP)   # (D,)
        bias.copy_(torch.log(mean / (1 - mean)).to(bias.dtype))

    # --- the penalty -------------------------------------------------------------------------------
    def target_rate(self) -> float | None:
        return self.config.target_rate if self.config.penalty == "kl" else None

    def warmup_scale(self) -> Tensor | float:
        """min(1, training steps taken / weight_warmup_steps): the share of the weight in force now
        (1 without a warm-up); a 0-d tensor, read without a device sync."""
        warmup = self.config.weight_warmup_steps
        return 1.0 if warmup <= 0 else self.steps.clamp(max=warmup) / warmup

    def penalty(self, h: Tensor) -> Tensor:
        """The weighted sparsity penalty for a batch of codes h (B, K), with the warm-up's share of the weight."""
        c = self.config
        if c.penalty == "kl":
            raw = kl_sparsity_penalty(h, c.target_rate)
        elif c.l1_decoder_norm:
            raw = decoder_norm_l1_penalty(h, self.atoms_layer().weight)
        else:
            raw = l1_penalty(h)
        scale = self.warmup_scale()
        return c.effective_weight * (raw if isinstance(scale, float) else raw * scale.to(raw.dtype))

    def regularizers(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        name = "l1" if self.config.penalty == "l1" else "kl_sparsity"
        return {name: self.penalty(z)}

    def _training_batch(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        counting = hasattr(self, "steps") and self._training_batch()
        if counting and self.config.init_decoder_norm is not None:
            self._init_decoder_bias(x if target is None else target)
        out = super().forward(x, target=target, y=y)
        if counting:
            self.steps.add_(1)                                                 # one more training batch
        return out

    def loss_is_example_mean(self) -> bool:
        """False for "kl" (q_j is estimated over the batch), and when forward changes the model's state:
        b_dec initialised from the first training batch (each DDP process would take its own shard's
        mean), the warm-up's step counter (the trainer syncs no buffer a forward changes)."""
        return self.config.penalty == "l1" and not hasattr(self, "steps")

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
