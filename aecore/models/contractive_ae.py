"""Contractive autoencoder: penalise how much the code moves when the input moves.

Rifai, Vincent, Muller, Glorot & Bengio, "Contractive Auto-Encoders: Explicit Invariance During
Feature Extraction", ICML 2011. Loss per example = L(x, g(f(x))) + lambda * ||J_f(x)||_F^2, where
J_f(x) = dh/dx is the encoder's Jacobian at the input (loss part "contractive").

For the paper's one-layer sigmoid encoder h = sigmoid(Wx + b) the penalty has a closed form
(eq. 5 there): ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2, one matrix product per batch.
Deeper encoders (our extension; the paper stacks one-layer CAEs instead) use torch.func:
vmap(jacrev(.)) gives each example's (K, D) Jacobian exactly, and the result stays differentiable
w.r.t. the weights, so the penalty trains. Cost: K backward passes per example, so keep deep
encoders' latent_dim small.

How we read the paper: the decoder is untied (the paper ties W' = W^T); reconstruction loss
follows this project's convention (summed over components, averaged over the batch), "bce"
being the paper's cross-entropy. The Jacobian is taken at the (possibly corrupted) input x.
Network and reconstruction loss are MLPAutoEncoder's (`aecore.models.ae`), with a sigmoid code
and a sigmoid output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
from torch import Tensor, nn

from aecore.config import check_range
from aecore.errors import ConfigError
from aecore.models.ae import Activation, MLPAutoEncoder, MLPConfig
from aecore.models.base import CONTRACTIVE, AutoEncoder, RegularizerWeight, flatten
from aecore.models.registry import register_model


@dataclass
class ContractiveAEConfig(MLPConfig):
    """Sigmoid-coded MLP encoder D -> hidden... -> latent_dim; decoder mirrors it."""

    latent_dim: int = 128
    hidden: tuple[int, ...] = ()            # () = the paper's one-layer sigmoid encoder
    activation: Activation = "sigmoid"      # between hidden layers
    weight: float = 0.1                     # lambda; try 0.01 - 1 with summed cross-entropy
    jacobian: Literal["auto", "closed_form", "autograd"] = "auto"
    loss: Literal["mse", "bce"] = "bce"

    code_activation: ClassVar[str] = "sigmoid"   # the paper's code; the closed-form Jacobian needs it
    output: ClassVar[str] = "sigmoid"

    def validate(self) -> None:
        super().validate()
        check_range("weight", self.weight, 0.0, 1e6)
        if self.jacobian == "closed_form" and self.hidden:
            raise ConfigError(f"jacobian = 'closed_form' needs a one-layer sigmoid encoder (hidden = []), "
                              f"got hidden = {list(self.hidden)}; use 'auto' or 'autograd'")


def sigmoid_layer(module: nn.Module) -> nn.Linear | None:
    """The Linear layer if `module` is exactly Linear -> Sigmoid (closed form applies), else None."""
    if (isinstance(module, nn.Sequential) and len(module) == 2
            and isinstance(module[0], nn.Linear) and isinstance(module[1], nn.Sigmoid)):
        return module[0]
    return None


def closed_form_frobenius_sq(linear: nn.Linear, x_flat: Tensor, h: Tensor | None = None) -> Tensor:
    """||dh/dx||_F^2 per example for h = sigmoid(W x + b); x_flat (B, D) -> (B,)."""
    if h is None:
        h = torch.sigmoid(linear(x_flat))
    return (h * (1 - h)).pow(2) @ linear.weight.pow(2).sum(1)   # (B, K) @ (K,) -> (B,)


def func_frobenius_sq(f: Callable[[Tensor], Tensor], x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """||J||_F^2 per example for any batched f: (B, ...) -> (B, K), via torch.func (differentiable)."""
    def one(xi: Tensor) -> Tensor:
        return f(xi.unsqueeze(0)).squeeze(0)  # (...) -> (K,)

    jac = torch.func.vmap(torch.func.jacrev(one), chunk_size=chunk_size)(x)   # (B, K, ...)
    return jac.pow(2).flatten(1).sum(1)


def loop_frobenius_sq(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Slow per-example fallback with torch.autograd.functional.jacobian (no graph kept)."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).squeeze(0), xi)
        out.append(jac.pow(2).sum())
    return torch.stack(out)


def jacobian_frobenius_sq(model_or_encoder: nn.Module | Callable[[Tensor], Tensor], x: Tensor, *,
                          method: str = "auto", create_graph: bool = False,
                          chunk_size: int | None = 64) -> Tensor:
    """Squared Frobenius norm of the encoder Jacobian dz/dx at each example: (B, *shape) -> (B,).

    `model_or_encoder`: a ContractiveAE (uses its own encoder, closed form when it is one sigmoid
    layer), any other AutoEncoder (differentiates `model.encode`, e.g. to compare a plain AE's
    contraction with a CAE's), or any module/callable mapping a batch to (B, K) codes.
    `method`: "auto" | "closed_form" | "autograd" (torch.func). With create_graph=False the result
    is detached; `chunk_size` bounds how many examples' Jacobians are held at once. For models
    whose `encode` torch.func cannot vmap, "auto" falls back to a per-example loop.
    """
    if method not in ("auto", "closed_form", "autograd"):
        raise ConfigError(f"method = {method!r} is not one of 'auto', 'closed_form', 'autograd'")
    generic_model = False
    if isinstance(model_or_encoder, ContractiveAE):
        f: Callable[[Tensor], Tensor] = model_or_encoder.encoder
        x = flatten(x)
    elif isinstance(model_or_encoder, AutoEncoder):
        f, generic_model = model_or_encoder.encode, True
    else:
        f = model_or_encoder
    linear = sigmoid_layer(f) if isinstance(f, nn.Module) else None
    if method == "closed_form" and linear is None:
        raise ConfigError("jacobian method 'closed_form' needs a one-layer sigmoid encoder (Linear -> Sigmoid)")

    with torch.enable_grad() if create_graph else torch.no_grad():
        if linear is not None and method != "autograd":
            return closed_form_frobenius_sq(linear, flatten(x))
        if not generic_model or method == "autograd":
            return func_frobenius_sq(f, x, chunk_size=chunk_size)
        try:
            return func_frobenius_sq(f, x, chunk_size=chunk_size)
        except RuntimeError:  # an op torch.func cannot batch: slow but exact
            if create_graph:
                raise
            return loop_frobenius_sq(f, x)


@register_model("contractive-ae", description="Autoencoder penalising the encoder Jacobian norm (Rifai et al. 2011)")
class ContractiveAE(MLPAutoEncoder):
    """MLP autoencoder with a sigmoid code and a lambda * ||dh/dx||_F^2 penalty."""

    roles = frozenset({CONTRACTIVE})
    regularizer_weight = RegularizerWeight(field="weight", about="λ, the weight of the Jacobian penalty ‖∂h/∂x‖²")
    config_class: ClassVar = ContractiveAEConfig

    @property
    def uses_closed_form(self) -> bool:
        return self.config.jacobian != "autograd" and sigmoid_layer(self.encoder) is not None

    def jacobian_sq(self, x_flat: Tensor, h: Tensor | None = None) -> Tensor:
        """Differentiable ||dh/dx||_F^2 per example, by the configured method; x_flat (B, D) -> (B,)."""
        if self.uses_closed_form:
            return closed_form_frobenius_sq(self.encoder[0], x_flat, h)
        return func_frobenius_sq(self.encoder, x_flat)

    def regularizers(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        return {"contractive": self.config.weight * self.jacobian_sq(flatten(x), z).mean()}

    @torch.no_grad()
    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        return {"jacobian_norm": jacobian_frobenius_sq(self, x).sqrt()}

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> ContractiveAEConfig:
        return ContractiveAEConfig(input_shape=tuple(input_shape), latent_dim=8)
