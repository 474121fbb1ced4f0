"""Input corruption for denoising autoencoders, as Vincent et al. (2010) define it.

- gaussian:   x~ = x + z, z ~ N(0, sigma^2 I), clipped to the data range.
- masking:    a fixed fraction nu of the components of each example, chosen at random, set to 0.
- saltpepper: a fixed fraction nu of the components of each example, chosen at random, each set
              to the range's min or max with probability 1/2.

"A fraction nu" means exactly round(nu * D) components per example (D = components per example),
not a Bernoulli(nu) draw, so the amount of corruption is the same for every image.
All functions are batched, stay on the input's device and are reproducible with a generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aecore.errors import ConfigError

KINDS = ("gaussian", "masking", "saltpepper")
MAX_SIGMA = 10.0


def _chosen_mask(x: Tensor, nu: float, generator: torch.Generator | None) -> Tensor:
    """Boolean mask, same shape as x, with exactly round(nu * D) True entries per example."""
    batch = x.shape[0]
    flat_dim = x[0].numel() if batch else 0
    count = int(round(nu * flat_dim))
    mask = torch.zeros(batch, flat_dim, dtype=torch.bool, device=x.device)
    if count and batch:
        scores = torch.rand(batch, flat_dim, generator=generator, device=x.device)
        chosen = scores.topk(count, dim=1).indices
        mask.scatter_(1, chosen, True)
    return mask.view_as(x)


def gaussian(x: Tensor, sigma: float, *, generator: torch.Generator | None = None,
             low: float = 0.0, high: float = 1.0) -> Tensor:
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp_(low, high)


def masking(x: Tensor, nu: float, *, generator: torch.Generator | None = None) -> Tensor:
    return x.masked_fill(_chosen_mask(x, nu, generator), 0.0)


def salt_and_pepper(x: Tensor, nu: float, *, generator: torch.Generator | None = None,
                    low: float = 0.0, high: float = 1.0) -> Tensor:
    mask = _chosen_mask(x, nu, generator)
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    values = torch.where(salt, torch.full_like(x, high), torch.full_like(x, low))
    return torch.where(mask, values, x)


@dataclass(frozen=True)
class Noise:
    """A parsed noise spec such as 'gaussian:0.5'; call it on a batch to corrupt it."""

    kind: str
    level: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown noise {self.kind!r}; use one of {', '.join(KINDS)}")
        level = self.level
        if not isinstance(level, (int, float)) or isinstance(level, bool) or level != level:
            raise ConfigError(f"noise level must be a number, got {level!r}")
        if self.kind == "gaussian" and not 0.0 <= level <= MAX_SIGMA:
            raise ConfigError(f"gaussian sigma must be in [0, {MAX_SIGMA:g}], got {level:g}")
        if self.kind != "gaussian" and not 0.0 <= level <= 1.0:
            raise ConfigError(f"{self.kind} fraction nu must be in [0, 1], got {level:g}")

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if self.kind == "gaussian":
            return gaussian(x, self.level, generator=generator)
        if self.kind == "masking":
            return masking(x, self.level, generator=generator)
        return salt_and_pepper(x, self.level, generator=generator)

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"


def parse_noise(spec: str | None) -> Noise | None:
    """'gaussian:0.5' | 'masking:0.3' | 'saltpepper:0.2' | '' / 'none' / None -> Noise or None."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    kind, sep, level_text = spec.strip().partition(":")
    kind = kind.lower().replace("-", "").replace("_", "")
    kind = {"saltandpepper": "saltpepper", "sp": "saltpepper", "mask": "masking", "gauss": "gaussian"}.get(kind, kind)
    if not sep:
        raise ConfigError(f"noise {spec!r} needs a level, e.g. gaussian:0.5, masking:0.5 or saltpepper:0.2")
    try:
        level = float(level_text)
    except ValueError:
        raise ConfigError(f"noise level in {spec!r} is not a number") from None
    return Noise(kind, level)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
