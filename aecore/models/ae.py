"""MLP autoencoder: the plain, deterministic autoencoder every other MLP variant builds on.

Reference: Hinton & Salakhutdinov (2006), "Reducing the dimensionality of data with neural
networks", Science 313; Goodfellow, Bengio & Courville (2016), *Deep Learning*, ch. 14.

x (B, *input_shape) -> flatten (B, D) -> encoder MLP -> z (B, latent_dim) -> decoder MLP -> x_hat.
The code is undercomplete when latent_dim < D and overcomplete when latent_dim > D; an
overcomplete AE with no regulariser can learn the identity, which is what the app demonstrates.

Reading of the sources where they leave a choice:
- The code layer is linear (no activation) by default, as in Hinton & Salakhutdinov's deep
  autoencoder; `code_activation` lets sparse variants use relu/sigmoid codes.
- The decoder ends in a linear layer producing pre-activations ("logits"); `decode` applies the
  output function. BCE is computed from the logits (numerically stable), MSE on the output.
- Reconstruction loss is summed over components and averaged over the batch (project convention).

Reuse: `MLPAutoEncoder` is the unregistered base; sparse/contractive variants subclass it with a
config that subclasses `MLPConfig` and add weighted penalty terms through `regularizers`. The
layers come from `layers.mirrored_mlps`, which the MLP VAE uses too; `reconstruction_loss` is the
one reconstruction loss of the family (conv and stacked AEs use it as well).
The app's filter view reads `model.encoder[0].weight`, shape (hidden[0], D) (or (latent_dim, D)
when `hidden` is empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from aecore.config import ModelConfig, check_widths
from aecore.errors import ConfigError
from aecore.models.base import BASELINE, AutoEncoder, ModelOutput, flatten, unflatten
from aecore.models.layers import mirrored_mlps
from aecore.models.registry import register_model

Activation = Literal["relu", "sigmoid", "tanh", "gelu", "elu", "leaky_relu"]


def check_output_loss(output: str, loss: str) -> None:
    """BCE scores probabilities, so it needs a sigmoid output (shared by ae, conv-ae, stacked-ae)."""
    if loss == "bce" and output != "sigmoid":
        raise ConfigError(f"loss = 'bce' needs output = 'sigmoid' (got output = {output!r}); use loss = 'mse' for a linear output")


def reconstruction_loss(pre: Tensor, target: Tensor, *, loss: str, output: str = "sigmoid",
                        out: Tensor | None = None) -> Tensor:
    """Summed over components, averaged over the batch.

    pre: decoder pre-activations (B, ...); target: same shape. For "bce" the sigmoid is folded into
    the loss (binary_cross_entropy_with_logits); for "mse" the output function is applied first,
    unless the caller passes it as `out` (= apply_output(pre, output), which it needs anyway for
    the reconstruction: one pass over the batch instead of two).
    """
    batch = max(pre.shape[0], 1)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(pre, target, reduction="sum") / batch
    if out is None:
        out = apply_output(pre, output)
    return F.mse_loss(out, target, reduction="sum") / batch


def apply_output(pre: Tensor, output: str) -> Tensor:
    return torch.sigmoid(pre) if output == "sigmoid" else pre


@dataclass
class MLPShape(ModelConfig):
    """An MLP autoencoder's shape and loss. hidden: encoder widths between input and code (decoder
    mirrors them); empty = one layer each way."""

    hidden: tuple[int, ...] = (512, 256)
    latent_dim: int = 32
    loss: Literal["mse", "bce"] = "mse"

    def validate(self) -> None:
        super().validate()
        check_widths(self.hidden)


@dataclass
class MLPConfig(MLPShape):
    """Fields every MLPAutoEncoder shares: the shape, and the activation between hidden layers.

    Subclasses also provide `code_activation` and `output` (the code's and the reconstruction's
    functions): as fields where the user picks them (AEConfig), fixed where the model's idea needs
    them (a sparsity penalty needs a ReLU or sigmoid code).
    """

    activation: Activation = "relu"


@dataclass
class AEConfig(MLPConfig):
    """The plain AE's config: the code and output functions are the user's choice."""

    code_activation: Literal["identity", "relu", "sigmoid", "tanh"] = "identity"
    output: Literal["sigmoid", "linear"] = "sigmoid"

    def validate(self) -> None:
        super().validate()
        check_output_loss(self.output, self.loss)


class MLPAutoEncoder(AutoEncoder):
    """Fully connected encoder/decoder; unregistered base for the MLP family.

    Attributes: `encoder`, `decoder` (nn.Sequential). `encoder[0]` is the first Linear (D -> hidden[0]);
    `decoder` outputs pre-activations (B, D), `decode` applies the output function and reshapes.
    """

    config_class = AEConfig

    def __init__(self, *, config: MLPConfig):
        super().__init__(config=config)
        self.encoder, self.decoder = mirrored_mlps(
            input_dim=config.input_numel, hidden=config.hidden, latent_dim=config.latent_dim,
            activation=config.activation, code_activation=config.code_activation)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(flatten(x))  # (B, latent_dim)

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, D), before the output function

    def decode(self, z: Tensor) -> Tensor:
        return unflatten(apply_output(self.decoder(z), self.config.output), self.config.input_shape)

    def regularizers(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Extra loss terms, already weighted, added to the loss and reported under their names.

        Subclasses (sparse, contractive, ...) override this; x is the model input, z the code.
        """
        return {}

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        z = self.encode(x)
        pre = self.decode_logits(z)
        out = apply_output(pre, self.config.output)                      # (B, D)
        parts = {"recon": reconstruction_loss(pre, flatten(target), loss=self.config.loss, output=self.config.output,
                                              out=out)}
        parts.update(self.regularizers(x, z))
        loss = parts["recon"] if len(parts) == 1 else torch.stack(list(parts.values())).sum()
        recon = unflatten(out, self.config.input_shape)
        return ModelOutput(loss=loss, recon=recon, z=z, parts=parts)

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> MLPConfig:
        return cls.config_class(input_shape=tuple(input_shape), hidden=(32,), latent_dim=8)


@register_model("ae", description="MLP autoencoder (under- or overcomplete), MSE or BCE reconstruction")
class AE(MLPAutoEncoder):
    """MLP autoencoder: flatten, encoder MLP to a (linear by default) code, mirrored decoder."""

    roles = frozenset({BASELINE})
