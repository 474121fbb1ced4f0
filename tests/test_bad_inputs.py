"""A corpus of bad inputs: each row is one file or value a user may offer, and what it must get.

Refused inputs raise the specific AecoreError subclass with a message naming the problem (and, on
the command line, one line on stderr, exit code 2, no traceback). Images that are odd but readable
(1x1, 16-bit, CMYK, animated) are converted, with a note saying what was done.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from aecore.cli import main
from aecore.data import load_dataset
from aecore.errors import ConfigError, DataError, ModelFileError
from aecore.lab.inputs import image_from_upload
from aecore.models import build_model, make_config
from aecore.store import CONFIG, WEIGHTS, load_model, save_model
from aecore.train import TrainConfig
from tests.test_cli import error_lines

MNIST = (1, 28, 28)
RGB = (3, 8, 8)


def cli(*argv: str, capsys) -> tuple[int, str]:
    """Run the in-process CLI; (exit code, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:          # argparse exits by itself
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err


# --- builders -------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise_image(mode: str = "RGB", size=(64, 64), seed: int = 0) -> Image.Image:
    channels = {"RGB": 3, "L": 1}[mode]
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if channels == 1 else a)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header that declares width x height pixels in a few bytes: a decompression bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def gif_declaring(width: int, height: int) -> bytes:
    screen = struct.pack("<HH", width, height) + b"\x00\x00\x00"
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_bad_crc() -> bytes:
    data = bytearray(encode(noise_image(), "PNG"))
    data[29] ^= 0xFF                               # the IHDR chunk's CRC
    return bytes(data)


def png_bad_idat() -> bytes:
    data = bytearray(encode(noise_image(), "PNG"))
    at = data.index(b"IDAT") + 4
    data[at:at + 36] = bytes(36)                   # the compressed pixels: zeros are no zlib stream
    return bytes(data)


def jpeg_bad_huffman() -> bytes:
    data = bytearray(encode(noise_image(), "JPEG"))
    at = data.index(b"\xff\xc4") + 4
    data[at:at + 26] = b"\xff" * 26                # the Huffman table
    return bytes(data)


def jpeg_zero_size() -> bytes:
    data = bytearray(encode(noise_image(), "JPEG"))
    at = data.index(b"\xff\xc0") + 5
    data[at:at + 4] = bytes(4)                     # the frame header's height and width
    return bytes(data)


def float_tiff_with_nan() -> bytes:
    a = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    a[3, 3] = np.nan
    return encode(Image.fromarray(a), "TIFF")


# --- uploads: refused ----------------------------------------------------------------------------
UPLOAD_REFUSED = [
    pytest.param(lambda: b"", "the file is empty", id="upload-empty-file"),
    pytest.param(lambda: truncated(encode(noise_image(), "PNG")), "damaged or truncated", id="upload-truncated-png"),
    pytest.param(lambda: encode(noise_image(), "PNG")[:20], "not an image that can be read",
                 id="upload-png-cut-in-its-header"),
    pytest.param(png_bad_crc, "not an image that can be read", id="upload-png-header-crc"),
    pytest.param(png_bad_idat, "damaged or truncated", id="upload-png-corrupt-pixels"),
    pytest.param(lambda: truncated(encode(noise_image(), "JPEG")), "damaged or truncated", id="upload-truncated-jpeg"),
    pytest.param(jpeg_bad_huffman, "damaged or truncated", id="upload-jpeg-corrupt-huffman-table"),
    pytest.param(jpeg_zero_size, "not an image that can be read", id="upload-jpeg-0x0-frame"),
    pytest.param(lambda: png_declaring(100_000, 100_000), "decompression bomb", id="upload-png-bomb-100000x100000"),
    pytest.param(lambda: gif_declaring(65_535, 65_535), "decompression bomb", id="upload-gif-bomb"),
    pytest.param(lambda: b"name,value\n" * 20, "not an image that can be read", id="upload-text-named-png"),
    pytest.param(lambda: b"%PDF-1.4\n" + bytes(range(256)), "not an image that can be read", id="upload-pdf"),
    # PostScript goes to PIL's EPS plugin, which runs Ghostscript on it: never offered to PIL
    pytest.param(lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
                 "not an image that can be read", id="upload-eps-never-reaches-ghostscript"),
    pytest.param(float_tiff_with_nan, "NaN or infinite pixel values", id="upload-float-tiff-with-nan"),
]


