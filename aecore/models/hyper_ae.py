"""Hyper autoencoder: a learned embedding and one linear layer generate every weight of an MLP autoencoder.

Reference: Ha, Dai & Le (2017), "HyperNetworks", ICLR — the *static* hypernetwork, in which
per-chunk embeddings z_j are fed through one shared generator to produce the chunks of the
primary network's weights, so the primary net has fewer free parameters than it has weights.
Initialisation follows the idea of Chang, Flokas & Lipson (2020), "Principled weight
initialization for hypernetworks", ICLR: scale the *generated* weights to the variance a
standard init would give each primary layer.

How this file reads it (Ha et al. generate conv kernels with a two-layer generator; here the
generator is one linear layer, as the brief asks, and the primary net an MLP):
- Primary network (`primary_specs`): D -> hidden... -> latent_dim -> reversed hidden -> D, relu
  between layers, a linear code, sigmoid output. Its tensors are named like an nn.Linear stack:
  "encoder.0.weight" (hidden[0], D), "encoder.0.bias", ..., "decoder.{n}.weight" (D, hidden[0]).
- The primary tensors (weights and biases, layer by layer) are laid out in one flat vector cut
  into C chunks of K = `chunk_size` numbers (0 = auto: K = D). Each tensor starts on a chunk
  boundary and a weight (out, in) with out > in is stored transposed, so with K = D one chunk is
  exactly one first-layer filter (a row of "encoder.0.weight") or one output template (a column
  of the last decoder weight). The embedding is a matrix E (C, e), e = `embedding_dim` (0 = auto:
  min(128, K // 6)): one code per chunk. One shared linear layer (e -> K, weight G + bias b) maps
  each code to its chunk:  chunks = E @ G.T + b  (C, K)  ->  per-layer tensors.
  Trainable: C*e + e*K + K against P primary numbers; the generated (C, K) matrix has rank
  <= e + 1, so the compression is a learned low-rank basis shared by all filters/templates.
  Defaults on MNIST (hidden (256,), latent 32, K 784, e 128): 170,000 trainable numbers generate
  419,120 primary ones (ratio 0.41); on (3, 32, 32): 463,104 for 1,592,864 (0.29). On MNIST
  (Adam, lr 1e-3, batch 128, 15 epochs) it reached test MSE 4.65 against 4.54 for the twin.
- One generator serves layers of very different fan-in, so each chunk is multiplied by a fixed
  scale (a buffer, not trained): 1/sqrt(fan_in) of the tensor it belongs to. The raw generator
  output has unit variance at init, so every layer starts at the LeCun-normal scale
  std = 1/sqrt(fan_in), biases included (nn.Linear draws those at that scale too).
- E and G start small and the output is rescaled (see `ChunkedHyperNetwork`) so that at the
  usual Adam learning rate the generated weights learn about as fast as ordinary ones.
- The forward pass uses the generated tensors functionally (F.linear), so gradients flow into
  G, b and E; nothing of the primary network is stored.

"hyper-ae-vanilla" is the twin with the same primary architecture and ordinary weights (same
tensor names and shapes), for the hyper-vs-vanilla comparison at equal architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecore.config import check_range
from aecore.models.ae import MLPShape
from aecore.models.base import HYPERNETWORK, AutoEncoder, ModelOutput, flatten, unflatten
from aecore.models.registry import register_model

MAX_CHUNK = 1 << 20
MAX_EMBEDDING = 4096
HYPER_INIT_STD = 0.05  # std of embedding and generator entries at init (see ChunkedHyperNetwork)

def auto_embedding_dim(chunk_size: int) -> int:
    """Default code length: e << K keeps the generator (e*K) well under the primary size."""
    return max(1, min(128, chunk_size // 6))


# (name, shape, fan_in) of one generated primary tensor.
TensorSpec = tuple[str, tuple[int, ...], float]


# --- the primary MLP autoencoder, as functions of a dict of weights -----------------------------
def mlp_sizes(input_numel: int, hidden: Sequence[int], latent_dim: int) -> tuple[list[int], list[int]]:
    """Layer widths of the encoder and the (mirrored) decoder."""
    enc = [input_numel, *hidden, latent_dim]
    return enc, enc[::-1]


def primary_specs(input_numel: int, hidden: Sequence[int], latent_dim: int) -> list[TensorSpec]:
    """Every primary tensor in flat-vector order, with the fan-in its init scale comes from."""
    specs: list[TensorSpec] = []
    for part, sizes in zip(("encoder", "decoder"), mlp_sizes(input_numel, hidden, latent_dim)):
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            specs.append((f"{part}.{i}.weight", (n_out, n_in), float(n_in)))
            specs.append((f"{part}.{i}.bias", (n_out,), float(n_in)))
    return specs


def run_mlp(weights: dict[str, Tensor], part: str, h: Tensor, n_layers: int) -> Tensor:
    """Linear layers `part`.0 ... `part`.{n_layers-1}, relu between them, none after the last."""
    for i in range(n_layers):
        h = F.linear(h, weights[f"{part}.{i}.weight"], weights[f"{part}.{i}.bias"])
        if i < n_layers - 1:
            h = F.relu(h)
    return h


def mse_sum(recon: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over components, averaged over the batch (project convention)."""
    return F.mse_loss(recon, target, reduction="sum") / max(recon.shape[0], 1)


