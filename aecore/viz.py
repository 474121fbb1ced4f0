"""Pictures for the app and the CLI: image grids as uint8 arrays (no streamlit here)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_images(x: Tensor, input_shape: tuple[int, ...] | None = None) -> Tensor:
    """Any batch (B, C, H, W) / (B, D) / uint8 / float -> float (B, C, H, W) in [0, 1]; flat square inputs become images."""
    x = x.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 2:
        if input_shape and len(input_shape) == 3:
            x = x.view(-1, *input_shape)
        else:
            side = int(round(x.shape[1] ** 0.5))
            x = x.view(-1, 1, side, side) if side * side == x.shape[1] else x.view(-1, 1, 1, x.shape[1])
    return x.clamp(0, 1)


def tile(images: Tensor, *, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> Tensor:
    """(B, C, H, W) -> (3, H', W'): the images in rows of `nrow`, `padding` pixels of `pad_value` around
    each; grey (C = 1) repeated into 3 channels. The layout of torchvision's make_grid (a lone image
    comes back unpadded), without importing torchvision, which pulls torch._dynamo and triton into
    the process: about 160 MB of the app server's memory, measured."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"tile needs a (B, C, H, W) batch of at least one image, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    b, c, h, w = images.shape
    if b == 1:
        return images[0].clone()
    cols = min(nrow, b)
    rows = -(-b // cols)
    cells = images.new_full((rows * cols, c, h + padding, w + padding), pad_value)
    cells[:b, :, padding:, padding:] = images
    grid = cells.view(rows, cols, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + padding), cols * (w + padding))        # each cell padded top-left
    out = images.new_full((c, grid.shape[1] + padding, grid.shape[2] + padding), pad_value)
    out[:, : grid.shape[1], : grid.shape[2]] = grid                          # and the grid bottom-right
    return out


def image_grid(x: Tensor, *, nrow: int = 8, padding: int = 2, scale: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """(B, ...) -> (H, W, 3) uint8 grid; `scale` repeats pixels (crisp digits on a projector)."""
    images = to_images(x)
    grid = tile(images, nrow=max(1, nrow), padding=padding, pad_value=pad_value)      # (3, H, W)
    if scale > 1:
        grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) array (uint8, or float in [0, 1]) -> PNG file bytes."""
    import io

    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


LABEL_FONT_FRACTION = 0.22   # label text height as a fraction of one row's height (capped below)
MAX_LABEL_FONT = 40


def label_column(labels: list[str], height: int, *, font_px: int | None = None, width: int | None = None) -> np.ndarray:
    """A white (height, width, 3) uint8 strip with `labels[r]` written, right-aligned, beside row r of
    a grid `height` pixels tall whose rows are equally tall: the rows' names on the picture itself,
    readable on a projector and kept in a downloaded PNG (a caption is neither)."""
    from PIL import Image, ImageDraw, ImageFont

    n = max(1, len(labels))
    row = height / n
    size = font_px or int(min(MAX_LABEL_FONT, max(12, row * LABEL_FONT_FRACTION)))
    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [measure.textlength(text, font=font) for text in labels]
    width = width or int(max(widths, default=0) + size)
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    for r, (text, w) in enumerate(zip(labels, widths)):
        draw.text((width - w - size // 2, row * (r + 0.5)), text, fill="black", font=font, anchor="lm")
    return np.asarray(strip, dtype=np.uint8).copy()
