"""A model the user trained on their own image folder shows up in the app: its `folder:` dataset is
offered in the sidebar (the folder lies inside a root the operator allows), and the pages open on it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

from aecore.data import load_dataset
from aecore.models import build_model
from aecore.paths import user_models_dir
from aecore.store import save_model

ROOT = Path(__file__).resolve().parents[1]


def folder_with_images(root: Path) -> Path:
    for c, colour in enumerate((30, 220)):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            Image.new("L", (12, 12), colour + i).save(root / f"class{c}" / f"{i}.png")
    return root


def test_a_folder_model_is_offered_with_its_dataset(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("AECORE_FOLDER_ROOTS", str(tmp_path))         # the operator lets visitors read it
    dataset = f"folder:{folder_with_images(tmp_path / 'shapes')}"
    options = {"size": 8, "grayscale": True}           # not the folder defaults (32, colour)
    data = load_dataset(dataset, "train", **options)
    model = build_model("ae", {"input_shape": list(data.input_shape), "hidden": [8], "latent_dim": 2})
    save_model(model, user_models_dir() / "my-shapes", dataset=dataset, classes=data.classes,
               recipe={"dataset_options": options})

    at = AppTest.from_file(str(ROOT / "pages" / "reconstructions.py"), default_timeout=60).run()
    assert dataset in at.selectbox(key="dataset").options
    at.selectbox(key="dataset").set_value(dataset).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="model").value == "user:my-shapes"
    assert at.get("image")


def test_the_model_list_follows_saves_and_deletes(tiny_zoo):
    """catalog.entries() is cached, but a model saved or deleted shows at once."""
    import shutil

    from aecore.lab import catalog

    before = [e.ref for e in catalog.entries()]
    model = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [8], "latent_dim": 2})
    save_model(model, user_models_dir() / "mine", dataset="digits")
    assert [e.ref for e in catalog.entries()] == before + ["user:mine"]
    assert [e.ref for e in catalog.entries("digits")][-1] == "user:mine"
    shutil.rmtree(user_models_dir() / "mine")
    assert [e.ref for e in catalog.entries()] == before
