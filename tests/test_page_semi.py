"""Semi-supervised: aecore.lab.semi (points, replayed labelled set, shared PCA), a real fresh run
with its baselines, and the page through AppTest."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from aecore.data import load_dataset
from aecore.lab import catalog, jobs, semi
from aecore.train import TrainConfig, Trainer
from aecore.models import build_model
from aecore.paths import user_models_dir
from tests.helpers import open_app

pytestmark = pytest.mark.usefixtures("no_job_left_running")   # tests/conftest.py
SMALL = {"channels": [4, 8], "head_hidden": 8, "embedding_dim": 8}


def fake_model(labels, budget, **metrics) -> semi.SemiModel:
    return semi.SemiModel(ref=f"x/{budget}", label=f"m{budget}", labels=labels, budget=budget, metrics=metrics,
                          recipe={})


# --- aecore.lab.semi -------------------------------------------------------------------------------
def test_only_measured_points_are_rows():
    models = [fake_model(100, 100, accuracy=0.9),
              fake_model(10, 10, accuracy=0.5, scratch_cnn_accuracy=0.3, pca_logreg_accuracy=float("nan")),
              fake_model(None, None, accuracy=0.99)]           # budget unknown: left out
    rows = semi.accuracy_rows(models)
    assert sorted((r["labels"], r["method"]) for r in rows) == sorted([
        (100, semi.METHODS["accuracy"]), (10, semi.METHODS["accuracy"]),
        (10, semi.METHODS["scratch_cnn_accuracy"])])
    fig = semi.accuracy_figure(rows)
    assert fig.layout.xaxis.type == "log"
    assert {t.name for t in fig.data} == {semi.series_name("accuracy", "pretrained"),
                                          semi.series_name("scratch_cnn_accuracy", "pretrained")}
    hyper = next(t for t in fig.data if t.name == semi.series_name("accuracy", "pretrained"))
    assert list(hyper.x) == [10, 100] and list(hyper.y) == [50.0, 90.0]


def test_reading_the_tiny_zoos_hyper_semi(tiny_zoo):
    model = semi.read_semi_model("mnist/hyper-semi-100", "hyper-semi-100")
    assert model.labels == 100 and model.budget == 100
    rows = semi.accuracy_rows([model])
    assert [r["method"] for r in rows] == [semi.METHODS["accuracy"]]    # its baselines were never measured
    assert semi.read_semi_model("mnist/ae-d8", "ae-d8") is None          # not a hyper-semi model


def test_labelled_set_is_replayed_exactly_as_the_trainer_masked_it():
    full = load_dataset("digits", "train")
    recipe = {"labels": 30, "seed": 5, "train_images": 0, "max_images": 1000, "val_fraction": 0.1,
              "train_split": "train"}
    found = semi.labelled_examples(full, recipe)
    train, _ = jobs.prepare_split(full, max_images=1000, seed=5)
    model = build_model("ae", {"input_shape": [1, 8, 8], "hidden": [4], "latent_dim": 2})
    trainer = Trainer(model, train, config=TrainConfig(labels=30, seed=5), device="cpu")
    kept = trainer.train.labels >= 0
    assert len(found) == 30 == int(kept.sum())
    assert torch.equal(found.images, train.images[kept])
    assert torch.equal(found.labels, train.labels[kept])
    assert torch.bincount(found.labels).tolist() == [3] * 10     # class-balanced


def test_labelled_set_cannot_be_replayed_from_another_split():
    test_split = load_dataset("digits", "test")
    reason = semi.labelled_examples(test_split, {"labels": 10, "seed": 0})
    assert isinstance(reason, str) and "only the test split" in reason


def test_labelled_points_share_the_test_maps_pca():
    gen = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 5, generator=gen) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1])
    coords, again = semi.project_with_test_pca(codes, codes[:7])
    assert coords.shape == (200, 2) and again.shape == (7, 2)
    np.testing.assert_allclose(again, coords[:7], atol=1e-5)
    assert abs(coords[:, 0].mean()) < 1e-4 and coords[:, 0].var() > coords[:, 1].var()
    one_d, _ = semi.project_with_test_pca(torch.randn(20, 1, generator=gen))
    assert one_d.shape == (20, 2) and (one_d[:, 1] == 0).all()


def test_fresh_run_measures_all_three_methods_and_joins_the_chart():
    job = jobs.start(jobs.JobSpec(name="fresh", model="hyper-semi", dataset="digits", latent_dim=8, epochs=1,
                                  labels=100, max_images=600, config=dict(SMALL), semi_baselines=True))
    assert job.join(180)
    snap = job.snapshot()
    assert snap.status == "done", snap.error
    for key in semi.METHODS:
        assert 0.0 <= snap.metrics[key] <= 1.0
    entry = next(e for e in catalog.entries("digits") if e.ref == "user:fresh")
    model = semi.read_semi_model(entry.ref, entry.label)
    assert model.labels == 100 and model.recipe["train_images"] == 540
    rows = semi.accuracy_rows([model])
    assert len(rows) == 3 and {r["labels"] for r in rows} == {100}
    # the replayed labelled set is the one this run trained with
    found = semi.labelled_examples(load_dataset("digits", "train"), model.recipe)
    assert len(found) == 100


# --- the page ---------------------------------------------------------------------------------------
def page() -> AppTest:
    return open_app("semi_supervised.py", timeout=90)


def test_page_with_the_tiny_zoos_hyper_semi(tiny_zoo):
    at = page()
    assert not at.exception and not at.error
    assert at.selectbox(key="model").value == "mnist/hyper-semi-100"
    assert len(at.get("plotly_chart")) == 2                     # accuracy chart + latent map
    table = at.dataframe[0].value
    assert list(table["labels"]) == ["100"] and table["test accuracy"][0].endswith("%")
    captions = " ".join(c.value for c in at.caption)
    assert "Not measured (so not drawn)" in captions and "PCA (50) + logistic regression" in captions
    # offline only the bundled test split exists: the page says why the labelled images are not shown
    assert any("Labelled examples not shown" in i.value for i in at.info)
    assert "10,000 test images" in captions


def app_run(tiny_zoo, name: str, *, epochs: int, seen_share: float) -> None:
    """A copy of the tiny zoo's hyper-semi-100 as a user model trained `epochs` epochs on `seen_share` of
    the images the pretrained one saw, with all three methods measured."""
    folder = user_models_dir() / name
    shutil.copytree(tiny_zoo / "mnist" / "hyper-semi-100", folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    seen = int(metrics["training"]["images_seen"] * seen_share)
    config["recipe"].update(epochs=epochs, train_images=seen // epochs, max_images=2000)
    metrics["training"].update(images_seen=seen, history=metrics["training"]["history"][:epochs])
    metrics.update(accuracy=0.34, scratch_cnn_accuracy=0.785, pca_logreg_accuracy=0.6)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def label_of(ref: str) -> str:
    return next(e.label for e in catalog.entries("mnist") if e.ref == ref)


def accuracy_chart(at: AppTest) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "semi_acc" in c.proto.id)


def test_a_short_run_is_its_own_series_and_said_too_short(tiny_zoo):
    app_run(tiny_zoo, "quick", epochs=1, seen_share=0.5)
    at = page()
    assert not at.exception and not at.error
    traces = {t["name"]: list(t["x"]) for t in accuracy_chart(at)["data"]}
    assert traces == {
        semi.series_name("accuracy", "pretrained"): [100],
        **{semi.series_name(k, label_of("user:quick")) + " (too short to compare)": [100] for k in semi.METHODS}}
    warning = " ".join(w.value for w in at.warning)
    assert "Too short to compare with the pretrained numbers" in warning and "quick" in warning
    assert "1 epoch of" in warning and "against 2 epochs" in warning
    table = at.dataframe[0].value
    assert set(table["source"]) == {"pretrained", "your run (too short to compare)"}


def test_a_run_as_long_as_the_pretrained_recipe_gets_no_note(tiny_zoo):
    app_run(tiny_zoo, "full", epochs=2, seen_share=1.0)
    at = page()
    assert not at.exception and not at.error
    assert not at.warning
    names = {t["name"] for t in accuracy_chart(at)["data"]}
    assert semi.series_name("accuracy", label_of("user:full")) in names
    assert semi.series_name("accuracy", "pretrained") in names
    assert set(at.dataframe[0].value["source"]) == {"pretrained", "your run"}


def digits_model(tiny_zoo) -> None:
    """A (non-semi-supervised) user model said to be of digits, so that the sidebar offers digits: a
    dataset without a model is not offered."""
    folder = user_models_dir() / "digits-ae"
    shutil.copytree(tiny_zoo / "mnist" / "ae-d8", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dataset": "digits"}))


def test_page_without_hyper_semi_models_offers_a_fresh_run(tiny_zoo):
    digits_model(tiny_zoo)
    at = page()
    at.selectbox(key="dataset").set_value("digits").run()
    assert not at.exception and not at.error
    infos = " ".join(i.value for i in at.info)
    assert "No measured hyper-semi accuracy for digits" in infos and "Pick a hyper-semi model" in infos
    assert not at.button(key="semi_start").disabled


def test_fresh_run_from_the_page(tiny_zoo, monkeypatch):
    monkeypatch.setattr(semi, "FRESH_CONFIG", dict(SMALL))      # the same run, a smaller CNN
    monkeypatch.setattr(semi, "FRESH_LATENT", 8)
    digits_model(tiny_zoo)
    at = page()
    at.selectbox(key="dataset").set_value("digits").run()
    at.slider(key="semi_epochs").set_value(1).run()
    at.select_slider(key="semi_images").set_value(2000).run()
    at.button(key="semi_start").click().run()
    assert not at.exception and not at.error
    assert at.button(key="semi_start").disabled
    end = time.monotonic() + 180
    while not at.success and time.monotonic() < end:
        time.sleep(0.5)
        at.run()
        assert not at.exception and not at.error
    assert at.success, "the fresh run did not finish in time"
    assert "hyper-semi-100-digits" in at.success[0].value and "CNN from scratch" in at.success[0].value
    # the new model is picked in the sidebar and its three points are on the chart
    assert at.selectbox(key="model").value == "user:hyper-semi-100-digits"
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table["labels"]) == {"100"}
    assert len(at.get("plotly_chart")) == 2
