"""Semi-supervised learning with few labels: test accuracy against the label budget, and where the
labelled examples sit on the latent map.

Three methods, each measured on the test split with the same labelled images: the semi-supervised model (its
metrics.json `accuracy`), the same CNN trained from scratch on the labelled images only
(`scratch_cnn_accuracy`) and PCA + logistic regression (`pca_logreg_accuracy`), both from
`aecore.measures.semi_baselines`. Only measured points are drawn: a model whose metrics lack a method
simply has no point for it.

The map is of the test split (PCA of the model's codes). The labelled examples are training images,
so they are projected with the same PCA; which ones were labelled is replayed from the recipe
(`mask_labels` with the recipe's seed on the same training images the run used).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from aecore.data.base import ImageData, split_off
from aecore.errors import AecoreError
from aecore.lab.catalog import ref_path
from aecore.models import SEMI_SUPERVISED, has_role, models_with
from aecore.pca import PCA
from aecore.store import METRICS, read_config
from aecore.train import mask_labels

SEMI_MODEL = models_with(SEMI_SUPERVISED)[0]   # the semi-supervised model: the fresh run's, FRESH_CONFIG's
METHODS = {
    "accuracy": f"{SEMI_MODEL} (CNN + hypernetwork AE, unlabelled images too)",
    "scratch_cnn_accuracy": "the same CNN from scratch, labelled images only",
    "pca_logreg_accuracy": "PCA (50) + logistic regression",
}
MAX_HIGHLIGHT = 2000      # with every label kept, show a sample of the labelled images
# the page's "fresh run": a small hyper-semi (a few minutes on a CPU), few epochs, capped images
FRESH_CONFIG = {"channels": [16, 32, 64], "head_hidden": 64, "embedding_dim": 32}
FRESH_LATENT = 32
FRESH_MAX_EPOCHS = 3
FRESH_IMAGES = (2000, 5000, 10_000)


def model_folder(ref: str) -> Path:
    """Folder of a catalog ref: 'user:<name>' or a pretrained id '<dataset>/<id>' (checked by ref_path)."""
    return ref_path(ref)


@dataclass
class SemiModel:
    ref: str
    label: str
    labels: int | None            # the label budget (None: every training label)
    budget: int | None            # labelled images, as a number for the x axis (None: unknown)
    metrics: dict[str, Any]
    recipe: dict[str, Any]


def read_semi_model(ref: str, label: str) -> SemiModel | None:
    """Config recipe + metrics of one semi-supervised model folder, without loading its weights."""
    folder = model_folder(ref)
    try:
        info = read_config(folder)
    except AecoreError:
        return None
    if not has_role(info.get("model"), SEMI_SUPERVISED):
        return None
    metrics: dict[str, Any] = {}
    file = folder / METRICS
    if file.is_file():
        try:
            loaded = json.loads(file.read_text(encoding="utf-8"))
            metrics = loaded if isinstance(loaded, dict) else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            metrics = {}
    recipe = info.get("recipe") if isinstance(info.get("recipe"), dict) else {}
    labels = recipe.get("labels")
    labels = labels if isinstance(labels, int) and not isinstance(labels, bool) else None
    budget = labels if labels is not None else recipe.get("train_images")
    budget = budget if isinstance(budget, int) and budget > 0 else None
    return SemiModel(ref=ref, label=label, labels=labels, budget=budget, metrics=metrics, recipe=recipe)


def accuracy_rows(models: Iterable[SemiModel]) -> list[dict[str, Any]]:
    """One row per measured (model, method): model, labels (x), method, accuracy. Missing or
    non-numeric figures and models with an unknown budget give no row."""
    rows = []
    for m in models:
        if m.budget is None:
            continue
        for key, method in METHODS.items():
            value = m.metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                rows.append({"model": m.label, "ref": m.ref, "labels": m.budget,
                             "budget": "all" if m.labels is None else str(m.labels),
                             "method": method, "accuracy": float(value)})
    order = list(METHODS.values())
    return sorted(rows, key=lambda r: (order.index(r["method"]), r["labels"]))


def accuracy_figure(rows: list[dict[str, Any]]):
    """Plotly: test accuracy against the number of labelled images (log x), one line per method."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, method in METHODS.items():
        points = [r for r in rows if r["method"] == method]
        if not points:
            continue
        fig.add_trace(go.Scatter(
            x=[r["labels"] for r in points], y=[100 * r["accuracy"] for r in points], mode="lines+markers",
            name=method, text=[r["model"] for r in points],
            marker={"size": 10, "symbol": {"accuracy": "circle", "scratch_cnn_accuracy": "square",
                                           "pca_logreg_accuracy": "diamond"}[key]},
            hovertemplate="%{text}<br>%{x:,} labels: %{y:.1f} %<extra></extra>"))
    budgets = sorted({r["labels"] for r in rows})
    fig.update_xaxes(type="log", title="labelled training images", tickvals=budgets,
                     ticktext=[f"{b:,}" for b in budgets])
    fig.update_yaxes(title="test accuracy (%)", range=[0, 102])     # chance on 10 classes is 10 %
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, showlegend=True,
                      legend={"orientation": "h", "y": -0.3})
    return fig