@pytest.mark.parametrize("make, fragment", UPLOAD_REFUSED)
def test_refused_upload(make, fragment):
    with pytest.raises(DataError) as info:
        image_from_upload(make(), MNIST)
    assert fragment in str(info.value)


# --- uploads: readable, converted with a note ---------------------------------------------------
def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (24, 24), (0, 255, 0, 0)), "JPEG", quality=95)   # magenta


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)


def ramp16() -> bytes:
    return encode(Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)), "PNG")


def check_1x1(x):
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([10, 200, 60]) / 255, atol=1e-3)   # its colour, everywhere
    assert float((x - x[..., :1, :1]).abs().max()) < 1e-3


def check_cmyk(x):
    red, green, blue = (float(x[0, c].mean()) for c in range(3))
    assert red > 0.8 and blue > 0.8 and green < 0.2


def check_gif(x):
    assert float(x[0, 0].mean()) > 0.9 and float(x[0, 1:].max()) < 0.1    # the red first frame


def check_ramp(x):
    assert float(x[0, 0, 0].mean()) < 0.1 and float(x[0, 0, -1].mean()) > 0.9   # stretched over [0, 1]


def check_white(x):
    assert torch.allclose(x, torch.ones_like(x))


UPLOAD_CONVERTED = [
    pytest.param(lambda: encode(Image.new("RGB", (1, 1), (10, 200, 60)), "PNG"), "PNG 1×1", check_1x1,
                 id="upload-1x1-rgb"),
    pytest.param(ramp16, "I;16 pixels scaled to [0, 1]", check_ramp, id="upload-16-bit-png"),
    pytest.param(lambda: encode(Image.fromarray(np.full((9, 9), 65535, np.uint16)), "PNG"),
                 "uniform I;16 image: grey level 1.00", check_white, id="upload-uniform-16-bit-png"),
    pytest.param(cmyk_jpeg, "CMYK colours converted to RGB", check_cmyk, id="upload-cmyk-jpeg"),
    pytest.param(animated_gif, "animated (3 frames): the first frame is used", check_gif, id="upload-animated-gif"),
]


@pytest.mark.parametrize("make, note_fragment, check", UPLOAD_CONVERTED)
def test_readable_upload_is_converted_with_a_note(make, note_fragment, check):
    x, note = image_from_upload(make(), RGB)
    assert note_fragment in note
    assert x.shape == (1, *RGB) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    check(x)
    grey, _ = image_from_upload(make(), MNIST)            # and for a grey model
    assert grey.shape == (1, *MNIST) and 0.0 <= float(grey.min()) and float(grey.max()) <= 1.0


# --- model folders: config.json, model.safetensors, pickles ---------------------------------------
def tiny_model():
    return build_model("ae", {"input_shape": [1, 8, 8], "hidden": [16], "latent_dim": 3})


def saved(tmp_path: Path) -> Path:
    return save_model(tiny_model(), tmp_path / "m", dataset="digits", recipe={"epochs": 1, "lr": 1e-3})


def config_edit(change):
    def make(tmp_path: Path) -> Path:
        path = saved(tmp_path)
        info = json.loads((path / CONFIG).read_text())
        change(info)
        (path / CONFIG).write_text(json.dumps(info))
        return path
    return make


def config_text(text: str):
    def make(tmp_path: Path) -> Path:
        path = saved(tmp_path)
        (path / CONFIG).write_text(text)
        return path
    return make


