"""Tiny uploads must not cause huge allocations (a class server shares its memory between students).

A 274-byte PNG declaring 1×200000 pixels used to end in "Unable to allocate 149 GiB", and a 99-byte
1×20000 one was padded to a 20000×20000 float array (+3 GB). Now the declared size is refused
before any pixel is decoded (MAX_SIDE, MAX_PIXELS, MAX_ASPECT; MAX_WEBP_PIXELS for WebP), and what
is accepted is shrunk in PIL before it becomes floats: the memory test below runs the worst
accepted uploads in a fresh process and holds each to a 200 MB rise of its peak RSS.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecore.errors import DataError
from aecore.lab.inputs import MAX_ASPECT, MAX_PIXELS, MAX_SIDE, MAX_WEBP_PIXELS, image_from_upload
from tests.test_bad_inputs import encode, png_declaring

ROOT = Path(__file__).resolve().parents[1]
MNIST = (1, 28, 28)
RGB = (3, 32, 32)
LIMITS = "at most 4,096 px a side and 16 megapixels are accepted"
RISE_MB = 200


def test_the_limits():
    assert (MAX_SIDE, MAX_PIXELS, MAX_ASPECT, MAX_WEBP_PIXELS) == (4096, 16_000_000, 64, 8_000_000)


# --- builders -------------------------------------------------------------------------------------
def gif_declaring(width: int, height: int, screen: tuple[int, int] | None = None) -> bytes:
    """A GIF whose logical screen is `screen` (default: the frame's size) and whose frame is width × height."""
    sw, sh = screen or (width, height)
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00"
    return b"GIF89a" + struct.pack("<HH", sw, sh) + b"\x00\x00\x00" + frame + b"\x3b"


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header is rewritten to declare width × height."""
    data = bytearray(encode(Image.new("L", (8, 8), 128), "JPEG"))
    at = data.index(b"\xff\xc0") + 5
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def ico_holding(png: bytes, directory: int = 16) -> bytes:
    """An ICO whose directory says directory × directory, holding `png`: PIL decodes the PNG's own size."""
    entry = struct.pack("<BBBBHHII", directory, directory, 0, 0, 1, 32, len(png), 22)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def float_tiff_with(value: float, at: tuple[int, int], size: int = 1000) -> bytes:
    a = np.random.default_rng(0).random((size, size)).astype(np.float32)
    a[at] = value
    return encode(Image.fromarray(a), "TIFF")


def noise(width: int, height: int, channels: int = 3, block: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 (height, width, channels) noise in block × block squares (so a big one fits 20 MB as PNG)."""
    small = np.random.default_rng(seed).integers(0, 256, (-(-height // block), -(-width // block), channels),
                                                  dtype=np.uint8)
    return np.repeat(np.repeat(small, block, 0), block, 1)[:height, :width]


def noise_png(width: int, height: int, mode: str = "RGB", block: int = 1) -> bytes:
    a = noise(width, height, len(mode), block)
    return encode(Image.fromarray(a[..., 0] if mode == "L" else a, mode), "PNG", compress_level=1)


def ramp16(width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    return encode(Image.fromarray(((x * 16 + y) % 65536).astype(np.uint16)), "PNG", compress_level=1)


def photo(width: int, height: int) -> Image.Image:
    """A smooth colour picture with a little noise: compresses like a photo."""
    y, x = np.mgrid[0:height, 0:width]
    a = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) * 255 // (width + height)], -1)
    a = a + np.random.default_rng(0).integers(-6, 7, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


# --- refused before decoding, each naming the limit ------------------------------------------------
REFUSED = [
    pytest.param(lambda: png_declaring(1, 200_000), "the image is 1×200000 pixels; " + LIMITS, id="png-1x200000"),
    pytest.param(lambda: png_declaring(200_000, 1), "the image is 200000×1 pixels; " + LIMITS, id="png-200000x1"),
    pytest.param(lambda: png_declaring(1, 20_000), "the image is 1×20000 pixels; " + LIMITS, id="png-1x20000"),
    pytest.param(lambda: png_declaring(4097, 10), "the image is 4097×10 pixels; " + LIMITS, id="png-4097x10"),
    pytest.param(lambda: png_declaring(5000, 5000), "5000×5000 pixels (25 megapixels); " + LIMITS,
                 id="png-5000x5000-declared"),
    pytest.param(lambda: png_declaring(4096, 4096), "4096×4096 pixels (16.8 megapixels); " + LIMITS,
                 id="png-4096x4096-is-16.8-megapixels"),
    pytest.param(lambda: png_declaring(4096, 3907), "4096×3907 pixels (16.003 megapixels); " + LIMITS,
                 id="png-one-row-over-16-megapixels"),
    pytest.param(lambda: png_declaring(100_000, 100_000), "decompression bomb); " + LIMITS, id="png-bomb"),
    pytest.param(lambda: gif_declaring(20_000, 20_000), LIMITS, id="gif-20000x20000"),
    pytest.param(lambda: gif_declaring(4097, 10, screen=(10, 10)), "the image is 4097×10 pixels; " + LIMITS,
                 id="gif-frame-larger-than-its-screen"),
    pytest.param(lambda: jpeg_declaring(5000, 5000), "5000×5000 pixels (25 megapixels); " + LIMITS,
                 id="jpeg-5000x5000-declared"),
    pytest.param(lambda: jpeg_declaring(65_000, 2), "the image is 65000×2 pixels; " + LIMITS, id="jpeg-65000x2"),
    pytest.param(lambda: ico_holding(png_declaring(8000, 8000)), "8000×8000 pixels (64 megapixels); " + LIMITS,
                 id="ico-16x16-directory-holding-an-8000x8000-png"),
    pytest.param(lambda: ico_holding(png_declaring(1, 100_000)), "the image is 1×100000 pixels; " + LIMITS,
                 id="ico-holding-a-1x100000-png"),
    pytest.param(lambda: ico_holding(struct.pack("<IiiHHIIiiII", 40, 8000, 16000, 1, 32, 0, 0, 0, 0, 0, 0)),
                 "8000×8000 pixels (64 megapixels); " + LIMITS, id="ico-holding-an-8000x8000-bmp"),
    pytest.param(lambda: encode(Image.new("RGB", (2900, 2900), (9, 99, 199)), "WEBP"),
                 "2900×2900 pixels (8.4 megapixels); at most 4,096 px a side and 8 megapixels are accepted for WebP",
                 id="webp-over-8-megapixels"),
    pytest.param(lambda: noise_png(1, 65), "1×65 pixels, 65 times longer than wide; at most 64:1 is accepted",
                 id="aspect-1x65"),
    pytest.param(lambda: noise_png(4096, 32), "4096×32 pixels, 128 times longer than wide; at most 64:1",
                 id="aspect-4096x32"),
    pytest.param(lambda: png_declaring(4000, 20), "4000×20 pixels, 200 times longer than wide; at most 64:1",
                 id="aspect-4000x20-declared"),
    pytest.param(lambda: float_tiff_with(np.nan, (999, 999)), "NaN or infinite pixel values",
                 id="float-tiff-nan-in-the-last-pixel-survives-shrinking"),
    pytest.param(lambda: float_tiff_with(np.nan, (0, 0)), "NaN or infinite pixel values",
                 id="float-tiff-nan-in-the-first-pixel"),
    pytest.param(lambda: float_tiff_with(np.inf, (500, 3)), "NaN or infinite pixel values", id="float-tiff-inf"),
]


@pytest.mark.parametrize("make, fragment", REFUSED)
def test_refused_upload_names_the_limit(make, fragment):
    with pytest.raises(DataError) as info:
        image_from_upload(make(), MNIST)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_the_reported_bomb_is_refused_in_a_few_bytes():
    """The files of the report: 274 bytes declaring 1×200000, 99 bytes declaring 1×20000."""
    for width, height in ((1, 200_000), (1, 20_000)):
        data = png_declaring(width, height)
        assert len(data) < 300
        with pytest.raises(DataError, match=f"1×{height} pixels; at most 4,096 px a side"):
            image_from_upload(data, MNIST)


# --- accepted edge cases ---------------------------------------------------------------------------
def test_largest_noise_png_is_accepted():
    data = noise_png(4096, 3906, "L")                               # 15,998,976 pixels: just under 16 MP
    for shape in (MNIST, RGB):
        x, note = image_from_upload(data, shape)
        assert x.shape == (1, *shape) and x.dtype == torch.float32
        assert "PNG 4096×3906" in note and "padded to keep its aspect ratio" in note
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_a_4096x64_strip_is_shrunk_then_padded():
    a = np.zeros((64, 4096, 3), np.uint8)
    a[:, 1536:2560] = 255                                           # the middle quarter is white
    x, note = image_from_upload(encode(Image.fromarray(a), "PNG"), MNIST)
    assert x.shape == (1, *MNIST) and "padded to keep its aspect ratio" in note
    assert "inverted" not in note                                   # the border is mostly black
    row = (28 - 1) // 2                                             # 4096×64 in 28×28: one row, centred
    assert float(x[0, 0, row, 12:16].min()) > 0.9                   # white in the middle
    assert float(x[0, 0, row, :8].max()) < 0.05 and float(x[0, 0, row, 20:].max()) < 0.05
    assert float(x[0, 0, :row].max()) < 0.01 and float(x[0, 0, row + 1:].max()) < 0.01   # padding: black


@pytest.mark.parametrize("size", [(1, 64), (64, 1)], ids=["1x64-line", "64x1-line"])
def test_a_one_pixel_line_at_the_aspect_limit(size):
    a = np.zeros(64, np.uint8)
    a[24:40] = 255                                                  # the middle quarter is white
    image = Image.fromarray(a.reshape(size[1], size[0]))
    x, note = image_from_upload(encode(image, "PNG"), MNIST)
    assert x.shape == (1, *MNIST) and "padded" in note and f"PNG {size[0]}×{size[1]}" in note
    centre = (28 - 1) // 2                                          # one pixel wide, centred
    line = x[0, 0, :, centre] if size[0] == 1 else x[0, 0, centre, :]
    assert float(line[12:16].min()) > 0.9 and float(line[:8].max()) < 0.05 and float(line[20:].max()) < 0.05
    assert abs(float(x.sum() - line.sum())) < 1e-5                  # padding: black, everywhere else


def test_an_ico_with_several_icons_uses_the_largest():
    image = Image.new("RGB", (256, 256), (200, 30, 30))
    x, note = image_from_upload(encode(image, "ICO", sizes=[(16, 16), (32, 32), (256, 256)]), RGB)
    assert x.shape == (1, *RGB) and "ICO 256×256" in note and float(x[0, 0].mean()) > 0.7


def test_a_16_bit_image_of_16_megapixels_is_stretched():
    x, note = image_from_upload(ramp16(4096, 3906), (1, 64, 64), invert=False)
    assert x.shape == (1, 1, 64, 64) and "I;16 pixels scaled to [0, 1]" in note
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.5


def test_a_16_bit_image_is_stretched_by_all_its_pixels():
    """Min and max are those of the full image, not of the shrunk one (a lone bright pixel counts)."""
    a = np.full((1000, 1000), 1000, np.uint16)
    a[500, 500] = 60000
    a[:, :10] = 0
    x, _ = image_from_upload(encode(Image.fromarray(a), "PNG"), MNIST, invert=False)
    assert float(x[0, 0, 14, 20]) < 0.05                            # 1000 of 0..60000, not stretched to white


def test_exif_orientation_turns_the_picture_upright():
    """Stored 60×20 with Orientation 6 (a phone held upright): shown 20×60, so padded left and right."""
    image = Image.new("L", (60, 20), 230)
    exif = Image.Exif()
    exif[0x0112] = 6
    x, note = image_from_upload(encode(image, "JPEG", quality=95, exif=exif), MNIST, invert=False)
    assert "JPEG 60×20" in note and "padded" in note
    assert float(x[0, 0, 2, 14]) > 0.8 and float(x[0, 0, 25, 14]) > 0.8     # content top to bottom
    assert abs(float(x[0, 0, 14, 1]) - 230 / 255) < 0.05                    # padding: the border's colour


def test_a_big_jpeg_is_decoded_at_reduced_size():
    x, note = image_from_upload(encode(photo(4096, 3906), "JPEG", quality=90), RGB)
    assert x.shape == (1, *RGB) and "JPEG 4096×3906" in note
    # the picture's gradients survive: red grows left to right, green top to bottom
    assert float(x[0, 0, 16, -3]) > float(x[0, 0, 16, 2]) + 0.5
    assert float(x[0, 1, -6, 16]) > float(x[0, 1, 6, 16]) + 0.5


def test_transparency_is_still_filled_after_shrinking():
    a = np.zeros((2000, 2000, 4), np.uint8)
    a[500:1500, 900:1100] = (0, 0, 0, 255)                          # black ink on transparency
    x, note = image_from_upload(encode(Image.fromarray(a, "RGBA"), "PNG"), MNIST)
    assert "transparent areas filled with white" in note and "inverted" in note
    assert float(x[0, 0, 14, 14]) > 0.9 and float(x[0, 0, 1, 1]) < 0.05


def test_a_palette_gif_with_a_transparent_key_is_shrunk_as_colours():
    image = Image.new("P", (1200, 1200), 0)
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    image.paste(1, (500, 200, 700, 1000))                           # a black bar on colour 0 ...
    x, note = image_from_upload(encode(image, "GIF", transparency=0), MNIST)   # ... which is transparent
    assert "transparent areas filled with white" in note and "inverted" in note
    assert float(x[0, 0, 14, 14]) > 0.9 and float(x[0, 0, 14, 3]) < 0.05


# --- memory: the worst accepted uploads, each in a fresh process ------------------------------------
MEASURE = r"""
import json, sys
from aecore.lab.inputs import image_from_upload

def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

warm, data, shape = (open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(),
                     tuple(int(v) for v in sys.argv[3].split(",")))
image_from_upload(warm, shape)                       # imports and PIL plugins load outside the measure
try:
    with open("/proc/self/clear_refs", "w") as f:    # reset the high-water mark to the current RSS
        f.write("5")
except OSError:
    pass
before = kb("VmHWM:")
x, note = image_from_upload(data, shape)
print(json.dumps({"rise_mb": (kb("VmHWM:") - before) / 1024, "shape": list(x.shape), "note": note}))
"""


def _worst_uploads() -> dict[str, tuple[bytes, bytes, tuple[int, int, int]]]:
    """name -> (small file of the same format to warm up with, the upload, model input shape)."""
    rgba = noise(4096, 3906, 4, block=4)
    rgba[..., 3] = np.where(rgba[..., 3] > 127, 255, 100)           # half see-through: the premultiplied path
    big = photo(4096, 3906)
    small_png, small_jpeg = encode(Image.new("RGB", (40, 30)), "PNG"), encode(Image.new("RGB", (40, 30)), "JPEG")
    return {
        "RGBA noise PNG 4096×3906": (small_png, encode(Image.fromarray(rgba, "RGBA"), "PNG", compress_level=1),
                                     RGB),
        "grey noise PNG 4096×3906": (small_png, noise_png(4096, 3906, "L"), MNIST),
        "16-bit PNG 4096×3906": (small_png, ramp16(4096, 3906), (1, 64, 64)),
        "RGB strip PNG 4096×64, padded": (small_png, noise_png(4096, 64), RGB),
        "progressive 4:4:4 JPEG 4096×3906": (small_jpeg, encode(big, "JPEG", quality=90, progressive=True,
                                                                subsampling=0), MNIST),
        "progressive CMYK JPEG 4096×3906": (small_jpeg, encode(big.convert("CMYK"), "JPEG", quality=90,
                                                               progressive=True), RGB),
        "RGBA WebP 2828×2828 (8 MP)": (encode(Image.new("RGBA", (40, 30)), "WEBP"),
                                       encode(big.crop((0, 0, 2828, 2828)).convert("RGBA"), "WEBP", quality=50,
                                              method=0), MNIST),
    }


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc/self/status")
def test_worst_accepted_uploads_raise_peak_memory_by_at_most_200_mb(tmp_path):
    rises = {}
    for i, (name, (warm, data, shape)) in enumerate(_worst_uploads().items()):
        assert len(data) <= 20 * 2**20, f"{name}: {len(data)} bytes is over the upload limit"
        (tmp_path / f"{i}.warm").write_bytes(warm)
        (tmp_path / f"{i}.data").write_bytes(data)
        done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / f"{i}.warm"), str(tmp_path / f"{i}.data"),
                               ",".join(map(str, shape))], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["shape"] == [1, *shape], name
        rises[name] = result["rise_mb"]
    print("\npeak RSS rise per upload:\n" + "\n".join(f"  {mb:6.0f} MB  {name}" for name, mb in rises.items()))
    assert max(rises.values()) <= RISE_MB, rises
