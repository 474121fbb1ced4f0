"""Linear autoencoder: one linear encoder, one linear decoder, square loss. It learns PCA's subspace.

Reference: Baldi & Hornik (1989), "Neural networks and principal component analysis: learning from
examples without local minima", Neural Networks 2(1). With square loss, every local minimum of a
linear AE with d < D hidden units is global, and at the optimum the decoder's column space is the
span of the top-d principal directions (eigenvectors of the data covariance). The AE need not
recover the individual eigenvectors (any invertible mixing C, C^-1 gives the same loss), only their
span; hence we compare subspaces by principal angles, not vectors.

Biases: both layers have one. With a decoder bias the optimum centres the data itself, so the
learned subspace is PCA of the *centred* data (what `pca_subspace_angles` compares against).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecore.config import ModelConfig
from aecore.models.base import AutoEncoder, ModelOutput, flatten, unflatten
from aecore.models.registry import register_model


@dataclass
class LinearAEConfig(ModelConfig):
    """Only the code size: the architecture is fixed (Linear D->d, Linear d->D, no nonlinearity)."""

    latent_dim: int = 32


@register_model("linear-ae", description="Linear autoencoder (no nonlinearity, square loss): recovers PCA's subspace")
class LinearAE(AutoEncoder):
    """x -> W_e x + b_e -> W_d z + b_d. `encoder`, `decoder` are nn.Linear; decoder.weight is (D, d)."""

    config_class = LinearAEConfig

    def __init__(self, *, config: LinearAEConfig):
        super().__init__(config=config)
        d_in = config.input_numel
        self.encoder = nn.Linear(d_in, config.latent_dim)
        self.decoder = nn.Linear(config.latent_dim, d_in)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(flatten(x))  # (B, d)

    def decode(self, z: Tensor) -> Tensor:
        return unflatten(self.decoder(z), self.config.input_shape)  # linear output: may leave [0, 1]

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        z = self.encode(x)
        recon = self.decode(z)
        rec = F.mse_loss(recon, target, reduction="sum") / max(x.shape[0], 1)
        return ModelOutput(loss=rec, recon=recon, z=z, parts={"recon": rec})

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> LinearAEConfig:
        return cls.config_class(input_shape=tuple(input_shape), latent_dim=8)


def pca_basis(x: Tensor, d: int) -> Tensor:
    """Top-d principal directions of the centred data x (N, ...) as orthonormal columns (D, d), float64."""
    flat = flatten(x).to(torch.float64)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    return vh[:d].T


def subspace_angles(a: Tensor, b: Tensor) -> Tensor:
    """Principal angles in degrees, ascending, between the column spaces of a (D, k) and b (D, k).

    cos(theta_i) are the singular values of Q_a^T Q_b (Björck & Golub 1973). Near 0 degrees the
    arccos of a cosine loses precision, so small angles come from the sine form:
    sin(theta_i) = singular values of (I - Q_a Q_a^T) Q_b. With different widths, min(k_a, k_b) angles.
    """
    if a.shape[1] < b.shape[1]:
        a, b = b, a
    qa, _ = torch.linalg.qr(a.to(torch.float64))
    qb, _ = torch.linalg.qr(b.to(torch.float64))
    cos = torch.linalg.svdvals(qa.T @ qb).clamp(0.0, 1.0)                     # descending -> angles ascending
    sin = torch.linalg.svdvals(qb - qa @ (qa.T @ qb)).clamp(0.0, 1.0).flip(0)  # ascending -> same order
    angles = torch.where(cos ** 2 > 0.5, torch.arcsin(sin), torch.arccos(cos))
    return angles * (180.0 / math.pi)


def pca_subspace_angles(decoder_weight: Tensor, x: Tensor, d: int | None = None) -> Tensor:
    """Principal angles (degrees) between span(decoder_weight) (D, d) and PCA's top-d subspace of x."""
    w = decoder_weight.detach().cpu()
    d = w.shape[1] if d is None else d
    return subspace_angles(w, pca_basis(x.detach().cpu(), d))


def principal_angles_to_pca(model: LinearAE, data: Tensor) -> Tensor:
    """Degrees between the linear AE's decoder column space and PCA of `data` (N, *input_shape)."""
    return pca_subspace_angles(model.decoder.weight, data, model.config.latent_dim)
