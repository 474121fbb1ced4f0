"""PCA as the baseline every autoencoder is compared with (same number of components as its code).

Fitted from the covariance's eigendecomposition (D x D, D <= a few thousand), in float64 so the
trailing components are accurate; the app, the zoo and the rank-ordered k-slider all use it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aecore.errors import ConfigError


class PCA:
    """mean (D,), components (k, D) rows sorted by explained variance, explained_variance (k,)."""

    def __init__(self, *, mean: Tensor, components: Tensor, explained_variance: Tensor):
        self.mean, self.components, self.explained_variance = mean, components, explained_variance

    @classmethod
    def fit(cls, x: Tensor, k: int) -> "PCA":
        """x: (N, ...) float images; keeps the top-k principal directions of the centred data."""
        flat = x.reshape(x.shape[0], -1).double()
        n, d = flat.shape
        if not 1 <= k <= d:
            raise ConfigError(f"PCA needs 1 <= components <= {d}, got {k}")
        if n < 2:
            raise ConfigError("PCA needs at least 2 images")
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / (n - 1)
        values, vectors = torch.linalg.eigh(cov)             # ascending
        top = torch.argsort(values, descending=True)[:k]
        return cls(mean=mean.float(), components=vectors[:, top].T.contiguous().float(),
                   explained_variance=values[top].clamp_min(0).float())

    @property
    def k(self) -> int:
        return self.components.shape[0]

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        """(N, ...) -> (N, k) coordinates on the first k components."""
        comps = self.components[: k or self.k].to(x.device)
        return (x.reshape(x.shape[0], -1) - self.mean.to(x.device)) @ comps.T

    def decode(self, codes: Tensor) -> Tensor:
        """(N, k) -> (N, D) back in input space (flat)."""
        comps = self.components[: codes.shape[1]].to(codes.device)
        return codes @ comps + self.mean.to(codes.device)

    def reconstruct(self, x: Tensor, k: int | None = None) -> Tensor:
        """Projection onto the first k components, clipped to the data range [0, 1]; shape of x."""
        return self.decode(self.encode(x, k)).clamp(0.0, 1.0).view_as(x)
