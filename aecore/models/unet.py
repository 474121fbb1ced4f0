"""U-Net: Ronneberger, Fischer & Brox (2015), "U-Net: Convolutional Networks for Biomedical Image
Segmentation", arXiv:1505.04597, used here as a denoiser and as a small segmenter.

Contracting path: per level two 3x3 conv + ReLU, then 2x2 max-pool (channels double each level).
Expanding path: 2x2 up-convolution (halves channels), CONCATENATE the encoder feature map of the
same level (the skip connection), two 3x3 conv + ReLU. A final 1x1 conv maps to the output.

How we adapt it (and where we differ from the paper):
- "same" padding instead of the paper's unpadded convs + cropping, so output size = input size.
- GroupNorm after each conv (the paper has none). Without it, small nets trained with Adam at
  lr 1e-2 collapse to an all-background sigmoid output and stop learning; BatchNorm would make
  `reconstruct` depend on train/eval mode and on the batch, GroupNorm does not.
- Odd sizes (28 -> 14 -> 7 -> 4): max-pool with ceil_mode, the up-convolution then yields one
  row/column too many, which we crop from the bottom/right to match the skip.
- `skips=False` drops the concatenation (the decoder convs then take half the channels), for a
  plain conv autoencoder to compare against.
- The code z: a 1x1 conv maps the bottleneck to `latent_dim` channels (+ ReLU) and a 1x1 conv maps
  back; z is that map global-average-pooled, (B, latent_dim). With skips most information
  bypasses z, so z is a summary, not the whole code. `decode(z)` tiles z over the bottleneck
  grid and runs the decoder with all-zero skip maps: what the code alone carries.
- task "denoise": the trainer passes x = noisy, target = clean; sigmoid output, loss = squared
  error summed per example, averaged over the batch.
- task "segment": the mask is derived from the clean target: foreground = any channel > 0.5
  (one 1-channel mask even for RGB). Loss = binary cross-entropy with logits, summed per pixel,
  averaged over the batch. `recon` is the mask probability broadcast to the input's channels
  (so generic image views work); the 1-channel probabilities are in extras["mask"].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aecore.config import ModelConfig, check_range
from aecore.errors import ConfigError
from aecore.models.base import AutoEncoder, ModelOutput, image_shape_ok
from aecore.models.registry import register_model


def _groups(channels: int) -> int:
    """Largest of 8, 4, 2, 1 that divides `channels` (GroupNorm needs a divisor)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """(3x3 conv, GroupNorm, ReLU) x 2."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(_groups(c_out), c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(_groups(c_out), c_out), nn.ReLU())


def foreground_mask(images: Tensor, threshold: float = 0.5) -> Tensor:
    """(B, C, H, W) in [0, 1] -> (B, 1, H, W) float mask: 1 where any channel exceeds `threshold`."""
    return (images > threshold).any(dim=1, keepdim=True).to(images.dtype)


def iou(pred: Tensor, true: Tensor) -> Tensor:
    """Per-example intersection over union of boolean-like masks (B, ...) -> (B,); both empty = 1."""
    pred, true = pred.flatten(1) > 0.5, true.flatten(1) > 0.5
    inter = (pred & true).sum(1).float()
    union = (pred | true).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class UNetConfig(ModelConfig):
    latent_dim: int = 32
    base_channels: int = 32          # channels at full resolution; doubled at each level down
    depth: int = 2                   # number of poolings: 28 -> 14 -> 7
    skips: bool = True               # concatenated skip connections (False: plain conv AE)
    task: Literal["denoise", "segment"] = "denoise"

    def validate(self) -> None:
        super().validate()
        check_range("base_channels", self.base_channels, 1, 1024)
        check_range("depth", self.depth, 1, 6)
        check_range("base_channels * 2**depth", self.base_channels * 2 ** self.depth, 1, 8192)
        if len(self.input_shape) == 3 and min(self.input_shape[1:]) < 2 ** self.depth:
            raise ConfigError(f"depth = {self.depth} halves {min(self.input_shape[1:])} px too often; "
                              f"images must be at least 2**depth = {2 ** self.depth} px")


@register_model("unet", description="U-Net (Ronneberger 2015): conv encoder/decoder with concatenated "
                                    "skips, for denoising or foreground segmentation")
class UNet(AutoEncoder):
    """Conv encoder/decoder with concatenated skip connections; denoiser or segmenter."""

    config_class = UNetConfig
    no_pca_baseline = ("the U-Net's skip connections carry the image past its code, so PCA with as many "
                       "components as the code is no fair baseline")

    def code_activation(self) -> str:
        return "relu"                                   # global average of a ReLU map

    @classmethod
    def non_image_output(cls, config: Mapping[str, Any]) -> str | None:
        if config.get("task") == "segment":
            return "this U-Net was trained to segment: its output is a foreground mask"
        return None

    def __init__(self, *, config: UNetConfig):
        super().__init__(config=config)
        c_in, base, depth = config.input_shape[0], config.base_channels, config.depth
        chans = [base * 2 ** i for i in range(depth + 1)]                  # per level, top to bottom
        self.down = nn.ModuleList([double_conv(c_in, chans[0])] +
                                  [double_conv(chans[i - 1], chans[i]) for i in range(1, depth + 1)])
        self.to_latent = nn.Conv2d(chans[-1], config.latent_dim, 1)
        self.from_latent = nn.Conv2d(config.latent_dim, chans[-1], 1)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2)
                                 for i in range(depth, 0, -1)])
        mult = 2 if config.skips else 1
        self.up_conv = nn.ModuleList([double_conv(mult * chans[i - 1], chans[i - 1])
                                      for i in range(depth, 0, -1)])
        self.head = nn.Conv2d(chans[0], 1 if config.task == "segment" else c_in, 1)
        _, h, w = config.input_shape
        sizes = [(h, w)]
        for _ in range(depth):
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        self.sizes = sizes                                                  # spatial size per level

    @classmethod
    def supports(cls, input_shape: tuple[int, ...]) -> bool:
        return image_shape_ok(input_shape, min_side=4)

    @classmethod
    def small_config(cls, input_shape: tuple[int, ...]) -> UNetConfig:
        return cls.config_class(input_shape=tuple(input_shape), latent_dim=8, base_channels=4, depth=2)

    # --- the network ---------------------------------------------------------------------
    def _contract(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """-> latent map (B, latent_dim, h, w) and the skip feature maps, top level first."""
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        return torch.relu(self.to_latent(x)), skips[:-1]

    def _expand(self, latent: Tensor, skips: list[Tensor] | None) -> Tensor:
        """Latent map -> output logits; `skips` None means all-zero skip maps (decode from z)."""
        x = torch.relu(self.from_latent(latent))
        for j, (up, conv) in enumerate(zip(self.up, self.up_conv)):
            level = len(self.up) - 1 - j
            h, w = self.sizes[level]
            x = up(x)[:, :, :h, :w]                                         # crop ceil-mode overhang
            if self.config.skips:
                skip = skips[level] if skips is not None else torch.zeros_like(x)
                x = torch.cat([skip, x], dim=1)
            x = conv(x)
        return self.head(x)

    def _logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        latent, skips = self._contract(x)
        return self._expand(latent, skips), latent.mean(dim=(2, 3))

    def _as_recon(self, logits: Tensor) -> Tensor:
        probs = torch.sigmoid(logits)
        if self.config.task == "segment":
            probs = probs.expand(-1, self.config.input_shape[0], -1, -1).contiguous()
        return probs

    # --- the AutoEncoder API -------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        return self._contract(x)[0].mean(dim=(2, 3))                       # (B, latent_dim)

    def decode(self, z: Tensor) -> Tensor:
        h, w = self.sizes[-1]
        latent = z[:, :, None, None].expand(-1, -1, h, w)
        return self._as_recon(self._expand(latent, None))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The full network (skips included), not decode(encode(x))."""
        return self._as_recon(self._logits(x)[0])

    def forward(self, x: Tensor, *, target: Tensor | None = None, y: Tensor | None = None) -> ModelOutput:
        target = x if target is None else target
        logits, z = self._logits(x)
        if self.config.task == "segment":
            mask = foreground_mask(target)
            loss = F.binary_cross_entropy_with_logits(logits, mask, reduction="none").flatten(1).sum(1).mean()
            probs = torch.sigmoid(logits)
            return ModelOutput(loss=loss, recon=self._as_recon(logits), z=z, parts={"recon": loss},
                               extras={"mask": probs, "target_mask": mask, "logits": logits})
        recon = torch.sigmoid(logits)
        loss = (recon - target).pow(2).flatten(1).sum(1).mean()
        return ModelOutput(loss=loss, recon=recon, z=z, parts={"recon": loss})

    @torch.no_grad()
    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Segment: IoU of the predicted mask (p > 0.5) with the mask derived from x."""
        if self.config.task != "segment":
            return {}
        logits, _ = self._logits(x)
        return {"iou": iou(logits > 0, foreground_mask(x))}
