"""The one output type and the one base class every model shares (pythae style).

The trainer only ever calls `model(x, target=..., y=...)` and reads `out.loss` (or, for a model
whose `updates_itself()`, calls its `update_step` instead of descending that loss); everything
else a view needs (reconstruction, code, loss parts) travels in `ModelOutput`.

Models also describe themselves (traits), so that the lab and the pages pick and explain them
without ever naming one: `roles` (what a model is for, from `ROLES`), `regularizer_weight`,
`no_pca_baseline`, `twin`, and the methods `code_activation`, `target_rate`, `tied_weight`,
`non_image_output`. `aecore.models.registry.models_with(role)` finds models by role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from aecore.config import ModelConfig
from aecore.errors import ConfigError


# --- roles: what a model is for; each names what reads it -------------------------------------------
BASELINE = "baseline"                # the plain autoencoder: the Train page's default, the denoise page's contrast
GENERATIVE = "generative"            # a prior to sample from (sample, interpolate, traverse, posterior): the VAE lab
HYPERNETWORK = "hypernetwork"        # every weight generated from an embedding (`hyper`): the Hypernetwork page
SEMI_SUPERVISED = "semi-supervised"  # trains on labels too: label budgets, its baselines, the Semi-supervised page
GREEDY_STAGES = "greedy-stages"      # greedy layer-wise stages: the Train page's stage epochs, the Filters play-back
RANKED_CODE = "ranked-code"          # units ranked by activation (an anytime code): the Sparsity page's top-k vs PCA
SPARSE_CODE = "sparse-code"          # a penalty makes the code sparse: the Sparsity page starts on such a model
CONTRACTIVE = "contractive"          # the encoder's Jacobian norm is penalised: the Sparsity page maps it
ROLES = frozenset({BASELINE, GENERATIVE, HYPERNETWORK, SEMI_SUPERVISED, GREEDY_STAGES, RANKED_CODE, SPARSE_CODE,
                   CONTRACTIVE})


@dataclass(frozen=True)
class RegularizerWeight:
    """The config field that weights a model's regulariser: the Train page's strength input and a
    job's `strength`. A model with several penalties names the field choosing one (`kind_field`) and
    each penalty's default weight (`kinds`, the config's default first): their scales differ."""

    field: str                                   # config field holding the weight
    about: str                                   # what the weight means, shown to the user
    kind_field: str | None = None                # config field choosing the penalty
    kinds: tuple[tuple[str, float], ...] = ()    # (penalty, its default weight)
    kind_label: str = ""                         # the Train page's label for the choice
    kind_help: str = ""

    def default(self, config_class: type, kind: str | None = None) -> float:
        """The weight a config of `config_class` gets when it sets none (for penalty `kind`)."""
        if self.kinds:
            defaults = dict(self.kinds)
            return float(defaults.get(kind, self.kinds[0][1]))
        return float(config_class.__dataclass_fields__[self.field].default)


@dataclass
class ModelOutput:
    loss: Tensor                      # scalar the trainer minimises
    recon: Tensor                     # (B, *input_shape), in data range [0, 1] unless the model says otherwise
    z: Tensor                         # the code: (B, latent_dim) for flat codes
    parts: dict[str, Tensor] = field(default_factory=dict)   # named scalar loss parts, e.g. recon, kl, l1
    extras: dict[str, Tensor] = field(default_factory=dict)  # model-specific tensors, e.g. mu, logvar, logits


class AutoEncoder(nn.Module):
    """Base class: keyword-only config, `encode`/`decode`/`forward`, and optional hooks.

    Subclasses set `config_class` and implement `encode`, `decode` and `forward`.
    `forward(x, *, target=None, y=None)`: `x` is the (possibly corrupted) input, `target` the
    clean input the reconstruction is scored against (defaults to `x`), `y` integer labels with
    -1 for unlabelled examples (only semi-supervised models use them).
    """

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    registry_name: ClassVar[str] = ""
    roles: ClassVar[frozenset[str]] = frozenset()          # from ROLES: the pages and lab views that pick it
    regularizer_weight: ClassVar[RegularizerWeight | None] = None  # Train page's strength input, a job's strength
    no_pca_baseline: ClassVar[str | None] = None   # why PCA of the code's size is no fair baseline (Reconstructions)
    twin: ClassVar[str | None] = None              # registered model: same network, ordinary weights (Hypernetwork)
    # the Train page's starting point (latent_dim, epochs, lr) where its usual 32, 5 and 1e-3 would not give a
    # working model within a minute on a 2-core CPU
    train_page_defaults: ClassVar[Mapping[str, float]] = {}

    def __init__(self, *, config: ModelConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        config.validate()
        if not self.supports(config.input_shape):
            raise ConfigError(f"model {self.registry_name!r} does not support input shape {list(config.input_shape)}")
        self.config = config

    # --- what every model provides -------------------------------------------------------
    @classmethod
    def supports(cls, input_shape: tuple[int, ...]) -> bool:
        """Whether this architecture can take inputs of this shape (e.g. conv needs C,H,W)."""
        return True

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction for views and metrics (VAEs decode the mean code)."""
        return self.decode(self.encode(x))

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> ModelConfig:
        """A tiny config for this input shape: fast tests and classroom demos."""
        return cls.config_class(input_shape=tuple(input_shape), latent_dim=8)

    # --- what the model says about itself, given its config (see the traits above) --------
    def code_activation(self) -> str:
        """The function producing the code ('identity', 'relu', 'sigmoid', 'trelu', ...): the Sparsity
        page's off threshold (a sigmoid code is never exactly 0)."""
        return getattr(self.config, "code_activation", "identity")

    def target_rate(self) -> float | None:
        """The mean activation a sparsity penalty aims each code unit at; None when there is none."""
        return None

    def tied_weight(self) -> Tensor | None:
        """(units, D) weight the encoder reads the input with and the decoder writes it with
        (transposed), for tied-weight models: the Filters page shows it once. None when untied."""
        return None

    @classmethod
    def non_image_output(cls, config: Mapping[str, Any]) -> str | None:
        """What a model with this config (a config.json mapping) outputs instead of an image like its
        input, said for the user; None when it outputs such an image, as a denoiser must. Read without
        loading weights, for the denoise page's picker."""
        return None

    # --- optional hooks, generic so the trainer stays model-agnostic ---------------------
    def stages(self) -> list[str]:
        """Training stages in order; greedy layer-wise models return one per layer, then 'finetune'."""
        return ["train"]

    def begin_stage(self, stage: str) -> None:
        """Called before a stage; a model may freeze parameters or change what `forward` trains."""

    def end_stage(self, stage: str) -> None:
        """Called after a stage; a model may snapshot state (e.g. filters) for play-back."""

    def updates_itself(self) -> bool:
        """Whether this model (with its config) follows a learning rule that is no gradient of a loss
        (rank-ordered-ae's reference rule) and so updates its own parameters in `update_step`. The
        trainer then calls `update_step` for each batch instead of backward and its optimiser (whose
        lr, weight_decay, grad_clip and lr_schedule do not apply), validates with `forward` as usual,
        and refuses DDP: each process would update its own copy of the weights."""
        return False

    def update_step(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        """Apply the model's own update for one training batch (arguments as in `forward`), without
        autograd; returns the batch's ModelOutput, whose `loss` and `parts` the trainer logs."""
        raise NotImplementedError

    def loss_is_example_mean(self) -> bool:
        """Whether `loss` is a mean of per-example terms. Then a batch split over processes (DDP),
        each loss weighted by its share, gives the same loss and gradient as the whole batch; a loss
        on batch statistics (batch norm, a mean activation over the batch) would not, so the trainer
        refuses such a model under DDP rather than change what it optimises."""
        return True

    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Model-specific per-example metrics, each (B,); evaluation averages them over a split."""
        return {}

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")


def flatten(x: Tensor) -> Tensor:
    """(B, *shape) -> (B, D)."""
    return x.reshape(x.shape[0], -1)


def unflatten(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(B, D) -> (B, *shape)."""
    return x.reshape(x.shape[0], *shape)


def image_shape_ok(input_shape: tuple[int, ...], *, min_side: int = 4) -> bool:
    return len(input_shape) == 3 and min(input_shape[1:]) >= min_side
