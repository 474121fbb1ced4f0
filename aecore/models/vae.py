"""Variational autoencoders: "vae" (MLP) and "conv-vae" (conv), sharing one base class.

Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014. Gaussian encoder
q(z|x) = N(mu, diag sigma^2) (the network outputs mu and log sigma^2), reparameterised sample
z = mu + sigma * eps, prior N(0, I), closed-form KL (their appendix B):
    KL(q || p) = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
Loss per example = -log p(x|z) + beta * KL (beta = 1 is the negative ELBO; beta != 1 is
Higgins et al. 2017's beta-VAE), averaged over the batch; loss parts "recon" and "kl".
Importance-sampled NLL follows Burda, Grosse & Salakhutdinov, "Importance Weighted
Autoencoders", ICLR 2016: log p(x) ~ logsumexp_i [log p(x, z_i) - log q(z_i|x)] - log k.

Decoders (`decoder`):
- "bernoulli": the network outputs logits; -log p(x|z) = BCE-with-logits summed over components;
  the reconstruction shown is sigmoid(logits). Strictly a likelihood only for binary x: ELBO and
  NLL are in nats for binary data; feeding grey levels (e.g. plain [0, 1] MNIST) gives the usual
  cross-entropy "pseudo-likelihood". Binarising (statically or dynamically) is the caller's choice.
- "gaussian": mean = sigmoid(network output) (keeps reconstructions in [0, 1]); variance either
  "fixed" (sigma = decoder_sigma for every component) or "learned" (one free log-variance per
  component, not per example -- per-example variances let MNIST's constant border pixels drive
  the likelihood to infinity; it is still clamped at sigma >= 1e-3). -log p(x|z) is the full
  Gaussian density, constants included, so values are continuous-density nats (may be negative).

ModelOutput.z is mu (a deterministic code for latent maps); the reparameterised sample used for
the loss is extras["z_sample"]; extras also carry "mu", "logvar" and "logits" (raw decoder
output). `forward` always samples, also in eval mode; `encode` returns mu and `reconstruct`
decodes mu, so both are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecore.config import ModelConfig, check_range, check_widths
from aecore.errors import ConfigError
from aecore.models.ae import Activation
from aecore.models.base import (GENERATIVE, AutoEncoder, ModelOutput, RegularizerWeight, flatten, image_shape_ok,
                                unflatten)
from aecore.models.layers import ConvDecoder, ConvEncoder, default_conv_channels, mirrored_mlps
from aecore.models.registry import register_model

LOG_2PI = math.log(2 * math.pi)
MIN_DECODER_SIGMA = 1e-3
# Encoder log-variances are clamped only to keep exp() finite after a bad optimiser step.
_LOGVAR_RANGE = (-30.0, 20.0)


@dataclass
class VAEConfigBase(ModelConfig):
    """Fields both VAEs share."""

    latent_dim: int = 16
    decoder: Literal["bernoulli", "gaussian"] = "bernoulli"
    decoder_var: Literal["fixed", "learned"] = "fixed"   # gaussian only
    decoder_sigma: float = 0.1      # gaussian: the fixed sigma, or the learned one's starting value
    beta: float = 1.0               # loss = recon + beta * KL

    def validate(self) -> None:
        super().validate()
        check_range("beta", self.beta, 0.0, 1e4)
        check_range("decoder_sigma", self.decoder_sigma, MIN_DECODER_SIGMA, 10.0)


@dataclass
class VAEConfig(VAEConfigBase):
    """MLP VAE: encoder D -> hidden... -> (mu, log sigma^2); decoder mirrors it."""

    hidden: tuple[int, ...] = (512,)
    activation: Activation = "relu"

    def validate(self) -> None:
        super().validate()
        check_widths(self.hidden)


@dataclass
class ConvVAEConfig(VAEConfigBase):
    """Conv VAE: stride-2 conv encoder (channels per layer) and its transposed mirror."""

    channels: tuple[int, ...] = ()  # () = default_conv_channels(input_shape)
    activation: Literal["relu", "elu", "gelu", "leaky_relu", "tanh"] = "relu"

    def validate(self) -> None:
        super().validate()
        check_range("number of channels entries", len(self.channels), 0, 6)
        for ch in self.channels:
            check_range("channels entries", ch, 1, 1024)


class VAEBase(AutoEncoder):
    """Everything VAE-specific; subclasses only build `_encoder_out` and `_decoder_out` networks."""

    config_class: ClassVar = VAEConfigBase
    roles = frozenset({GENERATIVE})
    regularizer_weight = RegularizerWeight(field="beta", about="β, the weight of the KL term (β = 1: the ordinary "
                                                               "VAE; > 1: β-VAE)")

    def __init__(self, *, config: VAEConfigBase):
        super().__init__(config=config)
        if config.decoder == "gaussian" and config.decoder_var == "learned":
            start = 2 * math.log(config.decoder_sigma)
            self.decoder_logvar = nn.Parameter(torch.full(tuple(config.input_shape), start))
        else:
            self.decoder_logvar = None

    # --- the two networks (subclasses) ----------------------------------------------------
    def _encoder_out(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, 2 * latent_dim)."""
        raise NotImplementedError

    def _decoder_out(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, *input_shape), raw: logits or pre-sigmoid Gaussian mean."""
        raise NotImplementedError

    # --- distributions ---------------------------------------------------------------------
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x) parameters: mu, log sigma^2, each (B, latent_dim)."""
        mu, logvar = self._encoder_out(x).chunk(2, dim=1)
        return mu, logvar.clamp(*_LOGVAR_RANGE)

    def _dec_logvar(self, like: Tensor) -> Tensor:
        if self.decoder_logvar is not None:
            return self.decoder_logvar.clamp(min=2 * math.log(MIN_DECODER_SIGMA))
        return torch.full_like(like[:1], 2 * math.log(self.config.decoder_sigma))

    def log_px_given_z(self, raw: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) per example (B,), from the raw decoder output for z."""
        if self.config.decoder == "bernoulli":
            return -F.binary_cross_entropy_with_logits(raw, x, reduction="none").flatten(1).sum(1)
        mean, logvar = torch.sigmoid(raw), self._dec_logvar(raw)
        return -0.5 * (LOG_2PI + logvar + (x - mean).pow(2) * torch.exp(-logvar)).flatten(1).sum(1)

    @staticmethod
    def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) per example (B,), closed form."""
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)

    # --- AutoEncoder API ------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Decoder mean: sigmoid of the raw output for both decoders, shape (B, *input_shape)."""
        return torch.sigmoid(self._decoder_out(z))

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        mu, logvar = self.posterior(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)   # reparameterisation
        raw = self._decoder_out(z)
        rec = -self.log_px_given_z(raw, target).mean()
        kl = self.kl_divergence(mu, logvar).mean()
        return ModelOutput(loss=rec + self.config.beta * kl, recon=torch.sigmoid(raw), z=mu,
                           parts={"recon": rec, "kl": kl},
                           extras={"mu": mu, "logvar": logvar, "z_sample": z, "logits": raw})

    @torch.no_grad()
    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        mu, logvar = self.posterior(x)
        return {"elbo": self.elbo(x), "kl": self.kl_divergence(mu, logvar)}

    # --- likelihood bounds ----------------------------------------------------------------
    def elbo(self, x: Tensor, k: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Per-example ELBO in nats (B,): E_q[log p(x|z)] - KL with the exact KL (beta ignored).

        The expectation is the mean over `k` reparameterised samples: an unbiased estimate whose
        noise falls with k (this is not the tighter k-sample IWAE bound; see `nll`). Differentiable.
        """
        _check_positive("k", k)
        mu, logvar = self.posterior(x)
        std = torch.exp(0.5 * logvar)
        log_px = torch.zeros(x.shape[0], device=x.device, dtype=mu.dtype)
        for _ in range(k):
            z = mu + std * _randn(mu.shape, like=mu, generator=generator)
            log_px = log_px + self.log_px_given_z(self._decoder_out(z), x)
        return log_px / k - self.kl_divergence(mu, logvar)

    @torch.no_grad()
    def nll(self, x: Tensor, k: int = 1000, *, batch_size: int = 4096,
            generator: torch.Generator | None = None) -> Tensor:
        """Importance-sampled -log p(x) per example (B,), in nats, with q(z|x) as proposal.

        -log (1/k sum_i p(x|z_i) p(z_i) / q(z_i|x)), computed with logsumexp. Decodes at most
        `batch_size` (example, sample) pairs per pass, so memory does not grow with k.
        In expectation it is <= -ELBO and tightens as k grows (Burda et al. 2016).
        """
        _check_positive("k", k)
        _check_positive("batch_size", batch_size)
        b = x.shape[0]
        mu, logvar = self.posterior(x)                          # (B, K)
        std = torch.exp(0.5 * logvar)
        per_pass = max(1, batch_size // max(b, 1))              # samples per example per pass
        log_w = []
        for start in range(0, k, per_pass):
            s = min(per_pass, k - start)
            eps = _randn((s, *mu.shape), like=mu, generator=generator)   # (s, B, K)
            z = mu + std * eps
            raw = self._decoder_out(z.reshape(s * b, -1))
            x_rep = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
            log_px = self.log_px_given_z(raw, x_rep).view(s, b)
            log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(-1)                       # (s, B)
            log_qz = -0.5 * (eps.pow(2) + LOG_2PI + logvar).sum(-1)            # (s, B)
            log_w.append(log_px + log_pz - log_qz)
        log_w = torch.cat(log_w, 0)                                            # (k, B)
        return -(torch.logsumexp(log_w, 0) - math.log(k))

    # --- views: sampling, interpolation, traversal ------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n decoder means for z ~ N(0, I): (n, *input_shape). A generator must be on the model's device."""
        _check_positive("n", n)
        ref = next(self.parameters())
        return self.decode(_randn((n, self.config.latent_dim), like=ref, generator=generator))

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int, mode: str = "lerp") -> Tensor:
        """Decodings along a path between the posterior means of two examples: (steps, *input_shape).

        x_a, x_b: one example each, shaped input_shape or (1, *input_shape). "lerp" is a straight
        line; "slerp" follows the great circle (White 2016), which keeps norms typical of the prior.
        """
        if mode not in ("lerp", "slerp"):
            raise ConfigError(f"mode = {mode!r} is not one of 'lerp', 'slerp'")
        check_range("steps", steps, 2, 10_000)
        a = self.encode(self._one(x_a))[0]
        b = self.encode(self._one(x_b))[0]
        t = torch.linspace(0, 1, steps, device=a.device, dtype=a.dtype).unsqueeze(1)  # (steps, 1)
        return self.decode(slerp(a, b, t) if mode == "slerp" else torch.lerp(a, b, t))

    @torch.no_grad()
    def traverse(self, x: Tensor, dim: int, values: Sequence[float] | Tensor) -> Tensor:
        """Decode x's posterior mean with coordinate `dim` set to each of `values`: (len(values), *input_shape)."""
        check_range("dim", dim, 0, self.config.latent_dim - 1)
        mu = self.encode(self._one(x))                                   # (1, K)
        vals = torch.as_tensor(values, dtype=mu.dtype, device=mu.device).flatten()
        z = mu.repeat(len(vals), 1)
        z[:, dim] = vals
        return self.decode(z)

    def _one(self, x: Tensor) -> Tensor:
        shape = tuple(self.config.input_shape)
        if tuple(x.shape) == shape:
            return x.unsqueeze(0)
        if tuple(x.shape) == (1, *shape):
            return x
        raise ConfigError(f"expected one example of shape {list(shape)}, got {list(x.shape)}")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between vectors a, b (K,) at t (T, 1) -> (T, K); lerp when (anti)parallel or zero."""
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return torch.lerp(a, b, t)
    omega = torch.acos((a @ b / (na * nb)).clamp(-1, 1))
    so = torch.sin(omega)
    if so < 1e-6:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so


def _randn(shape: Sequence[int], *, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(tuple(shape), generator=generator, device=like.device, dtype=like.dtype)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} = {value!r} must be a positive integer")


@register_model("vae", description="Variational autoencoder with MLP encoder/decoder (Kingma & Welling 2014)")
class VAE(VAEBase):
    """MLP variational autoencoder."""

    config_class: ClassVar = VAEConfig

    def __init__(self, *, config: VAEConfig):
        super().__init__(config=config)
        # The MLP family's layers; the encoder's outputs are mu and log sigma^2, so it is twice as wide.
        self.encoder, self.decoder = mirrored_mlps(
            input_dim=config.input_numel, hidden=config.hidden, latent_dim=config.latent_dim,
            activation=config.activation, encoder_outputs=2 * config.latent_dim)

    def _encoder_out(self, x: Tensor) -> Tensor:
        return self.encoder(flatten(x))

    def _decoder_out(self, z: Tensor) -> Tensor:
        return unflatten(self.decoder(z), self.config.input_shape)

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> VAEConfig:
        return VAEConfig(input_shape=tuple(input_shape), latent_dim=4, hidden=(32,))


@register_model("conv-vae", description="Variational autoencoder with conv encoder/decoder, images >= 8x8")
class ConvVAE(VAEBase):
    """Convolutional variational autoencoder."""

    config_class: ClassVar = ConvVAEConfig

    def __init__(self, *, config: ConvVAEConfig):
        super().__init__(config=config)
        shape, k = tuple(config.input_shape), config.latent_dim
        channels = config.channels or default_conv_channels(shape)
        self.encoder = ConvEncoder(input_shape=shape, channels=channels, out_dim=2 * k, act=config.activation)
        self.decoder = ConvDecoder(encoder=self.encoder, out_channels=shape[0], in_dim=k, act=config.activation,
                                   final_act="identity")

    @classmethod
    def supports(cls, input_shape: tuple[int, ...]) -> bool:
        return image_shape_ok(tuple(input_shape), min_side=8)

    def _encoder_out(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def _decoder_out(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> ConvVAEConfig:
        return ConvVAEConfig(input_shape=tuple(input_shape), latent_dim=4, channels=(8, 16))
