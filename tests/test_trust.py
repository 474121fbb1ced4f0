"""Trust boundaries: pretrained files are checked against the manifest before use; names from users and
URLs never leave their folder; a save never destroys what is not a model; uploads never touch disk;
untrusted image bytes never reach PIL's PostScript (Ghostscript) decoder."""

from __future__ import annotations

import ast
import inspect
import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from aecore import maps, store
from aecore.data import images
from aecore.data.images import BadImage, decode_image
from aecore.errors import ConfigError, DataError, ModelFileError
from aecore.lab import catalog, denoise, jobs, semi
from aecore.lab.inputs import image_from_upload
from aecore.models import build_model
from aecore.paths import safe_name, user_model_path, user_models_dir
from aecore.store import CONFIG, MANIFEST, METRICS, WEIGHTS, load_pretrained, save_model, write_manifest
from aecore.train import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "digits/ae-d3"


def tiny():
    return build_model("ae", {"input_shape": [1, 8, 8], "hidden": [16], "latent_dim": 3})


@pytest.fixture
def pretrained(tmp_path, monkeypatch) -> Path:
    """A pretrained folder with one model and its manifest; the app's catalog reads it."""
    root = tmp_path / "pretrained"
    save_model(tiny(), root / MODEL_ID, dataset="digits", metrics={"mse": 0.5})
    write_manifest(root)
    monkeypatch.setenv("AECORE_PRETRAINED", str(root))
    assert load_pretrained(MODEL_ID, root=root).name == "ae"          # untouched, it loads
    return root


# --- pretrained files against the manifest --------------------------------------------------------
def bump_a_weight(folder: Path) -> None:
    state = load_file(str(folder / WEIGHTS))
    state["decoder.0.bias"] += 0.01
    save_file(state, str(folder / WEIGHTS))


def edit_config(folder: Path) -> None:
    info = json.loads((folder / CONFIG).read_text())
    info["notes"] = "the best model ever"
    (folder / CONFIG).write_text(json.dumps(info))


@pytest.mark.parametrize("tamper, named", [
    (bump_a_weight, WEIGHTS),
    (edit_config, CONFIG),
    (lambda folder: (folder / METRICS).write_text('{"mse": 0.0}'), METRICS),
])
def test_a_tampered_pretrained_file_is_refused_with_its_name(pretrained, tamper, named):
    tamper(pretrained / MODEL_ID)
    for load in (lambda: load_pretrained(MODEL_ID, root=pretrained), lambda: catalog.load(MODEL_ID)):
        with pytest.raises(ModelFileError) as info:
            load()
        assert f"{MODEL_ID}/{named}: SHA-256 does not match the manifest" in str(info.value)


def test_a_tampered_pretrained_config_is_left_out_of_the_list_with_its_reason(pretrained):
    """Its notes are never shown: only text the manifest vouches for reaches a page."""
    info = json.loads((pretrained / MODEL_ID / CONFIG).read_text())
    info["notes"] = "[click me](http://e.vil)"
    (pretrained / MODEL_ID / CONFIG).write_text(json.dumps(info))
    assert MODEL_ID not in [e.ref for e in catalog.entries()]
    (label, reason), = catalog.left_out()
    assert label == MODEL_ID and "SHA-256 does not match the manifest" in reason and "e.vil" not in reason


@pytest.mark.parametrize("content", [
    '{"model": "ae", "config": {"latent_dim": 1' + "0" * 5000 + "}}",      # over Python's 4,300-digit limit
    "[" * 100_000 + "]" * 100_000,
    b"\xff\xfe not utf-8",
    "",
])
def test_a_user_model_folder_that_cannot_be_read_is_left_out_not_raised(pretrained, content):
    save_model(tiny(), user_model_path("good"), dataset="digits")
    bad = user_model_path("broken")
    save_model(tiny(), bad, dataset="digits")
    (bad / CONFIG).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert [e.ref for e in catalog.entries("digits")] == [MODEL_ID, "user:good"]
    (label, reason), = catalog.left_out()
    assert label == "broken (yours)" and "config.json" in reason and "\n" not in reason


def test_any_surprise_in_a_folder_leaves_that_folder_out(pretrained, monkeypatch):
    save_model(tiny(), user_model_path("odd"), dataset="digits")
    real = catalog.read_config
    monkeypatch.setattr(catalog, "read_config", lambda path: (_ for _ in ()).throw(MemoryError())
                        if path.name == "odd" else real(path))
    assert [e.ref for e in catalog.entries()] == [MODEL_ID]
    assert catalog.left_out() == [("odd (yours)", f"{user_model_path('odd')}: cannot be read (MemoryError)")]


def test_a_pretrained_id_wins_over_a_same_named_folder_in_the_working_directory(pretrained, tmp_path, monkeypatch):
    """`aecore eval mnist/ae-d32` must not load an unchecked ./mnist/ae-d32; './mnist/ae-d32' means the folder."""
    monkeypatch.chdir(tmp_path)
    impostor = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [16], "latent_dim": 5})
    save_model(impostor, tmp_path / MODEL_ID, dataset="digits")
    assert store.resolve(MODEL_ID).model.config.latent_dim == 3          # the verified one
    assert store.resolve("./" + MODEL_ID).model.config.latent_dim == 5   # asked for by path
    assert store.resolve(tmp_path / MODEL_ID).model.config.latent_dim == 5


