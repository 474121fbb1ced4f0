"""The one output type and the one base class every model shares (pythae style).

The trainer only ever calls `model(x, target=..., y=...)` and reads `out.loss`; everything
else a view needs (reconstruction, code, loss parts) travels in `ModelOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from aecore.config import ModelConfig
from aecore.errors import ConfigError


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

    # --- optional hooks, generic so the trainer stays model-agnostic ---------------------
    def stages(self) -> list[str]:
        """Training stages in order; greedy layer-wise models return one per layer, then 'finetune'."""
        return ["train"]

    def begin_stage(self, stage: str) -> None:
        """Called before a stage; a model may freeze parameters or change what `forward` trains."""

    def end_stage(self, stage: str) -> None:
        """Called after a stage; a model may snapshot state (e.g. filters) for play-back."""

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
