"""Your own image as a model input: an uploaded file or a drawing on the canvas.

Uploads are untrusted: any common format (PNG, JPEG, GIF, BMP, TIFF, WebP, ...) and any size is
accepted up to MAX_UPLOAD_BYTES and MAX_PIXELS (a decompression bomb declares a huge size in a small
file, so the declared size is checked before any pixel is decoded). What is done to the image is
returned as a one-line note for the user, because a model only sees (C, H, W) in [0, 1]:
colour -> grey (or grey -> colour), transparency filled, padded to the model's aspect ratio (never
stretched), resized, and inverted when the background is light: MNIST-like data is white on black.

The canvas (streamlit-drawable-canvas) gives an RGBA array: white strokes on a black or transparent
background. The drawing is cropped to its strokes, fitted into the inner part of the frame and
centred by its centre of mass, as MNIST digits were prepared (20x20 box in 28x28).
"""

from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from aecore.data.images import open_image
from aecore.errors import DataError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000
INK = 0.05                       # canvas: luminance above this counts as a stroke
DIGIT_BOX = 20 / 28              # MNIST: the digit fits a 20x20 box inside the 28x28 frame
FORMATS = "PNG, JPEG, GIF, BMP, TIFF or WebP"
UPLOAD_TYPES = ("png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "ico", "ppm", "pgm", "pbm", "tga")


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"this model takes inputs of shape {list(shape)}, not grey or colour images, "
                        "so your own image cannot be fed to it")
    return shape  # type: ignore[return-value]


def _border(a: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (P, C): the pixels on the image's edge."""
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, C) float -> (h, w, C) float in [0, 1], antialiased (Lanczos per channel)."""
    from PIL import Image

    if a.shape[:2] == (h, w):
        return a
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c], dtype=np.float32), mode="F")
                      .resize((w, h), Image.Resampling.LANCZOS)) for c in range(a.shape[2])]
    return np.clip(np.stack(out, axis=-1), 0.0, 1.0)


def _pad_to_aspect(a: np.ndarray, h: int, w: int, fill: np.ndarray) -> tuple[np.ndarray, bool]:
    """Pad (H, W, C) with `fill` (C,) so that its aspect ratio is h:w, the image centred."""
    H, W = a.shape[:2]
    if H * w == W * h:
        return a, False
    if H * w > W * h:                       # too tall: widen
        new_h, new_w = H, max(W, round(H * w / h))
    else:
        new_h, new_w = max(H, round(W * h / w)), W
    out = np.empty((new_h, new_w, a.shape[2]), dtype=np.float32)
    out[...] = fill
    top, left = (new_h - H) // 2, (new_w - W) // 2
    out[top:top + H, left:left + W] = a
    return out, True


def _to_channels(a: np.ndarray, c: int) -> tuple[np.ndarray, str | None]:
    """(H, W, 1|3) -> (H, W, c), with a note when colour is dropped or made up."""
    if a.shape[2] == c:
        return a, None
    if c == 1:
        grey = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114     # ITU-R 601 luma
        coloured = float(np.abs(a - a.mean(axis=2, keepdims=True)).max()) > 1 / 255
        return grey[..., None], "colour converted to grey" if coloured else None
    return np.repeat(a, 3, axis=2), "grey image repeated over the 3 colour channels"


def _to_tensor(a: np.ndarray) -> Tensor:
    """(H, W, C) -> (1, C, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)).unsqueeze(0)