def rewrite_manifest(root: Path, change) -> None:
    data = json.loads((root / MANIFEST).read_text())
    change(data["files"])
    (root / MANIFEST).write_text(json.dumps(data))


def test_files_the_manifest_does_not_vouch_for_are_refused(pretrained):
    rewrite_manifest(pretrained, lambda files: files.pop(f"{MODEL_ID}/{METRICS}"))
    with pytest.raises(ModelFileError, match=f"{METRICS}: not listed in .*manifest.json"):
        load_pretrained(MODEL_ID, root=pretrained)
    rewrite_manifest(pretrained, lambda files: files.pop(f"{MODEL_ID}/{CONFIG}"))
    with pytest.raises(ModelFileError, match=f"{CONFIG}: not listed in .*manifest.json"):
        load_pretrained(MODEL_ID, root=pretrained)


def test_a_listed_file_that_is_gone_is_refused(pretrained):
    (pretrained / MODEL_ID / METRICS).unlink()
    with pytest.raises(ModelFileError, match=f"{METRICS}: listed in the manifest but missing"):
        load_pretrained(MODEL_ID, root=pretrained)


@pytest.mark.parametrize("entry", ["../outside/model.safetensors", "/etc/model.safetensors", "a//model.safetensors",
                                   "digits/./model.safetensors", "a\\..\\model.safetensors"])
def test_manifest_entries_must_stay_inside_the_folder(pretrained, entry):
    rewrite_manifest(pretrained, lambda files: files.update({entry: "0" * 64}))
    with pytest.raises(ModelFileError, match="not a plain relative path"):
        load_pretrained(MODEL_ID, root=pretrained)


def test_unknown_and_traversing_pretrained_ids(pretrained):
    for model_id in ("digits/nope", "digits/../digits/ae-d3"):
        with pytest.raises(ModelFileError, match="unknown pretrained model"):
            load_pretrained(model_id, root=pretrained)


# --- names that become paths ----------------------------------------------------------------------
BAD_NAMES = [
    ("../../etc/x", "path separator"),
    ("a/b", "path separator"),
    ("/abs", "path separator"),
    ("a\\b", "path separator"),
    ("", "is empty"),
    (".", "not a name"),
    ("..", "not a name"),
    ("a\0b", "control character"),
    ("line\nbreak", "control character"),
    (".hidden", "starts with '.'"),
    ("x" * 300, "too long"),
    ("é" * 200, "too long"),                  # 200 characters, 400 bytes
]


@pytest.mark.parametrize("name, message", BAD_NAMES, ids=[repr(n[:12]) for n, _ in BAD_NAMES])
def test_names_that_could_leave_their_folder_are_refused(name, message):
    with pytest.raises(ConfigError, match=message):
        safe_name(name)
    with pytest.raises(ConfigError, match=message):
        user_model_path(name)
    ref = catalog.USER_PREFIX + name
    for resolve in (catalog.ref_path, catalog.load, denoise.entry_path, semi.model_folder):
        with pytest.raises(ConfigError, match=message):
            resolve(ref)


@pytest.mark.parametrize("ref", ["../../etc", "mnist/../../x", "/etc/passwd", "mnist/..", "a\0/b", "", "mnist/ae/x"])
def test_pretrained_refs_from_urls_stay_inside_the_pretrained_folder(pretrained, ref):
    for resolve in (catalog.ref_path, catalog.load, denoise.entry_path, semi.model_folder):
        with pytest.raises(ConfigError):
            resolve(ref)


def test_good_names_land_directly_in_their_folder(pretrained):
    for name in ("my-ae", "run_2", "ÆØÅ model v2"):
        assert user_model_path(name).parent == user_models_dir()
        assert catalog.ref_path(catalog.USER_PREFIX + name) == user_models_dir() / name
    assert catalog.ref_path(MODEL_ID) == pretrained / MODEL_ID


@pytest.mark.parametrize("name, message", [
    ("../../etc/x", "letters, digits, - and _ only"),
    ("a/b", "letters, digits, - and _ only"),
    ("/abs", "letters, digits, - and _ only"),
    ("", "give the model a name"),
    (".", "letters, digits, - and _ only"),
    ("..", "letters, digits, - and _ only"),
    ("a\0b", "letters, digits, - and _ only"),
    ("a" * 65, "at most 64"),
    ("ünï", "letters, digits, - and _ only"),
])
def test_app_training_jobs_refuse_such_names_before_anything_is_written(tmp_path, monkeypatch, name, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(jobs.JobError, match=message):
        jobs.start(jobs.JobSpec(name=name, model="ae", dataset="digits", latent_dim=2, epochs=1,
                                config={"hidden": [8]}))
    assert not jobs.active_jobs()
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())
    assert not any(tmp_path.iterdir())


