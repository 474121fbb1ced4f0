"""Your own image as a model input: an uploaded file or a drawing on the canvas.

Uploads are untrusted (a class server shares its memory between many students): any common format
(PNG, JPEG, GIF, BMP, TIFF, WebP, ...) is accepted up to MAX_UPLOAD_BYTES, MAX_SIDE a side,
MAX_PIXELS (MAX_WEBP_PIXELS for WebP) and MAX_ASPECT, all checked on the declared size before any
pixel is decoded (a few hundred bytes can declare a 1×200000 image). Once decoded, the image is
shrunk in PIL, band by band in its own 8-bit mode (JPEG already while decoding), to a working size
of about WORK times the model's input, and only then made a float array; it is resized before it is
padded. So an upload costs its decoded pixels plus the decoder's buffers (tests/test_bad_uploads.py
bounds its peak rise; figures in bench/README.md), never a float array of the full size.
What is done to the image is returned as a one-line note for the user, because a model only sees
(C, H, W) in [0, 1]: colour -> grey (or grey -> colour), transparency filled, fitted into the model's
frame (never stretched) and padded with the border's colour, and inverted when the background is
light: MNIST-like data is white on black.

The canvas (streamlit-drawable-canvas) gives an RGBA array: white strokes on a black or transparent
background. The drawing is cropped to its strokes, fitted into the inner part of the frame and
centred by its centre of mass, as MNIST digits were prepared (20x20 box in 28x28).
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from aecore.data.images import open_image
from aecore.errors import DataError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SIDE = 4096                  # px, either side
MAX_PIXELS = 16_000_000          # 4096×3906 fits; 4096×4096 (16.8 MP) does not
MAX_WEBP_PIXELS = 8_000_000      # PIL decodes WebP through libwebp's animation decoder: four copies of the image
MAX_ASPECT = 64                  # longer side / shorter side: beyond it the image is a line in the model's frame
WORK = 4                         # decoded images are shrunk to about WORK times the model's input before float
BAND = 1 << 20                   # pixels converted at a time while shrinking (a few MB)
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
    """(H, W, C) float -> (h, w, C) float in [0, 1], antialiased (Lanczos per channel).

    Only ever given working-size arrays (uploads are shrunk in PIL first, see _shrink), so the
    float copies made here stay small.
    """
    from PIL import Image

    if a.shape[:2] == (h, w):
        return a
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c], dtype=np.float32), mode="F")
                      .resize((w, h), Image.Resampling.LANCZOS)) for c in range(a.shape[2])]
    return np.clip(np.stack(out, axis=-1), 0.0, 1.0)


def _pad_to_aspect(a: np.ndarray, size: tuple[int, int], h: int, w: int, fill: np.ndarray) -> tuple[np.ndarray, bool]:
    """Fit (H', W', C) into (h, w, C), keeping the aspect ratio of the original `size` (W, H), and pad
    with `fill` (C,), the image centred.

    Resized first and padded at the target size: a padded full-resolution array of a 1×20000
    image would be 20000×20000 floats (1.6 GB) for nothing.
    """
    W, H = size
    if H * w == W * h:
        return _resize(a, h, w), False
    scale = min(h / H, w / W)
    ch, cw = min(h, max(1, round(H * scale))), min(w, max(1, round(W * scale)))
    a = _resize(a, ch, cw)
    if (ch, cw) == (h, w):              # too close to the model's aspect to leave a pixel of padding
        return a, False
    out = np.empty((h, w, a.shape[2]), dtype=np.float32)
    out[...] = fill
    top, left = (h - ch) // 2, (w - cw) // 2
    out[top:top + ch, left:left + cw] = a
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


def _megapixels(n: int, limit: int = 0) -> str:
    """64, 16.8, 10,000; with more decimals where one would not show that `n` is over `limit`."""
    text = f"{n / 1e6:,.1f}".removesuffix(".0")
    return f"{n / 1e6:,.3f}" if n > limit >= float(text.replace(",", "")) * 1e6 else text


def _check_size(width: int, height: int, fmt: str | None = None) -> None:
    """Refuse a declared size over MAX_SIDE, MAX_PIXELS (MAX_WEBP_PIXELS for WebP) or MAX_ASPECT,
    before any pixel is decoded."""
    pixels = MAX_WEBP_PIXELS if fmt == "WEBP" else MAX_PIXELS
    limits = f"at most {MAX_SIDE:,} px a side and {pixels // 1_000_000} megapixels are accepted"
    if fmt == "WEBP":
        limits += " for WebP (its decoder holds four copies of the image)"
    if width < 1 or height < 1:
        raise DataError("the image has no pixels")
    if max(width, height) > MAX_SIDE or width * height > pixels:
        many = f" ({_megapixels(width * height, pixels)} megapixels)" if width * height > pixels else ""
        raise DataError(f"the image is {width}×{height} pixels{many}; {limits}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise DataError(f"the image is {width}×{height} pixels, {max(width, height) / min(width, height):,.0f} times "
                        f"longer than wide; at most {MAX_ASPECT}:1 is accepted (it would be a line in the model's frame)")


def _check_ico(data: bytes) -> None:
    """Check every icon of an ICO file before PIL opens it: PIL decodes an icon while opening, and
    its directory says at most 256×256 while the PNG or BMP inside carries its own header, which is
    what gets decoded."""
    count = struct.unpack("<H", data[4:6])[0] if len(data) >= 6 else 0
    for at in range(6, min(6 + 16 * count, len(data) - 15), 16):
        offset = struct.unpack("<I", data[at + 12:at + 16])[0]
        head = data[offset:offset + 24]
        if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
            _check_size(*struct.unpack(">II", head[16:24]))
        elif len(head) >= 12:                       # DIB: BITMAPCOREHEADER (12 bytes, 16-bit sizes) or later
            w, h = struct.unpack("<HH", head[4:8]) if head[:4] == b"\x0c\0\0\0" else struct.unpack("<ii", head[4:12])
            _check_size(abs(w), max(1, abs(h) // 2))  # the height counts the colours and the AND mask


def _work_factor(width: int, height: int, h: int, w: int) -> int:
    """Integer shrink that leaves at least WORK times the model's (h, w) in the limiting direction,
    whichever way the EXIF orientation turns the image."""
    fit = min(max(height / h, width / w), max(width / h, height / w))
    return max(1, int(fit // WORK))


def _averageable(image):
    """PIL image -> the same pixels in a mode that Image.reduce can average: palettes and colour keys
    become real colours and alpha (averaging palette indices or a key colour means nothing), 1-bit
    becomes 8-bit grey, 16-bit grey 32-bit int; LAB, HSV, ... become RGB."""
    mode = image.mode
    keyed = image.info.get("transparency") is not None
    if mode.startswith("I;16"):
        return image.convert("I")
    if mode in ("P", "PA"):
        grey = image.palette is not None and image.palette.mode == "L"
        alpha = mode == "PA" or keyed
        return image.convert(("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB"))
    if mode in ("1", "L", "RGB"):
        if keyed:
            return image.convert("RGBA" if mode == "RGB" else "LA")
        return image.convert("L") if mode == "1" else image
    if mode in ("LA", "La", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F"):
        return image
    return image.convert("RGB")


def _shrink(image, h: int, w: int) -> tuple[object, tuple[float, float] | None]:
    """Decoded PIL image -> (the picture at working size for an (h, w) input, (min, max) of its
    pixels when it is 16/32-bit grey, else None).

    Done in PIL by box averaging (Image.reduce) in the image's own 8-bit mode, band by band, so
    that conversions (palette -> RGBA, 16-bit -> 32-bit, RGBA premultiplied for reduce) copy one
    band at a time, never the whole image, and no float copy of the full size is ever made.
    """
    from PIL import Image

    factor = _work_factor(*image.size, h, w)
    width, height = image.size
    rows = factor * max(1, BAND // (width * factor))
    out, top, lo, hi = None, 0, float("inf"), float("-inf")
    while top < height:
        band = _averageable(image.crop((0, top, width, min(height, top + rows))) if rows < height else image)
        if band.mode in ("I", "F"):                  # extrema of every pixel, as the 16-bit stretch had them
            band_lo, band_hi = band.getextrema()
            lo, hi = min(lo, band_lo), max(hi, band_hi)
        band = band.reduce(factor) if factor > 1 else band
        if rows >= height:
            out = band
            break
        if out is None:
            out = Image.new(band.mode, (-(-width // factor), -(-height // factor)))
        out.paste(band, (0, top // factor))
        top += rows
    return out, ((lo, hi) if out.mode in ("I", "F") else None)


class _Upload(NamedTuple):
    image: object                            # PIL image at working size, upright
    mode: str                                # the file's own mode, for the notes
    size: tuple[int, int]                    # upright (width, height) of the file: the aspect to keep
    extrema: tuple[float, float] | None      # (min, max) of every pixel of 16/32-bit grey images
    notes: list[str]


def _decode(data: bytes, h: int = 1, w: int = 1) -> _Upload:
    """Bytes -> the image shrunk to working size for an (h, w) model input, refusing empty, huge and
    unreadable files, and huge declared sizes before a pixel is decoded."""
    from PIL import Image

    if not data:
        raise DataError("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"the file is {len(data) / 2**20:.1f} MB; images up to "
                        f"{MAX_UPLOAD_BYTES >> 20} MB are accepted")
    if data[:4] == b"\0\0\1\0":                     # ICO
        _check_ico(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # PIL's (bomb, ICO size, EXIF...): the checks here decide
            image = open_image(io.BytesIO(data))
    except Image.DecompressionBombError:
        bomb = _megapixels(2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else "hundreds of"
        raise DataError(f"the image declares more than {bomb} megapixels (a small file declaring a huge size is "
                        f"a decompression bomb); at most {MAX_SIDE:,} px a side and {MAX_PIXELS // 1_000_000} "
                        "megapixels are accepted") from None
    except Exception:  # PIL raises many types on foreign bytes; all mean the same to the user
        raise DataError(f"the file is not an image that can be read ({FORMATS} are)") from None
    width, height = image.size
    _check_size(width, height, image.format)
    notes = [f"{image.format or 'image'} {width}×{height}"]
    try:
        frames = int(getattr(image, "n_frames", 1) or 1)
        if frames > 1:
            image.seek(0)
            notes.append(f"animated ({frames} frames): the first frame is used")
        _check_size(*image.size, image.format)       # a first frame may say otherwise than the file's header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factor = _work_factor(*image.size, h, w)
            if factor > 1:                           # JPEG: decoded at 1/2, 1/4 or 1/8 size right away
                image.draft(None, (max(1, image.width // factor), max(1, image.height // factor)))
            image.load()
            _check_size(*image.size, image.format)
            mode = image.mode
            orientation = image.getexif().get(0x0112, 1)                 # EXIF Orientation
            image, extrema = _shrink(image, h, w)
            flip = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                    8: Image.Transpose.ROTATE_90}.get(orientation)
            if flip is not None:                     # phone photos: upright (as ImageOps.exif_transpose)
                image = image.transpose(flip)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"the image is damaged or truncated and cannot be decoded ({err})") from None
    upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return _Upload(image, mode, upright, extrema, notes)


def _pixels(image, mode: str | None = None, extrema: tuple[float, float] | None = None) -> tuple[np.ndarray, list[str]]:
    """PIL image (working size, see _shrink) -> (H, W, 1|3) float32 in [0, 1], transparency filled.

    `mode` is the file's own mode, for the notes (16-bit grey is shrunk as 32-bit "I"); `extrema`
    the (min, max) of the full-size pixels, which 16/32-bit grey is stretched from.
    """
    mode = mode or image.mode
    notes: list[str] = []
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):      # 16/32-bit grey: stretch
        a = np.asarray(image, dtype=np.float64)
        lo, hi = extrema if extrema is not None else (float(a.min()), float(a.max()))
        # box averaging keeps a NaN or inf in the working image; getextrema skips most NaNs
        if not (np.isfinite(a).all() and np.isfinite([lo, hi]).all()):
            raise DataError(f"the image has NaN or infinite pixel values ({mode} pixels); "
                            "it cannot be shown to a model")
        lo, hi = float(lo), float(hi)
        if hi > lo:
            a = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
            return a.astype(np.float32)[..., None], [f"{mode} pixels scaled to [0, 1]"]
        full = 1.0 if image.mode == "F" else 65535.0     # a uniform image: its place in the mode's range
        level = min(max(lo / full, 0.0), 1.0)
        return np.full(a.shape + (1,), level, np.float32), [f"uniform {mode} image: grey level {level:.2f}"]
    if mode not in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa"):
        notes.append(f"{mode} colours converted to RGB")                # CMYK, YCbCr, LAB, ...
    alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or image.info.get("transparency") is not None
    grey = image.mode in ("1", "L", "LA", "La") or (
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
    upload = _decode(data, h, w)
    notes = upload.notes
    try:
        a, more = _pixels(upload.image, upload.mode, upload.extrema)
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
    a, padded = _pad_to_aspect(a, upload.size, h, w, np.median(border, axis=0))
    if padded:
        notes.append("padded to keep its aspect ratio")
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
