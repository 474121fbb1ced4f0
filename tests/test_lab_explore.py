"""aecore.lab.inputs / reconstruct / denoise: own images, selections, PCA baseline, PSNR rows, sweep."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from aecore.errors import ConfigError, DataError
from aecore.evaluate import per_image_mse, psnr
from aecore.lab import denoise as dn
from aecore.lab import reconstruct as rc
from aecore.lab.catalog import Entry
from aecore.lab.inputs import MAX_UPLOAD_BYTES, image_from_canvas, image_from_upload
from aecore.models import build_model
from aecore.noise import Noise, parse_noise
from aecore.pca import PCA

MNIST = (1, 28, 28)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def dark_bar_on_white(size=(120, 120)) -> Image.Image:
    """A black vertical bar on white: how a digit looks on paper."""
    image = Image.new("RGB", size, "white")
    w, h = size
    ImageDraw.Draw(image).rectangle((w // 2 - 6, h // 5, w // 2 + 6, 4 * h // 5), fill="black")
    return image


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header that declares a huge size in a few bytes (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# --- inputs: uploads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_upload_formats_become_white_on_black_model_inputs(fmt):
    x, note = image_from_upload(encode(dark_bar_on_white(), fmt), MNIST)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert "inverted" in note and fmt in note
    # the bar is bright in the middle column, the corners are dark background
    assert float(x[0, 0, 10:18, 13:15].mean()) > 0.8
    assert float(x[0, 0, :3, :3].max()) < 0.1


def test_dark_background_is_not_inverted():
    image = Image.new("L", (56, 56), 0)
    ImageDraw.Draw(image).rectangle((20, 10, 35, 45), fill=255)
    x, note = image_from_upload(encode(image, "PNG"), MNIST)
    assert "inverted" not in note
    assert float(x[0, 0, 14, 14]) > 0.9 and float(x[0, 0, 0, 0]) < 0.01
    forced, note = image_from_upload(encode(image, "PNG"), MNIST, invert=True)
    assert "inverted" in note and torch.allclose(forced, 1 - x, atol=1e-5)


def test_upload_keeps_aspect_ratio_by_padding():
    wide = Image.new("L", (300, 100), 0)
    ImageDraw.Draw(wide).rectangle((100, 0, 199, 99), fill=255)   # a full-height bright square in the middle
    x, note = image_from_upload(encode(wide, "PNG"), MNIST)
    assert "padded" in note and "inverted" not in note
    assert float(x[0, 0, 14, 14]) > 0.9
    # stretched, the square would fill whole columns; padded, it is a square band across the middle
    assert float(x[0, 0, 2, 14]) < 0.05 and float(x[0, 0, 25, 14]) < 0.05
    assert float(x[0, 0, 14, 2]) < 0.05 and float(x[0, 0, 14, 25]) < 0.05


def test_one_pixel_image():
    x, note = image_from_upload(encode(Image.new("L", (1, 1), 200), "PNG"), MNIST)
    assert x.shape == (1, 1, 28, 28)
    assert torch.allclose(x, torch.full_like(x, 1 - 200 / 255), atol=1e-3)   # light: inverted
    assert "1×1" in note


def test_colour_and_grey_conversion_notes():
    red = Image.new("RGB", (20, 20), (200, 30, 30))
    x, note = image_from_upload(encode(red, "PNG"), MNIST, invert=False)
    assert "colour converted to grey" in note
    assert abs(float(x.mean()) - (0.299 * 200 + 0.587 * 30 + 0.114 * 30) / 255) < 1e-3
    rgb, note = image_from_upload(encode(Image.new("L", (20, 20), 100), "PNG"), (3, 32, 32))
    assert rgb.shape == (1, 3, 32, 32) and "repeated over the 3 colour channels" in note
    assert torch.allclose(rgb[:, 0], rgb[:, 2])


def test_animated_gif_uses_first_frame():
    frames = [Image.new("L", (16, 16), v) for v in (0, 255, 128)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    x, note = image_from_upload(data, MNIST)
    assert "first frame" in note and "3 frames" in note
    assert float(x.max()) < 0.01                                   # the black frame, not the white ones


def test_transparent_background_is_filled_then_inverted():
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((15, 5, 25, 35), fill=(0, 0, 0, 255))   # black ink on transparency
    x, note = image_from_upload(encode(image, "PNG"), MNIST)
    assert "transparent areas filled with white" in note and "inverted" in note
    assert float(x[0, 0, 14, 14]) > 0.9 and float(x[0, 0, 0, 0]) < 0.05


def test_sixteen_bit_grey_is_scaled():
    ramp = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 10).astype(np.uint16))
    x, note = image_from_upload(encode(ramp, "PNG"), (1, 8, 8), invert=False)
    assert "scaled to [0, 1]" in note and x.shape == (1, 1, 8, 8)
    assert float(x[0, 0, 0].mean()) < 0.1 < 0.9 < float(x[0, 0, -1].mean())


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is a text file, not a picture" * 3, "not an image"),
    (bytes(range(256)) * 4, "not an image"),
    (png_declaring(100_000, 100_000), "megapixels"),
    (png_declaring(8_000, 8_000), "64 megapixels"),
    (b"\x89PNG" + b"\0" * (MAX_UPLOAD_BYTES + 1), "20 MB"),
])
def test_refused_uploads_name_the_problem(data, message):
    with pytest.raises(DataError, match=message):
        image_from_upload(data, MNIST)


def test_truncated_file_is_refused():
    data = encode(dark_bar_on_white((200, 200)), "PNG")
    with pytest.raises(DataError, match="damaged or truncated"):
        image_from_upload(data[: len(data) // 2], MNIST)


def test_flat_model_inputs_are_refused():
    with pytest.raises(DataError, match=r"shape \[784\]"):
        image_from_upload(encode(dark_bar_on_white(), "PNG"), (784,))


# --- inputs: canvas ----------------------------------------------------------------------------------
def test_canvas_drawing_is_cropped_fitted_and_centred():
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[..., 3] = 255
    canvas[10:110, 200:230, :3] = 255                           # a stroke in the top-right corner
    x, note = image_from_canvas(canvas, MNIST)
    assert x.shape == (1, 1, 28, 28) and "centred" in note
    ys, xs = torch.nonzero(x[0, 0] > 0.5, as_tuple=True)
    assert abs(float(ys.float().mean()) - 13.5) <= 1 and abs(float(xs.float().mean()) - 13.5) <= 1
    assert int(ys.max() - ys.min()) + 1 <= 20                     # fits the 20-pixel box, like MNIST


def test_canvas_with_transparent_background_matches_black_background():
    black = np.zeros((100, 100, 4), dtype=np.uint8)
    black[..., 3] = 255
    black[30:70, 45:55, :3] = 255
    clear = np.zeros_like(black)
    clear[30:70, 45:55] = 255                                    # strokes opaque, the rest alpha 0
    assert torch.allclose(image_from_canvas(black, MNIST)[0], image_from_canvas(clear, MNIST)[0])


def test_empty_or_malformed_canvas_is_refused():
    with pytest.raises(DataError, match="empty"):
        image_from_canvas(np.zeros((50, 50, 4), dtype=np.uint8), MNIST)
    with pytest.raises(DataError, match="RGBA"):
        image_from_canvas(np.zeros((50, 50), dtype=np.uint8), MNIST)


# --- reconstruct -------------------------------------------------------------------------------------
LABELS = torch.arange(100) % 10


def test_select_indices_modes():
    a = rc.select_indices(LABELS, 12, "random", seed=3)
    assert torch.equal(a, rc.select_indices(LABELS, 12, "random", seed=3))
    assert not torch.equal(a, rc.select_indices(LABELS, 12, "random", seed=4))
    assert len(set(a.tolist())) == 12
    c = rc.select_indices(LABELS, 5, "class", seed=0, klass=7)
    assert len(c) == 5 and bool((LABELS[c] == 7).all())
    assert len(rc.select_indices(LABELS, 50, "class", klass=7)) == 10      # the class only has 10
    assert rc.select_indices(LABELS, 4, "index", start=97).tolist() == [97, 98, 99]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"mode": "index", "start": 100}, ConfigError, "outside the split"),
    ({"mode": "class", "klass": 11}, DataError, "no images"),
    ({"mode": "sideways"}, ConfigError, "unknown selection"),
])
def test_select_indices_refusals(kwargs, error, message):
    with pytest.raises(error, match=message):
        rc.select_indices(LABELS, 3, **kwargs)


def small(name: str, **config):
    torch.manual_seed(0)
    return build_model(name, dict(config, input_shape=[1, 8, 8])).eval()


def test_compare_errors_match_evaluate_and_full_pca_is_exact():
    model = small("ae", hidden=[16], latent_dim=4)
    x = torch.rand(6, 1, 8, 8)
    pca = PCA.fit(torch.rand(200, 1, 8, 8), 64)
    cmp = rc.compare(model, x, pca)
    assert cmp.recon.shape == x.shape and cmp.pca.shape == x.shape
    assert torch.allclose(cmp.mse, per_image_mse(model.reconstruct(x), x))
    assert float(cmp.pca_mse.max()) < 1e-8                        # all 64 components: exact
    assert rc.compare(model, x).pca is None


def test_pca_components_follow_the_code():
    assert rc.pca_components(small("ae", hidden=[16], latent_dim=4), 64, 1000)[0] == 4
    k, note = rc.pca_components(small("sparse-ae", latent_dim=100), 64, 1000)
    assert k == 64 and "at most 64" in note                       # overcomplete code: capped
    k, note = rc.pca_components(small("unet", base_channels=4, depth=2, latent_dim=8), 64, 1000)
    assert k is None and "skip" in note


def test_comparison_grid_layout():
    rows = [torch.rand(10, 1, 28, 28) for _ in range(3)]
    one = rc.comparison_grid(rows, per_band=16, scale=1)
    assert one.shape == (3 * 30 + 2, 10 * 30 + 2, 3) and one.dtype == np.uint8
    bands = rc.comparison_grid(rows, per_band=4, scale=2, gap=8)   # 3 bands of 4, 4 and 2 columns
    assert bands.shape == (2 * (3 * (3 * 30 + 2) + 2 * 8), 2 * (4 * 30 + 2), 3)
    with pytest.raises(ConfigError, match="same number"):
        rc.comparison_grid([rows[0], rows[1][:5]])


def test_metric_cards():
    cards = rc.metric_cards({"mse": 0.02, "pca_mse": 0.03, "pca_components": 32, "psnr": 18.5, "noise": "gaussian:0.5",
                             "psnr_gain": 4.25, "parameters": 123456, "n": 10000, "split": "test",
                             "accuracy": float("nan"), "custom_score": 0.123456, "training": {"seconds": 3}})
    by_label = {c.label: c for c in cards}
    assert by_label["Test MSE"].value == "0.02000" and by_label["Test MSE"].delta == "-0.01000 vs PCA"
    assert by_label["Test MSE"].delta_color == "inverse"
    assert by_label["PCA MSE (32 comp.)"].value == "0.03000"
    assert by_label["PSNR"].value == "18.50 dB" and by_label["Denoising gain"].value == "+4.25 dB"
    assert "gaussian:0.5" in by_label["Denoising gain"].help
    assert by_label["Parameters"].value == "123,456" and by_label["custom score"].value == "0.1235"
    assert "Accuracy" not in by_label and "n" not in by_label      # NaN and bookkeeping left out
    assert rc.metric_cards({}) == []
    anytime = rc.metric_cards({"mse_top10": 0.02, "mse_top1": 0.06, "l0": 25.0, "dead_units_train": 0.0039})
    assert [(c.label, c.value) for c in anytime] == [
        ("Active units per image (L0)", "25.0"), ("Dead units", "0.4 %"),
        ("MSE, top 1 units", "0.06000"), ("MSE, top 10 units", "0.02000")]
    assert rc.metrics_scope({"n": 10000, "split": "test", "dataset": "mnist"}) == "10,000 test images of mnist"


def test_error_figure_has_model_and_pca_bars():
    cmp = rc.Comparison(original=torch.zeros(2, 1, 2, 2), recon=torch.zeros(2, 1, 2, 2), mse=torch.tensor([0.1, 0.2]),
                        pca_mse=torch.tensor([0.3, 0.1]))
    fig = rc.error_figure(cmp, ["#1", "#2"], model_name="ae")
    assert [t.name for t in fig.data] == ["ae", "PCA"] and list(fig.data[1].y) == pytest.approx([0.3, 0.1])


# --- denoise -----------------------------------------------------------------------------------------
def test_corruption_is_seeded():
    x = torch.rand(4, 1, 8, 8)
    noise = Noise("gaussian", 0.3)
    assert torch.equal(dn.corrupt(x, noise, 1), dn.corrupt(x, noise, 1))
    assert not torch.equal(dn.corrupt(x, noise, 1), dn.corrupt(x, noise, 2))


def test_demo_rows_and_psnr():
    model, plain = small("ae", hidden=[16], latent_dim=4), small("ae", hidden=[8], latent_dim=2)
    clean = torch.rand(5, 1, 8, 8)
    out = dn.demo(model, clean, Noise("saltpepper", 0.2), seed=7, plain=plain)
    assert torch.equal(out.noisy, dn.corrupt(clean, Noise("saltpepper", 0.2), 7))
    assert torch.allclose(out.denoised, model.reconstruct(out.noisy))
    assert torch.allclose(out.psnr["corrupted"], psnr(out.noisy, clean))
    assert torch.allclose(out.psnr["plain"], psnr(plain.reconstruct(out.noisy), clean))
    assert len(out.rows()) == 4 and len(dn.demo(model, clean, Noise("masking", 0.1)).rows()) == 3
    identical = dn.demo(model, clean, Noise("masking", 0.0))
    assert dn.fmt_psnr(float(identical.psnr["corrupted"].mean())) == "∞ (identical)"


@pytest.mark.parametrize("kind", ["gaussian", "masking", "saltpepper"])
def test_sweep_noisy_psnr_never_rises_with_the_level(kind):
    """Same seed at every level: the corruption only grows (nested masks, scaled noise), so the noisy
    input's PSNR cannot rise; a model's curve at a level equals the demo's number there."""
    torch.manual_seed(1)
    clean = torch.rand(20, 1, 8, 8)
    model = small("ae", hidden=[16], latent_dim=4)
    result = dn.sweep({"a": model, "b": model}, clean, kind, seed=5)
    noisy = result["psnr"][dn.NOISY]
    assert len(noisy) == len(result["levels"]) == len(result["psnr"]["a"])
    assert noisy[0] == pytest.approx(dn.IDENTICAL_PSNR)
    assert all(later <= earlier + 1e-6 for earlier, later in zip(noisy, noisy[1:]))
    assert noisy[-1] < noisy[1]
    assert result["psnr"]["a"] == result["psnr"]["b"]             # same images, same noisy pixels
    level = result["levels"][3]
    demo = dn.demo(model, clean, Noise(kind, level), seed=5)
    assert result["psnr"]["a"][3] == pytest.approx(float(demo.psnr["denoised"].mean()), abs=1e-5)
    fig = dn.sweep_figure(result, current=level)
    assert [t.name for t in fig.data] == [dn.NOISY, "a", "b", "slider"] and fig.data[0].y[0] is None
    assert list(fig.data[-1].x) == [level, level]                 # the slider's level, a dotted line