def metrics_text(text: str):
    def make(tmp_path: Path) -> Path:
        path = saved(tmp_path)
        (path / "metrics.json").write_text(text)
        return path
    return make


def drop_weights_sum(path: Path) -> None:
    """As a hand-made config.json would be: no weights_sha256, so only the weight checks can object."""
    info = json.loads((path / CONFIG).read_text())
    info.pop("weights_sha256")
    (path / CONFIG).write_text(json.dumps(info))


def weights_edit(change, *, keep_sum: bool = False):
    def make(tmp_path: Path) -> Path:
        path = saved(tmp_path)
        state = load_file(str(path / WEIGHTS))
        change(state)
        save_file(state, str(path / WEIGHTS))
        if not keep_sum:
            drop_weights_sum(path)
        return path
    return make


def weights_bytes(change):
    def make(tmp_path: Path) -> Path:
        path = saved(tmp_path)
        (path / WEIGHTS).write_bytes(change((path / WEIGHTS).read_bytes()))
        drop_weights_sum(path)
        return path
    return make


def nan_at(key: str, value: float):
    return lambda state: state[key].view(-1).__setitem__(0, value)


MODEL_REFUSED = [
    pytest.param(config_text("{not json"), "not valid JSON", id="config-invalid-json"),
    pytest.param(config_text(""), "not valid JSON", id="config-empty"),
    pytest.param(config_text("[" * 100_000 + "]" * 100_000), "nested too deeply", id="config-nested-100000-deep"),
    pytest.param(config_text("[1, 2]"), "expected a JSON object", id="config-a-list"),
    pytest.param(config_text('{"model": "ae", "config": {"latent_dim": 1' + "0" * 5000 + '}}'),
                 "Exceeds the limit (4300 digits)", id="config-5000-digit-integer"),
    pytest.param(config_text('{"model": "ae", "config": {"latent_dim": 1e999}}'), "latent_dim: expected an integer",
                 id="config-float-overflowing-to-inf"),
    pytest.param(config_text('{"model": "ae", "config": {"latent_dim": NaN}}'), "latent_dim: expected an integer",
                 id="config-nan-literal"),
    pytest.param(config_edit(lambda i: i.update(notes=["a", "list"])), "field 'notes' must be a string",
                 id="config-notes-not-text"),
    pytest.param(metrics_text('{"mse": 1' + "0" * 5000 + '}'), "Exceeds the limit (4300 digits)",
                 id="metrics-5000-digit-integer"),
    pytest.param(metrics_text("[" * 100_000 + "]" * 100_000), "nested too deeply", id="metrics-nested-100000-deep"),
    pytest.param(metrics_text("[0.5]"), "expected a JSON object", id="metrics-a-list"),
    pytest.param(metrics_text("{oops"), "not valid JSON", id="metrics-invalid-json"),
    pytest.param(config_edit(lambda i: i.update(model="no-such-model")), "unknown model 'no-such-model'",
                 id="config-unknown-model"),
    pytest.param(config_edit(lambda i: i.pop("model")), "missing field 'model'", id="config-missing-model"),
    pytest.param(config_edit(lambda i: i.update(surprise=1)), "unknown field(s) surprise", id="config-extra-field"),
    pytest.param(config_edit(lambda i: i.update(config=[16, 3])), "field 'config' must be a JSON object",
                 id="config-config-not-an-object"),
    pytest.param(config_edit(lambda i: i["config"].update(latent_dim="3")), "latent_dim: expected an integer",
                 id="config-latent-a-string"),
    pytest.param(config_edit(lambda i: i["config"].update(latent_dim=0)), "latent_dim = 0 is out of range",
                 id="config-latent-0"),
    pytest.param(config_edit(lambda i: i["config"].update(latent_dim=10**9)),
                 "latent_dim = 1000000000 is out of range", id="config-latent-1e9"),
    pytest.param(config_edit(lambda i: i["config"].update(hidden=[-4])), "hidden entries = -4 is out of range",
                 id="config-negative-width"),
    pytest.param(config_edit(lambda i: i["config"].update(hidden=[65536] * 4)), "GB for its weights alone",
                 id="config-describes-a-model-of-50-GB"),
    pytest.param(config_edit(lambda i: i.update(input_shape=[3, 32, 32])), "field 'input_shape' must be",
                 id="config-input-shape-disagrees"),
    pytest.param(config_edit(lambda i: i.update(classes="0123456789")), "field 'classes' must be a list of strings",
                 id="config-classes-a-string"),
    pytest.param(config_edit(lambda i: i.update(dataset=7)), "field 'dataset' must be a string",
                 id="config-dataset-a-number"),
    pytest.param(config_edit(lambda i: i["recipe"].update(noise="gaussian:-0.5")), "gaussian sigma must be in",
                 id="config-recipe-negative-noise"),
    pytest.param(config_edit(lambda i: i["recipe"].update(noise="masking:1.5")), "fraction nu must be in [0, 1]",
                 id="config-recipe-nu-above-1"),
    pytest.param(config_edit(lambda i: i["recipe"].update(lr=0)), "recipe: lr = 0.0 is out of range",
                 id="config-recipe-lr-0"),
    pytest.param(config_edit(lambda i: i["recipe"].update(lr=-0.1)), "recipe: lr = -0.1 is out of range",
                 id="config-recipe-lr-negative"),
    pytest.param(config_edit(lambda i: i["recipe"].update(epochs=0)), "recipe: epochs = 0 is out of range",
                 id="config-recipe-epochs-0"),
    pytest.param(weights_edit(lambda s: s["decoder.0.bias"].add_(1), keep_sum=True),
                 "does not match the weights_sha256 in config.json", id="weights-changed-after-saving"),
    pytest.param(weights_bytes(truncated), "not a readable safetensors file", id="weights-truncated"),
    pytest.param(weights_bytes(lambda b: b""), "not a readable safetensors file", id="weights-empty-file"),
    pytest.param(weights_bytes(lambda b: struct.pack("<Q", 1 << 62) + b[8:]), "header too large",
                 id="weights-header-declares-2**62-bytes"),
    pytest.param(weights_edit(lambda s: s.update({"encoder.0.weight": torch.zeros(5, 5)})),
                 "tensor 'encoder.0.weight' has shape [5, 5], the config needs [16, 64]", id="weights-wrong-shape"),
    pytest.param(weights_edit(lambda s: s.update({"encoder.0.bias": torch.zeros(16, dtype=torch.int32)})),
                 "tensor 'encoder.0.bias' has dtype torch.int32", id="weights-wrong-dtype"),
    pytest.param(weights_edit(nan_at("encoder.0.weight", float("nan"))),
                 "tensor 'encoder.0.weight' contains NaN or Inf", id="weights-nan"),
    pytest.param(weights_edit(nan_at("decoder.0.bias", float("inf"))),
                 "tensor 'decoder.0.bias' contains NaN or Inf", id="weights-inf"),
    pytest.param(weights_edit(lambda s: s.update({"decoder.0.bias": torch.full((16,), 1e300, dtype=torch.float64)})),
                 "tensor 'decoder.0.bias' has values beyond the torch.float32 range", id="weights-float64-overflow"),
]