def test_app_job_names_are_trimmed_not_rejected_for_surrounding_blanks():
    assert jobs.validate_name("  my-ae\n") == "my-ae"


# --- saving never destroys what is not a model ----------------------------------------------------
def test_save_refuses_to_replace_anything_but_a_model_folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    with pytest.raises(ModelFileError, match=r"not an aecore model folder \(it holds thesis.txt\)"):
        save_model(tiny(), docs)
    assert [p.name for p in docs.iterdir()] == ["thesis.txt"]
    file = tmp_path / "notes.txt"
    file.write_text("x")
    with pytest.raises(ModelFileError, match="exists and is not a folder"):
        save_model(tiny(), file)
    link = tmp_path / "link"
    link.symlink_to(docs, target_is_directory=True)
    with pytest.raises(ModelFileError, match="is not a folder"):
        save_model(tiny(), link)
    for name in (".", ".."):
        with pytest.raises(ModelFileError, match="cannot be a model folder"):
            store.check_replaceable(Path(name))
    assert file.read_text() == "x" and (docs / "thesis.txt").exists()


def test_save_replaces_model_folders_and_fills_empty_ones(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    save_model(tiny(), empty)
    run = tmp_path / "run"                      # what `aecore train` leaves before its final save
    run.mkdir()
    (run / CHECKPOINT_NAME).write_bytes(b"")
    (run / f".{CHECKPOINT_NAME}.abc.tmp").write_bytes(b"")
    save_model(tiny(), run)
    save_model(tiny(), run)                     # and over a finished model folder
    assert sorted(p.name for p in run.iterdir()) == sorted([WEIGHTS, CONFIG, METRICS])


def test_the_store_knows_every_file_a_model_folder_holds():
    assert {CHECKPOINT_NAME, maps.MAPS, WEIGHTS, CONFIG, METRICS} == store.OWN_FILES


def test_names_the_file_system_refuses_are_no_model():
    for ref in ("x" * 5000, "a\0b"):
        with pytest.raises(ModelFileError, match="no model folder or pretrained id"):
            store.resolve(ref)


# --- uploads ----------------------------------------------------------------------------------------
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_upload_decoding_writes_nothing(tmp_path, monkeypatch):
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    x, _ = image_from_upload(png_bytes(), (1, 28, 28))
    assert x.shape == (1, 1, 28, 28)
    assert not any(work.iterdir()) and not any(temp.iterdir())
    assert list(inspect.signature(image_from_upload).parameters)[:2] == ["data", "input_shape"]   # bytes, no name


def uploader_uses(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(variable, node using it) for every variable assigned from st.file_uploader(...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr == "file_uploader":
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    return [(n.id, parents[n]) for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in names
            and isinstance(n.ctx, ast.Load)]


def test_pages_only_read_the_bytes_of_an_upload():
    """An upload's name never reaches a path: the pages use `file.getvalue()`, `file is not None` and
    Streamlit's opaque `file.file_id` (to know the same file again) only."""
    pages = sorted((ROOT / "pages").glob("*.py"))
    seen = 0
    for page in pages:
        for name, parent in uploader_uses(ast.parse(page.read_text(), str(page))):
            seen += 1
            ok = (isinstance(parent, ast.Attribute) and parent.attr in ("getvalue", "file_id")) or (
                isinstance(parent, ast.Compare) and all(isinstance(op, (ast.IsNot, ast.Is)) for op in parent.ops))
            assert ok, f"{page.name}: the upload {name!r} is used as {ast.unparse(parent)!r}"
    assert seen >= 1                            # pages/common.py: own_image(), which every page uses
    takers = {p.name for p in pages if re.search(r"\bown_image(_section)?\(", p.read_text()) and p.name != "common.py"}
    assert takers >= {"denoise.py", "reconstructions.py", "latent_map.py", "vae_lab.py"}


# --- what decodes untrusted image bytes ------------------------------------------------------------
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke showpage\n"


def test_postscript_never_reaches_pils_eps_decoder(monkeypatch):
    """PIL picks decoders by content; EPS would run Ghostscript on the bytes. A spy proves it is never tried."""
    from PIL import EpsImagePlugin

    tried = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: tried.append(1) or 1 / 0)
    with pytest.raises(DataError, match="not an image that can be read"):
        image_from_upload(EPS, (1, 28, 28))
    with pytest.raises(BadImage, match="not a recognised image format"):
        decode_image(EPS, size=8)
    assert tried == []
    assert "EPS" not in images.SAFE_FORMATS
    with pytest.raises(ZeroDivisionError):      # the spy works: plain PIL does try EPS on these bytes
        Image.open(io.BytesIO(EPS))
    assert tried == [1]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM", "TGA"])
def test_the_safe_formats_still_decode(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, fmt)
    x, note = image_from_upload(buffer.getvalue(), (3, 8, 8))
    assert x.shape == (1, 3, 8, 8) and float(x[0, 0].mean()) > 0.6
    assert decode_image(buffer.getvalue(), size=8).shape == (3, 8, 8)