def entry(ref: str, model: str = "ae") -> Entry:
    return Entry(ref=ref, label=ref.rsplit("/", 1)[-1], model=model, dataset="mnist", about="")


def facts(noise: str | None = None, latent: int | None = 32, task: str | None = None) -> dn.Facts:
    return dn.Facts(noise=parse_noise(noise), latent_dim=latent, task=task)


def test_preferred_denoiser_and_plain_ae():
    entries = [entry("mnist/ae-d2"), entry("mnist/ae-d32"), entry("mnist/ae-d64"), entry("user:mine"),
               entry("mnist/dae-gaussian"), entry("mnist/unet-denoise", "unet"), entry("user:my-dae"),
               entry("mnist/dae-masking")]
    known = {"mnist/ae-d2": facts(latent=2), "mnist/ae-d32": facts(), "mnist/ae-d64": facts(latent=64),
             "user:mine": facts(latent=128), "mnist/dae-gaussian": facts("gaussian:0.5", 64),
             "mnist/unet-denoise": facts("gaussian:0.5", task="denoise"), "user:my-dae": facts("saltpepper:0.1"),
             "mnist/dae-masking": facts("masking:0.5", 64)}
    assert dn.preferred_model(entries, known, "gaussian") == "mnist/dae-gaussian"
    assert dn.preferred_model(entries, known, "masking") == "mnist/dae-masking"
    assert dn.preferred_model(entries, known, "saltpepper") == "user:my-dae"    # the only one there is
    assert dn.preferred_model(entries[:4], known, "gaussian") is None
    plain = lambda pool, size: dn.plain_ae(pool, known, code_size=size).ref  # noqa: E731
    assert plain(entries, 64) == "mnist/ae-d64" and plain(entries, 32) == "mnist/ae-d32"   # nearest code size
    assert plain(entries, 4) == "mnist/ae-d2"                          # by ratio: 4/2 is nearer than 32/4
    assert plain(entries, 128) == "mnist/ae-d64"                       # a tie (2x either way): the smaller code
    assert plain(entries, None) == "mnist/ae-d64"                      # unknown: the largest; user models never
    without = [e for e in entries if e.ref != "mnist/ae-d64"]
    assert plain(without, 64) == "mnist/ae-d32"                        # the shipped zoo: dae-* (64-D) -> ae-d32
    assert dn.plain_ae([entries[3], entries[4]], known, code_size=64) is None


def test_training_noise_and_url_noise():
    assert dn.training_noise({"recipe": {"noise": "masking:0.25"}}) == Noise("masking", 0.25)
    assert dn.training_noise({"recipe": {"noise": None}}) is None and dn.training_noise({}) is None
    assert dn.training_noise({"recipe": {"noise": "boiling:3"}}) is None
    assert dn.noise_from_url("saltpepper:0.3") == Noise("saltpepper", 0.3)
    for bad in (None, "", "bogus", "gaussian:abc", "gaussian:5"):
        assert dn.noise_from_url(bad) == Noise("gaussian", 0.5)


def test_segmenting_unet_is_no_denoiser():
    seg = small("unet", base_channels=4, depth=2, latent_dim=8, task="segment")
    assert "segment" in dn.why_not(seg)
    assert dn.why_not(small("unet", base_channels=4, depth=2, latent_dim=8)) is None
    assert not dn.can_denoise(entry("user:seg", "unet"), facts(task="segment"))
    assert dn.can_denoise(entry("mnist/unet-denoise", "unet"), facts(task="denoise"))