def labelled_examples(full_train: ImageData, recipe: dict[str, Any]) -> ImageData | str:
    """The training images the run kept labels for, replayed from its recipe; or why not.

    Zoo models: `split_off(full, val_fraction, seed)` then `mask_labels(labels, n, seed)` on the
    training part. App-trained models (recipe has `train_images`): the same seeded choice of
    images first (`aecore.lab.jobs.prepare_split`).
    """
    trained_on = recipe.get("train_split", "train")
    if full_train.split != trained_on:
        return (f"this model was trained on the {trained_on} split of {full_train.name}, but only the "
                f"{full_train.split} split is on this machine, so its labelled images cannot be looked up")
    seed = int(recipe.get("seed", 0) or 0)
    data = full_train
    if "train_images" in recipe:
        from aecore.lab.jobs import prepare_split
        data, _ = prepare_split(full_train, max_images=recipe.get("max_images"), seed=seed,
                                val_fraction=float(recipe.get("val_fraction") or 0.0))
    elif recipe.get("val_fraction"):
        data, _ = split_off(full_train, float(recipe["val_fraction"]), seed=seed)
    kept = mask_labels(data.labels, recipe.get("labels"), seed=seed)
    index = torch.nonzero(kept >= 0).flatten()
    if len(index) > MAX_HIGHLIGHT:
        pick = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:MAX_HIGHLIGHT]
        index = index[torch.sort(pick).values]
    return data.subset(index)


def project_with_test_pca(test_codes: Tensor | np.ndarray, other_codes: Tensor | np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, d) test codes -> (N, 2) map on their first two principal components, and (M, d) other
    codes -> (M, 2) with the *same* PCA (so both lie on one map). d < 2: the missing axis is 0."""
    test_codes = torch.as_tensor(test_codes).float().reshape(len(test_codes), -1)
    other_codes = None if other_codes is None else torch.as_tensor(other_codes)
    d = test_codes.shape[1]
    k = min(2, d)
    pca = PCA.fit(test_codes, k)

    def proj(codes: Tensor) -> np.ndarray:
        out = pca.encode(codes.float().reshape(codes.shape[0], -1)).numpy()
        return np.pad(out, ((0, 0), (0, 2 - k))) if k < 2 else out

    return proj(test_codes), (proj(other_codes) if other_codes is not None else None)


def map_figure(coords: np.ndarray, labels: np.ndarray, classes: list[str],
               labelled: np.ndarray | None = None, labelled_classes: np.ndarray | None = None):
    """Plotly: the test split's map coloured by class (faint), the labelled training images on top
    (large, outlined, same class colours)."""
    import plotly.express as px
    import plotly.graph_objects as go

    palette = px.colors.qualitative.D3 + px.colors.qualitative.Plotly
    fig = go.Figure()
    labels = np.asarray(labels)
    for c in np.unique(labels):
        mask = labels == c
        name = classes[c] if 0 <= c < len(classes) else str(c)
        fig.add_trace(go.Scattergl(x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name,
                                   legendgroup=name, marker={"size": 4, "opacity": 0.35,
                                                             "color": palette[int(c) % len(palette)]},
                                   hovertemplate=f"test image, class {name}<extra></extra>"))
    if labelled is not None and len(labelled):
        lab = np.asarray(labelled_classes)
        colours = [palette[int(c) % len(palette)] for c in lab]
        names = [classes[c] if 0 <= c < len(classes) else str(c) for c in lab]
        fig.add_trace(go.Scattergl(x=labelled[:, 0], y=labelled[:, 1], mode="markers",
                                   name=f"labelled training images ({len(labelled):,})", text=names,
                                   marker={"size": 11, "color": colours, "symbol": "star",
                                           "line": {"width": 1.5, "color": "black"}},
                                   hovertemplate="labelled training image, class %{text}<extra></extra>"))
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="PC 1 of the codes", yaxis_title="PC 2 of the codes")
    return fig
