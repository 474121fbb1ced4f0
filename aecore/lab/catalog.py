"""The models a user can pick: pretrained ids (manifest-checked) and the user's own trained folders."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aecore.errors import AecoreError, ConfigError
from aecore.models import get_model_class
from aecore.paths import pretrained_dir, safe_name, user_model_path, user_models_dir
from aecore.store import (CONFIG, MANIFEST, MAX_CONFIG_BYTES, METRICS, LoadedModel, check_listed, list_pretrained_in,
                          list_user_models, load_model, load_pretrained, read_config, read_json_file, read_manifest)

log = logging.getLogger("aecore.app")

USER_PREFIX = "user:"


@dataclass(frozen=True)
class Entry:
    ref: str          # 'mnist/ae-d32' (pretrained) or 'user:<folder name>'
    label: str        # what the picker shows
    model: str        # registry name
    dataset: str
    about: str        # one line: what this model is
    data_options: dict = field(default_factory=dict, compare=False)   # load_dataset options it was trained with
    pca_gain: float | None = None   # test MSE of PCA with as many components / the model's (metrics.json); > 1: it wins
    pca_components: int | None = None   # that PCA's size: the model's code size


def _entry(ref: str, path: Path, label: str, expected: dict[str, str] | None = None) -> Entry | str:
    """The picker entry of a model folder, or why it is left out (one line for a note). Nothing a
    folder holds may break the list: it is shared by every page and every visitor of the server."""
    try:
        if expected is not None:                      # pretrained: only text the manifest vouches for
            check_listed(path, {CONFIG: expected.get(CONFIG, "")})
        info = read_config(path)
    except AecoreError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - any surprise in a folder leaves that folder out, nothing more
        log.warning("model folder %s left out of the list", path, exc_info=True)
        return f"{path}: cannot be read ({type(err).__name__})"
    about = info.get("notes") or get_model_class(info["model"]).description
    options = (info.get("recipe") or {}).get("dataset_options") or {}
    return Entry(ref=ref, label=label, model=info["model"], dataset=info.get("dataset") or "", about=about,
                 data_options=dict(options) if isinstance(options, dict) else {}, **_against_pca(path))


def _against_pca(path: Path) -> dict:
    """pca_gain (pca_mse / mse) and pca_components from the folder's metrics.json; nothing when it is
    missing, unreadable or odd (they only order the pickers, so nothing here may fail)."""
    try:
        file = path / METRICS
        metrics = read_json_file(file) if file.is_file() and file.stat().st_size <= MAX_CONFIG_BYTES else {}
        gain = float(metrics["pca_mse"]) / float(metrics["mse"])
        components = int(metrics["pca_components"])
    except Exception:  # noqa: BLE001
        return {}
    return {"pca_gain": gain, "pca_components": components} if math.isfinite(gain) and gain > 0 else {}


def showcase(entries: list[Entry]) -> Entry | None:
    """The model that shows best what an autoencoder adds: the one beating PCA with as many
    components by the widest margin on its test split (pretrained first); None without measurements."""
    measured = [e for e in entries if e.pca_gain is not None]
    return max(measured, key=lambda e: (not e.ref.startswith(USER_PREFIX), e.pca_gain), default=None)


def contrast(entries: list[Entry], best: Entry) -> Entry | None:
    """The pretrained model of `best`'s code size that does worst against PCA (a linear AE, which is
    PCA): side by side with `best`, the gap is what the nonlinearity buys. None when there is none."""
    same = [e for e in entries if e.ref != best.ref and not e.ref.startswith(USER_PREFIX)
            and e.pca_gain is not None and e.pca_components == best.pca_components]
    return min(same, key=lambda e: e.pca_gain, default=None)


def _stamp(path: Path) -> tuple:
    try:
        stat = path.stat()
        return (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (str(path), None, None)


_cache: dict[tuple, tuple[list[Entry], list[tuple[str, str]]]] = {}   # {stamps: (entries, left out)}, one key
_listing_lock = threading.Lock()   # one listing at a time: a class opening pages together reads the folders once


def entries(dataset: str | None = None) -> list[Entry]:
    """Pretrained models first, then the user's; only those trained on `dataset` when given.

    Reading and validating every config.json took most of a page rerun, so the list is kept until
    the manifest or the user's models folder changes (a model saved or deleted there renames or
    removes a folder entry, which changes the folder's mtime)."""
    root, users = pretrained_dir(), user_models_dir()
    key = (_stamp(root / MANIFEST), _stamp(users))
    return [e for e in _listing(key, root, users)[0] if dataset is None or e.dataset == dataset]


def left_out() -> list[tuple[str, str]]:
    """(label, reason) of every model folder the list leaves out because it cannot be read."""
    root, users = pretrained_dir(), user_models_dir()
    return list(_listing((_stamp(root / MANIFEST), _stamp(users)), root, users)[1])


def _listing(key: tuple, root: Path, users: Path) -> tuple[list[Entry], list[tuple[str, str]]]:
    cached = _cache.get(key)
    if cached is not None:
        return cached
    with _listing_lock:               # the others wait for this one's result instead of each reading every folder
        cached = _cache.get(key)
        return cached if cached is not None else _read_listing(key, root, users)


def _read_listing(key: tuple, root: Path, users: Path) -> tuple[list[Entry], list[tuple[str, str]]]:
    out: list[Entry] = []             # (sessions run in threads: work on local lists, then publish them)
    skipped: list[tuple[str, str]] = []
    try:
        manifest = read_manifest(root)
    except AecoreError as err:
        manifest, skipped = {}, [("pretrained models", str(err))]
    for model_id in list_pretrained_in(manifest):
        prefix = model_id + "/"
        expected = {k[len(prefix):]: v for k, v in manifest.items() if k.startswith(prefix)}
        entry = _entry(model_id, root / model_id, model_id.split("/", 1)[1], expected)
        out.append(entry) if isinstance(entry, Entry) else skipped.append((model_id, entry))
    for path in list_user_models(users):
        entry = _entry(USER_PREFIX + path.name, path, f"{path.name} (yours)")
        out.append(entry) if isinstance(entry, Entry) else skipped.append((f"{path.name} (yours)", entry))
    _cache.clear()
    _cache[key] = (out, skipped)
    return out, skipped


def ref_path(ref: str) -> Path:
    """The folder of a ref ('user:<name>' or '<dataset>/<id>'); ConfigError for a ref that could
    point outside the user models folder or the pretrained folder (refs come from URLs too)."""
    if not isinstance(ref, str):
        raise ConfigError(f"a model reference must be a string, got {type(ref).__name__}")
    if ref.startswith(USER_PREFIX):
        return user_model_path(ref[len(USER_PREFIX):])
    parts = ref.split("/")
    if len(parts) != 2:
        raise ConfigError(f"pretrained id {ref[:80]!r} must look like '<dataset>/<model>', e.g. 'mnist/ae-d32'")
    for part in parts:
        safe_name(part, what="pretrained id part")
    return pretrained_dir() / ref


def load(ref: str, *, device: str | None = None) -> LoadedModel:
    """Load a picker entry: pretrained ids are checked against the manifest."""
    path = ref_path(ref)
    if ref.startswith(USER_PREFIX):
        return load_model(path, device=device)
    return load_pretrained(ref, device=device)
