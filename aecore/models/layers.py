"""Building blocks shared by several models: MLP stacks and a conv encoder/decoder pair."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], *, act: str = "relu", final_act: str = "identity") -> nn.Sequential:
    """Linear layers sizes[0] -> ... -> sizes[-1], `act` between them and `final_act` at the end."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        last = i == len(sizes) - 2
        name = final_act if last else act
        if name != "identity":
            layers.append(activation(name))
    return nn.Sequential(*layers)


def mirrored_mlps(*, input_dim: int, hidden: Sequence[int], latent_dim: int, activation: str,
                  code_activation: str = "identity", encoder_outputs: int | None = None,
                  ) -> tuple[nn.Sequential, nn.Sequential]:
    """The MLP family's encoder and decoder, built in one place so every model's layers (and so its
    state_dict keys, encoder.N / decoder.N) line up the same way.

    Encoder: input_dim -> hidden... -> encoder_outputs (default latent_dim; a VAE asks for
    2 * latent_dim, mu and log sigma^2), `code_activation` at the end. Decoder: latent_dim ->
    reversed(hidden)... -> input_dim, ending in pre-activations; the model applies its output function.
    """
    code_width = latent_dim if encoder_outputs is None else encoder_outputs
    encoder = mlp([input_dim, *hidden, code_width], act=activation, final_act=code_activation)
    decoder = mlp([latent_dim, *reversed(hidden), input_dim], act=activation, final_act="identity")
    return encoder, decoder


def _halved(size: int) -> int:
    """Spatial size after a 3x3 conv with stride 2 and padding 1."""
    return (size - 1) // 2 + 1


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_dim): stride-2 3x3 convs (H, W halve each time), then a linear layer.

    28x28 with two layers: 28 -> 14 -> 7; 32x32 with three: 32 -> 16 -> 8 -> 4.
    """

    def __init__(self, *, input_shape: Sequence[int], channels: Sequence[int], out_dim: int, act: str = "relu"):
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        self.sizes = [(h, w)]
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), activation(act)]
            c, h, w = ch, _halved(h), _halved(w)
            self.sizes.append((h, w))
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, h, w)
        self.fc = nn.Linear(c * h * w, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """Mirror of `ConvEncoder`: (B, in_dim) -> (B, C, H, W), transposed convs sized to undo each halving."""

    def __init__(self, *, encoder: ConvEncoder, out_channels: int, in_dim: int, act: str = "relu",
                 final_act: str = "sigmoid"):
        super().__init__()
        c, h, w = encoder.feature_shape
        self.feature_shape = (c, h, w)
        self.fc = nn.Linear(in_dim, c * h * w)
        self.fc_act = activation(act)
        sizes = encoder.sizes  # [(H0, W0), (H1, W1), ...]
        channels = [layer.out_channels for layer in encoder.features if isinstance(layer, nn.Conv2d)]
        targets = list(reversed(channels[:-1])) + [out_channels]
        layers: list[nn.Module] = []
        in_ch = c
        for i, out_ch in enumerate(targets):
            (h_small, w_small), (h_big, w_big) = sizes[-1 - i], sizes[-2 - i]
            pad = (h_big - (2 * h_small - 1), w_big - (2 * w_small - 1))  # output_padding, 0 or 1
            layers.append(nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=pad))
            last = i == len(targets) - 1
            name = final_act if last else act
            if name != "identity":
                layers.append(activation(name))
            in_ch = out_ch
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc_act(self.fc(z)).view(z.shape[0], *self.feature_shape)
        return self.deconv(h)


def default_conv_channels(input_shape: Sequence[int], base: int = 32) -> tuple[int, ...]:
    """Two stride-2 layers for small images (<= 28 px), three for larger ones (e.g. 32 px)."""
    side = min(input_shape[1:])
    depth = 2 if side <= 28 else 3
    depth = max(1, min(depth, int(math.log2(max(side, 2)))))
    return tuple(base * 2**i for i in range(depth))


def init_weights_xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def check_conv_roundtrip(input_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, ...]:
    """Shape a ConvEncoder/ConvDecoder pair produces for this input (used by tests and validation)."""
    enc = ConvEncoder(input_shape=input_shape, channels=channels, out_dim=4)
    dec = ConvDecoder(encoder=enc, out_channels=input_shape[0], in_dim=4)
    return tuple(dec(enc(torch.zeros(1, *input_shape))).shape[1:])
