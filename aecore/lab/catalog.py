"""The models a user can pick: pretrained ids (manifest-checked) and the user's own trained folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aecore.errors import AecoreError
from aecore.models import get_model_class
from aecore.paths import pretrained_dir, user_models_dir
from aecore.store import LoadedModel, list_pretrained, list_user_models, load_pretrained, load_model, read_config

USER_PREFIX = "user:"


@dataclass(frozen=True)
class Entry:
    ref: str          # 'mnist/ae-d32' (pretrained) or 'user:<folder name>'
    label: str        # what the picker shows
    model: str        # registry name
    dataset: str
    about: str        # one line: what this model is
    data_options: dict = field(default_factory=dict, compare=False)   # load_dataset options it was trained with


def _entry(ref: str, path: Path, label: str) -> Entry | None:
    try:
        info = read_config(path)
    except AecoreError:
        return None                                   # a broken folder is left out of the picker
    about = info.get("notes") or get_model_class(info["model"]).description
    options = (info.get("recipe") or {}).get("dataset_options") or {}
    return Entry(ref=ref, label=label, model=info["model"], dataset=info.get("dataset") or "", about=about,
                 data_options=dict(options) if isinstance(options, dict) else {})


def entries(dataset: str | None = None) -> list[Entry]:
    """Pretrained models first, then the user's; only those trained on `dataset` when given."""
    out: list[Entry] = []
    root = pretrained_dir()
    for model_id in list_pretrained(root):
        entry = _entry(model_id, root / model_id, model_id.split("/", 1)[1])
        if entry:
            out.append(entry)
    for path in list_user_models(user_models_dir()):
        entry = _entry(USER_PREFIX + path.name, path, f"{path.name} (yours)")
        if entry:
            out.append(entry)
    return [e for e in out if dataset is None or e.dataset == dataset]


def load(ref: str, *, device: str | None = None) -> LoadedModel:
    """Load a picker entry: pretrained ids are checked against the manifest."""
    if ref.startswith(USER_PREFIX):
        name = ref[len(USER_PREFIX):]
        if not name or "/" in name or name.startswith("."):
            raise AecoreError(f"not a model name: {name!r}")
        return load_model(user_models_dir() / name, device=device)
    return load_pretrained(ref, device=device)
