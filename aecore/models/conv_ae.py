"""Convolutional autoencoder: stride-2 conv encoder, linear bottleneck, mirrored transposed-conv decoder.

Reference: Masci, Meier, Ciresan & Schmidhuber (2011), "Stacked convolutional auto-encoders for
hierarchical feature extraction", ICANN. We read it in its common modern form: strided convolutions
instead of max-pooling, and a fully connected bottleneck to a flat code of `latent_dim`, so the code
is comparable with the MLP models (latent-space views, interpolation). Trained end to end (no
greedy stage-wise pretraining).

Shapes: (B, C, H, W) -> ConvEncoder -> z (B, latent_dim) -> ConvDecoder -> (B, C, H, W).
Images only (H, W >= 8); flat inputs are refused by `supports`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from aecore.config import ModelConfig, check_range
from aecore.errors import ConfigError
from aecore.models.ae import Activation, apply_output, check_output_loss, reconstruction_loss
from aecore.models.base import AutoEncoder, ModelOutput, image_shape_ok
from aecore.models.layers import ConvDecoder, ConvEncoder, default_conv_channels
from aecore.models.registry import register_model

MIN_SIDE = 8
MAX_CONV_LAYERS = 6
MAX_CHANNELS = 1024


@dataclass
class ConvAEConfig(ModelConfig):
    """channels: output channels of each stride-2 conv; empty = default_conv_channels(input_shape)."""

    channels: tuple[int, ...] = ()
    latent_dim: int = 32
    activation: Activation = "relu"
    output: Literal["sigmoid", "linear"] = "sigmoid"
    loss: Literal["mse", "bce"] = "mse"

    def validate(self) -> None:
        super().validate()
        if len(self.input_shape) != 3:
            raise ConfigError(f"input_shape = {list(self.input_shape)}: conv-ae needs images [C, H, W], not flat vectors")
        check_range("number of conv layers (len(channels))", len(self.channels), 0, MAX_CONV_LAYERS)
        for ch in self.channels:
            check_range("channels entries", ch, 1, MAX_CHANNELS)
        check_output_loss(self.output, self.loss)

    @property
    def conv_channels(self) -> tuple[int, ...]:
        return self.channels or default_conv_channels(self.input_shape)


@register_model("conv-ae", description="Convolutional autoencoder: stride-2 convs, linear bottleneck, transposed-conv decoder")
class ConvAE(AutoEncoder):
    """Conv encoder to a flat code, transposed-conv decoder (`encoder`, `decoder` attributes)."""

    config_class = ConvAEConfig
    # lr 3e-3: the Train page's Gaussian-0.5 denoiser on MNIST's 10,000 images gains +8.8 dB in 5 epochs
    # (about 18 s here), +7.4 dB at 1e-3 (bench/time_to_denoiser.py)
    train_page_defaults = {"lr": 3e-3}

    def __init__(self, *, config: ConvAEConfig):
        super().__init__(config=config)
        c = config.input_shape[0]
        self.encoder = ConvEncoder(input_shape=config.input_shape, channels=config.conv_channels,
                                   out_dim=config.latent_dim, act=config.activation)
        # Decoder ends in pre-activations; the output function is applied in decode / the loss.
        self.decoder = ConvDecoder(encoder=self.encoder, out_channels=c, in_dim=config.latent_dim,
                                   act=config.activation, final_act="identity")

    @classmethod
    def supports(cls, input_shape: tuple[int, ...]) -> bool:
        return image_shape_ok(tuple(input_shape), min_side=MIN_SIDE)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)  # (B, latent_dim)

    def decode(self, z: Tensor) -> Tensor:
        return apply_output(self.decoder(z), self.config.output)  # (B, C, H, W)

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        z = self.encode(x)
        pre = self.decoder(z)
        out = apply_output(pre, self.config.output)                      # (B, C, H, W)
        rec = reconstruction_loss(pre, target, loss=self.config.loss, output=self.config.output, out=out)
        return ModelOutput(loss=rec, recon=out, z=z, parts={"recon": rec})

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> ConvAEConfig:
        shape = tuple(input_shape)
        return cls.config_class(input_shape=shape, channels=default_conv_channels(shape, base=4), latent_dim=8)