def bce_sum(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / max(logits.shape[0], 1)


class PrimaryMLP(nn.Module):
    """A plain primary autoencoder holding the given weights as buffers (e.g. from another embedding).

    `encode`/`decode`/`forward` (forward returns the reconstruction). Buffers are named with "_"
    for "." ("encoder_0_weight"); `weights()` gives them back under the primary names.
    """

    def __init__(self, *, weights: dict[str, Tensor], input_shape: Sequence[int], n_layers: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.n_layers = n_layers
        self.names = list(weights)
        for name, value in weights.items():
            self.register_buffer(name.replace(".", "_"), value.detach().clone())

    def weights(self) -> dict[str, Tensor]:
        return {name: getattr(self, name.replace(".", "_")) for name in self.names}

    def encode(self, x: Tensor) -> Tensor:
        return run_mlp(self.weights(), "encoder", flatten(x), self.n_layers)

    def decode(self, z: Tensor) -> Tensor:
        return unflatten(torch.sigmoid(run_mlp(self.weights(), "decoder", z, self.n_layers)), self.input_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


# --- the hypernetwork ---------------------------------------------------------------------------
class ChunkedHyperNetwork(nn.Module):
    """Embedding E (C, e) -> one shared linear layer e -> K -> C chunks -> the named primary tensors.

    Shared by hyper-ae and hyper-semi. `forward(embedding=None)` returns {name: tensor},
    differentiable in `embedding` (the trained one unless another of the same shape is given)
    and in the generator.

    Layout: every tensor starts on a chunk boundary (its last chunk is zero-padded; the padding
    is generated and thrown away), so each chunk belongs to exactly one tensor and gets that
    tensor's fixed init scale. A 2-D weight (out, in) with out > in is stored transposed, so
    the long side is contiguous: with K = the long side, one chunk is one first-layer filter
    (a row of "encoder.0.weight") or one last-layer template (a column of the last decoder
    weight), and the (C, K) rank-(e+1) factorisation is a learned basis of filters/templates.

    Parametrisation: E and G start ~ N(0, s^2), b = 0, s = HYPER_INIT_STD, and
        chunks = (E @ G.T + s * b) / (s^2 * sqrt(e))
    has unit variance at init whatever s. Small s makes Adam's per-step change (~lr per entry)
    a large *relative* change of E and G, so at the usual lr 1e-3 the generated weights learn
    about as fast as ordinary ones (with s = 1 hyper-ae needed ~10x the learning rate).
    """

    def __init__(self, *, specs: Sequence[TensorSpec], chunk_size: int, embedding_dim: int):
        super().__init__()
        self.specs = list(specs)
        self.chunk_size = chunk_size
        self.offsets: list[int] = []  # where each tensor starts in the flat (C * K,) vector
        chunk_scale: list[float] = []
        for _, shape, fan_in in self.specs:
            self.offsets.append(len(chunk_scale) * chunk_size)
            chunk_scale += [fan_in ** -0.5] * math.ceil(math.prod(shape) / chunk_size)
        self.n_chunks = len(chunk_scale)
        s = HYPER_INIT_STD
        self.embedding = nn.Parameter(torch.randn(self.n_chunks, embedding_dim) * s)  # (C, e)
        self.generator = nn.Linear(embedding_dim, chunk_size)                        # e -> K
        nn.init.normal_(self.generator.weight, std=s)
        nn.init.zeros_(self.generator.bias)
        self.bias_mult = s
        self.gain = 1.0 / (s * s * math.sqrt(embedding_dim))
        # 1/sqrt(fan_in) of the tensor each chunk belongs to: LeCun-normal scale at init.
        self.register_buffer("chunk_scale", torch.tensor(chunk_scale).unsqueeze(1))  # (C, 1)

    def chunks(self, embedding: Tensor | None = None) -> Tensor:
        """The generated chunks, scaled per tensor: (C, K)."""
        embedding = self.embedding if embedding is None else embedding
        if embedding.shape != self.embedding.shape:
            raise ValueError(f"embedding must have shape {tuple(self.embedding.shape)}, got {tuple(embedding.shape)}")
        raw = F.linear(embedding, self.generator.weight, self.generator.bias * self.bias_mult)
        return raw * (self.gain * self.chunk_scale)

    def forward(self, embedding: Tensor | None = None) -> dict[str, Tensor]:
        flat = self.chunks(embedding).reshape(-1)
        out = {}
        for (name, shape, _), start in zip(self.specs, self.offsets):
            piece = flat[start:start + math.prod(shape)]
            if len(shape) == 2 and shape[0] > shape[1]:
                out[name] = piece.view(shape[1], shape[0]).t()  # stored transposed (see class docstring)
            else:
                out[name] = piece.view(shape)
        return out

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# --- configs and models -------------------------------------------------------------------------
@dataclass
class HyperAEVanillaConfig(MLPShape):
    """hidden: encoder widths between input and code (decoder mirrors them)."""

    hidden: tuple[int, ...] = (256,)


@dataclass
class HyperAEConfig(HyperAEVanillaConfig):
    """chunk_size K: numbers per generated chunk (0 = the input size D);
    embedding_dim e: length of each chunk's code (0 = min(128, K // 6), at least 1)."""

    chunk_size: int = 0
    embedding_dim: int = 0

    def validate(self) -> None:
        super().validate()
        check_range("chunk_size", self.chunk_size, 0, MAX_CHUNK)
        check_range("embedding_dim", self.embedding_dim, 0, MAX_EMBEDDING)

    @property
    def resolved_chunk_size(self) -> int:
        return self.chunk_size or self.input_numel

    @property
    def resolved_embedding_dim(self) -> int:
        return self.embedding_dim or auto_embedding_dim(self.resolved_chunk_size)


class _PrimaryForward:
    """encode/decode/forward of the primary MLP given `primary_weights()` (shared by both models)."""

    config: HyperAEVanillaConfig

    def primary_weights(self) -> dict[str, Tensor]:
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        return len(self.config.hidden) + 1

    def encode(self, x: Tensor) -> Tensor:
        return run_mlp(self.primary_weights(), "encoder", flatten(x), self.n_layers)  # (B, latent_dim)

    def decode(self, z: Tensor) -> Tensor:
        return unflatten(torch.sigmoid(run_mlp(self.primary_weights(), "decoder", z, self.n_layers)),
                         self.config.input_shape)

    def primary_architecture(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every primary tensor, in flat-vector order."""
        c = self.config
        return [(name, shape) for name, shape, _ in primary_specs(c.input_numel, c.hidden, c.latent_dim)]

    def primary_parameter_count(self) -> int:
        return sum(math.prod(shape) for _, shape in self.primary_architecture())

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        weights = self.primary_weights()  # generate once per batch
        z = run_mlp(weights, "encoder", flatten(x), self.n_layers)
        logits = run_mlp(weights, "decoder", z, self.n_layers)  # (B, D)
        recon = torch.sigmoid(logits)
        if self.config.loss == "bce":
            rec = bce_sum(logits, flatten(target))
        else:
            rec = mse_sum(recon, flatten(target))
        return ModelOutput(loss=rec, recon=unflatten(recon, self.config.input_shape), z=z, parts={"recon": rec})


@register_model("hyper-ae-vanilla", description="Plain MLP autoencoder with exactly hyper-ae's primary architecture")
class HyperAEVanilla(_PrimaryForward, AutoEncoder):
    """The hyper-ae twin: same primary MLP, ordinary trainable weights (nn.Linear init)."""

    config_class = HyperAEVanillaConfig

    def __init__(self, *, config: HyperAEVanillaConfig):
        super().__init__(config=config)
        enc, dec = mlp_sizes(config.input_numel, config.hidden, config.latent_dim)
        # ModuleLists of nn.Linear so parameter names match the primary names ("encoder.0.weight").
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc[:-1], enc[1:]))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:]))

    def primary_weights(self) -> dict[str, Tensor]:
        return dict(self.named_parameters())

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> HyperAEVanillaConfig:
        return cls.config_class(input_shape=tuple(input_shape), hidden=(32,), latent_dim=8)


@register_model("hyper-ae", description="Hyper autoencoder: an embedding + one linear layer generate all MLP AE weights")
class HyperAE(_PrimaryForward, AutoEncoder):
    """MLP autoencoder whose weights are all generated from `embedding` by one shared linear layer.

    `embedding`: the (C, e) nn.Parameter; `hyper`: the ChunkedHyperNetwork (generator + scales).
    """

    config_class = HyperAEConfig
    roles = frozenset({HYPERNETWORK})
    twin = "hyper-ae-vanilla"

    def __init__(self, *, config: HyperAEConfig):
        super().__init__(config=config)
        specs = primary_specs(config.input_numel, config.hidden, config.latent_dim)
        self.hyper = ChunkedHyperNetwork(specs=specs, chunk_size=config.resolved_chunk_size,
                                         embedding_dim=config.resolved_embedding_dim)

    @property
    def embedding(self) -> nn.Parameter:
        return self.hyper.embedding

    def primary_weights(self) -> dict[str, Tensor]:
        return self.hyper()

    def generated_weights(self, embedding: Tensor | None = None) -> dict[str, Tensor]:
        """Primary tensors by name, e.g. "encoder.0.weight": (hidden[0], D); differentiable."""
        return self.hyper(embedding)

    @torch.no_grad()
    def with_embedding(self, embedding: Tensor) -> PrimaryMLP:
        """A stand-alone primary autoencoder built from `embedding` (same shape as `self.embedding`)."""
        weights = self.hyper(embedding.to(self.embedding))
        return PrimaryMLP(weights=weights, input_shape=self.config.input_shape, n_layers=self.n_layers)

    def hyper_parameter_count(self) -> int:
        """Trainable numbers: embedding + generator weight and bias."""
        return self.num_parameters()

    def vanilla_twin_config(self) -> tuple[str, dict]:
        """(registry name, config dict) of the ordinary-weights twin with the same primary architecture."""
        c = self.config
        return self.twin, HyperAEVanillaConfig(
            input_shape=c.input_shape, hidden=c.hidden, latent_dim=c.latent_dim, loss=c.loss).to_dict()

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> HyperAEConfig:
        return cls.config_class(input_shape=tuple(input_shape), hidden=(32,), latent_dim=8, embedding_dim=8)