def _decode(data: bytes):
    """Bytes -> (PIL image, list of notes), refusing empty, huge and unreadable files."""
    from PIL import Image

    if not data:
        raise DataError("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"the file is {len(data) / 2**20:.1f} MB; images up to "
                        f"{MAX_UPLOAD_BYTES >> 20} MB are accepted")
    too_many = (f"the image declares more than {MAX_PIXELS // 1_000_000} megapixels (a small file "
                "declaring a huge size is a decompression bomb); use a smaller image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = open_image(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise DataError(too_many) from None
    except Exception:  # PIL raises many types on foreign bytes; all mean the same to the user
        raise DataError(f"the file is not an image that can be read ({FORMATS} are)") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DataError(f"the image is {width}×{height} = {width * height / 1e6:.0f} megapixels; at most "
                        f"{MAX_PIXELS // 1_000_000} are accepted: use a smaller image")
    if width < 1 or height < 1:
        raise DataError("the image has no pixels")
    notes = [f"{image.format or 'image'} {width}×{height}"]
    frames = int(getattr(image, "n_frames", 1) or 1)
    try:
        if frames > 1:
            image.seek(0)
            notes.append(f"animated ({frames} frames): the first frame is used")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            from PIL import ImageOps

            image = ImageOps.exif_transpose(image)            # phone photos: upright
    except Exception as err:
        raise DataError(f"the image is damaged or truncated and cannot be decoded ({err})") from None
    return image, notes


def _pixels(image) -> tuple[np.ndarray, list[str]]:
    """PIL image of any mode -> (H, W, 1|3) float32 in [0, 1], transparency filled."""
    notes: list[str] = []
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):      # 16/32-bit grey: stretch
        a = np.asarray(image, dtype=np.float64)
        if not np.isfinite(a).all():
            raise DataError(f"the image has NaN or infinite pixel values ({image.mode} pixels); "
                            "it cannot be shown to a model")
        lo, hi = float(a.min()), float(a.max())
        if hi > lo:
            return ((a - lo) / (hi - lo)).astype(np.float32)[..., None], [f"{image.mode} pixels scaled to [0, 1]"]
        full = 1.0 if image.mode == "F" else 65535.0     # a uniform image: its place in the mode's range
        level = min(max(lo / full, 0.0), 1.0)
        return np.full(a.shape + (1,), level, np.float32), [f"uniform {image.mode} image: grey level {level:.2f}"]
    if image.mode not in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa"):
        notes.append(f"{image.mode} colours converted to RGB")                # CMYK, YCbCr, LAB, ...
    alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    grey = image.mode in ("1", "L", "LA", "La", "I", "F") or (
        image.mode == "P" and image.palette is not None and image.palette.mode == "L")
    a = np.asarray(image.convert("RGBA" if alpha else "RGB"), dtype=np.float32) / 255.0
    if alpha:
        rgb, opacity = a[..., :3], a[..., 3:]
        if (opacity < 1).any():
            solid = opacity[..., 0] > 0.5
            ink = float(rgb[solid].mean()) if solid.any() else 0.0
            fill = 0.0 if ink > 0.5 else 1.0                 # fill with the colour the content stands out on
            rgb = rgb * opacity + fill * (1 - opacity)
            notes.append(f"transparent areas filled with {'black' if fill == 0 else 'white'}")
        a = rgb
    if grey:
        a = a[..., :1]
    return a, notes


def image_from_upload(data: bytes, input_shape: Sequence[int], *, invert: bool | None = None) -> tuple[Tensor, str]:
    """File bytes -> ((1, C, H, W) float in [0, 1] for a model with this input shape, note for the user).

    `invert=None` inverts grey images whose background (their border) is light, since the grey
    datasets here are white on black; True/False forces it. Raises DataError with the reason when
    the file is refused.
    """
    c, h, w = _image_shape(input_shape)
    image, notes = _decode(data)
    try:
        a, more = _pixels(image)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"the image's pixels cannot be decoded ({err})") from None
    notes += more
    a, note = _to_channels(a, c)
    if note:
        notes.append(note)
    border = _border(a)
    if invert is None:
        invert = c == 1 and float(np.median(border)) > 0.5
    if invert:
        a = 1.0 - a
        border = 1.0 - border
        notes.append("light background: inverted to white on black, like the training images")
    a, padded = _pad_to_aspect(a, h, w, np.median(border, axis=0))
    if padded:
        notes.append("padded to keep its aspect ratio")
    a = _resize(a, h, w)
    notes.append(f"resized to {w}×{h} {'grey' if c == 1 else 'RGB'}")
    return _to_tensor(a), "; ".join(notes)


def image_from_canvas(rgba: np.ndarray, input_shape: Sequence[int], *, box: float = DIGIT_BOX) -> tuple[Tensor, str]:
    """Canvas RGBA (H, W, 4) uint8 (white strokes on black/transparent) -> ((1, C, H', W') float, note).

    The strokes are cropped, fitted into `box` of the frame and centred by their centre of mass.
    Raises DataError when nothing is drawn.
    """
    c, h, w = _image_shape(input_shape)
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"expected an RGBA drawing (height, width, 4), got shape {list(a.shape)}")
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 or a.max() > 1.0 else 1.0)
    luma = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    ink = luma * a[..., 3] if a.shape[2] == 4 else luma                 # composited onto black
    rows, cols = np.nonzero(ink > INK)
    if rows.size == 0:
        raise DataError("the canvas is empty: draw something first (white on black)")
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # fit the crop into box*h x box*w, keeping its aspect ratio
    scale = min(box * h / crop.shape[0], box * w / crop.shape[1])
    ch, cw = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = _resize(crop[..., None], ch, cw)[..., 0]
    # centre of mass to the frame's centre, kept inside the frame
    total = float(small.sum()) or 1.0
    cy = float((small.sum(axis=1) * np.arange(ch)).sum() / total)
    cx = float((small.sum(axis=0) * np.arange(cw)).sum() / total)
    top = int(np.clip(round((h - 1) / 2 - cy), 0, h - ch))
    left = int(np.clip(round((w - 1) / 2 - cx), 0, w - cw))
    frame = np.zeros((h, w), dtype=np.float32)
    frame[top:top + ch, left:left + cw] = small
    out = np.repeat(frame[..., None], c, axis=2)
    note = (f"drawing {a.shape[1]}×{a.shape[0]}: cropped to its strokes, fitted into {box:.0%} of the frame "
            f"and centred like MNIST digits; resized to {w}×{h} {'grey' if c == 1 else 'RGB'}")
    return _to_tensor(out), note