@pytest.mark.parametrize("make, fragment", MODEL_REFUSED)
def test_refused_model_folder(tmp_path, capsys, make, fragment):
    path = make(tmp_path)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert fragment in str(info.value)
    assert_one_line(*cli("eval", str(path), capsys=capsys), fragment)   # the command line says the same


# --- pickles offered as models: refused, never unpickled ------------------------------------------
class Marker:
    """Unpickling this creates the file `path`: proof that the bytes were unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_as(name: str, *, folder: bool):
    def make(tmp_path: Path) -> tuple[Path, Path]:
        marker = tmp_path / "unpickled.marker"
        payload = pickle.dumps(Marker(marker))
        if name.endswith(".pt"):                         # a torch.save file: a zip around the pickle
            buffer = io.BytesIO()
            torch.save({"state": Marker(marker)}, buffer)
            payload = buffer.getvalue()
        target = tmp_path / "offered"
        if folder:
            target.mkdir()
            (target / name).write_bytes(payload)
        else:
            target = tmp_path / name
            target.write_bytes(payload)
        return target, marker
    return make


PICKLES = [
    pytest.param(pickle_as("model.pt", folder=False), "never loaded", id="pickle-torch-save-pt"),
    pytest.param(pickle_as("model.pkl", folder=False), "never loaded", id="pickle-pkl"),
    pytest.param(pickle_as("weights", folder=False), "looks like a pickle", id="pickle-without-extension"),
    pytest.param(pickle_as("model.pt", folder=True), "pickle files are never loaded", id="pickle-in-a-model-folder"),
]


def test_the_marker_pickle_really_runs_code(tmp_path):
    """The corpus' pickles are live: unpickling them does create the marker (so its absence means something)."""
    marker = tmp_path / "live.marker"
    pickle.loads(pickle.dumps(Marker(marker)))
    assert marker.exists()


