"""Stacked autoencoder with tied weights and greedy layer-wise pretraining.

References: Bengio, Lamblin, Popovici & Larochelle (2007), "Greedy layer-wise training of deep
networks", NIPS; Vincent, Larochelle, Lajoie, Bengio & Manzagol (2010), "Stacked denoising
autoencoders", JMLR 11 (section 3.5 and the tied-weight choice W' = W^T).

Architecture, sizes [D, *hidden, latent_dim] (same meaning of `hidden` as in "ae"):
    encoder  h_k = act(W_k h_{k-1} + b_k),                k = 1..L, h_0 = x, z = h_L
    decoder  g_{k-1} = act'(W_k^T g_k + c_k),             k = L..1, g_L = z, x_hat = g_0
act' is the sigmoid for the image (k = 1) and `activation` above it. The decoder owns only its
biases c_k (`decoder_biases`); its weights are the encoder's, transposed at run time (F.linear with
W.t()), so W_{2L+1-k} = W_k^T holds exactly and there are no decoder weight parameters.

Greedy training through the base-class stage hooks (stages "layer1" .. "layerL", then "finetune"):
- In stage "layer<k>" only W_k, b_k and c_k train. The loss is that of the one-hidden-layer tied AE
  on layer k's input, h_{k-1} of the (possibly corrupted) input x, computed through the frozen
  layers below without grad. For k = 1 the target is the clean image, so denoising works as in
  Vincent et al.; for k > 1 the target is h_{k-1} of the clean target, which equals the layer's own
  input when there is no corruption (our reading of "denoise at every level" for image-space noise).
- In "finetune" (config `finetune`, default on) all parameters train on the full reconstruction.
- Outside a stage (before the first begin_stage, after each end_stage) forward trains the whole
  stack end to end, so a trainer that ignores stages still works.
`end_stage` snapshots the first-layer filters W_1 (the first SNAPSHOT_UNITS units: (k, D)) into the
persistent buffer `stage_filters` (n_stages, k, D) and sets `stages_done`, so the app can play the
stages back after save/load; a few dozen filters show the play-back, all of them would be most of
a saved model's size. The per-stage loss history is recorded by the trainer, not here.
Optimizer note: frozen parameters get no gradient (grad None), so Adam leaves them untouched as
long as the trainer zeroes grads with set_to_none=True (PyTorch's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecore.config import ModelConfig, check_widths
from aecore.errors import ConfigError
from aecore.models.ae import reconstruction_loss
from aecore.models.base import GREEDY_STAGES, AutoEncoder, ModelOutput, flatten, unflatten
from aecore.models.layers import activation, init_weights_xavier, mlp
from aecore.models.registry import register_model


@dataclass
class StackedAEConfig(ModelConfig):
    """hidden: encoder widths before the code layer (latent_dim is the last layer), as in "ae"."""

    hidden: tuple[int, ...] = (256, 64)
    latent_dim: int = 32
    activation: Literal["sigmoid", "tanh", "relu"] = "sigmoid"
    loss: Literal["mse", "bce"] = "mse"
    finetune: bool = True

    def validate(self) -> None:
        super().validate()
        check_widths(self.hidden)
        if self.loss == "bce" and self.activation != "sigmoid":
            raise ConfigError(f"loss = 'bce' needs activation = 'sigmoid' (got {self.activation!r}): "
                              "upper layers reconstruct their input codes, which must lie in [0, 1]")


SNAPSHOT_UNITS = 64   # first-layer units whose filters each stage's snapshot keeps


@register_model("stacked-ae", description="Stacked tied-weight autoencoder with greedy layer-wise pretraining, then fine-tuning")
class StackedAE(AutoEncoder):
    """Tied-weight deep AE. `encoder` is an nn.Sequential (encoder[0].weight = first-layer filters)."""

    config_class = StackedAEConfig
    roles = frozenset({GREEDY_STAGES})

    def code_activation(self) -> str:
        return self.config.activation                  # every layer's, the code's included

    def tied_weight(self) -> Tensor:
        return self.layers[0].weight                   # W_1 (h_1, D)

    def __init__(self, *, config: StackedAEConfig):
        super().__init__(config=config)
        sizes = [config.input_numel, *config.hidden, config.latent_dim]
        self.encoder = mlp(sizes, act=config.activation, final_act=config.activation)
        self.decoder_biases = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes[:-1]])  # c_k, (n_{k-1},)
        self.act = activation(config.activation)
        init_weights_xavier(self.encoder)  # Glorot & Bengio (2010): keeps sigmoid stacks out of saturation
        kept = min(sizes[1], SNAPSHOT_UNITS)
        self.register_buffer("stage_filters", torch.zeros(len(self.stages()), kept, sizes[0]))  # (stages, k, D)
        self.register_buffer("stages_done", torch.zeros((), dtype=torch.long))
        self._stage_layer: int | None = None  # 0-based layer trained greedily; None = whole stack

    # --- structure ------------------------------------------------------------------------
    @property
    def layers(self) -> list[nn.Linear]:
        return [m for m in self.encoder if isinstance(m, nn.Linear)]

    def _codes(self, x_flat: Tensor) -> list[Tensor]:
        """[h_0 = x, h_1, ..., h_L]."""
        hs = [x_flat]
        for layer in self.layers:
            hs.append(self.act(layer(hs[-1])))
        return hs

    def _layer_pre(self, h: Tensor, k: int) -> Tensor:
        """Tied decoder of layer k (0-based): pre-activation reconstruction of h_k's input."""
        return F.linear(h, self.layers[k].weight.t(), self.decoder_biases[k])

    def _layer_out(self, pre: Tensor, k: int) -> Tensor:
        return torch.sigmoid(pre) if k == 0 else self.act(pre)

    def _layer_loss(self, pre: Tensor, target: Tensor, k: int) -> Tensor:
        if self.config.loss == "bce":  # validated: sigmoid at every level
            return reconstruction_loss(pre, target, loss="bce")
        out = self._layer_out(pre, k)
        return F.mse_loss(out, target, reduction="sum") / max(pre.shape[0], 1)

    def decode_logits(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, D) pre-sigmoid image."""
        h = z
        for k in reversed(range(1, len(self.layers))):
            h = self._layer_out(self._layer_pre(h, k), k)
        return self._layer_pre(h, 0)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(flatten(x))  # (B, latent_dim)

    def decode(self, z: Tensor) -> Tensor:
        return unflatten(torch.sigmoid(self.decode_logits(z)), self.config.input_shape)

    # --- training -------------------------------------------------------------------------
    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        clean = target is None or target is x
        target = x if target is None else target
        x_flat, t_flat = flatten(x), flatten(target)
        k = self._stage_layer
        if k is None:  # whole stack, end to end
            z = self.encoder(x_flat)
            pre = self.decode_logits(z)
            rec = self._layer_loss(pre, t_flat, 0)
            recon = unflatten(torch.sigmoid(pre), self.config.input_shape)
            return ModelOutput(loss=rec, recon=recon, z=z, parts={"recon": rec})

        with torch.no_grad():  # frozen layers below k (and the full stack, for display)
            hs = self._codes(x_flat)
            goal = t_flat if k == 0 else (hs[k] if clean else self._codes(t_flat)[k])
            z = hs[-1]
            full_pre = self.decode_logits(z)
            recon = unflatten(torch.sigmoid(full_pre), self.config.input_shape)
            image_loss = self._layer_loss(full_pre, t_flat, 0)
        h = self.act(self.layers[k](hs[k]))           # (B, n_k), grad on W_k, b_k
        rec = self._layer_loss(self._layer_pre(h, k), goal, k)  # grad on W_k, c_k
        extras = {"stage_layer": torch.tensor(k + 1, device=x.device), "image_recon": image_loss}
        return ModelOutput(loss=rec, recon=recon, z=z, parts={"recon": rec}, extras=extras)

    def stages(self) -> list[str]:
        names = [f"layer{k + 1}" for k in range(len(self.config.hidden) + 1)]
        return names + (["finetune"] if self.config.finetune else [])

    def _stage_index(self, stage: str) -> int:
        names = self.stages()
        if stage not in names:
            raise ConfigError(f"unknown stage {stage!r} for stacked-ae; stages are {', '.join(names)}")
        return names.index(stage)

    def _set_trainable(self, k: int | None) -> None:
        """k None: everything trains; else only W_k, b_k and c_k."""
        for p in self.parameters():
            p.requires_grad_(k is None)
        if k is not None:
            for p in (self.layers[k].weight, self.layers[k].bias, self.decoder_biases[k]):
                p.requires_grad_(True)
        self._stage_layer = k

    def begin_stage(self, stage: str) -> None:
        self._stage_index(stage)
        self._set_trainable(None if stage == "finetune" else int(stage.removeprefix("layer")) - 1)

    @torch.no_grad()
    def end_stage(self, stage: str) -> None:
        index = self._stage_index(stage)
        self.stage_filters[index].copy_(self.layers[0].weight[:self.stage_filters.shape[1]])
        self.stages_done.fill_(index + 1)
        self._set_trainable(None)

    @property
    def current_stage(self) -> str | None:
        """The layer stage in progress, or None when forward trains the whole stack."""
        return None if self._stage_layer is None else f"layer{self._stage_layer + 1}"

    def filter_history(self) -> list[tuple[str, Tensor]]:
        """[(stage name, first-layer filters (k, D) at its end)] for the stages done so far."""
        names = self.stages()
        return [(names[i], self.stage_filters[i]) for i in range(int(self.stages_done))]

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> StackedAEConfig:
        return cls.config_class(input_shape=tuple(input_shape), hidden=(16,), latent_dim=8)
