"""A sprite atlas: many small images packed into one picture, so that a browser fetches and decodes
one PNG and draws each image as a cell of it (the Latent map's thumbnail view draws 10,000 of them).

Cell i holds image i, in reading order: row i // cols, column i % cols, each cell `cell` pixels
square-ish (the images' own size, or smaller when a grid of them would exceed MAX_SIDE pixels).
Pure numpy and PIL: no torch tensors, no streamlit.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

import numpy as np

MAX_SIDE = 4096          # pixels across an atlas at most: a browser decodes and holds it at once


@dataclass(frozen=True)
class Atlas:
    """A packed atlas: the PNG and how to find image i in it."""

    png: bytes
    n: int                # images packed
    cols: int             # cells across
    rows: int             # cells down
    cell_h: int           # pixels per cell
    cell_w: int
    channels: int         # 1: grey (white ink on black, as the data is), 3: colour
    key: str              # a digest of the pixels: the browser keeps its decoded copy while this is unchanged

    def box(self, i: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of image i's cell, in atlas pixels."""
        if not 0 <= int(i) < self.n:
            raise IndexError(f"image {i} is not in the atlas (0 to {self.n - 1})")
        row, col = divmod(int(i), self.cols)
        return col * self.cell_w, row * self.cell_h, self.cell_w, self.cell_h

    def args(self) -> dict:
        """The atlas's geometry as plain JSON values (the browser's half of `box`)."""
        return {"n": self.n, "cols": self.cols, "rows": self.rows, "cell_h": self.cell_h, "cell_w": self.cell_w,
                "channels": self.channels, "key": self.key}


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(cols, rows) of a grid for n cells: square-ish (100 x 100 for 10,000) unless `cols` is given."""
    if n < 1:
        raise ValueError("an atlas needs at least one image")
    cols = int(cols) if cols else math.ceil(math.sqrt(n))
    cols = max(1, min(cols, n))
    return cols, math.ceil(n / cols)


def as_hwc(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W), (N, C, H, W) with C 1 or 3, or (N, H, W, C) -> (N, H, W, C) uint8."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"atlas images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x
    raise ValueError(f"atlas images must be (N, H, W), (N, C, H, W) or (N, H, W, C), got {list(x.shape)}")


def cell_size(h: int, w: int, cols: int, rows: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The images' own size, shrunk (keeping the aspect) so that the grid fits max_side pixels."""
    shrink = min(1.0, max_side / (cols * w), max_side / (rows * h))
    return max(1, int(h * shrink)), max(1, int(w * shrink))


def pack(images: np.ndarray, *, cols: int | None = None, max_side: int = MAX_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """The atlas picture: (rows * cell_h, cols * cell_w) grey or (..., 3) colour uint8, cell i holding
    image i (black where the last row has no image), and (cell_h, cell_w)."""
    x = as_hwc(images)
    n, h, w, c = x.shape
    cols, rows = grid_shape(n, cols)
    ch, cw = cell_size(h, w, cols, rows, max_side)
    if (ch, cw) != (h, w):
        from PIL import Image

        mode = "L" if c == 1 else "RGB"
        x = np.stack([np.asarray(Image.fromarray(img[..., 0] if c == 1 else img, mode).resize((cw, ch), Image.BOX))
                      .reshape(ch, cw, c) for img in x])
    canvas = np.zeros((rows * cols, ch, cw, c), dtype=np.uint8)
    canvas[:n] = x
    # (rows, cols, ch, cw, c) -> (rows, ch, cols, cw, c): cell (r, k) lands at rows r*ch.., columns k*cw..
    picture = canvas.reshape(rows, cols, ch, cw, c).transpose(0, 2, 1, 3, 4).reshape(rows * ch, cols * cw, c)
    return (picture[..., 0] if c == 1 else picture), (ch, cw)


def build_atlas(images: np.ndarray, *, cols: int | None = None, max_side: int = MAX_SIDE) -> Atlas:
    """Pack uint8 `images` (see `as_hwc`) into one PNG atlas; grey images stay one channel (a third of
    the bytes), colour ones RGB."""
    from PIL import Image

    picture, (ch, cw) = pack(images, cols=cols, max_side=max_side)
    n = len(images)
    cols, rows = grid_shape(n, cols)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)   # fast: 0.2 s, 12% larger than 6
    key = hashlib.blake2b(picture.tobytes(), digest_size=8).hexdigest()
    return Atlas(buffer.getvalue(), n, cols, rows, ch, cw, 1 if picture.ndim == 2 else 3, key)


def unpack(png: bytes, atlas: Atlas) -> np.ndarray:
    """The atlas's images back as (N, cell_h, cell_w[, 3]) uint8 (for tests and checks)."""
    from PIL import Image

    picture = np.asarray(Image.open(io.BytesIO(png)))
    out = []
    for i in range(atlas.n):
        x, y, w, h = atlas.box(i)
        out.append(picture[y:y + h, x:x + w])
    return np.stack(out)