@pytest.mark.parametrize("make, fragment", PICKLES)
def test_pickle_is_refused_and_never_unpickled(tmp_path, capsys, make, fragment):
    target, marker = make(tmp_path)
    with pytest.raises(ModelFileError) as info:
        load_model(target)
    assert fragment in str(info.value)
    assert_one_line(*cli("eval", str(target), capsys=capsys), fragment)
    assert not marker.exists()


def test_pickle_through_a_real_process(tmp_path):
    target, marker = pickle_as("model.pkl", folder=False)(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "aecore", "eval", str(target)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "never loaded" in proc.stderr
    assert not marker.exists()


# --- IDX files (MNIST layout) ---------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def mnist_dir(images: bytes, labels: bytes, *, gz: bool = True):
    def make(tmp_path: Path) -> Path:
        folder = tmp_path / "data" / "mnist"
        folder.mkdir(parents=True)
        suffix = ".gz" if gz else ""
        pack = gzip.compress if gz else (lambda b: b)
        (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(pack(images))
        (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(pack(labels))
        return tmp_path / "data"
    return make


IMAGES = idx_bytes(np.random.default_rng(0).integers(0, 256, (3, 28, 28)))
LABELS = idx_bytes(np.array([1, 2, 3]))

IDX_REFUSED = [
    pytest.param(mnist_dir(LABELS, LABELS), "wrong magic number 0x00000801, expected images", id="idx-wrong-magic"),
    pytest.param(mnist_dir(b"\x12\x34" + IMAGES[2:], LABELS), "not an IDX file (bad magic number", id="idx-no-magic"),
    pytest.param(mnist_dir(IMAGES, idx_bytes(np.array([1, 2]))), "holds 3 images but", id="idx-wrong-counts"),
    pytest.param(mnist_dir(IMAGES[:-100], LABELS), "truncated: header declares 3x28x28 = 2352 bytes",
                 id="idx-truncated-body"),
    pytest.param(mnist_dir(IMAGES + b"extra", LABELS), "5 unexpected extra bytes", id="idx-extra-bytes"),
    pytest.param(mnist_dir(bytes([0, 0, 0x08, 255]) + bytes(1020), LABELS), "declares 255 dimensions",
                 id="idx-255-dimensions"),
    pytest.param(mnist_dir(bytes([0, 0, 0x0D, 3]) + IMAGES[4:], LABELS), "unsupported IDX element type 0x0d",
                 id="idx-float-elements"),
    pytest.param(mnist_dir(IMAGES, LABELS), "checksum mismatch for", id="idx-checksum-mismatch"),
]


@pytest.mark.parametrize("make, fragment", IDX_REFUSED)
def test_refused_idx_files(tmp_path, make, fragment):
    data_dir = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", data_dir=data_dir)
    assert fragment in str(info.value)


def test_broken_gzip_idx(tmp_path):
    data_dir = mnist_dir(IMAGES, LABELS)(tmp_path)
    file = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    file.write_bytes(file.read_bytes()[:-12])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load_dataset("mnist", "test", data_dir=data_dir)


# --- config values (library layer) ----------------------------------------------------------------
CONFIG_REFUSED = [
    pytest.param(lambda: make_config("no-such-model"), "unknown model 'no-such-model'", id="value-unknown-model"),
    pytest.param(lambda: make_config("ae", latent_dim=0), "latent_dim = 0 is out of range", id="value-latent-0"),
    pytest.param(lambda: make_config("vae", latent_dim=10**9), "latent_dim = 1000000000 is out of range",
                 id="value-latent-1e9"),
    pytest.param(lambda: make_config("ae", [32]), "ae config must be a mapping", id="value-config-a-list"),
    pytest.param(lambda: make_config("ae", colour=True), "unknown field(s) colour", id="value-extra-field"),
    pytest.param(lambda: make_config("ae", latent_dim=2.5), "latent_dim: expected an integer", id="value-latent-float"),
    pytest.param(lambda: TrainConfig.from_dict({"noise": "gaussian:-1"}), "noise 'gaussian:-1'",
                 id="value-negative-noise"),
    pytest.param(lambda: TrainConfig.from_dict({"noise": "saltpepper:1.01"}), "fraction nu must be in [0, 1]",
                 id="value-nu-above-1"),
    pytest.param(lambda: TrainConfig.from_dict({"lr": 0.0}), "lr = 0.0 is out of range", id="value-lr-0"),
    pytest.param(lambda: TrainConfig.from_dict({"epochs": 0}), "epochs = 0 is out of range", id="value-epochs-0"),
    pytest.param(lambda: TrainConfig.from_dict({"epochs": "10"}), "epochs: expected an integer",
                 id="value-epochs-a-string"),
]


@pytest.mark.parametrize("make, fragment", CONFIG_REFUSED)
def test_refused_config_values(make, fragment):
    with pytest.raises(ConfigError) as info:
        make()
    assert fragment in str(info.value)


# --- folder:PATH datasets ------------------------------------------------------------------------
def write_image(path: Path, image: Image.Image, fmt: str, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, fmt, **options))


def messy_folder(root: Path) -> Path:
    """Mixed sizes and modes (converted), unreadable files (skipped), empty class folders."""
    write_image(root / "cats" / "wide.png", noise_image("RGB", (50, 20)), "PNG")
    write_image(root / "cats" / "grey.jpg", noise_image("L", (9, 13)), "JPEG")
    write_image(root / "cats" / "cmyk.jpg", Image.new("CMYK", (12, 12), (0, 255, 0, 0)), "JPEG")
    write_image(root / "cats" / "deep.png", Image.fromarray(np.full((6, 6), 40000, np.uint16)), "PNG")
    write_image(root / "cats" / "tiny.png", Image.new("RGBA", (1, 1), (0, 0, 0, 0)), "PNG")
    write_image(root / "dogs" / "anim.gif", Image.new("L", (16, 16), 90), "GIF",
                save_all=True, append_images=[Image.new("L", (16, 16), 200)])
    (root / "dogs" / "cut.png").write_bytes(truncated(encode(noise_image(), "PNG")))
    (root / "dogs" / "notes.png").write_bytes(b"not a picture\n" * 5)
    (root / "dogs" / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    (root / "broken").mkdir()
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "empty").mkdir()
    return root


def test_folder_converts_mixed_images_and_names_what_it_left_out(tmp_path, caplog):
    caplog.set_level("WARNING", logger="aecore.data")
    data = load_dataset(f"folder:{messy_folder(tmp_path / 'pics')}", size=8, test_fraction=0)
    assert data.images.shape == (6, 3, 8, 8) and data.images.dtype == torch.uint8
    assert data.classes == ["broken", "cats", "dogs"]
    assert torch.bincount(data.labels, minlength=3).tolist() == [0, 5, 1]
    assert "4 unreadable files skipped" in data.source
    assert "left out 1 folder(s) without image files: empty" in data.source
    assert "no readable image in class(es) broken" in data.source
    assert any("no readable image in class(es) broken" in r.getMessage() for r in caplog.records)


def test_folder_splits_share_one_class_list(tmp_path):
    """A class missing from test/ must not shift the test labels (train 'b' = test 'b')."""
    for split, classes in (("train", "abc"), ("test", "bc")):
        for c in classes:
            write_image(tmp_path / "t" / split / c / "0.png", Image.new("RGB", (8, 8), (ord(c), 0, 0)), "PNG")
    train = load_dataset(f"folder:{tmp_path / 't'}", "train", size=8)
    test = load_dataset(f"folder:{tmp_path / 't'}", "test", size=8)
    assert train.classes == test.classes == ["a", "b", "c"]
    for data in (train, test):
        for image, label in zip(data.images, data.labels):
            assert data.classes[int(label)] == chr(int(image[0, 0, 0]))
    assert "no readable image in class(es) a of the test split" in test.source


def only_empty_class(root: Path) -> None:
    (root / "a").mkdir(parents=True)


def only_unreadable(root: Path) -> None:
    root.mkdir()
    (root / "x.png").write_bytes(b"junk")
    (root / "y.jpg").write_bytes(truncated(encode(noise_image(), "JPEG")))


def plain_file(root: Path) -> None:
    root.write_text("a file, not a folder")


FOLDER_REFUSED = [
    pytest.param(only_empty_class, "no image files under", id="folder-only-an-empty-class"),
    pytest.param(only_unreadable, "none of the image files", id="folder-only-unreadable-files"),
    pytest.param(plain_file, "is not a folder or a .tar/.tar.gz/.zip archive", id="folder-a-plain-file"),
]


@pytest.mark.parametrize("make, fragment", FOLDER_REFUSED)
def test_refused_folder(tmp_path, make, fragment):
    make(tmp_path / "f")
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{tmp_path / 'f'}")
    assert fragment in str(info.value)


# --- the command line, end to end -----------------------------------------------------------------
TRAIN = ["train", "--model", "ae", "--epochs", "1", "--set", "hidden=[8]", "--latent-dim", "2", "--quiet"]


def test_cli_train_refuses_an_out_folder_it_would_destroy(tmp_path, capsys):
    folder = tmp_path / "Documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    assert_one_line(*cli(*TRAIN, "--dataset", "digits", "--out", str(folder), capsys=capsys),
                    "is not an aecore model folder (it holds thesis.txt)")
    assert (folder / "thesis.txt").read_text() == "years of work"
    file = tmp_path / "notes.txt"
    file.write_text("x")
    assert_one_line(*cli(*TRAIN, "--dataset", "digits", "--out", str(file), capsys=capsys),
                    "exists and is not a folder")
    assert file.read_text() == "x"


def test_cli_train_on_bad_data(tmp_path, capsys):
    data_dir = mnist_dir(IMAGES, idx_bytes(np.array([1, 2])))(tmp_path)
    (data_dir / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(IMAGES))
    (data_dir / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(LABELS[:-1]))
    assert_one_line(*cli(*TRAIN, "--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(tmp_path / "o"),
                         capsys=capsys), "truncated: header declares 3 = 3 bytes")
    (tmp_path / "pics" / "a").mkdir(parents=True)
    assert_one_line(*cli(*TRAIN, "--dataset", f"folder:{tmp_path / 'pics'}", "--out", str(tmp_path / "o"),
                         capsys=capsys), "no image files under")
    assert not (tmp_path / "o" / WEIGHTS).exists()


def test_cli_eval_a_name_the_file_system_refuses(capsys):
    assert_one_line(*cli("eval", "x" * 5000, capsys=capsys), "no model folder or pretrained id")
